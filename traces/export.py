"""Export a trace to Perfetto (Chrome Trace Event Format JSON) or OpenTelemetry (OTLP/JSON).

Both exporters are pure functions of the events and header: the same trace always gives
byte-identical output (for OTLP: given a header with ``started_at``, or ``started_at_ns``),
so exports can be diffed and checked into fixtures. ``write_perfetto``/``write_otlp``
stream: the file is written an event (a span) at a time, and a payload is never decoded
into Python objects - copied as it is into Perfetto, turned into an OTLP string a chunk at
a time - so a huge payload costs about its size once.

**Perfetto / chrome://tracing** (:func:`to_perfetto`): one process, one thread track per
actor (``tid`` by first appearance). A message's handler is a complete slice (``"X"``)
from ``receive`` to ``handle`` on the receiver's track. Every flow arrow begins and ends
on a slice of its own track, as the format binds flow events to their enclosing slice:
a ``send`` is a one-tick slice on the *sender's* track (``"(outside)"`` for sends from
outside any actor, the actor's own for sends from its tasks), where the message's arrow
starts; it ends on the handler slice (``"bp": "e"``), or on a one-tick slice for a
message taken inside another handler (selective receive, interrupt). An ask's reply is
a one-tick slice on the replier's track, with an arrow to a one-tick ``reply received``
slice on the asker's (when the asker is an actor, or one of its tasks). A tick nests in
whatever handler slice is open on its track, since no other step falls inside it; every
other step is an instant. The events are written in timestamp order, each flow event
right after the slice it belongs to.

Time: ``ts`` is the trace time ``t`` in microseconds, but the runtime takes many steps at
one (virtual) instant, and zero-length slices at one timestamp would nest into, or
partially overlap, each other (Perfetto drops partially overlapping slices). So every
step is placed at ``max(t, previous step + 1 µs)``: steps keep their order, a handler that
took no virtual time still lasts at least 1 µs, and the drift from ``t`` is at most 1 µs
per step taken at the same instant, gone at the next instant that is far enough ahead.
The exact times are in each event's args (``t``, and for slices ``queued_s``/``duration_s``
in virtual seconds).

**OpenTelemetry** (:func:`to_otlp`): the OTLP/JSON encoding of an
``ExportTraceServiceRequest``. Each message gives a PRODUCER span for its send and a
CONSUMER span for its handling, linked to the producer. Both are children of the span of
the handler that sent the message (its ``cause``), so a causal chain is one trace; a
message sent outside any handler starts a new trace, with its consumer span a child of
its producer span. Ids are derived by hashing (header seed, ``msg_id``, role). An HTTP
request sent (``http_send``) or served (``http_serve``) is a CLIENT or SERVER span with
the W3C ids it carried (``trace_id``, ``span_id``, ``parent_span``), ending at its
``http_end``/``http_served``: the spans of several processes' exports join into one trace
in a collector; the messages a served request's handler sends are its children. Other steps
that belong to a message (replies, drops, timeouts, cancels, tasks and spawns caused by a
handler) become span events. Times are Unix nanoseconds: the first event at the run's
wall-clock start (the header's ``started_at``, ISO 8601, UTC if it has no zone; or
``started_at_ns``), every other at its (virtual) offset from the first. A trace whose
header has no ``started_at`` (a seeded run's header carries no wall time, so that its
file is the same byte for byte) is placed at the time of the export: Jaeger and
collectors then show it as recent, never in 1970.

**HTTP** (the kinds ``http_send``/``http_end``/``http_serve``/``http_served``): Perfetto
shows them as instants on their lane, and in a merged trace (``traces.merge``) an arrow
(a flow, category ``http``) from each request sent to the ``http_serve`` naming it.
"""

from __future__ import annotations

import codecs
import datetime
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import msgspec

from ._event import SCHEMA_VERSION, TraceEvent, TraceHeader
from ._reader import _utf8_error

__all__ = [
    "OUTSIDE_TRACK",
    "REPLY_FLOW_ID_BASE",
    "to_otlp",
    "to_perfetto",
    "write_otlp",
    "write_perfetto",
]

#: The Perfetto track of sends made outside any actor (``peer`` is ``None``).
OUTSIDE_TRACK = "(outside)"

#: Reply flow ids are ``REPLY_FLOW_ID_BASE + corr``: unique next to message flow ids
#: (``msg_id``), as Chrome DevTools keys flows by id alone; below 2**53 for JavaScript.
REPLY_FLOW_ID_BASE = 1 << 40
#: Flow ids of HTTP requests across processes (a merged trace): this plus the
#: ``http_send``'s seq, the arrow ending on the ``http_serve`` that names it as cause.
HTTP_FLOW_ID_BASE = 2 << 40

#: Receive details meaning a message was taken inside another handler (no slice of its own).
_TAKEN = frozenset({"selective", "interrupt"})

_PID = 1
_TICK_NS = 1_000  # the 1 µs minimum step between two runtime steps on the Perfetto timeline

# OTLP enums (integers, as the OTLP/JSON encoding requires).
_SPAN_KIND_SERVER = 2
_SPAN_KIND_CLIENT = 3
_SPAN_KIND_PRODUCER = 4
_SPAN_KIND_CONSUMER = 5
_STATUS_CODE_ERROR = 2

_UNIX_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_decode_json = msgspec.json.Decoder().decode
_encode_json = msgspec.json.Encoder().encode
_skip_json = msgspec.json.Decoder(msgspec.Raw).decode  # validates, builds nothing
_NUL = msgspec.Raw(b"\0")
_STREAM_CHUNK = 1 << 20  # payload bytes decoded at a time when written as a string


# -- shared analysis ---------------------------------------------------------------------


@dataclass
class _Message:
    """Where one message's steps are, as indices into the seq-ordered event list."""

    send: int | None = None
    receive: int | None = None
    end: int | None = None  # the handle event that ended its handler

    def is_slice(self, events: list[TraceEvent]) -> bool:
        """Did the receive begin a handler of its own (rather than be taken by one)?"""
        if self.receive is None:
            return False
        return self.end is not None or events[self.receive].detail not in _TAKEN


def _ordered(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    return sorted(events, key=lambda e: e.seq)


def _messages(events: list[TraceEvent]) -> dict[int, _Message]:
    """Pair each message's send, receive and end (the first of each; later ones are kept
    as plain steps)."""
    msgs: dict[int, _Message] = {}
    for i, e in enumerate(events):
        mid = e.msg_id
        if mid is None:
            continue
        if e.kind == "send":
            m = msgs.setdefault(mid, _Message())
            if m.send is None:
                m.send = i
        elif e.kind == "receive":
            m = msgs.setdefault(mid, _Message())
            if m.receive is None:
                m.receive = i
        elif e.kind == "handle":
            found = msgs.get(mid)
            if found is not None and found.receive is not None and found.end is None:
                found.end = i
    return msgs


# -- payloads: decoded for to_*, written undecoded by write_* ------------------------------


def _is_json(raw: msgspec.Raw) -> bool:
    """Whether *raw* is one valid UTF-8 JSON value (checked without decoding it)."""
    try:
        _skip_json(raw)
    except (msgspec.DecodeError, RecursionError):
        return False
    return _utf8_error(raw) is None


def _text(raw: msgspec.Raw) -> str:
    return bytes(raw).decode("utf-8", "replace")


class _Hole:
    """A payload left out of an encoded document and written into the file in its place
    by :class:`_Stream`: verbatim (JSON), or as a JSON string decoded a chunk at a time.
    It is never decoded as a whole nor copied."""

    __slots__ = ("raw", "verbatim")

    def __init__(self, raw: msgspec.Raw, verbatim: bool) -> None:
        self.raw = raw
        self.verbatim = verbatim

    def write(self, f: BinaryIO) -> None:
        if self.verbatim:
            f.write(self.raw)
            return
        f.write(b'"')
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        view = memoryview(self.raw)
        try:
            for start in range(0, len(view), _STREAM_CHUNK):
                f.write(_encode_json(decoder.decode(view[start : start + _STREAM_CHUNK]))[1:-1])
        finally:
            view.release()
        f.write(_encode_json(decoder.decode(b"", final=True))[1:-1])
        f.write(b'"')


def _json_value(event: TraceEvent) -> Any:
    """The payload as a JSON value (its text if it is not JSON), or None."""
    raw = event.payload
    if len(raw) == 0:
        return None
    return _decode_json(raw) if _is_json(raw) else _text(raw)


def _json_hole(event: TraceEvent) -> _Hole | None:
    """What :func:`_json_value` gives, to be written by a :class:`_Stream`."""
    raw = event.payload
    if len(raw) == 0:
        return None
    return _Hole(raw, verbatim=_is_json(raw))


def _text_value(event: TraceEvent) -> str | None:
    """The payload's text, or None."""
    raw = event.payload
    return _text(raw) if len(raw) else None


def _text_hole(event: TraceEvent) -> _Hole | None:
    """What :func:`_text_value` gives, to be written by a :class:`_Stream`."""
    raw = event.payload
    return _Hole(raw, verbatim=False) if len(raw) else None


#: How an exporter renders a payload: a value (to_*), or a _Hole (write_*).
_PayloadFn = Callable[[TraceEvent], Any]


class _Stream:
    """Writes a JSON document to a file one part at a time; a :class:`_Hole` in a part is
    encoded as a NUL byte (never in msgspec's JSON: it escapes control characters in
    strings) and the file gets the payload there instead."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._holes: list[_Hole] = []
        self._enc = msgspec.json.Encoder(enc_hook=self._hook)

    def _hook(self, obj: Any) -> Any:
        if isinstance(obj, _Hole):
            self._holes.append(obj)
            return _NUL
        raise NotImplementedError(f"cannot export {type(obj).__name__}")

    def raw(self, data: bytes) -> None:
        self._f.write(data)

    def value(self, obj: Any) -> None:
        data = self._enc.encode(obj)
        holes, self._holes = self._holes, []
        if not holes:
            self._f.write(data)
            return
        pieces = data.split(b"\0")
        assert len(pieces) == len(holes) + 1
        for piece, hole in zip(pieces, holes, strict=False):
            self._f.write(piece)
            hole.write(self._f)
        self._f.write(pieces[-1])

    def array(self, items: Iterable[Any]) -> None:
        self._f.write(b"[")
        for i, item in enumerate(items):
            if i:
                self._f.write(b",")
            self.value(item)
        self._f.write(b"]")


def _ns(t: float) -> int:
    """Seconds to integer nanoseconds (non-finite times count as 0)."""
    return round(t * 1e9) if math.isfinite(t) else 0


def _seconds(x: float) -> float | None:
    return x if math.isfinite(x) else None


# -- Perfetto ----------------------------------------------------------------------------


def _display_ns(events: list[TraceEvent]) -> list[int]:
    """Each step's place on the timeline: its time, nudged to stay >= 1 µs after the last."""
    out: list[int] = []
    prev: int | None = None
    for e in events:
        ns = _ns(e.t)
        if prev is not None and ns < prev + _TICK_NS:
            ns = prev + _TICK_NS
        out.append(ns)
        prev = ns
    return out


def _us(ns: int) -> float:
    return ns / 1000


def _event_args(e: TraceEvent, payload: _PayloadFn) -> dict[str, Any]:
    """A step's fields as Perfetto args (absent fields left out)."""
    args: dict[str, Any] = {"kind": e.kind, "seq": e.seq, "actor": e.actor}
    t = _seconds(e.t)
    if t is not None:
        args["t"] = t
    for key in ("peer", "msg_id", "cause", "corr", "msg_type", "detail", "outcome"):
        value = getattr(e, key)
        if value is not None:
            args[key] = value
    body = payload(e)
    if body is not None:
        args["payload"] = body
    return args


class _Tracks:
    """Actor path -> small stable ``tid``, numbered by first appearance."""

    def __init__(self) -> None:
        self.tids: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        tid = self.tids.get(name)
        if tid is None:
            tid = self.tids[name] = len(self.tids) + 1
        return tid


def _instant(name: str, cat: str, ts: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "cat": cat,
        "ph": "i",
        "s": "t",
        "ts": _us(ts),
        "pid": _PID,
        "tid": tid,
        "args": args,
    }


def _tick(name: str, cat: str, ts: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    """A step that a flow arrow begins or ends on: a slice of one tick (no other step on
    any track falls inside it, so it nests in whatever slice is open on its track)."""
    return {
        "name": name,
        "cat": cat,
        "ph": "X",
        "ts": _us(ts),
        "dur": _us(_TICK_NS),
        "pid": _PID,
        "tid": tid,
        "args": args,
    }


def _flow(ph: str, flow_id: int, cat: str, name: str, ts: int, tid: int) -> dict[str, Any]:
    event: dict[str, Any] = {
        "name": name,
        "cat": cat,
        "ph": ph,
        "id": flow_id,
        "ts": _us(ts),
        "pid": _PID,
        "tid": tid,
    }
    if ph == "f":
        event["bp"] = "e"  # bind to the enclosing slice (the one that begins here)
    return event


def _step_name(e: TraceEvent) -> str:
    return f"{e.kind} {e.msg_type}" if e.msg_type else e.kind


def _slice(
    events: list[TraceEvent],
    disp: list[int],
    mid: int,
    m: _Message,
    end_ns: int,
    tid: int,
    payload: _PayloadFn,
) -> dict[str, Any]:
    assert m.receive is not None
    r = events[m.receive]
    s = events[m.send] if m.send is not None else None
    end = events[m.end] if m.end is not None else None
    start_ns = disp[m.receive]
    stop_ns = disp[m.end] if m.end is not None else end_ns
    args: dict[str, Any] = {"msg_id": mid, "actor": r.actor}
    if math.isfinite(r.t):
        args["t"] = r.t
    if s is not None:
        if s.peer is not None:
            args["sender"] = s.peer
        if s.cause is not None:
            args["cause"] = s.cause
        queued = _seconds(r.t - s.t)
        if queued is not None:
            args["queued_s"] = queued
    corr = r.corr if r.corr is not None else (s.corr if s is not None else None)
    if corr is not None:
        args["corr"] = corr
    if r.detail:
        args["receive"] = r.detail
    if end is not None:
        duration = _seconds(end.t - r.t)
        if duration is not None:
            args["duration_s"] = duration
        if end.outcome is not None:
            args["outcome"] = end.outcome
        if end.detail is not None:
            args["detail"] = end.detail
    else:
        args["unfinished"] = True
    body = payload(r)
    if body is None and s is not None:
        body = payload(s)
    if body is not None:
        args["payload"] = body
    msg_type = r.msg_type or (s.msg_type if s is not None else None) or "message"
    event: dict[str, Any] = {
        "name": msg_type,
        "cat": "msg",
        "ph": "X",
        "ts": _us(start_ns),
        "dur": _us(max(stop_ns - start_ns, 0)),
        "pid": _PID,
        "tid": tid,
        "args": args,
    }
    if end is not None and end.outcome == "error":
        event["cname"] = "terrible"  # chrome://tracing's red
    elif end is not None and end.outcome == "cancelled":
        event["cname"] = "grey"
    return event


def _other_data(header: TraceHeader | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "source": "trioxide",
        "trace_schema": header.trioxide_trace if header is not None else SCHEMA_VERSION,
        "time": "ts is the trace time t in microseconds, each runtime step placed at least "
        "1 us after the previous one; exact times in args",
    }
    if header is not None:
        if header.seed is not None:
            data["seed"] = header.seed
        if header.trio_version:
            data["trio_version"] = header.trio_version
        if header.started_at is not None:
            data["started_at"] = header.started_at
        if header.command:
            data["command"] = " ".join(header.command)
    return data


def _perfetto_steps(
    evs: list[TraceEvent],
    msgs: dict[int, _Message],
    disp: list[int],
    tracks: _Tracks,
    payload: _PayloadFn,
) -> Iterator[dict[str, Any]]:
    """The slices, instants and flow events of *evs*, in timestamp order."""
    end_ns = (disp[-1] if disp else 0) + _TICK_NS  # where unfinished handlers end
    reply_flows: set[int] = set()
    sent = {e.seq for e in evs if e.kind == "http_send"}
    served = {e.cause for e in evs if e.kind == "http_serve" and e.cause in sent}
    for i, e in enumerate(evs):
        ts = disp[i]
        kind = e.kind
        mid = e.msg_id
        m = msgs.get(mid) if mid is not None else None
        if kind == "receive" and m is not None and m.receive == i:
            assert mid is not None
            tid = tracks(e.actor)
            if m.is_slice(evs):
                yield _slice(evs, disp, mid, m, end_ns, tid, payload)
            else:  # taken inside another handler: a tick nested in that handler's slice
                yield _tick(_step_name(e), "msg", ts, tid, _event_args(e, payload))
            if m.send is not None:
                name = evs[m.send].msg_type or e.msg_type or "message"
                yield _flow("f", mid, "msg", name, ts, tid)
            continue
        if kind == "handle" and m is not None and m.end == i:
            continue  # the end of a slice already written
        if kind == "send":
            tid = tracks(e.peer if e.peer is not None else OUTSIDE_TRACK)
            tracks(e.actor)
            yield _tick(_step_name(e), "msg", ts, tid, _event_args(e, payload))
            if m is not None and m.send == i and m.receive is not None:
                assert mid is not None
                name = e.msg_type or evs[m.receive].msg_type or "message"
                yield _flow("s", mid, "msg", name, ts, tid)
            continue
        tid = tracks(e.actor)
        args = _event_args(e, payload)
        if kind == "http_send" and e.seq in served:
            name = e.detail or kind
            yield _tick(name, "http", ts, tid, args)
            yield _flow("s", HTTP_FLOW_ID_BASE + e.seq, "http", name, ts, tid)
            continue
        if kind == "http_serve" and e.cause in served:
            assert e.cause is not None
            name = e.detail or kind
            yield _tick(name, "http", ts, tid, args)
            yield _flow("f", HTTP_FLOW_ID_BASE + e.cause, "http", name, ts, tid)
            continue
        if kind != "reply":
            yield _instant(_step_name(e), kind, ts, tid, args)
            continue
        yield _tick(_step_name(e), "reply", ts, tid, args)
        if e.peer is not None and e.corr is not None:
            flow_id = REPLY_FLOW_ID_BASE + e.corr
            if flow_id not in reply_flows:
                reply_flows.add(flow_id)
                asker = tracks(e.peer)
                yield _flow("s", flow_id, "reply", "reply", ts, tid)
                # A tick on the asker's track for the arrow to end on: the asker may be a
                # task (or a handler) of the asking actor, with or without a slice open.
                anchor: dict[str, Any] = {"seq": e.seq, "corr": e.corr, "replier": e.actor}
                if math.isfinite(e.t):
                    anchor["t"] = e.t
                if e.outcome is not None:
                    anchor["outcome"] = e.outcome
                if e.detail is not None:
                    anchor["detail"] = e.detail
                yield _tick("reply received", "reply", ts, asker, anchor)
                yield _flow("f", flow_id, "reply", "reply", ts, asker)


def _meta(name: str, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "ph": "M", "ts": 0, "pid": _PID, "tid": tid, "args": args}


def _perfetto_events(events: Iterable[TraceEvent], payload: _PayloadFn) -> Iterator[dict[str, Any]]:
    """Every element of ``traceEvents``: the track names (numbered by a first pass that
    renders no payload), then the steps."""
    evs = _ordered(events)
    msgs = _messages(evs)
    disp = _display_ns(evs)
    tracks = _Tracks()
    for _ in _perfetto_steps(evs, msgs, disp, tracks, _no_payload):
        pass
    yield _meta("process_name", 0, {"name": "trioxide"})
    for path, tid in tracks.tids.items():
        yield _meta("thread_name", tid, {"name": path})
        yield _meta("thread_sort_index", tid, {"sort_index": tid})
    yield from _perfetto_steps(evs, msgs, disp, tracks, payload)


def _no_payload(event: TraceEvent) -> None:
    return None


def to_perfetto(
    events: Iterable[TraceEvent], *, header: TraceHeader | None = None
) -> dict[str, Any]:
    """The trace as Chrome Trace Event Format JSON (load it in ui.perfetto.dev).

    Returns ``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}``; see
    the module docstring for the layout, the flows and the time axis.
    """
    return {
        "traceEvents": list(_perfetto_events(events, _json_value)),
        "displayTimeUnit": "ms",
        "otherData": _other_data(header),
    }


def write_perfetto(
    events: Iterable[TraceEvent],
    path: str | os.PathLike[str],
    header: TraceHeader | None = None,
) -> None:
    """Write :func:`to_perfetto` of *events* to *path* as compact JSON, one event at a
    time, payloads copied as they are (never decoded)."""
    with open(path, "wb") as f:
        out = _Stream(f)
        out.raw(b'{"traceEvents":')
        out.array(_perfetto_events(events, _json_hole))
        out.raw(b',"displayTimeUnit":"ms","otherData":')
        out.value(_other_data(header))
        out.raw(b"}\n")


# -- OpenTelemetry -----------------------------------------------------------------------


def _attr(key: str, value: str | int | bool | float | list[str]) -> dict[str, Any]:
    """One OTLP ``KeyValue`` (int64 values are strings in the JSON encoding)."""
    v: dict[str, Any]
    if isinstance(value, bool):
        v = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    elif isinstance(value, list):
        v = {"arrayValue": {"values": [{"stringValue": s} for s in value]}}
    else:
        v = {"stringValue": value}
    return {"key": key, "value": v}


class _Clock:
    """Trace time to OTLP time: Unix nanoseconds, as a decimal string. The first event's
    time is *start_ns*; every other is placed at its (virtual) offset from it."""

    def __init__(self, start_ns: int, events: list[TraceEvent]) -> None:
        self.start_ns = start_ns
        self.t_first = next((e.t for e in events if math.isfinite(e.t)), 0.0)

    def __call__(self, t: float) -> str:
        return str(max(self.start_ns + _ns(t - self.t_first), 0))


def _start_ns(header: TraceHeader | None, started_at_ns: int | None) -> int:
    """Where an OTLP export puts the trace's first event, in Unix nanoseconds."""
    if started_at_ns is not None:
        return started_at_ns
    if header is None or header.started_at is None:
        return time.time_ns()
    text = header.started_at
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"the trace header's started_at {text!r} is not an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return (when - _UNIX_EPOCH) // datetime.timedelta(microseconds=1) * 1000


class _Ids:
    """Deterministic OTLP ids from the header seed and message ids."""

    def __init__(self, header: TraceHeader | None) -> None:
        seed = header.seed if header is not None else None
        self._seed = "-" if seed is None else str(seed)

    def _hex(self, what: str, size: int) -> str:
        digest = hashlib.blake2b(f"trioxide/{what}/{self._seed}".encode(), digest_size=size)
        h = digest.hexdigest()
        if not h.strip("0"):  # all-zero ids are invalid in OTLP
            h = h[:-1] + "1"
        return h

    def trace(self, root_msg_id: int) -> str:
        return self._hex(f"trace/{root_msg_id}", 16)

    def span(self, msg_id: int, role: str) -> str:
        return self._hex(f"span/{msg_id}/{role}", 8)


def _span(
    trace_id: str,
    span_id: str,
    parent: dict[str, Any] | None,
    name: str,
    kind: int,
    at: str,
    attributes: list[dict[str, Any]],
) -> dict[str, Any]:
    span: dict[str, Any] = {"traceId": trace_id, "spanId": span_id}
    if parent is not None:
        span["parentSpanId"] = parent["spanId"]
    span["name"] = name
    span["kind"] = kind
    span["startTimeUnixNano"] = at
    span["endTimeUnixNano"] = at
    span["attributes"] = attributes
    return span


def _messaging_attrs(
    op_type: str, op_name: str, e: TraceEvent, mid: int, corr: int | None
) -> list[dict[str, Any]]:
    attrs = [
        _attr("messaging.system", "trioxide"),
        _attr("messaging.operation.type", op_type),
        _attr("messaging.operation.name", op_name),
        _attr("messaging.destination.name", e.actor),
        _attr("messaging.message.id", str(mid)),
    ]
    if corr is not None:
        attrs.append(_attr("messaging.message.conversation_id", str(corr)))
    return attrs


def _span_event(e: TraceEvent, clock: _Clock) -> dict[str, Any]:
    attrs = [_attr("trioxide.actor", e.actor), _attr("trioxide.seq", e.seq)]
    for key in ("peer", "msg_id", "corr", "msg_type", "detail"):
        value = getattr(e, key)
        if value is not None:
            attrs.append(_attr(f"trioxide.{key}", value))
    return {"timeUnixNano": clock(e.t), "name": e.kind, "attributes": attrs}


def _resource_attrs(header: TraceHeader | None, service_name: str) -> list[dict[str, Any]]:
    attrs = [_attr("service.name", service_name)]
    schema = header.trioxide_trace if header is not None else SCHEMA_VERSION
    attrs.append(_attr("trioxide.trace.schema", schema))
    if header is not None:
        if header.seed is not None:
            attrs.append(_attr("trioxide.seed", header.seed))
        if header.trio_version:
            attrs.append(_attr("trioxide.trio_version", header.trio_version))
        if header.started_at is not None:
            attrs.append(_attr("trioxide.started_at", header.started_at))
        if header.command:
            attrs.append(_attr("process.command_args", list(header.command)))
    return attrs


def _otlp_spans(
    events: Iterable[TraceEvent],
    header: TraceHeader | None,
    started_at_ns: int | None,
    payload: _PayloadFn,
) -> list[dict[str, Any]]:
    evs = _ordered(events)
    msgs = _messages(evs)
    ids = _Ids(header)
    clock = _Clock(_start_ns(header, started_at_ns), evs)
    last_t = evs[-1].t if evs else 0.0
    spans: list[dict[str, Any]] = []
    producers: dict[int, dict[str, Any]] = {}
    consumers: dict[int, dict[str, Any]] = {}

    def span_of(msg_id: int | None) -> dict[str, Any] | None:
        if msg_id is None:
            return None
        return consumers.get(msg_id) or producers.get(msg_id)

    http_ends = {
        e.corr: i
        for i, e in enumerate(evs)
        if e.kind in ("http_end", "http_served") and e.corr is not None
    }
    for i, e in enumerate(evs):
        mid = e.msg_id
        if e.kind in _HTTP_SPANS and mid is not None and e.trace_id and e.span_id:
            end_i = http_ends.get(mid)
            span = _http_span(e, evs[end_i] if end_i is not None else None, clock, last_t)
            caller = consumers.get(e.cause) if e.cause is not None else None
            if caller is not None and caller["traceId"] != e.trace_id:
                span["links"] = [{"traceId": caller["traceId"], "spanId": caller["spanId"]}]
            consumers[mid] = span  # what its handler's messages are children of
            spans.append(span)
            continue
        if e.kind in ("http_end", "http_served") and e.corr in consumers:
            continue  # the end of an HTTP span already written
        m = msgs.get(mid) if mid is not None else None
        if m is not None and mid is not None and e.kind == "send" and m.send == i:
            parent = consumers.get(e.cause) if e.cause is not None else None
            trace_id = parent["traceId"] if parent is not None else ids.trace(mid)
            attrs = _messaging_attrs(
                "send", "ask" if e.corr is not None else "tell", e, mid, e.corr
            )
            attrs += _extra_attrs(e, peer=e.peer, corr=e.corr, detail=e.detail)
            if e.cause is not None:
                attrs.append(_attr("trioxide.cause", e.cause))
            text = payload(e)
            if text is not None:
                attrs.append(_attr("messaging.message.body.size", len(e.payload)))
                attrs.append({"key": "trioxide.payload", "value": {"stringValue": text}})
            span = _span(
                trace_id,
                ids.span(mid, "send"),
                parent,
                f"{e.msg_type or 'message'} send",
                _SPAN_KIND_PRODUCER,
                clock(e.t),
                attrs,
            )
            producers[mid] = span
            spans.append(span)
            continue
        if m is not None and mid is not None and e.kind == "receive" and m.receive == i:
            s = evs[m.send] if m.send is not None else None
            producer = producers.get(mid)
            parent = consumers.get(s.cause) if s is not None and s.cause is not None else None
            if parent is None:
                parent = producer
            trace_id = parent["traceId"] if parent is not None else ids.trace(mid)
            corr = e.corr if e.corr is not None else (s.corr if s is not None else None)
            op_name = e.detail if e.detail else "handle"
            attrs = _messaging_attrs("process", op_name, e, mid, corr)
            attrs += _extra_attrs(e, peer=s.peer if s is not None else None, corr=corr, detail=None)
            msg_type = e.msg_type or (s.msg_type if s is not None else None) or "message"
            span = _span(
                trace_id,
                ids.span(mid, "process"),
                parent,
                f"{msg_type} process",
                _SPAN_KIND_CONSUMER,
                clock(e.t),
                attrs,
            )
            if producer is not None:
                span["links"] = [{"traceId": producer["traceId"], "spanId": producer["spanId"]}]
            if m.end is not None:
                end = evs[m.end]
                span["endTimeUnixNano"] = clock(end.t)
                if end.outcome is not None:
                    attrs.append(_attr("trioxide.outcome", end.outcome))
                if end.detail is not None:
                    attrs.append(_attr("trioxide.detail", end.detail))
                if end.outcome == "error":
                    span["status"] = {"code": _STATUS_CODE_ERROR, "message": end.detail or ""}
            elif m.is_slice(evs):
                span["endTimeUnixNano"] = clock(last_t)
                attrs.append(_attr("trioxide.unfinished", True))
            consumers[mid] = span
            spans.append(span)
            continue
        if m is not None and m.end == i and e.kind == "handle":
            continue  # the end of a consumer span already written
        # Any other step that belongs to a message becomes an event of its span.
        if e.kind == "reply":
            owner = span_of(e.corr)
        elif mid is not None:
            owner = span_of(mid)
        else:
            owner = consumers.get(e.cause) if e.cause is not None else None
        if owner is not None:
            owner.setdefault("events", []).append(_span_event(e, clock))

    for span in spans:  # a fixed key order, whatever was added when
        for key in ("events", "links", "status"):
            if key in span:
                span[key] = span.pop(key)
    return spans


def to_otlp(
    events: Iterable[TraceEvent],
    *,
    header: TraceHeader | None = None,
    service_name: str = "trioxide",
    started_at_ns: int | None = None,
) -> dict[str, Any]:
    """The trace as OTLP/JSON (an ``ExportTraceServiceRequest``), e.g. for an OTel collector's
    ``otlpjsonfile`` receiver or ``POST /v1/traces``; see the module docstring for the
    spans and their times (*started_at_ns*: where the first event goes, in Unix
    nanoseconds; default: the header's ``started_at``, else now)."""
    spans = _otlp_spans(events, header, started_at_ns, _text_value)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _resource_attrs(header, service_name)},
                "scopeSpans": [{"scope": {"name": "trioxide"}, "spans": spans}],
            }
        ]
    }


_HTTP_SPANS = {"http_send": _SPAN_KIND_CLIENT, "http_serve": _SPAN_KIND_SERVER}


def _http_span(
    e: TraceEvent, end: TraceEvent | None, clock: _Clock, last_t: float
) -> dict[str, Any]:
    """The CLIENT (``http_send``) or SERVER (``http_serve``) span of one HTTP request,
    with the W3C ids it carried, ended by its ``http_end``/``http_served``."""
    assert e.trace_id is not None and e.span_id is not None
    method, _, path = (e.detail or "").partition(" ")
    attrs = [
        _attr("http.request.method", method),
        _attr("url.path", path),
        _attr("trioxide.actor", e.actor),
        _attr("trioxide.seq", e.seq),
    ]
    if e.peer is not None:
        key = "server.address" if e.kind == "http_send" else "client.address"
        attrs.append(_attr(key, e.peer))
    if e.cause is not None:
        attrs.append(_attr("trioxide.cause", e.cause))
    span: dict[str, Any] = {"traceId": e.trace_id, "spanId": e.span_id}
    if e.parent_span is not None:
        span["parentSpanId"] = e.parent_span
    span["name"] = e.detail or e.kind
    span["kind"] = _HTTP_SPANS[e.kind]
    span["startTimeUnixNano"] = clock(e.t)
    span["endTimeUnixNano"] = clock(end.t if end is not None else last_t)
    span["attributes"] = attrs
    if end is None:
        attrs.append(_attr("trioxide.unfinished", True))
        return span
    status = (end.detail or "").split(" ", 1)[0]
    if status.isdigit():
        attrs.append(_attr("http.response.status_code", int(status)))
    if end.outcome is not None:
        attrs.append(_attr("trioxide.outcome", end.outcome))
    if end.outcome != "ok":
        span["status"] = {"code": _STATUS_CODE_ERROR, "message": end.detail or ""}
    return span


def _extra_attrs(
    e: TraceEvent, *, peer: str | None, corr: int | None, detail: str | None
) -> list[dict[str, Any]]:
    attrs: list[dict[str, Any]] = []
    if e.msg_type is not None:
        attrs.append(_attr("trioxide.msg_type", e.msg_type))
    if corr is not None:
        attrs.append(_attr("trioxide.corr", corr))
    if peer is not None:
        attrs.append(_attr("trioxide.peer", peer))
    if detail is not None:
        attrs.append(_attr("trioxide.detail", detail))
    if e.kind == "receive" and e.detail:
        attrs.append(_attr("trioxide.receive.detail", e.detail))
    return attrs


def write_otlp(
    events: Iterable[TraceEvent],
    path: str | os.PathLike[str],
    header: TraceHeader | None = None,
    *,
    service_name: str = "trioxide",
    started_at_ns: int | None = None,
) -> None:
    """Write :func:`to_otlp` of *events* to *path* as compact JSON, one span at a time,
    payloads turned into text a chunk at a time (never decoded as a whole)."""
    spans = _otlp_spans(events, header, started_at_ns, _text_hole)
    resource = {"attributes": _resource_attrs(header, service_name)}
    with open(path, "wb") as f:
        out = _Stream(f)
        out.raw(b'{"resourceSpans":[{"resource":')
        out.value(resource)
        out.raw(b',"scopeSpans":[{"scope":{"name":"trioxide"},"spans":')
        out.array(spans)
        out.raw(b"}]}]}\n")
