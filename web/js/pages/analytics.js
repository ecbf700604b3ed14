// analytics.js: the ops console's Analytics section, for admins: what
// agora-analytics' read model says (services/analytics/README.md), built
// only from the event stream. One GET /api/v1/analytics/summary (journal,
// orders by status, conversion, revenue per currency, active users, top
// products, busiest rooms) and GET /api/v1/analytics/revenue for the last
// 30 UTC days, drawn per currency with chart.js's sparkline; re-read with
// the rest of the page, the section rebuilt only when an answer changed.
// "Rebuild read model" posts /api/v1/admin/analytics/rebuild and says how
// many journal events were folded again, and how long it took.
//
// Definitions are the service's: revenue, top products and "confirmed"
// count kept orders (CONFIRMED, SHIPPED or DELIVERED; a cancelled order was
// refunded and does not count); a day is the UTC day an order was created.
import { h, clear, errorBox, when, money, statusBadge } from '../ui.js';
import { get, post, qs } from '../api.js';
import { sparkline } from '../chart.js';

const DAYS = 30;
const STATUSES = ['PENDING', 'CONFIRMED', 'SHIPPED', 'DELIVERED', 'CANCELLED'];

const count = (n) => (Number.isFinite(n) ? n.toLocaleString('en') : '—');
const pct = (r) => (Number.isFinite(r) ? `${(r * 100).toFixed(1)} %` : '—');

// The last `n` UTC days, oldest first, as YYYY-MM-DD.
function lastDays(n) {
  const today = Date.parse(new Date().toISOString().slice(0, 10) + 'T00:00:00Z');
  return Array.from({ length: n }, (_, i) => new Date(today - (n - 1 - i) * 86400000).toISOString().slice(0, 10));
}

const dayName = (day) => new Date(day + 'T00:00:00Z').toLocaleDateString('en-GB', { day: 'numeric', month: 'short', timeZone: 'UTC' });

export function analyticsSection() {
  const box = h('div', { id: 'analytics' }, h('p', { class: 'muted' }, 'Loading…'));
  const journal = h('p', { id: 'analytics-journal', class: 'muted small' });
  const rebuilt = h('div', { id: 'analytics-rebuild-status', role: 'status', class: 'small' });
  const rebuildBtn = h('button', { type: 'button', class: 'small secondary', id: 'analytics-rebuild', onclick: rebuild }, 'Rebuild read model');
  let seq = 0;
  let shown = '';      // the answers the section shows now
  let daysOpen = false; // the per-day table's <details>, kept open across redraws

  async function load() {
    const mine = ++seq;
    const days = lastDays(DAYS);
    let summary;
    let revenue;
    try {
      [summary, revenue] = await Promise.all([
        get('/api/v1/analytics/summary'),
        get('/api/v1/analytics/revenue' + qs({ from: days[0] })).catch((err) => ({ error: err })),
      ]);
    } catch (err) {
      if (mine !== seq) return;
      shown = '';
      clear(journal);
      clear(box, errorBox(err, 'Analytics could not be read from agora-analytics'),
        h('p', { class: 'muted small' }, 'The rest of the console does not depend on it; this section tries again at the next refresh.'));
      return;
    }
    if (mine !== seq) return; // a newer reading is on its way
    const key = JSON.stringify([summary, revenue.error ? revenue.error.message : revenue]);
    if (key === shown) return;
    shown = key;
    const j = summary.journal || {};
    clear(journal, 'Built only from the event stream: the journal holds ', h('strong', { id: 'analytics-events' }, count(j.events)),
      ` event${j.events === 1 ? '' : 's'}`, j.lastEventAt ? [', the last at ', h('time', { datetime: j.lastEventAt }, when(j.lastEventAt))] : ' (none yet)', '.');
    clear(box,
      stats(summary),
      h('div', { class: 'analytics-grid' },
        part('an-orders', 'Orders by status', orders(summary.orders)),
        part('an-conversion', 'Conversion', conversion(summary.conversion))),
      part('an-revenue', 'Revenue', revenueView(summary.revenue, revenue, days)),
      part('an-top', 'Top products', topProducts(summary.topProducts)),
      part('an-rooms', 'Busiest chat rooms', rooms(summary.rooms)));
  }

  async function rebuild() {
    rebuildBtn.disabled = true;
    clear(rebuilt, 'Rebuilding the read model from the journal…');
    try {
      const r = await post('/api/v1/admin/analytics/rebuild', {});
      clear(rebuilt, `Rebuilt from ${count(r.events)} event${r.events === 1 ? '' : 's'} in ${count(r.tookMs)} ms.`);
      await load();
    } catch (err) {
      clear(rebuilt, errorBox(err, 'The read model could not be rebuilt'));
    } finally {
      rebuildBtn.disabled = false;
    }
  }

  const part = (id, title, body) => h('section', { 'aria-labelledby': id + '-title', class: 'analytics-part' },
    h('h3', { id: id + '-title' }, title), body);

  function stats(s) {
    const o = s.orders || {};
    const a = s.activeUsers || {};
    const kept = (s.revenue || []).reduce((n, r) => n + r.orders, 0);
    const item = (id, value, label) => h('li', { class: 'stat', id }, h('span', { class: 'stat-value' }, value), h('span', { class: 'stat-label' }, label));
    return h('ul', { class: 'stats', 'aria-label': 'Analytics in short' },
      item('analytics-total-orders', count(o.total), 'orders placed'),
      item('analytics-kept-orders', count(kept), 'orders kept (confirmed, shipped or delivered)'),
      item('analytics-active-today', count(a.today), 'active users today (UTC)'),
      item('analytics-active-30', count(a.last30Days), 'active users in the last 30 days'));
  }

  function orders(o) {
    if (!o) return h('p', { class: 'muted' }, 'No answer.');
    const by = o.byStatus || {};
    return h('div', { class: 'table-wrap' }, h('table', { id: 'analytics-orders', class: 'numbers' },
      h('caption', { class: 'sr' }, 'Orders by their furthest status'),
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Orders'))),
      h('tbody', null, STATUSES.map((st) => h('tr', { 'data-status': st },
        h('th', { scope: 'row' }, statusBadge(st)), h('td', null, count(by[st] || 0))))),
      h('tfoot', null, h('tr', null, h('th', { scope: 'row' }, 'All orders'), h('td', null, count(o.total))))));
  }

  function conversion(c) {
    if (!c) return h('p', { class: 'muted' }, 'No answer.');
    const top = Math.max(c.carts, 1);
    const step = (id, label, n, rate) => {
      const bar = h('span', { class: 'funnel-bar' });
      bar.style.width = `${Math.min(100, (n / top) * 100)}%`;
      return h('li', { id },
        h('div', { class: 'funnel-label' }, h('strong', null, count(n)), ' ', label, rate ? h('span', { class: 'muted' }, ' · ', rate) : null),
        h('div', { class: 'funnel-track', 'aria-hidden': 'true' }, bar));
    };
    return [
      h('ol', { class: 'funnel', 'aria-label': 'From cart to confirmed order, in people' },
        step('funnel-carts', `${c.carts === 1 ? 'person' : 'people'} put something in a cart`, c.carts, null),
        step('funnel-ordered', 'of them placed an order', c.cartsOrdered, `${pct(c.cartToOrder)} of carts`),
        step('funnel-confirmed', 'of them have a confirmed order', c.cartsConfirmed, `${pct(c.carts ? c.cartsConfirmed / c.carts : NaN)} of carts`)),
      h('p', { id: 'funnel-orders' }, h('strong', null, count(c.confirmed)), ` of ${count(c.orders)} order${c.orders === 1 ? '' : 's'} confirmed`,
        h('span', { class: 'muted' }, ' · ', pct(c.orderToConfirmed))),
    ];
  }

  function revenueView(totals, byDay, days) {
    if (!totals || !totals.length) return h('p', { class: 'muted', id: 'analytics-revenue' }, 'No revenue yet: no order has been confirmed.');
    const daily = new Map(); // currency → day → {orders, revenueCents}
    if (!byDay.error) {
      for (const r of byDay) {
        if (!daily.has(r.currency)) daily.set(r.currency, new Map());
        daily.get(r.currency).set(r.day, r);
      }
    }
    const rows = totals.map((t) => {
      const m = daily.get(t.currency) || new Map();
      const cents = days.map((d) => (m.get(d) ? m.get(d).revenueCents : 0));
      const sum = cents.reduce((a, b) => a + b, 0);
      const best = cents.indexOf(Math.max(...cents));
      const text = `${t.currency} revenue per day over the last ${DAYS} days: ${money(sum, t.currency)} in all` +
        (sum ? `, the best day ${dayName(days[best])} with ${money(cents[best], t.currency)}` : '') +
        `, today ${money(cents[cents.length - 1], t.currency)}`;
      return h('tr', { 'data-currency': t.currency },
        h('th', { scope: 'row' }, t.currency),
        h('td', { 'data-label': 'Orders' }, count(t.orders)),
        h('td', { 'data-label': 'Revenue' }, money(t.revenueCents, t.currency)),
        h('td', { 'data-label': `Last ${DAYS} days` }, byDay.error ? '—' : [
          sparkline(cents.map((c) => c / 100), { width: 180, height: 36, text }),
          h('div', { class: 'muted small' }, `${money(sum, t.currency)} in ${DAYS} days`)]));
    });
    const perDay = byDay.error ? errorBox(byDay.error, 'The revenue by day could not be read') : dayTable(byDay);
    return [
      h('div', { class: 'table-wrap' }, h('table', { id: 'analytics-revenue', class: 'numbers stack' },
        h('caption', { class: 'sr' }, 'Revenue of kept orders per currency, and per day over the last 30 days'),
        h('thead', null, h('tr', null, ['Currency', 'Orders', 'Revenue', `Last ${DAYS} days`].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', null, rows))),
      perDay,
    ];
  }

  function dayTable(byDay) {
    if (!byDay.length) return h('p', { class: 'muted small' }, `No kept order in the last ${DAYS} days.`);
    const d = h('details', { id: 'analytics-days', open: daysOpen, ontoggle: () => { daysOpen = d.open; } },
      h('summary', { class: 'small' }, `Revenue by day (UTC), the last ${DAYS} days`),
      h('div', { class: 'table-wrap' }, h('table', { class: 'numbers small' },
        h('caption', { class: 'sr' }, 'Revenue of kept orders by day and currency'),
        h('thead', null, h('tr', null, ['Day', 'Currency', 'Orders', 'Revenue'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', null, [...byDay].reverse().map((r) => h('tr', null,
          h('th', { scope: 'row' }, h('time', { datetime: r.day }, dayName(r.day))),
          h('td', null, r.currency), h('td', null, count(r.orders)), h('td', null, money(r.revenueCents, r.currency))))))));
    return d;
  }

  function topProducts(list) {
    if (!list || !list.length) return h('p', { class: 'muted', id: 'analytics-top' }, 'No product sold yet.');
    return h('div', { class: 'table-wrap' }, h('table', { id: 'analytics-top', class: 'numbers stack' },
      h('caption', { class: 'sr' }, 'Top products by revenue of kept orders'),
      h('thead', null, h('tr', null, ['Product', 'Units', 'Revenue'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, list.map((p) => h('tr', { 'data-product': p.name },
        h('th', { scope: 'row' }, h('a', { href: '#/product/' + encodeURIComponent(p.productId) }, p.name || p.productId)),
        h('td', { 'data-label': 'Units' }, count(p.units)),
        h('td', { 'data-label': 'Revenue' }, money(p.revenueCents, p.currency)))))));
  }

  function rooms(list) {
    if (!list || !list.length) return h('p', { class: 'muted', id: 'analytics-rooms' }, 'No chat room yet.');
    return h('div', { class: 'table-wrap' }, h('table', { id: 'analytics-rooms', class: 'numbers stack' },
      h('caption', { class: 'sr' }, 'Chat rooms with the most messages'),
      h('thead', null, h('tr', null, ['Room', 'Messages', 'Deleted', 'Senders', 'Last message'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, list.map((r) => h('tr', { 'data-room': r.roomId },
        h('th', { scope: 'row' }, r.name || '(unnamed room)',
          r.isPrivate || r.deleted ? h('div', { class: 'muted small' }, [r.isPrivate ? 'private' : null, r.deleted ? 'deleted' : null].filter(Boolean).join(', ')) : null),
        h('td', { 'data-label': 'Messages' }, count(r.messages)),
        h('td', { 'data-label': 'Deleted' }, count(r.messagesDeleted)),
        h('td', { 'data-label': 'Senders' }, count(r.senders)),
        h('td', { 'data-label': 'Last message' }, r.lastMessageAt ? when(r.lastMessageAt) : 'none'))))));
  }

  const el = h('section', { 'aria-labelledby': 'analytics-title' },
    h('h2', { id: 'analytics-title' }, 'Analytics'),
    h('p', { class: 'muted small' }, 'The shop\'s and the chat\'s numbers from agora-analytics, a read model fed by the services\' events. Revenue, top products and “confirmed” count orders confirmed, shipped or delivered (a cancelled order was refunded); days are UTC.'),
    journal,
    h('div', { class: 'toolbar analytics-tools' }, rebuildBtn, rebuilt),
    box);
  return { el, refresh: load };
}
