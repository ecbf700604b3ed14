// session.js: who is signed in. The access token (15 minutes) and the
// single-use refresh token live in localStorage so that tabs share them;
// a refresh happens when a call answers 401 or the token is about to expire.

const KEY = 'agora.session';
const listeners = new Set();
let current = load();
let refreshing = null;

function load() {
  try {
    return JSON.parse(localStorage.getItem(KEY)) || null;
  } catch {
    return null;
  }
}

function save(s) {
  current = s;
  if (s) localStorage.setItem(KEY, JSON.stringify(s));
  else localStorage.removeItem(KEY);
  for (const f of listeners) f(current);
}

// Another tab signed in or out.
window.addEventListener('storage', (ev) => {
  if (ev.key === KEY) {
    current = load();
    for (const f of listeners) f(current);
  }
});

export function session() {
  return current;
}

export function user() {
  return current ? current.user : null;
}

export function isAdmin() {
  return !!(current && current.user && current.user.role === 'admin');
}

export function onChange(f) {
  listeners.add(f);
  return () => listeners.delete(f);
}

// data: the answer of login, register or refresh.
export function start(data) {
  const expiresIn = data.expiresIn || 900;
  save({
    token: data.token,
    refreshToken: data.refreshToken,
    user: data.user || (current && current.user),
    expiresAt: Date.now() + expiresIn * 1000,
  });
}

export function setUser(u) {
  if (current) save({ ...current, user: u });
}

export function end() {
  save(null);
}

export function tokenFresh() {
  return current && current.token && current.expiresAt - Date.now() > 30000;
}

// One refresh at a time, shared by every caller that found the token stale.
export function refresh() {
  if (!current || !current.refreshToken) return Promise.resolve(false);
  if (!refreshing) {
    const rt = current.refreshToken;
    refreshing = fetch('/api/v1/auth/refresh', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ refreshToken: rt }),
    }).then(async (r) => {
      if (r.ok) {
        const doc = await r.json();
        start(doc.data);
        return true;
      }
      // A refresh token another tab already spent: take its new session.
      const other = load();
      if (other && other.refreshToken !== rt) {
        current = other;
        return true;
      }
      if (r.status === 401) save(null);
      return false;
    }).catch(() => false).finally(() => { refreshing = null; });
  }
  return refreshing;
}
