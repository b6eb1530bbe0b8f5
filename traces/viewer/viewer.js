// trioxide trace viewer: connects to ws://<this host>/ws and draws the trace as a sequence
// diagram on a <canvas>: one lifeline per actor (rows, grouped by the supervision tree), an
// arrow per message (send -> receive), handler slices (receive -> handle), reply arrows back
// to the asker, and marks for admission decisions, failures, drops, timeouts and so on.
//
// Scale: the server sends `columns` frames (one array per field, strings as indices into a
// string table built up over the connection). Each frame is parsed as it arrives and
// appended to columnar storage: typed arrays per field (Float64Array times and seqs,
// Int32Array actor / peer / message indices, interned strings), plus typed-array indexes of
// the messages, handler slices and arrows. A replay is drawn once, when it has all arrived
// (a progress bar meanwhile); live data is drawn as it comes, throttled by what a draw costs.
// Only what is visible is drawn: events are kept in seq order (their time never decreases),
// so the visible window is found by binary search, and zoomed out, marks, arrows and slices
// that land on the same pixels are drawn once. The actor tree renders only its visible rows.
// Test hooks: window.viewer.{stats, select, eventPosition, ...}; load timings and a ready
// flag: window.__trioxide.{ready, timing}.
'use strict';

(() => {
  // -- constants -------------------------------------------------------------------------
  const KINDS = [
    'send', 'receive', 'handle', 'reply', 'admit', 'unhandled', 'drop', 'timeout', 'cancel',
    'fail', 'restart', 'spawn', 'start', 'stop', 'task_start', 'task_end', 'watch_set',
    'violation', 'http_send', 'http_end', 'http_serve', 'http_served',
  ];
  const ROW_H = 18;
  const AXIS_H = 28;
  const HIT_PX = 6;
  const ASK_COLORS = [
    '#ffb454', '#7cc4ff', '#b6e36b', '#ff7eb6', '#c9a0ff', '#4fd6be', '#ffd866',
    '#ff9166', '#82aaff', '#e5c07b', '#5ee0ff', '#f78c6c',
  ];
  const TELL_COLOR = '#7d8da3';
  // Slices and arrows get their message type written on them once this wide (px); at
  // most MAX_LABELS of each per draw.
  const LABEL_MIN_PX = 40;
  const MAX_LABELS = 400;
  const LABEL_FONT = '10px system-ui, sans-serif';
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
    violation: { shape: 'diamond', color: '#ff1744', label: 'violation', major: true },
    // HTTP between processes: a request sent (its end: the answer, a failure) and a
    // request served; in a merged trace a served request's cause is the request sent.
    http_send: { shape: 'tickUp', color: '#f0a35e', label: 'http_send' },
    http_end: { shape: 'tickSmallDown', color: '#f0a35e', label: 'http_end' },
    http_serve: { shape: 'triDown', color: '#4fd6be', label: 'http_serve' },
    http_served: { shape: 'tickSmallDown', color: '#4fd6be', label: 'http_served' },
  };
  const ADMIT_COLORS = { ignore: '#8c8c8c', reject: '#ff4d4f', full: '#fa8c16' };
  const KIND_ICONS = {
    send: { shape: 'arrow', color: TELL_COLOR },
    receive: { shape: 'slice', color: '#3ba6c8' },
    handle: { shape: 'sliceEnd', color: '#3ba6c8' },
    reply: { shape: 'dashed', color: '#c9a0ff' },
  };
  const KIND_INDEX = new Map(KINDS.map((k, i) => [k, i]));
  const K_SEND = KIND_INDEX.get('send');
  const K_RECEIVE = KIND_INDEX.get('receive');
  const K_HANDLE = KIND_INDEX.get('handle');
  const K_REPLY = KIND_INDEX.get('reply');
  const K_ADMIT = KIND_INDEX.get('admit');
  const K_CANCEL = KIND_INDEX.get('cancel');
  const K_STOP = KIND_INDEX.get('stop');
  const K_FAIL = KIND_INDEX.get('fail');
  const K_TASK_END = KIND_INDEX.get('task_end');
  const K_VIOLATION = KIND_INDEX.get('violation');
  const K_HTTP_SERVE = KIND_INDEX.get('http_serve');
  const CAUSE_COLORS = { cancelled: '#ff85c0', error: '#ff4d4f', http: '#f0a35e' };
  // The mark of each kind (by kind index; null for arrows and slices).
  const MARK_OF = KINDS.map((k) => MARKS[k] || null);
  const collator = new Intl.Collator(undefined, { numeric: true });
  const $ = (id) => document.getElementById(id);
  // While a replay loads, the progress bar is updated at most this often (ms).
  const PROGRESS_EVERY_MS = 250;

  // -- columnar storage ----------------------------------------------------------------
  // A growable set of same-length typed arrays (one per field): `n` rows in use.
  function table(fields) {
    const t = { n: 0, cap: 0, fields };
    for (const k of Object.keys(fields)) t[k] = new fields[k](0);
    return t;
  }

  function reserve(t, need) {
    if (need <= t.cap) return;
    const cap = Math.max(need, Math.ceil(t.cap * 1.5), 1024);
    for (const [k, T] of Object.entries(t.fields)) {
      const a = new T(cap);
      a.set(t[k].subarray(0, t.n));
      t[k] = a;
    }
    t.cap = cap;
  }

  function clearTable(t) {
    t.n = 0;
    t.cap = 0;
    for (const [k, T] of Object.entries(t.fields)) t[k] = new T(0);
  }

  // Events, in arrival (seq) order. Strings are indices into STR, actors and peers node
  // ids, absent values -1. `msg` is the event's message (index into MS), `f` whether it
  // passes the filters.
  const EV = table({
    seq: Float64Array, t: Float64Array, kind: Uint8Array, actor: Int32Array, peer: Int32Array,
    msgId: Float64Array, cause: Float64Array, corr: Float64Array, type: Int32Array,
    detail: Int32Array, outcome: Int32Array, pl: Int32Array, msg: Int32Array, f: Uint8Array,
    u: Float64Array,
  });
  // Messages (by msg_id): their send, receive and handle events, first reply, type (string
  // index), VMM (index into VMM_NAMES, from the payload's propolis_id) and handler slice.
  const MS = table({
    id: Float64Array, send: Int32Array, recv: Int32Array, handle: Int32Array, reply: Int32Array,
    type: Int32Array, vmm: Int32Array, slice: Int32Array,
  });
  // Handler slices, in receive order: the receive and the event that ended it (-1: open).
  const SL = table({ r: Int32Array, h: Int32Array });
  // Arrows (messages with both a send and a receive), appended when the later arrives.
  const AR = table({ m: Int32Array });

  // Interned strings and what they stand for (filled lazily, by string index); index 0 is
  // "absent".
  let STR = [null];
  let strIds = new Map(); // string -> its index in STR
  // By string index (grown with STR): the kind (-1: not seen as a kind yet), the node
  // (-1: not seen as an actor or peer yet), 1 once seen as a message type.
  let kindOf = new Int16Array(0);
  let nodeOf = new Int32Array(0);
  let typeSeen = new Uint8Array(0);
  let sliceStyleOf = []; // string index (an outcome) -> slice style
  let admitStyleOf = []; // string index (an admit's detail) -> mark style
  let PL = []; // payload texts (JSON), by EV.pl
  let NODES = []; // actor tree nodes by id
  let VROW = new Int32Array(0); // node id -> the row it is drawn on (-1: hidden)
  let VMM_NAMES = [];
  let vmmIds = new Map();
  let msgById = new Map(); // msg_id -> index in MS
  let moreReplies = new Map(); // message index -> replies after the first
  // Handler slices still open (appended at their receive; the ones that ended since are
  // dropped when the list is read: openNow()).
  let openSlices = [];

  // -- state -----------------------------------------------------------------------------
  const S = {
    // data
    nodes: new Map(), roots: [], maxArrowSpan: 0, maxSliceSpan: 0, types: new Set(),
    vmms: new Set(), unsorted: new Set(), actorCount: 0, header: null, mode: null, total: null,
    dropped: 0, lineErrors: [], connected: false, ended: false, everConnected: false, latency: null,
    // filters and derived
    F: { actor: '', type: '', typeRaw: '', typeExact: false, vmm: '', search: '', kinds: new Set(KINDS), compact: true },
    fullDirty: true, treeDirty: true, layoutDirty: true, fDone: 0, aDone: 0,
    filtered: 0, fFirst: -1, fLast: -1, arrowCount: 0, rows: [], cutSeq: null,
    listsDirty: true, treeRendered: false, treeRange: null,
    // view
    xmode: 'time', k0: 0, kpp: 1, autoFit: true, follow: true, W: 0, H: 0, dpr: 1,
    sel: -1, selChain: new Set(), preferSeq: null, hover: null, hitArrows: [], lastClick: null,
    top: 0, playing: false, drag: null, drawQueued: false, overlayQueued: false,
    lastData: 0, lastDrawAt: 0, lastDrawCost: 0, deferTimer: 0, inputsPending: false,
    lastProgress: 0, overlayUsed: false,
  };

  // Load and render timings (ms on the performance.now() clock: 0 = navigation start) and
  // the ready flag: set once the first full draw with every event of a replay is done
  // (live: the first draw). Read by tests and bench/bench_viewer.py.
  function newTiming() {
    return {
      wsOpen: null, hello: null, firstData: null, lastData: null, end: null, drawn: null,
      frames: 0, bytes: 0, events: 0, parseMs: 0, ingestMs: 0, indexMs: 0, drawMs: 0,
      draws: 0, firstDrawMs: null, serverBuildS: null, lastDraw: null, lastFrameEnd: null,
    };
  }
  // whenReady: a promise of the first ready (for a test to await instead of polling).
  let resolveReady;
  const T = { ready: false, timing: newTiming(), whenReady: new Promise((r) => { resolveReady = r; }) };
  window.__trioxide = T;

  let canvas, ctx, overlay, octx, tree, treeInner, tooltip;

  // -- the time axis -----------------------------------------------------------------------
  // In 'time' mode an event's x key is u (EV.u), not its time: between consecutive events u
  // advances by the time between them, but by at least AX.spread (events at one virtual
  // instant are spread out in seq order instead of piling into one blob) and by at most
  // AX.gap (an idle gap longer than that is drawn as a break AX.gap wide, labelled with its
  // length). So the busy part of a run fills the view and its long idle tail stays a
  // reachable strip. u is piecewise linear in t between events: a time maps to one x
  // (ticks are drawn where their time is) and an x to one time. AX.gap is the 90th
  // percentile of the gaps between distinct instants, fixed once enough of them are seen
  // (a replay: all; live: the first GAPS_TO_FIX), so the axis does not shift afterwards.
  const GAPS_TO_FIX = 200;
  const AX = { gap: Infinity, spread: 0, fixed: false, sampledAt: 0, breaks: [] };

  function axisStep(dt) {
    return dt > AX.gap ? AX.gap : (dt < AX.spread ? AX.spread : dt);
  }

  // Choose AX.gap from the events so far; recompute every u if it changed.
  function fitAxisGaps() {
    if (AX.fixed || !EV.n || (!S.ended && EV.n < 2 * AX.sampledAt)) return;
    AX.sampledAt = EV.n;
    const ts = EV.t;
    const gaps = [];
    for (let i = 1; i < EV.n; i++) if (ts[i] > ts[i - 1]) gaps.push(ts[i] - ts[i - 1]);
    gaps.sort((a, b) => a - b);
    const gap = gaps.length ? gaps[Math.floor(gaps.length * 0.9)] : 1;
    AX.fixed = S.ended || gaps.length >= GAPS_TO_FIX;
    if (gap === AX.gap) return;
    AX.gap = gap;
    AX.spread = gap / 50;
    AX.breaks = [];
    const u = EV.u;
    u[0] = 0;
    for (let i = 1; i < EV.n; i++) {
      const dt = ts[i] - ts[i - 1];
      if (dt > AX.gap) AX.breaks.push(i);
      u[i] = u[i - 1] + axisStep(dt);
    }
    S.fullDirty = true;
  }

  // The u of virtual time t (clamped to the trace).
  function uOfT(t) {
    const n = EV.n;
    if (!n) return 0;
    const ts = EV.t;
    if (t <= ts[0]) return EV.u[0];
    if (t >= ts[n - 1]) return EV.u[n - 1];
    let lo = 0;
    let hi = n;
    while (lo < hi) { const mid = (lo + hi) >>> 1; if (ts[mid] < t) lo = mid + 1; else hi = mid; }
    if (ts[lo] === t) return EV.u[lo];
    const a = lo - 1;
    return EV.u[a] + ((t - ts[a]) / (ts[lo] - ts[a])) * (EV.u[lo] - EV.u[a]);
  }

  // The virtual time at u (clamped to the trace: never before its first event).
  function tOfU(u) {
    const n = EV.n;
    if (!n) return 0;
    const us = EV.u;
    if (u <= us[0]) return EV.t[0];
    if (u >= us[n - 1]) return EV.t[n - 1];
    let lo = 0;
    let hi = n;
    while (lo < hi) { const mid = (lo + hi) >>> 1; if (us[mid] < u) lo = mid + 1; else hi = mid; }
    if (us[lo] === u) return EV.t[lo];
    const a = lo - 1;
    return EV.t[a] + ((u - us[a]) / (us[lo] - us[a])) * (EV.t[lo] - EV.t[a]);
  }

  // -- data ingestion ----------------------------------------------------------------------
  // VMM ids in actor names: runner-<vmm>-g<generation> and propolis-<vmm> (but not the
  // "propolis-host" parent); descendants (monitor, crucible-*) inherit their VMM.
  const VMM_SEG = /^(?:runner-(.+?)(?:-g\d+)?|propolis-(?!host$)(.+))$/;

  function addVmm(name) {
    let v = vmmIds.get(name);
    if (v === undefined) {
      v = VMM_NAMES.length;
      VMM_NAMES.push(name);
      vmmIds.set(name, v);
      S.vmms.add(name);
      S.listsDirty = true;
    }
    return v;
  }

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
      id: NODES.length, path, lower: path.toLowerCase(), name, parent, children: [],
      depth: parent ? parent.depth + 1 : 0, real: !!real, first: -1, last: -1, count: 0,
      stopped: false, collapsed: false, row: -1, vrow: -1, hits: 0, sub: 0, amatch: false,
      vmm: m ? (m[1] || m[2]) : (parent ? parent.vmm : null), open: null,
    };
    if (n.vmm) addVmm(n.vmm);
    if (real) S.actorCount++;
    NODES.push(n);
    if (n.id < VROW.length) VROW[n.id] = -1; // not laid out yet
    const siblings = parent ? parent.children : S.roots;
    siblings.push(n);
    S.unsorted.add(siblings);
    S.nodes.set(path, n);
    S.treeDirty = true;
    return n;
  }

  // Room in the by-string tables for every string of STR.
  function stringsAdded() {
    const n = STR.length;
    if (n <= nodeOf.length) return;
    const cap = Math.max(n, nodeOf.length * 2, 1024);
    const grow = (a, T, fill) => { const b = new T(cap).fill(fill); b.set(a); return b; };
    kindOf = grow(kindOf, Int16Array, -1);
    nodeOf = grow(nodeOf, Int32Array, -1);
    typeSeen = grow(typeSeen, Uint8Array, 0);
  }

  function nodeFor(sid) {
    const id = node(STR[sid], true).id;
    nodeOf[sid] = id;
    return id;
  }

  function kindFor(sid) {
    const name = STR[sid];
    let k = KIND_INDEX.get(name);
    if (k === undefined) k = addKind(name);
    kindOf[sid] = k;
    return k;
  }

  function msgOf(id) {
    let m = msgById.get(id);
    if (m === undefined) {
      reserve(MS, MS.n + 1);
      m = MS.n++;
      MS.id[m] = id;
      MS.send[m] = -1; MS.recv[m] = -1; MS.handle[m] = -1; MS.reply[m] = -1;
      MS.type[m] = -1; MS.vmm[m] = -1; MS.slice[m] = -1;
      msgById.set(id, m);
    }
    return m;
  }

  // The VMM a message is about: its payload's top-level propolis_id. Read lazily (the first
  // time the VMM filter or its suggestions need them), for the messages sent since.
  let vmmScanned = 0;
  function scanPayloadVmms() {
    for (let m = vmmScanned; m < MS.n; m++) {
      const s = MS.send[m];
      if (s < 0 || EV.pl[s] < 0) continue;
      const text = PL[EV.pl[s]];
      if (text.includes('"propolis_id"')) payloadVmm(m, text);
    }
    vmmScanned = MS.n;
  }

  function payloadVmm(m, text) {
    let id = null;
    const head = '{"propolis_id":"';
    if (text.startsWith(head)) {
      const end = text.indexOf('"', head.length);
      const raw = text.slice(head.length, end);
      if (end > 0 && !raw.includes('\\')) id = raw;
    }
    if (id === null) {
      try {
        const pl = JSON.parse(text);
        if (pl && typeof pl === 'object' && typeof pl.propolis_id === 'string') id = pl.propolis_id;
      } catch (e) { /* not JSON: no VMM */ }
    }
    if (id !== null) MS.vmm[m] = addVmm(id);
  }

  // Append one event: strings as indices into STR (0: absent), numbers and the payload
  // null when absent. EV has room.
  function add(seq, t, ks, as, ps, mid, cause, corr, ty, d, o, pl) {
    let k = kindOf[ks];
    if (k < 0) k = kindFor(ks);
    let a = nodeOf[as];
    if (a < 0) a = nodeFor(as);
    let p = -1;
    if (ps !== 0) { p = nodeOf[ps]; if (p < 0) p = nodeFor(ps); }
    if (ty === 0) ty = null;
    const i = EV.n++;
    EV.seq[i] = seq;
    EV.t[i] = t;
    if (i === 0) EV.u[i] = 0;
    else {
      const dt = t - EV.t[i - 1];
      if (dt > AX.gap) AX.breaks.push(i);
      EV.u[i] = EV.u[i - 1] + axisStep(dt);
    }
    EV.kind[i] = k;
    EV.actor[i] = a;
    EV.peer[i] = p;
    EV.msgId[i] = mid === null ? -1 : mid;
    EV.cause[i] = cause === null ? -1 : cause;
    EV.corr[i] = corr === null ? -1 : corr;
    EV.type[i] = ty === null ? -1 : ty;
    EV.detail[i] = d === 0 ? -1 : d;
    EV.outcome[i] = o === 0 ? -1 : o;
    EV.pl[i] = pl === null ? -1 : PL.push(pl) - 1;
    EV.f[i] = 0;
    const an = NODES[a];
    if (an.first < 0) an.first = i;
    an.last = i;
    an.count++;
    let m = -1;
    switch (k) {
      case K_SEND:
        m = msgOf(mid === null ? -1 : mid);
        MS.send[m] = i;
        if (ty !== null) MS.type[m] = ty;
        if (m < vmmScanned && pl !== null && pl.includes('"propolis_id"')) payloadVmm(m, pl);
        if (MS.recv[m] >= 0) addArrow(m);
        break;
      case K_RECEIVE: {
        m = msgOf(mid === null ? -1 : mid);
        MS.recv[m] = i;
        if (MS.type[m] < 0 && ty !== null) MS.type[m] = ty;
        if (MS.send[m] >= 0) addArrow(m);
        reserve(SL, SL.n + 1);
        const s = SL.n++;
        SL.r[s] = i;
        SL.h[s] = -1;
        MS.slice[m] = s;
        openSlices.push(s);
        if (an.open) an.open.push(s); else an.open = [s];
        break;
      }
      case K_HANDLE: {
        const mm = msgById.get(mid === null ? -1 : mid);
        if (mm !== undefined) {
          m = mm;
          MS.handle[m] = i;
          if (MS.slice[m] >= 0) endSlice(MS.slice[m], i);
        }
        break;
      }
      case K_CANCEL: // an ask given up by its caller (the handler, if running, runs on)
        if (mid !== null) m = msgOf(mid); else if (corr !== null) m = msgOf(corr);
        break;
      case K_REPLY:
        if (corr !== null) {
          m = msgOf(corr);
          if (MS.reply[m] < 0) MS.reply[m] = i;
          else {
            const more = moreReplies.get(m);
            if (more) more.push(i); else moreReplies.set(m, [i]);
          }
        }
        break;
      case K_STOP:
      case K_FAIL:
        if (k === K_STOP) an.stopped = true;
        // a handler still open on this actor ended with it
        if (an.open && an.open.length) for (const s of an.open.splice(0)) endSlice(s, i);
        break;
      default:
        if (mid !== null) m = msgOf(mid); else if (corr !== null) m = msgOf(corr);
    }
    EV.msg[i] = m;
    const tt = ty !== null ? ty : (m >= 0 ? MS.type[m] : -1);
    if (tt >= 0 && typeSeen[tt] === 0) {
      typeSeen[tt] = 1;
      S.types.add(STR[tt]);
      S.listsDirty = true;
    }
  }

  function endSlice(s, i) {
    if (SL.h[s] >= 0) return;
    SL.h[s] = i;
    const r = SL.r[s];
    const open = NODES[EV.actor[r]].open;
    const k = open ? open.indexOf(s) : -1;
    if (k >= 0) open.splice(k, 1);
    const span = i - r;
    if (span > S.maxSliceSpan) S.maxSliceSpan = span;
  }

  function openNow() {
    let w = 0;
    for (let k = 0; k < openSlices.length; k++) {
      const s = openSlices[k];
      if (SL.h[s] < 0) openSlices[w++] = s;
    }
    openSlices.length = w;
    return openSlices;
  }

  function addArrow(m) {
    // Arrows are appended when their receive arrives: AR stays sorted by receive index.
    reserve(AR, AR.n + 1);
    AR.m[AR.n++] = m;
    const span = MS.recv[m] - MS.send[m];
    if (span > S.maxArrowSpan) S.maxArrowSpan = span;
  }

  // A `columns` frame: one array per field, strings as indices into the frame's own
  // string table (0: absent), mapped here to the viewer's.
  function ingestColumns(fr) {
    const strs = fr.strings;
    const map = new Int32Array(strs.length + 1);
    for (let j = 0; j < strs.length; j++) map[j + 1] = intern(strs[j]);
    const n = fr.n;
    reserve(EV, EV.n + n);
    const { seq, t, kind, actor, peer, msg_id: mid, cause, corr, msg_type: ty, detail, outcome, payload } = fr;
    for (let j = 0; j < n; j++) {
      add(seq[j], t[j], map[kind[j]], map[actor[j]], map[peer[j]], mid[j], cause[j], corr[j],
        map[ty[j]], map[detail[j]], map[outcome[j]], payload[j]);
    }
  }

  // The index of string s in STR (added if new); 0 for null.
  function intern(s) {
    if (s === undefined || s === null) return 0;
    let id = strIds.get(s);
    if (id === undefined) { id = STR.length; STR.push(s); strIds.set(s, id); stringsAdded(); }
    return id;
  }

  // An `events` frame (objects: what the server sends a client that did not ask for columns).
  function ingestObjects(evs) {
    reserve(EV, EV.n + evs.length);
    const v = (x) => (x === undefined ? null : x);
    for (const ev of evs) {
      add(ev.seq, ev.t, intern(ev.kind), intern(ev.actor), intern(ev.peer), v(ev.msg_id),
        v(ev.cause), v(ev.corr), intern(ev.msg_type), intern(ev.detail), intern(ev.outcome),
        ev.payload === undefined ? null : JSON.stringify(ev.payload));
    }
  }

  function resetData() {
    for (const t of [EV, MS, SL, AR]) clearTable(t);
    STR = [null]; strIds = new Map(); kindOf = new Int16Array(0); nodeOf = new Int32Array(0);
    typeSeen = new Uint8Array(0); sliceStyleOf = [];
    admitStyleOf = []; PL = []; NODES = []; VROW = new Int32Array(0); VMM_NAMES = [];
    vmmIds = new Map(); msgById = new Map(); moreReplies = new Map(); openSlices = [];
    vmmScanned = 0;
    Object.assign(AX, { gap: Infinity, spread: 0, fixed: false, sampledAt: 0, breaks: [] });
    FC.reset = true;
    Object.assign(S, {
      nodes: new Map(), roots: [], maxArrowSpan: 0, maxSliceSpan: 0, types: new Set(), vmms: new Set(),
      unsorted: new Set(), actorCount: 0, dropped: 0, lineErrors: [], ended: false, total: null,
      sel: -1, selChain: new Set(), fullDirty: true, treeDirty: true, autoFit: true, cutSeq: null,
      listsDirty: true, rows: [], filtered: 0, fFirst: -1, fLast: -1, arrowCount: 0, fDone: 0, aDone: 0,
      hitArrows: [], hover: null,
    });
    renderDetails();
    renderErrors();
  }

  // -- event accessors ---------------------------------------------------------------------
  const str = (sid) => (sid >= 0 ? STR[sid] : null);
  // The message type of event i (its own, else its message's): a string index or -1.
  function typeOf(i) {
    const ty = EV.type[i];
    if (ty >= 0) return ty;
    const m = EV.msg[i];
    return m >= 0 ? MS.type[m] : -1;
  }
  const evType = (i) => str(typeOf(i));
  // The payload that goes with event i (its own, else its message's send's): index or -1.
  function payloadOf(i) {
    const p = EV.pl[i];
    if (p >= 0) return p;
    const m = EV.msg[i];
    if (m < 0) return -1;
    const s = MS.send[m];
    return s >= 0 ? EV.pl[s] : -1;
  }
  const kindName = (i) => KINDS[EV.kind[i]];
  const actorPath = (i) => NODES[EV.actor[i]].path;
  const peerPath = (i) => (EV.peer[i] >= 0 ? NODES[EV.peer[i]].path : null);
  const num = (v) => (v < 0 ? null : v); // a msg_id / cause / corr column value

  // -- filters -----------------------------------------------------------------------------
  // The filters compiled into lookup tables (by kind, node, string, VMM and payload index),
  // extended as new strings, nodes and payloads arrive: matching an event is a few array
  // reads, never a string operation.
  const FC = {
    reset: true, kinds: new Uint8Array(0), nodeActor: new Uint8Array(0), nodeVmm: new Uint8Array(0),
    nodeSearch: new Uint8Array(0), strType: new Uint8Array(0), strSearch: new Uint8Array(0),
    vmm: new Uint8Array(0), plSearch: new Uint8Array(0), nNodes: 0, nStr: 0, nVmm: 0, nPl: 0,
  };

  function sized(a, n) {
    if (a.length >= n) return a;
    const b = new Uint8Array(Math.max(n, a.length * 2, 256));
    b.set(a);
    return b;
  }

  function compileFilters() {
    const F = S.F;
    if (FC.reset) {
      FC.reset = false;
      FC.nNodes = 0; FC.nStr = 0; FC.nVmm = 0; FC.nPl = 0;
      FC.kinds = new Uint8Array(KINDS.length);
      KINDS.forEach((k, i) => { FC.kinds[i] = F.kinds.has(k) ? 1 : 0; });
    }
    if (FC.kinds.length < KINDS.length) {
      const b = new Uint8Array(KINDS.length);
      b.set(FC.kinds);
      for (let k = FC.kinds.length; k < KINDS.length; k++) b[k] = F.kinds.has(KINDS[k]) ? 1 : 0;
      FC.kinds = b;
    }
    const nn = NODES.length;
    if (FC.nNodes < nn) {
      FC.nodeActor = sized(FC.nodeActor, nn);
      FC.nodeVmm = sized(FC.nodeVmm, nn);
      FC.nodeSearch = sized(FC.nodeSearch, nn);
      for (let j = FC.nNodes; j < nn; j++) {
        const n = NODES[j];
        FC.nodeActor[j] = !F.actor || n.lower.includes(F.actor) ? 1 : 0;
        FC.nodeVmm[j] = F.vmm && n.vmm && n.vmm.toLowerCase().includes(F.vmm) ? 1 : 0;
        FC.nodeSearch[j] = F.search && n.lower.includes(F.search) ? 1 : 0;
      }
      FC.nNodes = nn;
    }
    const ns = STR.length;
    if (FC.nStr < ns) {
      FC.strType = sized(FC.strType, ns);
      FC.strSearch = sized(FC.strSearch, ns);
      for (let j = Math.max(1, FC.nStr); j < ns; j++) {
        const s = STR[j];
        if (F.type) {
          FC.strType[j] = (F.typeExact ? s === F.typeRaw : s.toLowerCase().includes(F.type)) ? 1 : 0;
        }
        if (F.search) FC.strSearch[j] = s.toLowerCase().includes(F.search) ? 1 : 0;
      }
      FC.nStr = ns;
    }
    if (F.vmm) scanPayloadVmms();
    const nv = VMM_NAMES.length;
    if (FC.nVmm < nv) {
      FC.vmm = sized(FC.vmm, nv);
      for (let j = FC.nVmm; j < nv; j++) FC.vmm[j] = F.vmm && VMM_NAMES[j].toLowerCase().includes(F.vmm) ? 1 : 0;
      FC.nVmm = nv;
    }
    const np = PL.length;
    if (FC.nPl < np) {
      FC.plSearch = sized(FC.plSearch, np);
      if (F.search) {
        const q = F.search;
        for (let j = FC.nPl; j < np; j++) FC.plSearch[j] = PL[j].toLowerCase().includes(q) ? 1 : 0;
      }
      FC.nPl = np;
    }
  }

  function eventFilterActive() {
    const F = S.F;
    return !!(F.type || F.vmm || F.search || F.kinds.size < KINDS.length);
  }

  function matches(i) {
    const F = S.F;
    if (!FC.kinds[EV.kind[i]]) return false;
    const a = EV.actor[i];
    const p = EV.peer[i];
    if (F.actor && !(FC.nodeActor[a] || (p >= 0 && FC.nodeActor[p]))) return false;
    if (F.type) {
      const ty = typeOf(i);
      if (ty < 0 || !FC.strType[ty]) return false;
    }
    if (F.vmm) {
      const m = EV.msg[i];
      const ok = FC.nodeVmm[a] || (p >= 0 && FC.nodeVmm[p]) || (m >= 0 && MS.vmm[m] >= 0 && FC.vmm[MS.vmm[m]]);
      if (!ok) return false;
    }
    if (F.search) {
      // what the search looks in: actor, peer, message type, detail, payload
      if (FC.nodeSearch[a] || (p >= 0 && FC.nodeSearch[p])) return true;
      const ty = typeOf(i);
      if (ty >= 0 && FC.strSearch[ty]) return true;
      const d = EV.detail[i];
      if (d >= 0 && FC.strSearch[d]) return true;
      const pl = payloadOf(i);
      return pl >= 0 && FC.plSearch[pl] === 1;
    }
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
    FC.reset = true;
    S.fullDirty = true;
    schedule();
  }

  function cutLimit() {
    // Number of events "visible" under the scrubber (index limit, exclusive).
    if (S.cutSeq === null) return EV.n;
    return upperBoundSeq(S.cutSeq);
  }

  // Bring EV.f, hit counts, rows and arrow counts up to date (incrementally when only new
  // events arrived; from scratch when a filter, the cutoff or the tree changed).
  function refilter() {
    fitAxisGaps();
    const lim = cutLimit();
    if (S.fullDirty || lim < S.fDone) {
      for (const n of NODES) n.hits = 0;
      S.fDone = 0;
      S.aDone = 0;
      S.filtered = 0;
      S.fFirst = -1;
      S.fLast = -1;
      S.arrowCount = 0;
      S.layoutDirty = true;
      S.fullDirty = false;
    }
    compileFilters();
    const compact = S.F.compact && eventFilterActive();
    const f = EV.f;
    const kind = EV.kind;
    const actor = EV.actor;
    const peer = EV.peer;
    let filtered = S.filtered;
    let first = S.fFirst;
    let last = S.fLast;
    for (let i = S.fDone; i < lim; i++) {
      const ok = matches(i);
      f[i] = ok ? 1 : 0;
      if (ok) {
        filtered++;
        if (first < 0) first = i;
        last = i;
        if (NODES[actor[i]].hits++ === 0 && compact) S.layoutDirty = true;
        const p = peer[i];
        const k = kind[i];
        if (p >= 0 && (k === K_SEND || k === K_REPLY) && NODES[p].hits++ === 0 && compact) S.layoutDirty = true;
      }
    }
    S.filtered = filtered;
    S.fFirst = first;
    S.fLast = last;
    S.fDone = lim;
    if (S.treeDirty) S.layoutDirty = true;
    if (S.layoutDirty) layout();
    let j = S.aDone;
    for (; j < AR.n; j++) {
      const m = AR.m[j];
      if (MS.recv[m] >= lim) break;
      const s = MS.send[m];
      if (f[s] && (VROW[actor[s]] >= 0 || (peer[s] >= 0 && VROW[peer[s]] >= 0))) S.arrowCount++;
    }
    S.aDone = j;
  }

  // -- tree layout -------------------------------------------------------------------------
  function layout() {
    const F = S.F;
    const compact = F.compact && eventFilterActive();
    // Siblings by name; live, only the ones that arrived since the last layout, after the
    // ones already shown (rows never move as actors appear).
    for (const list of S.unsorted) {
      const keep = S.mode === 'live' ? (list.laidOut || 0) : 0;
      const tail = list.splice(keep).sort((a, b) => collator.compare(a.name, b.name));
      list.push(...tail);
      list.laidOut = list.length;
    }
    S.unsorted.clear();
    // post-order: subtree hit counts and subtree actor-filter matches (iterative: trees
    // can be deep)
    const order = [];
    const stack = [...S.roots];
    while (stack.length) {
      const n = stack.pop();
      order.push(n);
      for (const c of n.children) stack.push(c);
    }
    for (let k = order.length - 1; k >= 0; k--) {
      const n = order[k];
      let sub = n.hits;
      let am = !F.actor || n.lower.includes(F.actor);
      for (const c of n.children) {
        sub += c.sub;
        am = am || c.amatch;
      }
      n.sub = sub;
      n.amatch = am;
    }
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
    // A row whose parent is not shown (filtered away) is labelled with its path from the
    // nearest shown ancestor (the whole path if none), indented under that ancestor.
    for (const n of rows) {
      let a = n.parent;
      while (a && a.row < 0) a = a.parent;
      n.label = a === n.parent ? n.name : (a ? n.path.slice(a.path.length + 1) : n.path);
      n.indent = a ? a.indent + 1 : 0;
    }
    if (VROW.length < NODES.length) VROW = new Int32Array(Math.max(NODES.length, VROW.length * 2, 256)).fill(-1);
    for (const n of NODES) VROW[n.id] = n.vrow;
    S.rows = rows;
    S.treeDirty = false;
    S.layoutDirty = false;
    treeInner.style.height = `${rows.length * ROW_H}px`;
    $('tree-count').textContent = `${rows.length} / ${S.actorCount}`;
    S.treeRendered = false;
  }

  // -- geometry ----------------------------------------------------------------------------
  // An event's x key: u (compressed time), t (linear time) or its index (event order).
  const keyOf = (i) => (S.xmode === 'time' ? EV.u[i] : S.xmode === 'linear' ? EV.t[i] : i);
  // The key of virtual time t, and the virtual time at key k (clamped to the trace).
  const keyOfT = (t) => (S.xmode === 'time' ? uOfT(t) : S.xmode === 'linear' ? t : lowerBoundT(t));
  function timeAtKey(k) {
    if (!EV.n) return 0;
    if (S.xmode === 'time') return tOfU(k);
    if (S.xmode === 'linear') return Math.min(EV.t[EV.n - 1], Math.max(EV.t[0], k));
    return EV.t[Math.min(EV.n - 1, Math.max(0, Math.round(k)))];
  }
  // Blank margin kept on each side of the trace (px): the view never shows time before it.
  const PAD_PX = 16;
  const xOfKey = (k) => (k - S.k0) / S.kpp;
  const xOf = (i) => (keyOf(i) - S.k0) / S.kpp;
  const keyAtX = (x) => S.k0 + x * S.kpp;
  // The vertical scroll offset, read from the DOM once per frame / event (S.top).
  const rowTop = () => S.top;
  const syncTop = () => { S.top = tree.scrollTop; };
  const yOfRow = (r) => (r < 0 ? null : AXIS_H + r * ROW_H - rowTop() + ROW_H / 2);

  function lowerBoundT(tt) { // first index with time >= tt
    let lo = 0;
    let hi = EV.n;
    const t = EV.t;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (t[mid] < tt) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function lowerBoundKey(k) { // first index with key >= k
    let lo = 0;
    let hi = EV.n;
    if (S.xmode === 'seq') return Math.max(0, Math.min(hi, Math.ceil(k)));
    const t = S.xmode === 'time' ? EV.u : EV.t;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (t[mid] < k) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function upperBoundKey(k) { // first index with key > k
    let lo = 0;
    let hi = EV.n;
    if (S.xmode === 'seq') return Math.max(0, Math.min(hi, Math.floor(k) + 1));
    const t = S.xmode === 'time' ? EV.u : EV.t;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (t[mid] <= k) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function upperBoundSeq(seq) { // number of events with seq <= seq
    let lo = 0;
    let hi = EV.n;
    const a = EV.seq;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid] <= seq) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function eventBySeq(seq) {
    const i = upperBoundSeq(seq) - 1;
    return i >= 0 && EV.seq[i] === seq ? i : -1;
  }

  function lowerBoundSlices(idx) {
    let lo = 0;
    let hi = SL.n;
    const r = SL.r;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (r[mid] < idx) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function lowerBoundArrows(idx) {
    let lo = 0;
    let hi = AR.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (MS.recv[AR.m[mid]] < idx) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  // The row an event is drawn on: a send sits at its sender (the arrow's tail) when the
  // sender is shown, else on the receiver's row; everything else on its actor's row.
  function rowOfEvent(i) {
    const p = EV.peer[i];
    if (EV.kind[i] === K_SEND && p >= 0 && VROW[p] >= 0) return VROW[p];
    return VROW[EV.actor[i]];
  }

  function keyRange() {
    if (!EV.n) return [0, 1];
    const last = Math.max(0, cutLimit() - 1);
    if (S.xmode === 'seq') return [0, Math.max(1, last)];
    const a = keyOf(0);
    const b = keyOf(last);
    return [a, b > a ? b : a + 1];
  }

  // What "fit" shows: the events that pass the filters (all events when none is set).
  function fitRange() {
    const F = S.F;
    const filtering = F.actor || eventFilterActive();
    if (!filtering || S.fFirst < 0) return keyRange();
    const a = keyOf(S.fFirst);
    const b = keyOf(S.fLast);
    return [a, b > a ? b : a + (S.xmode === 'seq' ? 10 : 1)];
  }

  function fit(redraw = true) {
    refilter();
    const [a, b] = fitRange();
    showKeys(a, b);
    if (redraw) schedule();
  }

  // Show keys a..b across the view (between its margins).
  function showKeys(a, b) {
    S.kpp = (b - a) / Math.max(50, S.W - 2 * PAD_PX) || 1;
    clampZoom();
    S.k0 = (a + b) / 2 - (S.W / 2) * S.kpp;
    clampPan();
  }

  // Zoomed in at most to a few events (or a microsecond) per screen; out, to the whole trace.
  function clampZoom() {
    const [a, b] = keyRange();
    const minKpp = S.xmode === 'seq' ? 1 / 60 : 1e-7;
    const maxKpp = Math.max(minKpp, (b - a) / Math.max(50, S.W - 2 * PAD_PX));
    S.kpp = Math.min(maxKpp, Math.max(minKpp, S.kpp));
  }

  // Zoom by factor with the key under x kept under x (unless that would show time outside
  // the trace: then the view is shifted back to its edge).
  function zoomAt(x, factor) {
    const k = keyAtX(x);
    S.kpp *= factor;
    clampZoom();
    S.k0 = k - x * S.kpp;
    clampPan();
    S.autoFit = false;
    // Zooming in away from the newest event stops following (else the view would jump).
    const lim = cutLimit();
    if (S.follow && lim) {
      const xl = xOf(lim - 1);
      if (xl < 0 || xl > S.W) setFollow(false);
    }
    schedule();
  }

  function followEnd() {
    const lim = cutLimit();
    if (!lim) return;
    if (S.autoFit) { fit(false); return; }
    const k = keyOf(lim - 1);
    const right = S.k0 + S.W * S.kpp;
    if (k > right - S.W * S.kpp * 0.03 || k < S.k0) S.k0 = k - S.W * S.kpp * 0.9;
  }

  // Keep the view on the trace: at most PAD_PX of blank on either side (when the trace is
  // narrower than the view, it starts at the left margin).
  function clampPan() {
    if (!EV.n) return;
    const [a, b] = keyRange();
    const lo = a - PAD_PX * S.kpp;
    const hi = Math.max(lo, b + PAD_PX * S.kpp - S.W * S.kpp);
    S.k0 = Math.min(hi, Math.max(lo, S.k0));
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

  // A replay still arriving is not drawn (a progress bar shows how far it got): it is drawn
  // once, when it is complete.
  const loadingReplay = () => S.connected && S.mode === 'replay' && !S.ended;

  function frame() {
    S.drawQueued = false;
    const t0 = performance.now();
    if (loadingReplay()) {
      renderProgress();
      renderStatus();
      return;
    }
    // Live data streaming in is drawn at most every few frames (proportionally to what a
    // draw costs), so that the socket's messages are not starved by rendering.
    const streaming = !S.ended && S.mode === 'live' && t0 - S.lastData < 200;
    const gap = Math.max(150, 4 * S.lastDrawCost);
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
    const t1 = performance.now();
    renderTree();
    draw();
    if (S.hover) S.hover.hit = hoverHit(S.hover.x, S.hover.y); // never a stale tooltip
    drawOverlay();
    renderStatus();
    renderProgress();
    updateScrubber();
    hookTick(); // panels hook (panels.js)
    const t2 = performance.now();
    const tm = T.timing;
    S.lastDrawAt = t2;
    S.lastDrawCost = t2 - t0;
    tm.draws++;
    tm.drawMs += t2 - t1;
    tm.lastFrameEnd = t2;
    if (!T.ready && EV.n && (S.ended || S.mode === 'live')) {
      tm.indexMs = t1 - t0; // the filters, the tree layout and fit over every event
      tm.firstDrawMs = t2 - t1;
      tm.drawn = t2;
      tm.events = EV.n;
      T.ready = true;
      resolveReady(tm);
    }
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
    if (!loadingReplay() && (S.autoFit || !oldW)) fit();
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

  function markStyle(i) {
    const k = EV.kind[i];
    const mk = MARK_OF[k];
    if (!mk || k !== K_ADMIT) return mk;
    const d = EV.detail[i];
    let st = admitStyleOf[d + 1];
    if (!st) {
      const text = d >= 0 ? STR[d] : '';
      const color = text.startsWith('ignore') ? ADMIT_COLORS.ignore : text.startsWith('full') ? ADMIT_COLORS.full : ADMIT_COLORS.reject;
      st = { shape: mk.shape, color, major: !text.startsWith('ignore') };
      admitStyleOf[d + 1] = st;
    }
    return st;
  }

  function sliceStyle(h) {
    if (EV.kind[h] === K_STOP) return SLICE_STYLE.cancelled; // cut short by its actor's stop
    const o = EV.outcome[h];
    if (o < 0) return 0;
    let st = sliceStyleOf[o];
    if (st === undefined) { st = SLICE_STYLE[STR[o]] || 0; sliceStyleOf[o] = st; }
    return st;
  }

  // Geometry of message m's arrow into G = [x1, y1, x2, y2, kind]; false when neither end
  // is shown. kind: 0 = sender to receiver, 1 = from outside (stub entering the receiver
  // row), 2 = receiver not shown (stub leaving the sender row), 3 = same row (arc).
  const G = new Float64Array(5);
  function arrowGeom(m) {
    const s = MS.send[m];
    const r = MS.recv[m];
    const p = EV.peer[s];
    const yr = yOfRow(VROW[EV.actor[s]]);
    const ys = p >= 0 ? yOfRow(VROW[p]) : null;
    const xs = xOf(s);
    const xr = xOf(r);
    if (yr === null && ys === null) return false;
    if (ys === null) { G[0] = xs; G[1] = yr; G[2] = xr; G[3] = yr; G[4] = 1; } else if (yr === null) {
      G[0] = xs; G[1] = ys; G[2] = xs + 12; G[3] = ys + 7; G[4] = 2;
    } else { G[0] = xs; G[1] = ys; G[2] = xr; G[3] = yr; G[4] = ys === yr ? 3 : 0; }
    return true;
  }

  function draw() {
    const c = ctx;
    const W = S.W;
    const H = S.H;
    c.setTransform(S.dpr, 0, 0, S.dpr, 0, 0);
    c.fillStyle = '#13161b';
    c.fillRect(0, 0, W, H);
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
    const selRow = S.sel >= 0 ? rowOfEvent(S.sel) : -1;
    const xEnd = lastIdx >= 0 ? xOf(lastIdx) : 0;
    for (let r = r0; r < r1; r++) {
      const y = AXIS_H + r * ROW_H - top;
      if (r === selRow) { c.fillStyle = 'rgba(255,180,84,0.10)'; c.fillRect(0, y, W, ROW_H); } else if (r % 2) {
        c.fillStyle = 'rgba(255,255,255,0.025)';
        c.fillRect(0, y, W, ROW_H);
      }
      const n = rows[r];
      if (n.first >= 0 && n.first < lim) {
        const xa = Math.max(-2, xOf(n.first));
        const xb = Math.min(W + 2, n.stopped && n.last < lim ? xOf(n.last) : xEnd);
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
      drawBreakBands(c, W, H);
      drawSlices(c, lo, hi, lim, lastIdx, W, H);
      const q1 = performance.now();
      drawArrows(c, lo, hi, lim, W, H);
      const q2 = performance.now();
      drawPointEvents(c, lo, hi, lim, W, H, r0, r1);
      drawCauseLinks(c, lo, hi, lim);
      const q3 = performance.now();
      drawSelection(c, lim);
      T.timing.lastDraw = { slicesMs: q1 - q0, arrowsMs: q2 - q1, pointsMs: q3 - q2, eventsInView: hi - lo };
    }
    c.restore();
    drawAxis(c, W);
  }

  // Pixel key of a segment for de-duplication when zoomed out (-1: do not de-duplicate).
  function segKey(x1, y1, x2, y2) {
    const a = Math.round(x1) + 1024;
    const b = Math.round(y1) + 1024;
    const c = Math.round(x2) + 1024;
    const d = Math.round(y2) + 1024;
    if (a < 0 || b < 0 || c < 0 || d < 0 || a > 8191 || b > 8191 || c > 8191 || d > 8191) return -1;
    return ((a * 8192 + b) * 8192 + c) * 8192 + d;
  }

  function drawSlices(c, lo, hi, lim, lastIdx, W, H) {
    // By the handler's outcome: ok, error, still running, cancelled.
    const paths = [new Path2D(), new Path2D(), new Path2D(), new Path2D()];
    // Slices of one row are merged while they overlap on screen (zoomed out, thousands of
    // slices collapse into a few rectangles).
    const cur = new Map(); // row * 4 + style -> [x1, x2, y]
    const flush = (key, st) => paths[key % 4].rect(st[0], st[2] - 5, Math.max(2, st[1] - st[0]), 10);
    const labels = []; // slices wide enough for their message type: [receive, x1, x2, y]...
    const cancelEnds = []; // where cancelled slices end: [x, y]...
    const xEnd = lastIdx >= 0 ? xOf(lastIdx) : 0;
    const f = EV.f;
    const actor = EV.actor;
    const top = rowTop();
    const add = (s) => {
      const r = SL.r[s];
      if (!f[r] || r >= lim) return;
      const row = VROW[actor[r]];
      if (row < 0) return;
      const y = AXIS_H + row * ROW_H - top + ROW_H / 2;
      if (y < AXIS_H - ROW_H || y > H + ROW_H) return;
      const h = SL.h[s];
      const done = h >= 0 && h < lim;
      const x1 = xOf(r);
      const x2 = done ? xOf(h) : xEnd;
      if (x2 < -2 || x1 > W + 2) return;
      const xa = Math.max(-2, x1);
      const xb = Math.max(xa + 2, Math.min(W + 2, x2));
      const style = !done ? 2 : sliceStyle(h);
      if (xb - xa >= LABEL_MIN_PX && labels.length < 4 * MAX_LABELS) labels.push(r, xa, xb, y);
      if (style === SLICE_STYLE.cancelled && x2 <= W + 2 && cancelEnds.length < 3 * MAX_LABELS) cancelEnds.push(x2, y);
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
    const sr = SL.r;
    const sh = SL.h;
    for (let j = from; j < SL.n && sr[j] < hi; j++) {
      const h = sh[j];
      if (h < lo) continue; // ended before the view (open slices: below)
      add(j);
    }
    for (const s of openNow()) add(s);
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
    // a cancelled handler ends in the cancel mark (a cancellation, not an error)
    for (let k = 0; k < cancelEnds.length; k += 2) glyph(c, 'ring', cancelEnds[k], cancelEnds[k + 1], MARKS.cancel.color, false);
    c.font = LABEL_FONT;
    c.textBaseline = 'middle';
    c.fillStyle = '#f2f5f8';
    for (let k = 0; k < labels.length; k += 4) {
      const text = fitText(c, str(typeOf(labels[k])), labels[k + 2] - labels[k + 1] - 6);
      if (text) c.fillText(text, labels[k + 1] + 3, labels[k + 3] + 0.5);
    }
  }

  // text cut (with an ellipsis) to at most w px; '' if not even a few characters fit.
  function fitText(c, text, w) {
    if (!text) return '';
    if (c.measureText(text).width <= w) return text;
    let n = Math.floor((text.length * w) / c.measureText(text).width);
    while (n > 2 && c.measureText(`${text.slice(0, n)}…`).width > w) n--;
    return n > 2 ? `${text.slice(0, n)}…` : '';
  }

  // Clip the straight segment (x1, y1) - (x2, y2) to ymin <= y <= ymax into G[0..3].
  function clipY(x1, y1, x2, y2, ymin, ymax) {
    let ax = x1;
    let ay = y1;
    let bx = x2;
    let by = y2;
    if (ay < ymin || ay > ymax) { const y = ay < ymin ? ymin : ymax; ax = x1 + ((x2 - x1) * (y - y1)) / (y2 - y1); ay = y; }
    if (by < ymin || by > ymax) { const y = by < ymin ? ymin : ymax; bx = x1 + ((x2 - x1) * (y - y1)) / (y2 - y1); by = y; }
    G[0] = ax; G[1] = ay; G[2] = bx; G[3] = by;
  }

  function drawArrows(c, lo, hi, lim, W, H) {
    const paths = new Map(); // color -> [linePath, headPath]
    const get = (color) => {
      let p = paths.get(color);
      if (!p) { p = [new Path2D(), new Path2D()]; paths.set(color, p); }
      return p;
    };
    const from = lowerBoundArrows(lo);
    const end = hi + S.maxArrowSpan;
    const seen = new Set();
    const ymin = AXIS_H - 8;
    const ymax = H + 8;
    const f = EV.f;
    let drawn = 0;
    const heads = [];
    const labels = []; // arrows long enough for their message type: [message, x, y]...
    for (let j = from; j < AR.n; j++) {
      const m = AR.m[j];
      const ri = MS.recv[m];
      if (ri >= end || ri >= lim) break;
      const s = MS.send[m];
      if (s >= hi || !f[s]) continue;
      if (!arrowGeom(m)) continue;
      let x1 = G[0];
      let y1 = G[1];
      let x2 = G[2];
      let y2 = G[3];
      const kind = G[4];
      if (Math.max(x1, x2) < -10 || Math.min(x1, x2) > W + 10) continue;
      if (Math.max(y1, y2) < ymin || Math.min(y1, y2) > ymax) continue;
      let head = true;
      if (kind === 0 && (y1 < ymin || y1 > ymax || y2 < ymin || y2 > ymax)) {
        // An arrow to or from a row off screen: only its visible part is drawn, so that
        // zoomed out, the many arrows to far rows collapse onto the same pixels.
        head = y2 >= ymin && y2 <= ymax;
        clipY(x1, y1, x2, y2, ymin, ymax);
        x1 = G[0]; y1 = G[1]; x2 = G[2]; y2 = G[3];
      }
      const key = segKey(x1, y1, x2, y2);
      if (key >= 0) {
        if (seen.has(key)) continue;
        seen.add(key);
      }
      const corr = EV.corr[s];
      const color = corr >= 0 ? askColor(corr) : TELL_COLOR;
      const [p, hp] = get(color);
      if (kind === 1) {
        p.moveTo(x1 - 10, y1 - 7);
        p.lineTo(x1, y1);
        p.lineTo(x2, y2);
        heads.push(hp, Math.min(x1, x2 - 6), y2, x2, y2);
      } else if (kind === 2) {
        p.moveTo(x1, y1);
        p.lineTo(x2, y2);
        heads.push(hp, x1, y1, x2, y2);
      } else if (kind === 3) {
        const span = x2 - x1;
        const lift = Math.min(ROW_H * 0.8, 5 + span * 0.15);
        if (span < 3) {
          p.moveTo(x1, y1);
          p.bezierCurveTo(x1 - 8, y1 - lift - 4, x2 + 8, y2 - lift - 4, x2, y2);
          heads.push(hp, x2 + 4, y2 - 6, x2, y2);
        } else {
          p.moveTo(x1, y1);
          p.quadraticCurveTo((x1 + x2) / 2, y1 - lift * 2, x2, y2);
          heads.push(hp, (x1 + x2) / 2, y1 - lift, x2, y2);
        }
      } else {
        p.moveTo(x1, y1);
        p.lineTo(x2, y2);
        if (head) heads.push(hp, x1, y1, x2, y2);
      }
      S.hitArrows.push(x1, y1, x2, y2, j);
      drawn++;
      if ((kind === 0 || kind === 3) && labels.length < 3 * MAX_LABELS && Math.hypot(x2 - x1, y2 - y1) >= 2 * LABEL_MIN_PX) {
        labels.push(m, (x1 + x2) / 2, kind === 3 ? Math.min(y1, y2) - 9 : (y1 + y2) / 2);
      }
    }
    const showHeads = drawn < 4000;
    if (showHeads) for (let k = 0; k < heads.length; k += 5) pathArrowHead(heads[k], heads[k + 1], heads[k + 2], heads[k + 3], heads[k + 4], 5);
    c.lineWidth = 1;
    for (const [color, [p, hp]] of paths) {
      c.strokeStyle = color;
      c.globalAlpha = color === TELL_COLOR ? 0.75 : 0.9;
      c.stroke(p);
      if (showHeads) { c.fillStyle = color; c.fill(hp); }
    }
    c.globalAlpha = 1;
    drawArrowLabels(c, labels);
  }

  // Message types on arrows: centred on the arrow, on a dark pill, none overlapping.
  function drawArrowLabels(c, labels) {
    if (!labels.length) return;
    c.font = LABEL_FONT;
    c.textBaseline = 'middle';
    const taken = [];
    for (let k = 0; k < labels.length; k += 3) {
      const text = str(MS.type[labels[k]]);
      if (!text) continue;
      const w = c.measureText(text).width + 6;
      const x = labels[k + 1] - w / 2;
      const y = labels[k + 2];
      if (y < AXIS_H + 6) continue;
      if (taken.some((b) => x < b[0] + b[2] && b[0] < x + w && Math.abs(y - b[1]) < 13)) continue;
      taken.push([x, y, w]);
      c.fillStyle = 'rgba(19,22,27,0.85)';
      c.fillRect(x, y - 6, w, 12);
      c.fillStyle = '#c3ccd7';
      c.fillText(text, x + 3, y + 0.5);
    }
  }

  function drawPointEvents(c, lo, hi, lim, W, H, r0, r1) {
    const nk = KINDS.length;
    // The x key of each event, as keyOf: the compressed axis (EV.u), virtual time (EV.t),
    // or the event's index. (It read EV.t on the compressed axis: marks of a trace whose
    // clock does not start at 0 - a rack process's real-time trace - were off screen.)
    const keys = S.xmode === 'time' ? EV.u : S.xmode === 'linear' ? EV.t : null;
    const k0 = S.k0;
    const kpp = S.kpp;
    const top = rowTop();
    const ymin = AXIS_H - 8;
    const ymax = H + 8;
    // Zoomed out, many marks of one kind land on the same pixel of a row: events come in x
    // order, so remembering the last pixel drawn per (visible row, kind) finds them.
    const rowBase = r0 - 1;
    const nRows = r1 - r0 + 3;
    const lastPx = new Float64Array(nRows * nk).fill(-Infinity);
    const seen = new Set(); // pending sends and replies: segments already drawn
    const major = [];
    const replies = new Map(); // color -> [dashed Path2D, heads Path2D]
    const pending = new Path2D();
    let anyPending = false;
    const f = EV.f;
    const kinds = EV.kind;
    const actor = EV.actor;
    const peer = EV.peer;
    const yRow = (r) => (r < 0 ? null : AXIS_H + r * ROW_H - top + ROW_H / 2);
    for (let i = lo; i < hi; i++) {
      if (!f[i]) continue;
      const kind = kinds[i];
      const x = ((keys ? keys[i] : i) - k0) / kpp;
      if (kind === K_SEND) {
        const m = EV.msg[i];
        if (m >= 0 && MS.recv[m] >= 0 && MS.recv[m] < lim) continue;
        const y = yRow(rowOfEvent(i));
        if (y === null || y < ymin || y > ymax) continue;
        const pr = peer[i] >= 0 ? VROW[peer[i]] : -1;
        const ar = VROW[actor[i]];
        const dy = pr >= 0 && ar >= 0 && pr !== ar ? (ar > pr ? 6 : -6) : 0;
        const key = segKey(x, y, x + 14, y + dy);
        if (key >= 0) { if (seen.has(key)) continue; seen.add(key); }
        pending.moveTo(x, y);
        pending.lineTo(x + 14, y + dy);
        anyPending = true;
        continue;
      }
      if (kind === K_REPLY) {
        let y1 = yRow(VROW[actor[i]]);
        let y2 = peer[i] >= 0 ? yRow(VROW[peer[i]]) : null;
        if (y1 === null && y2 === null) continue;
        // clamp ends off screen to its edge (a reply to a far row is drawn to the edge)
        let head = true;
        if (y1 !== null && y2 !== null && y1 !== y2) {
          if (Math.max(y1, y2) < AXIS_H || Math.min(y1, y2) > H) continue;
          if (y2 < ymin || y2 > ymax) { y2 = y2 < ymin ? ymin : ymax; head = false; }
          if (y1 < ymin || y1 > ymax) y1 = y1 < ymin ? ymin : ymax;
        }
        const key = segKey(x, y1 === null ? -1000 : y1, 0, y2 === null ? -1000 : y2);
        if (key >= 0) { if (seen.has(key)) continue; seen.add(key); }
        const corr = EV.corr[i];
        const color = corr >= 0 ? askColor(corr) : TELL_COLOR;
        let pr = replies.get(color);
        if (!pr) { pr = [new Path2D(), new Path2D()]; replies.set(color, pr); }
        const [p, hp] = pr;
        if (y1 !== null && y2 !== null && y1 !== y2) {
          p.moveTo(x, y1);
          p.lineTo(x + 3, y2);
          if (head) pathArrowHead(hp, x, y1, x + 3, y2, 5);
        } else if (y1 !== null && y2 === y1) {
          if (y1 < ymin || y1 > ymax) continue;
          p.moveTo(x, y1);
          p.quadraticCurveTo(x + 6, y1 + 12, x - 2, y1 + 3);
          pathArrowHead(hp, x + 4, y1 + 8, x - 2, y1 + 3, 4);
        } else if (y1 !== null) { // asker outside the actors (or not shown): stub back out
          if (y1 < ymin || y1 > ymax) continue;
          p.moveTo(x, y1);
          p.lineTo(x - 10, y1 + 7);
          pathArrowHead(hp, x, y1, x - 10, y1 + 7, 4);
        } else { // replier not shown: stub into the asker's row
          if (y2 < ymin || y2 > ymax) continue;
          p.moveTo(x - 10, y2 - 7);
          p.lineTo(x, y2);
          pathArrowHead(hp, x - 10, y2 - 7, x, y2, 4);
        }
        continue;
      }
      const st = markStyle(i);
      if (!st) continue;
      const row = VROW[actor[i]];
      if (row < 0) continue;
      const y = AXIS_H + row * ROW_H - top + ROW_H / 2;
      if (y < ymin || y > ymax) continue;
      const px = Math.round(x);
      const slot = (row - rowBase) * nk + kind;
      if (slot >= 0 && slot < lastPx.length) {
        if (lastPx[slot] === px) continue;
        lastPx[slot] = px;
      }
      if (st.major) major.push(st, x, y);
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
    for (let k = 0; k < major.length; k += 3) glyph(c, major[k].shape, major[k + 1], major[k + 2], major[k].color, true);
  }

  // Whether event i is a cancellation, a failure or a violation whose cause is recorded:
  // the outcome its cause link is drawn in, else null.
  function causedOutcome(i) {
    if (EV.cause[i] < 0) return null;
    const k = EV.kind[i];
    if (k === K_FAIL || k === K_VIOLATION) return 'error';
    if (k === K_CANCEL) return 'cancelled';
    if (k === K_HTTP_SERVE) return 'http'; // cause: the client's http_send (merged traces)
    if ((k === K_HANDLE || k === K_TASK_END) && str(EV.outcome[i]) === 'cancelled') return 'cancelled';
    return null;
  }

  // A thin dashed line from the message that caused a cancellation, failure or violation
  // (where it was received; sent, if not received) to the event, and from a request sent
  // to where another process served it (an http_serve's cause is the http_send's seq).
  // Drawn: S.causeLinks.
  function drawCauseLinks(c, lo, hi, lim) {
    S.causeLinks = [];
    const f = EV.f;
    for (let i = lo; i < hi; i++) {
      if (!f[i] || EV.cause[i] < 0) continue;
      const how = causedOutcome(i);
      if (!how) continue;
      let from;
      if (how === 'http') from = eventBySeq(EV.cause[i]);
      else {
        const m = msgById.get(EV.cause[i]);
        if (m === undefined) continue;
        from = MS.recv[m] >= 0 && MS.recv[m] < lim ? MS.recv[m] : MS.send[m];
      }
      if (from < 0 || from >= lim) continue;
      const y1 = yOfRow(VROW[EV.actor[from]]);
      const y2 = yOfRow(rowOfEvent(i));
      if (y1 === null || y2 === null) continue;
      const x1 = xOf(from);
      const x2 = xOf(i);
      c.strokeStyle = CAUSE_COLORS[how];
      c.fillStyle = CAUSE_COLORS[how];
      c.lineWidth = 1;
      c.setLineDash([3, 3]);
      c.beginPath();
      c.moveTo(x1, y1);
      if (y1 === y2) c.quadraticCurveTo((x1 + x2) / 2, y1 - ROW_H, x2, y2); else c.lineTo(x2, y2);
      c.stroke();
      c.setLineDash([]);
      c.beginPath();
      c.arc(x1, y1, 2.5, 0, 6.2832);
      c.fill();
      S.causeLinks.push({ from: EV.seq[from], to: EV.seq[i], how });
    }
  }

  function drawSelection(c, lim) {
    const i = S.sel;
    if (i < 0 || i >= lim) return;
    const m = EV.msg[i];
    const strokeArrow = (mm, width, color) => {
      if (mm === undefined || mm < 0 || MS.send[mm] < 0 || MS.recv[mm] < 0 || MS.recv[mm] >= lim) return;
      if (!arrowGeom(mm)) return;
      const x1 = G[0]; const y1 = G[1]; const x2 = G[2]; const y2 = G[3]; const kind = G[4];
      c.lineWidth = width;
      c.strokeStyle = color;
      c.beginPath();
      if (kind === 1) { c.moveTo(x1 - 10, y1 - 7); c.lineTo(x1, y1); c.lineTo(x2, y2); } else if (kind === 3) {
        c.moveTo(x1, y1);
        c.quadraticCurveTo((x1 + x2) / 2, y1 - ROW_H, x2, y2);
      } else { c.moveTo(x1, y1); c.lineTo(x2, y2); }
      c.stroke();
    };
    for (const id of S.selChain) strokeArrow(msgById.get(id), 1.5, 'rgba(255,180,84,0.8)');
    if (m >= 0) {
      strokeArrow(m, 2.5, SEL_COLOR);
      const s = MS.slice[m];
      if (s >= 0 && SL.r[s] < lim) {
        const r = SL.r[s];
        const y = yOfRow(VROW[EV.actor[r]]);
        if (y !== null) {
          const h = SL.h[s];
          const x1 = xOf(r);
          const x2 = h >= 0 && h < lim ? xOf(h) : xOf(lim - 1);
          c.lineWidth = 1.5;
          c.strokeStyle = SEL_COLOR;
          c.strokeRect(x1 - 1, y - 5, Math.max(2, x2 - x1) + 2, 10);
        }
      }
    }
    const y = yOfRow(rowOfEvent(i));
    if (y !== null) {
      const x = xOf(i);
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

  // A duration for a break label: "45 s", "30 min", "2.5 h".
  function fmtSpan(d) {
    if (d < 120) return `${+d.toPrecision(3)} s`;
    if (d < 7200) return `${+(d / 60).toPrecision(3)} min`;
    return `${+(d / 3600).toPrecision(3)} h`;
  }

  // The axis: time ticks, each drawn exactly where its time is (in 'time' mode the scale
  // varies along the axis, so a tick is placed every ~TICK_PX at a round time near there),
  // and the compressed idle gaps as breaks with their length. Ticks drawn: S.ticks.
  const TICK_PX = 110;
  function drawAxis(c, W) {
    c.fillStyle = '#1a1e25';
    c.fillRect(0, 0, W, AXIS_H);
    c.fillStyle = '#2c323c';
    c.fillRect(0, AXIS_H - 1, W, 1);
    S.ticks = [];
    if (!EV.n) return;
    c.font = '11px system-ui, sans-serif';
    c.textBaseline = 'top';
    if (S.xmode === 'time') labelBreaks(c, W);
    c.fillStyle = '#8a95a3';
    c.strokeStyle = '#3a424e';
    c.lineWidth = 1;
    const tick = (x, label) => {
      const w = c.measureText(label).width;
      if (x < 0 || x + 3 + w > W) return;
      for (const o of S.ticks) if (x < o.x + o.w + 12 && o.x < x + w + 15) return;
      const xr = Math.round(x) + 0.5;
      c.beginPath();
      c.moveTo(xr, AXIS_H - 7);
      c.lineTo(xr, AXIS_H - 1);
      c.stroke();
      c.fillText(label, x + 3, 5);
      S.ticks.push({ x, w: w + 3, label });
    };
    if (S.xmode === 'seq') {
      const step = niceStep(S.kpp * TICK_PX);
      for (let k = Math.ceil(keyAtX(0) / step) * step, n = 0; k <= keyAtX(W) && n < 200; k += step, n++) {
        const i = Math.min(EV.n - 1, Math.max(0, Math.round(k)));
        tick(xOfKey(k), `#${EV.seq[i]}  ${fmtTime(EV.t[i], 0.001)}`);
      }
      return;
    }
    const lim = Math.max(1, cutLimit());
    const tFirst = EV.t[0];
    const tLast = EV.t[lim - 1];
    for (let p = 0; p <= W; p += TICK_PX / 2) {
      const span = timeAtKey(keyAtX(p + TICK_PX / 2)) - timeAtKey(keyAtX(p - TICK_PX / 2));
      const tp = timeAtKey(keyAtX(p));
      // A round time near p, as round as the scale there allows (across idle gaps the scale
      // jumps: finer steps are tried); else the time of the instant at p itself (where the
      // view spans no time: events of one instant, spread out).
      let done = false;
      for (let step = span > 0 ? niceStep(span) : 0, n = 0; step > 0 && n < 6 && !done; step /= 10, n++) {
        const tt = Math.round(tp / step) * step;
        if (tt < tFirst || tt > tLast) continue;
        const x = xOfKey(keyOfT(tt));
        if (Math.abs(x - p) <= TICK_PX / 2) { tick(x, fmtTime(tt, step)); done = true; }
      }
      if (!done) {
        const i = Math.min(lim - 1, lowerBoundKey(keyAtX(p)));
        const x = xOf(i);
        if (Math.abs(x - p) <= TICK_PX / 2) tick(xOfKey(keyOfT(EV.t[i])), fmtTime(EV.t[i], 1));
      }
    }
  }

  // The compressed idle gaps in view (time mode): [event index after the gap, x1, x2]...,
  // at most one per 3 px.
  function visibleBreaks(W) {
    const out = [];
    if (S.xmode !== 'time') return out;
    const br = AX.breaks;
    const u = EV.u;
    const kL = keyAtX(0);
    const kR = keyAtX(W);
    let lo = 0;
    let hi = br.length;
    while (lo < hi) { const mid = (lo + hi) >>> 1; if (u[br[mid]] < kL) lo = mid + 1; else hi = mid; }
    const lim = cutLimit();
    let lastPx = -Infinity;
    for (let j = lo; j < br.length && out.length < 3000; j++) {
      const i = br[j];
      if (i >= lim || u[i - 1] > kR) break;
      const xb = xOfKey(u[i]);
      if (xb - lastPx < 3) continue;
      lastPx = xb;
      out.push(i, xOfKey(u[i - 1]), xb);
    }
    return out;
  }

  // A faint band down the chart over each idle gap wide enough to see.
  function drawBreakBands(c, W, H) {
    const vb = visibleBreaks(W);
    c.fillStyle = 'rgba(255,255,255,0.035)';
    for (let k = 0; k < vb.length; k += 3) {
      const w = vb[k + 2] - vb[k + 1];
      if (w >= 4) c.fillRect(vb[k + 1] + 1, AXIS_H, w - 2, H - AXIS_H);
    }
  }

  // A zigzag on the axis over each idle gap, with its length when it fits.
  function labelBreaks(c, W) {
    const vb = visibleBreaks(W);
    c.strokeStyle = '#5d6773';
    c.lineWidth = 1;
    let lastZig = -Infinity;
    for (let k = 0; k < vb.length; k += 3) {
      const i = vb[k];
      const xa = vb[k + 1];
      const xb = vb[k + 2];
      const xm = (xa + xb) / 2;
      if (xb - xa < 2 || xm - lastZig < 8) { // too narrow to see: a dim tick on the axis
        c.fillStyle = '#3a424e';
        c.fillRect(Math.round(xm), AXIS_H - 4, 1, 3);
        continue;
      }
      lastZig = xm;
      c.beginPath();
      c.moveTo(xm - 3, AXIS_H - 2);
      c.lineTo(xm + 1, AXIS_H - 6);
      c.lineTo(xm - 1, AXIS_H - 8);
      c.lineTo(xm + 3, AXIS_H - 12);
      c.stroke();
      const label = `+${fmtSpan(EV.t[i] - EV.t[i - 1])}`;
      const tw = c.measureText(label).width;
      if (xb - xa >= tw + 8) {
        c.fillStyle = '#6f7a88';
        c.fillText(label, xm - tw / 2, 3);
        S.ticks.push({ x: xm - tw / 2 - 3, w: tw + 6, label, gap: true });
      }
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
    if (!h || !EV.n) { tooltip.hidden = true; return; }
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
    if (i > 0 && Math.abs(keyOf(i - 1) - k) <= Math.abs(keyOf(i) - k)) i--;
    const tAt = timeAtKey(k);
    const fine = S.xmode === 'seq' || timeAtKey(keyAtX(x + 100)) - timeAtKey(keyAtX(x - 100)) < 0.2;
    const label = `t=${tAt.toFixed(fine ? 6 : 3)} s${i >= 0 ? `  seq ${EV.seq[i]}` : ''}`;
    S.cursorLabel = label;
    c.font = '11px system-ui, sans-serif';
    const w = c.measureText(label).width + 10;
    const lx = Math.min(S.W - w - 2, Math.max(2, x + 6));
    // opaque over the whole axis strip: the ticks under it are hidden, not overprinted
    c.fillStyle = '#1a1e25';
    c.fillRect(lx - 3, 0, w + 6, AXIS_H - 1);
    c.fillStyle = 'rgba(255,180,84,0.95)';
    c.fillRect(lx, 5, w, 18);
    c.fillStyle = '#13161b';
    c.textBaseline = 'middle';
    c.fillText(label, lx + 5, 14);
    const hit = h.hit;
    if (hit >= 0) {
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

  function summary(i) {
    const type = evType(i);
    const parts = [`seq ${EV.seq[i]}  t=${EV.t[i]}  ${kindName(i)}${type ? ` ${type}` : ''}`, actorPath(i)];
    const peer = peerPath(i);
    if (peer) parts.push(`peer ${peer}`);
    const detail = str(EV.detail[i]);
    if (detail) parts.push(detail.length > 200 ? `${detail.slice(0, 200)}…` : detail);
    return parts.join('\n');
  }

  // -- hit testing -------------------------------------------------------------------------
  // The event the tooltip is about at (x, y): the nearest one there, or -1.
  function hoverHit(x, y) {
    const cand = hitCandidates(x, y);
    return cand.length ? cand.reduce((a, b) => (b[0] < a[0] ? b : a))[1] : -1;
  }

  function hitCandidates(x, y) {
    syncTop();
    if (y < AXIS_H) return [];
    const row = Math.floor((y - AXIS_H + rowTop()) / ROW_H);
    if (row < 0 || row >= S.rows.length) return [];
    const lim = cutLimit();
    const lo = lowerBoundKey(keyAtX(x - HIT_PX));
    const hi = Math.min(lim, upperBoundKey(keyAtX(x + HIT_PX)));
    const out = [];
    for (let i = lo; i < hi && out.length < 5000; i++) {
      if (!EV.f[i] || rowOfEvent(i) !== row) continue;
      out.push([Math.abs(xOf(i) - x), i]);
    }
    return out;
  }

  function hitTest(x, y, cycle) {
    syncTop();
    const cand = hitCandidates(x, y);
    if (cand.length) {
      let best = Infinity;
      for (const c of cand) if (c[0] < best) best = c[0];
      const ties = cand.filter((c) => c[0] <= best + 0.5).map((c) => c[1]);
      if (S.preferSeq !== null) {
        const p = ties.find((i) => EV.seq[i] === S.preferSeq);
        if (p !== undefined) return p;
      }
      const rank = (i) => {
        const st = markStyle(i);
        const k = EV.kind[i];
        return st && st.major ? 0 : k === K_SEND || k === K_RECEIVE ? 1 : 2;
      };
      ties.sort((a, b) => rank(a) - rank(b) || EV.seq[a] - EV.seq[b]);
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
        const idx = upperBoundKey(keyAtX(x));
        const from = lowerBoundSlices(idx - S.maxSliceSpan - 1);
        const check = (s) => {
          const r = SL.r[s];
          const h = SL.h[s];
          return EV.f[r] && r < lim && VROW[EV.actor[r]] === row && xOf(r) <= x &&
            (h >= 0 && h < lim ? xOf(h) : Infinity) >= x - 2;
        };
        for (let j = from; j < SL.n && SL.r[j] <= idx; j++) if (check(j)) return SL.r[j];
        for (const s of openNow()) if (check(s)) return SL.r[s];
      }
    }
    // an arrow near the pointer (as drawn in the last frame)
    const ha = S.hitArrows;
    let bestD = 4;
    let bestM = -1;
    for (let j = 0; j < ha.length; j += 5) {
      const d = segDist(x, y, ha[j], ha[j + 1], ha[j + 2], ha[j + 3]);
      if (d < bestD) { bestD = d; bestM = AR.m[ha[j + 4]]; }
    }
    return bestM >= 0 ? MS.send[bestM] : -1;
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
  function causalChain(i) {
    // Follow `cause` (the msg_id the emitting actor was handling) back to the send of that
    // message, then that send's cause, and so on. Returns the send events, nearest first.
    const chain = [];
    const seen = new Set();
    let cur = EV.cause[i];
    const m = EV.msg[i];
    if (cur < 0 && m >= 0 && EV.kind[i] !== K_SEND && MS.send[m] >= 0 && MS.send[m] !== i) {
      chain.push({ ev: MS.send[m], id: MS.id[m], own: true });
      seen.add(MS.id[m]);
      cur = EV.cause[MS.send[m]];
    }
    while (cur >= 0 && !seen.has(cur) && chain.length < 200) {
      seen.add(cur);
      const mm = msgById.get(cur);
      if (mm === undefined || MS.send[mm] < 0) {
        const r = mm === undefined ? -1 : MS.recv[mm];
        chain.push({ ev: r, id: cur, missing: r < 0 });
        break;
      }
      chain.push({ ev: MS.send[mm], id: cur });
      cur = EV.cause[MS.send[mm]];
    }
    return chain;
  }

  function select(i, reveal) {
    S.sel = i;
    S.selChain = new Set();
    if (i >= 0) {
      for (const link of causalChain(i)) S.selChain.add(link.id);
      if (reveal) revealEvent(i);
    }
    renderDetails();
    hookEmit('selection'); // panels hook (panels.js)
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

  function seqLink(i, text) {
    if (i === undefined || i === null || i < 0) return el('span', { class: 'none', text: text || '—' });
    return el('a', { class: 'seq', href: '#', 'data-seq': String(EV.seq[i]), text: text || `seq ${EV.seq[i]}` });
  }

  function fmtDur(d) {
    if (d === 0) return '0 s';
    return d < 0.001 ? `${(d * 1e6).toFixed(1)} µs` : d < 1 ? `${(d * 1e3).toFixed(3)} ms` : `${d.toFixed(3)} s`;
  }

  // The fields of event i as the trace has them (null: absent).
  function fieldsOf(i) {
    return {
      seq: EV.seq[i], t: EV.t[i], kind: kindName(i), actor: actorPath(i), peer: peerPath(i),
      msg_id: num(EV.msgId[i]), cause: num(EV.cause[i]), corr: num(EV.corr[i]),
      msg_type: str(EV.type[i]), outcome: str(EV.outcome[i]), detail: str(EV.detail[i]),
    };
  }

  function renderDetails() {
    const box = $('details');
    box.textContent = '';
    const i = S.sel;
    if (i < 0) {
      box.append(el('p', { class: 'hint', text: 'Click an event, an arrow or a handler slice to see its fields, payload and causal chain.' }));
      return;
    }
    const ev = fieldsOf(i);
    const type = evType(i);
    const cancelled = ev.outcome === 'cancelled' && ev.kind !== 'cancel';
    box.append(el('h3', { text: `seq ${ev.seq} · ${ev.kind}${type ? ` · ${type}` : ''}${cancelled ? ' · cancelled' : ''}` }));
    const tbl = el('table');
    for (const f of ['seq', 't', 'kind', 'actor', 'peer', 'msg_id', 'cause', 'corr', 'msg_type', 'outcome', 'detail']) {
      let v = ev[f];
      let cell;
      if (f === 'cause' && v !== null && EV.kind[i] === K_HTTP_SERVE) {
        const at = eventBySeq(v); // the request sent, in the calling process (merged traces)
        cell = el('td', null, seqLink(at, `#${v}`), at >= 0 ? ` ${str(EV.detail[at]) || ''}` : '');
      } else if (f === 'cause' && v !== null) {
        const m = msgById.get(v);
        const to = m === undefined ? -1 : (MS.recv[m] >= 0 ? MS.recv[m] : MS.send[m]);
        cell = el('td', null, seqLink(to, `#${v}`), m !== undefined && MS.type[m] >= 0 ? ` ${STR[MS.type[m]]}` : '');
      } else if (f === 'detail' && v !== null && ev.outcome === 'cancelled') {
        // the exception's repr (a group of Cancelled()) is the detail, not the headline
        cell = el('td', null, el('details', { class: 'raw' }, el('summary', { text: 'cancelled' }), String(v)));
      } else if (f === 'corr' && v !== null && v !== ev.msg_id) {
        const m = msgById.get(v);
        cell = el('td', null, seqLink(m === undefined ? -1 : MS.send[m], `#${v}`), m !== undefined && MS.type[m] >= 0 ? ` ${STR[MS.type[m]]}` : '');
      } else {
        if (v === null) v = '—';
        cell = el('td', { text: String(v) });
      }
      tbl.append(el('tr', null, el('td', { class: 'k', text: f }), cell));
    }
    box.append(tbl);

    const m = EV.msg[i];
    if (m >= 0) {
      const send = MS.send[m];
      const recv = MS.recv[m];
      const mtype = str(MS.type[m]);
      box.append(el('h4', { text: `message #${MS.id[m]}${mtype ? ` ${mtype}` : ''}${send >= 0 && EV.corr[send] >= 0 ? ' (ask)' : ''}` }));
      const t2 = el('table');
      const row = (k, ...v) => t2.append(el('tr', null, el('td', { class: 'k', text: k }), el('td', null, ...v)));
      row('from', send >= 0 ? (peerPath(send) || '(outside any actor)') : '—');
      row('to', send >= 0 ? actorPath(send) : (recv >= 0 ? actorPath(recv) : '—'));
      row('sent', seqLink(send));
      row('received', seqLink(recv), send >= 0 && recv >= 0 ? `  queued ${fmtDur(EV.t[recv] - EV.t[send])}` : '');
      let end = MS.handle[m];
      if (end < 0 && MS.slice[m] >= 0) end = SL.h[MS.slice[m]];
      const outcome = end >= 0 ? (sliceEndedBy(end) || str(EV.outcome[end])) : null;
      const took = recv >= 0 && end >= 0 ? `  in ${fmtDur(EV.t[end] - EV.t[recv])}` : '';
      if (outcome === 'cancelled') row('cancelled', seqLink(end), took, ...causeOf(end));
      else {
        row(end < 0 || outcome === 'ok' ? 'handled' : `ended (${outcome})`, seqLink(end),
          end >= 0 ? `  ${str(EV.detail[end]) || ''}` : '', took, ...causeOf(end));
      }
      if (MS.reply[m] >= 0) {
        const replies = [MS.reply[m], ...(moreReplies.get(m) || [])];
        row('replies', ...replies.flatMap((r) => [seqLink(r), ` ${str(EV.outcome[r]) || ''} ${str(EV.detail[r]) || ''} `]));
      }
      box.append(t2);
    }

    box.append(el('h4', { text: 'payload' }));
    const pl = payloadOf(i);
    if (pl < 0) box.append(el('p', { class: 'none', text: '(none recorded)' }));
    else {
      let text = PL[pl];
      try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* shown as sent */ }
      box.append(el('pre', { text }));
    }

    box.append(el('h4', { text: 'causal chain' }));
    const chain = causalChain(i);
    if (!chain.length) {
      box.append(el('p', { class: 'none', text: 'no cause (not emitted while handling a message)' }));
    } else {
      const ol = el('ol');
      for (const link of chain) {
        if (link.ev < 0) { ol.append(el('li', { class: 'none', text: `#${link.id} (not in this trace)` })); continue; }
        const s = link.ev;
        const what = link.own ? 'sent as' : 'while handling';
        ol.append(el('li', null, `${what} #${link.id} ${evType(s) || ''} `,
          el('br'), `${peerPath(s) || '(outside)'} → ${actorPath(s)} `, seqLink(s), ` t=${EV.t[s]}`));
      }
      box.append(ol);
    }
  }

  // 'cancelled' when event i ended a handler slice without a handle event (its actor
  // stopped while the handler ran); else null.
  function sliceEndedBy(i) { return EV.kind[i] === K_STOP ? 'cancelled' : null; }

  // The message that caused event i's cancellation or failure, as a link: [' by ', link].
  function causeOf(i) {
    if (i < 0 || !causedOutcome(i)) return [];
    if (EV.kind[i] === K_HTTP_SERVE) return ['  by ', seqLink(eventBySeq(EV.cause[i]), `#${EV.cause[i]}`)];
    const m = msgById.get(EV.cause[i]);
    if (m === undefined) return [`  by #${EV.cause[i]}`];
    const at = MS.recv[m] >= 0 ? MS.recv[m] : MS.send[m];
    return ['  by ', seqLink(at, `#${MS.id[m]}${MS.type[m] >= 0 ? ` ${STR[MS.type[m]]}` : ''}`)];
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

  // Scroll (and, if collapsed away, expand) so that event i is on screen. Returns false if
  // a filter hides it.
  function revealEvent(i) {
    refilter();
    if (i >= cutLimit()) return false;
    const a = NODES[EV.actor[i]];
    if (a.row < 0 && a.vrow >= 0) expandTo(a);
    const row = rowOfEvent(i);
    if (row < 0) return false;
    const viewH = S.H - AXIS_H;
    const y = row * ROW_H;
    if (y < tree.scrollTop + ROW_H || y > tree.scrollTop + viewH - 2 * ROW_H) {
      tree.scrollTop = Math.max(0, y - viewH / 2);
    }
    const x = xOf(i);
    if (x < 30 || x > S.W - 30) {
      // far away: center it; just off an edge: shift it a little into view
      const to = x < -S.W || x > 2 * S.W ? S.W / 2 : (x < 30 ? 80 : S.W - 80);
      S.k0 = keyOf(i) - to * S.kpp;
      S.autoFit = false;
      if (S.follow) setFollow(false);
    }
    schedule();
    return true;
  }

  // -- the actor tree panel ----------------------------------------------------------------
  // Virtualized: a pool of row elements as large as the visible part of the tree (plus a
  // margin) is moved and relabelled as the tree scrolls; the inner box only has the tree's
  // full height, so the scroll bar is right.
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
    const selNode = S.sel >= 0 ? S.rows[rowOfEvent(S.sel)] : null;
    for (let k = 0; k < rowPool.length; k++) {
      const d = rowPool[k];
      const r = r0 + k;
      if (k >= need) { d.style.display = 'none'; continue; }
      const n = S.rows[r];
      d.style.display = '';
      d.style.top = `${r * ROW_H}px`;
      d.style.paddingLeft = `${4 + n.indent * 12}px`;
      d.dataset.path = n.path;
      d.title = n.path;
      d.className = `tree-row${r % 2 ? ' odd' : ''}${n === selNode ? ' sel' : ''}${n.real ? '' : ' implied'}${n.stopped ? ' stopped' : ''}`;
      d.children[0].textContent = n.children.length ? (n.collapsed ? '▸' : '▾') : '';
      // a long path loses its start, not its leaf (the full path is the row's title)
      const fits = Math.max(8, Math.floor((tree.clientWidth - 4 - n.indent * 12 - 50) / 6.8));
      d.children[1].textContent = n.label.length > fits ? `…${n.label.slice(n.label.length - fits + 1)}` : n.label;
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

  // -- status, progress, lists, scrubber ------------------------------------------------------
  function renderStatus() {
    const st = $('status');
    const conn = S.connected ? 'connected'
      : S.everConnected ? 'disconnected, retrying'
        : retry >= 2 ? 'cannot connect (server gone, or a missing / wrong ?token=)' : 'connecting…';
    const parts = [
      conn + (S.mode ? ` (${S.mode})` : ''),
      `${EV.n.toLocaleString()}${S.total != null && !S.ended ? ` / ${S.total.toLocaleString()}` : ''} events`,
      `${S.filtered.toLocaleString()} shown`,
      `${S.arrowCount.toLocaleString()} arrows`,
      `${S.dropped.toLocaleString()} dropped`,
      `${S.lineErrors.length} line error${S.lineErrors.length === 1 ? '' : 's'}`,
    ];
    if (S.ended) parts.push('ended');
    if (S.latency !== null) parts.push(`rtt ${S.latency} ms`);
    const text = parts.join(' · ');
    if (st.textContent !== text) st.textContent = text;
    const cls = S.connected ? (S.ended ? 'ended' : 'ok') : (S.ended ? 'ended' : 'bad');
    if (st.className !== cls) st.className = cls;
    const title = S.header ? `header: ${JSON.stringify(S.header)}` : '';
    if (st.title !== title) st.title = title;
  }

  // The progress bar over the chart while a replay arrives (it is drawn once complete).
  function renderProgress() {
    S.lastProgress = performance.now();
    const box = $('progress');
    const on = loadingReplay();
    if (box.hidden !== !on) box.hidden = !on;
    if (!on) return;
    const total = S.total || 0;
    const pct = total ? Math.floor(Math.min(1, EV.n / total) * 100) : 0;
    const text = total ? `loading ${EV.n} / ${total} events (${pct} %)` : `loading ${EV.n} events`;
    const label = box.lastElementChild;
    if (label.textContent === text) return;
    label.textContent = text;
    box.firstElementChild.firstElementChild.style.width = `${pct}%`;
  }

  // The type and VMM suggestions (datalists): only the values matching what is typed, at
  // most SUGGEST of them, filled when the field is focused or edited (a trace may know
  // thousands of VMMs: they are not all put in the page).
  const SUGGEST = 100;
  function suggest(listId, values, input) {
    const q = input.value.trim().toLowerCase();
    const out = [];
    for (const v of values) if (!q || v.toLowerCase().includes(q)) out.push(v);
    out.sort(collator.compare);
    $(listId).replaceChildren(...out.slice(0, SUGGEST).map((v) => el('option', { value: v })));
  }

  function updateLists() {
    if (!S.listsDirty) return;
    S.listsDirty = false;
    const active = document.activeElement;
    if (active === $('filter-type')) suggest('type-list', S.types, active);
    if (active === $('filter-vmm')) { scanPayloadVmms(); suggest('vmm-list', S.vmms, active); }
    // a type typed before it was known becomes an exact match once it is
    const type = $('filter-type').value.trim();
    if (type && S.types.has(type) !== S.F.typeExact) readFilterInputs();
  }

  function updateScrubber() {
    const sc = $('scrubber');
    const lab = $('scrub-label');
    if (!EV.n) { sc.min = '0'; sc.max = '0'; sc.value = '0'; lab.textContent = ''; return; }
    const min = EV.seq[0];
    const max = EV.seq[EV.n - 1];
    if (sc.min !== String(min)) sc.min = String(min);
    if (sc.max !== String(max)) sc.max = String(max);
    const v = S.cutSeq === null ? max : S.cutSeq;
    if (sc.value !== String(v)) sc.value = String(v);
    const lim = cutLimit();
    const t = lim ? EV.t[lim - 1] : 0;
    const text = `seq ${v.toLocaleString()} / ${max.toLocaleString()} · t=${t.toFixed(3)} s`;
    if (lab.textContent !== text) lab.textContent = text;
  }

  function setCut(seq) {
    if (!EV.n) return;
    const max = EV.seq[EV.n - 1];
    S.cutSeq = seq >= max ? null : Math.max(EV.seq[0], seq);
    S.fullDirty = true;
    if (S.follow) followEnd();
    schedule();
  }

  function stepPlay() {
    if (!EV.n) { S.playing = false; return; }
    const max = EV.seq[EV.n - 1];
    const cur = S.cutSeq === null ? max : S.cutSeq;
    const secs = Number($('speed').value) || 20;
    const step = Math.max(1, Math.round((max - EV.seq[0]) / (secs * 60)));
    const next = cur + step;
    if (next >= max) { setCut(max); setPlaying(false); } else setCut(next);
  }

  function setPlaying(on) {
    S.playing = on;
    $('play').textContent = on ? '⏸' : '▶';
    if (on) {
      if (S.cutSeq === null && EV.n) setCut(EV.seq[0]);
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
    return `${proto}//${location.host}/ws?format=columns${token ? `&token=${encodeURIComponent(token)}` : ''}`;
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
      if (T.timing.wsOpen === null) T.timing.wsOpen = performance.now();
      clearInterval(pingTimer);
      pingTimer = setInterval(() => {
        if (ws && ws.readyState === 1) { pingSent = performance.now(); ws.send('{"type":"ping"}'); }
      }, 15000);
      schedule();
    };
    ws.onmessage = (e) => {
      const t0 = performance.now();
      const data = e.data;
      let m;
      try { m = JSON.parse(data); } catch (err) { return; }
      const t1 = performance.now();
      onFrame(m);
      const t2 = performance.now();
      const tm = T.timing;
      tm.frames++;
      tm.bytes += data.length;
      tm.parseMs += t1 - t0;
      tm.ingestMs += t2 - t1;
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

  function onData() {
    const now = performance.now();
    S.lastData = now;
    const tm = T.timing;
    if (tm.firstData === null) tm.firstData = now;
    tm.lastData = now;
    if (loadingReplay()) {
      // no draw until the replay is complete; the progress bar, now and then
      if (now - S.lastProgress > PROGRESS_EVERY_MS) { renderProgress(); renderStatus(); }
      return;
    }
    schedule();
  }

  function onFrame(m) {
    switch (m.type) {
      case 'hello': {
        const wsOpen = T.timing.wsOpen;
        T.timing = newTiming();
        T.timing.wsOpen = wsOpen;
        T.timing.hello = performance.now();
        T.ready = false;
        resetData();
        S.header = m.header || null;
        S.mode = m.mode || null;
        S.total = typeof m.total === 'number' ? m.total : null;
        if (S.total) {
          // one allocation for a replay's events (the stores grow by half when full)
          reserve(EV, S.total);
          reserve(MS, Math.ceil(S.total / 3));
          reserve(SL, Math.ceil(S.total / 4));
          reserve(AR, Math.ceil(S.total / 4));
        }
        renderProgress();
        break;
      }
      case 'columns':
        ingestColumns(m);
        onData();
        return;
      case 'events':
        ingestObjects(m.events);
        onData();
        return;
      case 'dropped':
        S.dropped = m.count;
        break;
      case 'line_error':
        S.lineErrors.push({ line: m.line, error: m.error });
        renderErrors();
        break;
      case 'end':
        S.ended = true;
        T.timing.end = performance.now();
        if (typeof m.build_s === 'number') T.timing.serverBuildS = m.build_s;
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
    const k = KINDS.length;
    KINDS.push(kind);
    KIND_INDEX.set(kind, k);
    MARK_OF.push({ shape: 'dotSmall', color: '#d5dce5', label: kind });
    S.F.kinds.add(kind);
    const bar = $('filter-kinds');
    bar.insertBefore(kindCheckbox(kind), bar.querySelector('.all'));
    return k;
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
    for (const k of ['unhandled', 'drop', 'timeout', 'cancel', 'fail', 'restart', 'spawn', 'stop', 'task_start', 'watch_set', 'http_send', 'http_serve']) {
      item(MARKS[k].shape, MARKS[k].color, k);
    }
    item('pending', CAUSE_COLORS.http, 'HTTP request → the process serving it (merged traces)');
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
    const vmms = () => { scanPayloadVmms(); return S.vmms; };
    for (const [id, list, values] of [['filter-type', 'type-list', () => S.types], ['filter-vmm', 'vmm-list', vmms]]) {
      const input = $(id);
      const fill = () => suggest(list, values(), input);
      input.addEventListener('focus', fill);
      input.addEventListener('input', fill);
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
      if (sel >= 0) revealEvent(sel);
    });
    $('zoom-in').onclick = () => zoomAt(S.W / 2, 0.5);
    $('zoom-out').onclick = () => zoomAt(S.W / 2, 2);
    $('fit').onclick = () => { S.autoFit = true; fit(); };
    $('expand-all').onclick = () => { for (const n of NODES) n.collapsed = false; S.fullDirty = true; schedule(); };
    $('collapse-all').onclick = () => { for (const n of NODES) n.collapsed = n.children.length > 0 && n.depth >= 1; S.fullDirty = true; schedule(); };
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
        if (!d.moved && Math.abs(dx) + Math.abs(dy) > 3) {
          d.moved = true;
          canvas.classList.add('dragging');
          S.hover = null;
        }
        if (d.moved) {
          S.k0 = d.k0 - dx * S.kpp;
          tree.scrollTop = d.top - dy;
          if (dx) { S.autoFit = false; if (S.follow && dx > 0) setFollow(false); }
          schedule();
          return;
        }
      }
      if (e.target !== canvas || loadingReplay()) { if (S.hover) { S.hover = null; scheduleOverlay(); } return; }
      const rect = canvas.getBoundingClientRect();
      const x = e.clientX - rect.left;
      const y = e.clientY - rect.top;
      S.hover = { x, y, hit: hoverHit(x, y) };
      scheduleOverlay();
    });
    window.addEventListener('mouseup', (e) => {
      const d = S.drag;
      S.drag = null;
      canvas.classList.remove('dragging');
      if (!d || d.moved || e.target !== canvas || loadingReplay()) return;
      const rect = canvas.getBoundingClientRect();
      const x = e.clientX - rect.left;
      const y = e.clientY - rect.top;
      refilter();
      const hit = hitTest(x, y, true);
      S.lastClick = { x, y };
      S.preferSeq = null;
      select(hit, false);
    });
    const unhover = () => { S.hover = null; tooltip.hidden = true; scheduleOverlay(); };
    canvas.addEventListener('mouseleave', unhover);
    window.addEventListener('blur', unhover);

    $('details').addEventListener('click', (e) => {
      const a = e.target.closest('a.seq');
      if (!a) return;
      e.preventDefault();
      const i = eventBySeq(Number(a.dataset.seq));
      if (i >= 0) select(i, true);
    });

    window.addEventListener('keydown', (e) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
      if (e.key === '+' || e.key === '=') zoomAt(S.W / 2, 0.5);
      else if (e.key === '-') zoomAt(S.W / 2, 2);
      else if (e.key === 'f') { S.autoFit = true; fit(); }
      else if (e.key === 'ArrowLeft') { S.k0 -= S.W * S.kpp * 0.2; S.autoFit = false; setFollow(false); schedule(); }
      else if (e.key === 'ArrowRight') { S.k0 += S.W * S.kpp * 0.2; S.autoFit = false; schedule(); }
      else if (e.key === 'Escape') select(-1, false);
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
        arrowsTotal: AR.n,
        events: EV.n,
        filtered: S.filtered,
        dropped: S.dropped,
        lineErrors: S.lineErrors.length,
        connected: S.connected,
        ended: S.ended,
        mode: S.mode,
        selected: S.sel >= 0 ? EV.seq[S.sel] : null,
        cutoff: S.cutSeq,
      };
    },
    /** Select the event with this seq (fills #details, scrolls it into view). */
    select(seq) {
      const i = eventBySeq(Number(seq));
      select(i, i >= 0);
      return i >= 0;
    },
    /** Scroll the event into view and return its position in page (client) coordinates;
     * a click there selects this event, even if other events share the spot. */
    eventPosition(seq) {
      const i = eventBySeq(Number(seq));
      if (i < 0 || !revealEvent(i)) return null;
      S.preferSeq = EV.seq[i];
      syncTop();
      const rect = canvas.getBoundingClientRect();
      const y = yOfRow(rowOfEvent(i));
      return { x: rect.left + xOf(i), y: rect.top + y };
    },
    /** Where the event is drawn now, in page (client) coordinates, without scrolling;
     * null if it is hidden (filter, collapsed ancestor) or not drawn yet. */
    position(seq) {
      const i = eventBySeq(Number(seq));
      if (i < 0) return null;
      refilter();
      syncTop();
      const y = yOfRow(rowOfEvent(i));
      if (y === null || i >= cutLimit()) return null;
      S.preferSeq = EV.seq[i]; // a click there picks this one among events at the same spot
      const rect = canvas.getBoundingClientRect();
      return { x: rect.left + xOf(i), y: rect.top + y };
    },
    /** The fields of the event with this seq, as the trace has them (null if unknown). */
    event(seq) {
      const i = eventBySeq(Number(seq));
      if (i < 0) return null;
      const pl = payloadOf(i);
      return { ...fieldsOf(i), payload: EV.pl[i] >= 0 ? PL[pl] : null, shown: EV.f[i] === 1 };
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
    /** Show virtual seconds [from, to] (event indices in "seq" mode). */
    setView(from, to) {
      refilter();
      const key = (v) => (S.xmode === 'seq' ? v : keyOfT(v));
      S.kpp = (key(to) - key(from)) / Math.max(50, S.W);
      clampZoom();
      S.k0 = key(from);
      clampPan();
      S.autoFit = false;
      setFollow(false);
      schedule();
    },
    /** The view: the virtual times at its left and right edges, its width (px), the axis
     * ticks drawn ({x, label}, gap labels with gap: true) and the cursor's label. */
    view() {
      const t = (x) => timeAtKey(keyAtX(x));
      return {
        mode: S.xmode, width: S.W, t0: t(0), t1: t(S.W), k0: S.k0, kpp: S.kpp,
        ticks: (S.ticks || []).map((k) => ({ x: k.x, label: k.label, gap: !!k.gap })),
        cursor: S.hover ? S.cursorLabel : null, tooltip: tooltip.hidden ? null : tooltip.textContent,
      };
    },
    /** The handler slice of the message that the event with this seq belongs to: how it
     * ended ('ok', 'error', 'cancelled' or 'running') and where it is drawn (page
     * coordinates; null if hidden), or null if the message has no slice. */
    slice(seq) {
      const i = eventBySeq(Number(seq));
      const m = i < 0 ? -1 : EV.msg[i];
      const sl = m < 0 ? -1 : MS.slice[m];
      if (sl < 0) return null;
      refilter();
      syncTop();
      const r = SL.r[sl];
      const h = SL.h[sl];
      const lim = cutLimit();
      const done = h >= 0 && h < lim;
      const style = !done ? 'running' : ['ok', 'error', 'running', 'cancelled'][sliceStyle(h)];
      const y = EV.f[r] ? yOfRow(VROW[EV.actor[r]]) : null;
      const rect = canvas.getBoundingClientRect();
      return {
        style, receive: EV.seq[r], end: done ? EV.seq[h] : null,
        x1: y === null ? null : rect.left + xOf(r), x2: y === null ? null : rect.left + (done ? xOf(h) : xOf(lim - 1)),
        y: y === null ? null : rect.top + y,
      };
    },
    /** The cause links drawn in the last frame: [{from, to, how}] (seqs; how: 'cancelled'
     * or 'error'). */
    causeLinks() { return (S.causeLinks || []).slice(); },
    /** The virtual time under page x (what the cursor label says). */
    timeAt(clientX) { return timeAtKey(keyAtX(clientX - canvas.getBoundingClientRect().left)); },
    /** The fraction of the chart's width between where the shown events at quantiles
     * (1 - q) / 2 and (1 + q) / 2 are drawn (q = 0.98: the middle 98 % of them). */
    eventsSpan(q = 0.98) {
      refilter();
      const shown = [];
      for (let i = 0; i < cutLimit(); i++) if (EV.f[i]) shown.push(i);
      if (!shown.length) return 0;
      const at = (p) => xOf(shown[Math.min(shown.length - 1, Math.floor(p * shown.length))]);
      return (at((1 + q) / 2) - at((1 - q) / 2)) / S.W;
    },
    setXMode(mode) { $('xmode').value = mode; $('xmode').dispatchEvent(new Event('change')); },
    setCutoff(seq) { setPlaying(false); if (seq == null) { S.cutSeq = null; S.fullDirty = true; schedule(); } else setCut(Number(seq)); },
    kinds: KINDS.slice(),
    /** Load and render timings (see window.__trioxide.timing), ms since navigation start. */
    metrics() { return { ...T.timing, ready: T.ready, now: performance.now() }; },
    /** Bytes held in typed arrays (columns and indexes) and the number of payload texts. */
    memory() {
      let bytes = 0;
      for (const t of [EV, MS, SL, AR]) for (const k of Object.keys(t.fields)) bytes += t[k].byteLength;
      return { typedArrayBytes: bytes, payloads: PL.length, strings: STR.length, nodes: NODES.length, messages: MS.n };
    },
  };

  // ---- panels hook (panels.js) ----
  // What the side panels (panels.js) read and call. They never write to what data()
  // returns. Subscribers (on(name, fn)): 'data' (events arrived, the replay ended, or the
  // data was reset), 'cursor' (the scrubber's cutoff changed): both checked at the end of
  // each drawn frame, so they follow the draw throttle; 'filter' (a filter or the search
  // changed): when the next frame has applied it; 'selection': right after select()
  // redrew #details.
  const hookSubs = { data: [], cursor: [], filter: [], selection: [] };
  const hookSeen = { str: null, n: -1, ended: null, cut: undefined, kinds: null };
  function hookEmit(name) {
    for (const fn of hookSubs[name]) {
      try { fn(); } catch (e) { console.error(`panels: ${name} subscriber failed`, e); }
    }
  }
  function hookTick() {
    if (hookSeen.str !== STR || hookSeen.n !== EV.n || hookSeen.ended !== S.ended) {
      hookSeen.str = STR; hookSeen.n = EV.n; hookSeen.ended = S.ended;
      hookEmit('data');
    }
    if (hookSeen.cut !== S.cutSeq) { hookSeen.cut = S.cutSeq; hookEmit('cursor'); }
    // readFilterInputs() gives F a new kinds set each time it reads the inputs
    if (hookSeen.kinds !== S.F.kinds) { hookSeen.kinds = S.F.kinds; hookEmit('filter'); }
  }
  Object.assign(window.viewer, {
    /** Subscribe fn to 'data', 'cursor', 'filter' or 'selection' (see above). */
    on(name, fn) {
      if (!hookSubs[name]) throw new Error(`unknown viewer event ${JSON.stringify(name)}`);
      hookSubs[name].push(fn);
    },
    /** The ingested columns and indexes (read-only), with the filters applied. */
    data() {
      if (S.inputsPending) readFilterInputs();
      refilter();
      return {
        EV, MS, SL, AR, STR, PL, NODES, KINDS, msgById, moreReplies, lim: cutLimit(),
        filtered: S.filtered, search: S.F.search, filtering: !!(S.F.actor || eventFilterActive()),
        ended: S.ended, mode: S.mode, sel: S.sel, typeOf, payloadOf,
      };
    },
    /** Select the event with this seq, show its details, and bring it on screen zoomed
     * in: to [seq, toSeq] when toSeq is given (a slice, an ask), else around the event. */
    jump(seq, toSeq) {
      const i = eventBySeq(Number(seq));
      if (i < 0) return false;
      const j = toSeq == null ? -1 : eventBySeq(Number(toSeq));
      const lo = j >= 0 ? Math.min(i, j) : Math.max(0, i - 10);
      const hi = j >= 0 ? Math.max(i, j) : Math.min(EV.n - 1, i + 10);
      const a = keyOf(lo);
      const span = Math.max(keyOf(hi) - a, S.xmode === 'seq' ? 10 : 1e-3);
      if (j >= 0 || span * 1.5 < S.W * S.kpp) this.setView(a - span * 0.25, a + span * 1.25);
      select(i, true);
      return true;
    },
  });
  // ---- end panels hook ----

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
    // A deep link (trioxide view T --focus vmm-vcr): open filtered to that VMM, zoomed to
    // its events (the view fits what the filters let through until the user zooms).
    const focus = new URLSearchParams(location.search).get('focus');
    if (focus) $('filter-vmm').value = focus;
    readFilterInputs();
    resize();
    connect();
    schedule();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
