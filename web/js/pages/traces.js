// traces.js: what agora-traces holds, for admins (services/traces/README.md).
// The ops console's Traces section lists recent traces (newest, slowest or
// those with errors, of one service or all) from GET /api/v1/traces; each
// opens #/ops/traces/<id>: the trace's waterfall from
// GET /api/v1/traces/<id>, one row per span, indented under its parent,
// its bar placed by startOffsetMs and sized by durationMs on the trace's
// time axis, coloured by service (and named: colour is never the only
// clue), errors marked in words. A span's row is a button that opens its
// attributes, status, events and links.
import { h, clear, heading, errorBox, when, shortId } from '../ui.js';
import { get, qs } from '../api.js';
import * as session from '../session.js';
import { needSignIn } from './account.js';

const LIST_LIMIT = 15;

// Service colours: distinct from each other and at least 3:1 against the
// white track (WCAG's contrast for graphics). Bars carry no text; every
// row names its service and the legend names each colour.
const PALETTE = ['#1f4e8c', '#1b7a4a', '#a3479b', '#c25e00', '#2a8a9e', '#6b4fbb', '#8a6d00', '#b3364a'];

export function ms(v) {
  if (!Number.isFinite(v)) return '—';
  if (v === 0) return '0 ms';
  if (v < 1) return `${Math.round(v * 1000)} µs`;
  if (v < 10) return `${v.toFixed(2)} ms`;
  if (v < 1000) return `${v.toFixed(1)} ms`;
  return `${(v / 1000).toFixed(2)} s`;
}

// ---- the list, a section of the ops page -------------------------------------------------

export function tracesSection() {
  const view = h('select', { id: 'trace-view' },
    h('option', { value: 'recent' }, 'Most recent'),
    h('option', { value: 'slowest' }, 'Slowest'),
    h('option', { value: 'errors' }, 'With errors'));
  const service = h('select', { id: 'trace-service' }, h('option', { value: '' }, 'All services'));
  const idInput = h('input', { id: 'trace-id', type: 'text', inputmode: 'latin', autocomplete: 'off', spellcheck: 'false',
    placeholder: '32 hex digits', pattern: '[0-9a-fA-F]{32}', size: 34 });
  const box = h('div', { id: 'traces' });
  const open = h('form', { class: 'inline-form trace-open' },
    h('div', { class: 'field' }, h('label', { for: 'trace-id' }, 'Trace id'), idInput),
    h('button', { type: 'submit', class: 'small secondary' }, 'Open trace'));
  open.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const id = idInput.value.trim().toLowerCase();
    if (id) location.hash = '#/ops/traces/' + encodeURIComponent(id);
  });
  let seq = 0;
  let shown = ''; // what the table shows now: an unchanged answer leaves it alone

  async function load() {
    const mine = ++seq;
    const params = { limit: LIST_LIMIT, service: service.value };
    if (view.value === 'slowest') params.sort = 'slowest';
    if (view.value === 'errors') params.error = 'true';
    let list;
    let services;
    try {
      [list, services] = await Promise.all([
        get('/api/v1/traces' + qs(params)),
        get('/api/v1/traces/services').catch(() => null),
      ]);
    } catch (err) {
      if (mine !== seq) return;
      shown = '';
      clear(box, errorBox(err, 'Traces could not be read from agora-traces'));
      return;
    }
    if (mine !== seq) return; // a newer reading is on its way
    if (services) fillServices(services);
    const key = JSON.stringify([view.value, service.value, list]);
    if (key === shown) return;
    shown = key;
    clear(box, list.length ? table(list) : h('p', { class: 'muted' },
      service.value || view.value !== 'recent' ? 'No trace matches.' : 'No traces yet: requests appear here once the services export their spans.'));
  }

  function fillServices(services) {
    const chosen = service.value;
    const names = services.map((s) => s.service);
    if (chosen && !names.includes(chosen)) names.push(chosen);
    const have = [...service.options].slice(1).map((o) => o.value);
    if (have.join('\n') === names.join('\n')) return; // unchanged: leave the control alone
    clear(service, h('option', { value: '' }, 'All services'), names.map((n) => h('option', { value: n }, n)));
    service.value = chosen;
  }

  function table(list) {
    return h('div', { class: 'table-wrap' }, h('table', { class: 'traces stack' },
      h('caption', { class: 'sr' }, 'Traces, their root span, duration, spans, services and errors'),
      h('thead', null, h('tr', null, ['Root span', 'Started', 'Duration', 'Spans', 'Services', 'Errors'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, list.map((t) => h('tr', { 'data-trace': t.traceId },
        h('th', { scope: 'row' }, h('a', { href: '#/ops/traces/' + t.traceId }, t.rootName || '(unnamed span)'),
          h('div', { class: 'muted small' }, t.rootService, ' · trace ', shortId(t.traceId))),
        h('td', { 'data-label': 'Started' }, when(t.startTime)),
        h('td', { 'data-label': 'Duration' }, ms(t.durationMs)),
        h('td', { 'data-label': 'Spans' }, String(t.spanCount)),
        h('td', { 'data-label': 'Services', class: 'small' }, t.services.join(', ')),
        h('td', { 'data-label': 'Errors', class: t.errorCount ? 'warn' : '' }, t.errorCount ? `${t.errorCount} failed` : 'none'))))));
  }

  view.addEventListener('change', load);
  service.addEventListener('change', load);
  const el = h('section', { 'aria-labelledby': 'trace-title' },
    h('h2', { id: 'trace-title' }, 'Traces'),
    h('p', { class: 'muted small' }, 'Requests followed across services: the spans every service exports to agora-traces (OTLP), which keeps the recent ones in memory. Open one for its waterfall.'),
    h('div', { class: 'toolbar trace-filters' },
      h('div', { class: 'field inline' }, h('label', { for: 'trace-view' }, 'Show'), view),
      h('div', { class: 'field inline' }, h('label', { for: 'trace-service' }, 'Service'), service)),
    box, open);
  return { el, refresh: load };
}

// ---- one trace: the waterfall ------------------------------------------------------------

export async function trace(main, [id]) {
  const title = 'Trace ' + shortId(id);
  if (!session.user()) return needSignIn(main, 'Trace');
  const back = h('p', null, h('a', { href: '#/ops' }, '← Ops console'));
  if (!session.isAdmin()) {
    clear(main, heading(title), h('p', { role: 'alert' }, 'Traces are for administrators.'));
    return;
  }
  let t;
  try {
    t = await get('/api/v1/traces/' + encodeURIComponent(id));
  } catch (err) {
    clear(main, heading(title), back, errorBox(err, err.status === 404 ? 'This trace is not held (never received, or evicted)' : 'The trace could not be loaded'));
    return;
  }
  const colors = new Map(t.services.map((s, i) => [s, PALETTE[i % PALETTE.length]]));
  const total = t.durationMs > 0 ? t.durationMs : Math.max(1e-3, ...t.spans.map((s) => s.startOffsetMs + s.durationMs));
  const rows = order(t.spans);
  const root = t.spans.find((s) => s.parentSpanId === null);

  clear(main, heading(title), back,
    h('dl', { class: 'facts', id: 'trace-facts' },
      h('dt', null, 'Root'), h('dd', null, `${t.rootService} · ${t.rootName}`, root ? null : h('span', { class: 'small warn' }, ' (the root span has not arrived: the earliest span stands in)')),
      h('dt', null, 'Started'), h('dd', null, when(t.startTime)),
      h('dt', null, 'Duration'), h('dd', null, ms(t.durationMs)),
      h('dt', null, 'Spans'), h('dd', null, `${t.spanCount}${t.errorCount ? `, ${t.errorCount} with an error` : ', no errors'}`),
      h('dt', null, 'Trace id'), h('dd', null, h('code', { class: 'small' }, t.traceId))),
    h('ul', { class: 'wf-legend', 'aria-label': 'Services, as coloured in the waterfall' },
      t.services.map((s) => h('li', null, swatch(colors.get(s)), s))),
    h('div', { class: 'waterfall', id: 'waterfall' },
      h('div', { class: 'wf-axis', 'aria-hidden': 'true' },
        h('div', { class: 'wf-axis-label' }, 'Span'),
        h('div', { class: 'wf-ticks' }, [0, 0.25, 0.5, 0.75, 1].map((f) => place(h('span', { class: 'wf-tick' }, ms(total * f)), f * 100)))),
      h('ol', { class: 'wf-rows', 'aria-label': 'Spans in call order, indented under their parent' },
        rows.map(({ span, depth, orphan }) => row(span, depth, orphan, total, colors.get(span.service))))));
}

// Depth-first from the roots (no parent, or a parent that never arrived),
// children by start; a span caught in a loop of parents is shown as a root.
function order(spans) {
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const kids = new Map();
  const roots = [];
  for (const s of spans) {
    if (s.parentSpanId && byId.has(s.parentSpanId)) {
      if (!kids.has(s.parentSpanId)) kids.set(s.parentSpanId, []);
      kids.get(s.parentSpanId).push(s);
    } else {
      roots.push(s);
    }
  }
  const out = [];
  const seen = new Set();
  const walk = (s, depth) => {
    if (seen.has(s.spanId)) return;
    seen.add(s.spanId);
    out.push({ span: s, depth, orphan: !!s.parentSpanId && !byId.has(s.parentSpanId) });
    for (const c of kids.get(s.spanId) || []) walk(c, depth + 1);
  };
  for (const r of roots) walk(r, 0);
  for (const s of spans) if (!seen.has(s.spanId)) walk(s, 0);
  return out;
}

function swatch(color) {
  const el = h('span', { class: 'wf-swatch', 'aria-hidden': 'true' });
  el.style.backgroundColor = color;
  return el;
}

function place(el, leftPct) {
  el.style.left = leftPct + '%';
  return el;
}

function row(s, depth, orphan, total, color) {
  const failed = s.status.code === 'error';
  const detailId = 'span-' + s.spanId;
  const left = Math.min(100, (s.startOffsetMs / total) * 100);
  const width = Math.max(0.4, Math.min(100 - left, (s.durationMs / total) * 100));
  const bar = h('span', { class: 'wf-bar' + (failed ? ' wf-bar-error' : '') });
  bar.style.left = left + '%';
  bar.style.width = width + '%';
  bar.style.backgroundColor = color;
  const dur = h('span', { class: 'wf-dur' }, ms(s.durationMs));
  dur.style.left = (left + width) + '%'; // right of the bar: the track keeps room for it
  const detail = h('div', { class: 'wf-detail', id: detailId, hidden: true }, details(s, orphan));
  const label = h('button', { type: 'button', class: 'wf-label', 'aria-expanded': 'false', 'aria-controls': detailId,
    onclick: () => {
      const open = detail.hidden;
      detail.hidden = !open;
      label.setAttribute('aria-expanded', String(open));
    } },
  swatch(color),
  h('span', { class: 'wf-name' }, s.name || '(unnamed)'),
  h('span', { class: 'wf-meta' }, ` ${s.service} · ${s.kind}`, h('span', { class: 'sr' }, ` · starts at ${ms(s.startOffsetMs)}, takes ${ms(s.durationMs)}`)),
  failed ? h('span', { class: 'wf-error' }, ' ⚠ error') : null,
  orphan ? h('span', { class: 'wf-meta' }, ' (parent not received)') : null);
  const li = h('li', { class: 'wf-row' + (failed ? ' wf-failed' : ''), 'data-span': s.spanId, 'data-parent': s.parentSpanId || '', 'data-service': s.service, 'data-depth': String(depth), 'data-status': s.status.code },
    label,
    h('div', { class: 'wf-track', 'aria-hidden': 'true' }, bar, dur),
    detail);
  li.style.setProperty('--depth', String(depth)); // the label's indent (app.css)
  return li;
}

function value(v) {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function attrTable(caption, attrs) {
  const keys = Object.keys(attrs || {}).sort();
  if (!keys.length) return h('p', { class: 'muted small' }, caption + ': none');
  return h('div', { class: 'table-wrap' }, h('table', { class: 'attrs' }, h('caption', null, caption),
    h('tbody', null, keys.map((k) => h('tr', null, h('th', { scope: 'row' }, k), h('td', null, value(attrs[k])))))));
}

function details(s, orphan) {
  return [
    h('dl', { class: 'facts small' },
      h('dt', null, 'Status'), h('dd', { class: s.status.code === 'error' ? 'warn' : '' }, s.status.code, s.status.message ? ': ' + s.status.message : ''),
      h('dt', null, 'Service'), h('dd', null, s.service),
      h('dt', null, 'Kind'), h('dd', null, s.kind),
      h('dt', null, 'Starts at'), h('dd', null, `${ms(s.startOffsetMs)} into the trace`),
      h('dt', null, 'Duration'), h('dd', null, ms(s.durationMs)),
      h('dt', null, 'Span id'), h('dd', null, h('code', null, s.spanId)),
      h('dt', null, 'Parent'), h('dd', null, s.parentSpanId ? h('code', null, s.parentSpanId) : 'none (a root)', orphan ? ' — not received' : '')),
    attrTable('Attributes', s.attributes),
    s.events.length ? h('div', null, h('h3', { class: 'small' }, 'Events'), h('ul', { class: 'small' }, s.events.map((e) => h('li', null,
      h('strong', null, e.name || '(unnamed)'), e.offsetMs !== null ? ` at ${ms(e.offsetMs)}` : '',
      Object.keys(e.attributes).length ? attrTable('Attributes of ' + (e.name || 'the event'), e.attributes) : null)))) : null,
    s.links.length ? h('div', null, h('h3', { class: 'small' }, 'Links'), h('ul', { class: 'small' }, s.links.map((l) => h('li', null,
      h('a', { href: '#/ops/traces/' + l.traceId }, 'trace ' + shortId(l.traceId)), ', span ', h('code', null, l.spanId))))) : null,
  ];
}
