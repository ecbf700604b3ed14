#!/usr/bin/env node
'use strict';
/*
 * bench/chat/reference/server.js — the chat's send-and-fan-out path as a Node
 * service of the seeds' kind would do it, in one process:
 *
 *   POST /api/v1/messages {roomId, content}, Authorization: Bearer <JWT>
 *     verify the token (EdDSA / Ed25519 with node:crypto, every request, as
 *     agora-messages verifies every request against its cached JWKS key),
 *     check membership (SQLite), persist the message with the room's next
 *     seq in one transaction (better-sqlite3, WAL, synchronous=FULL: what
 *     Agora's SQLite store does by default, AGORA_SQLITE_SYNC_FULL=on), then
 *     send {"type":"message.sent","id","data":{...}} to every open WebSocket
 *     of the room's members (the room's sockets are kept in memory, as
 *     socket.io's rooms are), and answer 201.
 *
 *   GET /api/v1/ws — WebSocket (the `ws` package): Authorization header on the
 *     upgrade, or a first message {"type":"auth","token"}; answers
 *     {"type":"ready","userId"}, {"type":"pong"} to {"type":"ping"}.
 *
 * Setup routes, not measured, shaped like Agora's so that the same client
 * drives both: POST /api/v1/auth/register {username} (no password hashing:
 * registration is not what is compared), POST /api/v1/rooms {name},
 * POST /api/v1/rooms/:id/join, GET /health.
 *
 * Environment: PORT (7099), REF_DB (a file; default a temp file), REF_HOST
 * (127.0.0.1), REF_SYNC (FULL or NORMAL; FULL), REF_MAX_QUEUE (bytes waiting
 * for a slow client before it is dropped, 1 MiB, as AGORA_PUSH_MAX_QUEUE).
 */
const http = require('node:http');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const Database = require('better-sqlite3');
const { WebSocketServer } = require('ws');

const PORT = parseInt(process.env.PORT || '7099', 10);
const HOST = process.env.REF_HOST || '127.0.0.1';
const SYNC = (process.env.REF_SYNC || 'FULL').toUpperCase();
const MAX_QUEUE = parseInt(process.env.REF_MAX_QUEUE || String(1 << 20), 10);
const AUTH_TIMEOUT_MS = 5000;
const PING_MS = 30000;
const ISS = 'agora-bench-reference';
const AUD = 'agora';

let dbPath = process.env.REF_DB;
let tmpDir = null;
if (!dbPath) {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agora-chat-ref-'));
  dbPath = path.join(tmpDir, 'chat.db');
}

// ---- store ------------------------------------------------------------------------------

const db = new Database(dbPath);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = ' + (SYNC === 'NORMAL' ? 'NORMAL' : 'FULL'));
db.pragma('foreign_keys = ON');
db.exec(`
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (id TEXT PRIMARY KEY, name TEXT NOT NULL, owner_id TEXT NOT NULL,
  seq INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (room_id TEXT NOT NULL REFERENCES rooms(id), user_id TEXT NOT NULL,
  role TEXT NOT NULL, joined_at TEXT NOT NULL, PRIMARY KEY (room_id, user_id));
CREATE INDEX IF NOT EXISTS members_user ON members(user_id);
CREATE TABLE IF NOT EXISTS messages (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
  room_id TEXT NOT NULL REFERENCES rooms(id), user_id TEXT NOT NULL, username TEXT NOT NULL,
  content TEXT NOT NULL, seq INTEGER NOT NULL, created_at TEXT NOT NULL, UNIQUE (room_id, seq));
`);
const q = {
  addUser: db.prepare('INSERT INTO users (id, username, created_at) VALUES (?, ?, ?)'),
  addRoom: db.prepare('INSERT INTO rooms (id, name, owner_id, created_at) VALUES (?, ?, ?, ?)'),
  roomExists: db.prepare('SELECT 1 FROM rooms WHERE id = ?'),
  addMember: db.prepare('INSERT OR IGNORE INTO members (room_id, user_id, role, joined_at) VALUES (?, ?, ?, ?)'),
  role: db.prepare('SELECT role FROM members WHERE room_id = ? AND user_id = ?'),
  userRooms: db.prepare('SELECT room_id FROM members WHERE user_id = ?'),
  nextSeq: db.prepare('UPDATE rooms SET seq = seq + 1 WHERE id = ? RETURNING seq'),
  addMessage: db.prepare(`INSERT INTO messages (id, room_id, user_id, username, content, seq, created_at)
    VALUES (?, ?, ?, ?, ?, ?, ?)`),
};
const sendTx = db.transaction((id, roomId, userId, username, content, now) => {
  const { seq } = q.nextSeq.get(roomId);
  const info = q.addMessage.run(id, roomId, userId, username, content, seq, now);
  return { seq, rowid: Number(info.lastInsertRowid) };
});

// ---- tokens: EdDSA JWTs, verified on every request ----------------------------------------

const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
const KID = crypto.randomBytes(8).toString('hex');
const b64u = (buf) => Buffer.from(buf).toString('base64url');

function sign(claims) {
  const head = b64u(JSON.stringify({ alg: 'EdDSA', typ: 'JWT', kid: KID }));
  const body = b64u(JSON.stringify(claims));
  const sig = crypto.sign(null, Buffer.from(head + '.' + body), privateKey);
  return head + '.' + body + '.' + b64u(sig);
}

function verify(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  let head, claims;
  try {
    head = JSON.parse(Buffer.from(parts[0], 'base64url'));
    if (head.alg !== 'EdDSA' || head.kid !== KID) return null;
    const ok = crypto.verify(null, Buffer.from(parts[0] + '.' + parts[1]), publicKey,
      Buffer.from(parts[2], 'base64url'));
    if (!ok) return null;
    claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch (e) {
    return null;
  }
  const now = Math.floor(Date.now() / 1000);
  if (claims.iss !== ISS || claims.aud !== AUD || typeof claims.sub !== 'string') return null;
  if (typeof claims.exp !== 'number' || claims.exp < now) return null;
  if (typeof claims.nbf === 'number' && claims.nbf > now) return null;
  return claims;
}

function bearer(req) {
  const h = req.headers.authorization || '';
  return h.startsWith('Bearer ') ? h.slice(7) : null;
}

// ---- realtime: sockets per user and per room, in memory --------------------------------------

const byUser = new Map(); // userId -> Set<ws>
const byRoom = new Map(); // roomId -> Set<ws>

function addTo(map, key, ws) {
  let s = map.get(key);
  if (!s) map.set(key, (s = new Set()));
  s.add(ws);
}

function removeFrom(map, key, ws) {
  const s = map.get(key);
  if (s && s.delete(ws) && s.size === 0) map.delete(key);
}

function attach(ws, claims) {
  ws.userId = claims.sub;
  ws.rooms = q.userRooms.all(claims.sub).map((r) => r.room_id);
  addTo(byUser, ws.userId, ws);
  for (const r of ws.rooms) addTo(byRoom, r, ws);
  ws.send(JSON.stringify({ type: 'ready', userId: ws.userId }));
}

function detach(ws) {
  if (!ws.userId) return;
  removeFrom(byUser, ws.userId, ws);
  for (const r of ws.rooms) removeFrom(byRoom, r, ws);
  ws.userId = null;
}

function fanOut(roomId, frame) {
  const s = byRoom.get(roomId);
  if (!s) return 0;
  const buf = Buffer.from(frame); // encoded once, as socket.io's broadcast does
  let n = 0;
  for (const ws of s) {
    if (ws.bufferedAmount > MAX_QUEUE) {
      ws.close(1008, 'too slow');
      continue;
    }
    ws.send(buf, { binary: false });
    n++;
  }
  return n;
}

// ---- HTTP ---------------------------------------------------------------------------------

function reply(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function fail(res, status, code, message) {
  reply(res, status, { success: false, error: { code, message } });
}

function readJson(req, res, then) {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > 65536) {
      fail(res, 413, 'PAYLOAD_TOO_LARGE', 'body over 64 KiB');
      req.destroy();
      return;
    }
    chunks.push(c);
  });
  req.on('end', () => {
    let body;
    try {
      body = chunks.length ? JSON.parse(Buffer.concat(chunks)) : {};
    } catch (e) {
      return fail(res, 400, 'MALFORMED_JSON', 'body is not JSON');
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return fail(res, 422, 'VALIDATION_FAILED', 'body must be an object');
    }
    then(body);
  });
}

function authed(req, res) {
  const claims = verify(bearer(req));
  if (!claims) fail(res, 401, 'UNAUTHORIZED', 'a valid bearer token is required');
  return claims;
}

const iso = () => new Date().toISOString();

function postMessage(req, res) {
  const claims = authed(req, res);
  if (!claims) return req.resume();
  readJson(req, res, (body) => {
    const { roomId, content } = body;
    if (typeof roomId !== 'string' || typeof content !== 'string' || content.length === 0 ||
        content.length > 4000) {
      return fail(res, 422, 'VALIDATION_FAILED', 'roomId and content (1-4000 characters) are required');
    }
    if (!q.role.get(roomId, claims.sub)) return fail(res, 404, 'ROOM_NOT_FOUND', 'room not found');
    const id = crypto.randomUUID();
    const now = iso();
    let r;
    try {
      r = sendTx(id, roomId, claims.sub, claims.username || '', content, now);
    } catch (e) {
      return fail(res, 503, 'STORE_UNAVAILABLE', String(e.message || e));
    }
    const data = {
      id, messageId: id, roomId, userId: claims.sub, username: claims.username || '', content,
      replyTo: null, attachment: null, seq: r.seq, createdAt: now,
    };
    fanOut(roomId, JSON.stringify({ type: 'message.sent', id: String(r.rowid), data }));
    reply(res, 201, { success: true, data });
  });
}

function register(req, res) {
  readJson(req, res, (body) => {
    const username = body.username;
    if (typeof username !== 'string' || !username) {
      return fail(res, 422, 'VALIDATION_FAILED', 'username is required');
    }
    const id = crypto.randomUUID();
    try {
      q.addUser.run(id, username, iso());
    } catch (e) {
      return fail(res, 409, 'USER_EXISTS', 'username taken');
    }
    const now = Math.floor(Date.now() / 1000);
    const token = sign({ sub: id, username, role: 'customer', iss: ISS, aud: AUD, iat: now, nbf: now,
      exp: now + 24 * 3600 });
    reply(res, 201, { success: true, data: { user: { id, username, role: 'customer' }, token } });
  });
}

function createRoom(req, res) {
  const claims = authed(req, res);
  if (!claims) return req.resume();
  readJson(req, res, (body) => {
    if (typeof body.name !== 'string' || !body.name) {
      return fail(res, 422, 'VALIDATION_FAILED', 'name is required');
    }
    const id = crypto.randomUUID();
    const now = iso();
    db.transaction(() => {
      q.addRoom.run(id, body.name, claims.sub, now);
      q.addMember.run(id, claims.sub, 'owner', now);
    })();
    for (const ws of byUser.get(claims.sub) || []) { ws.rooms.push(id); addTo(byRoom, id, ws); }
    reply(res, 201, { success: true, data: { id, name: body.name, ownerId: claims.sub, createdAt: now } });
  });
}

function joinRoom(req, res, roomId) {
  const claims = authed(req, res);
  if (!claims) return req.resume();
  req.resume();
  req.on('end', () => {
    if (!q.roomExists.get(roomId)) return fail(res, 404, 'ROOM_NOT_FOUND', 'room not found');
    const info = q.addMember.run(roomId, claims.sub, 'member', iso());
    if (info.changes) {
      for (const ws of byUser.get(claims.sub) || []) { ws.rooms.push(roomId); addTo(byRoom, roomId, ws); }
    }
    reply(res, 200, { success: true, data: { roomId, userId: claims.sub, role: 'member' } });
  });
}

const server = http.createServer((req, res) => {
  const url = req.url.split('?')[0];
  if (req.method === 'POST' && url === '/api/v1/messages') return postMessage(req, res);
  if (req.method === 'GET' && url === '/health') return reply(res, 200, { status: 'ok' });
  if (req.method === 'POST' && url === '/api/v1/auth/register') return register(req, res);
  if (req.method === 'POST' && url === '/api/v1/rooms') return createRoom(req, res);
  const m = /^\/api\/v1\/rooms\/([^/]+)\/join$/.exec(url);
  if (req.method === 'POST' && m) return joinRoom(req, res, decodeURIComponent(m[1]));
  req.resume();
  fail(res, 404, 'NOT_FOUND', 'no such route');
});
server.keepAliveTimeout = 65000;
server.headersTimeout = 66000;
server.requestTimeout = 0;
server.maxConnections = 1000000;

// ---- WebSocket ----------------------------------------------------------------------------

const wss = new WebSocketServer({ noServer: true, maxPayload: 65536, perMessageDeflate: false });

server.on('upgrade', (req, socket, head) => {
  if (req.url.split('?')[0] !== '/api/v1/ws') {
    socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  const token = bearer(req);
  let claims = null;
  if (token) {
    claims = verify(token);
    if (!claims) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
      return;
    }
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.userId = null;
    ws.rooms = [];
    ws.alive = true;
    if (claims) attach(ws, claims);
    else {
      ws.authTimer = setTimeout(() => ws.close(1008, 'authentication timed out'), AUTH_TIMEOUT_MS);
    }
    ws.on('pong', () => { ws.alive = true; });
    ws.on('message', (raw, isBinary) => {
      ws.alive = true;
      if (isBinary) return ws.close(1003, 'binary');
      let m;
      try { m = JSON.parse(raw); } catch (e) { return ws.close(1007, 'not JSON'); }
      if (!ws.userId) {
        clearTimeout(ws.authTimer);
        const c = m && m.type === 'auth' ? verify(m.token) : null;
        if (!c) return ws.close(1008, 'authentication failed');
        return attach(ws, c);
      }
      if (m && m.type === 'ping') return ws.send('{"type":"pong"}');
      ws.send(JSON.stringify({ type: 'error', message: 'unknown message type' }));
    });
    ws.on('close', () => { clearTimeout(ws.authTimer); detach(ws); });
    ws.on('error', () => {});
  });
});

const pinger = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.alive) { ws.terminate(); continue; }
    ws.alive = false;
    ws.ping();
  }
}, PING_MS);
pinger.unref();

server.listen(PORT, HOST, () => {
  process.stdout.write(`reference listening on http://${HOST}:${PORT} (db ${dbPath}, synchronous=${SYNC})\n`);
});

function shutdown() {
  for (const ws of wss.clients) ws.terminate();
  server.close();
  try { db.close(); } catch (e) { /* closing anyway */ }
  if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
