"""``HandleRun``: consecutive tells handled by one actor, recorded as one record.

An actor loop that takes tell after tell and whose handlers trace nothing themselves
produces the same two events per message, over and over: a ``receive`` folded into its
``handle`` (see ``traces.expand``). The loop records such a stream into one
``HandleRun`` instead - four list slots per message, no event object, no call into the
tracer - while the run is the tracer's *pending* record: nothing else was traced since it
was opened. Whatever the tracer records next writes the run first (``Tracer``), so seqs
stay in order and a run stands for a contiguous range of them.

A run is a recording device, not part of the trace model: sinks get it as the folded
records it stands for (``records``), ``MemorySink`` keeps it whole and expands it on
read. Under ``MockClock`` a run's events are byte for byte those of message-by-message
recording; under a real clock each handler's ``t0`` is the previous handler's end when
the loop went straight from one to the next (the loop's own bookkeeping between them,
well under a microsecond, is not timed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from ._event import NO_PAYLOAD, TraceEvent

__all__ = ["RUN_MAX_MESSAGES", "HandleRun"]

#: The most messages one run records (then the loop opens the next): bounds a ring
#: record's size (``MemorySink`` counts a run as the events it stands for).
RUN_MAX_MESSAGES: Final = 64

#: ``items`` slots per message: msg_id, message type name, t0 (handler began), t (ended).
_SLOTS: Final = 4


class HandleRun:
    """Tells to *actor* handled back to back, from seq *seq* on.

    ``items`` holds four slots per message, ``msg_id, type name, t0, t``: the handler of
    ``msg_id`` began at ``t0`` and returned at ``t``. The last message may be *open*
    (three slots: its handler is running); it stands for its ``receive`` alone. Message
    ``i`` has the seqs ``seq + 2i`` (its receive) and ``seq + 2i + 1`` (its handle).

    Only the actor loop appends, and only while the run is its tracer's pending record;
    once written the run never changes.
    """

    __slots__ = ("actor", "items", "seq")

    def __init__(self, actor: str, seq: int) -> None:
        self.actor = actor
        self.seq = seq
        self.items: list[Any] = []

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
        if len(items) % _SLOTS == 3 and items[-3] == msg_id:
            t0: float = items.pop()
            name: str = items.pop()
            items.pop()
            return name, t0
        return None

    def records(self) -> Iterator[TraceEvent]:
        """The records the run stands for, as a tracer writes them: a folded handle per
        completed message, then the open message's receive (if any)."""
        actor, items, seq = self.actor, self.items, self.seq
        n = len(items) - len(items) % _SLOTS
        for i in range(0, n, _SLOTS):
            mid, name, t0, t = items[i : i + _SLOTS]
            yield TraceEvent(
                seq + 1, t, "handle", actor, None, mid, None, None, name, NO_PAYLOAD, None,
                "ok", t0,
            )  # fmt: skip
            seq += 2
        if n < len(items):
            mid, name, t0 = items[n:]
            yield TraceEvent(seq, t0, "receive", actor, None, mid, None, None, name)
