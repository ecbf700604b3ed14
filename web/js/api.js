// api.js: every call to the gateway. Answers follow DESIGN.md §4
// ({success, data} or {success:false, error:{code, message, details}});
// anything else (a proxy's HTML, a cut connection) still becomes an
// ApiError with a sentence a person can read.
import * as session from './session.js';

export class ApiError extends Error {
  constructor(status, code, message, details, requestId, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

const WORDS = {
  0: 'The server could not be reached. Check the connection and try again.',
  401: 'Please sign in again: your session has ended.',
  403: 'You are not allowed to do that.',
  404: 'Not found.',
  413: 'That is too large to send.',
  429: 'Too many requests: please wait a moment and try again.',
  500: 'The server failed to answer this request.',
  502: 'A service behind the gateway gave a bad answer.',
  503: 'This part of Agora is not available right now.',
  504: 'A service took too long to answer.',
};

export function describe(status, error) {
  let msg = (error && error.message) || WORDS[status] || `The request failed (HTTP ${status}).`;
  if (status === 503 && error && error.message && !/try again/i.test(msg)) msg += '. Please try again shortly.';
  return msg;
}

function headersFor(opts) {
  const hd = { Accept: 'application/json', ...(opts.headers || {}) };
  const s = session.session();
  if (s && s.token && opts.auth !== false) hd.Authorization = 'Bearer ' + s.token;
  return hd;
}

async function send(method, path, opts) {
  const init = { method, headers: headersFor(opts) };
  if (opts.body !== undefined) {
    init.body = JSON.stringify(opts.body);
    init.headers['Content-Type'] = 'application/json';
  }
  if (opts.signal) init.signal = opts.signal;
  return fetch(path, init);
}

// api('GET', '/api/v1/products?q=x') → the whole envelope ({data, pagination, …}).
// opts: {body, headers, auth: false, raw: true (the Response itself)}.
export async function api(method, path, opts = {}) {
  if (session.session() && !session.tokenFresh() && opts.auth !== false) await session.refresh();
  let res;
  try {
    res = await send(method, path, opts);
    if (res.status === 401 && session.session() && opts.auth !== false && await session.refresh()) {
      res = await send(method, path, opts);
    }
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'NETWORK', WORDS[0]);
  }
  if (opts.raw && res.ok) return res;
  const text = await res.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch {
    doc = null;
  }
  if (!res.ok || (doc && doc.success === false)) {
    const err = doc && doc.error;
    throw new ApiError(res.status, err ? err.code : 'HTTP_' + res.status, describe(res.status, err),
      err && err.details, (doc && doc.requestId) || res.headers.get('X-Request-Id'),
      res.headers.get('Retry-After'));
  }
  if (doc === null && text) {
    throw new ApiError(res.status, 'BAD_ANSWER', 'The server answered something that is not JSON.');
  }
  return doc || { success: true, data: null };
}

export const get = (p, o) => api('GET', p, o).then((d) => d.data);
export const post = (p, body, o = {}) => api('POST', p, { ...o, body }).then((d) => d && d.data);
export const put = (p, body, o = {}) => api('PUT', p, { ...o, body }).then((d) => d && d.data);
export const patch = (p, body, o = {}) => api('PATCH', p, { ...o, body }).then((d) => d && d.data);
export const del = (p, o) => api('DELETE', p, o).then((d) => d && d.data);

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '' && v !== false) u.set(k, v);
  }
  const s = u.toString();
  return s ? '?' + s : '';
}

// An upload with progress (fetch has no upload progress): the raw bytes of
// file as the body. onProgress(loaded, total). Resolves with data.
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const go = (retried) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', path);
      const s = session.session();
      if (s && s.token) xhr.setRequestHeader('Authorization', 'Bearer ' + s.token);
      xhr.setRequestHeader('Content-Type', file.type || 'application/octet-stream');
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.onprogress = (ev) => onProgress && onProgress(ev.loaded, ev.lengthComputable ? ev.total : file.size);
      xhr.onerror = () => reject(new ApiError(0, 'NETWORK', WORDS[0]));
      xhr.onload = async () => {
        if (xhr.status === 401 && !retried && await session.refresh()) return go(true);
        let doc = null;
        try {
          doc = JSON.parse(xhr.responseText);
        } catch {
          doc = null;
        }
        if (xhr.status >= 200 && xhr.status < 300 && doc) return resolve(doc.data);
        const err = doc && doc.error;
        reject(new ApiError(xhr.status, err ? err.code : 'HTTP_' + xhr.status, describe(xhr.status, err),
          err && err.details, doc && doc.requestId));
      };
      xhr.send(file);
    };
    (session.tokenFresh() ? Promise.resolve() : session.refresh()).then(() => go(false));
  });
}
