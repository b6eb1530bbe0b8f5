"""``expand``: the full event stream of a trace, whatever the writer folded.

A tracer folds a ``receive`` into its ``handle`` when nothing was traced in between: the
handle then carries ``t0`` (when the receive happened) and ``msg_type``, and the receive's
``seq`` (the handle's minus one) is absent from the file. ``expand`` puts the receive back,
so a consumer sees every ``seq`` once, in order, in the vocabulary of ``KINDS`` - the trace
readers, ``MemorySink.events`` and the trace server all hand out expanded events. A
``MemorySink`` also holds the actor loop's runs of handled tells (``HandleRun``):
``records_of`` gives the records they stand for, ``expand`` their events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec

from ._event import TraceEvent
from ._runs import Run

__all__ = ["expand", "is_folded", "records_of"]

_replace = msgspec.structs.replace


def is_folded(event: TraceEvent) -> bool:
    """Whether *event* is a ``handle`` standing also for its ``receive``."""
    return event.t0 is not None and event.kind == "handle"


def records_of(records: Iterable[TraceEvent | Run]) -> Iterator[TraceEvent]:
    """*records* with every ``HandleRun`` replaced by the records it stands for (folded
    handles, as a tracer writes them)."""
    for r in records:
        if isinstance(r, TraceEvent):
            yield r
        else:
            yield from r.records()


def expand(records: Iterable[TraceEvent | Run]) -> Iterator[TraceEvent]:
    """Every event of *records*, a folded handle as its receive and its handle."""
    for e in records:
        if not isinstance(e, TraceEvent):  # a run
            yield from expand(e.records())
        elif e.t0 is not None and e.kind == "handle":
            yield TraceEvent(
                e.seq - 1, e.t0, "receive", e.actor, None, e.msg_id, None, e.corr, e.msg_type
            )
            yield _replace(e, t0=None, msg_type=None)
        else:
            yield e
