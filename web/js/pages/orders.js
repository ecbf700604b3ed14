// orders.js: the caller's orders, and one order whose status follows the
// checkout saga live: order.* notifications arrive over the WebSocket and
// the page reads the order again. While the WebSocket is down the page
// asks every few seconds instead, and says so.
import { h, clear, heading, money, when, errorBox, statusBadge, shortId, toast } from '../ui.js';
import { api, get, post, qs } from '../api.js';
import * as session from '../session.js';
import { realtime } from '../realtime.js';
import { needSignIn } from './account.js';

const STATUSES = ['', 'PENDING', 'CONFIRMED', 'SHIPPED', 'DELIVERED', 'CANCELLING', 'CANCELLED'];

export async function list(main, _p, query, ctx) {
  if (!session.user()) return needSignIn(main, 'Your orders');
  const status = query.get('status') || '';
  const page = Math.max(1, parseInt(query.get('page') || '1', 10) || 1);
  const sel = h('select', { id: 'order-status' }, STATUSES.map((s) => h('option', { value: s, selected: s === status }, s || 'Any status')));
  sel.addEventListener('change', () => ctx.go('#/orders' + qs({ status: sel.value })));
  const box = h('div', { 'aria-live': 'polite' });
  clear(main, heading(session.isAdmin() ? 'Orders (all customers)' : 'Your orders'),
    h('div', { class: 'field inline' }, h('label', { for: 'order-status' }, 'Status'), sel), box);
  const load = async () => {
    let doc;
    try {
      doc = await api('GET', '/api/v1/orders' + qs({ status, page, limit: 20 }));
    } catch (err) {
      clear(box, errorBox(err, 'Orders could not be loaded'));
      return;
    }
    if (!doc.data.length) {
      clear(box, h('p', null, status ? 'No orders with that status.' : 'No orders yet. ', h('a', { href: '#/' }, 'Browse the shop.')));
      return;
    }
    const pg = doc.pagination || { page: 1, pages: 1 };
    clear(box, h('div', { class: 'table-wrap' }, h('table', { class: 'stack' },
      h('caption', { class: 'sr' }, 'Orders, newest first'),
      h('thead', null, h('tr', null, ['Order', 'Placed', 'Items', 'Total', 'Status'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, doc.data.map((o) => h('tr', null,
        h('th', { scope: 'row' }, h('a', { href: '#/orders/' + encodeURIComponent(o.id) }, '#' + shortId(o.id))),
        h('td', { 'data-label': 'Placed' }, when(o.createdAt)),
        h('td', { 'data-label': 'Items' }, (o.items || []).map((i) => `${i.quantity} × ${i.name}`).join(', ')),
        h('td', { 'data-label': 'Total' }, money(o.totalCents, o.currency)),
        h('td', { 'data-label': 'Status' }, statusBadge(o.status), o.reason ? h('div', { class: 'small muted' }, o.reason) : null)))))),
    pg.pages > 1 ? h('nav', { class: 'pager', 'aria-label': 'Pages' },
      page > 1 ? h('a', { class: 'button small secondary', href: '#/orders' + qs({ status, page: page - 1 }) }, '← Newer') : null,
      h('span', null, `Page ${page} of ${pg.pages}`),
      page < pg.pages ? h('a', { class: 'button small secondary', href: '#/orders' + qs({ status, page: page + 1 }) }, 'Older →') : null) : null);
  };
  await load();
  const onNote = (ev) => {
    const t = ev.detail.data && ev.detail.data.type;
    if (t && t.startsWith('order.')) load();
  };
  realtime.addEventListener('notification', onNote);
  return () => realtime.removeEventListener('notification', onNote);
}

const FINAL = new Set(['CANCELLED', 'DELIVERED']);

function describeStatus(o) {
  switch (o.status) {
    case 'PENDING': return 'We are reserving your items and charging your card…';
    case 'CONFIRMED': return 'Paid and confirmed. It will ship soon.';
    case 'SHIPPED': return 'On its way.';
    case 'DELIVERED': return 'Delivered.';
    case 'CANCELLING': return 'Being cancelled: the payment is refunded and the stock returned.';
    case 'CANCELLED': return 'Cancelled' + (o.reason ? ': ' + o.reason : '.');
    default: return o.status;
  }
}

export async function detail(main, [id], _q, ctx) {
  if (!session.user()) return needSignIn(main, 'Order');
  const path = '/api/v1/orders/' + encodeURIComponent(id);
  let o;
  try {
    o = await get(path);
  } catch (err) {
    clear(main, heading('Order'), errorBox(err, 'The order could not be loaded'), h('p', null, h('a', { href: '#/orders' }, 'All orders')));
    return;
  }
  const statusBox = h('div', { class: 'order-status', id: 'order-status', role: 'status', 'aria-live': 'polite' });
  const how = h('p', { class: 'muted small', id: 'order-live' });
  const itemsBox = h('div');
  const historyBox = h('section', { 'aria-labelledby': 'history-title' });
  const actions = h('div', { class: 'actions' });
  const msg = h('div', { 'aria-live': 'polite' });
  clear(main, h('p', null, h('a', { href: '#/orders' }, '← All orders')),
    heading('Order #' + shortId(o.id)), statusBox, how, actions, msg, itemsBox, historyBox);

  const show = (ord) => {
    o = ord;
    clear(statusBox, h('p', { class: 'big' }, 'Status: ', h('span', { id: 'order-status-value' }, statusBadge(ord.status))),
      h('p', { id: 'order-status-text' }, describeStatus(ord)));
    clear(itemsBox,
      h('div', { class: 'table-wrap' }, h('table', { class: 'stack' }, h('caption', null, 'Items'),
        h('thead', null, h('tr', null, ['Product', 'Unit price', 'Quantity', 'Total'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', null, (ord.items || []).map((i) => h('tr', null, h('th', { scope: 'row' }, i.name),
          h('td', { 'data-label': 'Unit price' }, money(i.unitPriceCents, ord.currency)), h('td', { 'data-label': 'Quantity' }, i.quantity),
          h('td', { 'data-label': 'Total' }, money(i.lineTotalCents, ord.currency))))),
        h('tfoot', null, h('tr', null, h('th', { scope: 'row', colspan: 3 }, 'Total'), h('td', null, h('strong', null, money(ord.totalCents, ord.currency))))))),
      h('dl', { class: 'facts' },
        h('dt', null, 'Placed'), h('dd', null, when(ord.createdAt)),
        h('dt', null, 'Ship to'), h('dd', null, ord.shippingAddress ? [ord.shippingAddress.name, ord.shippingAddress.line1, ord.shippingAddress.line2,
          ord.shippingAddress.city, ord.shippingAddress.postalCode, ord.shippingAddress.country].filter(Boolean).join(', ') : '—'),
        h('dt', null, 'Paid with'), h('dd', null, ord.paymentMethod ? (ord.paymentMethod.type === 'card'
          ? `${ord.paymentMethod.brand || 'card'} ending ${ord.paymentMethod.last4}` : 'wallet ' + ord.paymentMethod.walletId) : '—')));
    const canCancel = ['PENDING', 'CONFIRMED'].includes(ord.status) && !ord.cancelRequested;
    clear(actions, canCancel ? h('button', { type: 'button', class: 'secondary', onclick: cancel }, 'Cancel this order') : null,
      session.isAdmin() && ord.status === 'CONFIRMED' ? h('button', { type: 'button', onclick: () => move('SHIPPED') }, 'Mark shipped') : null,
      session.isAdmin() && ord.status === 'SHIPPED' ? h('button', { type: 'button', onclick: () => move('DELIVERED') }, 'Mark delivered') : null);
  };

  const loadHistory = async () => {
    try {
      const hist = await get(path + '/history');
      clear(historyBox, h('h2', { id: 'history-title' }, 'History'),
        h('ol', { class: 'timeline' }, hist.events.map((e) => h('li', null,
          h('strong', null, e.type), ' · ', when(e.at), e.actor ? h('span', { class: 'muted' }, ' by ' + (e.actor === session.user().id ? 'you' : e.actor)) : null,
          e.data && e.data.reason ? h('div', { class: 'small' }, e.data.reason) : null))));
    } catch (err) {
      clear(historyBox, h('h2', { id: 'history-title' }, 'History'), errorBox(err, 'The history could not be loaded'));
    }
  };

  const reload = async () => {
    try {
      const fresh = await get(path);
      const changed = fresh.status !== o.status;
      show(fresh);
      if (changed) toast('Order ' + shortId(fresh.id) + ': ' + fresh.status);
      await loadHistory();
    } catch (err) {
      clear(msg, errorBox(err, 'The order could not be read again'));
    }
  };

  async function cancel() {
    try {
      await post(path + '/cancel', { reason: 'cancelled by the customer' });
      await reload();
    } catch (err) {
      clear(msg, errorBox(err, 'The order was not cancelled'));
    }
  }

  async function move(status) {
    try {
      show(await api('PUT', path + '/status', { body: { status } }).then((d) => d.data));
      await loadHistory();
    } catch (err) {
      clear(msg, errorBox(err, 'The status was not changed'));
    }
  }

  show(o);
  await loadHistory();

  // Live: the order's notifications over the WebSocket; polling only while
  // the WebSocket is not connected.
  let poll = null;
  const liveText = () => {
    const live = realtime.state === 'open';
    how.textContent = FINAL.has(o.status) ? '' : live ? 'This page updates by itself as the order moves on.'
      : 'Live updates are not connected: checking every 3 seconds.';
    clearInterval(poll);
    poll = null;
    if (!live && !FINAL.has(o.status)) poll = setInterval(reload, 3000);
  };
  const onNote = (ev) => {
    const n = ev.detail.data || {};
    if (n.type && n.type.startsWith('order.') && n.data && n.data.orderId === o.id) reload().then(liveText);
  };
  const onState = (ev) => {
    if (ev.detail === 'open') reload();
    liveText();
  };
  realtime.addEventListener('notification', onNote);
  realtime.addEventListener('state', onState);
  // A notification that arrived between the first read and now is covered
  // by one more read once the socket is up.
  if (realtime.state === 'open') reload();
  liveText();
  return () => {
    clearInterval(poll);
    realtime.removeEventListener('notification', onNote);
    realtime.removeEventListener('state', onState);
  };
}
