// people.js: user ids to names, asked of agora-users once per id
// (GET /api/v1/users/:id, a public profile; the route needs a token).
import { get } from './api.js';
import * as session from './session.js';

const names = new Map();
const pending = new Map();

export function known(userId) {
  return names.get(userId);
}

export function remember(userId, username) {
  if (userId && username) names.set(userId, username);
}

export async function nameOf(userId) {
  if (!userId) return 'someone';
  if (names.has(userId)) return names.get(userId);
  const me = session.user();
  if (me && me.id === userId) return me.username;
  if (!me) return 'a customer';
  if (!pending.has(userId)) {
    pending.set(userId, get('/api/v1/users/' + encodeURIComponent(userId))
      .then((u) => { names.set(userId, u.username); return u.username; })
      .catch(() => 'user ' + userId.slice(-6))
      .finally(() => pending.delete(userId)));
  }
  return pending.get(userId);
}
