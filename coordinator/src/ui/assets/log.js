// Drover web UI, job log page: a live log over Server-Sent Events, rendered
// virtually (only the visible rows exist), with follow, search and line links.
(() => {
  'use strict';

  const box = document.getElementById('log');
  if (!box) return;
  const $ = (id) => document.getElementById(id);
  const follow = $('log-follow') || { checked: true, addEventListener() {} };
  const search = $('log-search'), matchesEl = $('log-matches'), liveEl = $('live');
  const OVERSCAN = 50;

  // ---- Model -------------------------------------------------------------
  // lines: every row, in order: {n, t, s, seg} for a log line, {sep} for an
  // attempt separator. segs: one per attempt, {attempt, start} (start: index
  // of its first line). Line numbers restart with each attempt.
  const lines = [];
  const segs = [{ attempt: null, start: 0 }];
  let cur = 0, realCount = 0, maxN = 0;

  const segEnd = (k) => (k + 1 < segs.length ? segs[k + 1].start - 1 : lines.length);
  // First index in [lo, hi) whose line number is >= n (lines of one segment are sorted).
  function lowerBound(lo, hi, n) {
    while (lo < hi) { const mid = (lo + hi) >> 1; if (lines[mid].n < n) lo = mid + 1; else hi = mid; }
    return lo;
  }
  function find(k, n) {
    const end = segEnd(k), i = lowerBound(segs[k].start, end, n);
    return i < end && lines[i].n === n ? i : -1;
  }
  const anchor = (L) => (L.seg === 0 ? 'L' + L.n : 'A' + segs[L.seg].attempt + '-L' + L.n);

  let structural = false; // an insert in the middle shifted indices: redraw all, redo search
  function addLine(o) {
    if (!o || typeof o.n !== 'number') return;
    const line = { n: o.n, t: String(o.t ?? ''), s: Array.isArray(o.s) ? o.s : [], seg: cur };
    const end = segEnd(cur), i = lowerBound(segs[cur].start, end, line.n);
    if (i < end && lines[i].n === line.n) { // a re-sent (growing) line replaces the old one
      lines[i] = line; dirty.add(i); rematch(i);
      return;
    }
    if (i === lines.length) {
      lines.push(line); rematch(i, true);
    } else { // should not happen (lines come in order), but stay correct if it does
      lines.splice(i, 0, line);
      for (let k = cur + 1; k < segs.length; k++) segs[k].start++;
      structural = true;
    }
    realCount++;
    if (line.n > maxN) maxN = line.n;
  }

  function addAttempt(a) {
    const k = segs.findIndex((s) => s.attempt === a);
    if (k >= 0) { cur = k; return; } // a replay after reconnecting
    if (segs.length === 1 && segs[0].attempt === null && lines.length === 0) { segs[0].attempt = a; return; }
    lines.push({ sep: '— attempt ' + a + ' —' });
    segs.push({ attempt: a, start: lines.length });
    cur = segs.length - 1;
  }

  // ---- Rendering -----------------------------------------------------------
  const spacer = document.createElement('div');
  spacer.className = 'log-spacer';
  box.appendChild(spacer);
  const lh = (() => { // one measured sample row gives the fixed line height
    const probe = document.createElement('div');
    probe.className = 'row';
    probe.textContent = '0';
    box.appendChild(probe);
    const h = probe.getBoundingClientRect().height;
    probe.remove();
    return h > 4 ? h : 19;
  })();
  box.style.setProperty('--lh', lh + 'px');

  const rows = new Map(); // index -> row element, only the rendered ones
  const dirty = new Set();
  let all = false, frame = 0, shownCount = -1, digits = 0, hl = -1;

  const schedule = () => { if (!frame) frame = requestAnimationFrame(render); };
  const atBottom = () => box.scrollHeight - box.scrollTop - box.clientHeight <= 2;

  function sizeSpacer() {
    if (shownCount === lines.length) return;
    shownCount = lines.length;
    spacer.style.height = lines.length * lh + 'px';
    const d = String(maxN).length;
    if (d !== digits) { digits = d; box.style.setProperty('--ln-w', Math.max(3, d) + 'ch'); all = true; }
  }

  function render() {
    frame = 0;
    if (structural) { structural = false; all = true; if (query) runSearch(false); }
    sizeSpacer();
    if (follow.checked) box.scrollTop = box.scrollHeight;
    const top = box.scrollTop, h = box.clientHeight;
    const first = Math.max(0, Math.floor(top / lh) - OVERSCAN);
    const last = Math.min(lines.length, Math.ceil((top + h) / lh) + OVERSCAN);
    for (const [i, el] of rows) {
      if (all || i < first || i >= last || dirty.has(i)) { el.remove(); rows.delete(i); }
    }
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) if (!rows.has(i)) { const el = buildRow(i); rows.set(i, el); frag.appendChild(el); }
    box.appendChild(frag);
    dirty.clear();
    all = false;
    lastTop = box.scrollTop;
  }

  const CLASS_OK = /^(?:[bdiu]|fg(?:1[0-5]|[0-9])|bg(?:1[0-5]|[0-9]))$/;
  const COLOUR = /^(fg|bg)-(#[0-9a-fA-F]{6})$/;
  function styled(text, cls) {
    const span = document.createElement('span');
    span.textContent = text;
    const names = [];
    for (const tok of cls.split(' ')) {
      if (CLASS_OK.test(tok)) names.push(tok);
      else if (tok === 'mark') names.push('mark');
      else {
        const m = COLOUR.exec(tok);
        if (m && m[1] === 'fg') span.style.color = m[2];
        else if (m) span.style.backgroundColor = m[2];
      }
    }
    if (names.length) span.className = names.join(' ');
    return span;
  }

  // The text as text nodes and spans: style runs, cut where search marks begin and end.
  function fillText(parent, t, runs, marks) {
    if (!runs.length && !marks.length) { parent.textContent = t; return; }
    const cuts = new Set([0, t.length]);
    for (const r of runs) { cuts.add(Math.min(t.length, Math.max(0, r[0] | 0))); cuts.add(Math.min(t.length, Math.max(0, r[1] | 0))); }
    for (const m of marks) { cuts.add(m[0]); cuts.add(m[1]); }
    const pts = [...cuts].sort((a, b) => a - b);
    const sorted = runs.slice().sort((a, b) => a[0] - b[0]);
    let ri = 0, mi = 0;
    for (let k = 0; k + 1 < pts.length; k++) {
      const a = pts[k], b = pts[k + 1];
      if (a === b) continue;
      while (ri < sorted.length && sorted[ri][1] <= a) ri++;
      while (mi < marks.length && marks[mi][1] <= a) mi++;
      const run = ri < sorted.length && sorted[ri][0] <= a ? String(sorted[ri][2] || '') : '';
      const marked = mi < marks.length && marks[mi][0] <= a;
      const cls = marked ? (run ? run + ' mark' : 'mark') : run;
      parent.appendChild(cls ? styled(t.slice(a, b), cls) : document.createTextNode(t.slice(a, b)));
    }
  }

  function buildRow(i) {
    const L = lines[i], el = document.createElement('div');
    el.className = 'row';
    el.style.top = i * lh + 'px';
    el.dataset.i = i;
    if (L.sep) { el.classList.add('sep'); el.textContent = L.sep; return el; }
    const a = document.createElement('a');
    a.className = 'ln';
    a.href = '#' + anchor(L);
    a.tabIndex = -1;
    a.textContent = L.n;
    const text = document.createElement('span');
    text.className = 't';
    const isMatch = re !== null && matchSet.has(i);
    fillText(text, L.t, L.s, isMatch ? marksOf(L.t) : []);
    el.append(a, text);
    if (i === hl) el.classList.add('hl');
    if (isMatch) el.classList.add('match');
    if (isMatch && matches[curMatch] === i) el.classList.add('current');
    return el;
  }

  // ---- Follow, scrolling and line links ------------------------------------
  let lastTop = 0;
  box.addEventListener('scroll', () => {
    // The user scrolled up (our own scrolls only go down): stop following.
    if (follow.checked && box.scrollTop < lastTop - 1 && !atBottom()) follow.checked = false;
    lastTop = box.scrollTop;
    schedule();
  }, { passive: true });
  follow.addEventListener('change', () => { if (follow.checked) schedule(); });
  if (typeof ResizeObserver === 'function') new ResizeObserver(schedule).observe(box);

  // Scroll row i into view (centred when it was out of view); stops following.
  function reveal(i) {
    follow.checked = false;
    sizeSpacer(); // the row may have just arrived
    const top = i * lh;
    if (top < box.scrollTop || top + lh > box.scrollTop + box.clientHeight) {
      box.scrollTop = Math.max(0, top - box.clientHeight / 2 + lh / 2);
    }
    lastTop = box.scrollTop;
    schedule();
  }
  function highlight(i) {
    if (hl === i) return;
    if (hl >= 0) dirty.add(hl);
    hl = i;
    if (i >= 0) dirty.add(i);
    schedule();
  }

  // "#L12" is line 12 of the first attempt shown, "#A2-L12" line 12 of attempt 2.
  function parseHash(h) {
    const m = /^#(?:A(\d+)-)?L(\d+)$/.exec(h || '');
    return m ? { attempt: m[1] ? Number(m[1]) : null, n: Number(m[2]) } : null;
  }
  function resolve(target) {
    const k = target.attempt === null ? 0 : segs.findIndex((s) => s.attempt === target.attempt);
    return k >= 0 ? find(k, target.n) : -1;
  }
  let pendingHash = parseHash(location.hash);
  if (pendingHash) follow.checked = false;
  function tryHash() {
    if (!pendingHash) return;
    const i = resolve(pendingHash);
    if (i >= 0) { pendingHash = null; highlight(i); reveal(i); }
  }
  window.addEventListener('hashchange', () => { pendingHash = parseHash(location.hash); tryHash(); });
  box.addEventListener('click', (e) => {
    const a = e.target.closest && e.target.closest('a.ln');
    if (!a) return;
    e.preventDefault();
    const i = Number(a.parentElement.dataset.i);
    highlight(i);
    reveal(i);
    const h = a.getAttribute('href');
    if (location.hash !== h) location.hash = h; // hashchange then finds it already highlighted
  });

  // ---- Search ---------------------------------------------------------------
  let query = '', re = null, reAll = null, matches = [], matchSet = new Set(), curMatch = -1, debounce = 0;
  const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  function marksOf(t) {
    const out = [];
    reAll.lastIndex = 0;
    for (let m; (m = reAll.exec(t)) !== null;) {
      if (!m[0].length) break;
      out.push([m.index, m.index + m[0].length]);
    }
    return out;
  }
  function showCount() {
    if (!matchesEl) return;
    const text = !query ? '' : matches.length ? (curMatch + 1) + ' of ' + matches.length : 'No matches';
    if (matchesEl.textContent !== text) matchesEl.textContent = text;
  }
  // Re-test line i after it was added or replaced (appends keep matches sorted).
  function rematch(i, appended) {
    if (!re) return;
    const hit = re.test(lines[i].t), had = matchSet.has(i);
    if (hit === had) return;
    if (hit) {
      matchSet.add(i);
      if (appended || !matches.length || matches[matches.length - 1] < i) matches.push(i);
      else { matches.splice(lowerIndex(i), 0, i); }
    } else { matchSet.delete(i); matches.splice(lowerIndex(i), 1); }
    if (curMatch < 0 && matches.length) curMatch = 0;
    if (curMatch >= matches.length) curMatch = matches.length - 1;
    countDue = true;
  }
  function lowerIndex(i) { let lo = 0, hi = matches.length; while (lo < hi) { const m = (lo + hi) >> 1; if (matches[m] < i) lo = m + 1; else hi = m; } return lo; }
  let countDue = false;

  function runSearch(jump) {
    query = search ? search.value : '';
    matches = []; matchSet = new Set(); curMatch = -1;
    re = query ? new RegExp(escapeRe(query), 'i') : null;
    reAll = query ? new RegExp(escapeRe(query), 'gi') : null;
    if (re) {
      for (let i = 0; i < lines.length; i++) if (!lines[i].sep && re.test(lines[i].t)) { matches.push(i); matchSet.add(i); }
      const firstVisible = Math.floor(box.scrollTop / lh);
      curMatch = matches.findIndex((i) => i >= firstVisible);
      if (curMatch < 0 && matches.length) curMatch = 0;
    }
    all = true;
    showCount();
    if (jump && curMatch >= 0) reveal(matches[curMatch]);
    schedule();
  }
  function step(d) {
    if (!matches.length) return;
    const old = matches[curMatch];
    curMatch = (curMatch + d + matches.length) % matches.length;
    if (old !== undefined) dirty.add(old);
    dirty.add(matches[curMatch]);
    showCount();
    reveal(matches[curMatch]);
  }
  if (search) {
    search.addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => runSearch(true), 150);
    });
    search.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        if (search.value !== query) { clearTimeout(debounce); runSearch(true); if (!e.shiftKey) return; }
        step(e.shiftKey ? -1 : 1);
      } else if (e.key === 'Escape') {
        e.preventDefault();
        clearTimeout(debounce);
        search.value = '';
        runSearch(false);
      }
    });
  }

  // ---- Live stream ---------------------------------------------------------
  const setLive = (on) => { if (liveEl) liveEl.classList.toggle('off', !on); };
  let ended = false, sawIds = false, hadError = false;
  function afterBatch() {
    tryHash();
    if (countDue) { countDue = false; showCount(); }
    schedule();
  }
  function connect() {
    const url = box.dataset.events;
    if (!url || typeof EventSource !== 'function') { setLive(false); return; }
    const es = new EventSource(url);
    const parse = (e) => { if (e.lastEventId) sawIds = true; try { return JSON.parse(e.data); } catch (err) { return null; } };
    es.addEventListener('open', () => {
      // Without event ids the server replays the log from its start: go back to the first attempt.
      if (hadError && !sawIds) cur = 0;
      hadError = false;
      setLive(true);
    });
    es.addEventListener('error', () => {
      if (ended) return;
      hadError = true;
      setLive(false);
      if (es.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
    });
    es.addEventListener('lines', (e) => {
      const batch = parse(e);
      if (!Array.isArray(batch)) return;
      for (const o of batch) addLine(o);
      afterBatch();
    });
    es.addEventListener('attempt', (e) => {
      const o = parse(e);
      if (o && typeof o.attempt === 'number') { addAttempt(o.attempt); afterBatch(); }
    });
    es.addEventListener('end', () => {
      ended = true;
      es.close();
      setLive(false);
      box.dataset.complete = 'true';
      afterBatch();
    });
  }

  // ---- For tests -------------------------------------------------------------
  window.droverLog = {
    lines: () => realCount,
    // Line n's text, in the latest attempt that has it.
    text: (n) => {
      for (let k = segs.length - 1; k >= 0; k--) { const i = find(k, n); if (i >= 0) return lines[i].t; }
      return undefined;
    },
    rendered: () => rows.size,
    lineHeight: () => lh,
    ended: () => ended,
  };

  render();
  connect();
})();
