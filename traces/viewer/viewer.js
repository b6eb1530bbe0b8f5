// trioxide trace viewer: connects to ws://<this host>/ws and draws the trace as a sequence
// diagram on a <canvas>: one lifeline per actor (rows, grouped by the supervision tree), an
// arrow per message (send -> receive), handler slices (receive -> handle), reply arrows back
// to the asker, and marks for admission decisions, failures, drops, timeouts and so on.
//
// Only what is visible is drawn: events are kept in seq order (their time never decreases),
// so the visible window is found by binary search; redraws are batched with
// requestAnimationFrame. Test hooks: window.viewer.{stats, select, eventPosition, ...}.
'use strict';

(() => {
  // -- constants -------------------------------------------------------------------------
  const KINDS = [
    'send', 'receive', 'handle', 'reply', 'admit', 'unhandled', 'drop', 'timeout', 'cancel',
    'fail', 'restart', 'spawn', 'start', 'stop', 'task_start', 'task_end', 'watch_set',
  ];
  const ROW_H = 18;
  const AXIS_H = 28;
  const HIT_PX = 6;
  const ASK_COLORS = [
    '#ffb454', '#7cc4ff', '#b6e36b', '#ff7eb6', '#c9a0ff', '#4fd6be', '#ffd866',
    '#ff9166', '#82aaff', '#e5c07b', '#5ee0ff', '#f78c6c',
  ];
  const TELL_COLOR = '#7d8da3';
  const CANCELLED_COLOR = '#8c8c8c';
  // A finished handler slice's style by its structured outcome (trace field `outcome`).
  const SLICE_STYLE = { ok: 0, error: 1, cancelled: 3 };
  const SEL_COLOR = '#ffffff';
  // Event kinds drawn as marks on the actor's lifeline (send/receive/handle/reply are
  // arrows and slices). shape + color; `major` marks are drawn last and larger.
  const MARKS = {
    spawn: { shape: 'tickUp', color: '#5fb878', label: 'spawn' },
    start: { shape: 'dot', color: '#5fb878', label: 'start' },
    stop: { shape: 'bar', color: '#aab4c0', label: 'stop' },
    fail: { shape: 'circle', color: '#ff4d4f', label: 'fail', major: true },
    restart: { shape: 'diamond', color: '#73d13d', label: 'restart', major: true },
    admit: { shape: 'triDown', color: '#ff7a45', label: 'admit', major: true },
    unhandled: { shape: 'square', color: '#b37feb', label: 'unhandled', major: true },
    drop: { shape: 'cross', color: '#ffa940', label: 'drop', major: true },
    timeout: { shape: 'bowtie', color: '#fadb14', label: 'timeout', major: true },
    cancel: { shape: 'ring', color: '#ff85c0', label: 'cancel', major: true },
    task_start: { shape: 'tickSmall', color: '#36cfc9', label: 'task_start' },
    task_end: { shape: 'tickSmallDown', color: '#36cfc9', label: 'task_end' },
    watch_set: { shape: 'dotSmall', color: '#69b1ff', label: 'watch_set' },
  };
  const ADMIT_COLORS = { ignore: '#8c8c8c', reject: '#ff4d4f', full: '#fa8c16' };
  const KIND_ICONS = {
    send: { shape: 'arrow', color: TELL_COLOR },
    receive: { shape: 'slice', color: '#3ba6c8' },
    handle: { shape: 'sliceEnd', color: '#3ba6c8' },
    reply: { shape: 'dashed', color: '#c9a0ff' },
  };
  const KIND_SET = new Set(KINDS);
  const collator = new Intl.Collator(undefined, { numeric: true });
  const $ = (id) => document.getElementById(id);

  // -- state -----------------------------------------------------------------------------
  const S = {
    // data
    events: [], nodes: new Map(), roots: [], msgs: new Map(), arrows: [], slices: [],
    openSlices: new Set(), maxArrowSpan: 0, maxSliceSpan: 0, types: new Set(), vmms: new Set(),
    unsorted: new Set(), actorCount: 0, header: null, mode: null, total: null, dropped: 0, lineErrors: [],
    connected: false, ended: false, everConnected: false, latency: null,
    // filters and derived
    F: { actor: '', type: '', typeExact: false, vmm: '', search: '', kinds: new Set(KINDS), compact: true },
    fullDirty: true, treeDirty: true, layoutDirty: true, fDone: 0, aDone: 0,
    filtered: 0, fFirst: -1, fLast: -1, arrowCount: 0, rows: [], cutSeq: null,
    listsDirty: true, treeRendered: false, treeRange: null,
    // view
    xmode: 'time', k0: 0, kpp: 1, autoFit: true, follow: true, W: 0, H: 0, dpr: 1,
    sel: null, selChain: new Set(), preferSeq: null, hover: null, hitArrows: [], lastClick: null,
    top: 0, playing: false, drag: null, drawQueued: false, overlayQueued: false,
    lastData: 0, lastDrawAt: 0, lastDrawCost: 0, deferTimer: 0, inputsPending: false,
    // load and render timings (ms, performance.now() clock), see viewer.metrics()
    M: { firstFrameAt: null, endAt: null, drawnAt: null, parseMs: 0, ingestMs: 0, draws: 0, drawMs: 0, lastDraw: null },
  };

  let canvas, ctx, overlay, octx, tree, treeInner, tooltip;

  // -- data ingestion ----------------------------------------------------------------------
  // VMM ids in actor names: runner-<vmm>-g<generation> and propolis-<vmm> (but not the
  // "propolis-host" parent); descendants (monitor, crucible-*) inherit their VMM.
  const VMM_SEG = /^(?:runner-(.+?)(?:-g\d+)?|propolis-(?!host$)(.+))$/;

  function node(path, real) {
    let n = S.nodes.get(path);
    if (n) {
      if (real && !n.real) { n.real = true; S.actorCount++; S.treeDirty = true; }
      return n;
    }
    const cut = path.lastIndexOf('/');
    const parent = cut > 0 ? node(path.slice(0, cut), false) : null;
    const name = cut > 0 ? path.slice(cut + 1) : path;
    const m = VMM_SEG.exec(name);
    n = {
      path, lower: path.toLowerCase(), name, parent, children: [], depth: parent ? parent.depth + 1 : 0,
      real: !!real, first: -1, last: -1, count: 0, stopped: false, collapsed: false,
      row: -1, vrow: -1, hits: 0, sub: 0, amatch: false,
      vmm: m ? (m[1] || m[2]) : (parent ? parent.vmm : null),
    };
    if (n.vmm && !S.vmms.has(n.vmm)) { S.vmms.add(n.vmm); S.listsDirty = true; }
    if (real) S.actorCount++;
    const siblings = parent ? parent.children : S.roots;
    siblings.push(n);
    S.unsorted.add(siblings);
    S.nodes.set(path, n);
    S.treeDirty = true;
    return n;
  }

  function msg(id) {
    let m = S.msgs.get(id);
    if (!m) {
      m = { id, send: null, receive: null, handle: null, slice: null, replies: null, type: null, vmm: null, ps: null };
      S.msgs.set(id, m);
    }
    return m;
  }

  function ingest(ev) {
    if (!KIND_SET.has(ev.kind)) addKind(ev.kind);
    const i = S.events.length;
    ev.i = i;
    ev.f = false;
    S.events.push(ev);
    const a = node(ev.actor, true);
    ev.a = a;
    if (a.first < 0) a.first = i;
    a.last = i;
    a.count++;
    ev.p = ev.peer != null ? node(ev.peer, true) : null;
    ev.m = null;
    switch (ev.kind) {
      case 'send': {
        const m = msg(ev.msg_id);
        m.send = ev;
        ev.m = m;
        m.type = ev.msg_type || m.type;
        const pl = ev.payload;
        if (pl && typeof pl === 'object' && typeof pl.propolis_id === 'string') {
          m.vmm = pl.propolis_id;
          if (!S.vmms.has(m.vmm)) { S.vmms.add(m.vmm); S.listsDirty = true; }
        }
        if (m.receive) addArrow(m);
        break;
      }
      case 'receive': {
        const m = msg(ev.msg_id);
        m.receive = ev;
        ev.m = m;
        if (!m.type) m.type = ev.msg_type || null;
        if (m.send) addArrow(m);
        const s = { r: ev, h: null, m };
        m.slice = s;
        S.slices.push(s);
        S.openSlices.add(s);
        break;
      }
      case 'handle': {
        const m = S.msgs.get(ev.msg_id);
        if (m) {
          m.handle = ev;
          ev.m = m;
          if (m.slice) endSlice(m.slice, ev);
        }
        break;
      }
      case 'cancel': {
        // An ask given up by its caller (the handler, if running, runs on).
        const m = ev.msg_id != null ? msg(ev.msg_id) : (ev.corr != null ? msg(ev.corr) : null);
        ev.m = m;
        break;
      }
      case 'reply': {
        if (ev.corr != null) {
          const m = msg(ev.corr);
          (m.replies || (m.replies = [])).push(ev);
          ev.m = m;
        }
        break;
      }
      case 'stop':
      case 'fail':
        if (ev.kind === 'stop') a.stopped = true;
        // a handler still open on this actor ended with it
        for (const sl of S.openSlices) if (sl.r.a === a) endSlice(sl, ev);
        break;
      default:
        if (ev.msg_id != null) ev.m = msg(ev.msg_id);
        else if (ev.corr != null) ev.m = msg(ev.corr);
    }
    const type = ev.msg_type || (ev.m && ev.m.type);
    if (type && !S.types.has(type)) { S.types.add(type); S.listsDirty = true; }
  }

  function endSlice(sl, ev) {
    if (sl.h) return;
    sl.h = ev;
    S.openSlices.delete(sl);
    const span = ev.i - sl.r.i;
    if (span > S.maxSliceSpan) S.maxSliceSpan = span;
  }

  function addArrow(m) {
    // Arrows are appended when their receive arrives: S.arrows stays sorted by receive index.
    S.arrows.push(m);
    const span = m.receive.i - m.send.i;
    if (span > S.maxArrowSpan) S.maxArrowSpan = span;
  }

  function resetData() {
    Object.assign(S, {
      events: [], nodes: new Map(), roots: [], msgs: new Map(), arrows: [], slices: [],
      openSlices: new Set(), maxArrowSpan: 0, maxSliceSpan: 0, types: new Set(), vmms: new Set(),
      unsorted: new Set(), actorCount: 0, dropped: 0, lineErrors: [], ended: false, total: null,
      sel: null, selChain: new Set(), fullDirty: true, treeDirty: true, autoFit: true, cutSeq: null,
      listsDirty: true,
    });
    renderDetails();
    renderErrors();
  }

  // -- filters -----------------------------------------------------------------------------
  const evType = (ev) => ev.msg_type || (ev.m ? ev.m.type : null);

  function payloadText(ev) {
    if (ev.payload !== undefined) return JSON.stringify(ev.payload);
    const m = ev.m;
    if (!m || !m.send || m.send.payload === undefined) return '';
    if (m.ps === null) m.ps = JSON.stringify(m.send.payload);
    return m.ps;
  }

  function haystack(ev) {
    let h = ev._h;
    if (h === undefined) {
      h = [ev.actor, ev.peer || '', evType(ev) || '', ev.detail || '', payloadText(ev)].join('\n').toLowerCase();
      ev._h = h;
    }
    return h;
  }

  function eventFilterActive() {
    const F = S.F;
    return !!(F.type || F.vmm || F.search || F.kinds.size < KINDS.length);
  }

  function matches(ev) {
    const F = S.F;
    if (!F.kinds.has(ev.kind)) return false;
    if (F.actor && !(ev.a.lower.includes(F.actor) || (ev.p && ev.p.lower.includes(F.actor)))) return false;
    if (F.type) {
      const t = evType(ev);
      if (!t) return false;
      if (F.typeExact ? t !== F.typeRaw : !t.toLowerCase().includes(F.type)) return false;
    }
    if (F.vmm) {
      const q = F.vmm;
      const ok = (ev.a.vmm && ev.a.vmm.toLowerCase().includes(q)) ||
        (ev.p && ev.p.vmm && ev.p.vmm.toLowerCase().includes(q)) ||
        (ev.m && ev.m.vmm && ev.m.vmm.toLowerCase().includes(q));
      if (!ok) return false;
    }
    if (F.search && !haystack(ev).includes(F.search)) return false;
    return true;
  }

  function readFilterInputs() {
    S.inputsPending = false;
    const F = S.F;
    F.actor = $('filter-actor').value.trim().toLowerCase();
    const type = $('filter-type').value.trim();
    F.typeRaw = type;
    F.typeExact = S.types.has(type);
    F.type = type.toLowerCase();
    F.vmm = $('filter-vmm').value.trim().toLowerCase();
    F.search = $('search').value.trim().toLowerCase();
    F.compact = $('compact').checked;
    const kinds = new Set();
    for (const box of $('filter-kinds').querySelectorAll('input[type=checkbox]')) {
      if (box.checked) kinds.add(box.value);
    }
    F.kinds = kinds;
    S.fullDirty = true;
    schedule();
  }

  function cutLimit() {
    // Number of events "visible" under the scrubber (index limit, exclusive).
    if (S.cutSeq === null) return S.events.length;
    return upperBoundSeq(S.cutSeq);
  }

  // Bring ev.f, hit counts, rows and arrow counts up to date (incrementally when only new
  // events arrived; from scratch when a filter, the cutoff or the tree changed).
  function refilter() {
    const evs = S.events;
    const lim = cutLimit();
    if (S.fullDirty || lim < S.fDone) {
      for (const n of S.nodes.values()) n.hits = 0;
      S.fDone = 0;
      S.aDone = 0;
      S.filtered = 0;
      S.fFirst = -1;
      S.fLast = -1;
      S.arrowCount = 0;
      S.layoutDirty = true;
      S.fullDirty = false;
    }
    const compact = S.F.compact && eventFilterActive();
    for (let i = S.fDone; i < lim; i++) {
      const ev = evs[i];
      const f = matches(ev);
      ev.f = f;
      if (f) {
        S.filtered++;
        if (S.fFirst < 0) S.fFirst = i;
        S.fLast = i;
        if (ev.a.hits++ === 0 && compact) S.layoutDirty = true;
        if (ev.p && (ev.kind === 'send' || ev.kind === 'reply') && ev.p.hits++ === 0 && compact) S.layoutDirty = true;
      }
    }
    S.fDone = lim;
    if (S.treeDirty) { S.layoutDirty = true; }
    if (S.layoutDirty) layout();
    const arrows = S.arrows;
    let j = S.aDone;
    for (; j < arrows.length; j++) {
      const m = arrows[j];
      if (m.receive.i >= lim) break;
      const s = m.send;
      if (s.f && (s.a.vrow >= 0 || (s.p && s.p.vrow >= 0))) S.arrowCount++;
    }
    S.aDone = j;
  }

  // -- tree layout -------------------------------------------------------------------------
  function layout() {
    const F = S.F;
    const compact = F.compact && eventFilterActive();
    for (const list of S.unsorted) list.sort((a, b) => collator.compare(a.name, b.name));
    S.unsorted.clear();
    // post-order: subtree hit counts and subtree actor-filter matches
    const post = (n) => {
      let sub = n.hits;
      let am = !F.actor || n.lower.includes(F.actor);
      for (const c of n.children) {
        post(c);
        sub += c.sub;
        am = am || c.amatch;
      }
      n.sub = sub;
      n.amatch = am;
    };
    for (const r of S.roots) post(r);
    const rows = [];
    const visit = (n, hidden, drawRow) => {
      let show = false;
      if (!hidden) {
        const own = !F.actor || n.lower.includes(F.actor);
        if (n.collapsed) show = n.amatch && (!compact || n.sub > 0);
        else show = own && (!compact || n.hits > 0);
      }
      if (show) {
        n.row = rows.length;
        n.vrow = n.row;
        rows.push(n);
      } else {
        n.row = -1;
        n.vrow = hidden ? drawRow : -1;
      }
      const childHidden = hidden || n.collapsed;
      const childRow = hidden ? drawRow : (n.collapsed ? n.row : -1);
      for (const c of n.children) visit(c, childHidden, childRow);
    };
    for (const r of S.roots) visit(r, false, -1);
    S.rows = rows;
    S.treeDirty = false;
    S.layoutDirty = false;
    treeInner.style.height = `${rows.length * ROW_H}px`;
    $('tree-count').textContent = `${rows.length} / ${S.actorCount}`;
    S.treeRendered = false;
  }

  // -- geometry ----------------------------------------------------------------------------
  const keyOf = (ev) => (S.xmode === 'time' ? ev.t : ev.i);
  const xOfKey = (k) => (k - S.k0) / S.kpp;
  const xOf = (ev) => (keyOf(ev) - S.k0) / S.kpp;
  const keyAtX = (x) => S.k0 + x * S.kpp;
  // The vertical scroll offset, read from the DOM once per frame / event (S.top).
  const rowTop = () => S.top;
  const syncTop = () => { S.top = tree.scrollTop; };
  const yOfRow = (r) => (r < 0 ? null : AXIS_H + r * ROW_H - rowTop() + ROW_H / 2);

  function lowerBoundKey(k) { // first index with key >= k
    const evs = S.events;
    let lo = 0;
    let hi = evs.length;
    if (S.xmode === 'seq') return Math.max(0, Math.min(hi, Math.ceil(k)));
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (evs[mid].t < k) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function upperBoundKey(k) { // first index with key > k
    const evs = S.events;
    let lo = 0;
    let hi = evs.length;
    if (S.xmode === 'seq') return Math.max(0, Math.min(hi, Math.floor(k) + 1));
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (evs[mid].t <= k) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function upperBoundSeq(seq) { // number of events with seq <= seq
    const evs = S.events;
    let lo = 0;
    let hi = evs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (evs[mid].seq <= seq) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function eventBySeq(seq) {
    const i = upperBoundSeq(seq) - 1;
    return i >= 0 && S.events[i].seq === seq ? S.events[i] : null;
  }

  function lowerBoundSlices(idx) {
    const a = S.slices;
    let lo = 0;
    let hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid].r.i < idx) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function lowerBoundArrows(idx) {
    const a = S.arrows;
    let lo = 0;
    let hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid].receive.i < idx) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  // The row an event is drawn on: a send sits at its sender (the arrow's tail) when the
  // sender is shown, else on the receiver's row; everything else on its actor's row.
  function rowOfEvent(ev) {
    if (ev.kind === 'send' && ev.p && ev.p.vrow >= 0) return ev.p.vrow;
    return ev.a.vrow;
  }

  function keyRange() {
    const evs = S.events;
    if (!evs.length) return [0, 1];
    const last = evs[Math.max(0, cutLimit() - 1)] || evs[evs.length - 1];
    if (S.xmode === 'seq') return [0, Math.max(1, last.i)];
    const a = evs[0].t;
    const b = last.t;
    return [a, b > a ? b : a + 1];
  }

  // What "fit" shows: the events that pass the filters (all events when none is set).
  function fitRange() {
    const F = S.F;
    const filtering = F.actor || eventFilterActive();
    if (!filtering || S.fFirst < 0) return keyRange();
    const a = keyOf(S.events[S.fFirst]);
    const b = keyOf(S.events[S.fLast]);
    return [a, b > a ? b : a + (S.xmode === 'seq' ? 10 : 1)];
  }

  function fit(redraw = true) {
    refilter();
    const [a, b] = fitRange();
    const w = Math.max(50, S.W - 20);
    S.kpp = ((b - a) * 1.04) / w || 1;
    S.k0 = a - (b - a) * 0.02;
    clampZoom();
    if (redraw) schedule();
  }

  function clampZoom() {
    const [a, b] = keyRange();
    const minKpp = S.xmode === 'seq' ? 1 / 60 : 1e-7;
    const maxKpp = Math.max(minKpp, ((b - a) * 4) / Math.max(50, S.W));
    S.kpp = Math.min(maxKpp, Math.max(minKpp, S.kpp));
  }

  function zoomAt(x, factor) {
    const k = keyAtX(x);
    S.kpp *= factor;
    clampZoom();
    S.k0 = k - x * S.kpp;
    S.autoFit = false;
    // Zooming in away from the newest event stops following (else the view would jump).
    const lim = cutLimit();
    if (S.follow && lim) {
      const xl = xOf(S.events[lim - 1]);
      if (xl < 0 || xl > S.W) setFollow(false);
    }
    schedule();
  }

  function followEnd() {
    const lim = cutLimit();
    if (!lim) return;
    if (S.autoFit) { fit(false); return; }
    const last = S.events[lim - 1];
    const k = keyOf(last);
    const right = S.k0 + S.W * S.kpp;
    if (k > right - S.W * S.kpp * 0.03 || k < S.k0) S.k0 = k - S.W * S.kpp * 0.9;
  }

  // Keep some of the data on screen however far the user pans.
  function clampPan() {
    if (!S.events.length) return;
    const [a, b] = keyRange();
    const w = S.W * S.kpp;
    S.k0 = Math.min(b - w * 0.1, Math.max(a - w * 0.9, S.k0));
  }

  function setFollow(on) {
    S.follow = on;
    $('follow').checked = on;
    if (on) { followEnd(); schedule(); }
  }

  // -- drawing -----------------------------------------------------------------------------
  function schedule() {
    if (!S.drawQueued) {
      S.drawQueued = true;
      requestAnimationFrame(frame);
    }
  }

  function scheduleOverlay() {
    if (!S.overlayQueued && !S.drawQueued) {
      S.overlayQueued = true;
      requestAnimationFrame(() => { S.overlayQueued = false; drawOverlay(); });
    }
  }

  function frame() {
    S.drawQueued = false;
    const t0 = performance.now();
    // While a trace streams in, draw at most every few frames (proportionally to what a
    // draw costs) so that the socket's messages are not starved by rendering.
    // A replay that is still loading is drawn about once a second; live data more often.
    const loading = S.connected && S.total !== null && S.events.length < S.total;
    const streaming = loading || (!S.ended && t0 - S.lastData < 200);
    const gap = loading ? Math.max(1500, 10 * S.lastDrawCost) : Math.max(150, 4 * S.lastDrawCost);
    if (streaming && t0 - S.lastDrawAt < gap) {
      if (!S.deferTimer) {
        S.deferTimer = setTimeout(() => { S.deferTimer = 0; schedule(); }, Math.max(100, S.lastDrawCost));
      }
      renderStatus();
      return;
    }
    if (S.playing) stepPlay();
    refilter();
    if (S.autoFit) fit(false); // until the user zooms or pans, show everything that matches
    else if (S.follow) followEnd();
    clampPan();
    updateLists();
    renderTree();
    draw();
    drawOverlay();
    renderStatus();
    updateScrubber();
    const t1 = performance.now();
    const M = S.M;
    S.lastDrawAt = t1;
    S.lastDrawCost = t1 - t0;
    M.draws++;
    M.drawMs += t1 - t0;
    if (S.ended && M.endAt !== null && M.drawnAt === null) M.drawnAt = t1;
    if (S.playing) schedule();
  }

  function resize() {
    const chart = $('chart');
    const dpr = window.devicePixelRatio || 1;
    const W = chart.clientWidth;
    const H = chart.clientHeight;
    if (W === S.W && H === S.H && dpr === S.dpr) return;
    const oldW = S.W;
    S.W = W; S.H = H; S.dpr = dpr;
    for (const c of [canvas, overlay]) {
      c.width = Math.max(1, Math.round(W * dpr));
      c.height = Math.max(1, Math.round(H * dpr));
      c.style.width = `${W}px`;
      c.style.height = `${H}px`;
    }
    if (S.autoFit || !oldW) fit();
    S.treeRendered = false;
    schedule();
  }

  function glyph(c, shape, x, y, color, big) {
    const r = big ? 5 : 4;
    c.fillStyle = color;
    c.strokeStyle = color;
    c.lineWidth = 1.5;
    switch (shape) {
      case 'circle': c.beginPath(); c.arc(x, y, r, 0, 6.2832); c.fill(); break;
      case 'ring': c.beginPath(); c.arc(x, y, r, 0, 6.2832); c.stroke(); c.beginPath(); c.moveTo(x - r * 0.7, y + r * 0.7); c.lineTo(x + r * 0.7, y - r * 0.7); c.stroke(); break;
      case 'dot': c.beginPath(); c.arc(x, y, 2.5, 0, 6.2832); c.fill(); break;
      case 'dotSmall': c.fillRect(x - 1.5, y - 1.5, 3, 3); break;
      case 'square': c.fillRect(x - r, y - r, 2 * r, 2 * r); break;
      case 'diamond': c.beginPath(); c.moveTo(x, y - r - 1); c.lineTo(x + r + 1, y); c.lineTo(x, y + r + 1); c.lineTo(x - r - 1, y); c.closePath(); c.fill(); break;
      case 'triDown': c.beginPath(); c.moveTo(x - r, y - r); c.lineTo(x + r, y - r); c.lineTo(x, y + r); c.closePath(); c.fill(); break;
      case 'bowtie': c.beginPath(); c.moveTo(x - r, y - r); c.lineTo(x + r, y - r); c.lineTo(x - r, y + r); c.lineTo(x + r, y + r); c.closePath(); c.fill(); break;
      case 'cross': c.beginPath(); c.moveTo(x - r, y - r); c.lineTo(x + r, y + r); c.moveTo(x + r, y - r); c.lineTo(x - r, y + r); c.lineWidth = 2; c.stroke(); break;
      case 'bar': c.fillRect(x - 1.5, y - 7, 3, 14); break;
      case 'tickUp': c.beginPath(); c.moveTo(x, y - 7); c.lineTo(x + 4, y - 3); c.lineTo(x - 4, y - 3); c.closePath(); c.fill(); c.fillRect(x - 0.75, y - 4, 1.5, 4); break;
      case 'tickSmall': c.fillRect(x - 0.75, y - 6, 1.5, 6); break;
      case 'tickSmallDown': c.fillRect(x - 0.75, y, 1.5, 6); break;
      case 'arrow': c.beginPath(); c.moveTo(x - 6, y + 3); c.lineTo(x + 4, y - 2); c.stroke(); arrowHead(c, x - 6, y + 3, x + 5, y - 2.5, 4); c.fill(); break;
      case 'dashed': c.setLineDash([3, 2]); c.beginPath(); c.moveTo(x + 6, y); c.lineTo(x - 4, y); c.stroke(); c.setLineDash([]); arrowHead(c, x + 6, y, x - 6, y, 4); c.fill(); break;
      case 'slice': c.globalAlpha = 0.75; c.fillRect(x - 6, y - 4, 12, 8); c.globalAlpha = 1; break;
      case 'sliceEnd': c.globalAlpha = 0.75; c.fillRect(x - 6, y - 4, 9, 8); c.globalAlpha = 1; c.fillRect(x + 3, y - 5, 2, 10); break;
      case 'stub': c.beginPath(); c.moveTo(x - 7, y - 5); c.lineTo(x - 2, y); c.lineTo(x + 6, y); c.stroke(); arrowHead(c, x - 2, y, x + 7, y, 4); c.fill(); break;
      case 'pending': c.setLineDash([2, 2]); c.beginPath(); c.moveTo(x - 6, y); c.lineTo(x + 4, y + 4); c.stroke(); c.setLineDash([]); break;
      default: c.fillRect(x - 2, y - 2, 4, 4);
    }
  }

  // Adds an arrow head at (x2, y2) pointing from (x1, y1) to the current path.
  function arrowHead(c, x1, y1, x2, y2, size) {
    const ang = Math.atan2(y2 - y1, x2 - x1);
    c.beginPath();
    c.moveTo(x2, y2);
    c.lineTo(x2 - size * Math.cos(ang - 0.45), y2 - size * Math.sin(ang - 0.45));
    c.lineTo(x2 - size * Math.cos(ang + 0.45), y2 - size * Math.sin(ang + 0.45));
    c.closePath();
  }

  function pathArrowHead(p, x1, y1, x2, y2, size) {
    const ang = Math.atan2(y2 - y1, x2 - x1);
    p.moveTo(x2, y2);
    p.lineTo(x2 - size * Math.cos(ang - 0.45), y2 - size * Math.sin(ang - 0.45));
    p.lineTo(x2 - size * Math.cos(ang + 0.45), y2 - size * Math.sin(ang + 0.45));
    p.closePath();
  }

  const askColor = (corr) => ASK_COLORS[((corr * 2654435761) >>> 0) % ASK_COLORS.length];

  function markStyle(ev) {
    const mk = MARKS[ev.kind];
    if (!mk) return null;
    if (ev.kind === 'admit') {
      const d = ev.detail || '';
      const color = d.startsWith('ignore') ? ADMIT_COLORS.ignore : d.startsWith('full') ? ADMIT_COLORS.full : ADMIT_COLORS.reject;
      return { shape: mk.shape, color, major: !d.startsWith('ignore') };
    }
    return mk;
  }

  // Geometry of a message arrow: [x1, y1, x2, y2, kind] or null when neither end is shown.
  // kind: 0 = sender to receiver, 1 = from outside (stub entering the receiver row),
  // 2 = receiver not shown (stub leaving the sender row), 3 = same row (arc).
  function arrowGeom(m) {
    const s = m.send;
    const r = m.receive;
    const yr = yOfRow(s.a.vrow);
    const ys = s.p ? yOfRow(s.p.vrow) : null;
    const xs = xOf(s);
    const xr = xOf(r);
    if (yr === null && ys === null) return null;
    if (ys === null) return [xs, yr, xr, yr, 1];
    if (yr === null) return [xs, ys, xs + 12, ys + 7, 2];
    if (ys === yr) return [xs, ys, xr, yr, 3];
    return [xs, ys, xr, yr, 0];
  }

  function draw() {
    const c = ctx;
    const W = S.W;
    const H = S.H;
    c.setTransform(S.dpr, 0, 0, S.dpr, 0, 0);
    c.fillStyle = '#13161b';
    c.fillRect(0, 0, W, H);
    const evs = S.events;
    const rows = S.rows;
    syncTop();
    const top = rowTop();
    const r0 = Math.max(0, Math.floor(top / ROW_H));
    const r1 = Math.min(rows.length, Math.ceil((top + H - AXIS_H) / ROW_H) + 1);
    const lim = cutLimit();
    const lastIdx = lim - 1;
    S.hitArrows = [];

    c.save();
    c.beginPath();
    c.rect(0, AXIS_H, W, H - AXIS_H);
    c.clip();

    // rows: zebra, selection, lifelines (from first event to stop, or to the newest event)
    const selRow = S.sel ? rowOfEvent(S.sel) : -1;
    const xEnd = lastIdx >= 0 ? xOf(evs[lastIdx]) : 0;
    for (let r = r0; r < r1; r++) {
      const y = AXIS_H + r * ROW_H - top;
      if (r === selRow) { c.fillStyle = 'rgba(255,180,84,0.10)'; c.fillRect(0, y, W, ROW_H); }
      else if (r % 2) { c.fillStyle = 'rgba(255,255,255,0.025)'; c.fillRect(0, y, W, ROW_H); }
      const n = rows[r];
      if (n.first >= 0 && n.first < lim) {
        const xa = Math.max(-2, xOf(evs[n.first]));
        const xb = Math.min(W + 2, n.stopped && n.last < lim ? xOf(evs[n.last]) : xEnd);
        if (xb >= 0 && xa <= W) {
          c.fillStyle = n.collapsed ? '#4a5361' : '#333a45';
          c.fillRect(xa, y + ROW_H / 2 - (n.collapsed ? 1 : 0.5), Math.max(1, xb - xa), n.collapsed ? 2 : 1);
        }
      }
    }

    if (lim > 0) {
      const kL = keyAtX(-HIT_PX);
      const kR = keyAtX(W + HIT_PX);
      const lo = lowerBoundKey(kL);
      const hi = Math.min(lim, upperBoundKey(kR));
      const q0 = performance.now();
      drawSlices(c, lo, hi, lim, lastIdx, W, H);
      const q1 = performance.now();
      drawArrows(c, lo, hi, lim, W, H);
      const q2 = performance.now();
      drawPointEvents(c, lo, hi, lim, W, H);
      const q3 = performance.now();
      drawSelection(c, lim);
      S.M.lastDraw = { slicesMs: q1 - q0, arrowsMs: q2 - q1, pointsMs: q3 - q2, eventsInView: hi - lo };
    }
    c.restore();
    drawAxis(c, W);
  }

  // Pixel key of a segment for de-duplication when zoomed out (null: do not de-duplicate).
  function segKey(x1, y1, x2, y2) {
    const a = Math.round(x1) + 1024;
    const b = Math.round(y1) + 1024;
    const c = Math.round(x2) + 1024;
    const d = Math.round(y2) + 1024;
    if (a < 0 || b < 0 || c < 0 || d < 0 || a > 8191 || b > 8191 || c > 8191 || d > 8191) return null;
    return ((a * 8192 + b) * 8192 + c) * 8192 + d;
  }

  function drawSlices(c, lo, hi, lim, lastIdx, W, H) {
    const evs = S.events;
    // By the handler's outcome: ok, error, still running, cancelled.
    const paths = [new Path2D(), new Path2D(), new Path2D(), new Path2D()];
    // Slices of one row are merged while they overlap on screen (zoomed out, thousands of
    // slices collapse into a few rectangles).
    const cur = new Map(); // row * 4 + style -> [x1, x2, y]
    const flush = (key, st) => paths[key % 4].rect(st[0], st[2] - 4, Math.max(2, st[1] - st[0]), 8);
    const xEnd = lastIdx >= 0 ? xOf(evs[lastIdx]) : 0;
    const add = (s) => {
      const r = s.r;
      if (!r.f || r.i >= lim) return;
      const row = r.a.vrow;
      const y = yOfRow(row);
      if (y === null || y < AXIS_H - ROW_H || y > H + ROW_H) return;
      const done = s.h && s.h.i < lim;
      const x1 = xOf(r);
      const x2 = done ? xOf(s.h) : xEnd;
      if (x2 < -2 || x1 > W + 2) return;
      const xa = Math.max(-2, x1);
      const xb = Math.max(xa + 2, Math.min(W + 2, x2));
      const style = !done ? 2 : (SLICE_STYLE[s.h.outcome] || 0);
      const key = row * 4 + style;
      const st = cur.get(key);
      if (st && xa <= st[1] + 1) {
        if (xb > st[1]) st[1] = xb;
      } else {
        if (st) flush(key, st);
        cur.set(key, [xa, xb, y]);
      }
    };
    const from = lowerBoundSlices(lo - S.maxSliceSpan);
    const sl = S.slices;
    for (let j = from; j < sl.length && sl[j].r.i < hi; j++) {
      const s = sl[j];
      if (!s.h || s.h.i < lo) continue; // open slices below
      add(s);
    }
    for (const s of S.openSlices) add(s);
    if (!cur.size) return;
    for (const [key, st] of cur) flush(key, st);
    c.globalAlpha = 0.8;
    c.fillStyle = '#2f8fb0';
    c.fill(paths[0]);
    c.fillStyle = '#d9434b';
    c.fill(paths[1]);
    c.fillStyle = '#c9a227';
    c.fill(paths[2]);
    c.fillStyle = CANCELLED_COLOR;
    c.fill(paths[3]);
    c.globalAlpha = 1;
  }

  function drawArrows(c, lo, hi, lim, W, H) {
    const arrows = S.arrows;
    const paths = new Map(); // color -> [linePath, headPath]
    const get = (color) => {
      let p = paths.get(color);
      if (!p) { p = [new Path2D(), new Path2D()]; paths.set(color, p); }
      return p;
    };
    const from = lowerBoundArrows(lo);
    const end = hi + S.maxArrowSpan;
    const seen = new Set();
    let drawn = 0;
    const heads = [];
    for (let j = from; j < arrows.length; j++) {
      const m = arrows[j];
      const ri = m.receive.i;
      if (ri >= end || ri >= lim) break;
      const s = m.send;
      if (s.i >= hi || !s.f) continue;
      const g = arrowGeom(m);
      if (!g) continue;
      const [x1, y1, x2, y2, kind] = g;
      if (Math.max(x1, x2) < -10 || Math.min(x1, x2) > W + 10) continue;
      if (Math.max(y1, y2) < AXIS_H - 8 || Math.min(y1, y2) > H + 8) continue;
      const key = segKey(x1, y1, x2, y2);
      if (key !== null) {
        if (seen.has(key)) continue;
        seen.add(key);
      }
      const color = s.corr != null ? askColor(s.corr) : TELL_COLOR;
      const [p, hp] = get(color);
      if (kind === 1) {
        p.moveTo(x1 - 10, y1 - 7);
        p.lineTo(x1, y1);
        p.lineTo(x2, y2);
        heads.push([hp, Math.min(x1, x2 - 6), y2, x2, y2]);
      } else if (kind === 2) {
        p.moveTo(x1, y1);
        p.lineTo(x2, y2);
        heads.push([hp, x1, y1, x2, y2]);
      } else if (kind === 3) {
        const span = x2 - x1;
        const lift = Math.min(ROW_H * 0.8, 5 + span * 0.15);
        if (span < 3) {
          p.moveTo(x1, y1);
          p.bezierCurveTo(x1 - 8, y1 - lift - 4, x2 + 8, y2 - lift - 4, x2, y2);
          heads.push([hp, x2 + 4, y2 - 6, x2, y2]);
        } else {
          p.moveTo(x1, y1);
          p.quadraticCurveTo((x1 + x2) / 2, y1 - lift * 2, x2, y2);
          heads.push([hp, (x1 + x2) / 2, y1 - lift, x2, y2]);
        }
      } else {
        p.moveTo(x1, y1);
        p.lineTo(x2, y2);
        heads.push([hp, x1, y1, x2, y2]);
      }
      S.hitArrows.push(x1, y1, x2, y2, j);
      drawn++;
    }
    const showHeads = drawn < 4000;
    if (showHeads) for (const [hp, x1, y1, x2, y2] of heads) pathArrowHead(hp, x1, y1, x2, y2, 5);
    c.lineWidth = 1;
    for (const [color, [p, hp]] of paths) {
      c.strokeStyle = color;
      c.globalAlpha = color === TELL_COLOR ? 0.75 : 0.9;
      c.stroke(p);
      if (showHeads) { c.fillStyle = color; c.fill(hp); }
    }
    c.globalAlpha = 1;
  }

  function drawPointEvents(c, lo, hi, lim, W, H) {
    const evs = S.events;
    const nk = KINDS.length;
    const time = S.xmode === 'time';
    const k0 = S.k0;
    const kpp = S.kpp;
    const seen = new Set(); // (row, kind, pixel) already drawn: no overdraw when zoomed out
    const major = [];
    const replies = new Map(); // color -> [dashed Path2D, heads Path2D]
    const pending = new Path2D();
    let anyPending = false;
    for (let i = lo; i < hi; i++) {
      const ev = evs[i];
      if (!ev.f) continue;
      const kind = ev.kind;
      const x = ((time ? ev.t : i) - k0) / kpp;
      if (kind === 'send') {
        const m = ev.m;
        if (m.receive && m.receive.i < lim) continue;
        const row = rowOfEvent(ev);
        const y = yOfRow(row);
        if (y === null || y < AXIS_H - 8 || y > H + 8) continue;
        const dy = ev.p && ev.p.vrow >= 0 && ev.a.vrow >= 0 && ev.p.vrow !== ev.a.vrow ? (ev.a.vrow > ev.p.vrow ? 6 : -6) : 0;
        const key = segKey(x, y, x + 14, y + dy);
        if (key !== null) { if (seen.has(key)) continue; seen.add(key); }
        pending.moveTo(x, y);
        pending.lineTo(x + 14, y + dy);
        anyPending = true;
        continue;
      }
      if (kind === 'reply') {
        const y1 = yOfRow(ev.a.vrow);
        const y2 = ev.p ? yOfRow(ev.p.vrow) : null;
        if (y1 === null && y2 === null) continue;
        const key = segKey(x, y1 === null ? -1000 : y1, 0, y2 === null ? -1000 : y2);
        if (key !== null) { if (seen.has(key)) continue; seen.add(key); }
        const color = ev.corr != null ? askColor(ev.corr) : TELL_COLOR;
        let pr = replies.get(color);
        if (!pr) { pr = [new Path2D(), new Path2D()]; replies.set(color, pr); }
        const [p, hp] = pr;
        if (y1 !== null && y2 !== null && y1 !== y2) {
          if (Math.max(y1, y2) < AXIS_H || Math.min(y1, y2) > H) continue;
          p.moveTo(x, y1);
          p.lineTo(x + 3, y2);
          pathArrowHead(hp, x, y1, x + 3, y2, 5);
        } else if (y1 !== null && y2 === y1) {
          if (y1 < AXIS_H - 8 || y1 > H + 8) continue;
          p.moveTo(x, y1);
          p.quadraticCurveTo(x + 6, y1 + 12, x - 2, y1 + 3);
          pathArrowHead(hp, x + 4, y1 + 8, x - 2, y1 + 3, 4);
        } else if (y1 !== null) { // asker outside the actors (or not shown): stub back out
          if (y1 < AXIS_H - 8 || y1 > H + 8) continue;
          p.moveTo(x, y1);
          p.lineTo(x - 10, y1 + 7);
          pathArrowHead(hp, x, y1, x - 10, y1 + 7, 4);
        } else { // replier not shown: stub into the asker's row
          if (y2 < AXIS_H - 8 || y2 > H + 8) continue;
          p.moveTo(x - 10, y2 - 7);
          p.lineTo(x, y2);
          pathArrowHead(hp, x - 10, y2 - 7, x, y2, 4);
        }
        continue;
      }
      const st = markStyle(ev);
      if (!st) continue;
      const row = ev.a.vrow;
      if (row < 0) continue;
      const y = yOfRow(row);
      if (y < AXIS_H - 8 || y > H + 8) continue;
      const key = (row * nk + KINDS.indexOf(kind)) * 16384 + Math.round(x) + 4096;
      if (seen.has(key)) continue;
      seen.add(key);
      if (st.major) major.push([st, x, y]);
      else glyph(c, st.shape, x, y, st.color, false);
    }
    c.lineWidth = 1;
    c.setLineDash([4, 3]);
    for (const [color, [p]] of replies) {
      c.strokeStyle = color;
      c.stroke(p);
    }
    c.setLineDash([]);
    for (const [color, [, hp]] of replies) { c.fillStyle = color; c.fill(hp); }
    if (anyPending) {
      c.setLineDash([2, 2]);
      c.strokeStyle = '#c9a227';
      c.stroke(pending);
      c.setLineDash([]);
    }
    for (const [st, x, y] of major) glyph(c, st.shape, x, y, st.color, true);
  }

  function drawSelection(c, lim) {
    const ev = S.sel;
    if (!ev || ev.i >= lim) return;
    const m = ev.m;
    c.lineWidth = 2.5;
    c.strokeStyle = SEL_COLOR;
    const strokeArrow = (mm, width, color) => {
      if (!mm || !mm.send || !mm.receive || mm.receive.i >= lim) return;
      const g = arrowGeom(mm);
      if (!g) return;
      const [x1, y1, x2, y2, kind] = g;
      c.lineWidth = width;
      c.strokeStyle = color;
      c.beginPath();
      if (kind === 1) { c.moveTo(x1 - 10, y1 - 7); c.lineTo(x1, y1); c.lineTo(x2, y2); }
      else if (kind === 3) { c.moveTo(x1, y1); c.quadraticCurveTo((x1 + x2) / 2, y1 - ROW_H, x2, y2); }
      else { c.moveTo(x1, y1); c.lineTo(x2, y2); }
      c.stroke();
    };
    for (const id of S.selChain) strokeArrow(S.msgs.get(id), 1.5, 'rgba(255,180,84,0.8)');
    if (m) {
      strokeArrow(m, 2.5, SEL_COLOR);
      const s = m.slice;
      if (s && s.r.i < lim) {
        const y = yOfRow(s.r.a.vrow);
        if (y !== null) {
          const x1 = xOf(s.r);
          const x2 = s.h && s.h.i < lim ? xOf(s.h) : xOf(S.events[lim - 1]);
          c.lineWidth = 1.5;
          c.strokeStyle = SEL_COLOR;
          c.strokeRect(x1 - 1, y - 5, Math.max(2, x2 - x1) + 2, 10);
        }
      }
    }
    const y = yOfRow(rowOfEvent(ev));
    if (y !== null) {
      const x = xOf(ev);
      c.lineWidth = 2;
      c.strokeStyle = SEL_COLOR;
      c.beginPath();
      c.arc(x, y, 7, 0, 6.2832);
      c.stroke();
    }
  }

  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }

  function fmtTime(v, step) {
    const dec = Math.max(0, Math.min(9, -Math.floor(Math.log10(step) + 1e-9)));
    return `${v.toFixed(dec)} s`;
  }

  function drawAxis(c, W) {
    c.fillStyle = '#1a1e25';
    c.fillRect(0, 0, W, AXIS_H);
    c.fillStyle = '#2c323c';
    c.fillRect(0, AXIS_H - 1, W, 1);
    if (!S.events.length) return;
    c.font = '11px system-ui, sans-serif';
    c.textBaseline = 'top';
    const step = niceStep(S.kpp * 110);
    const kL = keyAtX(0);
    const kR = keyAtX(W);
    const first = Math.ceil(kL / step) * step;
    c.fillStyle = '#8a95a3';
    c.strokeStyle = '#3a424e';
    c.lineWidth = 1;
    for (let k = first, n = 0; k <= kR && n < 200; k += step, n++) {
      const x = Math.round(xOfKey(k)) + 0.5;
      c.beginPath();
      c.moveTo(x, AXIS_H - 7);
      c.lineTo(x, AXIS_H - 1);
      c.stroke();
      let label;
      if (S.xmode === 'time') label = fmtTime(k, step);
      else {
        const ev = S.events[Math.min(S.events.length - 1, Math.max(0, Math.round(k)))];
        label = ev ? `#${ev.seq}  ${fmtTime(ev.t, 0.001)}` : '';
      }
      c.fillText(label, x + 3, 5);
    }
  }

  function drawOverlay() {
    const h = S.hover;
    if (!h && !S.overlayUsed) return; // nothing drawn, nothing to draw: keep the canvas
    syncTop();
    const c = octx;
    c.setTransform(S.dpr, 0, 0, S.dpr, 0, 0);
    c.clearRect(0, 0, S.W, S.H);
    S.overlayUsed = false;
    if (!h || !S.events.length) { tooltip.hidden = true; return; }
    S.overlayUsed = true;
    const x = h.x;
    c.strokeStyle = 'rgba(255,255,255,0.25)';
    c.lineWidth = 1;
    c.beginPath();
    c.moveTo(Math.round(x) + 0.5, AXIS_H);
    c.lineTo(Math.round(x) + 0.5, S.H);
    c.stroke();
    // seq and time at the cursor: the event nearest to the cursor's key
    const lim = cutLimit();
    const k = keyAtX(x);
    let i = Math.min(lim - 1, lowerBoundKey(k));
    if (i > 0 && Math.abs(keyOf(S.events[i - 1]) - k) <= Math.abs(keyOf(S.events[i]) - k)) i--;
    const near = i >= 0 ? S.events[i] : null;
    const tAt = S.xmode === 'time' ? k : (near ? near.t : 0);
    const label = `t=${tAt.toFixed(S.kpp < 0.001 ? 6 : 3)} s${near ? `  seq ${near.seq}` : ''}`;
    c.font = '11px system-ui, sans-serif';
    const w = c.measureText(label).width + 10;
    const lx = Math.min(S.W - w - 2, Math.max(2, x + 6));
    c.fillStyle = 'rgba(255,180,84,0.95)';
    c.fillRect(lx, 4, w, 18);
    c.fillStyle = '#13161b';
    c.textBaseline = 'middle';
    c.fillText(label, lx + 5, 13);
    const hit = h.hit;
    if (hit) {
      const y = yOfRow(rowOfEvent(hit));
      if (y !== null) {
        c.strokeStyle = '#ffb454';
        c.lineWidth = 1.5;
        c.beginPath();
        c.arc(xOf(hit), y, 6, 0, 6.2832);
        c.stroke();
      }
      tooltip.hidden = false;
      tooltip.textContent = summary(hit);
      const tx = Math.min(S.W - 300, h.x + 14);
      tooltip.style.left = `${Math.max(0, tx)}px`;
      tooltip.style.top = `${Math.min(S.H - 60, h.y + 14)}px`;
    } else {
      tooltip.hidden = true;
    }
  }

  function summary(ev) {
    const type = evType(ev);
    const parts = [`seq ${ev.seq}  t=${ev.t}  ${ev.kind}${type ? ` ${type}` : ''}`, ev.actor];
    if (ev.peer) parts.push(`peer ${ev.peer}`);
    if (ev.detail) parts.push(ev.detail.length > 200 ? `${ev.detail.slice(0, 200)}…` : ev.detail);
    return parts.join('\n');
  }

  // -- hit testing -------------------------------------------------------------------------
  function hitCandidates(x, y) {
    syncTop();
    if (y < AXIS_H) return [];
    const row = Math.floor((y - AXIS_H + rowTop()) / ROW_H);
    if (row < 0 || row >= S.rows.length) return [];
    const lim = cutLimit();
    const lo = lowerBoundKey(keyAtX(x - HIT_PX));
    const hi = Math.min(lim, upperBoundKey(keyAtX(x + HIT_PX)));
    const out = [];
    const evs = S.events;
    for (let i = lo; i < hi && out.length < 5000; i++) {
      const ev = evs[i];
      if (!ev.f || rowOfEvent(ev) !== row) continue;
      out.push([Math.abs(xOf(ev) - x), ev]);
    }
    return out;
  }

  function hitTest(x, y, cycle) {
    syncTop();
    const cand = hitCandidates(x, y);
    if (cand.length) {
      const best = Math.min(...cand.map((c) => c[0]));
      const ties = cand.filter((c) => c[0] <= best + 0.5).map((c) => c[1]);
      if (S.preferSeq !== null) {
        const p = ties.find((e) => e.seq === S.preferSeq);
        if (p) return p;
      }
      const rank = (e) => (markStyle(e) && markStyle(e).major ? 0 : e.kind === 'send' || e.kind === 'receive' ? 1 : 2);
      ties.sort((a, b) => rank(a) - rank(b) || a.seq - b.seq);
      if (cycle && S.lastClick && Math.abs(S.lastClick.x - x) < 3 && Math.abs(S.lastClick.y - y) < 3) {
        const k = ties.indexOf(S.sel);
        if (k >= 0) return ties[(k + 1) % ties.length];
      }
      return ties[0];
    }
    // a handler slice under the pointer
    if (y >= AXIS_H) {
      const row = Math.floor((y - AXIS_H + rowTop()) / ROW_H);
      const yc = yOfRow(row);
      if (row >= 0 && row < S.rows.length && Math.abs(y - yc) <= 5) {
        const lim = cutLimit();
        const k = keyAtX(x);
        const idx = upperBoundKey(k);
        const from = lowerBoundSlices(idx - S.maxSliceSpan - 1);
        const check = (s) => s.r.f && s.r.i < lim && s.r.a.vrow === row && xOf(s.r) <= x &&
          (s.h && s.h.i < lim ? xOf(s.h) : Infinity) >= x - 2;
        for (let j = from; j < S.slices.length && S.slices[j].r.i <= idx; j++) {
          if (check(S.slices[j])) return S.slices[j].r;
        }
        for (const s of S.openSlices) if (check(s)) return s.r;
      }
    }
    // an arrow near the pointer (as drawn in the last frame)
    const ha = S.hitArrows;
    let bestD = 4;
    let bestM = null;
    for (let j = 0; j < ha.length; j += 5) {
      const d = segDist(x, y, ha[j], ha[j + 1], ha[j + 2], ha[j + 3]);
      if (d < bestD) { bestD = d; bestM = S.arrows[ha[j + 4]]; }
    }
    return bestM ? bestM.send : null;
  }

  function segDist(px, py, x1, y1, x2, y2) {
    const dx = x2 - x1;
    const dy = y2 - y1;
    const l2 = dx * dx + dy * dy;
    let t = l2 ? ((px - x1) * dx + (py - y1) * dy) / l2 : 0;
    t = Math.max(0, Math.min(1, t));
    return Math.hypot(px - (x1 + t * dx), py - (y1 + t * dy));
  }

  // -- selection and details ---------------------------------------------------------------
  function causalChain(ev) {
    // Follow `cause` (the msg_id the emitting actor was handling) back to the send of that
    // message, then that send's cause, and so on. Returns the send events, nearest first.
    const chain = [];
    const seen = new Set();
    let cur = ev.cause;
    if (cur == null && ev.m && ev.kind !== 'send' && ev.m.send && ev.m.send !== ev) {
      chain.push({ ev: ev.m.send, id: ev.m.id, own: true });
      seen.add(ev.m.id);
      cur = ev.m.send.cause;
    }
    while (cur != null && !seen.has(cur) && chain.length < 200) {
      seen.add(cur);
      const m = S.msgs.get(cur);
      if (!m || !m.send) { chain.push({ ev: m ? m.receive : null, id: cur, missing: !m || !m.receive }); break; }
      chain.push({ ev: m.send, id: cur });
      cur = m.send.cause;
    }
    return chain;
  }

  function select(ev, reveal) {
    S.sel = ev;
    S.selChain = new Set();
    if (ev) {
      for (const link of causalChain(ev)) S.selChain.add(link.id);
      if (reveal) revealEvent(ev);
    }
    renderDetails();
    S.treeRendered = false;
    schedule();
  }

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
    }
    for (const kid of kids) if (kid != null) e.append(kid);
    return e;
  }

  function seqLink(ev, text) {
    if (!ev) return el('span', { class: 'none', text: text || '—' });
    const a = el('a', { class: 'seq', href: '#', 'data-seq': String(ev.seq), text: text || `seq ${ev.seq}` });
    return a;
  }

  function fmtDur(d) {
    if (d === 0) return '0 s';
    return d < 0.001 ? `${(d * 1e6).toFixed(1)} µs` : d < 1 ? `${(d * 1e3).toFixed(3)} ms` : `${d.toFixed(3)} s`;
  }

  function renderDetails() {
    const box = $('details');
    box.textContent = '';
    const ev = S.sel;
    if (!ev) {
      box.append(el('p', { class: 'hint', text: 'Click an event, an arrow or a handler slice to see its fields, payload and causal chain.' }));
      return;
    }
    const type = evType(ev);
    box.append(el('h3', { text: `seq ${ev.seq} · ${ev.kind}${type ? ` · ${type}` : ''}` }));
    const table = el('table');
    const fields = ['seq', 't', 'kind', 'actor', 'peer', 'msg_id', 'cause', 'corr', 'msg_type', 'outcome', 'detail'];
    for (const f of fields) {
      let v = ev[f];
      let cell;
      if (f === 'cause' && v != null) {
        const m = S.msgs.get(v);
        cell = el('td', null, seqLink(m && (m.receive || m.send), `#${v}`), m && m.type ? ` ${m.type}` : '');
      } else if (f === 'corr' && v != null && v !== ev.msg_id) {
        const m = S.msgs.get(v);
        cell = el('td', null, seqLink(m && m.send, `#${v}`), m && m.type ? ` ${m.type}` : '');
      } else {
        if (v === undefined || v === null) v = '—';
        cell = el('td', { text: String(v) });
      }
      table.append(el('tr', null, el('td', { class: 'k', text: f }), cell));
    }
    box.append(table);

    const m = ev.m;
    if (m) {
      box.append(el('h4', { text: `message #${m.id}${m.type ? ` ${m.type}` : ''}${m.send && m.send.corr != null ? ' (ask)' : ''}` }));
      const t2 = el('table');
      const row = (k, ...v) => t2.append(el('tr', null, el('td', { class: 'k', text: k }), el('td', null, ...v)));
      row('from', m.send ? (m.send.peer || '(outside any actor)') : '—');
      row('to', m.send ? m.send.actor : (m.receive ? m.receive.actor : '—'));
      row('sent', seqLink(m.send));
      row('received', seqLink(m.receive), m.send && m.receive ? `  queued ${fmtDur(m.receive.t - m.send.t)}` : '');
      const end = m.handle || (m.slice && m.slice.h);
      row(!end || end.outcome === 'ok' ? 'handled' : `ended (${end.outcome})`, seqLink(end), end ? `  ${end.detail || ''}` : '',
        m.receive && end ? `  in ${fmtDur(end.t - m.receive.t)}` : '');
      if (m.replies) row('replies', ...m.replies.flatMap((r) => [seqLink(r), ` ${r.outcome || ''} ${r.detail || ''} `]));
      box.append(t2);
    }

    box.append(el('h4', { text: 'payload' }));
    const pl = ev.payload !== undefined ? ev.payload : (m && m.send ? m.send.payload : undefined);
    if (pl === undefined) box.append(el('p', { class: 'none', text: '(none recorded)' }));
    else box.append(el('pre', { text: JSON.stringify(pl, null, 2) }));

    box.append(el('h4', { text: 'causal chain' }));
    const chain = causalChain(ev);
    if (!chain.length) {
      box.append(el('p', { class: 'none', text: 'no cause (not emitted while handling a message)' }));
    } else {
      const ol = el('ol');
      for (const link of chain) {
        if (!link.ev) { ol.append(el('li', { class: 'none', text: `#${link.id} (not in this trace)` })); continue; }
        const s = link.ev;
        const what = link.own ? 'sent as' : 'while handling';
        ol.append(el('li', null, `${what} #${link.id} ${s.msg_type || (s.m && s.m.type) || ''} `,
          el('br'), `${s.peer || '(outside)'} → ${s.actor} `, seqLink(s), ` t=${s.t}`));
      }
      box.append(ol);
    }
  }

  function renderErrors() {
    const box = $('errors');
    const errs = S.lineErrors;
    box.hidden = !errs.length;
    box.textContent = '';
    if (!errs.length) return;
    box.append(el('strong', { text: `${errs.length} corrupted line${errs.length > 1 ? 's' : ''} skipped` }));
    const ol = el('ol');
    for (const e of errs.slice(0, 50)) ol.append(el('li', { text: `line ${e.line}: ${e.error}` }));
    box.append(ol);
  }

  function expandTo(n) {
    let changed = false;
    for (let p = n.parent; p; p = p.parent) if (p.collapsed) { p.collapsed = false; changed = true; }
    if (changed) { S.fullDirty = true; refilter(); }
  }

  // Scroll (and, if collapsed away, expand) so that ev is on screen. Returns false if a
  // filter hides it.
  function revealEvent(ev) {
    refilter();
    if (ev.i >= cutLimit()) return false;
    if (ev.a.row < 0 && ev.a.vrow >= 0) expandTo(ev.a);
    const row = rowOfEvent(ev);
    if (row < 0) return false;
    const viewH = S.H - AXIS_H;
    const y = row * ROW_H;
    if (y < tree.scrollTop + ROW_H || y > tree.scrollTop + viewH - 2 * ROW_H) {
      tree.scrollTop = Math.max(0, y - viewH / 2);
    }
    const x = xOf(ev);
    if (x < 30 || x > S.W - 30) {
      // far away: center it; just off an edge: shift it a little into view
      const to = x < -S.W || x > 2 * S.W ? S.W / 2 : (x < 30 ? 80 : S.W - 80);
      S.k0 = keyOf(ev) - to * S.kpp;
      S.autoFit = false;
      if (S.follow) setFollow(false);
    }
    schedule();
    return true;
  }

  // -- the actor tree panel ----------------------------------------------------------------
  const rowPool = [];

  function renderTree() {
    const top = tree.scrollTop;
    const h = tree.clientHeight;
    const r0 = Math.max(0, Math.floor(top / ROW_H) - 2);
    const r1 = Math.min(S.rows.length, Math.ceil((top + h) / ROW_H) + 2);
    if (S.treeRendered && S.treeRange && S.treeRange[0] === r0 && S.treeRange[1] === r1) return;
    S.treeRendered = true;
    S.treeRange = [r0, r1];
    const need = r1 - r0;
    while (rowPool.length < need) {
      const d = el('div', { class: 'tree-row' }, el('span', { class: 'toggle' }), el('span', { class: 'name' }), el('span', { class: 'cnt' }));
      treeInner.append(d);
      rowPool.push(d);
    }
    const selNode = S.sel ? S.rows[rowOfEvent(S.sel)] : null;
    for (let k = 0; k < rowPool.length; k++) {
      const d = rowPool[k];
      const r = r0 + k;
      if (k >= need) { d.style.display = 'none'; continue; }
      const n = S.rows[r];
      d.style.display = '';
      d.style.top = `${r * ROW_H}px`;
      d.style.paddingLeft = `${4 + n.depth * 12}px`;
      d.dataset.path = n.path;
      d.title = n.path;
      d.className = `tree-row${r % 2 ? ' odd' : ''}${n === selNode ? ' sel' : ''}${n.real ? '' : ' implied'}${n.stopped ? ' stopped' : ''}`;
      d.children[0].textContent = n.children.length ? (n.collapsed ? '▸' : '▾') : '';
      d.children[1].textContent = n.name;
      d.children[2].textContent = n.count ? String(n.count) : '';
    }
  }

  function toggleNode(path, collapsed) {
    const n = S.nodes.get(path);
    if (!n || !n.children.length) return false;
    n.collapsed = collapsed === undefined ? !n.collapsed : !!collapsed;
    S.fullDirty = true;
    schedule();
    return true;
  }

  // -- status, lists, scrubber ----------------------------------------------------------------
  function renderStatus() {
    const st = $('status');
    const conn = S.connected ? 'connected'
      : S.everConnected ? 'disconnected, retrying'
        : retry >= 2 ? 'cannot connect (server gone, or a missing / wrong ?token=)' : 'connecting…';
    const parts = [
      conn + (S.mode ? ` (${S.mode})` : ''),
      `${S.events.length.toLocaleString()}${S.total != null && !S.ended ? ` / ${S.total.toLocaleString()}` : ''} events`,
      `${S.filtered.toLocaleString()} shown`,
      `${S.arrowCount.toLocaleString()} arrows`,
      `${S.dropped.toLocaleString()} dropped`,
      `${S.lineErrors.length} line error${S.lineErrors.length === 1 ? '' : 's'}`,
    ];
    if (S.ended) parts.push('ended');
    if (S.latency !== null) parts.push(`rtt ${S.latency} ms`);
    const text = parts.join(' · ');
    if (st.textContent !== text) st.textContent = text;
    st.className = S.connected ? (S.ended ? 'ended' : 'ok') : (S.ended ? 'ended' : 'bad');
    st.title = S.header ? `header: ${JSON.stringify(S.header)}` : '';
  }

  function updateLists() {
    if (!S.listsDirty) return;
    S.listsDirty = false;
    const fill = (id, values) => {
      const dl = $(id);
      dl.textContent = '';
      for (const v of [...values].sort(collator.compare)) dl.append(el('option', { value: v }));
    };
    fill('type-list', S.types);
    fill('vmm-list', S.vmms);
    // a type typed before it was known becomes an exact match once it is
    const type = $('filter-type').value.trim();
    if (type && S.types.has(type) !== S.F.typeExact) readFilterInputs();
  }

  function updateScrubber() {
    const sc = $('scrubber');
    const evs = S.events;
    const lab = $('scrub-label');
    if (!evs.length) { sc.min = '0'; sc.max = '0'; sc.value = '0'; lab.textContent = ''; return; }
    const min = evs[0].seq;
    const max = evs[evs.length - 1].seq;
    if (sc.min !== String(min)) sc.min = String(min);
    if (sc.max !== String(max)) sc.max = String(max);
    const v = S.cutSeq === null ? max : S.cutSeq;
    if (sc.value !== String(v)) sc.value = String(v);
    const lim = cutLimit();
    const t = lim ? evs[lim - 1].t : 0;
    const text = `seq ${v.toLocaleString()} / ${max.toLocaleString()} · t=${t.toFixed(3)} s`;
    if (lab.textContent !== text) lab.textContent = text;
  }

  function setCut(seq) {
    const evs = S.events;
    if (!evs.length) return;
    const max = evs[evs.length - 1].seq;
    S.cutSeq = seq >= max ? null : Math.max(evs[0].seq, seq);
    S.fullDirty = true;
    if (S.follow) followEnd();
    schedule();
  }

  function stepPlay() {
    const evs = S.events;
    if (!evs.length) { S.playing = false; return; }
    const max = evs[evs.length - 1].seq;
    const cur = S.cutSeq === null ? max : S.cutSeq;
    const secs = Number($('speed').value) || 20;
    const step = Math.max(1, Math.round((max - evs[0].seq) / (secs * 60)));
    const next = cur + step;
    if (next >= max) { setCut(max); setPlaying(false); } else setCut(next);
  }

  function setPlaying(on) {
    S.playing = on;
    $('play').textContent = on ? '⏸' : '▶';
    if (on) {
      if (S.cutSeq === null && S.events.length) setCut(S.events[0].seq);
      if (!S.follow) setFollow(true);
      schedule();
    }
  }

  // -- connection --------------------------------------------------------------------------
  let ws = null;
  let retry = 0;
  let pingTimer = null;
  let pingSent = 0;

  function wsUrl() {
    const token = new URLSearchParams(location.search).get('token');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${location.host}/ws${token ? `?token=${encodeURIComponent(token)}` : ''}`;
  }

  function connect() {
    try {
      ws = new WebSocket(wsUrl());
    } catch (e) {
      reconnect();
      return;
    }
    ws.onopen = () => {
      S.connected = true;
      S.everConnected = true;
      retry = 0;
      clearInterval(pingTimer);
      pingTimer = setInterval(() => {
        if (ws && ws.readyState === 1) { pingSent = performance.now(); ws.send('{"type":"ping"}'); }
      }, 15000);
      schedule();
    };
    ws.onmessage = (e) => {
      const M = S.M;
      const t0 = performance.now();
      let msgObj;
      try { msgObj = JSON.parse(e.data); } catch (err) { return; }
      const t1 = performance.now();
      onFrame(msgObj);
      const t2 = performance.now();
      if (msgObj.type === 'hello') {
        S.M = { firstFrameAt: t0, endAt: null, drawnAt: null, parseMs: 0, ingestMs: 0, draws: 0, drawMs: 0, lastDraw: null };
        return;
      }
      M.parseMs += t1 - t0;
      M.ingestMs += t2 - t1;
      if (msgObj.type === 'end') M.endAt = t2;
    };
    ws.onclose = () => {
      S.connected = false;
      clearInterval(pingTimer);
      schedule();
      // A replay that ended is complete; otherwise try again (the server may come back).
      if (!(S.ended && S.mode === 'replay')) reconnect();
    };
  }

  function reconnect() {
    retry = Math.min(retry + 1, 6);
    setTimeout(connect, 500 * 2 ** (retry - 1));
  }

  function onFrame(m) {
    switch (m.type) {
      case 'hello':
        resetData();
        S.header = m.header || null;
        S.mode = m.mode || null;
        S.total = typeof m.total === 'number' ? m.total : null;
        break;
      case 'events': {
        S.lastData = performance.now();
        const evs = m.events;
        for (let i = 0; i < evs.length; i++) ingest(evs[i]);
        break;
      }
      case 'dropped':
        S.dropped = m.count;
        break;
      case 'line_error':
        S.lineErrors.push({ line: m.line, error: m.error });
        renderErrors();
        break;
      case 'end':
        S.ended = true;
        break;
      case 'pong':
        S.latency = Math.round(performance.now() - pingSent);
        break;
      default:
        break;
    }
    schedule();
  }

  // -- UI wiring ---------------------------------------------------------------------------
  function kindCheckbox(kind) {
    const icon = MARKS[kind] || KIND_ICONS[kind] || { shape: 'dotSmall', color: '#d5dce5' };
    const cv = document.createElement('canvas');
    const dpr = window.devicePixelRatio || 1;
    cv.width = 16 * dpr; cv.height = 14 * dpr;
    cv.style.width = '16px'; cv.style.height = '14px';
    const c = cv.getContext('2d');
    c.scale(dpr, dpr);
    glyph(c, icon.shape, 8, 7, icon.color, MARKS[kind] && MARKS[kind].major);
    const box = el('input', { type: 'checkbox', value: kind });
    box.checked = true;
    return el('label', { title: kind }, box, cv, kind);
  }

  // A kind this viewer does not know (a newer runtime): shown, with its own checkbox.
  function addKind(kind) {
    KINDS.push(kind);
    KIND_SET.add(kind);
    S.F.kinds.add(kind);
    const bar = $('filter-kinds');
    bar.insertBefore(kindCheckbox(kind), bar.querySelector('.all'));
  }

  function buildKinds() {
    const box = $('filter-kinds');
    for (const kind of KINDS) box.append(kindCheckbox(kind));
    const all = el('span', { class: 'all', text: 'all', title: 'check every kind' });
    const none = el('span', { class: 'all', text: 'none', title: 'uncheck every kind' });
    all.onclick = () => { for (const b of box.querySelectorAll('input')) b.checked = true; readFilterInputs(); };
    none.onclick = () => { for (const b of box.querySelectorAll('input')) b.checked = false; readFilterInputs(); };
    box.append(all, none);
    box.addEventListener('change', readFilterInputs);
  }

  function buildLegend() {
    const box = $('legend');
    const item = (shape, color, text) => {
      const cv = document.createElement('canvas');
      const dpr = window.devicePixelRatio || 1;
      cv.width = 18 * dpr; cv.height = 14 * dpr;
      cv.style.width = '18px'; cv.style.height = '14px';
      const c = cv.getContext('2d');
      c.scale(dpr, dpr);
      glyph(c, shape, 9, 7, color, true);
      box.append(el('div', null, cv, text));
    };
    box.append(el('strong', { text: 'legend' }));
    item('arrow', TELL_COLOR, 'tell: sender → receiver (send → receive)');
    item('arrow', ASK_COLORS[0], 'ask (one color per ask)');
    item('dashed', ASK_COLORS[0], 'reply back to the asker (ask\'s color)');
    item('stub', TELL_COLOR, 'sent from outside any actor');
    item('pending', '#c9a227', 'sent, not received (yet)');
    item('slice', '#2f8fb0', 'handler slice (receive → handle)');
    item('slice', '#d9434b', 'handler ended with an error');
    item('slice', CANCELLED_COLOR, 'handler cancelled (e.g. by stop)');
    item('slice', '#c9a227', 'handler still running');
    item('triDown', ADMIT_COLORS.reject, 'admit: reject');
    item('triDown', ADMIT_COLORS.full, 'admit: full');
    item('triDown', ADMIT_COLORS.ignore, 'admit: ignore');
    for (const k of ['unhandled', 'drop', 'timeout', 'cancel', 'fail', 'restart', 'spawn', 'stop', 'task_start', 'watch_set']) {
      item(MARKS[k].shape, MARKS[k].color, k);
    }
    box.append(el('p', { class: 'hint', text: 'wheel: scroll actors · ctrl/alt+wheel: zoom · shift+wheel or drag: pan · f: fit · click again on a stack of events to cycle' }));
  }

  function wire() {
    let debounce = null;
    const soon = () => {
      clearTimeout(debounce);
      S.inputsPending = true;
      debounce = setTimeout(() => { if (S.inputsPending) readFilterInputs(); }, 120);
    };
    for (const id of ['filter-actor', 'filter-type', 'filter-vmm', 'search']) {
      $(id).addEventListener('input', soon);
      $(id).addEventListener('change', readFilterInputs);
    }
    $('compact').addEventListener('change', readFilterInputs);
    $('clear-filters').onclick = () => {
      for (const id of ['filter-actor', 'filter-type', 'filter-vmm', 'search']) $(id).value = '';
      for (const b of $('filter-kinds').querySelectorAll('input')) b.checked = true;
      readFilterInputs();
    };
    $('xmode').addEventListener('change', () => {
      const sel = S.sel;
      S.xmode = $('xmode').value;
      S.autoFit = true;
      fit();
      if (sel) revealEvent(sel);
    });
    $('zoom-in').onclick = () => zoomAt(S.W / 2, 0.5);
    $('zoom-out').onclick = () => zoomAt(S.W / 2, 2);
    $('fit').onclick = () => { S.autoFit = true; fit(); };
    $('expand-all').onclick = () => { for (const n of S.nodes.values()) n.collapsed = false; S.fullDirty = true; schedule(); };
    $('collapse-all').onclick = () => { for (const n of S.nodes.values()) n.collapsed = n.children.length > 0 && n.depth >= 1; S.fullDirty = true; schedule(); };
    $('follow').addEventListener('change', () => setFollow($('follow').checked));
    $('scrubber').addEventListener('input', () => { setPlaying(false); setCut(Number($('scrubber').value)); });
    $('play').onclick = () => setPlaying(!S.playing);

    tree.addEventListener('scroll', () => { S.treeRendered = false; schedule(); });
    tree.addEventListener('click', (e) => {
      const row = e.target.closest('.tree-row');
      if (!row) return;
      const n = S.nodes.get(row.dataset.path);
      if (!n) return;
      if (e.target.classList.contains('toggle') || e.detail === 2) toggleNode(n.path);
    });

    canvas.addEventListener('wheel', (e) => {
      e.preventDefault();
      const rect = canvas.getBoundingClientRect();
      const x = e.clientX - rect.left;
      if (e.ctrlKey || e.metaKey || e.altKey) zoomAt(x, Math.exp(e.deltaY * 0.002));
      else if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
        S.k0 += (e.shiftKey ? e.deltaY : e.deltaX) * S.kpp;
        S.autoFit = false;
        if (S.follow) setFollow(false);
        schedule();
      } else tree.scrollTop += e.deltaY;
    }, { passive: false });

    canvas.addEventListener('mousedown', (e) => {
      if (e.button !== 0) return;
      S.drag = { x: e.clientX, y: e.clientY, k0: S.k0, top: tree.scrollTop, moved: false };
    });
    window.addEventListener('mousemove', (e) => {
      const d = S.drag;
      if (d) {
        const dx = e.clientX - d.x;
        const dy = e.clientY - d.y;
        if (!d.moved && Math.abs(dx) + Math.abs(dy) > 3) { d.moved = true; canvas.classList.add('dragging'); }
        if (d.moved) {
          S.k0 = d.k0 - dx * S.kpp;
          tree.scrollTop = d.top - dy;
          if (dx) { S.autoFit = false; if (S.follow && dx > 0) setFollow(false); }
          schedule();
          return;
        }
      }
      if (e.target !== canvas) { if (S.hover) { S.hover = null; scheduleOverlay(); } return; }
      const rect = canvas.getBoundingClientRect();
      const x = e.clientX - rect.left;
      const y = e.clientY - rect.top;
      const cand = hitCandidates(x, y);
      let hit = null;
      if (cand.length) hit = cand.reduce((a, b) => (b[0] < a[0] ? b : a))[1];
      S.hover = { x, y, hit };
      scheduleOverlay();
    });
    window.addEventListener('mouseup', (e) => {
      const d = S.drag;
      S.drag = null;
      canvas.classList.remove('dragging');
      if (!d || d.moved || e.target !== canvas) return;
      const rect = canvas.getBoundingClientRect();
      const x = e.clientX - rect.left;
      const y = e.clientY - rect.top;
      refilter();
      const hit = hitTest(x, y, true);
      S.lastClick = { x, y };
      S.preferSeq = null;
      select(hit, false);
    });
    canvas.addEventListener('mouseleave', () => { S.hover = null; scheduleOverlay(); });

    $('details').addEventListener('click', (e) => {
      const a = e.target.closest('a.seq');
      if (!a) return;
      e.preventDefault();
      const ev = eventBySeq(Number(a.dataset.seq));
      if (ev) select(ev, true);
    });

    window.addEventListener('keydown', (e) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
      if (e.key === '+' || e.key === '=') zoomAt(S.W / 2, 0.5);
      else if (e.key === '-') zoomAt(S.W / 2, 2);
      else if (e.key === 'f') { S.autoFit = true; fit(); }
      else if (e.key === 'ArrowLeft') { S.k0 -= S.W * S.kpp * 0.2; S.autoFit = false; setFollow(false); schedule(); }
      else if (e.key === 'ArrowRight') { S.k0 += S.W * S.kpp * 0.2; S.autoFit = false; schedule(); }
      else if (e.key === 'Escape') select(null, false);
      else return;
      e.preventDefault();
    });

    new ResizeObserver(resize).observe($('chart'));
    window.addEventListener('resize', resize);
  }

  // -- test hooks --------------------------------------------------------------------------
  window.viewer = {
    /** Counts for the current data and filters (computed synchronously). */
    stats() {
      if (S.inputsPending) readFilterInputs();
      refilter();
      return {
        actors: S.actorCount,
        lifelines: S.rows.length,
        arrows: S.arrowCount,
        arrowsTotal: S.arrows.length,
        events: S.events.length,
        filtered: S.filtered,
        dropped: S.dropped,
        lineErrors: S.lineErrors.length,
        connected: S.connected,
        ended: S.ended,
        mode: S.mode,
        selected: S.sel ? S.sel.seq : null,
        cutoff: S.cutSeq,
      };
    },
    /** Select the event with this seq (fills #details, scrolls it into view). */
    select(seq) {
      const ev = eventBySeq(Number(seq));
      select(ev, !!ev);
      return !!ev;
    },
    /** Scroll the event into view and return its position in page (client) coordinates;
     * a click there selects this event, even if other events share the spot. */
    eventPosition(seq) {
      const ev = eventBySeq(Number(seq));
      if (!ev || !revealEvent(ev)) return null;
      S.preferSeq = ev.seq;
      syncTop();
      const rect = canvas.getBoundingClientRect();
      const y = yOfRow(rowOfEvent(ev));
      return { x: rect.left + xOf(ev), y: rect.top + y };
    },
    /** Where the event is drawn now, in page (client) coordinates, without scrolling;
     * null if it is hidden (filter, collapsed ancestor) or not drawn yet. */
    position(seq) {
      const ev = eventBySeq(Number(seq));
      if (!ev) return null;
      refilter();
      syncTop();
      const y = yOfRow(rowOfEvent(ev));
      if (y === null || ev.i >= cutLimit()) return null;
      S.preferSeq = ev.seq; // a click there picks this one among events at the same spot
      const rect = canvas.getBoundingClientRect();
      return { x: rect.left + xOf(ev), y: rect.top + y };
    },
    /** Apply filters programmatically: {actor, type, vmm, search, kinds: [..]}. */
    setFilter(f) {
      if ('actor' in f) $('filter-actor').value = f.actor || '';
      if ('type' in f) $('filter-type').value = f.type || '';
      if ('vmm' in f) $('filter-vmm').value = f.vmm || '';
      if ('search' in f) $('search').value = f.search || '';
      if ('kinds' in f) {
        const on = new Set(f.kinds || KINDS);
        for (const b of $('filter-kinds').querySelectorAll('input')) b.checked = on.has(b.value);
      }
      readFilterInputs();
      return this.stats();
    },
    collapse(path, collapsed = true) { return toggleNode(path, collapsed); },
    fit() { S.autoFit = true; fit(); },
    /** Show the key range [from, to] (virtual seconds, or event indices in "seq" mode). */
    setView(from, to) {
      S.kpp = (to - from) / Math.max(50, S.W);
      clampZoom();
      S.k0 = from;
      S.autoFit = false;
      setFollow(false);
      schedule();
    },
    setXMode(mode) { $('xmode').value = mode; $('xmode').dispatchEvent(new Event('change')); },
    setCutoff(seq) { setPlaying(false); if (seq == null) { S.cutSeq = null; S.fullDirty = true; schedule(); } else setCut(Number(seq)); },
    kinds: KINDS.slice(),
    /** Load and render timings in ms (performance.now() clock, 0 = navigation start):
     * firstFrameAt (hello), endAt ("end" processed), drawnAt (first draw after it), time
     * spent parsing and ingesting frames, number and total time of draws, last draw. */
    metrics() { return { ...S.M, now: performance.now() }; },
  };

  function init() {
    canvas = $('canvas');
    overlay = $('overlay');
    ctx = canvas.getContext('2d', { alpha: false });
    octx = overlay.getContext('2d');
    tree = $('tree');
    treeInner = $('tree-inner');
    tooltip = $('tooltip');
    buildKinds();
    buildLegend();
    wire();
    readFilterInputs();
    resize();
    connect();
    schedule();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
