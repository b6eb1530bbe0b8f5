"""Live export to OpenTelemetry (optional: needs ``opentelemetry-api``/``-sdk``).

``OtelSink`` turns trace events into spans as they happen, following the messaging
semantic conventions: a PRODUCER span per ``send`` (zero length), a CONSUMER span per
handler (``receive`` -> ``handle``) linked to its producer and parented to it (so a causal
chain is one trace), and the other steps of a handler (drops, timeouts, task events, ...)
as span events. Times are Unix nanoseconds: the first event the sink sees is placed at
``epoch_ns`` (default: when the sink was made, i.e. about when the run started), every
later one at its (virtual) offset from it - whatever the Trio clock's origin (a
``MockClock`` starts at 0, the real clock at an arbitrary point).

An HTTP request sent (``http_send``) or served (``http_serve``) is a CLIENT or SERVER
span in the W3C trace it carried (the trace id always; with a ``TracerProvider`` whose
``id_generator`` is a :class:`W3CIds`, its span id too, so that a collector joins the
spans of every process into one trace), ended by its ``http_end``/``http_served``; the
messages a served request's handler sends are its children.

Like every sink it never raises into the runtime and is bounded: at most ``max_open``
producer contexts and open consumer spans are remembered (the oldest are forgotten).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from ._event import TraceEvent
from ._expand import expand

_HTTP_KINDS = frozenset({"http_send", "http_serve"})

__all__ = ["OtelSink", "W3CIds"]


class W3CIds:
    """An OpenTelemetry SDK ``IdGenerator`` that hands out the W3C ids of the HTTP span
    being started (set by ``OtelSink`` just before it starts one), else random ids:
    ``TracerProvider(id_generator=W3CIds())``."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        self._random = RandomIdGenerator()
        #: The ids of the next span started (each used once; ``None``: random).
        self.next_trace: int | None = None
        self.next_span: int | None = None

    def generate_span_id(self) -> int:
        preset, self.next_span = self.next_span, None
        return preset if preset is not None else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        preset, self.next_trace = self.next_trace, None
        return preset if preset is not None else self._random.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        """W3C trace ids are random (``tracecontext``'s, or this generator's own)."""
        return True


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
        elif kind in _HTTP_KINDS and event.msg_id is not None and event.trace_id and event.span_id:
            self._http_start(event, ns)
        elif kind in ("http_end", "http_served") and event.corr in self._consumers:
            span = self._consumers.pop(event.corr or 0)
            status = (event.detail or "").split(" ", 1)[0]
            if status.isdigit():
                span.set_attribute("http.response.status_code", int(status))
            if event.outcome != "ok":
                span.set_status(trace.Status(trace.StatusCode.ERROR, event.detail or ""))
            span.end(end_time=ns)
        elif kind == "handle" and event.msg_id is not None and event.msg_id in self._consumers:
            span = self._consumers.pop(event.msg_id)
            if event.outcome == "error":
                span.set_status(trace.Status(trace.StatusCode.ERROR, event.detail or ""))
            span.end(end_time=ns)
        else:
            owner = self._consumers.get(event.cause) if event.cause is not None else None
            if owner is not None:
                owner.add_event(kind, attributes=self._attributes(event, kind), timestamp=ns)

    def _http_start(self, event: TraceEvent, ns: int) -> None:
        trace = self._trace
        assert event.trace_id is not None and event.span_id is not None
        trace_id = int(event.trace_id, 16)
        ctx = None
        if event.parent_span is not None:
            parent = trace.SpanContext(
                trace_id,
                int(event.parent_span, 16),
                is_remote=event.kind == "http_serve",
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
            )
            ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        ids = getattr(self._tracer, "id_generator", None)
        if isinstance(ids, W3CIds):
            ids.next_trace, ids.next_span = trace_id, int(event.span_id, 16)
        method, _, path = (event.detail or "").partition(" ")
        attrs: dict[str, Any] = {
            "http.request.method": method,
            "url.path": path,
            "trioxide.actor": event.actor,
            "trioxide.span_id": event.span_id,
        }
        if event.peer is not None:
            attrs["server.address" if event.kind == "http_send" else "client.address"] = event.peer
        kind = trace.SpanKind.CLIENT if event.kind == "http_send" else trace.SpanKind.SERVER
        span = self._tracer.start_span(
            event.detail or event.kind, context=ctx, kind=kind, attributes=attrs, start_time=ns
        )
        if isinstance(ids, W3CIds):
            ids.next_trace = ids.next_span = None
        self.spans += 1
        assert event.msg_id is not None
        self._remember(self._consumers, event.msg_id, span)

    def close(self) -> None:
        """End every span still open (at the last moment they were seen)."""
        while self._consumers:
            _key, span = self._consumers.popitem(last=False)
            try:
                span.end()
            except Exception:
                self.errors += 1
