// realtime.js: the one WebSocket of this tab (/api/v1/ws). It carries
// notifications and the chat's frames; each frame is dispatched as an event
// of its type ('notification', 'message.sent', 'typing', 'presence', …).
// After a drop it reconnects with backoff and resumes from the last id seen
// (?since=), so nothing is missed and nothing comes twice.
import * as session from './session.js';

class Realtime extends EventTarget {
  constructor() {
    super();
    this.ws = null;
    this.state = 'off';
    this.lastId = null;
    this.backoff = 500;
    this.timer = null;
    this.pinger = null;
    this.wanted = false;
    this.seen = new Set();
  }

  start() {
    this.wanted = true;
    if (!this.ws) this.connect();
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
    this.lastId = null;
    this.seen.clear();
    this.setState('off');
  }

  setState(s) {
    this.state = s;
    this.dispatchEvent(new CustomEvent('state', { detail: s }));
  }

  async connect() {
    if (!this.wanted) return;
    if (!session.tokenFresh()) await session.refresh();
    const s = session.session();
    if (!s || !this.wanted) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let url = `${proto}//${location.host}/api/v1/ws?access_token=${encodeURIComponent(s.token)}`;
    if (this.lastId) url += '&since=' + encodeURIComponent(this.lastId);
    this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => this.frame(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pinger);
      this.setState('closed');
      this.retry();
    };
    ws.onerror = () => {};
  }

  retry() {
    if (!this.wanted) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 15000);
  }

  frame(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      return;
    }
    if (m.type === 'ready') {
      this.backoff = 500;
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: 'ping' }), 20000);
      this.setState('open');
    }
    if (m.id !== undefined && m.id !== null) {
      if (this.seen.has(String(m.id))) return;
      this.seen.add(String(m.id));
      if (this.seen.size > 2000) this.seen = new Set([...this.seen].slice(-1000));
      if (this.lastId === null || Number(m.id) > Number(this.lastId)) this.lastId = String(m.id);
    }
    this.dispatchEvent(new CustomEvent(m.type, { detail: m }));
    this.dispatchEvent(new CustomEvent('frame', { detail: m }));
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }
}

export const realtime = new Realtime();
