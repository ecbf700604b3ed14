#!/usr/bin/env node
'use strict';
/*
 * bench/chat/client/client.js — the chat benchmark's load client, the same
 * program for Agora and for the Node reference (`ws` for the sockets, an
 * http keep-alive agent per sender for the POSTs).
 *
 *   node client.js setup --http URL --users U --rooms R --out FILE
 *       registers U users, has R of them create one room each and every
 *       other user join one room (user i is in room i mod R); writes FILE.
 *   node client.js load  --setup FILE --http URL --ws URL --conns N
 *                        --senders S --rates r1,r2,... --stage SECONDS
 *                        [--pids name=pid,...] [--p99-max MS]
 *       opens N authenticated WebSockets (spread over the users, so over
 *       the rooms), then for each rate in turn has S senders POST
 *       /api/v1/messages at that total rate (messages/s) for a stage; every
 *       delivery's latency is now minus the send time written in the
 *       content. Stops the ramp after the first stage the server did not
 *       keep up with. Prints one JSON object on stdout.
 *   node client.js idle  --setup FILE --ws URL --count K [--pids name=pid,...]
 *       opens K authenticated idle WebSockets and reports the RSS growth of
 *       the given processes per connection. Prints JSON on stdout.
 *
 * Progress goes to stderr. Exit status non-zero only when something could
 * not run (a connection could not be opened, setup failed).
 */
const http = require('node:http');
const fs = require('node:fs');
const { performance } = require('node:perf_hooks');
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
const nowUs = () => Math.round(performance.now() * 1000);

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

const CLK_TCK = 100;
function procCpu(pid) { // seconds of user+system CPU, threads included
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (parseInt(f[11], 10) + parseInt(f[12], 10)) / CLK_TCK;
  } catch (e) { return null; }
}

function memAll(pids) {
  const o = {};
  for (const [k, p] of Object.entries(pids)) o[k] = procMem(p);
  return o;
}
function cpuAll(pids) {
  const o = { client: process.cpuUsage() };
  o.client = (o.client.user + o.client.system) / 1e6;
  for (const [k, p] of Object.entries(pids)) o[k] = procCpu(p);
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
  // The same for the C load generator (load.c): rooms, then "<room index>\t<token>" per user.
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

// ---- load ---------------------------------------------------------------------------------

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p / 100))];
}

async function load() {
  const st = JSON.parse(fs.readFileSync(need('setup'), 'utf8'));
  const base = need('http'), wsUrl = need('ws');
  const nConns = num('conns', 500), nSenders = num('senders', st.rooms.length);
  const rates = (opt.rates || '50,100,200,400,800').split(',').map(Number);
  const stageS = num('stage', 6), drainS = num('drain', 2), warmS = num('warmup', 2);
  const inflight = num('inflight', 8), p99Max = num('p99-max', 1000);
  const pids = pidsOpt();
  const { users, rooms } = st;
  if (nSenders < 1 || nSenders > users.length) die('--senders must be 1..users');

  // Connections: connection c belongs to user c mod U, so to room (c mod U) mod R.
  const roomConns = rooms.map(() => 0);
  const conns = [];
  for (let c = 0; c < nConns; c++) {
    const u = users[c % users.length];
    conns.push({ user: u, room: u.room, pos: roomConns[u.room]++ });
  }
  // Senders: users 0..S-1 (the room owners first, so every room gets messages when S >= R).
  const senders = [];
  for (let s = 0; s < nSenders; s++) {
    senders.push({ idx: s, user: users[s], room: users[s].room, seq: 0, inflight: 0,
      agent: new http.Agent({ keepAlive: true, maxSockets: inflight }) });
  }

  const msgs = new Map(); // key "stage.sender.seq" -> {expect, got:Uint8Array, stage}
  const stats = [];       // per stage
  let cur = null;         // the stage being sent
  let unknown = 0, foreign = 0, closedDuring = 0;
  let windowDeliveries = 0;

  const B = Buffer.from('"content":"B');
  function onFrame(conn, buf) {
    let i = buf.indexOf(B);
    if (i < 0) { foreign++; return; }
    i += B.length;
    const end = buf.indexOf(34 /* " */, i);
    const parts = buf.toString('latin1', i, end).split('.');
    const t = Number(parts[3]);
    const rec = msgs.get(parts[0] + '.' + parts[1] + '.' + parts[2]);
    const lat = (nowUs() - t) / 1000;
    windowDeliveries++;
    if (!rec) { unknown++; return; }
    const s = stats[rec.stage];
    if (rec.room !== conn.room) { s.wrongRoom++; return; }
    if (typeof rec.got === 'number') { s.late++; return; } // after its stage was counted
    if (rec.got[conn.pos]) { s.dup++; return; }
    rec.got[conn.pos] = 1;
    s.delivered++;
    s.lat.push(lat);
  }

  say(`opening ${nConns} WebSockets to ${wsUrl} (${users.length} users, ${rooms.length} rooms)`);
  const opened = await openMany(nConns, 64, (c) => openWs(wsUrl, conns[c].user.token,
    (buf) => onFrame(conns[c], buf)));
  opened.socks.forEach((ws, c) => { ws.benchOnClose = () => { closedDuring++; }; conns[c].ws = ws; });
  say(`${nConns} open in ${opened.seconds.toFixed(1)} s`);
  const idleMem = memAll(pids);

  function send(sender, stageIdx) {
    const seq = ++sender.seq;
    const key = `${stageIdx}.${sender.idx}.${seq}`;
    const rec = { stage: stageIdx, room: sender.room, got: new Uint8Array(roomConns[sender.room]) };
    msgs.set(key, rec);
    const s = stats[stageIdx];
    s.sent++;
    sender.inflight++;
    const t0 = performance.now();
    request(sender.agent, base, 'POST', '/api/v1/messages',
      { roomId: rooms[sender.room], content: `B${key}.${nowUs()}` }, sender.user.token, 30000).then((r) => {
      sender.inflight--;
      s.postLat.push(performance.now() - t0);
      if (r.status === 201 || r.status === 200) { s.ok++; rec.ok = true; }
      else { s.errors[r.status] = (s.errors[r.status] || 0) + 1; if (s.firstError === undefined) s.firstError = r.body.slice(0, 200); }
    });
  }

  async function runStage(stageIdx, rate, seconds) {
    const s = { rate, seconds, sent: 0, ok: 0, skipped: 0, delivered: 0, dup: 0, wrongRoom: 0, lat: [], postLat: [],
      errors: {}, expected: 0, late: 0 };
    stats[stageIdx] = s;
    const cpu0 = cpuAll(pids);
    windowDeliveries = 0;
    const t0 = performance.now();
    let due = 0, rr = 0;
    while (true) {
      const el = (performance.now() - t0) / 1000;
      if (el >= seconds) break;
      const want = Math.floor(el * rate);
      while (due < want) {
        due++;
        // Round robin over the senders; a sender with `inflight` requests
        // outstanding skips its turn (the server is behind): counted, not queued.
        const snd = senders[rr++ % senders.length];
        if (snd.inflight >= inflight) { s.skipped++; continue; }
        send(snd, stageIdx);
      }
      await new Promise((r) => setImmediate(r));
      if (performance.now() - t0 < (due + 1) / rate * 1000 - 2) await sleep(1);
    }
    const el = (performance.now() - t0) / 1000;
    s.windowDeliveries = windowDeliveries;
    const cpu1 = cpuAll(pids);
    s.cpu = {};
    for (const k of Object.keys(cpu1)) {
      if (cpu0[k] != null && cpu1[k] != null) s.cpu[k] = Math.round((cpu1[k] - cpu0[k]) / el * 100);
    }
    s.elapsed = el;
    // Let the stage's POSTs answer and its deliveries arrive.
    const until = performance.now() + 30000;
    while (senders.some((x) => x.inflight > 0) && performance.now() < until) await sleep(20);
    await sleep(drainS * 1000);
    return s;
  }

  if (warmS > 0) {
    say(`warm-up: ${rates[0]} messages/s for ${warmS} s`);
    await runStage(0, rates[0], warmS);
  }
  const report = [];
  for (let k = 0; k < rates.length; k++) {
    const idx = k + 1;
    const s = await runStage(idx, rates[k], stageS);
    let expected = 0, lost = 0;
    for (const rec of msgs.values()) {
      if (rec.stage !== idx || !rec.ok) continue;
      expected += rec.got.length;
      for (let p = 0; p < rec.got.length; p++) if (!rec.got[p]) lost++;
    }
    s.lat.sort((a, b) => a - b);
    s.postLat.sort((a, b) => a - b);
    const errs = Object.values(s.errors).reduce((a, b) => a + b, 0);
    const r = {
      rate: s.rate, seconds: +s.elapsed.toFixed(2),
      sentPerS: +(s.sent / s.elapsed).toFixed(1), posted: s.sent, ok: s.ok, errors: s.errors, firstError: s.firstError,
      skipped: s.skipped, expected, delivered: s.delivered, lost, dup: s.dup, wrongRoom: s.wrongRoom,
      deliveredPerS: +(s.windowDeliveries / s.elapsed).toFixed(1),
      p50: percentile(s.lat, 50), p90: percentile(s.lat, 90), p99: percentile(s.lat, 99),
      max: s.lat.length ? s.lat[s.lat.length - 1] : null,
      postP50: percentile(s.postLat, 50), postP99: percentile(s.postLat, 99),
      cpuPct: s.cpu, mem: memAll(pids),
    };
    r.keptUp = r.sentPerS >= 0.95 * s.rate && errs === 0 && s.skipped === 0 && lost === 0 &&
      r.p99 !== null && r.p99 <= p99Max;
    report.push(r);
    say(`rate ${s.rate}/s: sent ${r.sentPerS}/s, ${r.deliveredPerS} deliveries/s, p50 ${fmt(r.p50)} ms, ` +
        `p99 ${fmt(r.p99)} ms, lost ${lost}, dup ${s.dup}, skipped ${s.skipped}, errors ${errs}` +
        `, cpu ${JSON.stringify(s.cpu)}${r.keptUp ? '' : '  (not kept up)'}`);
    for (const rec of msgs.values()) if (rec.stage === idx) rec.got = rec.got.length; // keep memory small
    if (!r.keptUp) break;
  }
  const out = { conns: nConns, rooms: rooms.length, users: users.length, senders: nSenders,
    fanout: +(nConns / rooms.length).toFixed(1), stages: report, idleMem, unknown, foreign, closedDuring,
    openSeconds: opened.seconds };
  process.stdout.write(JSON.stringify(out) + '\n');
  for (const c of conns) c.ws.terminate();
  for (const s of senders) s.agent.destroy();
}

function fmt(v) { return v === null || v === undefined ? '-' : v.toFixed(1); }

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

const modes = { setup, load, idle };
if (!modes[mode]) die('usage: client.js setup|load|idle --option value ...');
modes[mode]().then(() => process.exit(0), (e) => die(e && e.stack || String(e)));
