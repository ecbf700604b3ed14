// ui.js: building DOM without innerHTML (no markup from data ever reaches
// the parser), formatting, and the ways a page tells the person something.

// h('button', {class: 'x', onclick: f}, 'text', child, [more]) → element.
// Attributes: class, for → htmlFor, on* → listeners, boolean true → empty
// attribute, false/null/undefined → left out; everything else setAttribute.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === false || v === null || v === undefined) continue;
      if (k.startsWith('on') && typeof v === 'function') {
        el.addEventListener(k.slice(2), v);
      } else if (k === 'value' && 'value' in el) {
        el.value = v;
      } else if (k === 'checked' || k === 'selected' || k === 'disabled') {
        el[k] = !!v;
      } else {
        el.setAttribute(k === 'className' ? 'class' : k, v === true ? '' : String(v));
      }
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function money(cents, currency = 'USD') {
  try {
    return new Intl.NumberFormat('en', { style: 'currency', currency }).format(cents / 100);
  } catch {
    return (cents / 100).toFixed(2) + ' ' + currency;
  }
}

export function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'short' });
}

export function clock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' });
}

export function bytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1024 / 1024).toFixed(1) + ' MiB';
}

export function shortId(id) {
  return String(id || '').slice(-8);
}

// An error in words, as an alert the person can read (and a screen reader
// announces). err is an ApiError or any Error.
export function errorBox(err, what) {
  const msg = err && err.message ? err.message : String(err);
  const box = h('div', { class: 'error', role: 'alert' },
    h('strong', null, what ? what + ': ' : 'Something went wrong: '), msg);
  if (err && err.details && Array.isArray(err.details) && err.details.length) {
    box.appendChild(h('ul', null, err.details.map((d) =>
      h('li', null, typeof d === 'string' ? d : [d.field, d.message || d.reason || JSON.stringify(d)]
        .filter(Boolean).join(': ')))));
  }
  if (err && err.requestId) box.appendChild(h('div', { class: 'muted small' }, 'Request id ' + err.requestId));
  return box;
}

let toastTimer = null;
export function toast(text) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove('show'), 4000);
}

// A page's heading, focused after navigation so that keyboard and screen
// reader users land on the new content.
export function heading(text, level = 1) {
  return h('h' + level, { tabindex: '-1', class: 'page-title' }, text);
}

export function field(label, input, hint) {
  const id = input.id || ('f-' + Math.random().toString(36).slice(2, 9));
  input.id = id;
  const parts = [h('label', { for: id }, label), input];
  if (hint) {
    const hid = id + '-hint';
    input.setAttribute('aria-describedby', hid);
    parts.push(h('small', { id: hid, class: 'hint' }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

export function stars(rating, count) {
  const r = Math.round((rating || 0) * 2) / 2;
  const full = Math.floor(r);
  const txt = '★'.repeat(full) + (r - full ? '½' : '') + '☆'.repeat(5 - Math.ceil(r));
  return h('span', { class: 'stars', title: rating + ' out of 5' },
    h('span', { 'aria-hidden': 'true' }, txt),
    h('span', { class: 'sr' }, (count ? `Rated ${rating} out of 5` : 'Not rated yet')),
    count !== undefined ? h('span', { class: 'muted' }, ` (${count} review${count === 1 ? '' : 's'})`) : null);
}

export function statusBadge(status) {
  return h('span', { class: 'status status-' + String(status).toLowerCase() }, status);
}

// A form's submit that disables its button while the work runs and shows
// the error under the form when it throws.
export function onSubmit(form, work) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const btn = form.querySelector('button[type=submit]');
    const out = form.querySelector('.form-error') || form.appendChild(h('div', { class: 'form-error' }));
    out.replaceChildren();
    if (btn) btn.disabled = true;
    try {
      await work(new FormData(form));
    } catch (err) {
      out.replaceChildren(errorBox(err));
    } finally {
      if (btn) btn.disabled = false;
    }
  });
  return form;
}

export function randomKey() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  const a = new Uint8Array(16);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
}
