#!/usr/bin/env node
// A real OTLP/HTTP trace receiver for the tests: what an OpenTelemetry
// Collector would accept, decoded by the OpenTelemetry project's own code.
//
//   node tests/otlp/receiver.mjs --port N --out FILE [--modules DIR] [--respond STATUS]
//
// POST /v1/traces with Content-Type application/x-protobuf or
// application/json (optionally Content-Encoding: gzip) carrying an
// ExportTraceServiceRequest. The decoder is the protobufjs static module that
// @opentelemetry/otlp-transformer generates from opentelemetry-proto
// (build/src/generated/root.js):
//
// - protobuf bodies: ExportTraceServiceRequest.decode, as is;
// - JSON bodies: the OTLP/JSON mapping (the OTLP specification's "JSON
//   Protobuf Encoding": proto3 JSON with lowerCamelCase keys, except that
//   traceId/spanId/parentSpanId are hex, not base64, and enums are integers
//   only), checked field by field against the generated types, then
//   ExportTraceServiceRequest.verify, fromObject, and an encode/decode round
//   trip, so that both encodings end as the same decoded protobuf message.
//   The schema (which fields exist, their scalar types, nested message types)
//   is read from the generated code itself (its prototypes, verify() and
//   fromObject()), not written here.
//
// Stricter than a collector on purpose (a test receiver reports our
// exporter's mistakes): an unknown JSON key is an error (the specification
// asks receivers to ignore them, for newer senders; ours is our own code), and
// every span must have a 16-byte trace id and an 8-byte span id, not all
// zeros, and an empty or 8-byte parent span id, in either encoding.
//
// Answers: 200 {"partialSuccess":{}} (JSON) or an empty
// ExportTraceServiceResponse (protobuf) when the body decodes; 400 with a
// google.rpc.Status {code: 3, message: the decoder's error} in the request's
// encoding otherwise; 415 for another content type; 404/405 elsewhere.
// --respond STATUS answers every export with STATUS instead (a collector in
// trouble), after decoding and recording it.
//
// FILE gets one JSON line per decoded span:
//   {traceId, spanId, parentSpanId, name, kind, service, scope,
//    startTimeUnixNano, endTimeUnixNano, attributes, status, events, links,
//    resource, encoding}
// with ids in lowercase hex, times as decimal strings, attributes flattened
// to {key: value}; and one line {"error": ..., "encoding", "contentType",
// "bytes", "body"} per rejected body. With --port 0 the kernel picks the
// port. The first line on stdout is {"listening": PORT} once it accepts.
//
// --modules DIR: where `npm ci` installed package-lock.json (default: this
// folder), since tests install into the build directory.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';

const HERE = path.dirname(new URL(import.meta.url).pathname);
const MAX_BODY = 16 << 20;

function parseArgs(argv) {
  const a = { port: 4318, out: null, modules: process.env.AGORA_OTLP_NODE_DIR || HERE,
              respond: 0, host: '127.0.0.1' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i], v = argv[i + 1];
    if (k === '--port') { a.port = Number(v); i++; }
    else if (k === '--out') { a.out = v; i++; }
    else if (k === '--modules') { a.modules = v; i++; }
    else if (k === '--respond') { a.respond = Number(v); i++; }
    else if (k === '--host') { a.host = v; i++; }
    else { console.error(`receiver: unknown argument ${k}`); process.exit(2); }
  }
  if (!a.out || !Number.isInteger(a.port)) {
    console.error('usage: receiver.mjs --port N --out FILE [--modules DIR] [--respond STATUS]');
    process.exit(2);
  }
  return a;
}

const args = parseArgs(process.argv.slice(2));
const require = createRequire(path.join(path.resolve(args.modules), 'package.json'));
let root, Long;
try {
  root = require('@opentelemetry/otlp-transformer/build/src/generated/root.js');
  Long = require('long');
} catch (e) {
  console.error(`receiver: cannot load @opentelemetry/otlp-transformer from ${args.modules}` +
                ` (npm ci there first): ${e.message}`);
  process.exit(1);
}
const P = root.opentelemetry.proto;
const Request = P.collector.trace.v1.ExportTraceServiceRequest;
const Response = P.collector.trace.v1.ExportTraceServiceResponse;
const Writer = require('protobufjs/minimal').Writer;

// ---- The schema, read from the generated code --------------------------------------

// Fields whose bytes are hex in OTLP/JSON (Span, Span.Link; LogRecord too).
const HEX_FIELDS = { traceId: 16, spanId: 8, parentSpanId: 8 };
const KINDS = {
  'string expected': 'string', 'buffer expected': 'bytes', 'integer expected': 'int32',
  'integer|Long expected': 'int64', 'enum value expected': 'enum', 'number expected': 'double',
  'boolean expected': 'bool',
};
const schemas = new Map();

function kindOf(err, field, suffix = '') {
  const k = KINDS[err.slice(field.length + 2).replace('[] expected', ' expected')];
  if (!k) throw new Error(`receiver: unexpected generated verify() answer ${JSON.stringify(err)}`);
  return k + suffix;
}

// {field: {kind, repeated, type}} for a generated message class: the fields
// are its prototype's data properties (an accessor is a oneof's name);
// verify() of a deliberately wrong value names each scalar's type, and
// fromObject() of an empty object builds the nested message's class.
function schema(T) {
  if (schemas.has(T)) return schemas.get(T);
  const s = {};
  schemas.set(T, s);
  for (const f of Object.getOwnPropertyNames(T.prototype)) {
    const d = Object.getOwnPropertyDescriptor(T.prototype, f);
    if (f === 'constructor' || d.get || typeof d.value === 'function') continue;
    const e = T.verify({ [f]: {} });
    if (e === null) {
      s[f] = { kind: 'message', repeated: false, type: T.fromObject({ [f]: {} })[f].constructor };
    } else if (e === `${f}: array expected`) {
      const e2 = T.verify({ [f]: [{}] });
      s[f] = e2 === null
        ? { kind: 'message', repeated: true, type: T.fromObject({ [f]: [{}] })[f][0].constructor }
        : { kind: kindOf(e2, f), repeated: true };
    } else if (e === `${f}: object expected`) {
      throw new Error(`receiver: map field ${f} is not handled`);
    } else {
      s[f] = { kind: kindOf(e, f), repeated: false };
    }
  }
  for (const f of Object.keys(s)) schema(s[f].type || Object);
  return s;
}
schemas.set(Object, {});
schema(Request);
// The generated code is what we expect it to be (a newer version would fail here, loudly).
{
  const span = schema(P.trace.v1.Span);
  const want = { traceId: 'bytes', spanId: 'bytes', parentSpanId: 'bytes', name: 'string',
                 kind: 'enum', startTimeUnixNano: 'int64', status: 'message', attributes: 'message' };
  for (const [f, k] of Object.entries(want)) {
    if (!span[f] || span[f].kind !== k) {
      console.error(`receiver: the generated Span.${f} is not ${k}: ${JSON.stringify(span[f])}`);
      process.exit(1);
    }
  }
}

// ---- OTLP/JSON → the protobuf message ---------------------------------------------

class DecodeError extends Error {}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const BASE64URL = /^[A-Za-z0-9_-]*={0,2}$/;

function typeName(v) {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

function scalar(kind, field, v, where) {
  const bad = (what) => new DecodeError(`${where}: ${what} (got ${typeName(v)} ${JSON.stringify(v)})`);
  switch (kind) {
    case 'bytes':
      if (typeof v !== 'string') throw bad('bytes must be a string');
      if (HEX_FIELDS[field] !== undefined) {
        // OTLP/JSON: trace and span ids are hex, case-insensitive; not base64.
        if (!/^([0-9a-fA-F]{2})*$/.test(v)) throw bad('must be a hex string (OTLP/JSON ids are hex, not base64)');
        return Buffer.from(v, 'hex');
      }
      if (!BASE64.test(v) && !BASE64URL.test(v)) throw bad('must be base64');
      return Buffer.from(v, BASE64.test(v) ? 'base64' : 'base64url');
    case 'int64':
      if (typeof v === 'number') {
        if (!Number.isInteger(v)) throw bad('a 64-bit integer expected');
        if (!Number.isSafeInteger(v)) throw bad('a 64-bit integer beyond 2^53 must be a decimal string');
        return Long.fromNumber(v);
      }
      if (typeof v === 'string' && /^-?(0|[1-9][0-9]*)$/.test(v)) {
        const l = Long.fromString(v, v[0] !== '-');
        if (l.toString() !== v) throw bad('out of the 64-bit range');
        return l;
      }
      throw bad('a 64-bit integer must be a decimal string or a number');
    case 'int32':
      if (typeof v === 'number' && Number.isInteger(v)) return v;
      if (typeof v === 'string' && /^-?(0|[1-9][0-9]*)$/.test(v)) return Number(v);
      throw bad('integer expected');
    case 'enum':
      // OTLP/JSON: "Values of enum fields MUST be encoded as integer values."
      if (typeof v === 'number' && Number.isInteger(v)) return v;
      throw bad('enum values are integers in OTLP/JSON');
    case 'double':
      if (typeof v === 'number') return v;
      if (v === 'NaN' || v === 'Infinity' || v === '-Infinity') return Number(v);
      throw bad('number expected');
    case 'string':
      if (typeof v !== 'string') throw bad('string expected');
      return v;
    case 'bool':
      if (typeof v !== 'boolean') throw bad('boolean expected');
      return v;
    default:
      throw new DecodeError(`${where}: unhandled kind ${kind}`);
  }
}

function fromJson(T, json, where) {
  if (typeName(json) !== 'object') {
    throw new DecodeError(`${where || 'body'}: object expected (got ${typeName(json)})`);
  }
  const s = schema(T);
  const out = {};
  for (const [key, v] of Object.entries(json)) {
    const at = where ? `${where}.${key}` : key;
    const f = s[key];
    if (!f) {
      const snake = key.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
      const hint = s[snake] ? ` (OTLP/JSON keys are lowerCamelCase: ${snake})` : '';
      throw new DecodeError(`${at}: no such field in ${T.name}${hint}`);
    }
    if (v === null) continue; // proto3 JSON: null is the default
    if (f.repeated) {
      if (!Array.isArray(v)) throw new DecodeError(`${at}: array expected (got ${typeName(v)})`);
      out[key] = v.map((e, i) => f.kind === 'message'
        ? fromJson(f.type, e, `${at}[${i}]`) : scalar(f.kind, key, e, `${at}[${i}]`));
    } else if (f.kind === 'message') {
      out[key] = fromJson(f.type, v, at);
    } else {
      out[key] = scalar(f.kind, key, v, at);
    }
  }
  return out;
}

function decodeJson(body) {
  let json;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new DecodeError(`not JSON: ${e.message}`);
  }
  const obj = fromJson(Request, json, '');
  const err = Request.verify(obj);
  if (err) throw new DecodeError(`ExportTraceServiceRequest.verify: ${err}`);
  // The same bytes a protobuf exporter would have sent, decoded the same way.
  return Request.decode(Request.encode(Request.fromObject(obj)).finish());
}

function decodeProtobuf(body) {
  try {
    return Request.decode(body);
  } catch (e) {
    throw new DecodeError(`ExportTraceServiceRequest.decode: ${e.message}`);
  }
}

// ---- The decoded message → lines -------------------------------------------------

const hex = (b) => (b ? Buffer.from(b).toString('hex') : '');
const u64 = (l) => (l === null || l === undefined ? '0'
  : Long.isLong(l) ? Long.fromBits(l.low, l.high, true).toString() : String(l));

function anyValue(v) {
  if (!v) return null;
  switch (v.value) {
    case 'stringValue': return v.stringValue;
    case 'boolValue': return v.boolValue;
    case 'intValue': {
      const l = Long.isLong(v.intValue) ? v.intValue : Long.fromValue(v.intValue);
      const n = l.toNumber();
      return Number.isSafeInteger(n) ? n : l.toString();
    }
    case 'doubleValue': return v.doubleValue;
    case 'bytesValue': return Buffer.from(v.bytesValue).toString('base64');
    case 'arrayValue': return (v.arrayValue.values || []).map(anyValue);
    case 'kvlistValue': return attrs(v.kvlistValue.values);
    default: return null;
  }
}

function attrs(kvs) {
  const o = {};
  for (const kv of kvs || []) o[kv.key] = anyValue(kv.value);
  return o;
}

function checkIds(req) {
  const zero = (b) => b.every((x) => x === 0);
  (req.resourceSpans || []).forEach((rs, i) => (rs.scopeSpans || []).forEach((ss, j) =>
    (ss.spans || []).forEach((sp, k) => {
      const at = `resourceSpans[${i}].scopeSpans[${j}].spans[${k}]`;
      const t = sp.traceId || Buffer.alloc(0), s = sp.spanId || Buffer.alloc(0);
      const p = sp.parentSpanId || Buffer.alloc(0);
      if (t.length !== 16 || zero(t)) throw new DecodeError(`${at}.traceId: 16 bytes, not all zero, expected (got ${t.length}: ${hex(t)})`);
      if (s.length !== 8 || zero(s)) throw new DecodeError(`${at}.spanId: 8 bytes, not all zero, expected (got ${s.length}: ${hex(s)})`);
      if (p.length !== 0 && p.length !== 8) throw new DecodeError(`${at}.parentSpanId: empty or 8 bytes expected (got ${p.length}: ${hex(p)})`);
      for (const [n, l] of (sp.links || []).entries()) {
        if ((l.traceId || []).length !== 16 || (l.spanId || []).length !== 8) {
          throw new DecodeError(`${at}.links[${n}]: a 16-byte traceId and an 8-byte spanId expected`);
        }
      }
    })));
}

function lines(req, encoding) {
  const out = [];
  for (const rs of req.resourceSpans || []) {
    const resource = attrs(rs.resource && rs.resource.attributes);
    for (const ss of rs.scopeSpans || []) {
      for (const sp of ss.spans || []) {
        out.push({
          traceId: hex(sp.traceId), spanId: hex(sp.spanId), parentSpanId: hex(sp.parentSpanId),
          name: sp.name || '', kind: sp.kind || 0,
          service: resource['service.name'] === undefined ? null : resource['service.name'],
          scope: ss.scope ? ss.scope.name || '' : '',
          startTimeUnixNano: u64(sp.startTimeUnixNano), endTimeUnixNano: u64(sp.endTimeUnixNano),
          attributes: attrs(sp.attributes),
          status: { code: (sp.status && sp.status.code) || 0, message: (sp.status && sp.status.message) || '' },
          events: (sp.events || []).map((e) => ({ name: e.name || '', timeUnixNano: u64(e.timeUnixNano), attributes: attrs(e.attributes) })),
          links: (sp.links || []).map((l) => ({ traceId: hex(l.traceId), spanId: hex(l.spanId), attributes: attrs(l.attributes) })),
          traceState: sp.traceState || '', flags: sp.flags || 0,
          resource, encoding,
        });
      }
    }
  }
  return out;
}

// ---- HTTP ----------------------------------------------------------------------------

function record(objs) {
  if (objs.length) fs.appendFileSync(args.out, objs.map((o) => JSON.stringify(o) + '\n').join(''));
}

function rpcStatus(code, message) { // google.rpc.Status {int32 code = 1; string message = 2;}
  return Buffer.from(Writer.create().uint32(8).int32(code).uint32(18).string(message).finish());
}

function answer(res, status, encoding, okOrError) {
  let body, type;
  if (encoding === 'protobuf') {
    type = 'application/x-protobuf';
    body = status === 200 ? Buffer.from(Response.encode({}).finish()) : rpcStatus(3, okOrError);
  } else {
    type = 'application/json';
    body = Buffer.from(status === 200 ? '{"partialSuccess":{}}'
      : JSON.stringify({ code: 3, message: okOrError }));
  }
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': body.length });
  res.end(body);
}

function handle(req, res, body) {
  const ctype = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  const encoding = ctype === 'application/x-protobuf' ? 'protobuf'
    : ctype === 'application/json' ? 'json' : null;
  const reject = (status, msg, raw) => {
    record([{ error: msg, encoding, contentType: ctype, bytes: raw.length,
              body: encoding === 'protobuf' ? raw.subarray(0, 4096).toString('base64')
                : raw.subarray(0, 4096).toString('utf8') }]);
    answer(res, status, encoding || 'json', msg);
  };
  if (!encoding) return reject(415, `unsupported Content-Type ${JSON.stringify(ctype)}: application/x-protobuf or application/json`, body);
  const enc = (req.headers['content-encoding'] || 'identity').toLowerCase();
  if (enc === 'gzip') {
    try { body = zlib.gunzipSync(body, { maxOutputLength: MAX_BODY }); } catch (e) {
      return reject(400, `Content-Encoding gzip: ${e.message}`, body);
    }
  } else if (enc !== 'identity') {
    return reject(415, `unsupported Content-Encoding ${enc}`, body);
  }
  let msg;
  try {
    msg = encoding === 'json' ? decodeJson(body) : decodeProtobuf(body);
    checkIds(msg);
  } catch (e) {
    if (!(e instanceof DecodeError)) throw e;
    return reject(400, e.message, body);
  }
  record(lines(msg, encoding));
  if (args.respond && args.respond !== 200) return answer(res, args.respond, encoding, `told to answer ${args.respond}`);
  return answer(res, 200, encoding);
}

const server = http.createServer((req, res) => {
  const url = (req.url || '').split('?')[0];
  if (url !== '/v1/traces') {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    return res.end('OTLP traces only: POST /v1/traces\n');
  }
  if (req.method !== 'POST') {
    res.writeHead(405, { Allow: 'POST', 'Content-Type': 'text/plain' });
    return res.end('POST only\n');
  }
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > MAX_BODY) {
      res.writeHead(413, { 'Content-Type': 'text/plain', Connection: 'close' });
      res.end('body too large\n');
      req.destroy();
      return;
    }
    chunks.push(c);
  });
  req.on('end', () => {
    if (size > MAX_BODY) return;
    try {
      handle(req, res, Buffer.concat(chunks));
    } catch (e) {
      record([{ error: `receiver bug: ${e.stack}` }]);
      res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(String(e));
    }
  });
});
server.keepAliveTimeout = 30000;
fs.writeFileSync(args.out, '', { flag: 'a' });
server.listen(args.port, args.host, () => {
  process.stdout.write(JSON.stringify({ listening: server.address().port }) + '\n');
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
