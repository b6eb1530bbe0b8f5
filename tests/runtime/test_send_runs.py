"""Runs of tells sent (``traces.SendRun``, semantics.md 11): what ``ActorRef.tell``
records when its tracer's only sink is a ``MemorySink``, checked against a tracer that
records every event at once (two sinks: no runs) - the same program, the same seed, the
same events, seq for seq."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trioxide import caused_by, open_runtime, traces
from trioxide.runtime import Actor, ActorRef, MailboxFull
from trioxide.traces import RUN_MAX_MESSAGES, JsonlFileSink, MemorySink, TraceEvent, Tracer
from trioxide.traces._runs import SEND_RUN_TYPES, SendRunLike

from ._msgs import Boom, Counter, Get, Incr, Sleep
from ._run_impls import RunImpl

# Every test here runs with both run recorders: compiled and pure Python.
pytestmark = pytest.mark.usefixtures("run_impl")


def send_runs(sink: MemorySink) -> list[SendRunLike]:
    return [r for r in sink._ring if isinstance(r, SEND_RUN_TYPES)]  # type: ignore[misc]


class Fan(msgspec.Struct, frozen=True):
    """Tell *n* messages of *kind* to target *to* (from inside a handler); *mode* 1: with
    ``tell_nowait`` (a full mailbox refuses), 2: an ``ask`` after every fifth."""

    to: int
    kind: int
    n: int
    mode: int = 0


class Fanner(Actor):
    def __init__(self, targets: list[ActorRef[Counter]]) -> None:
        self.targets = targets

    async def handle(self, msg: Fan) -> None:
        target = self.targets[msg.to]
        for i in range(msg.n):
            await _send(target, _message(msg.kind, i), msg.mode, i)


async def _send(target: ActorRef[Counter], msg: Any, mode: int, i: int) -> None:
    if mode == 1:
        with contextlib.suppress(MailboxFull):
            target.tell_nowait(msg)
        return
    await target.tell(msg)
    if mode == 2 and i % 5 == 4:
        await target.ask(Get())


def _message(kind: int, i: int) -> Any:
    # Two tells of one type with different values still make one run; Sleep(0) yields.
    return (Incr(1), Incr(i + 2), Sleep(0.0))[kind]


#: One step of a program: what an outside task does next.
Op = tuple[Any, ...]

_counts = st.integers(1, 2 * RUN_MAX_MESSAGES + 3)
_modes = st.sampled_from([0, 0, 1, 2])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("tell"), st.integers(0, 2), st.integers(0, 2), _counts, _modes),
        st.tuples(st.just("fan"), st.integers(0, 2), st.integers(0, 2), _counts, _modes),
        st.tuples(st.just("caused"), st.sampled_from([None, 5, 7]), st.integers(0, 2), _counts),
        st.tuples(st.just("ask"), st.integers(0, 2)),
        st.tuples(st.just("boom"), st.integers(0, 1)),
        st.tuples(st.just("peek")),
        st.tuples(st.just("yield")),
        st.tuples(st.just("settle")),
    ),
    max_size=25,
)


async def run_program(tracer: Tracer, ops: list[Op]) -> list[list[TraceEvent]]:
    """Run *ops*; return the ``send`` events the tracer's first sink showed at each
    ``peek`` (a run still held by the tracer included)."""
    sink = tracer.sinks[0]
    peeks: list[list[TraceEvent]] = []
    # Seeded: Trio's own scheduler shuffles otherwise, and two runs are compared.
    async with open_runtime(tracer=tracer, seed=1) as rt:
        counters = [
            await rt.spawn(Counter, name="c0", restart="permanent", max_restarts=10**6),
            await rt.spawn(Counter, name="c1", restart="permanent", max_restarts=10**6),
            # a small mailbox: tells that find it full take the slow path (an envelope)
            await rt.spawn(Counter, name="c2", mailbox_size=2),
        ]
        fanner = await rt.spawn(Fanner, counters, name="fanner", mailbox_size=1024)
        for op in ops:
            match op:
                case ("tell", to, kind, n, mode):
                    for i in range(n):
                        await _send(counters[to], _message(kind, i), mode, i)
                case ("fan", to, kind, n, mode):
                    await fanner.tell(Fan(to, kind, n, mode))
                case ("caused", cause, kind, n):
                    with caused_by(cause):
                        for i in range(n):
                            await counters[1].tell(_message(kind, i))
                case ("ask", to):
                    await counters[to].ask(Get())
                case ("boom", to):
                    await counters[to].tell(Boom())
                case ("peek",) if isinstance(sink, MemorySink):
                    peeks.append(sink.of_kind("send"))
                case ("yield",):
                    await trio.lowlevel.checkpoint()
                case ("settle",):
                    await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()
        for ref in (*counters, fanner):
            await ref.stop()
    return peeks


def run_both(ops: list[Op]) -> tuple[MemorySink, Tracer, MemorySink, list[Any], list[Any]]:
    lone, a, b = MemorySink(), MemorySink(), MemorySink()
    runs_tracer, plain_tracer = Tracer(lone), Tracer(a, b)
    assert runs_tracer.runs and not plain_tracer.runs
    mine = trio.run(
        run_program, runs_tracer, ops, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    theirs = trio.run(
        run_program, plain_tracer, ops, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    return lone, runs_tracer, a, mine, theirs


def assert_same_trace(ops: list[Op]) -> list[SendRunLike]:
    lone, tracer, a, mine, theirs = run_both(ops)
    assert lone.events == a.events
    assert lone.records == a.records
    assert [e.seq for e in lone.events] == list(range(1, tracer.seq + 1))
    assert mine == theirs  # what a reader saw mid-way: sends are never behind
    runs = send_runs(lone)
    assert all(2 <= r.count <= RUN_MAX_MESSAGES for r in runs)  # a run of one: its event
    return runs


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_send_runs_record_the_trace_per_event_recording_records(ops: list[Op]) -> None:
    """Any program of tells (from outside, from a handler, under ``caused_by``; of one
    type or alternating; to a full mailbox; interleaved with asks, crashes, yields and
    reads of the ring): the lone ring's events and records are those of per-event
    recording, seq for seq, and a reader mid-way sees every send made so far."""
    assert_same_trace(ops)


def run_jsonl_both(ops: list[Op], **tracer_kw: Any) -> tuple[bytes, bytes]:
    """*ops* recorded with payloads into a lone JSONL file (runs: of handled tells, and of
    sends with their payloads, written as run lines) and into one beside a ``MemorySink``
    (per-event); the two files' bytes."""
    with tempfile.TemporaryDirectory(prefix="jsonl-runs-") as tmp:
        a, b = Path(tmp) / "runs.jsonl", Path(tmp) / "events.jsonl"
        runs_sink, plain_sink = JsonlFileSink(a), JsonlFileSink(b)
        runs_tracer = Tracer(runs_sink, payloads=True, **tracer_kw)
        plain_tracer = Tracer(plain_sink, MemorySink(), payloads=True, **tracer_kw)
        assert runs_tracer.runs and runs_tracer._runs_sends and not plain_tracer.runs
        for tracer in (runs_tracer, plain_tracer):
            try:
                trio.run(
                    run_program, tracer, ops, clock=trio.testing.MockClock(autojump_threshold=0)
                )
            finally:
                tracer.close()
        return a.read_bytes(), b.read_bytes()


@settings(max_examples=100, deadline=None)
@given(OPS)
def test_runs_into_a_jsonl_file_write_the_file_per_event_recording_writes(ops: list[Op]) -> None:
    """The same programs, with payloads, into a lone JSONL file: read back, the file has
    the events (and, run lines expanded to their records, the records) per-event recording
    writes - seqs, times, payloads - and no line of it is longer for it."""
    mine, theirs = run_jsonl_both(ops)
    assert_same_file_contents(mine, theirs)


def file_lines(data: bytes) -> list[traces.TraceEvent]:
    """The records of a trace file's bytes, as written (run lines not expanded)."""
    return [msgspec.json.decode(line, type=TraceEvent) for line in data.splitlines()[1:]]


def assert_same_file_contents(mine: bytes, theirs: bytes) -> None:
    assert mine.splitlines()[0] == theirs.splitlines()[0]  # the header
    mine_lines, their_lines = file_lines(mine), file_lines(theirs)
    assert list(traces.records_of(mine_lines)) == their_lines
    assert list(traces.expand(mine_lines)) == list(traces.expand(their_lines))
    assert all(e.run is None for e in their_lines)
    assert len(mine) <= len(theirs)


def test_a_send_run_with_payloads_holds_each_sends_payload(run_impl: RunImpl) -> None:
    """Into a lone JSONL file with payloads, a stream of tells of one type but different
    values is one run that keeps each value (redacted, as per-event recording would)."""
    ops: list[Op] = [("tell", 0, 1, 300, 0), ("tell", 0, 0, 5, 0), ("ask", 0)]
    mine, theirs = run_jsonl_both(ops)
    assert_same_file_contents(mine, theirs)
    lines = file_lines(mine)
    assert any(e.kind == "send_run" for e in lines) and any(e.kind == "handle_run" for e in lines)
    assert len(mine) < len(theirs) * 0.6  # run lines: far fewer bytes
    payloads = [json.loads(bytes(e.payload)) for e in traces.expand(lines) if e.payload]
    assert [{"by": i + 2} for i in range(300)] == [p for p in payloads if p.get("by", 0) > 1]
    hidden, theirs = run_jsonl_both(ops, redact=lambda m: Incr(0) if type(m) is Incr else m)
    assert_same_file_contents(hidden, theirs)
    assert b'"by":2' not in hidden and hidden.count(b'"by":0') == 305

    tracer = Tracer(JsonlFileSink(os.devnull), payloads=True, clock=lambda: 0.0)
    for i in range(2):
        tracer.send("/a", None, None, False, Incr(i))
    run = tracer.send_run  # (the second send opened it; ActorRef.tell adds the next)
    assert run is not None and run.add("/a", Incr(2), None, None) == 3
    assert isinstance(run, SEND_RUN_TYPES) and run.count == 2
    assert [bytes(p) for p in run.payloads] == [b'{"by":1}', b'{"by":2}']
    tracer.close()


async def test_a_tell_whose_payload_cannot_be_made_is_not_sent_and_takes_no_seq(
    run_impl: RunImpl, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A redact that raises on a send inside a run fails that tell (its error, at the
    sender) as it does outside one: the message is not queued, no seq is taken, and the
    tells after it are recorded as if it had never been tried."""

    def redact(msg: Any) -> Any:
        if type(msg) is Incr and msg.by == 13:
            raise ValueError("secret")
        return msg

    path = tmp_path / "t.jsonl"
    tracer = Tracer(JsonlFileSink(path), payloads=True, redact=redact)
    async with open_runtime(tracer=tracer) as rt:
        ref = await rt.spawn(Counter, name="c")
        for by in range(20):
            if by == 13:
                with pytest.raises(ValueError, match="secret"):
                    await ref.tell(Incr(by))
            else:
                await ref.tell(Incr(by))
        assert await ref.ask(Get()) == sum(range(20)) - 13
        await ref.stop()
    tracer.close()
    events = traces.read_trace(path).events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    sent = [
        json.loads(bytes(e.payload))["by"]
        for e in events
        if e.kind == "send" and e.msg_type == "Incr"
    ]
    assert sent == [by for by in range(20) if by != 13]


def test_a_burst_of_tells_is_recorded_in_full_runs() -> None:
    """1,000 tells from outside: the first is an event, the rest runs of at most
    ``RUN_MAX_MESSAGES`` (the full ones exactly that), events as per-event recording."""
    runs = assert_same_trace([("tell", 0, 0, 1000, 0)])
    assert max(r.count for r in runs) == RUN_MAX_MESSAGES
    assert sum(r.count for r in runs) >= 900


def test_a_run_breaks_where_the_sender_cause_type_or_target_changes() -> None:
    """Sends from one handler share a cause; the next handler's sends start a new run
    (its own cause), and so do a new type, another target and another outside cause."""
    runs = assert_same_trace(
        [
            ("fan", 0, 0, 10, 0), ("fan", 0, 0, 10, 0), ("settle",),
            ("tell", 0, 0, 5, 0), ("tell", 0, 2, 5, 0), ("tell", 1, 2, 5, 0),
            ("caused", 5, 0, 5), ("caused", 7, 0, 5),
        ]
    )  # fmt: skip
    shapes = [(r.actor.rsplit("/", 1)[-1], r.sender, r.cause, r.cls.__name__, r.count)
              for r in runs]  # fmt: skip
    fanned = [s for s in shapes if s[1] is not None]
    assert len(fanned) == 2 and fanned[0][2] != fanned[1][2]  # one run per Fan handled
    assert all(s[4] == 9 for s in fanned)  # the first send of each is an event
    outside = [s[2:] for s in shapes if s[1] is None]
    assert outside == [(None, "Incr", 4), (None, "Sleep", 4),
                       (None, "Sleep", 4), (5, "Incr", 4), (7, "Incr", 4)]  # fmt: skip


async def test_a_send_run_still_held_by_the_tracer_is_shown_by_every_view(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sends recorded into the run the tracer still holds are in ``events``, ``records``,
    ``len`` and ``statistics`` at once (the actor has not run yet)."""
    sink = MemorySink()
    tracer = Tracer(sink)
    async with open_runtime(tracer=tracer) as rt:
        ref = await rt.spawn(Counter, name="counter")
        seq = tracer.seq
        for _ in range(5):
            await ref.tell(Incr())
        assert isinstance(tracer.pending, SEND_RUN_TYPES) and tracer.pending.count == 4
        sends = sink.of_kind("send")
        assert [e.seq for e in sends] == list(range(seq + 1, seq + 6))
        assert len(sink) == len(sink.events) == tracer.seq == seq + 5
        assert sink.statistics() == traces.SinkStatistics(tracer.seq, 0, tracer.seq)
        assert sink.records[-4:] == list(tracer.pending.records())
        await ref.stop()


async def test_under_a_real_clock_sends_in_a_run_carry_their_own_times() -> None:
    """Each send of a run has the time it was made (never the run's first), and times
    never go back. (No wall-clock assertion: only the recorded values are compared.)"""
    sink = MemorySink()
    tracer = Tracer(sink)
    async with open_runtime(tracer=tracer) as rt:
        ref = await rt.spawn(Counter, name="counter", mailbox_size=1024)
        for _ in range(500):
            await ref.tell(Incr())
        await ref.ask(Get())
        await ref.stop()
    assert send_runs(sink)
    sends = [e.t for e in sink.of_kind("send")]
    assert sends == sorted(sends) and len(set(sends)) > len(sends) // 2
    assert sorted(e.t for e in sink.events) == [e.t for e in sink.events]


@pytest.mark.parametrize("how", ["payloads", "two sinks"])
async def test_no_send_runs_where_each_send_must_be_recorded_whole(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    """Into a ``MemorySink`` with payloads (it bounds payload bytes per record), or
    without a lone sink, every send is an event of its own."""
    sink = MemorySink()
    tracer = Tracer(sink, payloads=True) if how == "payloads" else Tracer(sink, MemorySink())
    async with open_runtime(tracer=tracer) as rt:
        ref = await rt.spawn(Counter, name="counter")
        for i in range(50):
            await ref.tell(Incr(i))
        await ref.stop()
    assert not send_runs(sink)
    sends = sink.of_kind("send")
    assert len(sends) == 50
    if how == "payloads":
        assert [msgspec.json.decode(e.payload)["by"] for e in sends] == list(range(50))


async def test_a_recorder_that_is_not_a_tracer_gets_every_send(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The runtime takes any ``Recorder``: ``tell``'s run path is only for a ``Tracer``
    recording runs, so a recorder of its own gets each send through ``send``."""

    sent: list[int] = []

    class Spy:
        """Forwards everything to a tracer without runs, noting each send."""

        def __init__(self) -> None:
            self.inner = Tracer(MemorySink(), MemorySink())

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def send(self, *args: Any, **kwargs: Any) -> int:
            seq: int = self.inner.send(*args, **kwargs)
            sent.append(seq)
            return seq

    spy = Spy()
    async with open_runtime(tracer=spy) as rt:
        assert not rt.runs
        ref = await rt.spawn(Counter, name="counter")
        for _ in range(20):
            await ref.tell(Incr())
        assert await ref.ask(Get()) == 20
        await ref.stop()
    assert len(sent) == 21  # 20 tells and the ask


def test_a_send_run_stands_for_its_sends(run_impl: RunImpl) -> None:
    a, b = "/a", "/b"
    run = run_impl.SendRun(a, b, 4, Incr, 10, iter([1.5, 2.0]).__next__, 0.0, [1.0])
    assert run.add(a, Incr(), b, 4) == 11
    assert run.add(a, Incr(), b, 4) == 12
    assert run.count == 3 and run.last_seq == 12 and list(run.times) == [1.0, 1.5, 2.0]
    expected = [
        TraceEvent(seq, t, "send", "/a", "/b", seq, 4, None, "Incr")
        for seq, t in zip(itertools.count(10), (1.0, 1.5, 2.0))
    ]
    assert list(run.records()) == expected
    run.freeze()  # as written: doubles, the same records
    assert list(run.records()) == expected and run.count == 3
    assert run.add(a, Incr(), b, 4) is None and run.count == 3  # written: takes nothing
    assert [(e.seq, e.kind) for e in traces.expand([run])] == [(10, "send"), (11, "send"),
                                                                (12, "send")]  # fmt: skip


class SubIncr(Incr):
    pass


def test_a_send_run_takes_only_its_own_send_and_no_more_than_it_holds(run_impl: RunImpl) -> None:
    """``add`` compares by identity (the paths and cause the runtime passes are the same
    objects) and by exact class; a refused send changes nothing; a full run takes no more."""
    a, b = "/a", "/b"
    run = run_impl.SendRun(a, b, 4, Incr, 1, itertools.count(2).__next__, 0.25, [1.25])
    other_a = "".join(["/", "a"])  # equal to "/a", another object
    assert other_a == a and other_a is not a
    refused = [(other_a, Incr(), b, 4), (a, SubIncr(), b, 4), (a, Get(), b, 4),
               (a, Incr(), None, 4), (a, Incr(), b, None), (a, Incr(), b, 4000)]  # fmt: skip
    for args in refused:
        assert run.add(*args) is None, args
    assert run.count == 1
    for mid in range(2, RUN_MAX_MESSAGES + 1):
        assert run.add(a, Incr(), b, 4) == mid
    assert run.add(a, Incr(), b, 4) is None and run.count == RUN_MAX_MESSAGES
    assert list(run.times)[:3] == [1.25, 2.25, 3.25]


class Starter(Actor):
    """Tells *n* ``Incr`` to *target* from ``on_start`` (no message in hand: no cause),
    yielding after each."""

    def __init__(self, target: ActorRef[Counter], n: int) -> None:
        self.target, self.n = target, n

    async def on_start(self) -> None:
        for _ in range(self.n):
            await self.target.tell(Incr())
            await trio.lowlevel.checkpoint()

    async def handle(self, msg: Get) -> None:
        return None


def test_sends_from_two_senders_in_turn_are_never_one_run() -> None:
    """An actor's ``on_start`` and a task outside any actor (both without a cause) tell the
    same type to the same actor in turn, nothing traced in between (the target is busy in
    a handler): each send keeps its own sender."""

    async def program(tracer: Tracer, ops: list[Op]) -> list[list[TraceEvent]]:
        async with open_runtime(tracer=tracer, seed=3) as rt:
            target = await rt.spawn(Counter, name="target", mailbox_size=1024)
            await target.tell(Sleep(100.0))  # busy: it takes nothing more for a while
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: rt.spawn(Starter, target, 20, name="starter"))
                for _ in range(20):
                    await target.tell(Incr())
                    await trio.lowlevel.checkpoint()
            await target.stop()
        return []

    lone, a, b = MemorySink(), MemorySink(), MemorySink()
    trio.run(program, Tracer(lone), [], clock=trio.testing.MockClock(autojump_threshold=0))
    trio.run(program, Tracer(a, b), [], clock=trio.testing.MockClock(autojump_threshold=0))
    assert lone.events == a.events
    senders = [e.peer for e in a.of_kind("send") if e.msg_type == "Incr"]
    assert senders.count(None) == 20 and len(senders) == 40
    assert any(x != y for x, y in itertools.pairwise(senders))  # they did take turns


def test_only_the_same_send_twice_in_a_row_opens_a_run() -> None:
    """A run opens when a tell's send is the same as the one just before, nothing traced
    in between: a send repeated after another event (an ask) stays an event."""
    assert_same_trace([("tell", 0, 0, 1, 0), ("ask", 0), ("tell", 0, 0, 1, 0), ("ask", 0)])
    lone = run_both([("tell", 0, 0, 1, 0), ("ask", 0), ("tell", 0, 0, 1, 0), ("ask", 0)])[0]
    assert not send_runs(lone)
    lone = run_both([("tell", 0, 0, 2, 0), ("ask", 0), ("tell", 0, 0, 3, 0), ("ask", 0)])[0]
    assert [r.count for r in send_runs(lone)] == [2]  # (a run of one is written as its send)


def test_a_new_clock_writes_a_pending_send_run_first() -> None:
    """A run reads the clock it was opened with: ``use_clock`` writes it first."""
    sink = MemorySink()
    tracer = Tracer(sink, clock=lambda: 1.0)
    for _ in range(2):
        tracer.send("/a", None, None, False, Incr())
    run = tracer.pending
    assert isinstance(run, SEND_RUN_TYPES) and run.count == 1
    for _ in range(2):  # as ActorRef.tell appends
        assert run.add("/a", Incr(), None, None) is not None
    tracer.use_clock(lambda: 5.0)
    assert tracer.pending is None
    tracer.send("/a", None, None, False, Incr())
    assert [(e.seq, e.t) for e in sink.events] == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0),
                                                   (5, 5.0)]  # fmt: skip


def test_sends_once_trace_links_exist_are_events_that_inherit_their_trace() -> None:
    """Once a request was served (``http_serve``: trace links exist), every send goes
    through ``Tracer.send`` and inherits its cause's trace: no runs."""
    sink = MemorySink()
    tracer = Tracer(sink, clock=lambda: 0.0)
    request = tracer.http_serve("/api", "client", "GET", "/x", "a" * 32, "b" * 16, None)
    sent = [tracer.send("/a", None, request, False, Incr()) for _ in range(5)]
    assert tracer.pending is None and not send_runs(sink)
    assert all(tracer.context_of("/a", seq) == ("a" * 32, "b" * 16) for seq in sent)
