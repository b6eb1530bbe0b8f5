"""W3C trace context (``traceparent``) for the rack's HTTP calls.

A request carries ``traceparent: 00-<trace id>-<parent span id>-01``. The server side
(``around_server``) adopts the incoming trace id for the task handling the request; a
call made from a task with a trace context (``outgoing``) continues that trace with a
new span id, else starts a new trace. Ids come from ``random.Random`` seeded per process
(no wall clock), so they are unique across the rack's processes but never needed for a
deterministic in-process run (which makes no HTTP calls).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = ["TraceContext", "current", "new_span_id", "parse", "use"]

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_rng = random.Random(int.from_bytes(os.urandom(8), "big"))


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


#: The trace context of the task (set while a request is handled, or by ``use``).
current: ContextVar[TraceContext | None] = ContextVar("trioxide_trace_context", default=None)


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


async def around_server(request: Any, call: Callable[[], Awaitable[Any]]) -> Any:
    """``App(around=...)``: handle *request* in the trace its ``traceparent`` names."""
    ctx = parse(request.headers.get("traceparent"))
    with use(ctx.child() if ctx is not None else new_trace()):
        return await call()


def outgoing() -> TraceContext:
    """The context an outgoing call carries: a child of the task's, or a new trace."""
    ctx = current.get()
    return ctx.child() if ctx is not None else new_trace()
