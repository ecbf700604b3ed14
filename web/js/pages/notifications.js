// notifications.js: the caller's notifications, newest first, unread ones
// marked; mark one or all read. New ones appear live.
import { h, clear, heading, when, errorBox } from '../ui.js';
import { api, post, qs } from '../api.js';
import * as session from '../session.js';
import { realtime } from '../realtime.js';
import { setNotifUnread } from '../badges.js';
import { needSignIn } from './account.js';

export async function page(main, _p, query, ctx) {
  if (!session.user()) return needSignIn(main, 'Notifications');
  const unreadOnly = query.get('unread') === 'true';
  const page = Math.max(1, parseInt(query.get('page') || '1', 10) || 1);
  const box = h('div');
  const msg = h('div', { 'aria-live': 'polite' });
  const filter = h('input', { type: 'checkbox', id: 'unread-only', checked: unreadOnly });
  filter.addEventListener('change', () => ctx.go('#/notifications' + qs({ unread: filter.checked ? 'true' : '' })));
  const markAll = h('button', { type: 'button', class: 'secondary', onclick: async () => {
    try {
      await post('/api/v1/notifications/read', { all: true });
      await load();
    } catch (err) {
      clear(msg, errorBox(err, 'Not marked read'));
    }
  } }, 'Mark all read');
  const summary = h('p', { id: 'notif-summary', role: 'status' });
  clear(main, heading('Notifications'),
    h('div', { class: 'toolbar' }, h('div', { class: 'field check' }, filter, h('label', { for: 'unread-only' }, 'Unread only')), markAll),
    summary, msg, box);

  async function load() {
    let doc;
    try {
      doc = await api('GET', '/api/v1/notifications' + qs({ unread: unreadOnly ? 'true' : '', page, limit: 20 }));
    } catch (err) {
      clear(box, errorBox(err, 'Notifications could not be loaded'));
      return;
    }
    const unread = doc.unreadCount ?? doc.unread ?? 0;
    summary.textContent = unread ? `${unread} unread` : 'All read.';
    markAll.disabled = !unread;
    setNotifUnread(unread);
    if (!doc.data.length) {
      clear(box, h('p', { class: 'muted' }, unreadOnly ? 'Nothing unread.' : 'No notifications yet.'));
      return;
    }
    const pg = doc.pagination || { pages: 1 };
    clear(box, h('ul', { class: 'notifications' }, doc.data.map((n) => h('li', { class: 'card' + (n.read ? '' : ' unread'), 'data-type': n.type },
      h('div', null, n.read ? null : h('span', { class: 'dot unread-dot', 'aria-hidden': 'true' }),
        h('strong', null, n.title || n.type), n.read ? null : h('span', { class: 'sr' }, ' (unread)')),
      n.message ? h('p', null, n.message) : null,
      h('p', { class: 'muted small' }, when(n.createdAt),
        n.data && n.data.orderId ? [' · ', h('a', { href: '#/orders/' + encodeURIComponent(n.data.orderId) }, 'See the order')] : null),
      n.read ? null : h('button', { type: 'button', class: 'small secondary', 'aria-label': `Mark “${n.title || n.type}” read`,
        onclick: async () => {
          try {
            await post('/api/v1/notifications/read', { ids: [n.id] });
            await load();
          } catch (err) {
            clear(msg, errorBox(err, 'Not marked read'));
          }
        } }, 'Mark read')))),
    pg.pages > 1 ? h('nav', { class: 'pager', 'aria-label': 'Pages' },
      page > 1 ? h('a', { class: 'button small secondary', href: '#/notifications' + qs({ unread: unreadOnly ? 'true' : '', page: page - 1 }) }, '← Newer') : null,
      h('span', null, `Page ${page} of ${pg.pages}`),
      page < pg.pages ? h('a', { class: 'button small secondary', href: '#/notifications' + qs({ unread: unreadOnly ? 'true' : '', page: page + 1 }) }, 'Older →') : null) : null);
  }
  await load();
  const onNote = () => { if (page === 1) load(); };
  realtime.addEventListener('notification', onNote);
  return () => realtime.removeEventListener('notification', onNote);
}
