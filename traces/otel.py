"""Live export to OpenTelemetry (optional: needs ``opentelemetry-api``/``-sdk``).

``OtelSink`` turns trace events into spans as they happen, following the messaging
semantic conventions: a PRODUCER span per ``send`` (zero length), a CONSUMER span per
handler (``receive`` -> ``handle``) linked to its producer and parented to it (so a causal
chain is one trace), and the other steps of a handler (drops, timeouts, task events, ...)
as span events. Times are Unix nanoseconds: the first event the sink sees is placed at
``epoch_ns`` (default: when the sink was made, i.e. about when the run started), every
later one at its (virtual) offset from it - whatever the Trio clock's origin (a
``MockClock`` starts at 0, the real clock at an arbitrary point).

Like every sink it never raises into the runtime and is bounded: at most ``max_open``
producer contexts and open consumer spans are remembered (the oldest are forgotten).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from ._event import TraceEvent
from ._expand import expand

__all__ = ["OtelSink"]


class OtelSink:
    def __init__(
        self, tracer: Any = None, *, epoch_ns: int | None = None, max_open: int = 100_000
    ) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer if tracer is not None else trace.get_tracer("trioxide")
        self._epoch = time.time_ns() if epoch_ns is None else epoch_ns
        self._t_first: float | None = None  # trace time of the first event seen
        self._max = max_open
        self._producers: OrderedDict[int, Any] = OrderedDict()  # msg_id -> SpanContext
        self._consumers: OrderedDict[int, Any] = OrderedDict()  # msg_id -> open Span
        self.errors = 0
        self.spans = 0

    def _ns(self, t: float) -> int:
        if self._t_first is None:
            self._t_first = t
        return self._epoch + int((t - self._t_first) * 1e9)

    def _remember(self, table: OrderedDict[int, Any], key: int, value: Any) -> None:
        table[key] = value
        while len(table) > self._max:
            _key, old = table.popitem(last=False)
            end = getattr(old, "end", None)
            if end is not None:
                end()

    def write(self, record: TraceEvent) -> None:
        try:
            for event in expand((record,)):
                self._write(event)
        except Exception:  # a sink never raises into the runtime
            self.errors += 1

    def _attributes(self, event: TraceEvent, operation: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "messaging.system": "trioxide",
            "messaging.operation.type": operation,
            "messaging.destination.name": event.actor,
        }
        if event.msg_id is not None:
            attrs["messaging.message.id"] = str(event.msg_id)
        if event.corr is not None:
            attrs["trioxide.corr"] = event.corr
        if event.peer is not None:
            attrs["trioxide.peer"] = event.peer
        if event.detail is not None:
            attrs["trioxide.detail"] = event.detail
        if event.outcome is not None:
            attrs["trioxide.outcome"] = event.outcome
        return attrs

    def _start(
        self, event: TraceEvent, operation: str, parent: Any, kind: Any, ns: int, links: Any = ()
    ) -> Any:
        """A span named "<type> <operation>", child of *parent* (a span) if given."""
        ctx = self._trace.set_span_in_context(parent) if parent is not None else None
        return self._tracer.start_span(
            f"{event.msg_type} {operation}",
            context=ctx,
            kind=kind,
            attributes=self._attributes(event, operation),
            links=links,
            start_time=ns,
        )

    def _write(self, event: TraceEvent) -> None:
        trace = self._trace
        kind = event.kind
        ns = self._ns(event.t)
        if kind == "send" and event.msg_id is not None:
            parent = self._consumers.get(event.cause) if event.cause is not None else None
            span = self._start(event, "send", parent, trace.SpanKind.PRODUCER, ns)
            span.end(end_time=ns)
            self.spans += 1
            self._remember(self._producers, event.msg_id, span.get_span_context())
        elif kind == "receive" and event.msg_id is not None and event.detail is None:
            producer = self._producers.pop(event.msg_id, None)
            parent = trace.NonRecordingSpan(producer) if producer is not None else None
            links = [trace.Link(producer)] if producer is not None else []
            span = self._start(event, "process", parent, trace.SpanKind.CONSUMER, ns, links)
            self.spans += 1
            self._remember(self._consumers, event.msg_id, span)
        elif kind == "handle" and event.msg_id is not None and event.msg_id in self._consumers:
            span = self._consumers.pop(event.msg_id)
            if event.outcome == "error":
                span.set_status(trace.Status(trace.StatusCode.ERROR, event.detail or ""))
            span.end(end_time=ns)
        else:
            owner = self._consumers.get(event.cause) if event.cause is not None else None
            if owner is not None:
                owner.add_event(kind, attributes=self._attributes(event, kind), timestamp=ns)

    def close(self) -> None:
        """End every span still open (at the last moment they were seen)."""
        while self._consumers:
            _key, span = self._consumers.popitem(last=False)
            try:
                span.end()
            except Exception:
                self.errors += 1
