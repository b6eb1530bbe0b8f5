"""``expand``: the full event stream of a trace, whatever the writer folded.

A tracer folds a ``receive`` into its ``handle`` when nothing was traced in between: the
handle then carries ``t0`` (when the receive happened) and ``msg_type``, and the receive's
``seq`` (the handle's minus one) is absent from the file. ``expand`` puts the receive back,
so a consumer sees every ``seq`` once, in order, in the vocabulary of ``KINDS`` - the trace
readers, ``MemorySink.events`` and the trace server all hand out expanded events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec

from ._event import TraceEvent

__all__ = ["expand", "is_folded"]

_replace = msgspec.structs.replace


def is_folded(event: TraceEvent) -> bool:
    """Whether *event* is a ``handle`` standing also for its ``receive``."""
    return event.t0 is not None and event.kind == "handle"


def expand(records: Iterable[TraceEvent]) -> Iterator[TraceEvent]:
    """Every event of *records*, a folded handle as its receive and its handle."""
    for e in records:
        if e.t0 is not None and e.kind == "handle":
            yield TraceEvent(
                e.seq - 1, e.t0, "receive", e.actor, None, e.msg_id, None, e.corr, e.msg_type
            )
            yield _replace(e, t0=None, msg_type=None)
        else:
            yield e
