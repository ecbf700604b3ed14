// app.js: the shell. Hash routes (#/cart, #/product/<id>) so the gateway
// serves one index.html for every page; the header (account, badges), the
// live-update state, and the router that hands <main> to a page module.
import { h, clear, errorBox, toast } from './ui.js';
import * as session from './session.js';
import { api, get } from './api.js';
import { realtime } from './realtime.js';
import { badge, refreshCartBadge, refreshNotifBadge, refreshChatBadge } from './badges.js';
import * as shop from './pages/shop.js';
import * as account from './pages/account.js';
import * as cart from './pages/cart.js';
import * as orders from './pages/orders.js';
import * as notifications from './pages/notifications.js';
import * as chat from './pages/chat.js';
import * as ops from './pages/ops.js';
import * as traces from './pages/traces.js';

const routes = [
  [/^\/?$/, shop.catalogue, 'shop'],
  [/^\/product\/([^/]+)$/, shop.product, 'shop'],
  [/^\/signin$/, account.signin, null],
  [/^\/register$/, account.register, null],
  [/^\/cart$/, cart.cart, 'cart'],
  [/^\/checkout$/, cart.checkout, 'cart'],
  [/^\/orders$/, orders.list, 'orders'],
  [/^\/orders\/([^/]+)$/, orders.detail, 'orders'],
  [/^\/notifications$/, notifications.page, 'notifications'],
  [/^\/chat$/, chat.page, 'chat'],
  [/^\/chat\/([^/]+)$/, chat.page, 'chat'],
  [/^\/ops$/, ops.page, 'ops'],
  [/^\/ops\/traces\/([^/]+)$/, traces.trace, 'ops'],
];

let cleanup = null;
let renderSeq = 0;

export function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  return { path, query: new URLSearchParams(query) };
}

export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  const seq = ++renderSeq;
  if (cleanup) {
    try { cleanup(); } catch { /* a page's cleanup never stops navigation */ }
    cleanup = null;
  }
  const { path, query } = parseHash();
  const main = document.getElementById('main');
  let found = null;
  for (const [re, fn, nav] of routes) {
    const m = path.match(re);
    if (m) { found = { fn, nav, params: m.slice(1).map(decodeURIComponent) }; break; }
  }
  for (const a of document.querySelectorAll('#nav a')) {
    if (found && a.dataset.nav === found.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!found) {
    clear(main, h('h1', { tabindex: '-1', class: 'page-title' }, 'Page not found'),
      h('p', null, 'There is no page at ', h('code', null, '#' + path), '. ', h('a', { href: '#/' }, 'Go to the shop.')));
    focusTitle(main);
    return;
  }
  clear(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const ret = await found.fn(main, found.params, query, { go, isCurrent: () => seq === renderSeq });
    if (seq !== renderSeq) { if (typeof ret === 'function') ret(); return; }
    if (typeof ret === 'function') cleanup = ret;
  } catch (err) {
    if (seq !== renderSeq) return;
    clear(main, h('h1', { tabindex: '-1', class: 'page-title' }, 'This page could not be shown'), errorBox(err));
  }
  if (seq === renderSeq) focusTitle(main);
}

let firstRoute = true;
function focusTitle(main) {
  if (firstRoute) { firstRoute = false; return; }
  const t = main.querySelector('.page-title');
  if (t) t.focus({ preventScroll: false });
}

// --- header ----------------------------------------------------------------------------

function renderAccount() {
  const box = document.getElementById('account');
  const u = session.user();
  for (const a of document.querySelectorAll('#nav [data-admin]')) a.hidden = !session.isAdmin();
  for (const a of document.querySelectorAll('#nav [data-auth]')) a.hidden = !u;
  if (!u) {
    clear(box, h('a', { href: '#/signin', class: 'button small' }, 'Sign in'),
      h('a', { href: '#/register', class: 'button small secondary' }, 'Register'));
    return;
  }
  clear(box, h('span', { class: 'who', title: u.email }, 'Signed in as ', h('strong', { id: 'whoami' }, u.username)),
    h('button', { type: 'button', class: 'small secondary', onclick: signOut }, 'Sign out'));
}

async function signOut() {
  try {
    await api('POST', '/api/v1/auth/logout');
  } catch {
    /* signing out locally is what matters; the server's session ends with its tokens */
  }
  session.end();
  toast('Signed out.');
  go('#/');
}

function banner(text) {
  const b = document.getElementById('banner');
  b.hidden = !text;
  b.textContent = text || '';
}

realtime.addEventListener('state', (ev) => {
  const words = { off: 'off', connecting: 'connecting…', open: 'connected', closed: 'disconnected, retrying…' };
  const el = document.getElementById('live-state');
  el.textContent = 'Live updates: ' + (words[ev.detail] || ev.detail);
  el.dataset.state = ev.detail;
});

realtime.addEventListener('notification', (ev) => {
  const n = ev.detail.data || {};
  if (n.title) toast(n.title + (n.message ? ': ' + n.message : ''));
  refreshNotifBadge();
  // A confirmed order placed from the cart empties it (agora-cart consumes
  // order.confirmed): the badge follows.
  if (n.type === 'order.confirmed') for (const ms of [500, 3000]) setTimeout(refreshCartBadge, ms);
});

realtime.addEventListener('message.sent', (ev) => {
  const d = ev.detail.data || {};
  const u = session.user();
  if (u && d.userId !== u.id && !location.hash.startsWith('#/chat/' + d.roomId)) refreshChatBadge();
});

function onSession() {
  renderAccount();
  if (session.user()) {
    realtime.start();
    refreshCartBadge();
    refreshNotifBadge();
    refreshChatBadge();
  } else {
    realtime.stop();
    badge('cart-count', 0);
    badge('notif-count', 0);
    badge('chat-unread', 0);
  }
}

async function boot() {
  session.onChange(onSession);
  onSession();
  window.addEventListener('hashchange', route);
  window.addEventListener('offline', () => banner('You are offline: changes cannot be sent until the connection is back.'));
  window.addEventListener('online', () => banner(''));
  // A session from an earlier visit: check it still holds (and refresh the user).
  if (session.user()) {
    get('/api/v1/users/me').then((u) => { session.setUser(u); }).catch((err) => {
      if (err.status === 401) session.end();
    });
  }
  await route();
}

boot();
