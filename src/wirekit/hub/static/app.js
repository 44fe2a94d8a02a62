/* wirekit hub: the browser page. Plain JS, no build step; see docs/ws-protocol.md.
 *
 * Everything a user sees is kept in `app.topics` (one entry per room, private conversation
 * or push topic) and drawn from there. User text only ever reaches the page through
 * textContent. The page runs under a strict Content-Security-Policy: no inline script or
 * style, so visibility goes through the `hidden` attribute and CSS classes. */
'use strict';

(() => {
  // -- constants --------------------------------------------------------------------------
  const ROOM_RE = /^#[a-z0-9][a-z0-9_.-]{0,47}$/;
  const TOPIC_RE = /^[a-z0-9][a-z0-9_.:-]{0,63}$/;
  const USER_RE = /^[a-z][a-z0-9_-]{1,31}$/;
  const SESSION_KEY = 'wirekit.session';
  const STATE_PREFIX = 'wirekit.state.';
  const GUEST = '~guest';
  const HISTORY_PAGE = 50;
  const MAX_DATA_BYTES = 4096;
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 30000;
  const STABLE_MS = 5000;
  const REQUEST_TIMEOUT_MS = 20000;
  const GROUP_SECONDS = 300;
  const FILE_ID_RE = /^[A-Za-z0-9_-]{22}$/;

  const $ = (id) => document.getElementById(id);
  const ui = {
    app: $('app'),
    status: $('status'),
    retryNow: $('retry-now'),
    currentUser: $('current-user'),
    logout: $('logout'),
    signin: $('signin'),
    navToggle: $('nav-toggle'),
    sidebar: $('sidebar'),
    roomsBox: $('rooms-box'),
    roomsGuest: $('rooms-guest'),
    joinForm: $('join-form'),
    roomInput: $('room-input'),
    roomList: $('room-list'),
    browse: $('browse'),
    browseList: $('browse-list'),
    browseCount: $('browse-count'),
    dmBox: $('dm-box'),
    dmGuest: $('dm-guest'),
    dmForm: $('dm-form'),
    dmInput: $('dm-input'),
    dmList: $('dm-list'),
    topicForm: $('topic-form'),
    topicInput: $('topic-input'),
    topicList: $('topic-list'),
    welcome: $('welcome-view'),
    loginForm: $('login-form'),
    loginUser: $('login-user'),
    loginPassword: $('login-password'),
    loginSubmit: $('login-submit'),
    registerSubmit: $('register-submit'),
    loginError: $('login-error'),
    empty: $('empty-view'),
    chat: $('chat-view'),
    chatTitle: $('chat-title'),
    chatSubtitle: $('chat-subtitle'),
    peopleToggle: $('people-toggle'),
    unfollow: $('unfollow-topic'),
    leave: $('leave-room'),
    scroller: $('scroller'),
    historyNote: $('history-note'),
    messageList: $('message-list'),
    emptyNote: $('empty-note'),
    jump: $('jump'),
    composer: $('composer'),
    messageInput: $('message-input'),
    attach: $('attach'),
    attachInput: $('attach-input'),
    messageLabel: $('message-label'),
    composerGuest: $('composer-guest'),
    presence: $('presence'),
    presenceSummary: $('presence-summary'),
    presenceList: $('presence-list'),
    scrim: $('scrim'),
    toasts: $('toasts'),
  };

  // -- state ------------------------------------------------------------------------------
  const app = {
    session: null, // {user, token, refresh}
    renewing: null, // the refresh in flight (a Promise), if any
    ws: null,
    gen: 0, // bumps on every new socket; events of an older one are ignored
    ready: false, // hello seen (and auth done when logged in), topics re-subscribed
    everConnected: false,
    connectedAt: 0,
    attempts: 0,
    retryTimer: null,
    countdownTimer: null,
    retryAt: 0,
    heartbeatTimer: null,
    lastRx: 0,
    pingInterval: 25,
    timeout: 60,
    nextId: 1,
    pending: new Map(), // id -> {resolve, reject, timer}
    topics: new Map(), // name -> topic
    online: new Map(), // user -> bool, from presence replies and online/offline events
    joining: new Set(),
    rooms: [], // the `rooms` op's answer
    current: null,
    view: 'welcome', // welcome | empty | chat
    saveTimer: null,
    rendered: { topic: null, last: null, count: 0 },
  };

  const me = () => (app.session ? app.session.user : null);

  function kindOf(name) {
    if (name.startsWith('#')) return 'room';
    if (name.startsWith('@')) return 'dm';
    return 'push';
  }

  function makeTopic(name) {
    return {
      name,
      kind: kindOf(name),
      epoch: null,
      offset: 0, // highest offset received (or the head we subscribed at)
      known: false, // true when `offset` can be trusted for a resume
      head: 0,
      unread: 0,
      msgs: [], // sorted by offset
      seen: new Set(),
      subscribed: false,
      historyLoaded: false,
      historyDone: false,
      loadingHistory: false,
      presence: null, // Map user -> online
      subscribers: null,
    };
  }

  function ensureTopic(name) {
    let t = app.topics.get(name);
    if (!t) {
      t = makeTopic(name);
      app.topics.set(name, t);
    }
    return t;
  }

  function dmOther(name) {
    const parts = name.slice(1).split(',');
    const self = me();
    if (parts.length !== 2) return name.slice(1);
    if (parts[0] === self) return parts[1];
    return parts[0];
  }

  function dmTopic(a, b) {
    return '@' + [a, b].sort().join(',');
  }

  function displayName(t) {
    if (t.kind === 'dm') {
      const other = dmOther(t.name);
      return other === me() ? other + ' (you)' : other;
    }
    return t.name;
  }

  // -- persistence ------------------------------------------------------------------------
  function loadSession() {
    try {
      const s = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
      if (s && typeof s.user === 'string' && typeof s.token === 'string') return s;
    } catch (_) {
      /* a broken entry is the same as none */
    }
    return null;
  }

  function storeSession(s) {
    try {
      if (s) localStorage.setItem(SESSION_KEY, JSON.stringify(s));
      else localStorage.removeItem(SESSION_KEY);
    } catch (_) {
      /* storage full or disabled: the session lasts until the tab closes */
    }
  }

  function stateKey() {
    return STATE_PREFIX + (me() || GUEST);
  }

  function loadSaved() {
    try {
      const s = JSON.parse(localStorage.getItem(stateKey()) || 'null');
      if (s && typeof s === 'object' && s.topics && typeof s.topics === 'object') return s;
    } catch (_) {
      /* ignore */
    }
    return { topics: {}, current: null };
  }

  function saveNow() {
    clearTimeout(app.saveTimer);
    app.saveTimer = null;
    const topics = {};
    for (const t of app.topics.values()) {
      topics[t.name] = { epoch: t.epoch, offset: t.offset, known: t.known, unread: t.unread };
    }
    try {
      localStorage.setItem(stateKey(), JSON.stringify({ v: 1, current: app.current, topics }));
    } catch (_) {
      /* ignore */
    }
  }

  function saveSoon() {
    if (app.saveTimer === null) app.saveTimer = setTimeout(saveNow, 250);
  }

  /* Start over for the user now in app.session (or the guest): topics from storage. */
  function resetForUser() {
    app.topics = new Map();
    app.online = new Map();
    app.rooms = [];
    app.current = null;
    app.rendered = { topic: null, last: null, count: 0 };
    const saved = loadSaved();
    for (const [name, s] of Object.entries(saved.topics)) {
      if (!s || typeof name !== 'string') continue;
      const kind = kindOf(name);
      if (!me() && kind !== 'push') continue;
      const t = ensureTopic(name);
      if (typeof s.epoch === 'string') t.epoch = s.epoch;
      if (Number.isInteger(s.offset) && s.offset >= 0) {
        t.offset = s.offset;
        t.known = s.known !== false;
      }
      if (Number.isInteger(s.unread) && s.unread > 0) t.unread = s.unread;
    }
    if (saved.current && app.topics.has(saved.current)) {
      app.current = saved.current;
      app.view = 'chat';
    } else {
      app.view = me() ? 'empty' : 'welcome';
    }
    renderAll();
  }

  // -- status -----------------------------------------------------------------------------
  function setStatus(state) {
    let text;
    if (state === 'connected') text = 'connected';
    else if (state === 'connecting') text = 'connecting…';
    else if (state === 'offline') text = 'offline';
    else {
      const left = Math.ceil((app.retryAt - Date.now()) / 1000);
      text = app.retryTimer !== null && left > 0 ? `reconnecting in ${left}s…` : 'reconnecting…';
    }
    ui.status.dataset.state = state;
    if (ui.status.textContent !== text) ui.status.textContent = text;
    ui.status.title =
      state === 'connected'
        ? 'Connected to the hub'
        : state === 'offline'
          ? 'Your browser is offline; the page reconnects when the network is back'
          : 'Not connected; messages are not lost and arrive after the reconnect';
    ui.retryNow.hidden = !(state === 'reconnecting' && app.retryTimer !== null);
    ui.composer.classList.toggle('disconnected', state !== 'connected');
  }

  // -- connection -------------------------------------------------------------------------
  function wsUrl() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${location.host}/ws`;
  }

  function clearRetry() {
    clearTimeout(app.retryTimer);
    clearInterval(app.countdownTimer);
    app.retryTimer = null;
    app.countdownTimer = null;
  }

  function connect() {
    clearRetry();
    dropSocket();
    if (navigator.onLine === false) {
      setStatus('offline');
      return;
    }
    const gen = ++app.gen;
    setStatus(app.everConnected ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (_) {
      scheduleReconnect();
      return;
    }
    app.ws = ws;
    ws.addEventListener('message', (ev) => {
      if (gen === app.gen) onFrame(ev.data);
    });
    ws.addEventListener('close', () => {
      if (gen === app.gen) onClosed();
    });
    ws.addEventListener('error', () => {
      /* a close event follows */
    });
  }

  /* Forget the current socket without reacting to its close. */
  function dropSocket() {
    const ws = app.ws;
    app.gen++;
    app.ws = null;
    app.ready = false;
    stopHeartbeat();
    failPending('disconnected', 'the connection closed');
    for (const t of app.topics.values()) {
      t.subscribed = false;
      t.loadingHistory = false;
    }
    if (ws && ws.readyState <= WebSocket.OPEN) {
      try {
        ws.close(1000);
      } catch (_) {
        /* already closing */
      }
    }
  }

  function onClosed() {
    const stable = app.connectedAt && Date.now() - app.connectedAt > STABLE_MS;
    app.connectedAt = 0;
    dropSocket();
    if (stable) app.attempts = 0;
    scheduleReconnect();
    renderAll();
  }

  function scheduleReconnect() {
    clearRetry();
    if (navigator.onLine === false) {
      setStatus('offline');
      return;
    }
    // Exponential backoff with "equal jitter": half the window fixed, half random.
    const window = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** app.attempts);
    app.attempts = Math.min(app.attempts + 1, 20);
    const delay = window / 2 + Math.random() * (window / 2);
    app.retryAt = Date.now() + delay;
    app.retryTimer = setTimeout(() => {
      app.retryTimer = null;
      connect();
    }, delay);
    app.countdownTimer = setInterval(() => setStatus('reconnecting'), 250);
    setStatus('reconnecting');
  }

  function startHeartbeat() {
    stopHeartbeat();
    const every = Math.max(5, Math.min(app.pingInterval, 60)) * 1000;
    app.heartbeatTimer = setInterval(() => {
      if (!app.ws || app.ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - app.lastRx > app.timeout * 1000) {
        // Nothing at all for too long (not even our own pongs): the link is dead.
        onClosed();
        return;
      }
      send({ op: 'ping' });
    }, every);
  }

  function stopHeartbeat() {
    clearInterval(app.heartbeatTimer);
    app.heartbeatTimer = null;
  }

  function send(obj) {
    if (!app.ws || app.ws.readyState !== WebSocket.OPEN) return false;
    app.ws.send(JSON.stringify(obj));
    return true;
  }

  class RequestError extends Error {
    constructor(code, reason) {
      super(reason || code);
      this.code = code;
    }
  }

  function request(op, fields) {
    return new Promise((resolve, reject) => {
      if (!app.ws || app.ws.readyState !== WebSocket.OPEN) {
        reject(new RequestError('disconnected', 'not connected'));
        return;
      }
      const id = app.nextId++;
      const timer = setTimeout(() => {
        app.pending.delete(id);
        reject(new RequestError('timeout', 'the server did not answer'));
      }, REQUEST_TIMEOUT_MS);
      app.pending.set(id, { resolve, reject, timer });
      send({ op, id, ...fields });
    });
  }

  function failPending(code, reason) {
    const pending = [...app.pending.values()];
    app.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new RequestError(code, reason));
    }
  }

  function settle(id, ok, value) {
    const p = app.pending.get(id);
    if (!p) return false;
    app.pending.delete(id);
    clearTimeout(p.timer);
    if (ok) p.resolve(value);
    else p.reject(new RequestError(value.code || 'error', value.reason || value.code));
    return true;
  }

  function onFrame(raw) {
    app.lastRx = Date.now();
    let ev;
    try {
      ev = JSON.parse(raw);
    } catch (_) {
      return;
    }
    if (!ev || typeof ev !== 'object') return;
    switch (ev.op) {
      case 'hello':
        onHello(ev);
        break;
      case 'ok':
      case 'pong':
        if (ev.id !== undefined) settle(ev.id, true, ev);
        break;
      case 'error':
        if (ev.id === undefined || !settle(ev.id, false, ev)) {
          toast(ev.reason || ev.code || 'error', 'error');
        }
        break;
      case 'msg':
        onMsg(ev);
        break;
      case 'join':
        onJoin(ev);
        break;
      case 'leave':
        onLeave(ev);
        break;
      case 'online':
      case 'offline':
        onOnline(ev.user, ev.op === 'online');
        break;
      case 'lost':
        onLost(ev);
        break;
      default:
        break;
    }
  }

  async function onHello(ev) {
    if (Number.isFinite(ev.ping_interval) && ev.ping_interval > 0) app.pingInterval = ev.ping_interval;
    if (Number.isFinite(ev.timeout) && ev.timeout > 0) app.timeout = ev.timeout;
    startHeartbeat();
    const gen = app.gen;
    let topics = null;
    if (app.session) {
      try {
        const reply = await request('auth', { token: app.session.token });
        topics = Array.isArray(reply.topics) ? reply.topics : [];
      } catch (err) {
        if (gen !== app.gen) return;
        if (err.code === 'token-expired' && (await renewSession())) {
          if (gen === app.gen) onHello(ev); // the same socket, with the new token
          return;
        }
        if (err.code === 'bad-token' || err.code === 'token-expired') {
          sessionEnded('Your session has ended; please log in again.');
        } else {
          onClosed();
        }
        return;
      }
      if (gen !== app.gen) return;
    }
    onReady(topics);
  }

  function onReady(authTopics) {
    app.ready = true;
    app.everConnected = true;
    app.connectedAt = Date.now();
    clearRetry();
    if (authTopics) {
      const listed = new Set();
      for (const item of authTopics) {
        const name = item && (item.topic || item.room);
        if (typeof name !== 'string') continue;
        listed.add(name);
        const t = ensureTopic(name);
        if (Number.isInteger(item.head)) t.head = item.head;
      }
      // Rooms and conversations the user no longer belongs to (left elsewhere).
      for (const t of [...app.topics.values()]) {
        if (t.kind !== 'push' && !listed.has(t.name) && !(t.kind === 'dm' && t.local)) {
          removeTopic(t.name);
        }
      }
    }
    for (const t of app.topics.values()) {
      if (t.kind === 'dm' && t.local && t.offset === 0) continue; // not on the server yet
      subscribe(t).catch(() => {});
    }
    if (me()) refreshRooms();
    if (!app.current && me() && app.view !== 'welcome') {
      const first = sortedTopics('room')[0];
      if (first) app.current = first.name;
      if (first) app.view = 'chat';
    }
    setStatus('connected');
    renderAll();
    const t = currentTopic();
    if (t) {
      if (!t.historyLoaded) loadHistory(t, false);
      loadPresence(t);
    }
  }

  function subscribe(t) {
    const fields = { topic: t.name };
    const resume = t.known;
    if (resume) {
      fields.since = t.offset;
      if (t.epoch) fields.epoch = t.epoch;
    }
    return request('sub', fields).then(
      (reply) => {
        t.subscribed = true;
        if (Number.isInteger(reply.head)) t.head = reply.head;
        if (!resume) {
          if (typeof reply.epoch === 'string') t.epoch = reply.epoch;
          if (Number.isInteger(reply.head)) t.offset = Math.max(t.offset, reply.head);
          t.known = true;
        } else if (!t.epoch && typeof reply.epoch === 'string') {
          t.epoch = reply.epoch;
        }
        saveSoon();
        return reply;
      },
      (err) => {
        if (err.code === 'disconnected' || err.code === 'timeout') throw err;
        if (['not-public', 'login-required', 'bad-topic', 'bad-room'].includes(err.code)) {
          toast(`${t.name}: ${err.message}`, 'error');
          removeTopic(t.name);
        } else if (['not-a-member', 'no-such-room', 'no-such-user'].includes(err.code)) {
          removeTopic(t.name);
        } else {
          toast(`${t.name}: ${err.message}`, 'error');
        }
        throw err;
      },
    );
  }

  // -- events -----------------------------------------------------------------------------
  function isViewing(t) {
    return app.view === 'chat' && app.current === t.name && !document.hidden;
  }

  function onMsg(m) {
    const name = m.topic || m.room;
    if (typeof name !== 'string' || !Number.isInteger(m.offset)) return;
    let t = app.topics.get(name);
    if (!t) {
      if (m.history) return;
      // A conversation or room this user's connections were made to follow (e.g. a first
      // private message, or a /join from the TCP chat): it starts here.
      t = ensureTopic(name);
      t.subscribed = true;
      t.known = true;
      t.epoch = typeof m.epoch === 'string' ? m.epoch : null;
      t.offset = m.offset - 1;
    }
    t.local = false;
    if (!m.history) t.subscribed = true; // live messages come only for followed topics
    if (!m.history && t.epoch && m.epoch && m.epoch !== t.epoch) resetTopic(t, m.epoch);
    if (!t.epoch && typeof m.epoch === 'string') t.epoch = m.epoch;
    const added = addMessage(t, m);
    if (!m.history) {
      if (m.offset > t.offset) {
        if (added && !isViewing(t) && m.from !== me()) t.unread++;
        t.offset = m.offset;
        t.known = true;
        saveSoon();
      }
      if (Number.isInteger(m.offset) && m.offset > t.head) t.head = m.offset;
    }
    if (!added) return;
    if (app.current === t.name) renderMessages(false);
    renderSidebar();
  }

  function addMessage(t, m) {
    if (t.seen.has(m.offset)) return false;
    const msg = {
      offset: m.offset,
      from: typeof m.from === 'string' ? m.from : '?',
      data: m.data !== undefined ? m.data : m.text,
      ts: Number.isFinite(m.ts) ? m.ts : Date.now() / 1000,
      to: m.to,
    };
    t.seen.add(msg.offset);
    const list = t.msgs;
    if (!list.length || list[list.length - 1].offset < msg.offset) {
      list.push(msg);
    } else {
      let lo = 0;
      let hi = list.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (list[mid].offset < msg.offset) lo = mid + 1;
        else hi = mid;
      }
      list.splice(lo, 0, msg);
    }
    return true;
  }

  function resetTopic(t, epoch) {
    t.epoch = epoch || null;
    t.offset = 0;
    t.known = true;
    t.msgs = [];
    t.seen = new Set();
    t.unread = 0;
    t.historyLoaded = false;
    t.historyDone = false;
    saveSoon();
    if (app.current === t.name) {
      app.rendered = { topic: null, last: null, count: 0 };
      renderMessages(true);
    }
    renderSidebar();
  }

  function onLost(ev) {
    const t = app.topics.get(ev.topic || ev.room);
    if (t) resetTopic(t, ev.epoch);
  }

  function onJoin(ev) {
    const name = ev.topic || ev.room;
    if (typeof name !== 'string' || typeof ev.user !== 'string') return;
    let t = app.topics.get(name);
    if (!t && ev.user === me() && !app.joining.has(name)) {
      // Joined on another connection (another tab, or the TCP chat).
      t = ensureTopic(name);
      subscribe(t).catch(() => {});
      refreshRooms();
    }
    if (t && t.presence) t.presence.set(ev.user, true);
    app.online.set(ev.user, true);
    if (ev.user !== me()) refreshRooms();
    renderSidebar();
    if (t && app.current === t.name) renderPresence();
  }

  function onLeave(ev) {
    const name = ev.topic || ev.room;
    if (typeof name !== 'string') return;
    if (ev.user === me()) {
      if (app.topics.has(name)) {
        removeTopic(name);
        refreshRooms();
      }
      return;
    }
    const t = app.topics.get(name);
    if (t && t.presence) t.presence.delete(ev.user);
    refreshRooms();
    if (t && app.current === t.name) renderPresence();
  }

  function onOnline(user, online) {
    if (typeof user !== 'string') return;
    app.online.set(user, online);
    for (const t of app.topics.values()) {
      if (t.presence && t.presence.has(user)) t.presence.set(user, online);
    }
    renderSidebar();
    renderPresence();
  }

  function removeTopic(name) {
    app.topics.delete(name);
    if (app.current === name) {
      app.current = null;
      app.view = me() ? 'empty' : 'welcome';
    }
    saveSoon();
    renderAll();
  }

  // -- requests the page makes --------------------------------------------------------------
  function loadHistory(t, older) {
    if (t.loadingHistory || !app.ready) return;
    if (t.kind === 'dm' && t.local) {
      t.historyLoaded = true;
      t.historyDone = true;
      renderMessages(true);
      return;
    }
    const fields = { topic: t.name, limit: HISTORY_PAGE };
    if (older) {
      if (t.historyDone || !t.msgs.length) return;
      if (t.msgs[0].offset <= 1) {
        t.historyDone = true;
        renderHistoryNote();
        return;
      }
      fields.before = t.msgs[0].offset;
    }
    t.loadingHistory = true;
    renderHistoryNote();
    request('history', fields)
      .then((reply) => {
        if (app.topics.get(t.name) !== t) return;
        if (t.epoch && typeof reply.epoch === 'string' && reply.epoch !== t.epoch) {
          resetTopic(t, reply.epoch);
          return;
        }
        const msgs = Array.isArray(reply.messages) ? reply.messages : [];
        const keep = app.current === t.name ? keepScroll() : null;
        for (const m of msgs) {
          if (m && Number.isInteger(m.offset)) addMessage(t, m);
        }
        t.historyLoaded = true;
        if (msgs.length < HISTORY_PAGE || (t.msgs.length && t.msgs[0].offset <= 1)) {
          t.historyDone = true;
        }
        if (app.current === t.name) {
          renderMessages(true);
          if (older && keep) keep();
          else scrollToBottom();
        }
      })
      .catch((err) => {
        if (err.code === 'no-such-room' || err.code === 'not-a-member') {
          t.historyLoaded = true;
          t.historyDone = true;
        } else if (err.code !== 'disconnected') {
          toast(`history of ${displayName(t)}: ${err.message}`, 'error');
        }
      })
      .finally(() => {
        t.loadingHistory = false;
        renderHistoryNote();
        fillViewport();
      });
  }

  /* Load older pages until the list can scroll (or the history ends). */
  function fillViewport() {
    const t = currentTopic();
    if (!t || t.historyDone || t.loadingHistory || !t.historyLoaded) return;
    if (ui.scroller.scrollHeight <= ui.scroller.clientHeight + 8) loadHistory(t, true);
  }

  function loadPresence(t) {
    if (!app.ready) return;
    if (t.kind === 'dm' && t.local) {
      t.presence = new Map();
      for (const u of new Set([me(), dmOther(t.name)])) t.presence.set(u, !!app.online.get(u));
      renderPresence();
      return;
    }
    request('presence', { topic: t.name })
      .then((reply) => {
        const users = Array.isArray(reply.users) ? reply.users : [];
        t.presence = new Map();
        for (const u of users) {
          if (u && typeof u.user === 'string') {
            t.presence.set(u.user, !!u.online);
            app.online.set(u.user, !!u.online);
          }
        }
        t.subscribers = Number.isInteger(reply.subscribers) ? reply.subscribers : null;
        renderPresence();
        renderSidebar();
      })
      .catch(() => {
        /* presence is a nicety; the messages matter */
      });
  }

  function refreshRooms() {
    if (!app.ready || !me()) return;
    clearTimeout(refreshRooms.timer);
    refreshRooms.timer = setTimeout(() => {
      request('rooms', {})
        .then((reply) => {
          app.rooms = (Array.isArray(reply.rooms) ? reply.rooms : [])
            .map((r) => ({
              topic: r.topic || r.room,
              members: r.members | 0,
              online: r.online | 0,
            }))
            .filter((r) => typeof r.topic === 'string');
          renderBrowse();
          renderChatHeader();
        })
        .catch(() => {});
    }, 100);
  }

  function joinRoom(raw) {
    let name = String(raw || '').trim().toLowerCase();
    if (!name) return;
    if (!name.startsWith('#')) name = '#' + name;
    if (!ROOM_RE.test(name)) {
      toast('A room name is # then a letter or digit, then up to 47 of a-z 0-9 _ . -', 'error');
      return;
    }
    if (!me()) {
      toast('Sign in to join rooms.', 'error');
      return;
    }
    const existing = app.topics.get(name);
    if (existing && existing.subscribed) {
      openTopic(name);
      ui.roomInput.value = '';
      return;
    }
    if (!app.ready) {
      toast('Not connected; try again in a moment.', 'error');
      return;
    }
    app.joining.add(name);
    const t = ensureTopic(name);
    subscribe(t)
      .then(() => {
        ui.roomInput.value = '';
        openTopic(name);
        refreshRooms();
      })
      .catch(() => {})
      .finally(() => app.joining.delete(name));
    renderSidebar();
  }

  function leaveRoom(t) {
    request('leave', { topic: t.name })
      .then(() => {
        removeTopic(t.name);
        refreshRooms();
        toast(`You left ${t.name}.`);
      })
      .catch((err) => toast(`${t.name}: ${err.message}`, 'error'));
  }

  function unfollowTopic(t) {
    request('unsub', { topic: t.name }).catch(() => {});
    removeTopic(t.name);
  }

  function startConversation(raw) {
    let user = String(raw || '').trim().toLowerCase();
    if (user.startsWith('@')) user = user.slice(1);
    if (!USER_RE.test(user)) {
      toast('A user name is 2 to 32 of a-z 0-9 _ -, starting with a letter.', 'error');
      return;
    }
    const self = me();
    if (!self) return;
    const name = dmTopic(self, user);
    if (!app.topics.has(name)) {
      const t = ensureTopic(name);
      t.local = true; // the server makes the conversation with its first message
      t.known = true;
      t.offset = 0;
    }
    ui.dmInput.value = '';
    openTopic(name);
  }

  function followTopic(raw) {
    const name = String(raw || '').trim().toLowerCase();
    if (!name) return;
    if (name.startsWith('#')) {
      joinRoom(name);
      ui.topicInput.value = '';
      return;
    }
    if (name.startsWith('@')) {
      startConversation(name);
      ui.topicInput.value = '';
      return;
    }
    if (!TOPIC_RE.test(name)) {
      toast('A topic name is a letter or digit, then up to 63 of a-z 0-9 _ . : -', 'error');
      return;
    }
    const existing = app.topics.get(name);
    if (existing && existing.subscribed) {
      ui.topicInput.value = '';
      openTopic(name);
      return;
    }
    if (!app.ready) {
      toast('Not connected; try again in a moment.', 'error');
      return;
    }
    const t = ensureTopic(name);
    subscribe(t)
      .then(() => {
        ui.topicInput.value = '';
        openTopic(name);
      })
      .catch(() => {});
  }

  function publish(t, text) {
    const data = text;
    if (new TextEncoder().encode(JSON.stringify(data)).length > MAX_DATA_BYTES) {
      toast(`That message is too long (at most ${MAX_DATA_BYTES} bytes).`, 'error');
      return false;
    }
    if (!app.ready) {
      toast('Not connected; your message is still in the box.', 'error');
      return false;
    }
    const target = t.kind === 'dm' ? '@' + dmOther(t.name) : t.name;
    request('pub', { topic: target, data })
      .then((reply) => {
        const name = typeof reply.topic === 'string' ? reply.topic : t.name;
        const topic = app.topics.get(name) || t;
        topic.local = false;
        if (!topic.subscribed && app.ready) subscribe(topic).catch(() => {});
        renderAll();
      })
      .catch((err) => {
        if (!ui.messageInput.value && app.current === t.name) ui.messageInput.value = text;
        if (err.code === 'no-such-user') {
          toast(`There is no user ${dmOther(t.name)}.`, 'error');
          if (t.local) removeTopic(t.name);
        } else {
          toast(err.message, 'error');
        }
      });
    return true;
  }

  // -- session renewal --------------------------------------------------------------------
  /* Access tokens are short-lived; the refresh token (single use) gets a new pair. One
     renewal at a time: a second caller waits for the first. Resolves true when renewed. */
  function renewSession() {
    if (!app.renewing) app.renewing = doRenew().finally(() => { app.renewing = null; });
    return app.renewing;
  }

  async function doRenew() {
    const s = app.session;
    if (!s || typeof s.refresh !== 'string') return false;
    try {
      const res = await fetch('/api/refresh', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ refresh_token: s.refresh }),
        credentials: 'same-origin',
      });
      const body = await answer(res);
      if (!res.ok || !body || typeof body.token !== 'string' || app.session !== s) return false;
      app.session = { user: s.user, token: body.token, refresh: body.refresh_token };
      storeSession(app.session);
      return true;
    } catch (_) {
      return false;
    }
  }

  /* fetch with the access token; an expired one is renewed once and the request retried. */
  async function authFetch(url, options) {
    const send = () => fetch(url, { ...options, headers: authHeaders(options.headers || {}) });
    const res = await send();
    if (res.status !== 401) return res;
    const problem = await answer(res.clone());
    if (!problem || problem.code !== 'token-expired' || !(await renewSession())) return res;
    return send();
  }

  // -- files ------------------------------------------------------------------------------
  function authHeaders(extra) {
    return { ...extra, Authorization: `Bearer ${app.session.token}` };
  }

  async function answer(res) {
    try {
      return await res.json();
    } catch (_) {
      return null;
    }
  }

  /* Upload `file` (POST /api/files), then share it into room `t`: its message comes back
   * over the WebSocket like any other. */
  async function attachFile(t, file) {
    if (!app.session || t.kind !== 'room') return;
    const form = new FormData();
    form.append('file', file, file.name);
    ui.attach.disabled = true;
    try {
      const res = await authFetch('/api/files', {
        method: 'POST',
        headers: { Accept: 'application/json' },
        body: form,
        credentials: 'same-origin',
      });
      const stored = await answer(res);
      if (!res.ok || !stored || typeof stored.id !== 'string') {
        const detail = stored && stored.detail ? `: ${stored.detail}` : ` (${res.status})`;
        toast(`Could not upload ${file.name}${detail}`, 'error');
        return;
      }
      const shared = await authFetch(`/api/files/${encodeURIComponent(stored.id)}/share`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ room: t.name }),
        credentials: 'same-origin',
      });
      if (!shared.ok) {
        const problem = await answer(shared);
        const detail = problem && problem.detail ? `: ${problem.detail}` : ` (${shared.status})`;
        toast(`Could not share ${file.name}${detail}`, 'error');
      }
    } catch (_) {
      toast(`Could not upload ${file.name}; check your connection.`, 'error');
    } finally {
      ui.attach.disabled = false;
      ui.attachInput.value = '';
    }
  }

  /* Downloads need the token, so no plain link: fetch, then save a blob URL. */
  async function downloadFile(f, link) {
    if (!app.session) {
      toast('Sign in to download files.', 'error');
      return;
    }
    link.disabled = true;
    try {
      const res = await authFetch(`/api/files/${f.id}`, {
        credentials: 'same-origin',
      });
      if (!res.ok) {
        toast(
          res.status === 404
            ? `${f.name} was deleted, or is not shared with you.`
            : `Could not download ${f.name} (${res.status}).`,
          'error',
        );
        return;
      }
      const url = URL.createObjectURL(await res.blob());
      const a = el('a');
      a.href = url;
      a.download = f.name;
      a.hidden = true;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (_) {
      toast(`Could not download ${f.name}; check your connection.`, 'error');
    } finally {
      link.disabled = false;
    }
  }

  // -- login ------------------------------------------------------------------------------
  async function authenticate(kind) {
    const user = ui.loginUser.value.trim().toLowerCase();
    const password = ui.loginPassword.value;
    if (!user || !password) {
      showLoginError('Enter a user name and a password.');
      (user ? ui.loginPassword : ui.loginUser).focus();
      return;
    }
    if (kind === 'register') {
      if (!USER_RE.test(user)) {
        showLoginError('A user name is 2 to 32 of a-z 0-9 _ -, starting with a letter.');
        ui.loginUser.focus();
        return;
      }
      if (password.length < 8) {
        showLoginError('A password has at least 8 characters.');
        ui.loginPassword.focus();
        return;
      }
    }
    showLoginError('');
    setBusy(true);
    let res;
    let body = null;
    try {
      res = await fetch(kind === 'register' ? '/api/users' : '/api/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ user, password }),
        credentials: 'same-origin',
      });
      try {
        body = await res.json();
      } catch (_) {
        body = null;
      }
    } catch (_) {
      setBusy(false);
      showLoginError('Cannot reach the server. Check your connection and try again.');
      return;
    }
    setBusy(false);
    if (!res.ok || !body || typeof body.token !== 'string') {
      showLoginError(problemText(res.status, body, kind));
      return;
    }
    ui.loginPassword.value = '';
    saveNow();
    app.session = {
      user: typeof body.user === 'string' ? body.user : user,
      token: body.token,
      refresh: typeof body.refresh_token === 'string' ? body.refresh_token : null,
    };
    storeSession(app.session);
    resetForUser();
    connect();
  }

  function problemText(status, body, kind) {
    const detail = body && (body.detail || body.title);
    if (status === 401) return 'Wrong user name or password.';
    if (status === 409) return 'That name is taken; pick another one.';
    if (status === 429) return 'Too many attempts; wait a minute and try again.';
    if (detail) return String(detail);
    return kind === 'register' ? `Could not create the account (${status}).` : `Could not log in (${status}).`;
  }

  function setBusy(busy) {
    ui.loginSubmit.disabled = busy;
    ui.registerSubmit.disabled = busy;
    ui.loginForm.classList.toggle('busy', busy);
  }

  function showLoginError(text) {
    ui.loginError.textContent = text;
    ui.loginError.hidden = !text;
  }

  async function logout() {
    const s = app.session;
    if (!s) return;
    saveNow();
    dropSocket();
    clearRetry();
    try {
      await fetch('/api/logout', {
        method: 'POST',
        headers: { Authorization: `Bearer ${s.token}` },
        credentials: 'same-origin',
      });
    } catch (_) {
      /* offline: the token is forgotten here anyway */
    }
    app.session = null;
    storeSession(null);
    resetForUser();
    app.view = 'welcome';
    renderAll();
    connect();
    ui.loginUser.focus();
  }

  function sessionEnded(reason) {
    saveNow();
    app.session = null;
    storeSession(null);
    resetForUser();
    app.view = 'welcome';
    showLoginError(reason);
    connect();
  }

  // -- views ------------------------------------------------------------------------------
  function currentTopic() {
    return app.current ? app.topics.get(app.current) || null : null;
  }

  function openTopic(name) {
    const t = app.topics.get(name);
    if (!t) return;
    app.current = name;
    app.view = 'chat';
    t.unread = 0;
    saveSoon();
    closeDrawers();
    renderAll();
    scrollToBottom();
    if (app.ready) {
      if (!t.historyLoaded) loadHistory(t, false);
      loadPresence(t);
    }
    if (me() && window.matchMedia('(pointer: fine)').matches) ui.messageInput.focus();
  }

  function showWelcome() {
    app.view = 'welcome';
    app.current = null;
    closeDrawers();
    renderAll();
    ui.loginUser.focus();
  }

  function closeDrawers() {
    ui.app.classList.remove('show-nav', 'show-people');
    ui.scrim.hidden = true;
    ui.navToggle.setAttribute('aria-expanded', 'false');
    ui.peopleToggle.setAttribute('aria-expanded', 'false');
  }

  function toggleDrawer(cls, button) {
    const open = !ui.app.classList.contains(cls);
    closeDrawers();
    if (open) {
      ui.app.classList.add(cls);
      ui.scrim.hidden = false;
      button.setAttribute('aria-expanded', 'true');
    }
  }

  // -- rendering --------------------------------------------------------------------------
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function colorClass(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return 'c' + (h % 8);
  }

  function avatar(name) {
    const a = el('span', 'avatar ' + colorClass(name), (name[0] || '?').toUpperCase());
    a.setAttribute('aria-hidden', 'true');
    return a;
  }

  function renderAll() {
    const signedIn = !!me();
    ui.currentUser.textContent = signedIn ? me() : '';
    ui.currentUser.hidden = !signedIn;
    ui.logout.hidden = !signedIn;
    ui.signin.hidden = signedIn || app.view === 'welcome';
    ui.roomsBox.hidden = !signedIn;
    ui.roomsGuest.hidden = signedIn;
    ui.dmBox.hidden = !signedIn;
    ui.dmGuest.hidden = signedIn;
    ui.app.classList.toggle('guest', !signedIn);
    if (app.view === 'chat' && !currentTopic()) app.view = signedIn ? 'empty' : 'welcome';
    if (app.view === 'welcome' && signedIn) app.view = app.current ? 'chat' : 'empty';
    if (app.view === 'empty' && !signedIn) app.view = 'welcome';
    ui.welcome.hidden = app.view !== 'welcome';
    ui.empty.hidden = app.view !== 'empty';
    ui.chat.hidden = app.view !== 'chat';
    ui.app.classList.toggle('no-presence', app.view !== 'chat');
    renderSidebar();
    renderChatHeader();
    renderMessages(false);
    renderPresence();
    setStatus(ui.status.dataset.state || 'connecting');
  }

  function sortedTopics(kind) {
    const list = [...app.topics.values()].filter((t) => t.kind === kind);
    list.sort((a, b) => displayName(a).localeCompare(displayName(b)));
    return list;
  }

  function renderNavList(list, topics, testid, build) {
    const existing = new Map();
    for (const li of list.children) existing.set(li.dataset.key, li);
    const wanted = new Set(topics.map((t) => t.name));
    for (const [key, li] of existing) {
      if (!wanted.has(key)) li.remove();
    }
    topics.forEach((t, i) => {
      let li = existing.get(t.name);
      if (!li || !wanted.has(t.name)) {
        li = el('li', 'nav-entry');
        li.dataset.key = t.name;
        const button = el('button', 'nav-item');
        button.type = 'button';
        button.setAttribute('data-testid', testid);
        button.dataset.topic = t.name;
        button.addEventListener('click', () => openTopic(t.name));
        const label = el('span', 'nav-label');
        const badge = el('span', 'badge');
        badge.setAttribute('data-testid', 'unread');
        button.append(label, badge);
        li.append(button);
      }
      const button = li.firstChild;
      const label = button.querySelector('.nav-label');
      const badge = button.querySelector('.badge');
      build(t, button, label);
      const active = app.view === 'chat' && app.current === t.name;
      button.classList.toggle('active', active);
      if (active) button.setAttribute('aria-current', 'page');
      else button.removeAttribute('aria-current');
      button.classList.toggle('has-unread', t.unread > 0);
      badge.hidden = t.unread === 0;
      const count = t.unread > 99 ? '99+' : String(t.unread);
      if (badge.textContent !== count) badge.textContent = count;
      badge.setAttribute('aria-label', `${t.unread} unread`);
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
  }

  function renderSidebar() {
    renderNavList(ui.roomList, sortedTopics('room'), 'room-item', (t, button, label) => {
      label.textContent = t.name;
      button.classList.toggle('pending', !t.subscribed);
    });
    renderNavList(ui.dmList, sortedTopics('dm'), 'dm-item', (t, button, label) => {
      const other = dmOther(t.name);
      button.dataset.user = other;
      if (!label.firstChild) {
        label.append(el('span', 'dot'), el('span', 'nav-name'));
      }
      label.firstChild.classList.toggle('on', app.online.get(other) === true);
      label.firstChild.setAttribute('aria-hidden', 'true');
      label.lastChild.textContent = displayName(t);
    });
    renderNavList(ui.topicList, sortedTopics('push'), 'topic-item', (t, button, label) => {
      label.textContent = t.name;
      button.classList.toggle('pending', !t.subscribed);
    });
    renderEmptyLists();
    const total = [...app.topics.values()].reduce((n, t) => n + t.unread, 0);
    const title = 'wirekit hub';
    document.title = total ? `(${total}) ${title}` : title;
    renderBrowse();
  }

  function renderEmptyLists() {
    ui.roomList.classList.toggle('is-empty', !ui.roomList.children.length);
    ui.dmList.classList.toggle('is-empty', !ui.dmList.children.length);
    ui.topicList.classList.toggle('is-empty', !ui.topicList.children.length);
  }

  function renderBrowse() {
    const mine = new Set(sortedTopics('room').map((t) => t.name));
    const others = app.rooms.filter((r) => !mine.has(r.topic));
    ui.browseCount.textContent = app.rooms.length ? String(app.rooms.length) : '';
    ui.browse.hidden = !me() || !app.rooms.length;
    const items = app.rooms.map((r) => {
      const li = el('li', 'browse-entry');
      const b = el('button', 'browse-item');
      b.type = 'button';
      b.setAttribute('data-testid', 'room-browse-item');
      b.dataset.topic = r.topic;
      b.append(el('span', 'browse-name', r.topic));
      b.append(el('span', 'browse-meta', `${r.members} · ${r.online} online`));
      b.title = mine.has(r.topic) ? `Open ${r.topic}` : `Join ${r.topic}`;
      b.addEventListener('click', () => joinRoom(r.topic));
      b.classList.toggle('joined', mine.has(r.topic));
      li.append(b);
      return li;
    });
    ui.browseList.replaceChildren(...items);
    ui.browseList.classList.toggle('all-joined', !others.length);
  }

  function renderChatHeader() {
    const t = currentTopic();
    if (!t || app.view !== 'chat') return;
    const signedIn = !!me();
    ui.chatTitle.textContent = displayName(t);
    ui.chatTitle.classList.toggle('is-room', t.kind === 'room');
    let subtitle = '';
    if (t.kind === 'room') {
      const info = app.rooms.find((r) => r.topic === t.name);
      if (t.presence) {
        const online = [...t.presence.values()].filter(Boolean).length;
        subtitle = `${plural(t.presence.size, 'member')} · ${online} online`;
      } else if (info) {
        subtitle = `${plural(info.members, 'member')} · ${info.online} online`;
      } else {
        subtitle = 'Room';
      }
    } else if (t.kind === 'dm') {
      const other = dmOther(t.name);
      subtitle =
        other === me()
          ? 'Notes to yourself'
          : `Private conversation · ${app.online.get(other) ? 'online' : 'offline'}`;
    } else {
      subtitle =
        t.subscribers === null || t.subscribers === undefined
          ? 'Live topic'
          : `Live topic · ${plural(t.subscribers, 'subscriber')}`;
    }
    ui.chatSubtitle.textContent = subtitle;
    ui.leave.hidden = t.kind !== 'room' || !signedIn;
    ui.unfollow.hidden = t.kind !== 'push';
    const canWrite = signedIn;
    ui.composer.hidden = !canWrite;
    const canAttach = canWrite && t.kind === 'room';
    ui.attach.hidden = !canAttach;
    ui.composer.classList.toggle('can-attach', canAttach);
    ui.composerGuest.hidden = canWrite;
    const what = t.kind === 'dm' ? displayName(t) : t.name;
    const placeholder = t.kind === 'push' ? `Publish to ${what}` : `Message ${what}`;
    if (ui.messageInput.placeholder !== placeholder) ui.messageInput.placeholder = placeholder;
    ui.messageLabel.textContent = placeholder;
    ui.messageList.setAttribute('aria-label', `Messages in ${what}`);
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? '' : 's'}`;
  }

  function dayKey(ts) {
    const d = new Date(ts * 1000);
    return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
  }

  function dayLabel(ts) {
    const d = new Date(ts * 1000);
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (dayKey(ts) === dayKey(today.getTime() / 1000)) return 'Today';
    if (dayKey(ts) === dayKey(yesterday.getTime() / 1000)) return 'Yesterday';
    return d.toLocaleDateString(undefined, {
      weekday: 'long',
      year: 'numeric',
      month: 'long',
      day: 'numeric',
    });
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

  function messageNode(t, m, prev) {
    const self = me();
    const li = el('li', 'message');
    li.setAttribute('data-testid', 'message');
    li.dataset.offset = String(m.offset);
    li.dataset.topic = t.name;
    li.dataset.from = m.from;
    if (self && m.from === self) li.classList.add('mine');
    if (m.from === 'api') li.classList.add('service');
    const grouped =
      prev && prev.from === m.from && m.ts - prev.ts < GROUP_SECONDS && dayKey(prev.ts) === dayKey(m.ts);
    if (grouped) li.classList.add('grouped');
    li.append(avatar(m.from));
    const body = el('div', 'message-body');
    const meta = el('div', 'message-meta');
    const sender = el('span', 'sender', m.from);
    sender.classList.add(colorClass(m.from));
    const time = el('time', 'time', timeFormat.format(new Date(m.ts * 1000)));
    time.dateTime = new Date(m.ts * 1000).toISOString();
    time.title = fullFormat.format(new Date(m.ts * 1000));
    meta.append(sender, time);
    body.append(meta);
    const file = fileOf(m.data);
    if (file) {
      body.append(fileNode(file));
    } else if (typeof m.data === 'string') {
      body.append(el('p', 'text', m.data));
    } else {
      let json;
      try {
        json = JSON.stringify(m.data, null, 2);
      } catch (_) {
        json = String(m.data);
      }
      body.append(el('pre', 'json', json === undefined ? 'null' : json));
    }
    li.append(body);
    return li;
  }

  /* A shared file's message ({"file": {...}}, docs/files.md); the link is built from the id
   * alone, so a forged message cannot point the download anywhere else. */
  function fileOf(data) {
    const f = data && typeof data === 'object' && !Array.isArray(data) ? data.file : null;
    if (!f || typeof f !== 'object' || typeof f.id !== 'string' || !FILE_ID_RE.test(f.id)) {
      return null;
    }
    return {
      id: f.id,
      name: typeof f.name === 'string' && f.name ? f.name : 'file',
      type: typeof f.type === 'string' ? f.type : '',
      size: Number.isInteger(f.size) && f.size >= 0 ? f.size : null,
    };
  }

  function fileNode(f) {
    const box = el('div', 'file');
    const link = el('button', 'file-link', f.name);
    link.type = 'button';
    link.title = `Download ${f.name}`;
    link.setAttribute('data-testid', 'file-link');
    link.dataset.file = f.id;
    link.addEventListener('click', () => downloadFile(f, link));
    box.append(link);
    const details = [f.type, f.size === null ? '' : formatSize(f.size)].filter(Boolean);
    if (details.length) box.append(el('span', 'file-meta', details.join(' · ')));
    return box;
  }

  function formatSize(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
  }

  function dayNode(ts) {
    const li = el('li', 'day');
    li.setAttribute('role', 'separator');
    li.append(el('span', null, dayLabel(ts)));
    return li;
  }

  function nearBottom() {
    const s = ui.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  function scrollToBottom() {
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
    ui.jump.hidden = true;
  }

  function keepScroll() {
    const s = ui.scroller;
    const height = s.scrollHeight;
    const top = s.scrollTop;
    return () => {
      s.scrollTop = s.scrollHeight - height + top;
    };
  }

  /* Draw the current topic's messages: append what is new, or redraw when `full` or when
   * messages were inserted before the last one drawn. */
  function renderMessages(full) {
    const t = app.view === 'chat' ? currentTopic() : null;
    const r = app.rendered;
    if (!t) {
      if (r.topic !== null) {
        ui.messageList.replaceChildren();
        app.rendered = { topic: null, last: null, count: 0 };
      }
      return;
    }
    const last = t.msgs.length ? t.msgs[t.msgs.length - 1] : null;
    const sameTopic = r.topic === t.name;
    const stick = !sameTopic || nearBottom();
    const appendOnly =
      sameTopic &&
      !full &&
      r.count > 0 &&
      r.last &&
      t.msgs.length > r.count &&
      t.msgs[r.count - 1] === r.last;
    if (appendOnly) {
      let prev = r.last;
      let mineAdded = false;
      for (let i = r.count; i < t.msgs.length; i++) {
        const m = t.msgs[i];
        if (dayKey(prev.ts) !== dayKey(m.ts)) ui.messageList.append(dayNode(m.ts));
        ui.messageList.append(messageNode(t, m, prev));
        if (m.from === me()) mineAdded = true;
        prev = m;
      }
      if (stick || mineAdded) scrollToBottom();
      else ui.jump.hidden = false;
    } else if (full || !sameTopic || r.count !== t.msgs.length || r.last !== last) {
      const keep = sameTopic && !stick ? keepScroll() : null;
      const nodes = [];
      let prev = null;
      for (const m of t.msgs) {
        if (!prev || dayKey(prev.ts) !== dayKey(m.ts)) nodes.push(dayNode(m.ts));
        nodes.push(messageNode(t, m, prev));
        prev = m;
      }
      ui.messageList.replaceChildren(...nodes);
      if (keep) keep();
      else scrollToBottom();
    }
    app.rendered = { topic: t.name, last, count: t.msgs.length };
    if (isViewing(t) && t.unread) {
      t.unread = 0;
      saveSoon();
    }
    renderHistoryNote();
  }

  function renderHistoryNote() {
    const t = app.view === 'chat' ? currentTopic() : null;
    if (!t) return;
    let text = '';
    if (t.loadingHistory) text = 'Loading messages…';
    else if (t.historyDone && t.msgs.length) text = `This is the beginning of ${displayName(t)}.`;
    ui.historyNote.textContent = text;
    ui.historyNote.hidden = !text;
    ui.emptyNote.hidden = !(t.historyLoaded && !t.loadingHistory && !t.msgs.length);
    ui.emptyNote.textContent =
      t.kind === 'push' ? 'Nothing published here yet; new messages appear live.' : 'No messages yet. Say hello!';
  }

  function renderPresence() {
    const t = app.view === 'chat' ? currentTopic() : null;
    const list = ui.presenceList;
    if (!t || !t.presence) {
      list.replaceChildren();
      ui.presenceSummary.textContent = t ? '' : 'Open a room to see who is here.';
      return;
    }
    const self = me();
    const people = [...t.presence.entries()].sort(
      (a, b) => Number(b[1]) - Number(a[1]) || a[0].localeCompare(b[0]),
    );
    const online = people.filter((p) => p[1]).length;
    let summary = `${online} of ${people.length} online`;
    if (t.kind === 'push') {
      summary =
        t.subscribers === null || t.subscribers === undefined
          ? `${plural(people.length, 'signed-in subscriber')}`
          : `${plural(t.subscribers, 'subscriber')}, ${people.length} signed in`;
    }
    ui.presenceSummary.textContent = summary;
    const items = people.map(([user, isOn]) => {
      const li = el('li', 'presence-item');
      li.setAttribute('data-testid', 'presence-item');
      li.dataset.user = user;
      li.dataset.online = isOn ? 'true' : 'false';
      const canMessage = self && user !== self && user !== 'api';
      const inner = el(canMessage ? 'button' : 'span', 'person');
      if (canMessage) {
        inner.type = 'button';
        inner.title = `Message ${user}`;
        inner.addEventListener('click', () => startConversation(user));
      }
      const a = avatar(user);
      const dot = el('span', 'dot' + (isOn ? ' on' : ''));
      dot.setAttribute('aria-hidden', 'true');
      a.append(dot);
      inner.append(a, el('span', 'person-name', user === self ? `${user} (you)` : user));
      inner.append(el('span', 'visually-hidden', isOn ? ', online' : ', offline'));
      li.append(inner);
      return li;
    });
    list.replaceChildren(...items);
    renderChatHeader();
  }

  function toast(text, kind) {
    const node = el('div', 'toast' + (kind === 'error' ? ' error' : ''), text);
    ui.toasts.append(node);
    while (ui.toasts.children.length > 4) ui.toasts.firstChild.remove();
    setTimeout(() => node.classList.add('leaving'), 4500);
    setTimeout(() => node.remove(), 5000);
  }

  // -- wiring -----------------------------------------------------------------------------
  function wire() {
    ui.loginForm.addEventListener('submit', (e) => {
      e.preventDefault();
      authenticate('login');
    });
    ui.registerSubmit.addEventListener('click', () => authenticate('register'));
    ui.logout.addEventListener('click', () => logout());
    ui.signin.addEventListener('click', () => showWelcome());
    ui.retryNow.addEventListener('click', () => {
      app.attempts = 0;
      connect();
    });
    ui.joinForm.addEventListener('submit', (e) => {
      e.preventDefault();
      joinRoom(ui.roomInput.value);
    });
    ui.dmForm.addEventListener('submit', (e) => {
      e.preventDefault();
      startConversation(ui.dmInput.value);
    });
    ui.topicForm.addEventListener('submit', (e) => {
      e.preventDefault();
      followTopic(ui.topicInput.value);
    });
    ui.browse.addEventListener('toggle', () => {
      if (ui.browse.open) refreshRooms();
    });
    ui.leave.addEventListener('click', () => {
      const t = currentTopic();
      if (t && t.kind === 'room') leaveRoom(t);
    });
    ui.unfollow.addEventListener('click', () => {
      const t = currentTopic();
      if (t && t.kind === 'push') unfollowTopic(t);
    });
    ui.composer.addEventListener('submit', (e) => {
      e.preventDefault();
      const t = currentTopic();
      const text = ui.messageInput.value.replace(/\s+$/, '');
      if (!t || !text.trim()) return;
      if (publish(t, text)) ui.messageInput.value = '';
    });
    ui.attach.addEventListener('click', () => ui.attachInput.click());
    ui.attachInput.addEventListener('change', () => {
      const t = currentTopic();
      const file = ui.attachInput.files && ui.attachInput.files[0];
      if (t && file) attachFile(t, file);
    });
    ui.messageInput.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        ui.composer.requestSubmit();
      }
    });
    ui.scroller.addEventListener('scroll', () => {
      const t = currentTopic();
      if (nearBottom()) ui.jump.hidden = true;
      if (t && ui.scroller.scrollTop < 120 && t.historyLoaded && !t.historyDone) {
        loadHistory(t, true);
      }
    });
    ui.jump.addEventListener('click', () => scrollToBottom());
    ui.navToggle.addEventListener('click', () => toggleDrawer('show-nav', ui.navToggle));
    ui.peopleToggle.addEventListener('click', () => toggleDrawer('show-people', ui.peopleToggle));
    ui.scrim.addEventListener('click', closeDrawers);
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') closeDrawers();
    });
    window.addEventListener('online', () => {
      if (!app.ws) {
        app.attempts = 0;
        connect();
      }
    });
    window.addEventListener('offline', () => {
      if (!app.ws || app.ws.readyState !== WebSocket.OPEN) {
        clearRetry();
        dropSocket();
        setStatus('offline');
      }
    });
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) return;
      if (app.retryTimer !== null) connect();
      const t = currentTopic();
      if (t && app.view === 'chat' && t.unread) {
        t.unread = 0;
        saveSoon();
        renderSidebar();
      }
    });
    window.addEventListener('pagehide', saveNow);
    window.addEventListener('storage', (e) => {
      if (e.key !== SESSION_KEY) return;
      const s = loadSession();
      const before = me();
      if ((s && s.user) === before) return;
      // Logged in or out in another tab: follow it.
      app.session = s;
      resetForUser();
      connect();
    });
  }

  function start() {
    wire();
    app.session = loadSession();
    resetForUser();
    connect();
  }

  start();
})();
