/*! Frontdesk web chat widget. Apache-2.0. No dependencies, no build step.
 *  Embed: <script src="https://your-frontdesk/widget.js" defer></script>
 *  Optional attributes on that tag: data-server (base URL), data-lang (en|ru|vi|zh), data-color (accent).
 *  Protocol: docs/webchat-protocol.md. Message text is only ever set with textContent. */
(function () {
  'use strict';
  if (window.Frontdesk) return;

  var script = document.currentScript || document.querySelector('script[src*="widget.js"]');
  var attr = function (n) { return script && script.getAttribute(n); };
  var base = attr('data-server');
  if (!base) {
    base = script && script.src ? script.src.split(/[?#]/)[0].replace(/\/[^\/]*$/, '') : location.origin;
  }
  base = base.replace(/\/+$/, '');
  var wsUrl = base.replace(/^http/i, 'ws') + '/ws/chat';
  var KEY = 'frontdesk:' + base;
  var MAX_KEPT = 200;

  // ---- strings ------------------------------------------------------------------------------------
  var STR = {
    en: { title: 'Support', ph: 'Type a message…', send: 'Send', conn: 'Connecting…', typing: '{who} is typing…',
      close: 'Close chat', open: 'Open chat', powered: 'powered by Frontdesk', bot: 'Assistant', agent: 'Agent',
      failed: 'Not delivered', msg: 'Message', big: 'Message is too long' },
    ru: { title: 'Поддержка', ph: 'Напишите сообщение…', send: 'Отправить', conn: 'Подключение…', typing: '{who} печатает…',
      close: 'Закрыть чат', open: 'Открыть чат', powered: 'работает на Frontdesk', bot: 'Ассистент', agent: 'Оператор',
      failed: 'Не доставлено', msg: 'Сообщение', big: 'Сообщение слишком длинное' },
    vi: { title: 'Hỗ trợ', ph: 'Nhập tin nhắn…', send: 'Gửi', conn: 'Đang kết nối…', typing: '{who} đang soạn tin…',
      close: 'Đóng trò chuyện', open: 'Mở trò chuyện', powered: 'cung cấp bởi Frontdesk', bot: 'Trợ lý', agent: 'Nhân viên',
      failed: 'Chưa gửi được', msg: 'Tin nhắn', big: 'Tin nhắn quá dài' },
    zh: { title: '客服', ph: '输入消息…', send: '发送', conn: '正在连接…', typing: '{who}正在输入…',
      close: '关闭聊天', open: '打开聊天', powered: '由 Frontdesk 提供支持', bot: '智能助手', agent: '客服人员',
      failed: '发送失败', msg: '消息', big: '消息太长' }
  };
  var lang = (attr('data-lang') || navigator.language || 'en').toLowerCase().split('-')[0];
  if (!STR[lang]) lang = 'en';
  var T = STR[lang];

  // ---- state (persisted) --------------------------------------------------------------------------
  // S.token, S.conversation_id, S.contact_id, S.seq (highest seq received as a `message` frame, the
  // value sent as hello.last_seq), S.msgs (transcript, by seq), S.out (sent, not yet acked).
  var S = load();
  function fresh() { return { seq: 0, msgs: [], out: [] }; }
  function load() {
    try {
      var s = JSON.parse(localStorage.getItem(KEY));
      if (s && typeof s === 'object' && Array.isArray(s.msgs) && Array.isArray(s.out)) return s;
    } catch (e) { /* storage unavailable or corrupt */ }
    return fresh();
  }
  function save() {
    if (S.msgs.length > MAX_KEPT) S.msgs = S.msgs.slice(-MAX_KEPT);
    try { localStorage.setItem(KEY, JSON.stringify(S, function (k, v) { return k === 'el' || k === 'conn' ? undefined : v; })); } catch (e) { /* quota or disabled: keep in memory */ }
  }

  // ---- DOM ----------------------------------------------------------------------------------------
  function h(tag, cls, attrs, text) {
    var el = document.createElement(tag);
    if (cls) el.className = cls;
    for (var k in attrs || {}) el.setAttribute(k, attrs[k]);
    if (text != null) el.textContent = text;
    return el;
  }
  var SVG = 'http://www.w3.org/2000/svg';
  function icon(cls, size, d, stroke) {
    var svg = document.createElementNS(SVG, 'svg'), path = document.createElementNS(SVG, 'path');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('width', size);
    svg.setAttribute('height', size);
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('class', cls);
    path.setAttribute('d', d);
    if (stroke) {
      path.setAttribute('fill', 'none');
      path.setAttribute('stroke', 'currentColor');
      path.setAttribute('stroke-width', '2.2');
      path.setAttribute('stroke-linecap', 'round');
    } else path.setAttribute('fill', 'currentColor');
    svg.appendChild(path);
    return svg;
  }
  var D_CHAT = 'M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z';
  var D_X = 'M6 6l12 12M18 6L6 18';
  var D_SEND = 'M3.4 20.4 21 12 3.4 3.6 3.4 10l12.6 2-12.6 2z';

  var CSS =
    ':host{all:initial}' +
    '*{box-sizing:border-box}' +
    '.fd-root{--a:' + (attr('data-color') || '#2563eb') + ';font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Arial,sans-serif;color:#1f2937}' +
    'button{font:inherit;cursor:pointer}' +
    '.fd-launcher{position:fixed;right:20px;bottom:20px;width:58px;height:58px;border:0;border-radius:50%;background:var(--a);color:#fff;' +
    'display:flex;align-items:center;justify-content:center;box-shadow:0 6px 20px rgba(0,0,0,.25);transition:transform .15s}' +
    '.fd-launcher:hover{transform:scale(1.06)}' +
    '.fd-launcher[aria-expanded=true] .fd-i-chat,.fd-launcher[aria-expanded=false] .fd-i-x{display:none}' +
    '.fd-root button:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}' +
    '.fd-badge{position:absolute;top:-2px;right:-2px;min-width:20px;height:20px;padding:0 5px;border-radius:10px;background:#dc2626;color:#fff;font-size:12px;line-height:20px;text-align:center}' +
    '.fd-badge[hidden],.fd-panel[hidden],.fd-status[hidden],.fd-typing[hidden],.fd-qr[hidden]{display:none}' +
    '.fd-panel{position:fixed;right:20px;bottom:92px;width:380px;height:min(620px,calc(100vh - 116px));display:flex;flex-direction:column;' +
    'background:#fff;border-radius:16px;overflow:hidden;box-shadow:0 12px 40px rgba(0,0,0,.28);animation:fd-in .16s ease-out}' +
    '@keyframes fd-in{from{opacity:0;transform:translateY(12px)}}' +
    '@media (prefers-reduced-motion:reduce){.fd-panel{animation:none}.fd-launcher{transition:none}}' +
    '@media (max-width:480px){.fd-panel{inset:0;width:100%;height:100%;border-radius:0}}' +
    '.fd-head{display:flex;align-items:center;gap:10px;padding:14px 12px 14px 18px;background:var(--a);color:#fff}' +
    '.fd-head div{flex:1;min-width:0}' +
    '.fd-title{display:block;font-weight:600;font-size:16px}' +
    '.fd-status{display:block;font-size:12px;opacity:.85}' +
    '.fd-close{background:transparent;border:0;color:#fff;width:36px;height:36px;border-radius:8px;display:flex;align-items:center;justify-content:center}' +
    '.fd-close:hover{background:rgba(255,255,255,.15)}' +
    '.fd-log{flex:1;overflow-y:auto;padding:16px 14px;background:#f5f7fb;display:flex;flex-direction:column;gap:8px;overscroll-behavior:contain}' +
    '.fd-msg{max-width:82%;display:flex;flex-direction:column;align-self:flex-start}' +
    '.fd-text{padding:9px 13px;border-radius:16px 16px 16px 4px;background:#fff;border:1px solid #e5e7eb;white-space:pre-wrap;overflow-wrap:anywhere}' +
    '.fd-msg[data-author=customer]{align-self:flex-end;align-items:flex-end}' +
    '.fd-msg[data-author=customer] .fd-text{background:var(--a);color:#fff;border-color:transparent;border-radius:16px 16px 4px 16px}' +
    '.fd-msg[data-author=agent] .fd-text{background:#ecfdf5;border-color:#a7f3d0}' +
    '.fd-msg[data-author=system]{align-self:center;max-width:92%;text-align:center}' +
    '.fd-msg[data-author=system] .fd-text{background:none;border:0;color:#6b7280;font-size:12.5px;padding:2px 6px}' +
    '.fd-msg[data-state=pending]{opacity:.6}' +
    '.fd-msg[data-state=failed] .fd-text{background:#fee2e2;color:#991b1b}' +
    '.fd-meta{font-size:11px;color:#6b7280;margin:3px 6px 0}' +
    '.fd-qr{display:flex;flex-wrap:wrap;gap:6px;margin-top:6px}' +
    '.fd-qr button{border:1px solid var(--a);color:var(--a);background:#fff;border-radius:16px;padding:5px 12px}' +
    '.fd-qr button:hover{background:var(--a);color:#fff}' +
    '.fd-typing{padding:2px 16px 6px;font-size:12px;color:#6b7280;background:#f5f7fb;font-style:italic}' +
    '.fd-form{display:flex;align-items:flex-end;gap:8px;padding:10px 10px 10px 14px;border-top:1px solid #e5e7eb;background:#fff}' +
    '.fd-input{flex:1;resize:none;border:1px solid #d1d5db;border-radius:12px;padding:9px 12px;font:inherit;color:inherit;max-height:120px;min-height:40px;line-height:1.4;background:#fff}' +
    '.fd-input:focus{outline:0;border-color:var(--a);box-shadow:0 0 0 1px var(--a)}' +
    '.fd-send{width:40px;height:40px;border:0;border-radius:50%;background:var(--a);color:#fff;display:flex;align-items:center;justify-content:center;flex:none}' +
    '.fd-send:disabled{opacity:.45;cursor:default}' +
    '.fd-foot{text-align:center;font-size:11px;color:#9ca3af;padding:0 0 8px;background:#fff}';

  var host, root, launcher, badge, panel, status, log, typingEl, input, sendBtn;
  var isOpen = false, unread = 0;

  function build() {
    host = h('frontdesk-widget');
    host.setAttribute('style', 'all:initial!important;display:block!important;position:fixed!important;' +
      'z-index:2147483000!important;right:0!important;bottom:0!important;width:0!important;height:0!important');
    var shadow = host.attachShadow({ mode: 'open' });
    var style = h('style');
    style.textContent = CSS;
    shadow.appendChild(style);
    root = h('div', 'fd-root', { lang: lang });
    shadow.appendChild(root);

    launcher = h('button', 'fd-launcher', { type: 'button', 'aria-label': T.open, 'aria-expanded': 'false', 'aria-controls': 'fd-panel' });
    launcher.appendChild(icon('fd-i-chat', 26, D_CHAT));
    launcher.appendChild(icon('fd-i-x', 24, D_X, true));
    badge = h('span', 'fd-badge', { hidden: '', 'aria-hidden': 'true' });
    launcher.appendChild(badge);

    panel = h('section', 'fd-panel', { id: 'fd-panel', role: 'dialog', 'aria-label': T.title, hidden: '' });
    var head = h('header', 'fd-head');
    var titles = h('div');
    titles.appendChild(h('span', 'fd-title', { id: 'fd-title' }, T.title));
    status = h('span', 'fd-status', { role: 'status' }, T.conn);
    titles.appendChild(status);
    var closeBtn = h('button', 'fd-close', { type: 'button', 'aria-label': T.close, title: T.close });
    closeBtn.appendChild(icon('', 22, D_X, true));
    head.appendChild(titles);
    head.appendChild(closeBtn);

    log = h('div', 'fd-log', { role: 'log', 'aria-live': 'polite', 'aria-label': T.title, tabindex: '0' });
    typingEl = h('div', 'fd-typing', { 'aria-live': 'polite', hidden: '' });
    var form = h('form', 'fd-form');
    input = h('textarea', 'fd-input', { rows: '1', 'aria-label': T.msg, placeholder: T.ph, enterkeyhint: 'send' });
    sendBtn = h('button', 'fd-send', { type: 'submit', 'aria-label': T.send, title: T.send });
    sendBtn.appendChild(icon('', 20, D_SEND));
    form.appendChild(input);
    form.appendChild(sendBtn);
    panel.appendChild(head);
    panel.appendChild(log);
    panel.appendChild(typingEl);
    panel.appendChild(form);
    panel.appendChild(h('div', 'fd-foot', null, T.powered));
    root.appendChild(launcher); // before the panel, so that a full-screen panel covers it
    root.appendChild(panel);
    document.body.appendChild(host);

    launcher.addEventListener('click', function () { isOpen ? close() : open(); });
    closeBtn.addEventListener('click', function () { close(); });
    root.addEventListener('keydown', function (e) {
      if (e.key === 'Escape' && isOpen) { e.preventDefault(); close(); }
    });
    form.addEventListener('submit', function (e) { e.preventDefault(); submit(); });
    input.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) { e.preventDefault(); submit(); }
    });
    input.addEventListener('input', function () { grow(); typingTick(); });
    input.addEventListener('blur', function () { typingStop(); });

    S.msgs.forEach(function (m) { render(m, false); });
    S.out.forEach(function (p) { p.el = null; showPending(p); });
    refreshQuickReplies();
    setOnline(false);
  }

  function grow() {
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight + 2, 120) + 'px';
  }

  function open() {
    if (isOpen) return;
    isOpen = true;
    panel.hidden = false;
    launcher.setAttribute('aria-expanded', 'true');
    launcher.setAttribute('aria-label', T.close);
    unread = 0;
    showBadge();
    scrollDown(true);
    input.focus();
    if (!S.token) startSession(); else if (!ws) connect();
  }
  function close() {
    if (!isOpen) return;
    isOpen = false;
    panel.hidden = true;
    launcher.setAttribute('aria-expanded', 'false');
    launcher.setAttribute('aria-label', T.open);
    typingStop();
    launcher.focus();
  }
  function showBadge() {
    badge.hidden = !unread;
    badge.textContent = unread > 9 ? '9+' : String(unread);
  }
  function scrollDown(force) {
    if (force || log.scrollHeight - log.scrollTop - log.clientHeight < 120) log.scrollTop = log.scrollHeight;
  }

  // ---- messages -----------------------------------------------------------------------------------
  var bySeq = {};    // seq -> element (dedupe)
  var byCid = {};    // client_id -> pending entry {id, text, el, conn}
  var maxTextBytes = 4096;

  function timeOf(iso) {
    var d = iso ? new Date(iso) : new Date();
    if (isNaN(d)) return '';
    try { return d.toLocaleTimeString(navigator.language || lang, { hour: '2-digit', minute: '2-digit' }); } catch (e) { return ''; }
  }
  function bubble(author, text) {
    var el = h('div', 'fd-msg', { 'data-author': author });
    el.appendChild(h('div', 'fd-text', null, text));
    el.appendChild(h('div', 'fd-meta'));
    return el;
  }
  function setMeta(el, author, iso) {
    var who = author === 'bot' ? T.bot : author === 'agent' ? T.agent : '';
    var t = timeOf(iso);
    el.lastChild.textContent = who && t ? who + ' · ' + t : who || t;
    if (author === 'system') el.lastChild.textContent = '';
  }
  // Place a confirmed message by seq: before the first confirmed message with a higher seq, else
  // before the first pending one (pending messages stay at the bottom).
  function place(el, seq) {
    if (el.parentNode) el.remove();
    var kids = log.children, before = null;
    for (var i = kids.length - 1; i >= 0; i--) {
      var s = +kids[i].getAttribute('data-seq');
      if (!s || s > seq) before = kids[i]; else break;
    }
    log.insertBefore(el, before);
  }
  function render(m, live) {
    var el = bubble(m.author, m.text);
    el.setAttribute('data-seq', m.seq);
    setMeta(el, m.author, m.created_at);
    if (m.quick_replies && m.quick_replies.length) {
      var qr = h('div', 'fd-qr', { role: 'group' });
      m.quick_replies.forEach(function (q) {
        if (!q || typeof q.payload !== 'string') return;
        var b = h('button', null, { type: 'button' }, String(q.title || q.payload));
        b.addEventListener('click', function () { sendText(q.payload); input.focus(); });
        qr.appendChild(b);
      });
      el.appendChild(qr);
    }
    bySeq[m.seq] = el;
    place(el, m.seq);
    if (live) scrollDown(false);
  }
  // Quick replies are offered only on the newest message.
  function refreshQuickReplies() {
    var all = log.querySelectorAll('.fd-qr'), last = null;
    for (var i = log.children.length - 1; i >= 0; i--) {
      if (log.children[i].getAttribute('data-seq')) { last = log.children[i]; break; }
    }
    for (var j = 0; j < all.length; j++) all[j].hidden = all[j].parentNode !== last;
  }
  function record(m) {
    var e = { seq: m.seq, author: m.author, text: m.text, created_at: m.created_at };
    if (m.quick_replies) e.quick_replies = m.quick_replies;
    var i = S.msgs.length;
    while (i > 0 && S.msgs[i - 1].seq > m.seq) i--;
    S.msgs.splice(i, 0, e);
  }

  function onMessage(m) {
    if (!(m.seq > 0) || typeof m.text !== 'string') return;
    if (m.seq > S.seq) S.seq = m.seq;
    if (!bySeq[m.seq]) {
      var p = m.client_id && byCid[m.client_id];
      if (p) confirm(p, m.seq, m.created_at);
      else {
        record(m);
        render(m, true);
        if (m.author !== 'customer' && !isOpen) { unread++; showBadge(); }
      }
      if (m.author === typingWho) showTyping(null, false);
      refreshQuickReplies();
    }
    save();
  }
  function confirm(p, seq, iso) {
    delete byCid[p.id];
    S.out = S.out.filter(function (o) { return o.id !== p.id; });
    if (bySeq[seq]) { if (p.el) p.el.remove(); save(); return; }
    var m = { seq: seq, author: 'customer', text: p.text, created_at: iso || new Date().toISOString() };
    record(m);
    var el = p.el;
    el.removeAttribute('data-state');
    el.setAttribute('data-seq', seq);
    setMeta(el, 'customer', m.created_at);
    bySeq[seq] = el;
    place(el, seq);
    refreshQuickReplies();
    save();
  }
  function showPending(p) {
    p.el = bubble('customer', p.text);
    p.el.setAttribute('data-state', p.failed ? 'failed' : 'pending');
    p.el.lastChild.textContent = p.failed ? T.failed : '';
    log.appendChild(p.el);
    byCid[p.id] = p;
  }
  function fail(p) {
    delete byCid[p.id];
    S.out = S.out.filter(function (o) { return o.id !== p.id; });
    if (p.el) { p.el.setAttribute('data-state', 'failed'); p.el.lastChild.textContent = T.failed; }
    save();
  }

  function uuid() {
    if (window.crypto && crypto.randomUUID) { try { return crypto.randomUUID(); } catch (e) { /* insecure context */ } }
    var b = new Uint8Array(16);
    if (window.crypto && crypto.getRandomValues) crypto.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.random() * 256;
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    var s = '';
    for (var j = 0; j < 16; j++) s += (b[j] + 256).toString(16).slice(1) + (j === 3 || j === 5 || j === 7 || j === 9 ? '-' : '');
    return s;
  }
  function bytes(s) { return new TextEncoder().encode(s).length; }

  function submit() {
    var text = input.value;
    if (!text.trim()) return;
    if (bytes(text) > maxTextBytes) { flash(T.big); return; }
    input.value = '';
    grow();
    typingStop();
    sendText(text);
  }
  function flash(msg) {
    typingEl.textContent = msg;
    typingEl.hidden = false;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(function () { typingEl.hidden = true; }, 4000);
  }
  function sendText(text) {
    var p = { id: uuid(), text: text };
    S.out.push(p);
    showPending(p);
    scrollDown(true);
    save();
    if (!S.token) startSession(); else if (!ws) connect(); else transmit(p);
  }
  function transmit(p) {
    if (!ready || !byCid[p.id] || p.conn === conn) return;
    p.conn = conn;
    send({ type: 'message', client_id: p.id, text: p.text });
  }

  // ---- typing -------------------------------------------------------------------------------------
  var typingSent = false, typingSentAt = 0, typingIdle, typingTimer, typingWho = null;
  function typingTick() {
    clearTimeout(typingIdle);
    if (!input.value) { typingStop(); return; }
    if (ready && (!typingSent || Date.now() - typingSentAt > 3000)) {
      send({ type: 'typing', state: true });
      typingSent = true;
      typingSentAt = Date.now();
    }
    typingIdle = setTimeout(typingStop, 4000);
  }
  function typingStop() {
    clearTimeout(typingIdle);
    if (typingSent && ready) send({ type: 'typing', state: false });
    typingSent = false;
  }
  function showTyping(who, on) {
    clearTimeout(typingTimer);
    typingWho = on ? who : null;
    typingEl.hidden = !on;
    if (on) {
      typingEl.textContent = T.typing.replace('{who}', who === 'agent' ? T.agent : T.bot);
      typingTimer = setTimeout(function () { showTyping(null, false); }, 15000);
    }
  }

  // ---- session + socket ---------------------------------------------------------------------------
  var ws = null, ready = false, conn = 0, attempt = 0, retryTimer, pingTimer, lastRx = 0, starting = false;

  function setOnline(on) {
    status.hidden = on;
    panel.setAttribute('data-state', on ? 'online' : 'connecting');
  }
  function schedule() {
    clearTimeout(retryTimer);
    var d = Math.min(30000, 500 * Math.pow(2, attempt++));
    retryTimer = setTimeout(connect, d / 2 + Math.random() * d / 2);
  }
  function startSession() {
    if (starting) return;
    starting = true;
    fetch(base + '/api/v1/widget/sessions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ locale: navigator.language || lang })
    }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(function (j) {
      if (!j || !j.token) throw new Error('no token');
      starting = false;
      S.token = j.token;
      S.contact_id = j.contact_id;
      S.conversation_id = j.conversation_id;
      save();
      connect();
    }).catch(function () {
      starting = false;
      schedule();
    });
  }
  function send(f) {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(f));
  }
  function connect() {
    clearTimeout(retryTimer);
    if (!S.token) { startSession(); return; }
    if (ws) return;
    var sock;
    try { sock = new WebSocket(wsUrl); } catch (e) { schedule(); return; }
    ws = sock;
    conn++;
    sock.onopen = function () {
      sock.send(JSON.stringify({ type: 'hello', token: S.token, last_seq: S.seq || 0 }));
    };
    sock.onmessage = function (ev) {
      if (ws !== sock) return;
      lastRx = Date.now();
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f && typeof f === 'object') frame(f);
    };
    sock.onclose = function () {
      if (ws !== sock) return;
      drop();
      schedule();
    };
  }
  function drop() {
    var sock = ws;
    ws = null;
    ready = false;
    typingSent = false;
    clearInterval(pingTimer);
    setOnline(false);
    if (sock) { sock.onclose = sock.onmessage = null; try { sock.close(); } catch (e) { /* already closed */ } }
  }
  function resetSession() {
    drop();
    var out = S.out;
    S = fresh();
    S.out = out.map(function (p) { return { id: p.id, text: p.text }; });
    bySeq = {};
    byCid = {};
    log.textContent = '';
    S.out.forEach(function (p) { showPending(p); });
    save();
  }

  function frame(f) {
    switch (f.type) {
      case 'welcome':
        if ((S.conversation_id && f.conversation_id && f.conversation_id !== S.conversation_id) ||
            (typeof f.last_seq === 'number' && f.last_seq < S.seq)) {
          // The server no longer has what we show: start over from its state.
          var keep = { token: S.token, contact_id: f.contact_id || S.contact_id, conversation_id: f.conversation_id };
          resetSession();
          for (var k in keep) S[k] = keep[k];
          save();
          connect();
          return;
        }
        ready = true;
        attempt = 0;
        if (f.max_text_bytes > 0) maxTextBytes = f.max_text_bytes;
        setOnline(true);
        clearInterval(pingTimer);
        var hb = f.heartbeat_ms > 0 ? f.heartbeat_ms : 25000;
        pingTimer = setInterval(function () {
          if (Date.now() - lastRx > hb * 3) { drop(); schedule(); return; }
          send({ type: 'ping' });
        }, hb);
        S.out.forEach(function (p) { transmit(byCid[p.id] || p); });
        return;
      case 'message':
        onMessage(f);
        return;
      case 'ack':
        var p = byCid[f.client_id];
        if (p && f.seq > 0) confirm(p, f.seq);
        return;
      case 'typing':
        showTyping(f.author, !!f.state);
        return;
      case 'error':
        if (f.code === 'bad_token') {
          resetSession();
          schedule();
          return;
        }
        var q = f.client_id && byCid[f.client_id];
        if (!q) return;
        if (f.code === 'rate_limited' || f.code === 'internal') {
          q.conn = 0;
          var c = conn;
          setTimeout(function () { if (c === conn) transmit(q); }, f.retry_after_ms > 0 ? f.retry_after_ms : 1000);
        } else {
          fail(q);
        }
        return;
    }
  }

  window.addEventListener('online', function () { if (!ws && S.token) { attempt = 0; connect(); } });

  function init() {
    build();
    if (S.token) connect();
  }
  window.Frontdesk = { open: function () { open(); }, close: function () { close(); } };
  if (document.body) init(); else document.addEventListener('DOMContentLoaded', init);
})();
