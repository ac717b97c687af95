// testbot's pages, made live. Every page reads well without this file;
// with it, times stay current, live pages update in place through one
// server-sent-events stream (/events), and a running job's log is followed
// as one stream. Text from jobs goes in as text nodes, never as HTML.
(function () {
  'use strict';
  function dur(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (ms < 1000) return Math.max(0, Math.round(ms)) + ' ms';
    if (s < 60) return (ms / 1000).toFixed(s < 10 ? 1 : 0) + ' s';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + ('0' + s % 60).slice(-2) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + ('0' + Math.floor(s % 3600 / 60)).slice(-2) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor(s % 86400 / 3600) + 'h';
  }
  function ago(ms) {
    var d = Date.now() - ms, s = Math.floor(Math.abs(d) / 1000), span;
    if (s < 60) span = s + 's';
    else if (s < 3600) span = Math.floor(s / 60) + 'm';
    else if (s < 86400) span = Math.floor(s / 3600) + 'h ' + Math.floor(s % 3600 / 60) + 'm';
    else span = Math.floor(s / 86400) + 'd';
    return d < -999 ? 'in ' + span : span + ' ago';
  }
  function tick(root) {
    var now = Date.now();
    (root || document).querySelectorAll('time[datetime]').forEach(function (t) {
      var ms = Date.parse(t.getAttribute('datetime'));
      if (isNaN(ms)) return;
      if (!t.dataset.local) { t.title = new Date(ms).toLocaleString(); t.dataset.local = '1'; }
      if (t.hasAttribute('data-rel')) t.textContent = ago(ms);
    });
    (root || document).querySelectorAll('[data-since]').forEach(function (e) {
      e.textContent = dur(now - Number(e.dataset.since));
    });
  }
  tick();
  setInterval(tick, 1000);

  // ANSI SGR, as the server renders it (pages/ansi.rs).
  function Pen() { this.b = this.d = this.i = this.u = false; this.fg = this.bg = null; }
  Pen.prototype.plain = function () { return !(this.b || this.d || this.i || this.u || this.fg || this.bg); };
  Pen.prototype.apply = function (params) {
    var c = params === '' ? [0] : params.split(/[;:]/).map(function (x) { return parseInt(x, 10) || 0; });
    for (var i = 0; i < c.length; i++) {
      var n = c[i];
      if (n === 0) Pen.call(this);
      else if (n === 1) this.b = true; else if (n === 2) this.d = true;
      else if (n === 3) this.i = true; else if (n === 4) this.u = true;
      else if (n === 22) this.b = this.d = false; else if (n === 23) this.i = false; else if (n === 24) this.u = false;
      else if (n >= 30 && n <= 37) this.fg = 'f' + (n - 30); else if (n >= 90 && n <= 97) this.fg = 'f' + (n - 82);
      else if (n === 39) this.fg = null;
      else if (n >= 40 && n <= 47) this.bg = 'g' + (n - 40); else if (n >= 100 && n <= 107) this.bg = 'g' + (n - 92);
      else if (n === 49) this.bg = null;
      else if (n === 38 || n === 48) {
        var col = null;
        if (c[i + 1] === 5 && i + 2 < c.length) { col = pal(Math.min(c[i + 2], 255)); i += 2; }
        else if (c[i + 1] === 2 && i + 4 < c.length) { col = rgb(c[i + 2], c[i + 3], c[i + 4]); i += 4; }
        else i = c.length;
        if (col) { if (n === 38) this.fg = col; else this.bg = col.charAt(0) === 'f' ? 'g' + col.slice(1) : col; }
      }
    }
  };
  function hex(x) { return ('0' + Math.min(255, x).toString(16)).slice(-2); }
  function rgb(r, g, b) { return '#' + hex(r) + hex(g) + hex(b); }
  function pal(n) {
    if (n < 16) return 'f' + n;
    if (n < 232) { n -= 16; var l = function (x) { return x ? 55 + x * 40 : 0; }; return rgb(l(Math.floor(n / 36)), l(Math.floor(n / 6) % 6), l(n % 6)); }
    var v = 8 + (n - 232) * 10; return rgb(v, v, v);
  }
  function span(pen, text) {
    if (pen.plain()) return document.createTextNode(text);
    var s = document.createElement('span'), cls = [];
    if (pen.b) cls.push('b'); if (pen.d) cls.push('d'); if (pen.i) cls.push('i'); if (pen.u) cls.push('u');
    if (pen.fg) { if (pen.fg.charAt(0) === '#') s.style.color = pen.fg; else cls.push(pen.fg); }
    if (pen.bg) { if (pen.bg.charAt(0) === '#') s.style.background = pen.bg; else cls.push(pen.bg); }
    if (cls.length) s.className = cls.join(' ');
    s.textContent = text;
    return s;
  }
  // Fills el with one line of raw text, from pen (left as the line leaves it).
  function renderLine(el, raw, pen) {
    raw = raw.replace(/\r+$/, '');
    var cr = raw.lastIndexOf('\r');
    if (cr >= 0) raw = raw.slice(cr + 1);
    var re = /\x1b(?:\[([\x30-\x3f]*)[\x20-\x2f]*([\x40-\x7e])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\s\S]?)/g, last = 0, m;
    while ((m = re.exec(raw))) {
      if (m.index > last) el.appendChild(span(pen, clean(raw.slice(last, m.index))));
      if (m[2] === 'm') pen.apply(m[1]);
      last = re.lastIndex;
      if (m[0] === '') re.lastIndex++;
    }
    if (last < raw.length) el.appendChild(span(pen, clean(raw.slice(last))));
  }
  function clean(s) { return s.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, ''); }

  var logEl = document.getElementById('log');
  var stick = true, followBox = document.getElementById('follow');
  function atBottom() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 48;
  }
  function toBottom() { window.scrollTo(0, document.documentElement.scrollHeight); }
  window.addEventListener('scroll', function () {
    if (!logEl || !logEl.dataset.follow) return;
    stick = atBottom();
    if (followBox) followBox.checked = stick;
  }, { passive: true });
  if (followBox) followBox.addEventListener('change', function () { stick = followBox.checked; if (stick) toBottom(); });

  var wrap = document.getElementById('wrap');
  if (wrap && logEl) {
    var on = localStorage.getItem('testbot.wrap') === '1';
    logEl.classList.toggle('wrap', on); wrap.checked = on;
    wrap.addEventListener('change', function () {
      logEl.classList.toggle('wrap', wrap.checked);
      localStorage.setItem('testbot.wrap', wrap.checked ? '1' : '0');
    });
  }
  // A line link into the part of a long log that is not shown.
  if (logEl && /^#L\d+$/.test(location.hash) && !document.getElementById(location.hash.slice(1))
      && logEl.dataset.all) {
    location.replace(logEl.dataset.all + location.hash);
  }

  function follow() {
    var f = logEl.dataset.follow.split(',');
    var id = f[0], attempt = f[1], offset = f[2], n = Number(logEl.dataset.lines || 0);
    var pen = new Pen(), partial = '', cur = null, dec = new TextDecoder();
    if (followBox) followBox.closest('label').hidden = false;
    // A running job's page opens at the end of its log, following it,
    // unless it was opened at a line (#L123).
    stick = !/^#L\d+$/.test(location.hash);
    if (followBox) followBox.checked = stick;
    if (stick) toBottom();
    function line(raw, open) {
      if (!cur) {
        n += 1;
        cur = document.createElement('div');
        cur.id = 'L' + n;
        var a = document.createElement('a'); a.href = '#L' + n; cur.appendChild(a);
        logEl.appendChild(cur);
        var empty = document.getElementById('log-empty'); if (empty) empty.remove();
      }
      while (cur.childNodes.length > 1) cur.removeChild(cur.lastChild);
      var p = open ? Object.assign(new Pen(), pen) : pen;
      renderLine(cur, raw, p);
      if (!open) { cur.appendChild(document.createTextNode('\n')); cur = null; }
    }
    fetch('/api/v1/jobs/' + id + '/log?follow=true&attempt=' + attempt + '&offset=' + offset).then(function (r) {
      if (!r.ok || !r.body) throw r;
      var rd = r.body.getReader();
      function more() {
        return rd.read().then(function (x) {
          if (x.done) { if (partial) line(partial, false); delete logEl.dataset.follow; refresh(); return; }
          var parts = (partial + dec.decode(x.value, { stream: true })).split('\n');
          partial = parts.pop();
          parts.forEach(function (p) { line(p, false); });
          if (partial) line(partial, true);
          if (stick) toBottom();
          return more();
        });
      }
      return more();
    }).catch(function () { setTimeout(refresh, 2000); });
  }

  // Live pages: one event stream; on a change, the page is read again and
  // its parts ([data-part]) are swapped in place.
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { headers: { accept: 'text/html' } }).then(function (r) { return r.text(); }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, 'text/html');
      var oldState = document.body.dataset.state, newState = doc.body.dataset.state;
      if (oldState === 'queued' && newState && newState !== 'queued') {
        document.querySelector('main').replaceWith(document.adoptNode(doc.querySelector('main')));
        logEl = document.getElementById('log'); followBox = document.getElementById('follow');
        if (logEl && logEl.dataset.follow) follow();
      } else {
        doc.querySelectorAll('[data-part]').forEach(function (p) {
          var mine = document.getElementById(p.id);
          if (mine) mine.replaceWith(document.adoptNode(p));
        });
      }
      document.body.dataset.state = newState || '';
      document.title = doc.title;
      var icon = doc.querySelector('link[rel=icon]'), myIcon = document.querySelector('link[rel=icon]');
      if (icon && myIcon) myIcon.href = icon.getAttribute('href');
      if (!doc.body.hasAttribute('data-live') && events) { events.close(); events = null; }
      tick();
    }).catch(function () {}).then(function () {
      busy = false;
      if (again) { again = false; setTimeout(refresh, 300); }
    });
  }
  // A browser keeps few connections to one server (six over HTTP/1.1):
  // a page out of sight gives its event stream back, and catches up when
  // it is seen again.
  var events = null, timer = null;
  function listen() {
    if (events || !document.body.hasAttribute('data-live') || !window.EventSource) return;
    events = new EventSource('/events');
    events.addEventListener('change', function () {
      if (timer) return;
      timer = setTimeout(function () { timer = null; refresh(); }, 250);
    });
  }
  document.addEventListener('visibilitychange', function () {
    if (document.hidden) { if (events) { events.close(); events = null; } }
    else if (document.body.hasAttribute('data-live')) { listen(); refresh(); }
  });
  if (!document.hidden) listen();
  if (logEl && logEl.dataset.follow) follow();
})();
