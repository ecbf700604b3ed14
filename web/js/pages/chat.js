// chat.js: rooms (yours with unread counts, public ones to join, a new
// one), and a room: its history (newest page first, older pages on scroll),
// live messages, edits, deletions, replies and reactions over the
// WebSocket, who is typing, members with presence dots, invitations, and
// attachments uploaded with progress and downloaded with the token.
import { h, clear, heading, field, errorBox, toast, clock, when, bytes, onSubmit } from '../ui.js';
import { api, get, post, patch, del, upload, qs } from '../api.js';
import * as session from '../session.js';
import { realtime } from '../realtime.js';
import { refreshChatBadge, setChatUnread } from '../badges.js';
import { nameOf, remember, known } from '../people.js';
import { needSignIn } from './account.js';

const EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '👀'];
const PAGE = 30;

export async function page(main, params, _q, ctx) {
  if (!session.user()) return needSignIn(main, 'Chat');
  const me = session.user();
  const roomId = params[0] || null;
  const unread = new Map();
  const listeners = [];
  const on = (type, f) => { realtime.addEventListener(type, f); listeners.push([type, f]); };

  const myRooms = h('ul', { class: 'room-list', id: 'my-rooms' });
  const publicRooms = h('ul', { class: 'room-list', id: 'public-rooms' });
  const roomsMsg = h('div', { 'aria-live': 'polite' });
  const pane = h('section', { class: 'room', 'aria-labelledby': 'room-title' });

  const createForm = onSubmit(h('form', { class: 'new-room', 'aria-label': 'New room' },
    field('Room name', h('input', { name: 'name', required: true, maxlength: 100 })),
    field('Description (optional)', h('input', { name: 'description', maxlength: 1000 })),
    h('div', { class: 'field check' }, h('input', { type: 'checkbox', name: 'isPrivate', id: 'room-private' }),
      h('label', { for: 'room-private' }, 'Private (invite only)')),
    h('button', { type: 'submit' }, 'Create room')), async (fd) => {
    const name = fd.get('name').trim();
    if (!name) throw new Error('A room needs a name.');
    const body = { name, isPrivate: !!fd.get('isPrivate') };
    if (fd.get('description').trim()) body.description = fd.get('description').trim();
    const room = await post('/api/v1/rooms', body);
    toast('Room “' + room.name + '” created.');
    ctx.go('#/chat/' + encodeURIComponent(room.id));
  });

  const searchInput = h('input', { type: 'search', name: 'q', placeholder: 'Room name' });
  const searchForm = h('form', { role: 'search', 'aria-label': 'Find public rooms', class: 'inline-form' },
    field('Find rooms', searchInput), h('button', { type: 'submit', class: 'small' }, 'Find'));
  searchForm.addEventListener('submit', (ev) => { ev.preventDefault(); loadPublic(); });

  const aside = h('aside', { class: 'rooms', 'aria-label': 'Rooms' },
    h('h2', null, 'Your rooms'), myRooms, roomsMsg,
    h('details', { class: 'card', open: !roomId }, h('summary', null, 'New room'), createForm),
    h('h2', null, 'Public rooms'), searchForm, publicRooms);

  clear(main, h('div', { class: 'chat' + (roomId ? ' has-room' : '') },
    h('div', { class: 'chat-head' }, heading('Chat'), roomId ? h('a', { href: '#/chat', class: 'back-to-rooms' }, '← All rooms') : null),
    aside, pane));

  // --- room lists ------------------------------------------------------------------------

  let mine = [];
  let countsSeq = 0;
  // Unread counts from agora-messages, the only source of truth: a frame
  // only says that they changed (an answer older than a later ask is dropped).
  async function loadCounts() {
    const seq = ++countsSeq;
    try {
      const counts = await get('/api/v1/messages/unread');
      if (seq !== countsSeq) return;
      for (const c of counts) unread.set(c.roomId, c.unread);
    } catch {
      /* counts stay as they were; the room list still works */
    }
  }
  async function loadMine() {
    try {
      const [rooms] = await Promise.all([get('/api/v1/rooms?mine=true&limit=100'), loadCounts()]);
      mine = rooms;
      roomsMsg.replaceChildren();
      renderMine();
    } catch (err) {
      clear(roomsMsg, errorBox(err, 'Your rooms could not be loaded'));
    }
  }
  let countsTimer = null;
  const refreshCountsSoon = () => {
    clearTimeout(countsTimer);
    countsTimer = setTimeout(() => loadCounts().then(renderMine), 150);
  };
  function renderMine() {
    if (!mine.length) {
      clear(myRooms, h('li', { class: 'muted' }, 'You are in no room yet: create one or join a public room.'));
      return;
    }
    clear(myRooms, mine.map((r) => {
      const n = r.id === roomId ? 0 : (unread.get(r.id) || 0);
      return h('li', { 'data-room': r.name },
        h('a', { href: '#/chat/' + encodeURIComponent(r.id), 'aria-current': r.id === roomId ? 'page' : false },
          h('span', { class: 'room-name' }, r.isPrivate ? '🔒 ' : '# ', r.name),
          n ? h('span', { class: 'badge', 'aria-label': `${n} unread` }, String(n)) : null));
    }));
    let total = 0;
    for (const r of mine) if (r.id !== roomId) total += unread.get(r.id) || 0;
    setChatUnread(total);
  }
  async function loadPublic() {
    try {
      const rooms = await get('/api/v1/rooms' + qs({ q: searchInput.value.trim(), limit: 30 }));
      const others = rooms.filter((r) => !r.myRole);
      clear(publicRooms, others.length ? others.map((r) => h('li', { 'data-room': r.name },
        h('span', { class: 'room-name' }, '# ', r.name, h('span', { class: 'muted small' }, ` · ${r.memberCount} member${r.memberCount === 1 ? '' : 's'}`)),
        h('button', { type: 'button', class: 'small', 'aria-label': 'Join ' + r.name, onclick: async (ev) => {
          ev.target.disabled = true;
          try {
            await post(`/api/v1/rooms/${encodeURIComponent(r.id)}/join`);
            toast('Joined “' + r.name + '”.');
            ctx.go('#/chat/' + encodeURIComponent(r.id));
          } catch (err) {
            ev.target.disabled = false;
            publicRooms.prepend(h('li', null, errorBox(err, 'Could not join')));
          }
        } }, 'Join'))) : h('li', { class: 'muted' }, 'No other public rooms' + (searchInput.value.trim() ? ' match.' : '.')));
    } catch (err) {
      clear(publicRooms, h('li', null, errorBox(err, 'Public rooms could not be loaded')));
    }
  }

  let roomsTimer = null;
  const refreshRoomsSoon = () => {
    clearTimeout(roomsTimer);
    roomsTimer = setTimeout(() => { loadMine(); loadPublic(); }, 250);
  };
  for (const t of ['room.created', 'room.updated', 'room.deleted', 'room.user_joined', 'room.user_left']) on(t, refreshRoomsSoon);
  on('message.sent', (ev) => {
    const d = ev.detail.data || {};
    if (d.roomId !== roomId && d.userId !== me.id) refreshCountsSoon();
  });
  // Reconnected after a drop: counts may have moved meanwhile.
  on('state', (ev) => { if (ev.detail === 'open') loadMine(); });

  await Promise.all([loadMine(), loadPublic()]);
  let roomCleanup = null;
  if (roomId) roomCleanup = await openRoom(pane, roomId, { me, on, unread, renderMine, ctx, mine: () => mine });
  else {
    clear(pane, h('h2', { id: 'room-title' }, 'No room open'),
      h('p', { class: 'muted' }, 'Choose one of your rooms, join a public one, or create a new room.'));
  }
  return () => {
    clearTimeout(roomsTimer);
    clearTimeout(countsTimer);
    for (const [t, f] of listeners) realtime.removeEventListener(t, f);
    if (roomCleanup) roomCleanup();
    refreshChatBadge();
  };
}

async function openRoom(pane, roomId, env) {
  const { me, on, unread, renderMine, ctx } = env;
  let room;
  try {
    room = await get('/api/v1/rooms/' + encodeURIComponent(roomId));
  } catch (err) {
    clear(pane, h('h2', { id: 'room-title' }, 'Room'), errorBox(err, err.status === 404 ? 'This room does not exist or you are not in it' : 'The room could not be loaded'));
    return null;
  }
  if (!room.myRole) {
    clear(pane, h('h2', { id: 'room-title' }, room.name),
      h('p', null, 'You are not a member of this room.'),
      room.isPrivate ? h('p', null, 'It is private: a member has to invite you.') : h('button', { type: 'button', onclick: async () => {
        try {
          await post(`/api/v1/rooms/${encodeURIComponent(roomId)}/join`);
          ctx.go('#/chat/' + encodeURIComponent(roomId));
        } catch (err) {
          pane.appendChild(errorBox(err, 'Could not join'));
        }
      } }, 'Join this room'));
    return null;
  }

  const state = { messages: new Map(), order: [], cursor: null, hasMore: true, loading: false, replyTo: null, fileId: null, fileName: null,
    presence: new Map(), typing: new Map(), members: [] };
  const isMod = () => room.myRole === 'owner' || room.myRole === 'admin';

  const msgList = h('ol', { class: 'messages', id: 'messages', role: 'log', 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': 'Messages in ' + room.name });
  const olderBtn = h('button', { type: 'button', class: 'small secondary older', onclick: () => loadOlder() }, 'Load older messages');
  const scroller = h('div', { class: 'scroller', id: 'message-scroller', tabindex: '0', 'aria-label': 'Message history' }, olderBtn, msgList);
  const typingLine = h('div', { class: 'typing', id: 'typing', 'aria-live': 'polite' });
  const membersList = h('ul', { class: 'members', id: 'members' });
  const paneMsg = h('div', { 'aria-live': 'assertive' });

  // --- composer --------------------------------------------------------------------------
  const text = h('textarea', { name: 'content', rows: 2, maxlength: 4000, id: 'composer-text', placeholder: 'Write a message…' });
  const replyBar = h('div', { class: 'reply-bar', hidden: true });
  const fileInput = h('input', { type: 'file', id: 'attach', class: 'file-input' });
  const progress = h('progress', { max: 100, value: 0, id: 'upload-progress', hidden: true, 'aria-label': 'Upload progress' });
  const progressText = h('span', { id: 'upload-status', class: 'small', 'aria-live': 'polite' });
  const composer = h('form', { class: 'composer', 'aria-label': 'Send a message' },
    replyBar,
    h('label', { for: 'composer-text', class: 'sr' }, 'Message'),
    text,
    h('div', { class: 'composer-row' },
      h('label', { for: 'attach', class: 'button small secondary' }, '📎 Attach a file'), fileInput,
      progress, progressText,
      h('button', { type: 'submit' }, 'Send')));

  let lastTyping = 0;
  text.addEventListener('input', () => {
    const now = Date.now();
    if (now - lastTyping > 1500 && text.value.trim()) {
      lastTyping = now;
      realtime.send({ type: 'typing', roomId });
    }
  });
  text.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey) {
      ev.preventDefault();
      composer.requestSubmit();
    } else if (ev.key === 'Escape' && state.replyTo) {
      setReply(null);
    }
  });
  composer.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const content = text.value.trim();
    if (!content && !state.fileId) return;
    const body = { roomId };
    if (content) body.content = content;
    if (state.replyTo) body.replyTo = state.replyTo.id;
    if (state.fileId) body.fileId = state.fileId;
    // The box empties at once, so the next message can be typed while this
    // one is on its way; a refusal puts the text back (unless more was typed).
    const reply = state.replyTo;
    text.value = '';
    setReply(null);
    clearFile();
    paneMsg.replaceChildren();
    try {
      const m = await post('/api/v1/messages', body);
      addMessage(m);
      scrollToEnd();
      markRead();
    } catch (err) {
      if (!text.value && content) text.value = content;
      if (!state.replyTo && reply) setReply(reply);
      paneMsg.replaceChildren(errorBox(err, 'Not sent' + (body.fileId ? ' (attach the file again)' : '')));
    } finally {
      text.focus();
    }
  });

  function clearFile() {
    state.fileId = null;
    state.fileName = null;
    fileInput.value = '';
    progress.hidden = true;
    progressText.replaceChildren();
  }
  fileInput.addEventListener('change', async () => {
    const f = fileInput.files[0];
    if (!f) return;
    progress.hidden = false;
    progress.value = 0;
    progressText.textContent = `Uploading ${f.name}…`;
    try {
      const meta = await upload(`/api/v1/files${qs({ roomId, name: f.name })}`, f, (loaded, total) => {
        const pct = total ? Math.round((loaded / total) * 100) : 0;
        progress.value = pct;
        progress.setAttribute('aria-valuetext', pct + ' percent');
        progressText.textContent = `Uploading ${f.name}: ${pct}%`;
      });
      state.fileId = meta.id;
      state.fileName = f.name;
      progress.value = 100;
      clear(progressText, `📎 ${f.name} (${bytes(f.size)}) is ready to send `,
        h('button', { type: 'button', class: 'small secondary', onclick: clearFile, 'aria-label': 'Remove the attachment' }, 'Remove'));
    } catch (err) {
      progress.hidden = true;
      fileInput.value = '';
      clear(progressText, errorBox(err, `${f.name} was not uploaded`));
    }
  });

  function setReply(m) {
    state.replyTo = m;
    replyBar.hidden = !m;
    if (m) {
      clear(replyBar, h('span', null, 'Replying to ', h('strong', null, m.username || 'someone'), ': ', snippet(m)),
        h('button', { type: 'button', class: 'small secondary', onclick: () => setReply(null), 'aria-label': 'Cancel the reply' }, 'Cancel'));
      text.focus();
    }
  }

  // --- header, members, invite -----------------------------------------------------------
  const inviteInput = h('input', { name: 'who', required: true, autocomplete: 'off', placeholder: 'username or email' });
  const inviteForm = onSubmit(h('form', { class: 'inline-form', 'aria-label': 'Invite someone' },
    field('Invite by username or email', inviteInput), h('button', { type: 'submit', class: 'small' }, 'Invite')), async (fd) => {
    const who = fd.get('who').trim();
    if (!who) throw new Error('Type a username or an email address.');
    const u = await findUser(who);
    if (!u) throw new Error(`No user is called “${who}”.`);
    await post(`/api/v1/rooms/${encodeURIComponent(roomId)}/members`, { userId: u.id });
    remember(u.id, u.username);
    inviteInput.value = '';
    toast(`${u.username} was added to the room.`);
    loadMembers();
  });

  const leaveBtn = h('button', { type: 'button', class: 'small secondary', onclick: async () => {
    try {
      await post(`/api/v1/rooms/${encodeURIComponent(roomId)}/leave`);
      toast('You left “' + room.name + '”.');
      ctx.go('#/chat');
    } catch (err) {
      paneMsg.replaceChildren(errorBox(err, err.code === 'OWNER_CANNOT_LEAVE'
        ? 'The owner cannot leave (delete the room or hand it over first)' : 'Could not leave'));
    }
  } }, 'Leave room');
  const deleteBtn = room.myRole === 'owner' ? h('button', { type: 'button', class: 'small danger', onclick: async (ev) => {
    if (ev.target.dataset.armed !== '1') {
      ev.target.dataset.armed = '1';
      ev.target.textContent = 'Really delete the room?';
      return;
    }
    try {
      await del(`/api/v1/rooms/${encodeURIComponent(roomId)}`);
      toast('Room deleted.');
      ctx.go('#/chat');
    } catch (err) {
      paneMsg.replaceChildren(errorBox(err, 'The room was not deleted'));
    }
  } }, 'Delete room') : null;

  clear(pane,
    h('header', { class: 'room-head' },
      h('div', null, h('h2', { id: 'room-title' }, room.isPrivate ? '🔒 ' : '# ', room.name),
        room.description ? h('p', { class: 'muted small' }, room.description) : null,
        h('p', { class: 'muted small' }, room.isPrivate ? 'Private room' : 'Public room', ' · you are ', room.myRole)),
      h('div', { class: 'room-actions' }, room.myRole !== 'owner' ? leaveBtn : null, deleteBtn)),
    paneMsg,
    h('div', { class: 'room-body' },
      h('div', { class: 'room-main' }, scroller, typingLine, composer),
      h('details', { class: 'room-side card', open: true }, h('summary', null, 'Members'), membersList, isMod() ? inviteForm : null)));

  async function loadMembers() {
    try {
      const members = await get(`/api/v1/rooms/${encodeURIComponent(roomId)}/members?limit=100`);
      state.members = members;
      const ids = members.map((m) => m.userId).slice(0, 100);
      if (ids.length) {
        try {
          const pres = await get('/api/v1/presence?userIds=' + ids.map(encodeURIComponent).join(','));
          for (const p of pres) state.presence.set(p.userId, p.status);
        } catch {
          /* presence unknown: the dots say so */
        }
      }
      renderMembers();
      await Promise.all(members.map(async (m) => { await nameOf(m.userId); }));
      renderMembers();
    } catch (err) {
      clear(membersList, h('li', null, errorBox(err, 'Members could not be loaded')));
    }
  }
  function renderMembers() {
    clear(membersList, state.members.map((m) => {
      const st = m.userId === me.id ? 'online' : (state.presence.get(m.userId) || 'unknown');
      const name = known(m.userId) || (m.userId === me.id ? me.username : 'user ' + m.userId.slice(-6));
      return h('li', { 'data-user': m.userId, 'data-name': name },
        h('span', { class: 'dot presence-' + st, 'aria-hidden': 'true' }),
        h('span', null, name, m.userId === me.id ? ' (you)' : ''),
        h('span', { class: 'sr presence-text' }, ', ' + (st === 'unknown' ? 'presence unknown' : st)),
        m.role !== 'member' ? h('span', { class: 'tag' }, m.role) : null,
        isMod() && m.userId !== me.id && m.role !== 'owner' && !(room.myRole === 'admin' && m.role === 'admin')
          ? h('button', { type: 'button', class: 'small link', 'aria-label': `Remove ${name} from the room`, onclick: async () => {
            try {
              await del(`/api/v1/rooms/${encodeURIComponent(roomId)}/members/${encodeURIComponent(m.userId)}`);
              loadMembers();
            } catch (err) {
              paneMsg.replaceChildren(errorBox(err, 'Not removed'));
            }
          } }, 'Remove') : null);
    }));
  }

  // --- messages --------------------------------------------------------------------------

  function normalize(d) {
    return {
      id: d.id || d.messageId, roomId: d.roomId, userId: d.userId, username: d.username, content: d.content,
      replyTo: d.replyTo || null, attachment: d.attachment || null, reactions: d.reactions || [], seq: d.seq,
      edited: d.edited || !!d.editedAt, deleted: !!d.deleted, createdAt: d.createdAt,
    };
  }

  function addMessage(raw) {
    const m = normalize(raw);
    if (m.username) remember(m.userId, m.username);
    const old = state.messages.get(m.id);
    if (old) {
      Object.assign(old, m);
      rerender(old);
      return;
    }
    state.messages.set(m.id, m);
    // Keep the list in seq order: nearly always at the end.
    let i = state.order.length;
    while (i > 0 && state.messages.get(state.order[i - 1]).seq > m.seq) i--;
    state.order.splice(i, 0, m.id);
    const el = renderMessage(m);
    const next = state.order[i + 1] && msgList.querySelector(`[data-id="${CSS.escape(state.order[i + 1])}"]`);
    msgList.insertBefore(el, next || null);
  }

  function rerender(m) {
    const el = msgList.querySelector(`[data-id="${CSS.escape(m.id)}"]`);
    if (el) el.replaceWith(renderMessage(m));
    // Replies quoting it show the new text.
    for (const other of state.messages.values()) {
      if (other.replyTo === m.id) {
        const q = msgList.querySelector(`[data-id="${CSS.escape(other.id)}"] .quote`);
        if (q) q.replaceWith(quote(other));
      }
    }
  }

  function snippet(m) {
    if (m.deleted) return 'a deleted message';
    const t = m.content || (m.attachment ? '📎 ' + m.attachment.name : '');
    return t.length > 80 ? t.slice(0, 80) + '…' : t;
  }

  function quote(m) {
    const target = state.messages.get(m.replyTo);
    return h('blockquote', { class: 'quote' }, 'Reply to ',
      target ? [h('strong', null, target.username || 'someone'), ': ', snippet(target)] : 'an earlier message');
  }

  function renderMessage(m) {
    const mine = m.userId === me.id;
    const li = h('li', { class: 'msg' + (mine ? ' mine' : '') + (m.deleted ? ' deleted' : ''), 'data-id': m.id, 'data-seq': m.seq });
    const meta = h('div', { class: 'meta' }, h('strong', { class: 'author' }, m.username || known(m.userId) || 'someone'),
      ' ', h('time', { datetime: m.createdAt, title: when(m.createdAt) }, clock(m.createdAt)),
      m.edited && !m.deleted ? h('span', { class: 'muted small edited' }, ' (edited)') : null);
    li.appendChild(meta);
    if (m.replyTo) li.appendChild(quote(m));
    if (m.deleted) {
      li.appendChild(h('p', { class: 'content muted' }, 'This message was deleted.'));
      return li;
    }
    if (m.content) li.appendChild(h('p', { class: 'content' }, m.content));
    if (m.attachment) li.appendChild(attachment(m.attachment));
    if (m.reactions.length) {
      li.appendChild(h('div', { class: 'reactions' }, m.reactions.map((r) => {
        const pressed = (r.userIds || []).includes(me.id);
        return h('button', { type: 'button', class: 'reaction small', 'aria-pressed': pressed ? 'true' : 'false',
          'aria-label': `${r.emoji} ${r.count} reaction${r.count === 1 ? '' : 's'}${pressed ? ', including yours' : ''}`,
          onclick: () => react(m, r.emoji, pressed) }, `${r.emoji} ${r.count}`);
      })));
    }
    const picker = h('div', { class: 'picker', hidden: true, role: 'group', 'aria-label': 'Pick a reaction' },
      EMOJI.map((e) => h('button', { type: 'button', class: 'small', 'aria-label': 'React with ' + e,
        onclick: () => { picker.hidden = true; const r = m.reactions.find((x) => x.emoji === e); react(m, e, r && (r.userIds || []).includes(me.id)); } }, e)));
    const actions = h('div', { class: 'msg-actions' },
      h('button', { type: 'button', class: 'small link', onclick: () => setReply(m), 'aria-label': `Reply to ${m.username || 'this message'}` }, 'Reply'),
      h('button', { type: 'button', class: 'small link', 'aria-expanded': 'false', onclick: (ev) => {
        picker.hidden = !picker.hidden;
        ev.target.setAttribute('aria-expanded', String(!picker.hidden));
        if (!picker.hidden) picker.querySelector('button').focus();
      } }, 'React'),
      mine ? h('button', { type: 'button', class: 'small link', onclick: () => edit(li, m) }, 'Edit') : null,
      mine || isMod() ? h('button', { type: 'button', class: 'small link', onclick: (ev) => remove(ev.target, m) }, 'Delete') : null);
    li.append(actions, picker);
    return li;
  }

  function attachment(a) {
    const out = h('span', { class: 'small', 'aria-live': 'polite' });
    return h('div', { class: 'attachment' }, '📎 ', h('span', { class: 'file-name' }, a.name), ` (${bytes(a.size || 0)}) `,
      h('button', { type: 'button', class: 'small secondary', 'aria-label': 'Download ' + a.name, onclick: async () => {
        out.textContent = 'Downloading…';
        try {
          const res = await api('GET', `/api/v1/files/${encodeURIComponent(a.fileId)}/content`, { raw: true });
          const blob = await res.blob();
          const url = URL.createObjectURL(blob);
          const link = h('a', { href: url, download: a.name, hidden: true });
          document.body.appendChild(link);
          link.click();
          link.remove();
          setTimeout(() => URL.revokeObjectURL(url), 30000);
          out.textContent = 'Downloaded.';
        } catch (err) {
          clear(out, errorBox(err, 'Not downloaded'));
        }
      } }, 'Download'), out);
  }

  async function react(m, emoji, remove) {
    try {
      const path = `/api/v1/messages/${encodeURIComponent(m.id)}/reactions`;
      const fresh = remove ? await del(`${path}/${encodeURIComponent(emoji)}`) : await post(path, { emoji });
      addMessage(fresh);
    } catch (err) {
      paneMsg.replaceChildren(errorBox(err, 'The reaction was not saved'));
    }
  }

  function edit(li, m) {
    const area = h('textarea', { rows: 2, maxlength: 4000, 'aria-label': 'Edit your message' });
    area.value = m.content || '';
    const form = h('form', { class: 'edit' }, area,
      h('div', null, h('button', { type: 'submit', class: 'small' }, 'Save'), ' ',
        h('button', { type: 'button', class: 'small secondary', onclick: () => rerender(m) }, 'Cancel')));
    onSubmit(form, async () => {
      const content = area.value.trim();
      if (!content) throw new Error('A message cannot be empty: delete it instead.');
      addMessage(await patch(`/api/v1/messages/${encodeURIComponent(m.id)}`, { content }));
    });
    area.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') rerender(m); });
    const c = li.querySelector('.content');
    if (c) c.replaceWith(form); else li.appendChild(form);
    area.focus();
  }

  async function remove(btn, m) {
    if (btn.dataset.armed !== '1') {
      btn.dataset.armed = '1';
      btn.textContent = 'Confirm delete';
      btn.setAttribute('aria-label', 'Confirm: delete this message');
      setTimeout(() => { if (btn.isConnected) { btn.dataset.armed = ''; btn.textContent = 'Delete'; btn.removeAttribute('aria-label'); } }, 5000);
      return;
    }
    try {
      addMessage(await del(`/api/v1/messages/${encodeURIComponent(m.id)}`));
    } catch (err) {
      paneMsg.replaceChildren(errorBox(err, 'Not deleted'));
    }
  }

  const nearEnd = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  const scrollToEnd = () => { scroller.scrollTop = scroller.scrollHeight; };

  async function loadOlder(first = false) {
    if (state.loading || (!state.hasMore && !first)) return;
    state.loading = true;
    olderBtn.disabled = true;
    olderBtn.textContent = 'Loading…';
    const before = scroller.scrollHeight;
    try {
      const doc = await api('GET', '/api/v1/messages' + qs({ roomId, limit: PAGE, before: first ? '' : state.cursor }));
      for (const m of doc.data) addMessage(m);
      state.cursor = doc.cursor ? doc.cursor.before : null;
      state.hasMore = !!(doc.cursor && doc.cursor.hasMore);
      if (first) scrollToEnd();
      else scroller.scrollTop += scroller.scrollHeight - before;
    } catch (err) {
      paneMsg.replaceChildren(errorBox(err, 'Messages could not be loaded'));
    } finally {
      state.loading = false;
      olderBtn.disabled = !state.hasMore;
      olderBtn.textContent = state.hasMore ? 'Load older messages' : 'Start of the conversation';
    }
  }
  scroller.addEventListener('scroll', () => { if (scroller.scrollTop < 40 && state.hasMore) loadOlder(); });

  let readTimer = null;
  function markRead() {
    clearTimeout(readTimer);
    readTimer = setTimeout(async () => {
      const last = state.order[state.order.length - 1];
      if (!last) return;
      try {
        await post('/api/v1/messages/read', { roomId, messageId: last });
        unread.set(roomId, 0);
        renderMine();
      } catch {
        /* the marker moves on with the next message */
      }
    }, 300);
  }

  // --- live ------------------------------------------------------------------------------
  const mineHere = (ev) => ev.detail.data && ev.detail.data.roomId === roomId;
  on('message.sent', (ev) => {
    if (!mineHere(ev)) return;
    const end = nearEnd();
    addMessage(ev.detail.data);
    const d = ev.detail.data;
    clearTypist(d.userId);
    if (end || d.userId === me.id) scrollToEnd();
    if (document.visibilityState === 'visible') markRead();
  });
  on('message.updated', (ev) => {
    if (!mineHere(ev)) return;
    const d = ev.detail.data;
    const m = state.messages.get(d.messageId);
    if (m) {
      m.content = d.content;
      m.reactions = d.reactions || [];
      m.edited = !!d.editedAt;
      rerender(m);
    }
  });
  on('message.deleted', (ev) => {
    if (!mineHere(ev)) return;
    const m = state.messages.get(ev.detail.data.messageId);
    if (m) {
      m.deleted = true;
      m.content = null;
      m.attachment = null;
      m.reactions = [];
      rerender(m);
    }
  });
  on('typing', (ev) => {
    const d = ev.detail.data || {};
    if (d.roomId !== roomId || d.userId === me.id) return;
    clearTimeout(state.typing.get(d.userId));
    state.typing.set(d.userId, setTimeout(() => clearTypist(d.userId), 4000));
    renderTyping();
  });
  on('presence', (ev) => {
    const d = ev.detail.data || {};
    if (!d.userId) return;
    state.presence.set(d.userId, d.status);
    if (state.members.some((m) => m.userId === d.userId)) renderMembers();
  });
  for (const t of ['room.user_joined', 'room.user_left', 'room.updated']) {
    on(t, (ev) => {
      if (!mineHere(ev)) return;
      const d = ev.detail.data;
      if (t === 'room.user_left' && d.userId === me.id) {
        clear(pane, h('h2', { id: 'room-title' }, room.name), h('p', { role: 'alert' }, 'You are no longer a member of this room.'));
        return;
      }
      loadMembers();
    });
  }
  on('room.deleted', (ev) => {
    if (mineHere(ev)) clear(pane, h('h2', { id: 'room-title' }, room.name), h('p', { role: 'alert' }, 'This room was deleted.'));
  });
  on('state', (ev) => { if (ev.detail === 'open') { loadMembers(); } });

  function clearTypist(userId) {
    clearTimeout(state.typing.get(userId));
    if (state.typing.delete(userId)) renderTyping();
  }
  async function renderTyping() {
    const ids = [...state.typing.keys()];
    if (!ids.length) { typingLine.textContent = ''; return; }
    const names = await Promise.all(ids.map((id) => nameOf(id)));
    if (!state.typing.size) { typingLine.textContent = ''; return; }
    typingLine.textContent = names.length === 1 ? `${names[0]} is typing…` : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]} are typing…`;
  }

  await Promise.all([loadOlder(true), loadMembers()]);
  markRead();
  const onVisible = () => { if (document.visibilityState === 'visible') markRead(); };
  document.addEventListener('visibilitychange', onVisible);
  return () => {
    clearTimeout(readTimer);
    for (const t of state.typing.values()) clearTimeout(t);
    document.removeEventListener('visibilitychange', onVisible);
  };
}

// A user by username or e-mail address: agora-users has no search, so the
// list is read a page of 100 at a time (a small platform's directory).
async function findUser(who) {
  const want = who.toLowerCase();
  for (let page = 1; page <= 50; page++) {
    const doc = await api('GET', `/api/v1/users?page=${page}&limit=100`);
    const hit = doc.data.find((u) => (u.username || '').toLowerCase() === want || (u.email || '').toLowerCase() === want);
    if (hit) return hit;
    if (!doc.pagination || page >= doc.pagination.pages) break;
  }
  return null;
}
