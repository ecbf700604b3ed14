// badges.js: the counts in the header (cart items, unread notifications,
// unread chat messages), refreshed by the pages that change them.
import * as session from './session.js';
import { api, get } from './api.js';

export function badge(id, n) {
  const b = document.getElementById(id);
  if (!b) return;
  b.hidden = !n;
  b.textContent = n ? String(n) : '';
  const label = { 'cart-count': 'items in the cart', 'notif-count': 'unread', 'chat-unread': 'unread messages' }[id];
  b.setAttribute('aria-label', `${n} ${label}`);
}

export async function refreshCartBadge() {
  if (!session.user()) return badge('cart-count', 0);
  try {
    const c = await get('/api/v1/cart');
    badge('cart-count', c.itemCount || 0);
  } catch {
    badge('cart-count', 0);
  }
}

// Answers can come back out of order (a page's own load and a live
// notification each ask): only the newest question sets the badge.
let notifAsked = 0;

export function setNotifUnread(n) {
  notifAsked++;
  badge('notif-count', n);
}

export async function refreshNotifBadge() {
  const mine = ++notifAsked;
  if (!session.user()) return badge('notif-count', 0);
  let n = 0;
  try {
    const doc = await api('GET', '/api/v1/notifications?limit=1');
    n = doc.unreadCount ?? doc.unread ?? 0;
  } catch {
    n = 0;
  }
  if (mine === notifAsked) badge('notif-count', n);
}

export function setChatUnread(n) {
  badge('chat-unread', n);
}

export async function refreshChatBadge() {
  if (!session.user()) return badge('chat-unread', 0);
  try {
    const list = await get('/api/v1/messages/unread');
    badge('chat-unread', list.reduce((a, r) => a + (r.unread || 0), 0));
  } catch {
    badge('chat-unread', 0);
  }
}
