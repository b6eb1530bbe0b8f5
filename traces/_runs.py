"""Runs: consecutive same-shape events recorded as one record.

``HandleRun``: an actor loop that takes tell after tell and whose handlers trace nothing
themselves produces the same two events per message, over and over: a ``receive`` folded
into its ``handle`` (see ``traces.expand``). The loop records such a stream into one
``HandleRun`` instead - four list slots per message, no event object, no call into the
tracer.

``SendRun``: a sender telling one actor message after message (of one type, while
handling one message) produces the same ``send`` over and over. ``ActorRef.tell``'s traced
fast path records such a stream into one ``SendRun`` - one time per message (packed
doubles once written: no object per message, nothing for the cyclic GC to walk).

A run is appended to only while it is the tracer's *pending* record: nothing else was
traced since it was opened. Whatever the tracer records next writes the run first
(``Tracer``), so seqs stay in order and a run stands for a contiguous range of them.

A run is a recording device, not part of the trace model: sinks get it as the records it
stands for (``records``), ``MemorySink`` keeps it whole and expands it on read. Under
``MockClock`` a run's events are byte for byte those of message-by-message recording;
under a real clock each handler's ``t0`` is the previous handler's end when the loop went
straight from one to the next (the loop's own bookkeeping between them, well under a
microsecond, is not timed).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeAlias

import msgspec

from ._event import NO_PAYLOAD, TraceEvent

__all__ = ["RUN_MAX_MESSAGES", "RUN_TYPES", "HandleRun", "Run", "SendRun"]

#: The most messages one run records (then the next run opens): bounds a ring record's
#: size (``MemorySink`` counts a run as the events it stands for).
RUN_MAX_MESSAGES: Final = 64


#: ``items`` slots per message: msg_id, message type name, t0 (handler began), t (ended).
_SLOTS: Final = 4


class HandleRun(msgspec.Struct, gc=False):
    """Tells to *actor* handled back to back, from seq *seq* on.

    ``items`` holds four slots per message, ``msg_id, type name, t0, t``: the handler of
    ``msg_id`` began at ``t0`` and returned at ``t``. The last message may be *open*
    (three slots: its handler is running); it stands for its ``receive`` alone. Message
    ``i`` has the seqs ``seq + 2i`` (its receive) and ``seq + 2i + 1`` (its handle).

    Only the actor loop appends, and only while the run is its tracer's pending record;
    once written the run never changes (``freeze``).

    Not tracked by the cyclic GC, and neither are its items once written (a tuple of
    numbers and strings, which the GC stops tracking): a ring holding thousands of runs
    adds nothing to the full collections that would otherwise walk every slot.
    """

    actor: str
    seq: int
    items: list[Any] | tuple[Any, ...] = msgspec.field(default_factory=list)

    def freeze(self) -> None:
        """The run was written: its items become a tuple."""
        self.items = tuple(self.items)

    def __repr__(self) -> str:
        return f"HandleRun({self.actor!r}, seq={self.seq}, events={self.count})"

    @property
    def count(self) -> int:
        """Events the run stands for (a receive and a handle per message; an open
        message's receive)."""
        n = len(self.items)
        return n // _SLOTS * 2 + (n % _SLOTS != 0)

    @property
    def last_seq(self) -> int:
        return self.seq + self.count - 1

    def take_open(self, msg_id: int) -> tuple[str, float] | None:
        """If *msg_id* is the open message, remove it and return its type name and
        ``t0`` (its handle is then recorded on its own, folded, by the tracer)."""
        items = self.items
        assert isinstance(items, list), "a written run never changes"
        if len(items) % _SLOTS == 3 and items[-3] == msg_id:
            t0: float = items.pop()
            name: str = items.pop()
            items.pop()
            return name, t0
        return None

    def records(self) -> Iterator[TraceEvent]:
        """The records the run stands for, as a tracer writes them: a folded handle per
        completed message, then the open message's receive (if any)."""
        items, seq = self.items, self.seq
        n = len(items) - len(items) % _SLOTS
        for i in range(0, n, _SLOTS):
            yield self._handle(seq + 1, i)
            seq += 2
        if n < len(items):
            yield self._receive(seq, n)

    def lone_record(self) -> TraceEvent | None:
        """The one record the run stands for, if it stands for one (an open message's
        receive, or one folded handle): a tracer writes that instead of the run. (Built
        here, not through ``_receive``/``_handle``: a relay actor flushes one per message,
        and the extra call measured +3.5% instructions per relayed message.)"""
        items = self.items
        n = len(items)
        if n == 3:
            return TraceEvent(self.seq, items[2], "receive", self.actor, None, items[0], None,
                              None, items[1])  # fmt: skip
        if n == _SLOTS:
            return TraceEvent(self.seq + 1, items[3], "handle", self.actor, None, items[0],
                              None, None, items[1], NO_PAYLOAD, None, "ok", items[2])  # fmt: skip
        return None

    def _handle(self, seq: int, i: int) -> TraceEvent:
        items = self.items
        return TraceEvent(seq, items[i + 3], "handle", self.actor, None, items[i], None, None,
                          items[i + 1], NO_PAYLOAD, None, "ok", items[i + 2])  # fmt: skip

    def _receive(self, seq: int, i: int) -> TraceEvent:
        items = self.items
        return TraceEvent(seq, items[i + 2], "receive", self.actor, None, items[i], None,
                          None, items[i + 1])  # fmt: skip


class SendRun(msgspec.Struct, gc=False, repr_omit_defaults=False):
    """Tells from *sender* (``None``: from outside any actor) to *actor*, all of class
    *cls* and caused by *cause*, recorded back to back from seq *seq* on.

    ``times`` holds each send's ``t``, read from ``clock() + offset``: message ``i`` is the
    event ``send`` with seq and ``msg_id`` ``seq + i`` (a tell is its send's seq). No
    payload: a tracer recording payloads opens no send runs.

    Only ``ActorRef.tell``'s traced fast path appends (at most ``RUN_MAX_MESSAGES``), and
    only while the run is its tracer's pending record; once written the run never changes.

    Not tracked by the cyclic GC (it refers to nothing that refers back to it): a ring
    holding thousands of runs adds nothing to the full collections that walk it.
    """

    actor: str
    sender: str | None
    cause: int | None
    cls: type
    seq: int
    clock: Callable[[], float]
    offset: float
    #: The sends' times: a list while the run is open, packed doubles once written (8
    #: bytes a send and no object the cyclic GC tracks or counts: a tuple of floats, or an
    #: ``array``, measured 16-17 gen-0 collections per 200,000 traced tells instead of 12
    #: and a full collection every few runs).
    times: list[float] | bytes

    def __repr__(self) -> str:
        return f"SendRun({self.actor!r}, seq={self.seq}, events={self.count})"

    @property
    def count(self) -> int:
        """Events the run stands for (a send per message)."""
        times = self.times
        return len(times) if type(times) is list else len(times) // 8

    def freeze(self) -> None:
        """The run was written: its times become packed doubles."""
        times = self.times
        self.times = struct.pack(f"{len(times)}d", *times)

    @property
    def last_seq(self) -> int:
        return self.seq + self.count - 1

    def records(self) -> Iterator[TraceEvent]:
        """The ``send`` events the run stands for, as a tracer writes them."""
        times = self.times
        for i, t in enumerate(
            times if isinstance(times, list) else struct.unpack(f"{len(times) // 8}d", times)
        ):
            yield self._send(i, t)

    def lone_record(self) -> TraceEvent | None:
        """The one send the run stands for, if it stands for one (an open run: a tracer
        writes that instead of the run)."""
        times = self.times
        return self._send(0, times[0]) if type(times) is list and len(times) == 1 else None

    def _send(self, i: int, t: float) -> TraceEvent:
        seq = self.seq + i
        return TraceEvent(seq, t, "send", self.actor, self.sender, seq, self.cause, None,
                          self.cls.__name__)  # fmt: skip


#: A run of either kind (``MemorySink`` keeps both whole).
Run: TypeAlias = HandleRun | SendRun

#: The run classes, for ``isinstance``.
RUN_TYPES: Final = (HandleRun, SendRun)
