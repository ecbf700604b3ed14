// ops.js: the ops console, for admins. Components (the gateway and every
// upstream it knows: instances, health, version, breaker) from the
// gateway's /admin/upstreams and /admin/breakers; traffic per upstream and
// per gateway endpoint from /metrics (Prometheus text parsed here), with
// rates and latencies computed between two readings and drawn as
// sparklines; recent checkout sagas with their steps; each consuming
// service's dead-lettered events; the shop's and the chat's numbers from
// agora-analytics, with a rebuild of its read model (analytics.js); recent
// traces from agora-traces (traces.js, which also draws a trace's
// waterfall). Refreshed every few seconds, with a pause for anyone who
// wants the page to hold still.
import { h, clear, heading, errorBox, when, shortId, statusBadge } from '../ui.js';
import { api, get, qs } from '../api.js';
import * as session from '../session.js';
import { parse, sumBy, quantile } from '../prom.js';
import { sparkline, fmt } from '../chart.js';
import { needSignIn } from './account.js';
import { tracesSection } from './traces.js';
import { analyticsSection } from './analytics.js';

const EVERY_MS = 3000;
const KEEP = 40;

export async function page(main) {
  if (!session.user()) return needSignIn(main, 'Ops console');
  if (!session.isAdmin()) {
    clear(main, heading('Ops console'), h('p', { role: 'alert' }, 'The ops console is for administrators. You are signed in as ',
      h('strong', null, session.user().username), ', a ', session.user().role, '.'));
    return;
  }
  const compBox = h('div', { id: 'components', 'aria-live': 'off' });
  const compSummary = h('p', { id: 'components-summary', role: 'status' });
  const trafficBox = h('div', { id: 'traffic' });
  const endpointsBox = h('div', { id: 'endpoints' });
  const routesBox = h('div', { id: 'routes' });
  const sagaBox = h('div', { id: 'sagas' });
  const dlqBox = h('div', { id: 'dlq' });
  const traces = tracesSection();
  const analytics = analyticsSection();
  const updated = h('span', { class: 'muted small', id: 'ops-updated' });
  let paused = false;
  const pauseBtn = h('button', { type: 'button', class: 'small secondary', 'aria-pressed': 'false', onclick: () => {
    paused = !paused;
    pauseBtn.setAttribute('aria-pressed', String(paused));
    pauseBtn.textContent = paused ? 'Resume live refresh' : 'Pause live refresh';
    if (!paused) tick();
  } }, 'Pause live refresh');

  clear(main, heading('Ops console'),
    h('p', { class: 'toolbar' }, updated, pauseBtn),
    h('section', { 'aria-labelledby': 'comp-title' }, h('h2', { id: 'comp-title' }, 'Components'), compSummary, compBox),
    analytics.el,
    h('section', { 'aria-labelledby': 'routes-title' }, h('h2', { id: 'routes-title' }, 'Traffic by route'),
      h('p', { class: 'muted small' }, 'From the gateway\'s /metrics (agora_gateway_route_*: each request under the route prefix that matched it), between readings ', EVERY_MS / 1000,
        ' s apart. WebSocket routes count tunnels opened; their latency is not measured.'),
      routesBox),
    h('section', { 'aria-labelledby': 'traffic-title' }, h('h2', { id: 'traffic-title' }, 'Traffic by upstream service'),
      h('p', { class: 'muted small' }, 'Each try the gateway made to a service (agora_gateway_upstream_*, retries included).'),
      trafficBox),
    h('section', { 'aria-labelledby': 'endpoints-title' }, h('h2', { id: 'endpoints-title' }, 'Gateway endpoints'), endpointsBox),
    h('section', { 'aria-labelledby': 'sagas-title' }, h('h2', { id: 'sagas-title' }, 'Recent checkouts (sagas)'), sagaBox),
    h('section', { 'aria-labelledby': 'dlq-title' }, h('h2', { id: 'dlq-title' }, 'Dead-lettered events'),
      h('p', { class: 'muted small' }, 'Events a service could not handle after its retries, newest first (each service\'s /admin/dead-letters, through the gateway). The events themselves stay in the broker\'s dead-letter destination.'),
      dlqBox),
    traces.el);

  const hist = new Map();   // key → {rate: [], err: [], p95: []}
  let prev = null;          // {at, metrics}
  let routes = [];
  let timer = null;
  let alive = true;

  const push = (key, field, v) => {
    if (!hist.has(key)) hist.set(key, { rate: [], err: [], p95: [] });
    const a = hist.get(key)[field];
    a.push(v);
    if (a.length > KEEP) a.shift();
  };

  async function components() {
    const [health, ups, brk] = await Promise.all([
      fetch('/health').then((r) => r.json()).catch(() => null),
      get('/admin/upstreams'),
      get('/admin/breakers').catch(() => []),
    ]);
    const breakers = new Map(brk.map((b) => [b.name, b]));
    const rows = [];
    let healthy = 0;
    let total = 0;
    const gwOk = health && health.status === 'ok';
    rows.push(compRow('gateway', gwOk ? 'healthy' : 'down', gwOk ? '1 of 1' : '0 of 1', health ? health.version : '—', null,
      `discovery: ${ups.mode}${ups.registry ? ' (' + ups.registry + ')' : ''}, balancing: ${ups.policy}`));
    total++; if (gwOk) healthy++;
    // The registry, as the gateway sees it: its watches answer (or their
    // lists go stale). The page cannot ask it directly (CSP: same origin only).
    const names = Object.keys(ups.services).sort();
    if (ups.mode === 'static') {
      rows.push(compRow('registry', 'not used', '—', '—', null, 'static discovery: the gateway reads AGORA_<SERVICE>_URL, not a registry'));
    } else {
      const stale = names.filter((n) => ups.services[n].stale);
      const ok = !stale.length;
      total++;
      if (ok) healthy++;
      rows.push(compRow('registry', ok ? 'healthy' : 'degraded', '—', '—', null,
        (ups.registry || 'registry') + (ok ? ': every watch is answered' : ': stale lists for ' + stale.join(', '))));
    }
    for (const name of names) {
      const svc = ups.services[name];
      const inst = svc.instances || [];
      const up = inst.filter((i) => i.healthy && !i.ejected);
      const b = breakers.get(name);
      let status;
      if (!inst.length) status = 'not running';
      else if (!up.length) status = 'down';
      else if (up.length < inst.length || (b && b.state !== 'closed')) status = 'degraded';
      else status = 'healthy';
      total++;
      if (status === 'healthy') healthy++;
      const versions = [...new Set(inst.map((i) => i.version).filter(Boolean))];
      const notes = [];
      if (svc.stale) notes.push('instance list stale (registry unreachable?)');
      for (const i of inst) {
        if (i.ejected) notes.push(`${i.id} ejected for ${Math.round(i.ejectedForMs / 1000)} s`);
        else if (!i.healthy) notes.push(`${i.id} failed its health check`);
      }
      if (!inst.length) notes.push(ups.mode === 'static' ? 'no URL configured for it' : 'no instance registered');
      rows.push(compRow(name, status, `${up.length} of ${inst.length}`, versions.length ? versions.join(', ') : '—', b, notes.join('; '),
        inst.map((i) => `${i.id} · ${i.outstanding} in flight · ${i.calls} calls, ${i.failures} failed`)));
    }
    compSummary.textContent = healthy === total ? `All ${total} components are healthy.` : `${healthy} of ${total} components are healthy.`;
    clear(compBox, h('div', { class: 'table-wrap' }, h('table', { class: 'components' },
      h('caption', { class: 'sr' }, 'Components, their health, instances, version and circuit breaker'),
      h('thead', null, h('tr', null, ['Component', 'Health', 'Instances up', 'Version', 'Breaker', 'Notes'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, rows))),
    h('p', { class: 'muted small' }, 'Version: what an instance registered with; in static discovery (no registry) instances carry none.'));
  }

  function compRow(name, status, instances, version, b, notes, details) {
    const brk = b ? h('span', { class: 'breaker breaker-' + b.state }, b.state,
      h('span', { class: 'muted small' }, ` · ${b.calls} calls, ${b.failures} failures${b.openedCount ? `, opened ${b.openedCount}×` : ''}${b.retryAfterMs ? `, retry in ${Math.ceil(b.retryAfterMs / 1000)} s` : ''}`)) : '—';
    return h('tr', { 'data-component': name, 'data-health': status },
      h('th', { scope: 'row' }, 'agora-' + name),
      h('td', null, h('span', { class: 'health health-' + status.replace(' ', '-') }, h('span', { class: 'dot', 'aria-hidden': 'true' }), status)),
      h('td', null, instances, details && details.length ? h('details', null, h('summary', { class: 'small' }, 'instances'),
        h('ul', { class: 'small' }, details.map((d) => h('li', null, d)))) : null),
      h('td', null, version),
      h('td', null, brk),
      h('td', { class: 'small' }, notes || ''));
  }

  async function traffic() {
    const res = await api('GET', '/metrics', { raw: true, headers: { Accept: 'text/plain' } });
    const metrics = parse(await res.text());
    const now = Date.now();
    if (!routes.length) {
      try {
        routes = (await get('/admin/routes')).routes;
      } catch {
        routes = [];
      }
    }
    const byService = {
      count: sumBy(metrics, 'agora_gateway_upstream_responses_total', (l) => l.service),
      errors: sumBy(metrics, 'agora_gateway_upstream_responses_total', (l) => l.service,
        (l) => !/^[1-4]\d\d$/.test(l.code)),
      buckets: bucketsBy(metrics, 'agora_gateway_upstream_seconds_bucket', (l) => l.service),
    };
    const byEndpoint = {
      count: sumBy(metrics, 'agora_http_requests_total', (l) => l.route),
      errors: sumBy(metrics, 'agora_http_requests_total', (l) => l.route, (l) => /^5/.test(l.status)),
      buckets: bucketsBy(metrics, 'agora_http_request_duration_seconds_bucket', (l) => l.route),
    };
    const byRoute = {
      count: sumBy(metrics, 'agora_gateway_route_requests_total', (l) => l.route),
      errors: sumBy(metrics, 'agora_gateway_route_requests_total', (l) => l.route, (l) => l.class === '5xx'),
      buckets: bucketsBy(metrics, 'agora_gateway_route_seconds_bucket', (l) => l.route),
    };
    const cur = { at: now, byService, byEndpoint, byRoute };
    if (prev) {
      const dt = (now - prev.at) / 1000;
      const svcNames = new Set([...byService.count.keys(), ...routes.map((r) => r.service)]);
      const rows = [...svcNames].sort().map((svc) => rateRow('svc:' + svc, svc, byService, prev.byService, dt,
        routes.filter((r) => r.service === svc).map((r) => r.prefix)));
      clear(trafficBox, table('Traffic per upstream service', ['Routes', 'Requests/s', 'Errors', 'Latency p50', 'Latency p95', 'Rate', 'p95'], rows));
      const prefixes = new Set([...byRoute.count.keys(), ...routes.map((r) => r.prefix)]);
      const routeRows = [...prefixes].sort().map((prefix) => rateRow('rt:' + prefix, prefix, byRoute, prev.byRoute, dt,
        [...new Set(routes.filter((r) => r.prefix === prefix).map((r) => '→ ' + r.service))]));
      clear(routesBox, table('Traffic per route', ['Route', 'Requests/s', 'Errors (5xx)', 'Latency p50', 'Latency p95', 'Rate', 'p95'], routeRows));
      const eps = [...byEndpoint.count.keys()].sort().map((route) => rateRow('ep:' + route, route === '/*' ? 'proxied (all /api routes) and static files' : route,
        byEndpoint, prev.byEndpoint, dt, null));
      clear(endpointsBox, table('Requests the gateway served, by its own endpoints', ['Endpoint', 'Requests/s', 'Errors (5xx)', 'Latency p50', 'Latency p95', 'Rate', 'p95'], eps));
    } else {
      clear(trafficBox, h('p', { class: 'muted' }, 'Measuring: rates appear after the second reading.'));
      clear(routesBox, h('p', { class: 'muted' }, 'Measuring: rates appear after the second reading.'));
    }
    prev = cur;
  }

  function rateRow(key, name, cur, old, dt, prefixes) {
    const c = cur.count.get(keyName(key)) || 0;
    const o = (old.count.get(keyName(key)) || 0);
    const e = (cur.errors.get(keyName(key)) || 0) - (old.errors.get(keyName(key)) || 0);
    const n = Math.max(0, c - o);
    const rate = n / dt;
    const errPct = n ? (Math.max(0, e) / n) * 100 : 0;
    const curB = cur.buckets.get(keyName(key)) || [];
    const oldB = old.buckets.get(keyName(key)) || [];
    const delta = curB.map((b) => ({ le: b.le, count: b.count - ((oldB.find((x) => x.le === b.le) || {}).count || 0) }));
    const p50 = quantile(0.5, delta) * 1000;
    const p95 = quantile(0.95, delta) * 1000;
    push(key, 'rate', rate);
    push(key, 'p95', Number.isFinite(p95) ? p95 : 0);
    const hh = hist.get(key);
    return h('tr', { 'data-route': keyName(key) },
      h('th', { scope: 'row' }, h('div', null, name), prefixes && prefixes.length ? h('div', { class: 'muted small' }, prefixes.join(', ')) : null),
      h('td', null, fmt(rate)),
      h('td', { class: errPct > 0 ? 'warn' : '' }, n ? `${fmt(errPct)} %` : '—'),
      h('td', null, Number.isFinite(p50) ? fmt(p50) + ' ms' : '—'),
      h('td', null, Number.isFinite(p95) ? fmt(p95) + ' ms' : '—'),
      h('td', null, sparkline(hh.rate, { label: name + ' requests per second', unit: '/s' })),
      h('td', null, sparkline(hh.p95, { label: name + ' p95 latency', unit: ' ms', color: '#8a4b00' })));
  }

  const keyName = (key) => key.slice(key.indexOf(':') + 1);

  function table(caption, cols, rows) {
    return h('div', { class: 'table-wrap' }, h('table', { class: 'traffic' }, h('caption', { class: 'sr' }, caption),
      h('thead', null, h('tr', null, cols.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, rows.length ? rows : h('tr', null, h('td', { colspan: cols.length }, 'No requests yet.')))));
  }

  async function sagas() {
    let doc;
    try {
      doc = await api('GET', '/api/v1/orders' + qs({ limit: 10 }));
    } catch (err) {
      clear(sagaBox, errorBox(err, 'Orders could not be loaded'));
      return;
    }
    if (!doc.data.length) {
      clear(sagaBox, h('p', { class: 'muted' }, 'No orders yet.'));
      return;
    }
    clear(sagaBox, h('ul', { class: 'sagas' }, doc.data.map((o) => {
      const steps = h('div');
      const d = h('details', { 'data-order': o.id }, h('summary', null, h('span', null, `Order #${shortId(o.id)} · `), statusBadge(o.status),
        h('span', { class: 'muted small' }, ` · ${when(o.createdAt)}`), o.reason ? h('span', { class: 'small' }, ' · ' + o.reason) : null), steps);
      d.addEventListener('toggle', async () => {
        if (!d.open || steps.dataset.loaded) return;
        steps.textContent = 'Loading…';
        try {
          const s = await get('/api/v1/sagas/' + encodeURIComponent(o.id));
          steps.dataset.loaded = '1';
          clear(steps, sagaView(s));
        } catch (err) {
          clear(steps, errorBox(err, 'The saga could not be loaded'));
        }
      });
      return h('li', null, d);
    })));
  }

  function sagaView(s) {
    const view = (x, title) => h('div', { class: 'saga' },
      h('p', null, h('strong', null, title), ': ', x.state, x.step !== undefined ? ` at step ${x.step}` : '', x.reason ? ` · ${x.reason}` : ''),
      h('ol', { class: 'steps' }, (x.steps || []).map((st) => h('li', { class: 'step step-' + String(st.status).toLowerCase() },
        h('strong', null, st.name), ' — ', st.status, ` · ${st.attempts} attempt${st.attempts === 1 ? '' : 's'}`,
        st.compensations ? ` · ${st.compensations} compensation${st.compensations === 1 ? '' : 's'}` : '',
        st.error ? h('div', { class: 'small warn' }, typeof st.error === 'string' ? st.error : JSON.stringify(st.error)) : null))));
    return [view(s, 'Checkout'), s.cancellation ? view(s.cancellation, 'Cancellation') : null];
  }

  async function deadLetters() {
    let rs = routes;
    if (!rs.length) {
      try {
        rs = (await get('/admin/routes')).routes;
      } catch (err) {
        clear(dlqBox, errorBox(err, 'The gateway\'s routes could not be read'));
        return;
      }
    }
    const prefix = '/api/v1/admin/dead-letters/';
    const svcs = [...new Set(rs.filter((r) => r.prefix.startsWith(prefix)).map((r) => r.prefix.slice(prefix.length)))].sort();
    const rows = await Promise.all(svcs.map(async (svc) => {
      try {
        const list = await get(prefix + svc + qs({ limit: 20 }));
        if (!list.length) return h('tr', { 'data-service': svc }, h('th', { scope: 'row' }, svc), h('td', { colspan: 4, class: 'muted' }, 'none'));
        return list.map((d) => h('tr', { 'data-service': svc }, h('th', { scope: 'row' }, svc),
          h('td', null, d.type || '(no type)'), h('td', { class: 'small' }, shortId(d.id || '')),
          h('td', { class: 'small warn' }, d.reason), h('td', { class: 'small' }, when(d.deadAt))));
      } catch (err) {
        return h('tr', { 'data-service': svc }, h('th', { scope: 'row' }, svc), h('td', { colspan: 4 }, errorBox(err, 'Could not be read')));
      }
    }));
    clear(dlqBox, table('Dead-lettered events by service', ['Service', 'Type', 'Event', 'Reason', 'When'], rows.flat()));
  }

  async function tick() {
    if (!alive || paused) return;
    clearTimeout(timer);
    try {
      await components();
    } catch (err) {
      clear(compBox, errorBox(err, 'The gateway\'s admin API could not be read'));
      compSummary.textContent = '';
    }
    try {
      await traffic();
    } catch (err) {
      clear(trafficBox, errorBox(err, 'The gateway\'s metrics could not be read'));
    }
    // Each says its own failure in its own section; neither waits for the other.
    await Promise.all([traces.refresh(), analytics.refresh()]);
    updated.textContent = 'Updated ' + new Date().toLocaleTimeString('en-GB') + ' · every ' + EVERY_MS / 1000 + ' s ';
    if (alive && !paused) timer = setTimeout(tick, EVERY_MS);
  }

  await tick();
  sagas();
  deadLetters();
  return () => { alive = false; clearTimeout(timer); };
}

function bucketsBy(metrics, name, key) {
  const out = new Map();
  for (const s of metrics.get(name) || []) {
    const k = key(s.labels);
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    if (!out.has(k)) out.set(k, new Map());
    const m = out.get(k);
    m.set(le, (m.get(le) || 0) + s.value);
  }
  const res = new Map();
  for (const [k, m] of out) res.set(k, [...m].map(([le, count]) => ({ le, count })));
  return res;
}
