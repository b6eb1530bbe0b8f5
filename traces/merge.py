"""``merge_traces``: the traces of several processes (a rack) as one event stream.

Each rack process writes its own trace (``trioxide agent``, ``hypervisor``, ``nexus``).
Their HTTP events name W3C spans: a client's ``http_send`` the span it sent
(``span_id``), a server's ``http_serve`` the span it was called from (``parent_span``).
``merge_traces`` joins them:

* **One stream.** Every event of every file once, renumbered ``seq`` 1..N; ``msg_id``,
  ``cause`` and ``corr`` renumbered with them (an id naming no event of its file - a
  flight-recorder dump that lost its start - gets a number above N of its own, so
  pairs still pair and nothing collides).
* **Actors by process.** ``actor`` (and an actor ``peer``) is prefixed with the process
  name: the header's ``process``, else the ``command``'s name, else the file's stem
  (made unique: ``sled-1``, ``sled-1#2``).
* **One time axis.** Each file's ``t`` is moved by its anchor (header ``started_at`` is
  the wall-clock instant at which the trace clock read ``clock_at_start``) onto the
  first anchored file's clock; a file without an anchor is left as it is (counted in
  ``unanchored``).
* **Causal links across processes.** A server's ``http_serve`` gets as ``cause`` the
  (merged) ``msg_id`` of the ``http_send`` whose span it names, and as ``peer`` the
  calling actor; that ``http_send``'s ``peer`` becomes the server's lane. Spans named
  by no file stay unlinked (``unmatched``).
* **Causal order.** Within a file the order is kept. Across files, events go by aligned
  time, except that a request is never put before the client's ``http_send`` that
  caused it, nor a client's ``http_end`` before the server's ``http_served`` (clocks of
  different processes may disagree by a little); times are then made non-decreasing
  (``clamped`` counts the events moved forward in time for that).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import msgspec

from ._event import SCHEMA_VERSION, TraceEvent, TraceHeader
from ._reader import LineError, read_trace

__all__ = [
    "MergeSource",
    "MergeStatistics",
    "MergedTrace",
    "merge_files",
    "merge_traces",
    "write_trace",
]

_replace = msgspec.structs.replace
#: Kinds whose ``peer`` is not an actor path (a service address, a client's address).
_HTTP = frozenset({"http_send", "http_end", "http_serve", "http_served"})


@dataclass(frozen=True)
class MergeSource:
    """One trace to merge: its header, its events (expanded, in file order) and, if it
    came from a file, where (named in errors and used for the process name)."""

    header: TraceHeader
    events: Sequence[TraceEvent]
    path: str | None = None


@dataclass(frozen=True)
class MergeStatistics:
    """``links``: server requests linked to their client's request; ``unmatched``: server
    requests naming a span no file has; ``unanchored``: files without a clock anchor;
    ``clamped``: events whose time was raised to keep the stream's time non-decreasing;
    ``dangling``: ids naming no event of their file."""

    files: int
    events: int
    links: int
    unmatched: int
    unanchored: int
    clamped: int
    dangling: int


@dataclass
class MergedTrace:
    header: TraceHeader
    events: list[TraceEvent]
    processes: list[str]
    statistics: MergeStatistics
    errors: list[tuple[str, LineError]] = field(default_factory=list)


def _process_name(src: MergeSource, index: int) -> str:
    """The header's ``process``, else the last word of its command, else the file's name."""
    h = src.header
    if h.process:
        return h.process
    if len(h.command) >= 2:
        return h.command[-1]
    if src.path is not None:
        return Path(src.path).stem
    return f"trace{index + 1}"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        clean = name.replace("/", "-") or "process"
        n = seen.get(clean, 0) + 1
        seen[clean] = n
        out.append(clean if n == 1 else f"{clean}#{n}")
    return out


def _anchor(h: TraceHeader) -> float | None:
    """Wall-clock seconds minus trace-clock seconds (``None`` if the header has none)."""
    if h.started_at is None or h.clock_at_start is None:
        return None
    try:
        wall = datetime.fromisoformat(h.started_at).timestamp()
    except ValueError:
        return None
    return wall - h.clock_at_start


def merge_traces(sources: Sequence[MergeSource]) -> MergedTrace:
    """Merge *sources* (see the module docstring)."""
    names = [_process_name(s, i) for i, s in enumerate(sources)]
    for name in list(names):
        # Two processes of one name (a hypervisor restarted after a crash): their files'
        # names tell them apart, when they are files.
        twins = [j for j, other in enumerate(names) if other == name]
        stems = [Path(p).stem for j in twins if (p := sources[j].path) is not None]
        if len(twins) > 1 and len(set(stems)) == len(twins):
            for j, stem in zip(twins, stems, strict=True):
                names[j] = stem
    names = _unique(names)
    events = [list(s.events) for s in sources]
    anchors = [_anchor(s.header) for s in sources]
    ref = next((a for a in anchors if a is not None), None)
    offsets = [0.0 if a is None or ref is None else a - ref for a in anchors]

    # Spans: who sent each (client requests) and who served it.
    sent: dict[str, tuple[int, int]] = {}  # span -> (file, index) of its http_send
    served_by: dict[str, list[tuple[int, int]]] = {}  # client span -> its http_serves
    answered: dict[tuple[int, int], int] = {}  # (file, serve seq) -> index of http_served
    ended: dict[tuple[int, int], int] = {}  # (file, send seq) -> index of http_end
    for f, evs in enumerate(events):
        for k, e in enumerate(evs):
            kind = e.kind
            if kind == "http_send" and e.span_id is not None:
                sent[e.span_id] = (f, k)
            elif kind == "http_serve" and e.parent_span is not None:
                served_by.setdefault(e.parent_span, []).append((f, k))
            elif kind == "http_served" and e.corr is not None:
                answered[(f, e.corr)] = k
            elif kind == "http_end" and e.corr is not None:
                ended[(f, e.corr)] = k
    # Happens-before across files: (file, index) may go only after `after[...]`.
    after: dict[tuple[int, int], tuple[int, int]] = {}
    links = unmatched = 0
    for span, serves in served_by.items():
        client = sent.get(span)
        if client is None:
            unmatched += len(serves)
            continue
        # One request, one serve - unless a client sent one traceparent twice: the first
        # serve is linked (the others' causes stay unknown, and are counted unmatched).
        (f, k), unmatched = serves[0], unmatched + len(serves) - 1
        links += 1
        after[(f, k)] = client
        cf, ck = client
        end = ended.get((cf, events[cf][ck].seq))
        answer = answered.get((f, events[f][k].seq))
        if end is not None and answer is not None:
            after[(cf, end)] = (f, answer)

    order = _causal_order(events, offsets, after)
    new_seq: dict[tuple[int, int], int] = {}  # (file, old seq) -> merged seq
    for n, (f, k) in enumerate(order, start=1):
        new_seq[(f, events[f][k].seq)] = n
    total = len(order)
    dangling: dict[tuple[int, int], int] = {}

    def renumber(f: int, old: int | None) -> int | None:
        if old is None:
            return None
        got = new_seq.get((f, old))
        if got is None:
            got = dangling.get((f, old))
            if got is None:
                got = dangling[(f, old)] = total + len(dangling) + 1
        return got

    out: list[TraceEvent] = []
    last_t = float("-inf")
    clamped = 0
    for n, (f, k) in enumerate(order, start=1):
        e = events[f][k]
        prefix = names[f] + "/"
        t = e.t + offsets[f]
        if t < last_t:
            t = last_t
            clamped += 1
        last_t = t
        peer = e.peer
        cause = renumber(f, e.cause)
        if e.kind not in _HTTP:
            peer = prefix + peer if peer is not None else None
        elif e.kind == "http_send" and e.span_id is not None:
            server = served_by.get(e.span_id)
            if server is not None:
                sf, sk = server[0]
                peer = names[sf] + "/" + events[sf][sk].actor
        elif e.kind == "http_serve" and (f, k) in after:
            cf, ck = after[(f, k)]
            caller = events[cf][ck]
            cause = new_seq[(cf, caller.seq)]
            peer = names[cf] + "/" + caller.actor
        out.append(
            _replace(
                e,
                seq=n,
                t=t,
                actor=prefix + e.actor,
                peer=peer,
                msg_id=renumber(f, e.msg_id),
                cause=cause,
                corr=renumber(f, e.corr),
                t0=None if e.t0 is None else e.t0 + offsets[f],
            )
        )
    first = sources[0].header if sources else TraceHeader()
    ref_header = next((s.header for s, a in zip(sources, anchors, strict=True) if a), first)
    header = TraceHeader(
        trioxide_trace=SCHEMA_VERSION,
        trio_version=first.trio_version,
        started_at=ref_header.started_at,
        command=["trioxide", "merge", *names],
        process="+".join(names),
        clock_at_start=ref_header.clock_at_start,
    )
    stats = MergeStatistics(
        files=len(sources),
        events=total,
        links=links,
        unmatched=unmatched,
        unanchored=sum(1 for a in anchors if a is None),
        clamped=clamped,
        dangling=len(dangling),
    )
    return MergedTrace(header, out, names, stats)


def _causal_order(
    events: list[list[TraceEvent]],
    offsets: list[float],
    after: dict[tuple[int, int], tuple[int, int]],
) -> list[tuple[int, int]]:
    """Every ``(file, index)`` once: each file in its own order, across files by aligned
    time, an event held back until what it must follow (``after``) is out. If every
    file's next event waits (clocks too far apart to agree with the links), the earliest
    goes first."""
    heads = [0] * len(events)
    done: set[tuple[int, int]] = set()
    order: list[tuple[int, int]] = []
    remaining = sum(len(evs) for evs in events)
    while remaining:
        best = fallback = -1
        best_t = fallback_t = float("inf")
        for f, evs in enumerate(events):
            k = heads[f]
            if k >= len(evs):
                continue
            t = evs[k].t + offsets[f]
            if t < fallback_t:
                fallback, fallback_t = f, t
            need = after.get((f, k))
            if need is not None and need not in done:
                continue
            if t < best_t:
                best, best_t = f, t
        f = best if best >= 0 else fallback
        # Run on in this file while it stays first (the common case: long runs of one).
        evs = events[f]
        k = heads[f]
        limit = _next_start(events, heads, offsets, f)
        while True:
            order.append((f, k))
            if after:
                done.add((f, k))
            k += 1
            remaining -= 1
            if k >= len(evs) or evs[k].t + offsets[f] > limit:
                break
            need = after.get((f, k))
            if need is not None and need not in done:
                break
        heads[f] = k
    return order


def _next_start(
    events: list[list[TraceEvent]], heads: list[int], offsets: list[float], skip: int
) -> float:
    """The earliest aligned time of another file's next event (+inf if none)."""
    low = float("inf")
    for g, evs in enumerate(events):
        if g != skip and heads[g] < len(evs):
            low = min(low, evs[heads[g]].t + offsets[g])
    return low


def merge_files(paths: Iterable[str | os.PathLike[str]]) -> MergedTrace:
    """Read and merge trace files (``ValueError`` if one's header is unusable; damaged
    lines are skipped and listed in ``errors`` with their file)."""
    sources = []
    errors: list[tuple[str, LineError]] = []
    for path in paths:
        tf = read_trace(path)
        errors += [(str(path), err) for err in tf.errors]
        sources.append(MergeSource(tf.header, tf.events, str(path)))
    merged = merge_traces(sources)
    merged.errors = errors
    return merged


_encoder = msgspec.json.Encoder()


def write_trace(
    path: str | os.PathLike[str], header: TraceHeader, events: Iterable[TraceEvent]
) -> Path:
    """Write *events* under *header* as a JSON Lines trace file; returns its path."""
    target = Path(path)
    with open(target, "wb") as f:
        f.write(_encoder.encode(header) + b"\n")
        buf = bytearray()
        for e in events:
            _encoder.encode_into(e, buf, -1)
            buf.append(10)
            if len(buf) >= 1 << 16:
                f.write(buf)
                buf.clear()
        f.write(buf)
    return target
