#!/usr/bin/env node
'use strict';
/*
 * bench/chat/client/client.js — the chat benchmark's setup and idle client,
 * the same program for Agora and for the Node reference (`ws` for the
 * sockets, an http keep-alive agent for the calls). The load itself is
 * load.c (a Node load client took a whole core at 40,000 deliveries/s).
 *
 *   node client.js setup --http URL --users U --rooms R --out FILE
 *       registers U users, has R of them create one room each and every
 *       other user join one room (user i is in room i mod R); writes FILE.
 *   node client.js idle  --setup FILE --ws URL --count K [--pids name=pid,...]
 *       opens K authenticated idle WebSockets and reports the RSS growth of
 *       the given processes per connection. Prints JSON on stdout.
 *
 * Progress goes to stderr. Exit status non-zero only when something could
 * not run (a connection could not be opened, setup failed).
 */
const http = require('node:http');
const fs = require('node:fs');
const WebSocket = require('ws');

// ---- arguments ----------------------------------------------------------------------------

const mode = process.argv[2];
const opt = {};
for (let i = 3; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (!a.startsWith('--')) die('unexpected argument ' + a);
  opt[a.slice(2)] = process.argv[++i];
}

function say(...a) { process.stderr.write('client: ' + a.join(' ') + '\n'); }
function die(msg) { say('error: ' + msg); process.exit(1); }
function num(name, dflt) {
  if (opt[name] === undefined) return dflt;
  const v = Number(opt[name]);
  if (!Number.isFinite(v) || v < 0) die(`--${name}: expected a number, got ${opt[name]}`);
  return v;
}
function need(name) { if (opt[name] === undefined) die('--' + name + ' is required'); return opt[name]; }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function pidsOpt() {
  const out = {};
  for (const kv of (opt.pids || '').split(',').filter(Boolean)) {
    const [k, v] = kv.split('=');
    out[k] = parseInt(v, 10);
  }
  return out;
}

// ---- /proc --------------------------------------------------------------------------------

function procMem(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k) => { const m = new RegExp('^' + k + ':\\s+(\\d+)', 'm').exec(s); return m ? +m[1] : 0; };
    return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
  } catch (e) { return null; }
}

function memAll(pids) {
  const o = {};
  for (const [k, p] of Object.entries(pids)) o[k] = procMem(p);
  return o;
}

// ---- HTTP ---------------------------------------------------------------------------------

function request(agent, base, method, path, body, token, timeoutMs = 30000) {
  return new Promise((resolve) => {
    const u = new URL(path, base);
    const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const headers = {};
    if (data) { headers['Content-Type'] = 'application/json'; headers['Content-Length'] = data.length; }
    if (token) headers.Authorization = 'Bearer ' + token;
    const req = http.request({ agent, host: u.hostname, port: u.port, method, path: u.pathname + u.search,
      headers, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      res.on('error', (e) => resolve({ status: 0, body: String(e) }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, body: String(e.message || e) }));
    req.end(data);
  });
}

function dataOf(r, want, what) {
  if (!want.includes(r.status)) die(`${what}: want ${want.join('/')}, got ${r.status} ${r.body.slice(0, 300)}`);
  try { return JSON.parse(r.body).data; } catch (e) { die(`${what}: answer is not JSON: ${r.body.slice(0, 200)}`); }
}

async function pool(n, limit, fn) {
  let next = 0;
  const workers = [];
  for (let w = 0; w < Math.min(limit, n); w++) {
    workers.push((async () => { while (next < n) { const i = next++; await fn(i); } })());
  }
  await Promise.all(workers);
}

// ---- setup --------------------------------------------------------------------------------

async function setup() {
  const base = need('http');
  const nUsers = num('users', 50), nRooms = num('rooms', 10);
  if (nRooms < 1 || nUsers < nRooms) die('--users must be at least --rooms (each room needs an owner)');
  const par = num('parallel', 2);
  const agent = new http.Agent({ keepAlive: true, maxSockets: par });
  const tag = Math.random().toString(36).slice(2, 8);
  const users = new Array(nUsers);
  const t0 = Date.now();
  await pool(nUsers, par, async (i) => {
    const name = `chat${i}x${tag}`;
    const d = dataOf(await request(agent, base, 'POST', '/api/v1/auth/register',
      { username: name, email: name + '@bench.local', password: 'bench-password-1' }), [200, 201],
    'register ' + name);
    users[i] = { id: d.user.id, username: name, token: d.token };
  });
  say(`${nUsers} users registered in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const rooms = new Array(nRooms);
  await pool(nRooms, par, async (r) => {
    const d = dataOf(await request(agent, base, 'POST', '/api/v1/rooms',
      { name: `bench room ${r} ${tag}`, description: 'bench/chat', isPrivate: false }, users[r].token),
    [200, 201], 'create room ' + r);
    rooms[r] = (d.room && d.room.id) || d.id;
  });
  const joinPath = opt['join-path'] || '/api/v1/rooms/{id}/join';
  await pool(nUsers - nRooms, par, async (j) => {
    const i = j + nRooms, r = i % nRooms;
    dataOf(await request(agent, base, 'POST', joinPath.replace('{id}', encodeURIComponent(rooms[r])), {},
      users[i].token), [200, 201], `user ${i} joins room ${r}`);
  });
  for (let i = 0; i < nUsers; i++) users[i].room = i % nRooms;
  say(`${nRooms} rooms, every user in one (${(nUsers / nRooms).toFixed(1)} users a room), ` +
      `${((Date.now() - t0) / 1000).toFixed(1)} s in all`);
  fs.writeFileSync(need('out'), JSON.stringify({ users, rooms }));
  // The same for the load generator (load.c): rooms, then "<room index>\t<token>" per user.
  if (opt.tsv) {
    fs.writeFileSync(opt.tsv, [String(nRooms), ...rooms, ...users.map((u) => u.room + '\t' + u.token)].join('\n') +
      '\n');
  }
  agent.destroy();
}

// ---- WebSockets ---------------------------------------------------------------------------

function openWs(url, token, onFrame) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { Authorization: 'Bearer ' + token }, perMessageDeflate: false,
      handshakeTimeout: 30000 });
    let ready = false;
    const timer = setTimeout(() => { if (!ready) { ws.terminate(); reject(new Error('no ready frame in 30 s')); } },
      30000);
    ws.on('message', (buf) => {
      if (!ready) {
        const s = buf.toString();
        if (s.includes('"ready"')) { ready = true; clearTimeout(timer); resolve(ws); return; }
      }
      if (onFrame) onFrame(buf);
    });
    ws.on('error', (e) => { clearTimeout(timer); if (!ready) reject(e); });
    ws.on('unexpected-response', (req, res) => {
      clearTimeout(timer);
      reject(new Error('upgrade answered ' + res.statusCode));
    });
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      if (!ready) reject(new Error(`closed before ready: ${code} ${reason}`));
      else if (ws.benchOnClose) ws.benchOnClose(code, reason);
    });
  });
}

async function openMany(n, par, make) {
  const socks = new Array(n);
  const t0 = Date.now();
  let done = 0;
  await pool(n, par, async (i) => {
    let lastErr;
    for (let attempt = 0; attempt < 3; attempt++) {
      try { socks[i] = await make(i); done++; if (done % 2000 === 0) say(`${done}/${n} connections open`); return; }
      catch (e) { lastErr = e; await sleep(200 * (attempt + 1)); }
    }
    die(`connection ${i}: ${lastErr && lastErr.message}`);
  });
  return { socks, seconds: (Date.now() - t0) / 1000 };
}

// ---- idle ---------------------------------------------------------------------------------

async function idle() {
  const st = JSON.parse(fs.readFileSync(need('setup'), 'utf8'));
  const wsUrl = need('ws'), k = num('count', 2000), settle = num('settle', 3);
  const pids = pidsOpt();
  const { users } = st;
  const before = memAll(pids);
  say(`opening ${k} idle WebSockets to ${wsUrl} (${Math.ceil(k / users.length)} per user)`);
  const opened = await openMany(k, num('parallel', 64), (c) => openWs(wsUrl, users[c % users.length].token, null));
  let closed = 0;
  for (const ws of opened.socks) ws.benchOnClose = () => { closed++; };
  await sleep(settle * 1000);
  const after = memAll(pids);
  const perConn = {};
  for (const name of Object.keys(pids)) {
    if (before[name] && after[name]) perConn[name] = +((after[name].rssKb - before[name].rssKb) * 1024 / k).toFixed(0);
  }
  say(`${k} open in ${opened.seconds.toFixed(1)} s; RSS growth per connection (bytes): ${JSON.stringify(perConn)}` +
      (closed ? `; ${closed} closed by the server meanwhile` : ''));
  process.stdout.write(JSON.stringify({ count: k, openSeconds: opened.seconds, before, after, perConnBytes: perConn,
    closedMeanwhile: closed }) + '\n');
  for (const ws of opened.socks) ws.terminate();
}

const modes = { setup, idle };
if (!modes[mode]) die('usage: client.js setup|idle --option value ...');
modes[mode]().then(() => process.exit(0), (e) => die(e && e.stack || String(e)));
