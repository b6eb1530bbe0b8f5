// trioxide trace viewer: the panels under the chart, and the payload diff in #details.
//
// * findings: slowest handlers, longest asks, errors, timeouts, cancellations, restarts and
//   explorer violations, over every event received so far;
// * matches: the events that pass the search and filters, in seq order (the first
//   MATCH_CAP of them, with their count);
// * actors: one row per actor at the cursor (the scrubber's seq; live: the newest event):
//   mailbox depth, handled, busy time, age of the handler in progress, restarts.
// Every table sorts by a click on a column header; a click on a row jumps to its event
// (window.viewer.jump). The payload diff: when the selected event belongs to a message with
// a payload, the fields that changed since the previous message of the same type to the
// same actor (if there is none: since the latest earlier payload holding an object with the
// same "id", e.g. the VCR a ReplaceVcr replaces).
//
// Everything is derived here from the columns viewer.js ingested (window.viewer.data(),
// read-only); panels.js never changes them. Recomputed when the viewer reports new data, a
// cursor move or a filter change, at most every THROTTLE_MS (or four times what the last
// render took) while data streams in, and only for the panel on screen.
'use strict';

(() => {
  const V = window.viewer;
  if (!V || typeof V.on !== 'function') return; // a viewer.js without the panels hook

  const TOP = 50; // rows kept per duration finding (slowest handlers, longest asks)
  const POINT_CAP = 1000; // rows kept per point finding (errors, timeouts, ...)
  const MATCH_CAP = 200;
  const ROW_CAP = 200; // table rows put in the page
  const THROTTLE_MS = 400;
  const CATS = [
    ['slow', 'slowest handlers'], ['ask', 'longest asks'], ['error', 'errors'],
    ['timeout', 'timeouts'], ['cancel', 'cancellations'], ['restart', 'restarts'],
    ['violation', 'violations'],
  ];
  const CAT_RANK = new Map(CATS.map(([k], r) => [k, r]));
  const CAT_LABEL = new Map(CATS);

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
      }
    }
    for (const kid of kids) if (kid != null) e.append(kid);
    return e;
  }

  function fmtDur(d) {
    if (d === null || d === undefined) return '';
    if (d === 0) return '0 s';
    const a = Math.abs(d);
    return a < 0.001 ? `${(d * 1e6).toFixed(1)} µs` : a < 1 ? `${(d * 1e3).toFixed(3)} ms` : `${d.toFixed(3)} s`;
  }
  const fmtT = (t) => t.toFixed(3);
  const clip = (s, n) => (s && s.length > n ? `${s.slice(0, n)}…` : s || '');

  // -- a sortable table -------------------------------------------------------------------
  // cols: [{key, label, num, fmt(row) -> text, title}]; rows: objects with the column keys
  // and `seq` (the event a click jumps to), optionally `to` (the end of its span).
  // state: {sort: key or null (the rows' own order), desc}.
  function renderTable(box, cols, rows, state, onSorted) {
    const sorted = rows.slice();
    if (state.sort) {
      const col = cols.find((c) => c.key === state.sort);
      const dir = state.desc ? -1 : 1;
      const key = state.sort;
      sorted.sort((a, b) => {
        const x = a[key];
        const y = b[key];
        if (x === y) return a.seq - b.seq;
        if (x === null || x === undefined) return 1; // blanks last either way
        if (y === null || y === undefined) return -1;
        if (col && col.num) return (x - y) * dir;
        return String(x).localeCompare(String(y), undefined, { numeric: true }) * dir;
      });
    }
    const head = el('tr');
    for (const c of cols) {
      const mark = state.sort === c.key ? (state.desc ? ' ▼' : ' ▲') : '';
      head.append(el('th', { 'data-key': c.key, class: c.num ? 'num' : '', title: c.title || `sort by ${c.label}` }, c.label + mark));
    }
    const body = el('tbody');
    for (const r of sorted.slice(0, ROW_CAP)) {
      const tr = el('tr', { 'data-seq': String(r.seq) });
      if (r.to !== undefined && r.to !== null) tr.dataset.to = String(r.to);
      for (const c of cols) {
        const v = r[c.key];
        const td = el('td', { class: c.num ? 'num' : '', text: c.fmt ? c.fmt(r) : (v === null || v === undefined ? '' : String(v)) });
        if (c.num && v !== null && v !== undefined) td.dataset.value = String(v);
        if (c.wide) td.title = td.textContent;
        tr.append(td);
      }
      body.append(tr);
    }
    const table = el('table', { class: 'ptable' }, el('thead', null, head), body);
    table.querySelector('thead').addEventListener('click', (e) => {
      const th = e.target.closest('th');
      if (!th) return;
      const key = th.dataset.key;
      const col = cols.find((c) => c.key === key);
      if (state.sort === key) state.desc = !state.desc;
      else { state.sort = key; state.desc = !!(col && col.num); }
      onSorted();
    });
    body.addEventListener('click', (e) => {
      const tr = e.target.closest('tr');
      if (!tr) return;
      for (const o of body.querySelectorAll('tr.sel')) o.classList.remove('sel');
      tr.classList.add('sel');
      V.jump(Number(tr.dataset.seq), tr.dataset.to === undefined ? null : Number(tr.dataset.to));
    });
    box.replaceChildren(table);
    if (sorted.length > ROW_CAP) box.append(el('p', { class: 'hint', text: `first ${ROW_CAP} of ${sorted.length} rows shown` }));
  }

  // -- derived data -----------------------------------------------------------------------
  function kindIndex(d) {
    const k = {};
    d.KINDS.forEach((name, i) => { k[name] = i; });
    return k;
  }
  const strOf = (d, sid) => (sid >= 0 ? d.STR[sid] : null);
  const pathOf = (d, node) => (node >= 0 ? d.NODES[node].path : null);

  // Keeps the `cap` largest values offered (sorted, largest first).
  function topN(cap) {
    const items = [];
    return {
      items,
      offer(v, item) {
        if (items.length >= cap && v <= items[items.length - 1][0]) return;
        let lo = 0;
        let hi = items.length;
        while (lo < hi) { const mid = (lo + hi) >>> 1; if (items[mid][0] >= v) lo = mid + 1; else hi = mid; }
        items.splice(lo, 0, [v, item]);
        if (items.length > cap) items.pop();
      },
    };
  }

  // The findings over every event ingested so far: rows {cat, dur, t, seq, to, actor, type, detail}.
  function computeFindings(d) {
    const { EV, MS, SL } = d;
    const K = kindIndex(d);
    const n = EV.n;
    const tEnd = n ? EV.t[n - 1] : 0;
    const rows = [];
    const points = new Map(CATS.map(([k]) => [k, 0]));
    const point = (cat, row) => {
      const c = points.get(cat);
      points.set(cat, c + 1);
      if (c < POINT_CAP) rows.push({ cat, ...row });
    };
    const sliceDur = (m) => {
      const s = m >= 0 ? MS.slice[m] : -1;
      if (s < 0) return null;
      const h = SL.h[s];
      return h >= 0 ? EV.t[h] - EV.t[SL.r[s]] : null;
    };
    // asks given up (cancel, timeout) by their ask's msg_id, for the asks never answered
    const givenUp = new Map();
    const base = (i) => ({
      t: EV.t[i], seq: EV.seq[i], actor: pathOf(d, EV.actor[i]), type: strOf(d, d.typeOf(i)),
      detail: clip(strOf(d, EV.detail[i]), 300),
    });
    // A cancellation reads as what caused it (the trace's cause), not as the raw exception.
    const cancelled = (i) => {
      const c = EV.cause[i];
      const m = c >= 0 ? d.msgById.get(c) : undefined;
      return m === undefined ? 'cancelled' : `cancelled by ${strOf(d, MS.type[m])} (msg ${c})`;
    };
    for (let i = 0; i < n; i++) {
      const k = EV.kind[i];
      if (k === K.send || k === K.receive || k === K.reply) continue; // the bulk: no findings
      const outcome = strOf(d, EV.outcome[i]);
      if (k === K.handle) {
        if (outcome === 'error') point('error', { ...base(i), dur: sliceDur(EV.msg[i]) });
        else if (outcome === 'cancelled') point('cancel', { ...base(i), dur: sliceDur(EV.msg[i]), detail: `handler ${cancelled(i)}` });
      } else if (k === K.fail) point('error', { ...base(i), dur: null });
      else if (k === K.timeout || k === K.cancel) {
        const id = EV.corr[i] >= 0 ? EV.corr[i] : EV.msgId[i];
        const m = id >= 0 ? d.msgById.get(id) : undefined;
        const sent = m !== undefined && MS.send[m] >= 0 ? EV.t[MS.send[m]] : null;
        if (id >= 0 && !givenUp.has(id)) givenUp.set(id, i);
        point(k === K.timeout ? 'timeout' : 'cancel', { ...base(i), dur: sent === null ? null : EV.t[i] - sent });
      } else if (k === K.restart) point('restart', { ...base(i), dur: null });
      else if (k === K.violation) point('violation', { ...base(i), dur: null });
    }
    const slow = topN(TOP);
    for (let s = 0; s < SL.n; s++) {
      const r = SL.r[s];
      if (strOf(d, EV.detail[r])) continue; // a selective / interrupt receive: no slice
      const h = SL.h[s];
      slow.offer((h >= 0 ? EV.t[h] : tEnd) - EV.t[r], s);
    }
    for (const [dur, s] of slow.items) {
      const r = SL.r[s];
      const h = SL.h[s];
      const outcome = h >= 0 ? strOf(d, EV.outcome[h]) || d.KINDS[EV.kind[h]] : null;
      rows.push({
        cat: 'slow', dur, t: EV.t[r], seq: EV.seq[r], to: h >= 0 ? EV.seq[h] : null,
        actor: pathOf(d, EV.actor[r]), type: strOf(d, d.typeOf(r)),
        detail: h < 0 ? 'still running' : outcome === 'ok' ? 'ok'
          : outcome === 'cancelled' ? cancelled(h) : `${outcome}: ${clip(strOf(d, EV.detail[h]), 280)}`,
      });
    }
    const asks = topN(TOP);
    for (let m = 0; m < MS.n; m++) {
      const s = MS.send[m];
      if (s < 0 || EV.corr[s] !== MS.id[m]) continue; // a tell
      let end = MS.reply[m];
      if (end < 0) { const g = givenUp.get(MS.id[m]); end = g === undefined ? -1 : g; }
      asks.offer((end >= 0 ? EV.t[end] : tEnd) - EV.t[s], [m, end]);
    }
    for (const [dur, [m, end]] of asks.items) {
      const s = MS.send[m];
      const from = pathOf(d, EV.peer[s]) || '(outside any actor)';
      let detail = 'no reply yet';
      if (end >= 0) {
        const kind = d.KINDS[EV.kind[end]];
        const outcome = strOf(d, EV.outcome[end]);
        detail = kind === 'reply' ? `reply ${outcome || ''}` : `${kind} (${strOf(d, EV.detail[end]) || outcome || ''})`;
      }
      rows.push({
        cat: 'ask', dur, t: EV.t[s], seq: EV.seq[s], to: end >= 0 ? EV.seq[end] : null,
        actor: `${from} → ${pathOf(d, EV.actor[s])}`, type: strOf(d, MS.type[m]), detail,
      });
    }
    const counts = new Map(points);
    counts.set('slow', slow.items.length);
    counts.set('ask', asks.items.length);
    return { rows, counts };
  }

  // The actors at the cursor (the first d.lim events): rows {actor, depth, handled, busy,
  // age, restarts, seq (where a click goes), ...}.
  function computeActors(d) {
    const { EV, MS, SL, NODES } = d;
    const K = kindIndex(d);
    const lim = d.lim;
    const tCur = lim ? EV.t[lim - 1] : 0;
    const nn = NODES.length;
    const depth = new Int32Array(nn);
    const handled = new Int32Array(nn);
    const restarts = new Int32Array(nn);
    const busy = new Float64Array(nn);
    const oldest = new Int32Array(nn).fill(-1); // receive of the oldest handler in progress
    const last = new Int32Array(nn).fill(-1);
    const withdrawn = new Set(['cancelled', 'timeout']); // a queued ask given up: never received
    for (let i = 0; i < lim; i++) {
      const k = EV.kind[i];
      const a = EV.actor[i];
      last[a] = i;
      if (k === K.send) depth[a]++;
      else if (k === K.receive) {
        depth[a]--;
        if (strOf(d, EV.detail[i])) continue; // selective / interrupt: inside another handler
        const m = EV.msg[i];
        const s = m >= 0 ? MS.slice[m] : -1;
        const h = s >= 0 ? SL.h[s] : -1;
        if (h >= 0 && h < lim) {
          busy[a] += EV.t[h] - EV.t[i];
          if (EV.kind[h] === K.handle) handled[a]++;
        } else {
          busy[a] += tCur - EV.t[i];
          if (oldest[a] < 0) oldest[a] = i;
        }
      } else if (k === K.drop) depth[a]--;
      else if ((k === K.cancel || k === K.timeout) && withdrawn.has(strOf(d, EV.detail[i]))) depth[a]--;
      else if (k === K.restart) restarts[a]++;
    }
    const rows = [];
    for (let a = 0; a < nn; a++) {
      const node = NODES[a];
      if (!node.real || node.first < 0 || node.first >= lim) continue;
      const o = oldest[a];
      rows.push({
        actor: node.path, depth: depth[a], handled: handled[a], busy: busy[a],
        age: o >= 0 ? tCur - EV.t[o] : null, running: o >= 0 ? strOf(d, d.typeOf(o)) : null,
        restarts: restarts[a], seq: EV.seq[o >= 0 ? o : last[a]],
      });
    }
    return { rows, tCur, seq: lim ? EV.seq[lim - 1] : null };
  }

  // -- the panels ------------------------------------------------------------------------
  const P = {
    tab: 'findings', cat: 'all', open: true,
    findings: { sort: null, desc: true }, matches: { sort: null, desc: false }, actors: { sort: 'busy', desc: true },
    dirty: { findings: true, matches: true, actors: true }, last: 0, cost: 0, timer: 0,
    counts: { findings: null, matches: null, actors: null }, lastSearch: '',
  };
  let root;
  let body;
  let tabs;

  const FINDING_COLS = [
    { key: 'cat', label: 'finding', fmt: (r) => CAT_LABEL.get(r.cat) },
    { key: 'dur', label: 'duration', num: true, fmt: (r) => fmtDur(r.dur) },
    { key: 't', label: 't (s)', num: true, fmt: (r) => fmtT(r.t) },
    { key: 'seq', label: 'seq', num: true },
    { key: 'actor', label: 'actor', wide: true },
    { key: 'type', label: 'message' },
    { key: 'detail', label: 'detail', wide: true },
  ];
  const MATCH_COLS = [
    { key: 'seq', label: 'seq', num: true },
    { key: 't', label: 't (s)', num: true, fmt: (r) => fmtT(r.t) },
    { key: 'kind', label: 'kind' },
    { key: 'actor', label: 'actor', wide: true },
    { key: 'type', label: 'message' },
    { key: 'detail', label: 'detail / payload', wide: true },
  ];
  const ACTOR_COLS = [
    { key: 'actor', label: 'actor', wide: true },
    { key: 'depth', label: 'mailbox', num: true, title: 'messages sent to it and not yet received (sort)' },
    { key: 'handled', label: 'handled', num: true, title: 'handlers finished (sort)' },
    { key: 'busy', label: 'busy', num: true, fmt: (r) => fmtDur(r.busy), title: 'time spent in handlers (sort)' },
    { key: 'age', label: 'in handler for', num: true, fmt: (r) => (r.age === null ? '' : `${fmtDur(r.age)} (${r.running || '?'})`), title: 'age of the handler in progress (sort)' },
    { key: 'restarts', label: 'restarts', num: true },
  ];

  function renderFindings() {
    const d = V.data();
    const { rows, counts } = computeFindings(d);
    const total = [...counts.values()].reduce((a, b) => a + b, 0);
    P.counts.findings = total;
    const chips = el('div', { class: 'chips' });
    const chip = (key, label, count) => {
      const c = el('span', { class: `chip${P.cat === key ? ' on' : ''}${count ? '' : ' empty'}`, 'data-cat': key }, `${label} `, el('b', { text: String(count) }));
      c.onclick = () => { P.cat = key; P.dirty.findings = true; render(); };
      chips.append(c);
    };
    chip('all', 'all', total);
    for (const [k, label] of CATS) chip(k, label, counts.get(k));
    const shown = P.cat === 'all' ? rows : rows.filter((r) => r.cat === P.cat);
    // own order: by kind of finding, then the longest first, then by seq
    shown.sort((a, b) => CAT_RANK.get(a.cat) - CAT_RANK.get(b.cat) || (b.dur || 0) - (a.dur || 0) || a.seq - b.seq);
    const box = el('div', { class: 'tbox' });
    const note = el('p', { class: 'hint', text: `over all ${d.EV.n.toLocaleString()} events · top ${TOP} handlers and asks by duration · click a row to jump to it` });
    body.replaceChildren(chips, box, note);
    renderTable(box, FINDING_COLS, shown, P.findings, () => { P.dirty.findings = true; render(); });
  }

  function matchText(d, i) {
    const q = d.search;
    const det = strOf(d, d.EV.detail[i]);
    const p = d.payloadOf(i);
    const pl = p >= 0 ? d.PL[p] : null;
    if (q) {
      for (const s of [det, pl]) {
        if (!s) continue;
        const at = s.toLowerCase().indexOf(q);
        if (at >= 0) return `${at > 30 ? '…' : ''}${s.slice(Math.max(0, at - 30), at + q.length + 90)}`;
      }
    }
    return clip(det || pl || '', 120);
  }

  function renderMatches() {
    const d = V.data();
    if (!d.filtering) {
      P.counts.matches = null;
      body.replaceChildren(el('p', { class: 'hint', text: 'Type in the search box (or set a filter) to list the matching events here.' }));
      return;
    }
    const { EV } = d;
    const rows = [];
    for (let i = 0; i < d.lim && rows.length < MATCH_CAP; i++) {
      if (!EV.f[i]) continue;
      rows.push({
        seq: EV.seq[i], t: EV.t[i], kind: d.KINDS[EV.kind[i]], actor: pathOf(d, EV.actor[i]),
        type: strOf(d, d.typeOf(i)), detail: matchText(d, i),
      });
    }
    P.counts.matches = d.filtered;
    const q = $('search').value.trim();
    const others = ['filter-actor', 'filter-type', 'filter-vmm'].some((id) => $(id).value.trim()) ||
      !!$('filter-kinds').querySelector('input:not(:checked)');
    const what = d.search ? `matching “${q}”${others ? ' and the filters' : ''}` : 'passing the filters';
    const head = el('p', { class: 'count', text: `${d.filtered.toLocaleString()} event${d.filtered === 1 ? '' : 's'} ${what}${d.filtered > rows.length ? ` · the first ${rows.length} listed` : ''}` });
    const box = el('div', { class: 'tbox' });
    body.replaceChildren(head, box);
    renderTable(box, MATCH_COLS, rows, P.matches, () => { P.dirty.matches = true; render(); });
  }

  function renderActors() {
    const d = V.data();
    const { rows, tCur, seq } = computeActors(d);
    P.counts.actors = rows.length;
    const at = seq === null ? 'no events yet'
      : `state at seq ${seq.toLocaleString()} (t=${fmtT(tCur)} s)${d.lim < d.EV.n ? ' · the scrubber\'s cursor' : d.mode === 'live' && !d.ended ? ' · live' : ' · end of trace'}`;
    const box = el('div', { class: 'tbox' });
    body.replaceChildren(el('p', { class: 'count', text: at }), box);
    renderTable(box, ACTOR_COLS, rows, P.actors, () => { P.dirty.actors = true; render(); });
  }

  function renderTabs() {
    for (const b of tabs.querySelectorAll('button[data-tab]')) {
      const t = b.dataset.tab;
      b.classList.toggle('on', t === P.tab && P.open);
      // A hidden panel's count is shown only while it is up to date (never a stale 0).
      const c = t === 'matches' || t === P.tab || !P.dirty[t] ? P.counts[t] : null;
      b.lastChild.textContent = c === null ? '' : ` ${c.toLocaleString()}`;
    }
    root.classList.toggle('closed', !P.open);
  }

  // Renders the panel on screen if it is out of date: at once, or after THROTTLE_MS since
  // the last render while the viewer keeps reporting changes.
  function render() {
    clearTimeout(P.timer);
    P.timer = 0;
    if (P.tab !== 'matches') { const d = V.data(); P.counts.matches = d.filtering ? d.filtered : null; }
    if (P.open && P.dirty[P.tab]) {
      P.dirty[P.tab] = false;
      const t0 = performance.now();
      const scroll = body.scrollTop;
      if (P.tab === 'findings') renderFindings();
      else if (P.tab === 'matches') renderMatches();
      else renderActors();
      body.scrollTop = scroll;
      P.last = performance.now();
      P.cost = P.last - t0;
    }
    renderTabs();
  }

  function changed(...which) {
    for (const w of which) P.dirty[w] = true;
    if (P.timer) return;
    // at most one render per THROTTLE_MS, or per four times what the last one took
    const wait = Math.max(0, P.last + Math.max(THROTTLE_MS, 4 * P.cost) - performance.now());
    P.timer = setTimeout(render, wait);
  }

  function showTab(tab) {
    P.tab = tab;
    P.open = true;
    render();
  }

  // -- payload diff (in #details) -----------------------------------------------------------
  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const sub = (path, k) => (typeof k === 'number' ? `${path}[${k}]` : path ? `${path}.${k}` : k);

  // Field-by-field differences from a to b: [{op: changed | added | removed, path, old, new}].
  function diffJson(a, b, path, out) {
    if (isObj(a) && isObj(b)) {
      for (const k of Object.keys(a)) {
        if (!(k in b)) out.push({ op: 'removed', path: sub(path, k), old: a[k] });
        else diffJson(a[k], b[k], sub(path, k), out);
      }
      for (const k of Object.keys(b)) if (!(k in a)) out.push({ op: 'added', path: sub(path, k), new: b[k] });
    } else if (Array.isArray(a) && Array.isArray(b)) {
      const n = Math.max(a.length, b.length);
      for (let k = 0; k < n; k++) {
        if (k >= b.length) out.push({ op: 'removed', path: sub(path, k), old: a[k] });
        else if (k >= a.length) out.push({ op: 'added', path: sub(path, k), new: b[k] });
        else diffJson(a[k], b[k], sub(path, k), out);
      }
    } else if (a !== b && JSON.stringify(a) !== JSON.stringify(b)) {
      out.push({ op: 'changed', path: path || '(the whole payload)', old: a, new: b });
    }
    return out;
  }

  const parse = (text) => { try { return { ok: true, v: JSON.parse(text) }; } catch (e) { return { ok: false }; } };

  // Objects with a string "id" inside v, outermost first: [[path, object]].
  function idObjects(v) {
    const out = [];
    const queue = [['', v]];
    while (queue.length && out.length < 20) {
      const [path, x] = queue.shift();
      if (isObj(x)) {
        if (typeof x.id === 'string') out.push([path, x]);
        for (const [k, y] of Object.entries(x)) if (y && typeof y === 'object') queue.push([sub(path, k), y]);
      } else if (Array.isArray(x)) x.forEach((y, k) => { if (y && typeof y === 'object') queue.push([sub(path, k), y]); });
    }
    return out;
  }

  // What the message sent at event s (with payload cur) is compared with: the previous
  // send of the same type to the same actor, else the latest earlier payload with an object
  // of the same "id" as one in cur. {against: event index, a, b, prefix, via} or null.
  function baseline(d, s, cur) {
    const { EV } = d;
    const K = kindIndex(d);
    const actor = EV.actor[s];
    const ty = d.typeOf(s);
    for (let j = s - 1; j >= 0; j--) {
      if (EV.kind[j] !== K.send || EV.actor[j] !== actor || d.typeOf(j) !== ty || EV.pl[j] < 0) continue;
      const p = parse(d.PL[EV.pl[j]]);
      return { against: j, a: p.ok ? p.v : d.PL[EV.pl[j]], b: cur, prefix: '', via: null };
    }
    const limit = Math.max(0, s - 200000);
    for (const [path, obj] of idObjects(cur)) {
      const needle = `"id":${JSON.stringify(obj.id)}`;
      for (let j = s - 1; j >= limit; j--) {
        if (EV.kind[j] !== K.send || EV.pl[j] < 0 || !d.PL[EV.pl[j]].includes(needle)) continue;
        const p = parse(d.PL[EV.pl[j]]);
        if (!p.ok) continue;
        const found = idObjects(p.v).find(([, o]) => o.id === obj.id);
        if (found) return { against: j, a: found[1], b: obj, prefix: path, via: { id: obj.id, path: found[0] } };
      }
    }
    return null;
  }

  const show = (v) => clip(JSON.stringify(v), 160);

  function renderDiff() {
    const box = $('details');
    const old = box.querySelector('.pdiff');
    if (old) old.remove();
    const d = V.data();
    const i = d.sel;
    if (i < 0) return;
    const m = d.EV.msg[i];
    const s = m >= 0 ? d.MS.send[m] : -1;
    if (s < 0 || d.EV.pl[s] < 0) return;
    const cur = parse(d.PL[d.EV.pl[s]]);
    const type = strOf(d, d.typeOf(s)) || 'message';
    const to = pathOf(d, d.EV.actor[s]);
    const sec = el('div', { class: 'pdiff' }, el('h4', { text: 'payload diff' }));
    const base = cur.ok ? baseline(d, s, cur.v) : null;
    const link = (j) => el('a', { class: 'seq', href: '#', 'data-seq': String(d.EV.seq[j]), text: `seq ${d.EV.seq[j]}` });
    if (!base) {
      sec.append(el('p', { class: 'none', text: `the first ${type} to ${to}: nothing to compare with` }));
    } else if (!base.via) {
      sec.append(el('p', { class: 'cap' }, `against the previous ${type} to this actor, `, link(base.against)));
    } else {
      const jt = strOf(d, d.typeOf(base.against)) || 'message';
      sec.append(el('p', { class: 'cap' }, `no earlier ${type} to this actor; ${base.prefix || 'the payload'} (id ${JSON.stringify(base.via.id)}) against the same object in ${jt} `,
        link(base.against), base.via.path ? ` (${base.via.path})` : ''));
    }
    if (base) {
      const changes = diffJson(base.a, base.b, base.prefix, []);
      if (!changes.length) sec.append(el('p', { class: 'none', text: 'no field changed' }));
      else {
        const t = el('table', { class: 'difft' });
        for (const c of changes.slice(0, 200)) {
          const val = c.op === 'changed' ? `${show(c.old)} → ${show(c.new)}` : c.op === 'added' ? show(c.new) : show(c.old);
          t.append(el('tr', { class: c.op }, el('td', { class: 'op', text: c.op }),
            el('td', null, el('div', { class: 'path', text: c.path }), el('div', { class: 'val', text: val }))));
        }
        sec.append(t);
        if (changes.length > 200) sec.append(el('p', { class: 'none', text: `first 200 of ${changes.length} differences` }));
      }
    }
    // just before the payload, if the details show one
    const ph = [...box.querySelectorAll('h4')].find((h) => h.textContent === 'payload');
    if (ph) ph.before(sec); else box.append(sec);
  }

  // -- wiring -------------------------------------------------------------------------------
  function build() {
    root = $('panels');
    if (!root) return false;
    const grip = el('div', { class: 'grip', title: 'drag to resize' });
    tabs = el('nav', { class: 'ptabs' });
    for (const [t, label] of [['findings', 'findings'], ['matches', 'matches'], ['actors', 'actors']]) {
      const b = el('button', { type: 'button', 'data-tab': t }, label, el('span', { class: 'cnt' }));
      b.onclick = () => { if (P.tab === t && P.open) { P.open = false; renderTabs(); } else showTab(t); };
      tabs.append(b);
    }
    const toggle = el('button', { type: 'button', class: 'ptoggle', title: 'show / hide the panels' }, '▾');
    toggle.onclick = () => { P.open = !P.open; toggle.textContent = P.open ? '▾' : '▴'; render(); };
    tabs.append(el('span', { class: 'sep' }), toggle);
    body = el('div', { class: 'pbody' });
    root.replaceChildren(grip, tabs, body);
    grip.addEventListener('mousedown', (e) => {
      e.preventDefault();
      const y0 = e.clientY;
      const h0 = root.getBoundingClientRect().height;
      const move = (ev) => { root.style.height = `${Math.max(60, Math.min(window.innerHeight * 0.8, h0 + y0 - ev.clientY))}px`; };
      const up = () => { window.removeEventListener('mousemove', move); window.removeEventListener('mouseup', up); };
      window.addEventListener('mousemove', move);
      window.addEventListener('mouseup', up);
    });
    return true;
  }

  function init() {
    if (!build()) return;
    V.on('data', () => changed('findings', 'matches', 'actors'));
    V.on('cursor', () => changed('matches', 'actors'));
    V.on('filter', () => {
      const q = V.data().search;
      // typing a search shows its matches
      if (q && q !== P.lastSearch && P.tab !== 'matches') P.tab = 'matches';
      P.lastSearch = q;
      changed('matches');
    });
    V.on('selection', renderDiff);
    Object.assign(V, {
      /** Panels test hook: show a panel ('findings', 'matches', 'actors') now. */
      showPanel(tab) { P.dirty[tab] = true; showTab(tab); },
    });
    render();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
