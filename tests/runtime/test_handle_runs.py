"""Runs of handled tells (``traces.HandleRun``, semantics.md 11): what the actor loop
records when its tracer's only sink is a ``MemorySink``, and what every view of that sink
shows. The fuzzed equivalence (the same trace as per-event recording, over fault
scenarios) is ``test_fault_fuzz.test_handle_runs_record_the_same_trace_and_keep_every_guarantee``.
"""

from __future__ import annotations

import itertools

import msgspec
import pytest
import trio
import trio.testing

from trioxide import open_runtime, traces
from trioxide.traces import RUN_MAX_MESSAGES, MemorySink, TraceEvent, Tracer
from trioxide.traces._runs import HANDLE_RUN_TYPES, HandleRunLike

from ._msgs import Boom, Counter, Get, Incr, Note
from ._run_impls import RunImpl

# Every test here runs with both run recorders: compiled and pure Python.
pytestmark = pytest.mark.usefixtures("run_impl")


def held_runs(sink: MemorySink) -> list[HandleRunLike]:
    return [r for r in sink._ring if isinstance(r, HANDLE_RUN_TYPES)]  # type: ignore[misc]


async def tell_stream(tracer: Tracer, n: int, *, boom_every: int = 0) -> int:
    # Seeded: Trio's own scheduler shuffles otherwise, and two runs are compared.
    async with open_runtime(tracer=tracer, seed=1) as rt:
        ref = await rt.spawn(Counter, name="counter", restart="permanent", max_restarts=10**6)
        for i in range(n):
            await ref.tell(Boom() if boom_every and i % boom_every == boom_every - 1 else Incr())
        count: int = await ref.ask(Get())
        await ref.stop()
    return count


async def test_a_tell_stream_is_recorded_in_runs_and_reads_as_per_event_recording(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """1,000 tells (every 7th raising: the actor restarts): a lone MemorySink holds runs of
    at most RUN_MAX_MESSAGES messages, at least one of them full; its events are those of
    a tracer that records every event at once (two sinks: no runs), seq for seq."""
    for boom_every in (0, 7):
        lone, a, b = MemorySink(), MemorySink(), MemorySink()
        runs_tracer, plain_tracer = Tracer(lone), Tracer(a, b)
        assert runs_tracer.runs and not plain_tracer.runs
        await tell_stream(runs_tracer, 1000, boom_every=boom_every)
        await tell_stream(plain_tracer, 1000, boom_every=boom_every)
        assert lone.events == a.events
        assert lone.records == a.records
        assert [e.seq for e in lone.events] == list(range(1, runs_tracer.seq + 1))
        sizes = [len(r.items) // 4 for r in held_runs(lone)]
        assert sizes and max(sizes) == (RUN_MAX_MESSAGES if not boom_every else boom_every - 1)
    # The raising handlers were folded too (their receive was in the open run).
    errors = [r for r in lone.records if r.kind == "handle" and r.outcome == "error"]
    assert len(errors) == 1000 // 7 and all(traces.is_folded(r) for r in errors)


async def test_a_run_still_held_by_the_tracer_is_shown_by_every_view(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Handles recorded into the run the tracer still holds (nothing traced since) are
    in ``events``, ``records``, ``len`` and ``statistics`` at once: a reader of the ring
    never lags behind the actors."""
    sink = MemorySink()
    tracer = Tracer(sink)
    async with open_runtime(tracer=tracer) as rt:
        ref = await rt.spawn(Counter, name="counter")
        for _ in range(3):
            await ref.tell(Incr())
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(tracer.pending, HANDLE_RUN_TYPES)  # not written yet
        handles = sink.of_kind("handle")
        assert [h.msg_id for h in handles] == [e.seq for e in sink.of_kind("send")]
        assert len(sink) == len(sink.events) == tracer.seq
        assert sink.statistics() == traces.SinkStatistics(tracer.seq, 0, tracer.seq)
        assert sink.events[-1].kind == "handle" and sink.events[-1].seq == tracer.seq
        await ref.stop()


async def test_the_ring_bound_counts_the_events_of_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``maxlen`` bounds events, runs included: after 2,000 tells into a ring of 100, it
    holds the newest events, contiguous, no more than 100 of them plus the run written
    last; ``dropped + len == written``."""
    sink = MemorySink(maxlen=100)
    tracer = Tracer(sink)
    assert await tell_stream(tracer, 2000) == 2000
    events = sink.events
    assert 0 < len(events) <= 100 + 2 * RUN_MAX_MESSAGES
    assert [e.seq for e in events] == list(range(tracer.seq - len(events) + 1, tracer.seq + 1))
    assert sink.dropped + len(sink) == sink.written == tracer.seq
    assert sink.nbytes < 100 * MemorySink.RECORD_BYTES + 2 * RUN_MAX_MESSAGES * 48


async def test_under_a_real_clock_a_handler_that_follows_another_began_when_it_ended() -> None:
    """The documented time of a run: a handler the loop went to straight from the
    previous one has ``t0`` equal to that one's ``t``; times never go back. (No
    wall-clock assertion: only the recorded values are compared.)"""
    sink = MemorySink()
    tracer = Tracer(sink)
    await tell_stream(tracer, 200)
    handles = [r for r in sink.records if r.kind == "handle" and r.msg_type == "Incr"]
    assert all(r.t0 is not None and r.t0 <= r.t for r in handles)
    chained = sum(1 for a, b in itertools.pairwise(handles) if b.t0 == a.t)
    assert chained >= len(handles) // 2
    times = [e.t for e in sink.events]
    assert times == sorted(times)


def record_three(run: HandleRunLike) -> None:
    """Messages 3 and 4 handled back to back, then 7 begun (its handler still runs)."""
    run.begin(3, Incr(), True)  # reads the clock: 1.0
    run.end()  # 2.0
    run.begin(4, Incr(), False)  # went straight on: began when 3 ended
    run.end()  # 2.5
    run.begin(7, Note("n"), False)


def test_a_run_stands_for_folded_handles_and_an_open_receive(run_impl: RunImpl) -> None:
    run = run_impl.HandleRun("a", 10, iter([1.0, 2.0, 2.5]).__next__)
    record_three(run)
    assert list(run.items) == [3, "Incr", 1.0, 2.0, 4, "Incr", 2.0, 2.5, 7, "Note", 2.5]
    assert run.count == 5 and run.last_seq == 14
    assert list(run.records()) == [
        TraceEvent(11, 2.0, "handle", "a", msg_id=3, msg_type="Incr", outcome="ok", t0=1.0),
        TraceEvent(13, 2.5, "handle", "a", msg_id=4, msg_type="Incr", outcome="ok", t0=2.0),
        TraceEvent(14, 2.5, "receive", "a", msg_id=7, msg_type="Note"),
    ]
    assert [(e.seq, e.kind) for e in traces.expand([run])] == [
        (10, "receive"), (11, "handle"), (12, "receive"), (13, "handle"), (14, "receive"),
    ]  # fmt: skip
    assert run.take_open(8) is None
    assert run.take_open(7) == ("Note", 2.5) and run.count == 4
    assert run.take_open(4) is None  # only the open message can be taken
    run.freeze()
    assert run.frozen and run.count == 4 and len(list(run.records())) == 2


def test_a_run_refuses_what_the_loop_never_does(run_impl: RunImpl) -> None:
    """The loop's order is begin, end, begin, ...; a run says so when that is broken,
    when it is full, and once it was written - and stays as it was."""
    run = run_impl.HandleRun("a", 1, iter(range(10_000)).__next__, 0.5)
    with pytest.raises(RuntimeError, match="no message of the run is open"):
        run.end()
    run.begin(1, Incr(), True)
    with pytest.raises(RuntimeError, match="still open"):
        run.begin(2, Incr(), True)
    run.end()
    for mid in range(2, RUN_MAX_MESSAGES + 1):
        run.begin(mid, Incr(), mid % 2 == 0)
        run.end()
    with pytest.raises(RuntimeError, match="full"):
        run.begin(99, Incr(), True)
    assert run.count == 2 * RUN_MAX_MESSAGES
    items = list(run.items)
    # The clock's reads plus the offset; a fresh begin reads the clock, a straight one not.
    assert items[2:4] == [0.5, 1.5] and items[6] == 2.5 and items[10] == items[7] == 3.5
    run.freeze()
    for act in (lambda: run.begin(100, Incr(), True), run.end, lambda: run.take_open(64)):
        with pytest.raises(RuntimeError, match="never changes"):
            act()
    assert list(run.items) == items and "events=128" in repr(run)


def test_a_clock_that_raises_leaves_the_run_as_it_was(run_impl: RunImpl) -> None:
    def broken() -> float:
        raise OSError("no clock")

    run = run_impl.HandleRun("a", 1, broken)
    with pytest.raises(OSError, match="no clock"):
        run.begin(1, Incr(), True)
    assert run.count == 0 and list(run.items) == []


def test_a_run_on_a_tracer_whose_sinks_keep_none_is_written_as_its_records(
    run_impl: RunImpl,
) -> None:
    """``open_run`` works whatever the sinks: those that keep no runs (here, two rings:
    no direct path) get the records the run stands for when it is written."""
    a, b = MemorySink(), MemorySink()
    tracer = Tracer(a, b, clock=iter([1.0, 2.0, 2.5]).__next__)
    assert not tracer.runs
    run = tracer.open_run("a")
    record_three(run)
    assert tracer.seq == 5
    assert run.take_open(7) is not None  # (as Tracer.handle does)
    assert tracer.seq == 4
    tracer.flush()
    assert a.records == b.records == list(run.records())
    assert [e.seq for e in a.events] == [1, 2, 3, 4] and tracer.seq == 4


async def test_a_tell_whose_send_raises_is_not_queued_and_later_tells_keep_their_ids(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A tracer's ``redact`` that raises makes ``tell`` raise it with nothing queued (the
    traced fast path queues a tell bare and its id beside it, ``Mailbox.ids``; it takes the
    message back, ``Mailbox.unput``): the actor keeps running, and every later tell is
    handled under its own send's id."""

    def redact(msg: object) -> object:
        if isinstance(msg, Incr) and msg.by == 13:
            raise ValueError("no payload for 13")
        return msg

    # the ring alone (runs), and two sinks (no runs)
    for sinks in ((MemorySink(),), (MemorySink(), MemorySink())):
        tracer = Tracer(*sinks, payloads=True, redact=redact)
        async with open_runtime(tracer=tracer, seed=1) as rt:
            ref = await rt.spawn(Counter, name="counter")
            await ref.tell(Incr(1))
            with pytest.raises(ValueError, match="no payload for 13"):
                await ref.tell(Incr(13))
            await ref.tell(Incr(2))
            assert await ref.ask(Get()) == 3
            await ref.stop()
        events = sinks[0].events
        sends = {e.msg_id: e for e in events if e.kind == "send" and e.actor == ref.path}
        taken = [e for e in events if e.kind == "receive" and e.actor == ref.path]
        assert [e.msg_type for e in taken] == ["Incr", "Incr", "Get"]
        handled = [e.msg_id for e in events if e.kind == "handle" and e.actor == ref.path]
        assert handled == [e.msg_id for e in taken]
        for e in taken:
            assert sends[e.msg_id].msg_type == e.msg_type
        incr = [msgspec.json.decode(sends[e.msg_id].payload) for e in taken[:2]]
        assert incr == [{"by": 1}, {"by": 2}]
