"""W3C trace context (``traceparent``) for the rack's HTTP calls, and their trace events.

A request carries ``traceparent: 00-<trace id>-<parent span id>-01``. The server side
(``serving``, which every ``App`` enters for each request) opens a server span in the
incoming trace (or a new trace if the request named none), records ``http_serve`` /
``http_served`` in the process's trace, and runs the handler with that context: the
asks the handler makes carry the ``http_serve`` event as their cause
(``trioxide.runtime.caused_by``), and the tracer remembers which trace the messages they
lead to belong to. The client side (``calling``, entered by ``HttpClient.call``) continues
the trace of where it is called from - the request being served, or, in an actor, the
message being handled (``Tracer.context_of``: a runner handling a request's
``PutState``, or the monitor it spawned meanwhile) - with a new span id, else starts a
new trace; it records ``http_send`` / ``http_end``.

Ids come from ``random.Random`` seeded per process (no wall clock), so they are unique
across the rack's processes but never needed for a deterministic in-process run (which
makes no HTTP calls). With no runtime, or tracing off, the header is still sent and
nothing is recorded.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from trioxide.runtime import TraceSite, caused_by, trace_site

__all__ = [
    "Call",
    "Served",
    "TraceContext",
    "calling",
    "current",
    "new_span_id",
    "new_trace",
    "parse",
    "service_lane",
    "serving",
    "use",
]

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_rng = random.Random(int.from_bytes(os.urandom(8), "big"))

#: The lane (trace ``actor``) of calls made outside any actor and any served request.
CLIENT_LANE = "http:client"


@dataclass(frozen=True)
class TraceContext:
    """One position in a distributed trace: the trace and the span that is current."""

    trace_id: str
    span_id: str

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"

    def child(self) -> TraceContext:
        """A new span of the same trace (for an outgoing call)."""
        return TraceContext(self.trace_id, new_span_id())


#: The trace context of the task (set while a request is served, or by ``use``).
current: ContextVar[TraceContext | None] = ContextVar("trioxide_trace_context", default=None)
#: The lane of the request the task serves (``http:<service>``), for its own calls.
_lane: ContextVar[str | None] = ContextVar("trioxide_http_lane", default=None)


def new_span_id() -> str:
    return f"{_rng.getrandbits(64) or 1:016x}"


def new_trace() -> TraceContext:
    return TraceContext(f"{_rng.getrandbits(128) or 1:032x}", new_span_id())


def parse(header: str | None) -> TraceContext | None:
    """The context a ``traceparent`` header names (``None`` if absent or malformed)."""
    if not header:
        return None
    m = _TRACEPARENT.match(header.strip().lower())
    if m is None or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        return None
    return TraceContext(m.group(1), m.group(2))


class use:
    """``with use(ctx):`` - calls made inside continue *ctx*'s trace."""

    def __init__(self, ctx: TraceContext | None) -> None:
        self.ctx = ctx

    def __enter__(self) -> TraceContext | None:
        self._token = current.set(self.ctx)
        return self.ctx

    def __exit__(self, *exc: object) -> None:
        current.reset(self._token)


def _continued(site: TraceSite | None) -> TraceContext | None:
    """The context a call from *site* continues: in an actor, that of the message it
    handles (or of the actor, spawned in a trace); outside, the served request's."""
    if site is not None and site.actor is not None and site.tracer is not None:
        linked = site.tracer.context_of(site.actor, site.cause)
        if linked is not None:
            return TraceContext(*linked)
    return current.get()


# -- the client side ------------------------------------------------------------------------


@dataclass
class Call:
    """One outgoing request while ``calling`` runs: its ``traceparent`` to send; the
    caller sets ``status`` once an answer arrived and ``timed_out`` for its timeout."""

    ctx: TraceContext
    status: int | None = None
    timed_out: bool = False


@contextmanager
def calling(service: str, method: str, path: str) -> Iterator[Call]:
    """Around one outgoing request to *service* (``host:port``): records ``http_send`` (in
    the calling actor's lane, or the served request's, or ``http:client``) and, when the
    block ends, ``http_end`` - ok for a 2xx answer, else the exception the block raised
    (an error status, a transport failure, the timeout, a cancellation)."""
    site = trace_site()
    parent = _continued(site)
    ctx = parent.child() if parent is not None else new_trace()
    call = Call(ctx)
    tracer = site.tracer if site is not None else None
    if tracer is None or site is None:
        yield call
        return
    actor = site.actor or _lane.get() or CLIENT_LANE
    request = tracer.http_send(
        actor, site.cause, service, method, path, ctx.trace_id, ctx.span_id,
        parent.span_id if parent is not None else None,
    )  # fmt: skip
    try:
        yield call
    except BaseException as exc:
        tracer.http_end(actor, request, call.status, exc, call.timed_out)
        raise
    tracer.http_end(actor, request, call.status)


# -- the server side ------------------------------------------------------------------------


@dataclass
class Served:
    """One request while ``serving`` runs; the server sets ``status`` (and Dropshot's
    ``error_code``) once it has the answer."""

    ctx: TraceContext
    request: int | None
    status: int | None = None
    error_code: str | None = None


def service_lane(title: str) -> str:
    """The trace lane of an API titled *title*: ``http:`` and its distinctive words
    ("Oxide Sled Agent API (...)" -> ``http:sled-agent``)."""
    words = [w for w in title.split("(")[0].lower().split() if w not in _GENERIC]
    return "http:" + ("-".join(words) or "api")


_GENERIC = frozenset({"oxide", "api", "internal", "server", "service", "the"})


@contextmanager
def serving(lane: str, method: str, path: str, headers: Any, peer: str | None) -> Iterator[Served]:
    """Around one request a server took: opens the server span (a child of the incoming
    ``traceparent``, else a new trace), records ``http_serve`` in the lane *lane*, runs the
    block with that context (``current``) and the request as the cause of what it sends
    (``caused_by``), and records ``http_served`` when it ends (cancelled, if it raised)."""
    incoming = parse(headers.get("traceparent"))
    ctx = incoming.child() if incoming is not None else new_trace()
    site = trace_site()
    tracer = site.tracer if site is not None else None
    request = None
    if tracer is not None:
        request = tracer.http_serve(
            lane, peer, method, path, ctx.trace_id, ctx.span_id,
            incoming.span_id if incoming is not None else None,
        )  # fmt: skip
    served = Served(ctx, request)
    lane_token = _lane.set(lane)
    try:
        with use(ctx), caused_by(request):
            yield served
    except BaseException as exc:
        if tracer is not None and request is not None:
            tracer.http_served(lane, request, None, None, exc)
        raise
    finally:
        _lane.reset(lane_token)
    if tracer is not None and request is not None:
        tracer.http_served(lane, request, served.status, served.error_code)
