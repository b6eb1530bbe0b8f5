"""The :class:`Tracer` turns runtime steps into :class:`TraceEvent`s and hands them to sinks.

A tracer owns the global sequence counter. It never blocks: sinks are synchronous,
bounded and non-blocking by contract (see :mod:`traces._sinks`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import trio

from ._event import NO_PAYLOAD, TraceEvent

__all__ = ["Sink", "Tracer"]


class Sink(Protocol):
    """Where events go. ``write`` must not block and must not raise."""

    def write(self, event: TraceEvent) -> None: ...

    def close(self) -> None: ...


_encode = msgspec.json.Encoder().encode


def _encode_payload(msg: Any) -> msgspec.Raw:
    try:
        return msgspec.Raw(_encode(msg))
    except (TypeError, ValueError, OverflowError):
        # Messages may carry non-serialisable fields (refs, exceptions): fall back to repr.
        return msgspec.Raw(_encode(repr(msg)))


class Tracer:
    """Assigns ``seq`` and ``t`` to every step and fans it out to *sinks*.

    Args:
      payloads: also record each message's msgspec JSON (``payload``). Off by default:
        it is the expensive part of tracing.
      redact: called with a message before its payload is encoded; return a replacement
        object (e.g. a copy with secrets blanked) or ``None`` to record no payload.
      clock: where ``t`` comes from; defaults to the Trio clock (virtual under MockClock).
    """

    __slots__ = ("_clock", "_seq", "_sinks", "_write", "payloads", "redact")

    def __init__(
        self,
        *sinks: Sink,
        payloads: bool = False,
        redact: Callable[[Any], Any] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._sinks: tuple[Sink, ...] = sinks
        self._write: Callable[[TraceEvent], None] = (
            sinks[0].write if len(sinks) == 1 else self._fan_out
        )
        self._seq = 0
        self._clock = clock
        self.payloads = payloads
        self.redact = redact

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Take ``t`` from *clock* (the runtime binds the run's clock method once)."""
        self._clock = clock

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return self._sinks

    @property
    def seq(self) -> int:
        """The ``seq`` of the last event emitted (0 before the first)."""
        return self._seq

    def _fan_out(self, event: TraceEvent) -> None:
        for sink in self._sinks:
            sink.write(event)

    def emit(
        self,
        kind: str,
        actor: str,
        peer: str | None = None,
        msg_id: int | None = None,
        cause: int | None = None,
        corr: int | None = None,
        msg: Any = None,
        detail: str | None = None,
    ) -> None:
        """Record one step. ``msg`` (optional) gives ``msg_type`` and, if enabled, ``payload``."""
        self._seq = seq = self._seq + 1
        msg_type = None
        payload = NO_PAYLOAD
        if msg is not None:
            msg_type = type(msg).__name__
            if self.payloads:
                if self.redact is not None:
                    msg = self.redact(msg)
                if msg is not None:
                    payload = _encode_payload(msg)
        self._write(
            TraceEvent(
                seq, self._clock(), kind, actor, peer, msg_id, cause, corr, msg_type, payload,
                detail,
            )
        )  # fmt: skip

    def flush(self) -> None:
        """Make everything emitted so far visible to readers (file sinks write through)."""
        for sink in self._sinks:
            flush = getattr(sink, "flush", None)
            if flush is not None:
                flush()

    def close(self) -> None:
        """Close every sink (flushes file sinks)."""
        for sink in self._sinks:
            sink.close()
