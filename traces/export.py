"""Export a trace to Perfetto (Chrome Trace Event Format JSON) or OpenTelemetry (OTLP/JSON).

Both exporters are pure functions of the events (and optional header): the same trace
always gives byte-identical output, so exports can be diffed and checked into fixtures.

**Perfetto / chrome://tracing** (:func:`to_perfetto`): one process, one thread track per
actor (``tid`` by first appearance). A message's handler is a complete slice (``"X"``)
from ``receive`` to ``handle`` on the receiver's track; every other step is an instant
on the track of the actor it concerns, except ``send``, which is drawn on the *sender's*
track (``"(outside)"`` for sends from outside any actor) so that the message's flow arrow
starts there and ends on the handler slice. Ask replies get a flow arrow from the
replier to a ``reply received`` instant on the asker's track (when the asker is an actor).
The events are written in timestamp order, each flow event right after the slice or
instant it belongs to, so importers bind every arrow to the right event.

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
its producer span. Ids are derived by hashing (header seed, ``msg_id``, role). Other steps
that belong to a message (replies, drops, timeouts, cancels, tasks and spawns caused by a
handler) become span events. Times are ``t`` in nanoseconds, so virtual time 0 is the
Unix epoch.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from ._event import SCHEMA_VERSION, TraceEvent, TraceHeader

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

#: Receive details meaning a message was taken inside another handler (no slice of its own).
_TAKEN = frozenset({"selective", "interrupt"})

_PID = 1
_TICK_NS = 1_000  # the 1 µs minimum step between two runtime steps on the Perfetto timeline

# OTLP enums (integers, as the OTLP/JSON encoding requires).
_SPAN_KIND_PRODUCER = 4
_SPAN_KIND_CONSUMER = 5
_STATUS_CODE_ERROR = 2

_decode_json = msgspec.json.Decoder().decode
_encode_json = msgspec.json.Encoder().encode


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


def _payload(event: TraceEvent) -> Any:
    raw = event.payload
    if len(raw) == 0:
        return None
    try:
        return _decode_json(raw)
    except msgspec.DecodeError:
        return bytes(raw).decode("utf-8", "replace")


def _payload_text(event: TraceEvent) -> str | None:
    raw = event.payload
    if len(raw) == 0:
        return None
    return bytes(raw).decode("utf-8", "replace")


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


def _event_args(e: TraceEvent) -> dict[str, Any]:
    """A step's fields as Perfetto args (absent fields left out)."""
    args: dict[str, Any] = {"kind": e.kind, "seq": e.seq, "actor": e.actor}
    t = _seconds(e.t)
    if t is not None:
        args["t"] = t
    for key in ("peer", "msg_id", "cause", "corr", "msg_type", "detail", "outcome"):
        value = getattr(e, key)
        if value is not None:
            args[key] = value
    payload = _payload(e)
    if payload is not None:
        args["payload"] = payload
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
        event["bp"] = "e"  # bind to the enclosing slice: the handler
    return event


def _step_name(e: TraceEvent) -> str:
    return f"{e.kind} {e.msg_type}" if e.msg_type else e.kind


def _slice(
    events: list[TraceEvent], disp: list[int], mid: int, m: _Message, end_ns: int, tid: int
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
    payload = _payload(r)
    if payload is None and s is not None:
        payload = _payload(s)
    if payload is not None:
        args["payload"] = payload
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


def to_perfetto(
    events: Iterable[TraceEvent], *, header: TraceHeader | None = None
) -> dict[str, Any]:
    """The trace as Chrome Trace Event Format JSON (load it in ui.perfetto.dev).

    Returns ``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}``; see
    the module docstring for the layout and the time axis.
    """
    evs = _ordered(events)
    msgs = _messages(evs)
    disp = _display_ns(evs)
    end_ns = (disp[-1] if disp else 0) + _TICK_NS  # where unfinished handlers end
    tracks = _Tracks()
    out: list[dict[str, Any]] = []
    reply_flows: set[int] = set()

    for i, e in enumerate(evs):
        ts = disp[i]
        kind = e.kind
        mid = e.msg_id
        m = msgs.get(mid) if mid is not None else None
        if kind == "receive" and m is not None and m.receive == i:
            assert mid is not None
            tid = tracks(e.actor)
            if m.is_slice(evs):
                out.append(_slice(evs, disp, mid, m, end_ns, tid))
            else:
                out.append(_instant(_step_name(e), "msg", ts, tid, _event_args(e)))
            if m.send is not None:
                name = evs[m.send].msg_type or e.msg_type or "message"
                out.append(_flow("f", mid, "msg", name, ts, tid))
            continue
        if kind == "handle" and m is not None and m.end == i:
            continue  # the end of a slice already written
        if kind == "send":
            tid = tracks(e.peer if e.peer is not None else OUTSIDE_TRACK)
            tracks(e.actor)
            out.append(_instant(_step_name(e), "msg", ts, tid, _event_args(e)))
            if m is not None and m.send == i and m.receive is not None:
                assert mid is not None
                name = e.msg_type or evs[m.receive].msg_type or "message"
                out.append(_flow("s", mid, "msg", name, ts, tid))
            continue
        tid = tracks(e.actor)
        cat = "reply" if kind == "reply" else kind
        out.append(_instant(_step_name(e), cat, ts, tid, _event_args(e)))
        if kind == "reply" and e.peer is not None and e.corr is not None:
            flow_id = REPLY_FLOW_ID_BASE + e.corr
            if flow_id not in reply_flows:
                reply_flows.add(flow_id)
                asker = tracks(e.peer)
                out.append(_flow("s", flow_id, "reply", "reply", ts, tid))
                # An anchor on the asker's track for the arrow to end on (importers bind a
                # flow end to the event at its timestamp; a stale one would do otherwise).
                anchor: dict[str, Any] = {"seq": e.seq, "corr": e.corr, "replier": e.actor}
                if math.isfinite(e.t):
                    anchor["t"] = e.t
                if e.outcome is not None:
                    anchor["outcome"] = e.outcome
                if e.detail is not None:
                    anchor["detail"] = e.detail
                out.append(_instant("reply received", "reply", ts, asker, anchor))
                out.append(_flow("f", flow_id, "reply", "reply", ts, asker))

    meta: list[dict[str, Any]] = [
        {
            "name": "process_name",
            "ph": "M",
            "ts": 0,
            "pid": _PID,
            "tid": 0,
            "args": {"name": "trioxide"},
        }
    ]
    for path, tid in tracks.tids.items():
        meta.append(
            {
                "name": "thread_name",
                "ph": "M",
                "ts": 0,
                "pid": _PID,
                "tid": tid,
                "args": {"name": path},
            }
        )
        meta.append(
            {
                "name": "thread_sort_index",
                "ph": "M",
                "ts": 0,
                "pid": _PID,
                "tid": tid,
                "args": {"sort_index": tid},
            }
        )
    return {
        "traceEvents": meta + out,
        "displayTimeUnit": "ms",
        "otherData": _other_data(header),
    }


def write_perfetto(
    events: Iterable[TraceEvent],
    path: str | os.PathLike[str],
    header: TraceHeader | None = None,
) -> None:
    """Write :func:`to_perfetto` of *events* to *path* as compact JSON."""
    _write(path, to_perfetto(events, header=header))


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


def _time(t: float) -> str:
    return str(max(_ns(t), 0))


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
    t: float,
    attributes: list[dict[str, Any]],
) -> dict[str, Any]:
    span: dict[str, Any] = {"traceId": trace_id, "spanId": span_id}
    if parent is not None:
        span["parentSpanId"] = parent["spanId"]
    span["name"] = name
    span["kind"] = kind
    span["startTimeUnixNano"] = _time(t)
    span["endTimeUnixNano"] = _time(t)
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


def _span_event(e: TraceEvent) -> dict[str, Any]:
    attrs = [_attr("trioxide.actor", e.actor), _attr("trioxide.seq", e.seq)]
    for key in ("peer", "msg_id", "corr", "msg_type", "detail"):
        value = getattr(e, key)
        if value is not None:
            attrs.append(_attr(f"trioxide.{key}", value))
    return {"timeUnixNano": _time(e.t), "name": e.kind, "attributes": attrs}


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


def to_otlp(
    events: Iterable[TraceEvent],
    *,
    header: TraceHeader | None = None,
    service_name: str = "trioxide",
) -> dict[str, Any]:
    """The trace as OTLP/JSON (an ``ExportTraceServiceRequest``), e.g. for an OTel collector's
    ``otlpjsonfile`` receiver or ``POST /v1/traces``; see the module docstring."""
    evs = _ordered(events)
    msgs = _messages(evs)
    ids = _Ids(header)
    last_t = evs[-1].t if evs else 0.0
    spans: list[dict[str, Any]] = []
    producers: dict[int, dict[str, Any]] = {}
    consumers: dict[int, dict[str, Any]] = {}

    def span_of(msg_id: int | None) -> dict[str, Any] | None:
        if msg_id is None:
            return None
        return consumers.get(msg_id) or producers.get(msg_id)

    for i, e in enumerate(evs):
        mid = e.msg_id
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
            text = _payload_text(e)
            if text is not None:
                attrs.append(_attr("messaging.message.body.size", len(e.payload)))
                attrs.append(_attr("trioxide.payload", text))
            span = _span(
                trace_id,
                ids.span(mid, "send"),
                parent,
                f"{e.msg_type or 'message'} send",
                _SPAN_KIND_PRODUCER,
                e.t,
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
                e.t,
                attrs,
            )
            if producer is not None:
                span["links"] = [{"traceId": producer["traceId"], "spanId": producer["spanId"]}]
            if m.end is not None:
                end = evs[m.end]
                span["endTimeUnixNano"] = _time(end.t)
                if end.outcome is not None:
                    attrs.append(_attr("trioxide.outcome", end.outcome))
                if end.detail is not None:
                    attrs.append(_attr("trioxide.detail", end.detail))
                if end.outcome == "error":
                    span["status"] = {"code": _STATUS_CODE_ERROR, "message": end.detail or ""}
            elif m.is_slice(evs):
                span["endTimeUnixNano"] = _time(last_t)
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
            owner.setdefault("events", []).append(_span_event(e))

    for span in spans:  # a fixed key order, whatever was added when
        for key in ("events", "links", "status"):
            if key in span:
                span[key] = span.pop(key)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _resource_attrs(header, service_name)},
                "scopeSpans": [{"scope": {"name": "trioxide"}, "spans": spans}],
            }
        ]
    }


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
) -> None:
    """Write :func:`to_otlp` of *events* to *path* as compact JSON."""
    _write(path, to_otlp(events, header=header))


def _write(path: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    with open(path, "wb") as f:
        f.write(_encode_json(doc))
        f.write(b"\n")
