"""Property: every ask ends, and every accepted message is handled or answered by the drain.

Each Hypothesis example is a small program over 1-3 actors (asks with and without
timeouts, asks whose caller cancels, tells, crashing tells, stops with various graces),
run in its own ``trio.run`` under ``MockClock(autojump_threshold=0)`` with a memory
tracer. Trio's scheduler RNG is registered with Hypothesis, so each example is
reproducible.

Checked per example:

* every command task finished (an overall virtual ``fail_after`` guards against hangs);
* every ask ended with exactly one of: its reply, the handler's exception,
  ``AskTimeout``, ``ActorGone``, or its own cancel scope - each only where possible;
* in the trace, every accepted message (``send``) was either received and its handler
  ended (``handle``, or ``cancel`` when ``stop(grace=...)`` cut it short), or never
  received and then drained (``drop``) or withdrawn by its asker (``timeout``/``cancel``);
* a request withdrawn while still queued is never received, let alone handled;
* every accepted ask got exactly one of a ``reply`` or a withdrawal, consistent with
  what its caller saw.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from trioxide import runtime, traces

# -- the actor under test -------------------------------------------------------------


class Work(msgspec.Struct, frozen=True):
    """Asked: sleeps ``delay`` then returns ``tag`` (or raises ``HandlerError``)."""

    tag: int
    delay: float
    fail: bool = False


class Note(msgspec.Struct, frozen=True):
    """Told: sleeps ``delay`` then logs ``tag``."""

    tag: int
    delay: float


class Crash(msgspec.Struct, frozen=True):
    """Told: the handler raises at once (the actor fails and is restarted)."""

    tag: int


class HandlerError(Exception):
    def __init__(self, tag: int) -> None:
        super().__init__(tag)
        self.tag = tag


class CrashError(Exception):
    pass


class Worker(runtime.Actor):
    def __init__(self, log: list[int]) -> None:
        self.log = log  # shared across incarnations (spawn args are reused on restart)

    async def handle(self, msg: Work | Note | Crash) -> int | None:
        match msg:
            case Crash():
                # Crashable actors are never stopped explicitly (see command_strategy).
                raise CrashError(msg.tag)
            case Work(tag, delay, fail):
                await trio.sleep(delay)
                if fail:
                    raise HandlerError(tag)
                return tag
            case Note(tag, delay):
                await trio.sleep(delay)
                self.log.append(tag)
        return None


# -- commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    actor: int
    delay: float
    timeout: float | None
    fail: bool


@dataclass(frozen=True)
class AskCancel:
    """An ask whose caller sits in a cancel scope with deadline ``start + cancel_after``."""

    actor: int
    delay: float
    cancel_after: float


@dataclass(frozen=True)
class Tell:
    actor: int
    delay: float


@dataclass(frozen=True)
class CrashCmd:
    actor: int


@dataclass(frozen=True)
class Stop:
    actor: int
    grace: float | None


Command = Ask | AskCancel | Tell | CrashCmd | Stop

# Quarter-second multiples: exact in binary floating point, so virtual times are exact.
GAPS = st.sampled_from([0.0, 0.0, 0.25, 1.0])
DELAYS = st.sampled_from([0.0, 0.25, 1.0, 2.5])
TIMEOUTS = st.none() | st.sampled_from([0.0, 0.5, 1.0, 3.0])
CANCEL_AFTER = st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0])
GRACES = st.sampled_from([None, 0.0, 0.5])
MAILBOX_SIZES = st.sampled_from([1, 2, 4, 64])


def command_strategy(n_actors: int, crashable: frozenset[int]) -> st.SearchStrategy[Command]:
    """Commands over the actors. Crashes go only to *crashable* actors; stops go to any
    (a crash racing a stop must end a supervised actor, never escalate)."""
    actor = st.integers(0, n_actors - 1)
    ask = st.builds(Ask, actor, DELAYS, TIMEOUTS, st.booleans())
    ask_cancel = st.builds(AskCancel, actor, DELAYS, CANCEL_AFTER)
    tell = st.builds(Tell, actor, DELAYS)
    # Stops are rarer than the rest so that most programs keep some actors running.
    options = [ask, ask, ask_cancel, ask_cancel, tell, tell]
    if crashable:
        options.append(st.builds(CrashCmd, st.sampled_from(sorted(crashable))))
    stoppable = list(range(n_actors))
    if stoppable:
        options.append(st.builds(Stop, st.sampled_from(stoppable), GRACES))
    return st.one_of(options)


@dataclass(frozen=True)
class Program:
    sizes: list[int]  # mailbox size per actor
    crashable: frozenset[int]
    timed: list[tuple[float, Command]]  # (start offset, command)


@st.composite
def programs(draw: st.DrawFn) -> Program:
    n = draw(st.integers(1, 3))
    sizes = draw(st.lists(MAILBOX_SIZES, min_size=n, max_size=n))
    crashable = frozenset(draw(st.sets(st.integers(0, n - 1))))
    steps = draw(st.lists(st.tuples(GAPS, command_strategy(n, crashable)), min_size=1, max_size=24))
    at = 0.0
    timed: list[tuple[float, Command]] = []
    for gap, cmd in steps:
        at += gap
        timed.append((at, cmd))
    return Program(sizes, crashable, timed)


# -- running one program ---------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # value | error | timeout | gone | cancelled | ok | unexpected
    start: float
    end: float
    detail: object = None


ASK_KINDS = {"value", "error", "timeout", "gone", "cancelled"}
OVERALL_LIMIT = 10_000.0  # virtual seconds; a program needs at most a few hundred


def run_program(
    program: Program,
) -> tuple[dict[int, Outcome], list[traces.TraceEvent], list[list[int]], list[bool]]:
    sizes, timed = program.sizes, program.timed
    sink = traces.MemorySink()
    tracer = traces.Tracer(sink, payloads=True)
    outcomes: dict[int, Outcome] = {}
    logs: list[list[int]] = [[] for _ in sizes]
    alive_after: list[bool] = []

    async def main() -> None:
        with trio.fail_after(OVERALL_LIMIT):
            async with runtime.open_runtime(tracer=tracer, name="prop") as rt:
                refs = [
                    await rt.spawn(
                        Worker,
                        logs[i],
                        name=f"w{i}",
                        mailbox_size=size,
                        restart="transient",
                        max_restarts=1000,
                        within=1.0,
                    )
                    for i, size in enumerate(sizes)
                ]
                t0 = trio.current_time()
                async with trio.open_nursery() as nursery:
                    for i, (at, cmd) in enumerate(timed):
                        nursery.start_soon(run_command, refs, i, t0 + at, cmd)
                alive_after.extend(ref.alive for ref in refs)

    async def run_command(refs: list[runtime.ActorRef], i: int, at: float, cmd: Command) -> None:
        await trio.sleep_until(at)
        start = trio.current_time()
        ref = refs[cmd.actor]

        def done(kind: str, detail: object = None) -> None:
            assert i not in outcomes, f"command {i} finished twice"
            outcomes[i] = Outcome(kind, start, trio.current_time(), detail)

        try:
            match cmd:
                case Ask(_, delay, timeout, fail):
                    value = await ref.ask(Work(i, delay, fail), timeout=timeout)
                    done("value", value)
                case AskCancel(_, delay, cancel_after):
                    with trio.CancelScope(deadline=start + cancel_after) as scope:
                        value = await ref.ask(Work(i, delay))
                        done("value", value)
                    if scope.cancelled_caught:
                        done("cancelled")
                case Tell(_, delay):
                    await ref.tell(Note(i, delay))
                    done("ok")
                case CrashCmd():
                    await ref.tell(Crash(i))
                    done("ok")
                case Stop(_, grace):
                    await ref.stop(reason=f"stop-{i}", grace=grace)
                    done("ok", ref.alive)
        except HandlerError as exc:
            done("error", exc.tag)
        except runtime.AskTimeout as exc:
            done("timeout", exc.timeout)
        except runtime.ActorGone as exc:
            done("gone", exc.reason)
        except Exception as exc:  # recorded, then reported by the checks
            done("unexpected", repr(exc))

    trio.run(main, clock=MockClock(autojump_threshold=0))
    return outcomes, sink.events, logs, alive_after


# -- the checks -------------------------------------------------------------------------


def check_outcomes(timed: list[tuple[float, Command]], outcomes: dict[int, Outcome]) -> None:
    assert sorted(outcomes) == list(range(len(timed))), "some command task never finished"
    stopped = {cmd.actor for _, cmd in timed if isinstance(cmd, Stop)}
    for i, (_, cmd) in enumerate(timed):
        out = outcomes[i]
        assert out.kind != "unexpected", f"command {i} {cmd}: {out.detail}"
        if out.kind == "gone":
            assert cmd.actor in stopped, f"{cmd}: ActorGone but the actor was never stopped"
        match cmd:
            case Ask(_, delay, timeout, fail):
                assert out.kind in ASK_KINDS - {"cancelled"}, (cmd, out)
                if out.kind == "value":
                    assert not fail and out.detail == i
                    assert out.end >= out.start + delay
                elif out.kind == "error":
                    assert fail and out.detail == i
                    assert out.end >= out.start + delay
                elif out.kind == "timeout":
                    assert timeout is not None and out.detail == timeout
                    # Never early. (Exactly on time is checked by the example tests
                    # below; it does not hold when mailbox waits reorder a lane.)
                    assert out.end >= out.start + timeout
            case AskCancel(_, delay, cancel_after):
                assert out.kind in {"value", "gone", "cancelled"}, (cmd, out)
                if out.kind == "value":
                    assert out.detail == i
                    assert out.start + delay <= out.end <= out.start + cancel_after
                elif out.kind == "cancelled":
                    assert out.end == out.start + cancel_after  # the caller's own deadline
            case Tell() | CrashCmd():
                assert out.kind in {"ok", "gone"}, (cmd, out)
            case Stop():
                assert out.kind == "ok" and out.detail is False  # stop() returns after exit


# "while running": the handler had started; the reply is discarded (no drop, no receive).
WITHDRAW_DETAILS = {"cancelled", "timeout", "cancelled while running", "timeout while running"}


def check_trace(
    timed: list[tuple[float, Command]],
    outcomes: dict[int, Outcome],
    events: list[traces.TraceEvent],
    logs: list[list[int]],
) -> None:
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(events) + 1)), "trace seq must be 1, 2, 3, ... (no drops)"
    by_id: dict[int, list[traces.TraceEvent]] = defaultdict(list)
    withdrawals: dict[int, list[traces.TraceEvent]] = defaultdict(list)
    replies: dict[int, list[traces.TraceEvent]] = defaultdict(list)
    sends: dict[int, traces.TraceEvent] = {}
    for e in events:
        if e.kind in ("cancel", "timeout") and e.detail in WITHDRAW_DETAILS:
            assert e.corr is not None and e.corr == e.msg_id
            assert e.kind == ("cancel" if e.detail.startswith("cancelled") else "timeout")
            withdrawals[e.corr].append(e)
        elif e.kind == "reply":
            assert e.corr is not None
            replies[e.corr].append(e)
        elif e.kind == "send":
            assert e.msg_id is not None and e.msg_id not in sends, "msg ids are unique"
            sends[e.msg_id] = e
        elif e.msg_id is not None:
            by_id[e.msg_id].append(e)

    tag_of: dict[int, int] = {}
    for mid, send in sends.items():
        assert send.payload is not None
        tag_of[mid] = msgspec.json.decode(send.payload)["tag"]
        evs = by_id.get(mid, [])
        received = [e for e in evs if e.kind == "receive"]
        ended = [e for e in evs if e.kind == "handle" or e.kind == "cancel"]
        dropped = [e for e in evs if e.kind == "drop"]
        withdrawn = withdrawals.get(mid, [])
        what = f"message {mid} ({send.msg_type} tag {tag_of[mid]}) to {send.actor}"
        assert len(received) <= 1, f"{what} received twice"
        assert len(withdrawn) <= 1, f"{what} withdrawn twice"
        if received:
            (rcv,) = received
            assert len(ended) == 1, f"{what}: handler started but did not end exactly once"
            assert ended[0].seq > rcv.seq
            assert not dropped, f"{what}: received and drained"
            if withdrawn:  # withdrawn while running: the handler ran on
                assert withdrawn[0].seq > rcv.seq
        else:
            assert not ended, f"{what}: handled without being received"
            assert len(dropped) + len(withdrawn) == 1, (
                f"{what}: accepted but never handled, drained or withdrawn (lost)"
            )
            if withdrawn:
                # Withdrawn while still queued: never received (checked above) and
                # never drained.
                assert not dropped
        if send.corr is not None:  # an ask: one reply or one withdrawal, not both
            assert send.corr == mid
            assert len(replies.get(mid, [])) + len(withdrawn) == 1, (
                f"{what}: replies {replies.get(mid)} withdrawals {withdrawn}"
            )
        else:
            assert mid not in replies, f"{what}: a tell got a reply"

    # What callers saw agrees with the trace.
    id_of_tag = {tag: mid for mid, tag in tag_of.items()}
    assert len(id_of_tag) == len(tag_of), "each command sent at most one message"
    for i, (_, cmd) in enumerate(timed):
        out = outcomes[i]
        mid = id_of_tag.get(i)
        if isinstance(cmd, Stop):
            assert mid is None
            continue
        if isinstance(cmd, AskCancel) and cmd.cancel_after == 0:
            # Called in an already-cancelled scope: the ask checks for cancellation
            # before anything else and never enqueues.
            assert out.kind == "cancelled" and mid is None, (cmd, out)
        if mid is None:  # never accepted: refused at once or gave up waiting for space
            assert out.kind in {"gone", "timeout", "cancelled"}, (cmd, out)
            continue
        if isinstance(cmd, (Tell, CrashCmd)):
            assert out.kind == "ok", (cmd, out)
            continue
        reply = replies.get(mid, [])
        withdrawn = withdrawals.get(mid, [])
        if out.kind == "value":
            assert [r.outcome for r in reply] == ["ok"]
        elif out.kind == "error":
            assert len(reply) == 1 and reply[0].outcome == "error"
            assert reply[0].detail.startswith("HandlerError")
        elif out.kind == "gone":
            assert len(reply) == 1 and reply[0].outcome == "error"
            assert reply[0].detail.startswith("ActorGone")
        elif out.kind == "timeout":
            assert [w.kind for w in withdrawn] == ["timeout"]
        elif out.kind == "cancelled":
            assert [w.kind for w in withdrawn] == ["cancel"]

    # Notes logged by the actors are exactly those whose handler ended "ok".
    handled_notes = sorted(
        tag_of[e.msg_id]
        for evs in by_id.values()
        for e in evs
        if e.kind == "handle" and e.outcome == "ok" and sends[e.msg_id].msg_type == "Note"
    )
    assert sorted(tag for log in logs for tag in log) == handled_notes


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(programs())
def test_every_ask_ends_and_nothing_accepted_is_lost(program: Program) -> None:
    timed = program.timed
    outcomes, events, logs, alive_after = run_program(program)
    check_outcomes(timed, outcomes)
    check_trace(timed, outcomes, events, logs)
    stopped = {cmd.actor for _, cmd in timed if isinstance(cmd, Stop)}
    for i, alive in enumerate(alive_after):
        assert alive == (i not in stopped), "crashes restart (transient); only stop() ends"


# -- example tests: exact timeout times -------------------------------------------------


class Slow(runtime.Actor):
    async def handle(self, msg: Work) -> int:
        await trio.sleep(msg.delay)
        return msg.tag


async def test_ask_timeout_fires_at_exact_virtual_time(autojump_clock: MockClock) -> None:
    async with runtime.open_runtime() as rt:
        ref = await rt.spawn(Slow, name="slow")
        start = trio.current_time()
        with pytest.raises(runtime.AskTimeout) as info:
            await ref.ask(Work(1, 10.0), timeout=2.5)
        assert trio.current_time() == start + 2.5
        assert info.value.timeout == 2.5
        # The handler was not cancelled: the next ask waits for it (reply discarded).
        assert await ref.ask(Work(2, 0.0)) == 2
        assert trio.current_time() == start + 10.0


async def test_ask_timeout_counts_the_mailbox_wait(autojump_clock: MockClock) -> None:
    async with runtime.open_runtime() as rt:
        ref = await rt.spawn(Slow, name="slow", mailbox_size=1)
        start = trio.current_time()
        await ref.tell(Work(0, 3.0))  # busy until start+3
        await ref.tell(Work(1, 100.0))  # fills the one slot
        with pytest.raises(runtime.AskTimeout):
            await ref.ask(Work(2, 0.0), timeout=1.0)  # still waiting for space at t+1
        assert trio.current_time() == start + 1.0
        with pytest.raises(runtime.AskTimeout):
            await ref.ask(Work(3, 0.0), timeout=5.0)  # gets a slot at t+3, queued behind 100s
        assert trio.current_time() == start + 6.0
        await ref.stop(grace=0)


async def test_ask_timeout_after_mailbox_wait_is_not_delayed_by_other_asks(
    autojump_clock: MockClock,
) -> None:
    async with runtime.open_runtime() as rt:
        x = await rt.spawn(Slow, name="x", mailbox_size=1)
        y = await rt.spawn(Slow, name="y")
        t0 = trio.current_time()
        await x.tell(Work(0, 3.0))  # x is busy until t0+3
        await x.tell(Work(1, 100.0))  # and its one slot is taken
        ends: dict[str, float] = {}

        async def ask_x() -> None:  # deadline t0+5; enqueued only at t0+3
            with pytest.raises(runtime.AskTimeout):
                await x.ask(Work(2, 0.0), timeout=5.0)
            ends["x"] = trio.current_time() - t0

        async def ask_y() -> None:  # same timeout value, deadline t0+6, enqueued at t0+1
            await trio.sleep(1.0)
            with pytest.raises(runtime.AskTimeout):
                await y.ask(Work(3, 100.0), timeout=5.0)
            ends["y"] = trio.current_time() - t0

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_x)
            nursery.start_soon(ask_y)
        await x.stop(grace=0)
        await y.stop(grace=0)
    assert ends == {"x": 5.0, "y": 6.0}  # actual: x times out at 6.0


class SlowCrash(msgspec.Struct, frozen=True):
    delay: float


class CrashesLater(runtime.Actor):
    async def handle(self, msg: SlowCrash) -> None:
        await trio.sleep(msg.delay)
        raise CrashError("late")


async def test_failure_while_stopping_does_not_escalate(autojump_clock: MockClock) -> None:
    async with runtime.open_runtime() as rt:
        ref = await rt.spawn(
            CrashesLater, name="c", restart="transient", max_restarts=1000, within=1.0
        )
        await ref.tell(SlowCrash(1.0))
        await trio.sleep(0.5)
        await ref.stop("done")  # the handler in progress may finish - it fails at t=1
        assert trio.current_time() == 1.0
        assert not ref.alive
        assert ref.statistics().restarts == 0  # stop() never triggers a restart
