// Drover web UI, run page: lays out and draws the run's jobs as a DAG (SVG),
// highlights the critical path and keeps graph and jobs table live over SSE.
(() => {
  'use strict';

  const SVGNS = 'http://www.w3.org/2000/svg';
  const NODE_W = 184, NODE_H = 34, PAD = 8, LABEL_H = 18, COL_GAP = 64;
  const ROW_GAP = 10, BLOCK_GAP = 14, MARGIN = 16, TEXT_X = 26, ANCHOR = 0.15;
  const FONT = '12px ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';

  // "45s", "3m 05s", "1h 02m"; 0 is "-" (as the server writes durations).
  function fmtDuration(ms) {
    if (!(ms > 0)) return '-';
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + String(s % 60).padStart(2, '0') + 's';
    return Math.floor(s / 3600) + 'h ' + String(Math.floor((s % 3600) / 60)).padStart(2, '0') + 'm';
  }

  // Pool-adjacent-violators: the least-squares non-decreasing fit of vals (weights ws).
  function isotonic(vals, ws) {
    const pv = [], pw = [], pc = [];
    for (let i = 0; i < vals.length; i++) {
      let v = vals[i], w = ws[i], c = 1;
      while (pv.length && pv[pv.length - 1] > v) {
        const w2 = pw.pop(), v2 = pv.pop();
        v = (v * w + v2 * w2) / (w + w2); w += w2; c += pc.pop();
      }
      pv.push(v); pw.push(w); pc.push(c);
    }
    const out = [];
    for (let k = 0; k < pv.length; k++) for (let j = 0; j < pc[k]; j++) out.push(pv[k]);
    return out;
  }

  // Layered layout, left to right. Returns positions (top-left of each node),
  // the dashed group boxes, the graph (needs/deps by index) and a topological order.
  function layout(jobs) {
    const n = jobs.length;
    const index = new Map(jobs.map((j, i) => [j.name, i]));
    const needs = jobs.map((j, i) => [...new Set((j.needs || []).map((x) => index.get(x)))]
      .filter((p) => p !== undefined && p !== i));
    const deps = jobs.map(() => []);
    needs.forEach((ns, i) => ns.forEach((p) => deps[p].push(i)));

    // Topological order (Kahn); members of a cycle, which should not exist, go last.
    const indeg = needs.map((ns) => ns.length), topo = [];
    for (let i = 0; i < n; i++) if (!indeg[i]) topo.push(i);
    for (let k = 0; k < topo.length; k++) for (const c of deps[topo[k]]) if (--indeg[c] === 0) topo.push(c);
    if (topo.length < n) for (let i = 0; i < n; i++) if (indeg[i] > 0) topo.push(i);

    // Layer = longest path from a source.
    const layer = new Int32Array(n);
    for (const i of topo) for (const p of needs[i]) if (layer[p] + 1 > layer[i]) layer[i] = layer[p] + 1;
    const nLayers = n ? Math.max(...layer) + 1 : 0;

    // Group key: matrix expansions share a group with >= 2 members; others stand alone.
    const gsize = new Map();
    for (const j of jobs) { const g = j.group || j.name; gsize.set(g, (gsize.get(g) || 0) + 1); }
    const gkey = jobs.map((j, i) => ((gsize.get(j.group || j.name) || 0) >= 2 ? 'g:' + j.group : 'n:' + i));

    const layers = Array.from({ length: nLayers }, () => []);
    for (let i = 0; i < n; i++) layers[layer[i]].push(i);
    const pos = new Float64Array(n), key = new Float64Array(n);
    layers.forEach((ls) => ls.forEach((v, k) => { pos[v] = k; }));

    // Order one layer by barycentre of its neighbours, keeping groups contiguous.
    const orderLayer = (ls, nbrs) => {
      for (const v of ls) {
        let s = 0;
        for (const u of nbrs[v]) s += pos[u];
        key[v] = nbrs[v].length ? s / nbrs[v].length : pos[v];
      }
      const blocks = new Map();
      for (const v of ls) {
        let b = blocks.get(gkey[v]);
        if (!b) blocks.set(gkey[v], (b = { sum: 0, members: [], first: pos[v] }));
        b.sum += key[v]; b.members.push(v);
      }
      const sorted = [...blocks.values()].sort((a, b) =>
        a.sum / a.members.length - b.sum / b.members.length || a.first - b.first);
      ls.length = 0;
      for (const b of sorted) {
        b.members.sort((x, y) => key[x] - key[y] || pos[x] - pos[y]);
        for (const v of b.members) { pos[v] = ls.length; ls.push(v); }
      }
    };
    const none = needs.map(() => []);
    for (const ls of layers) orderLayer(ls, none); // groups contiguous, input order otherwise
    for (let sweep = 0; sweep < 4; sweep++) {
      for (let l = 1; l < nLayers; l++) orderLayer(layers[l], needs);
      for (let l = nLayers - 2; l >= 0; l--) orderLayer(layers[l], deps);
    }
    for (let l = 1; l < nLayers; l++) orderLayer(layers[l], needs);

    // Blocks (a group's members in one layer, or a single job) and their heights.
    const lblocks = layers.map((ls) => {
      const out = [];
      for (const v of ls) {
        const last = out[out.length - 1];
        if (last && last.key === gkey[v]) last.members.push(v);
        else out.push({ key: gkey[v], members: [v], top: 0, h: 0, boxed: gkey[v][0] === 'g' });
      }
      for (const b of out) b.h = b.boxed ? LABEL_H + 2 * PAD - ROW_GAP + b.members.length * (NODE_H + ROW_GAP) : NODE_H;
      return out;
    });
    const inner = (b, k) => (b.boxed ? LABEL_H + PAD + k * (NODE_H + ROW_GAP) : 0);
    const cy = new Float64Array(n);
    const setCentres = (b) => b.members.forEach((v, k) => { cy[v] = b.top + inner(b, k) + NODE_H / 2; });

    // Vertical placement: each layer's blocks as close as possible (least squares)
    // to the mean centre of their neighbours, in order and without overlap.
    const place = (blocks, nbrsList) => {
      const vals = [], ws = [];
      let off = 0;
      for (const b of blocks) {
        let s = 0, w = 0;
        b.members.forEach((v, k) => {
          let t = 0, c = 0;
          for (const nbrs of nbrsList) for (const u of nbrs[v]) { t += cy[u]; c++; }
          if (c) { s += t / c - inner(b, k) - NODE_H / 2; w++; }
        });
        // a weak pull towards the top (z = 0) keeps long graphs from drifting
        vals.push(w ? (s - w * off) / (w + ANCHOR) : b.top - off);
        ws.push(w ? w + ANCHOR : 0.01);
        b.off = off; off += b.h + BLOCK_GAP;
      }
      isotonic(vals, ws).forEach((z, i) => { blocks[i].top = z + blocks[i].off; setCentres(blocks[i]); });
    };
    for (const blocks of lblocks) { let off = 0; for (const b of blocks) { b.top = off; off += b.h + BLOCK_GAP; setCentres(b); } }
    for (let l = 1; l < nLayers; l++) place(lblocks[l], [needs]);
    for (let l = nLayers - 2; l >= 0; l--) place(lblocks[l], [deps, needs]);
    for (let l = 1; l < nLayers; l++) place(lblocks[l], [needs, deps]);

    // Normalise to the margin; x by layer.
    let minTop = Infinity, maxBottom = 0;
    for (const blocks of lblocks) for (const b of blocks) minTop = Math.min(minTop, b.top);
    const shift = MARGIN - (n ? minTop : 0);
    const x = new Float64Array(n), y = new Float64Array(n), groups = [];
    const colW = NODE_W + 2 * PAD;
    lblocks.forEach((blocks, l) => {
      const cx = MARGIN + l * (colW + COL_GAP);
      for (const b of blocks) {
        b.top = Math.round(b.top + shift);
        maxBottom = Math.max(maxBottom, b.top + b.h);
        b.members.forEach((v, k) => { x[v] = cx + PAD; y[v] = b.top + inner(b, k); });
        if (b.boxed) groups.push({ name: jobs[b.members[0]].group, x: cx, y: b.top, w: colW, h: b.h });
      }
    });
    return {
      x, y, groups, needs, deps, topo,
      width: nLayers ? MARGIN * 2 + nLayers * colW + (nLayers - 1) * COL_GAP : 2 * MARGIN,
      height: n ? Math.ceil(maxBottom + MARGIN) : 2 * MARGIN,
    };
  }

  // Longest path weighted by the jobs' durations: returns [indices] and total ms.
  function criticalPath(topo, needs, weight) {
    const n = needs.length, dist = new Float64Array(n), pred = new Int32Array(n).fill(-1);
    let end = -1;
    for (const i of topo) {
      let best = 0;
      for (const p of needs[i]) if (dist[p] > best) { best = dist[p]; pred[i] = p; }
      dist[i] = best + weight[i];
      if (end < 0 || dist[i] > dist[end]) end = i;
    }
    const path = [];
    for (let v = end; v >= 0 && path.length <= n; v = pred[v]) path.push(v);
    return { path: path.reverse(), total: end >= 0 ? dist[end] : 0 };
  }

  globalThis.DroverDag = { layout, criticalPath, fmtDuration }; // for tests
  if (typeof document === 'undefined') return;

  // ---------------------------------------------------------------- page
  const dataEl = document.getElementById('run-data');
  const svg = document.getElementById('dag');
  if (!dataEl || !svg) return;
  let data;
  try { data = JSON.parse(dataEl.textContent); } catch (e) { return; } // nothing to draw
  const jobs = data.jobs || [];
  const clockSkew = (data.now_ms || Date.now()) - Date.now();
  const now = () => Date.now() + clockSkew;
  const initialState = data.state;
  const byName = new Map(jobs.map((j) => [j.name, j]));
  let graph = null, nodeEls = [], edgeEls = new Map(), nodeIndex = new Map();
  let critNodes = new Set(), critEdges = new Set();
  const rows = new Map();
  document.querySelectorAll('tr[data-job]').forEach((tr) => rows.set(tr.dataset.job, tr));

  const legend = document.createElement('p'), swatch = document.createElement('span');
  legend.className = 'legend';
  swatch.className = 'swatch';
  swatch.setAttribute('aria-hidden', 'true');
  const wrap = svg.closest('.dag-wrap') || svg;
  wrap.after(legend);

  const el = (tag, attrs, parent) => {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  };
  const cleanState = (s) => String(s || 'unknown').toLowerCase().replace(/[^a-z-]/g, '');
  const awaiting = (j) => j.state === 'pending' && /^approval/.test(j.waiting_for || '');

  // Truncate a label to a pixel width with an ellipsis. Widths are summed from
  // per-character canvas measurements (cached), which is fast and close enough.
  const ctx = document.createElement('canvas').getContext('2d');
  if (ctx) ctx.font = FONT;
  const charW = new Map();
  const width = (s) => {
    let w = 0;
    for (const c of s) {
      let cw = charW.get(c);
      if (cw === undefined) charW.set(c, (cw = ctx ? ctx.measureText(c).width * 1.03 : 7.5));
      w += cw;
    }
    return w;
  };
  function fit(text, max) {
    if (width(text) <= max) return text;
    const ell = width('…');
    let w = 0, k = 0;
    const chars = [...text];
    while (k < chars.length && w + charW.get(chars[k]) + ell <= max) w += charW.get(chars[k++]);
    return chars.slice(0, k).join('').trimEnd() + '…';
  }

  function nodeClass(j, i) {
    return 'node s-' + cleanState(j.state) + (awaiting(j) ? ' awaiting' : '') + (critNodes.has(i) ? ' critical' : '');
  }

  // Full layout and redraw; times itself for the benchmark.
  function render() {
    const t0 = performance.now();
    const focused = document.activeElement && document.activeElement.closest
      ? document.activeElement.closest('#dag .node') : null;
    const focusName = focused ? focused.getAttribute('data-job') : null;
    graph = layout(jobs);
    nodeIndex = new Map(jobs.map((j, i) => [j.name, i]));
    critNodes = new Set(); critEdges = new Set();
    const root = document.createDocumentFragment(); // built detached, attached once
    const defs = el('defs', {}, root);
    for (const [id, cls] of [['dag-arrow', 'arrow'], ['dag-arrow-crit', 'arrow critical']]) {
      const m = el('marker', { id, viewBox: '0 0 10 10', refX: '10', refY: '5', markerWidth: '8', markerHeight: '8',
        markerUnits: 'userSpaceOnUse', orient: 'auto' }, defs);
      el('path', { d: 'M0,0 L10,5 L0,10 z', class: cls }, m);
    }
    const gGroups = el('g', { class: 'groups', 'aria-hidden': 'true' }, root);
    for (const g of graph.groups) {
      const gg = el('g', { class: 'group' }, gGroups);
      el('rect', { x: g.x, y: g.y, width: g.w, height: g.h, rx: 8 }, gg);
      el('text', { x: g.x + 10, y: g.y + LABEL_H / 2 + 3 }, gg).textContent = fit(g.name, g.w - 20);
    }
    const gEdges = el('g', { class: 'edges', 'aria-hidden': 'true' }, root);
    edgeEls = new Map();
    const { x, y, needs } = graph;
    jobs.forEach((j, i) => {
      for (const p of needs[i]) {
        const x1 = x[p] + NODE_W, y1 = y[p] + NODE_H / 2, x2 = x[i], y2 = y[i] + NODE_H / 2;
        const dx = Math.max(24, (x2 - x1) / 2);
        const path = el('path', { class: 'edge', d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`,
          'marker-end': 'url(#dag-arrow)', 'data-from': jobs[p].name, 'data-to': j.name }, gEdges);
        edgeEls.set(p + '>' + i, path);
      }
    });
    const gNodes = el('g', { class: 'nodes' }, root);
    // Document order = visual order (column by column, top to bottom), so Tab follows the graph.
    const order = jobs.map((j, i) => i).sort((a, b) => x[a] - x[b] || y[a] - y[b]);
    nodeEls = new Array(jobs.length);
    for (const i of order) {
      const j = jobs[i];
      const a = el('a', { class: nodeClass(j, i), href: j.log || '#', 'data-job': j.name, tabindex: '0',
        'aria-label': j.name + ': ' + j.state, transform: `translate(${x[i]},${y[i]})` }, gNodes);
      el('title', {}, a).textContent = j.name;
      el('rect', { class: 'ring', x: -4, y: -4, width: NODE_W + 8, height: NODE_H + 8, rx: 9 }, a);
      el('rect', { class: 'box', width: NODE_W, height: NODE_H, rx: 6 }, a);
      el('circle', { class: 'dot', cx: 14, cy: NODE_H / 2, r: 5 }, a);
      el('text', { x: TEXT_X, y: NODE_H / 2 }, a).textContent = fit(j.name, NODE_W - TEXT_X - 8);
      nodeEls[i] = a;
    }
    updateCritical();
    svg.textContent = '';
    svg.setAttribute('width', graph.width);
    svg.setAttribute('height', graph.height);
    svg.setAttribute('viewBox', `0 0 ${graph.width} ${graph.height}`);
    svg.appendChild(root);
    if (focusName !== null && nodeIndex.has(focusName)) nodeEls[nodeIndex.get(focusName)].focus();
    const ms = performance.now() - t0;
    svg.dataset.layoutMs = String(Math.round(ms * 100) / 100);
    window.droverLayoutMs = ms;
  }

  const durationOf = (j) => (j.started_ms ? (j.finished_ms || now()) - j.started_ms : 0);

  // Recompute the critical path; touch only the elements whose highlight changes.
  function updateCritical() {
    if (!graph) return;
    const weight = jobs.map((j) => Math.max(1, durationOf(j)));
    const { path, total } = criticalPath(graph.topo, graph.needs, weight);
    const nodes = new Set(path), edges = new Set();
    for (let k = 1; k < path.length; k++) edges.add(path[k - 1] + '>' + path[k]);
    for (const i of critNodes) if (!nodes.has(i)) nodeEls[i].classList.remove('critical');
    for (const i of nodes) if (!critNodes.has(i)) nodeEls[i].classList.add('critical');
    for (const k of critEdges) if (!edges.has(k)) setEdge(k, false);
    for (const k of edges) if (!critEdges.has(k)) setEdge(k, true);
    critNodes = nodes; critEdges = edges;
    const text = path.length
      ? 'Critical path: ' + path.map((i) => jobs[i].name).join(' → ') + ' (' + fmtDuration(total) + ')' : '';
    if (legend.textContent !== text) {
      legend.textContent = '';
      if (text) legend.append(swatch, text);
    }
  }
  function setEdge(k, on) {
    const e = edgeEls.get(k);
    if (!e) return;
    e.classList.toggle('critical', on);
    e.setAttribute('marker-end', on ? 'url(#dag-arrow-crit)' : 'url(#dag-arrow)');
  }

  const setText = (e, t) => { if (e && e.textContent !== t) e.textContent = t; };
  function updateRow(j) {
    let tr = rows.get(j.name);
    if (!tr || !tr.isConnected) {
      tr = [...document.querySelectorAll('tr[data-job]')].find((r) => r.dataset.job === j.name);
      if (!tr) return;
      rows.set(j.name, tr);
    }
    tr.dataset.state = j.state;
    const pill = tr.querySelector('[data-field="state"]');
    if (pill) { setText(pill, j.state); pill.dataset.state = j.state; }
    setText(tr.querySelector('[data-field="attempt"]'), String(j.attempt ?? ''));
    setText(tr.querySelector('[data-field="agent"]'), j.agent || '');
    setText(tr.querySelector('[data-field="duration"]'), fmtDuration(durationOf(j)));
  }

  function updateNode(j) {
    const i = nodeIndex.get(j.name), a = nodeEls[i];
    if (!a) return;
    a.setAttribute('class', nodeClass(j, i));
    a.setAttribute('aria-label', j.name + ': ' + j.state);
    if (j.log) a.setAttribute('href', j.log);
  }

  // Batch: several events in one frame cost one re-layout / one critical pass.
  let relayoutDue = false, criticalDue = false, frameDue = false;
  function schedule() {
    if (frameDue) return;
    frameDue = true;
    requestAnimationFrame(() => {
      frameDue = false;
      if (relayoutDue) { relayoutDue = false; criticalDue = false; render(); }
      else if (criticalDue) { criticalDue = false; updateCritical(); }
    });
  }

  function onJob(j) {
    if (!j || typeof j.name !== 'string') return;
    const old = byName.get(j.name);
    if (!old) {
      jobs.push(j); byName.set(j.name, j); relayoutDue = true;
    } else {
      const moved = JSON.stringify(old.needs || []) !== JSON.stringify(j.needs || old.needs || [])
        || (old.group || '') !== (j.group ?? old.group ?? '');
      Object.assign(old, j);
      if (moved) relayoutDue = true;
      else updateNode(old);
    }
    criticalDue = true;
    updateRow(byName.get(j.name));
    schedule();
    ensureTicking();
    // A job now waits for approval: the server renders its form.
    const now = byName.get(j.name);
    if (awaiting(now) && !Array.from(document.querySelectorAll('.approval[data-job]')).some((e) => e.dataset.job === now.name)) {
      reloadSoon(300, 'A job waits for approval. ');
    }
  }

  // Reload once, so the server re-renders the actions, unless the user is typing.
  let reloadScheduled = false, typed = false;
  const isField = (e) => e && e.matches && (e.isContentEditable ||
    e.matches('textarea, select, input:not([type=hidden]):not([type=button]):not([type=submit]):not([type=reset]):not([type=checkbox]):not([type=radio])'));
  document.addEventListener('input', (e) => { if (isField(e.target)) typed = true; });
  function onRun(r) {
    if (!r || !r.state) return;
    const st = document.getElementById('run-state');
    if (st) { setText(st, r.state); st.dataset.state = r.state; }
    document.body.dataset.runState = r.state;
    if (r.state !== 'running' && r.state !== initialState) reloadSoon(1500, 'This run has finished. ');
  }
  function reloadSoon(after, why) {
    if (reloadScheduled) return;
    reloadScheduled = true;
    setTimeout(() => {
      if (typed || isField(document.activeElement) || reloadedRecently()) return offerReload(why);
      location.reload();
    }, after);
  }
  // Guard against a reload loop should the server still render the old state.
  function reloadedRecently() {
    try {
      const k = 'drover-reload-' + data.id, last = Number(sessionStorage.getItem(k)) || 0;
      if (Date.now() - last < 30000) return true;
      sessionStorage.setItem(k, String(Date.now()));
    } catch (e) { /* storage unavailable: reload anyway */ }
    return false;
  }
  function offerReload(why) {
    const p = document.createElement('p'), a = document.createElement('a');
    p.className = 'flash';
    p.setAttribute('role', 'status');
    a.href = location.href;
    a.textContent = 'Reload';
    p.append(why, a, ' to see the actions it offers now.');
    (document.querySelector('main h1') || document.body.firstChild).after(p);
  }

  // Tick running durations every second.
  let ticker = 0;
  function ensureTicking() {
    if (ticker || !jobs.some((j) => j.started_ms && !j.finished_ms)) return;
    ticker = setInterval(() => {
      const live = jobs.filter((j) => j.started_ms && !j.finished_ms);
      if (!live.length) { clearInterval(ticker); ticker = 0; }
      live.forEach(updateRow);
      criticalDue = true;
      schedule();
    }, 1000);
  }

  // Server-Sent Events, with a manual retry if the browser gives up.
  const liveEl = document.getElementById('live');
  const setLive = (on) => { if (liveEl) liveEl.classList.toggle('off', !on); };
  let ended = false;
  function connect() {
    if (!data.events) return;
    const es = new EventSource(data.events);
    const parse = (e) => { try { return JSON.parse(e.data); } catch (err) { return null; } };
    es.addEventListener('open', () => setLive(true));
    es.addEventListener('error', () => {
      setLive(false);
      if (es.readyState === EventSource.CLOSED && !ended) setTimeout(connect, 5000);
    });
    es.addEventListener('job', (e) => onJob(parse(e)));
    es.addEventListener('run', (e) => onRun(parse(e)));
    es.addEventListener('end', () => { ended = true; es.close(); setLive(false); });
  }

  document.body.dataset.runState = data.state || '';
  render();
  ensureTicking();
  connect();
})();
