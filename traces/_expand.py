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

import struct
from collections.abc import Iterable, Iterator

import msgspec

from ._event import NO_PAYLOAD, RUN_LINES, RunBody, TraceEvent
from ._runs import (
    HANDLE_RUN_TYPES,
    SEND_RUN_TYPES,
    Run,
    handle_record,
    receive_record,
    send_record,
)

__all__ = ["check_run_line", "expand", "is_folded", "records_of", "run_line", "run_line_records"]

_replace = msgspec.structs.replace


def is_folded(event: TraceEvent) -> bool:
    """Whether *event* is a ``handle`` standing also for its ``receive``."""
    return event.t0 is not None and event.kind == "handle"


def records_of(records: Iterable[TraceEvent | Run]) -> Iterator[TraceEvent]:
    """*records* with every run (``HandleRun``, ``SendRun``, or a run line read from a
    file) replaced by the records it stands for (folded handles, as a tracer writes them)."""
    for r in records:
        if not isinstance(r, TraceEvent):
            yield from r.records()
        elif r.run is not None:
            yield from run_line_records(r)
        else:
            yield r


def expand(records: Iterable[TraceEvent | Run]) -> Iterator[TraceEvent]:
    """Every event of *records*, a folded handle as its receive and its handle, a run or
    a run line as the events it stands for."""
    for e in records:
        if not isinstance(e, TraceEvent):  # a run
            yield from expand(e.records())
        elif e.run is not None:
            yield from expand(run_line_records(e))
        elif e.t0 is not None and e.kind == "handle":
            yield TraceEvent(
                e.seq - 1, e.t0, "receive", e.actor, None, e.msg_id, None, e.corr, e.msg_type
            )
            yield _replace(e, t0=None, msg_type=None)
        else:
            yield e


def run_line(run: Run) -> TraceEvent:
    """*run* as one line of a trace file (``RUN_LINES``): the records it stands for, in
    less room. Its arrays are what the run recorded (``run_line_records`` gives the
    records back)."""
    if isinstance(run, SEND_RUN_TYPES):
        times = run.times
        each = tuple(times) if not isinstance(times, bytes) else _unpack(times)
        body = RunBody(t=each, payloads=tuple(run.payloads))
        return TraceEvent(run.seq, each[0], "send_run", run.actor, run.sender, None,
                          run.cause, None, run.cls.__name__, run=body)  # fmt: skip
    assert isinstance(run, HANDLE_RUN_TYPES)
    ids, types, t0, t = run.columns()
    first = t0[0]
    assert first is not None
    if isinstance(types, str):  # every message of one type: named once
        body = RunBody(ids=ids, t0=t0, t=t)
        return TraceEvent(run.seq, first, "handle_run", run.actor, msg_type=types, run=body)
    body = RunBody(ids=ids, types=types, t0=t0, t=t)
    return TraceEvent(run.seq, first, "handle_run", run.actor, run=body)


def _unpack(times: bytes) -> tuple[float, ...]:
    return struct.unpack(f"{len(times) // 8}d", times)


def run_line_records(line: TraceEvent) -> list[TraceEvent]:
    """The records a run line stands for (as the run's ``records()`` gave them). Raises
    ``ValueError`` for a line whose arrays do not fit together."""
    body = line.run
    assert body is not None
    check_run_line(line)
    if line.kind == "send_run":
        payloads = body.payloads or (NO_PAYLOAD,) * len(body.t)
        seq, actor, peer, cause, name = line.seq, line.actor, line.peer, line.cause, line.msg_type
        return [
            send_record(seq + i, t, actor, peer, cause, name, payloads[i])
            for i, t in enumerate(body.t)
        ]
    out = []
    seq, ended, ends = line.seq, len(body.t), body.t
    types = body.types or (line.msg_type,) * len(body.ids)
    for i, mid in enumerate(body.ids):
        start = body.t0[i]
        t0 = start if start is not None else ends[i - 1]  # (None: began as i - 1 ended)
        name = types[i]
        assert name is not None
        if i < ended:
            out.append(handle_record(seq + 1, line.actor, mid, name, t0, ends[i]))
        else:
            out.append(receive_record(seq, line.actor, mid, name, t0))
        seq += 2
    return out


def check_run_line(line: TraceEvent) -> None:
    """``ValueError`` unless *line* is a run line whose arrays fit together."""
    body = line.run
    if body is None or line.kind not in RUN_LINES:
        raise ValueError(f"not a run line: kind {line.kind!r}")
    if line.kind == "send_run":
        if not body.t or body.ids or body.types or body.t0:
            raise ValueError("a send_run line has times (t) and nothing else per message")
        if body.payloads and len(body.payloads) != len(body.t):
            raise ValueError(f"a send_run line with {len(body.t)} times and "
                             f"{len(body.payloads)} payloads")  # fmt: skip
        return
    n = len(body.ids)
    types = len(body.types) if body.types else n if line.msg_type is not None else 0
    if not n or types != n or len(body.t0) != n or len(body.t) not in (n, n - 1):
        raise ValueError(
            f"a handle_run line's arrays do not fit: {n} ids, {types} types, "
            f"{len(body.t0)} t0, {len(body.t)} t"
        )
    if body.t0[0] is None:
        raise ValueError("a handle_run line's first message has no t0")
    if body.payloads:
        raise ValueError("a handle_run line has no payloads")
