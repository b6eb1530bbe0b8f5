"""Pins for the guarantees of ``docs/semantics.md`` that no other test checked directly,
and the check that keeps the document honest: every test it cites exists.

Each test is the smallest deterministic case of one guarantee (virtual time, a seed) and
says in its docstring which mutation of the runtime it catches. Where the untraced fast
paths differ from the traced ones, a test runs both.
"""

from __future__ import annotations

import ast
import functools
import math
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import trioxide
from trioxide import (
    TELL_YIELD_EVERY,
    Actor,
    ActorGone,
    Admit,
    AskDeadlock,
    Rejected,
    Runtime,
    Terminated,
    open_runtime,
)
from trioxide import traces as tx
from trioxide.runtime._loop import HANDLER_BATCH

from ._msgs import Counter, Get, Incr

ROOT = Path(__file__).resolve().parents[2]
SEMANTICS = ROOT / "docs" / "semantics.md"

TRACED = pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])


def tracer(traced: bool) -> tx.Tracer | None:
    return tx.Tracer(tx.MemorySink()) if traced else None


class Ping(msgspec.Struct, frozen=True):
    n: int = 0


class Nap(msgspec.Struct, frozen=True):
    seconds: float


class Ref(msgspec.Struct, frozen=True):
    ref: Any


class Leaf(Actor):
    async def handle(self, msg: Ping | Nap) -> None:
        if isinstance(msg, Nap):
            await trio.sleep(msg.seconds)


# -- 1. actors and tasks ------------------------------------------------------------------


class Owner(Actor):
    async def on_start(self) -> None:
        await self.spawn(Leaf, name="kid")
        self.start_soon(trio.sleep_forever, name="helper")
        self.send_after(100, Ping())

    async def handle(self, msg: Ping) -> tuple[trio.lowlevel.Task, list[str]]:
        me = trio.lowlevel.current_task()
        (incarnation,) = me.child_nurseries
        return me, sorted(t.name for t in incarnation.child_tasks)


async def test_an_actor_is_one_task_owning_its_children_tasks_and_timers(
    trioxide_seed: int, autojump_clock: trio.abc.Clock
) -> None:
    """§1: the actor's handler runs in its own task, whose one nursery holds its child
    actor, child task and timer; the runtime's own tasks are the actors (root nursery) and
    the ask-deadline task (system nursery); no thread is started. Catches a child actor
    spawned into the root nursery, a timer started elsewhere, or a handler run in a task
    of its own."""
    threads = threading.active_count()
    async with open_runtime(seed=trioxide_seed, name="rt") as rt:
        *_, system, root = trio.lowlevel.current_task().child_nurseries  # the runtime's
        ref = await rt.spawn(Owner, name="owner")
        handler_task, names = await ref.ask(Ping())
        assert [t.name for t in root.child_tasks] == ["owner"]
        assert list(root.child_tasks) == [handler_task]
        assert [t.name for t in system.child_tasks] == ["rt:ask-deadlines"]
        assert len(names) == 3 and names[:2] == ["owner/kid", "owner:helper"]
        assert names[2].endswith("_timer_task")
        assert threading.active_count() == threads


class Exclusive(Actor):
    def __init__(self) -> None:
        self.active = 0
        self.most = 0

    async def handle(self, msg: Nap) -> int:
        self.active += 1
        self.most = max(self.most, self.active)
        await trio.sleep(msg.seconds)
        self.active -= 1
        return self.most


@TRACED
async def test_one_message_at_a_time(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    """§1: while a handler runs (and blocks), no other message of that actor is handled,
    whoever sends it. Catches handlers dispatched concurrently."""
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(Exclusive)
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(ref.tell if i % 2 else ref.ask, Nap(0.5 + i % 3))
        assert await ref.ask(Nap(0)) == 1
        assert trio.current_time() == 9.0  # they ran one after the other


@pytest.mark.parametrize("name", ["a/b", "a b", "tab\there", "", " lead", "trail\n", 7])
async def test_actor_names_are_non_empty_without_slash_or_whitespace(
    actor_runtime: Runtime, name: object
) -> None:
    """§1: a name is refused with ``ValueError`` naming it unless it is a non-empty string
    without ``/`` or whitespace (all of it: a trailing newline counts). Catches a partial
    match or a missing check."""
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        await actor_runtime.spawn(Leaf, name=name)  # type: ignore[arg-type]
    assert actor_runtime.actors() == []
    ok = await actor_runtime.spawn(Leaf, name="a-b.c_1:2")
    assert ok.path == "a-b.c_1:2"


TYPED_PROGRAM = """\
import msgspec
from trioxide import Actor, Runtime


class Get(msgspec.Struct, frozen=True):
    pass


class Other(msgspec.Struct, frozen=True):
    pass


class Counter(Actor):
    async def handle(self, msg: Get) -> int:
        return 0


async def main(rt: Runtime) -> None:
    ref = await rt.spawn(Counter)
    await ref.tell(Get())
    n: int = await ref.ask(Get())
    await ref.tell(Other())  # WRONG
    ref.tell_nowait(Other())  # WRONG
    await ref.ask(Other())  # WRONG
    s: str = await ref.ask(Get())  # WRONG
"""


def test_a_typed_ref_checks_messages_and_replies(tmp_path: Path) -> None:
    """§1: ``spawn(Counter)`` gives ``ActorRef[Counter]``: under ``mypy --strict`` a
    message ``Counter.handle`` does not take is an error for ``tell``, ``tell_nowait`` and
    ``ask``, and an ask's reply has the handler's return type. Catches refs typed ``Any``."""
    pytest.importorskip("mypy")
    program = tmp_path / "typed_program.py"
    program.write_text(TYPED_PROGRAM)
    mypy = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(
        [*mypy, str(program)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    wrong = [i for i, line in enumerate(TYPED_PROGRAM.splitlines(), 1) if "# WRONG" in line]
    assert [int(e.split(":")[1]) for e in errors] == wrong, done.stdout
    assert all('"Other"; expected "Get"' in e for e in errors[:3]), errors
    assert '"int"' in errors[3] and '"str"' in errors[3], errors


# -- 3. ordering --------------------------------------------------------------------------


class Log(Actor):
    def __init__(self) -> None:
        self.seen: list[int] = []

    async def handle(self, msg: Ping | Nap) -> list[int]:
        if isinstance(msg, Nap):
            await trio.sleep(msg.seconds)
        else:
            self.seen.append(msg.n)
        return list(self.seen)


#: Which sender task sends message n (irregular, so that serving senders in turn, or per
#: sender, would give another order than the order of the sends).
OWNERS = [0, 0, 1, 2, 2, 2, 1, 0, 1, 1, 2, 0, 0, 0, 2, 1]


@TRACED
async def test_fifo_across_senders(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    """§3: messages of one priority are handled in the order they were enqueued, whichever
    tasks sent them. Catches per-sender queues, round-robin service or LIFO."""
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(Log)
        await ref.tell(Nap(1))  # busy: everything below queues
        turns = [trio.Event() for _ in range(len(OWNERS) + 1)]

        async def sender(k: int) -> None:
            for n, owner in enumerate(OWNERS):
                if owner != k:
                    continue
                await turns[n].wait()
                if n % 3 == 0:
                    ref.tell_nowait(Ping(n))
                else:
                    await ref.tell(Ping(n))
                turns[n + 1].set()

        async with trio.open_nursery() as nursery:
            for k in range(3):
                nursery.start_soon(sender, k)
            turns[0].set()
        assert ref.statistics().queued == len(OWNERS)
        assert await ref.ask(Nap(0)) == list(range(len(OWNERS)))


# -- 4. admission --------------------------------------------------------------------------


class Watcher(Actor):
    """Monitors what it is told; its priority hook breaks on some ``Terminated``."""

    def __init__(self) -> None:
        self.got: list[object] = []

    def priority(self, msg: Any) -> int:
        if isinstance(msg, Terminated):
            if msg.reason == "raise":
                raise RuntimeError("priority hook broke")
            if msg.reason == "wrong type":
                return "high"  # type: ignore[return-value]
            return 0
        return msg.n if isinstance(msg, Ping) else 0

    async def handle(self, msg: Ping | Nap | Ref | Terminated) -> list[object]:
        match msg:
            case Ref(ref):
                self.monitor(ref)
            case Nap(seconds):
                await trio.sleep(seconds)
            case Ping(n):
                self.got.append(n)
            case Terminated(_, reason):
                self.got.append(reason)
        return list(self.got)


@pytest.mark.parametrize("reason", ["raise", "wrong type"])
async def test_terminated_survives_a_faulty_priority_hook_at_priority_0(
    actor_runtime: Runtime, reason: str
) -> None:
    """§4: a system message is never lost to a faulty priority hook: it is queued at
    priority 0 (after priority 1, before priority -1), and the exiting actor is not
    affected. Catches the hook's exception escaping the exit (the watched actor's task
    would fail) or the message being dropped."""
    watcher = await actor_runtime.spawn(Watcher)
    leaf = await actor_runtime.spawn(Leaf)
    await watcher.ask(Ref(leaf))
    await watcher.tell(Nap(1))  # busy: what follows queues
    await wait_all_tasks_blocked()
    await watcher.tell(Ping(-1))
    await watcher.tell(Ping(1))
    await leaf.stop(reason)
    assert leaf.exit_reason == reason
    assert await watcher.ask(Ping(-5)) == [1, reason, -1, -5]


class Gatekeeper(Actor):
    """Rejects every Ping while an instance exists; a Nap(-1) fails it."""

    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    def admit(self, msg: Any) -> Admit:
        if isinstance(msg, Ping):
            return Admit.reject(Rejected("no pings"))
        return Admit.ENQUEUE

    async def handle(self, msg: Ping | Nap) -> None:
        if isinstance(msg, Nap):
            raise ValueError("gatekeeper failed")
        self.seen.append(msg.n)


async def test_messages_sent_while_restarting_are_enqueued_without_admission(
    actor_runtime: Runtime,
) -> None:
    """§4: between incarnations (backoff) there is no instance: messages are enqueued
    without admission, and the next incarnation handles them. Catches asking the failed
    instance's (or no) hook, or refusing sends while restarting."""
    seen: list[int] = []
    ref = await actor_runtime.spawn(Gatekeeper, seen, restart="permanent", backoff=10)
    with pytest.raises(Rejected):
        await ref.tell(Ping(0))
    await ref.tell(Nap(-1))
    await wait_all_tasks_blocked()
    assert ref.statistics().state == "restarting"
    await ref.tell(Ping(1))
    assert ref.statistics().queued == 1
    await trio.sleep(11)
    assert seen == [1] and ref.statistics().restarts == 1


class RefusesTicks(Actor):
    def admit(self, msg: Any) -> Admit:
        if isinstance(msg, Ping) and msg.n == 1:
            return Admit.reject(Rejected("no ticks"))
        return Admit.ENQUEUE

    async def on_start(self) -> None:
        self.send_every(1, Ping(1))

    async def handle(self, msg: Ping) -> str:
        return "alive"


async def test_a_timer_message_refused_by_admission_is_dropped_and_traced(
    actor_runtime: Runtime, trace_sink: tx.MemorySink
) -> None:
    """§4: a timer's message goes through admission; a refusal drops it (counted and
    traced), it is not raised in the timer task. Catches the rejection failing the
    actor."""
    ref = await actor_runtime.spawn(RefusesTicks, name="ticks")
    await trio.sleep(5.5)
    assert await ref.ask(Ping(0)) == "alive"
    assert ref.statistics().rejected == 5 and ref.statistics().failures == 0
    refusals = [e for e in trace_sink.of_kind("admit") if e.actor == "ticks"]
    assert len(refusals) == 5 and all((e.detail or "").startswith("reject") for e in refusals)


class FaultyHooks(Actor):
    def admit(self, msg: Any) -> Admit:
        if isinstance(msg, Ping) and msg.n == 1:
            raise LookupError("admit broke")
        if isinstance(msg, Ping) and msg.n == 2:
            return "yes"  # type: ignore[return-value]
        return Admit.ENQUEUE

    def priority(self, msg: Any) -> int:
        if isinstance(msg, Ping) and msg.n == 3:
            raise ArithmeticError("priority broke")
        if isinstance(msg, Ping) and msg.n == 4:
            return 1.5  # type: ignore[return-value]
        return 0

    async def handle(self, msg: Ping | Nap) -> str:
        if isinstance(msg, Nap):
            await trio.sleep(msg.seconds)
        return "handled"


@TRACED
async def test_a_faulty_admission_hook_raises_in_every_sender_and_queues_nothing(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    """§4: ``admit``/``priority`` raising, or returning the wrong type (``TypeError``
    naming the actor, the hook and the value), raise in the sender of ``tell``,
    ``tell_nowait`` and ``ask``; nothing is queued and the actor keeps running. Catches a
    message queued before the hook's result is checked."""
    expected: dict[int, tuple[type[Exception], str]] = {
        1: (LookupError, "admit broke"),
        2: (TypeError, r"'hooks': admit\(Ping\) returned 'yes'"),
        3: (ArithmeticError, "priority broke"),
        4: (TypeError, r"'hooks': priority\(Ping\) returned 1\.5"),
    }
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(FaultyHooks, name="hooks")
        await ref.tell(Nap(5))
        await wait_all_tasks_blocked()
        for n, (error, match) in expected.items():
            with pytest.raises(error, match=match):
                await ref.tell(Ping(n))
            with pytest.raises(error, match=match):
                ref.tell_nowait(Ping(n))
            with pytest.raises(error, match=match):
                await ref.ask(Ping(n))
        assert ref.statistics().queued == 0
        assert await ref.ask(Ping(0)) == "handled"
        assert ref.statistics().handled == 2  # the Nap and the Ping(0): nothing else


# -- 5. tell, ask and backpressure ----------------------------------------------------------


async def test_terminated_may_exceed_the_mailbox_bound(actor_runtime: Runtime) -> None:
    """§5: runtime messages are never lost to a full mailbox: ``Terminated`` is queued
    beyond ``mailbox_size``. Catches it being dropped or waiting for space."""
    watcher = await actor_runtime.spawn(Watcher, mailbox_size=1)
    leaf = await actor_runtime.spawn(Leaf)
    await watcher.ask(Ref(leaf))
    await watcher.tell(Nap(1))
    await wait_all_tasks_blocked()
    watcher.tell_nowait(Ping(0))  # now full
    await leaf.stop("bye")
    assert watcher.statistics().queued == 2 > watcher.statistics().capacity
    await trio.sleep(1)
    assert await watcher.ask(Nap(0)) == [0, "bye"]


async def test_a_tell_that_enqueued_returns_normally_even_if_cancelled_while_it_yields(
    trioxide_seed: int, autojump_clock: trio.abc.Clock
) -> None:
    """§5: the periodic yield of ``tell`` is cancel-shielded: a cancellation arriving
    while a tell yields after enqueueing does not make it raise (the caller would count
    the message as not sent); the next tell raises ``Cancelled`` before enqueueing.
    Catches an unshielded checkpoint (the counter would be one ahead of ``sent``)."""
    async with open_runtime(seed=trioxide_seed) as rt:
        ref = await rt.spawn(Counter, mailbox_size=100_000)
        sent = 0
        scope = trio.CancelScope()
        started = trio.Event()

        async def sender() -> None:
            nonlocal sent
            with scope:
                while True:
                    await ref.tell(Incr(1))
                    sent += 1
                    started.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await started.wait()  # runs when the sender pauses: in a tell's periodic yield
            scope.cancel()
        assert scope.cancelled_caught
        # Cancelled in one of its yields (the first, or a later one if the sender ran
        # first in that batch): that tell returned normally, the next one raised.
        assert sent > 0 and sent % TELL_YIELD_EVERY == 0
        assert await ref.ask(Get()) == sent


@TRACED
async def test_the_actor_loop_yields_every_handler_batch(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    """§5: an actor whose handlers never block yields after every 64 messages, so other
    tasks run meanwhile. Catches a loop that handles its whole queue in one step."""
    assert HANDLER_BATCH == 64
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(Counter, mailbox_size=10_000)
        total = HANDLER_BATCH * 10
        for _ in range(total):
            ref.tell_nowait(Incr(1))
        ran = 0
        done = False

        async def spinner() -> None:
            nonlocal ran
            while not done:
                ran += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(spinner)
            assert await ref.ask(Get()) == total
            done = True
        assert ran >= 9


class StopsPeer(Actor):
    def __init__(self) -> None:
        self.peer: trioxide.ActorRef | None = None

    async def handle(self, msg: Ref | Ping) -> str:
        if isinstance(msg, Ref):
            self.peer = msg.ref
            return "ok"
        assert self.peer is not None
        await self.peer.stop("stopped by a")
        return "stopped"


class AsksPeer(Actor):
    def __init__(self, errors: list[AskDeadlock]) -> None:
        self.peer: trioxide.ActorRef | None = None
        self.errors = errors

    async def handle(self, msg: Ref | Nap) -> str:
        if isinstance(msg, Ref):
            self.peer = msg.ref
            return "ok"
        await trio.sleep(msg.seconds)
        assert self.peer is not None
        try:
            await self.peer.ask(Ping())
        except AskDeadlock as exc:
            self.errors.append(exc)
        return "done"


@TRACED
async def test_asking_an_actor_that_waits_in_stop_for_the_asker_is_a_deadlock(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    """§5: a ``stop()`` waiting for an exit is a wait-for edge: when the actor being
    stopped asks the stopper, the ask fails at once with ``AskDeadlock`` (nothing sent),
    instead of both waiting forever. Catches stop waits missing from the graph."""
    errors: list[AskDeadlock] = []
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        a = await rt.spawn(StopsPeer, name="a")
        b = await rt.spawn(AsksPeer, errors, name="b")
        await a.ask(Ref(b))
        await b.ask(Ref(a))
        await b.tell(Nap(1))
        await wait_all_tasks_blocked()  # b is in its handler
        with trio.fail_after(10):
            assert await a.ask(Ping()) == "stopped"
        assert trio.current_time() == 1.0
        (err,) = errors
        assert isinstance(err, RuntimeError) and err.cycle == ("b", "a", "b")
        assert b.exit_reason == "stopped by a"
        assert a.alive and a.statistics().handled == 2 and a.statistics().queued == 0


class AsksParentOnStop(Actor):
    def __init__(self, parent: trioxide.ActorRef, out: list[BaseException]) -> None:
        self.parent = parent
        self.out = out

    async def handle(self, msg: Ping) -> None:
        pass

    async def on_stop(self, reason: object) -> None:
        try:
            await self.parent.ask(Ping())
        except Exception as exc:
            self.out.append(exc)


class ParentOf(Actor):
    def __init__(self, out: list[BaseException]) -> None:
        self.out = out

    async def on_start(self) -> None:
        await self.spawn(AsksParentOnStop, self.ref, self.out, name="kid")

    async def handle(self, msg: Ping) -> None:
        pass


async def test_an_ask_to_a_closed_mailbox_is_actor_gone_before_any_deadlock_check(
    actor_runtime: Runtime,
) -> None:
    """§5: a stopping parent waits for its child (a wait-for edge) with its mailbox
    already closed; the child asking it from ``on_stop`` gets ``ActorGone`` (the stop's
    reason), not ``AskDeadlock``. Catches the deadlock check running first."""
    out: list[BaseException] = []
    parent = await actor_runtime.spawn(ParentOf, out, name="parent")
    with trio.fail_after(10):
        await parent.stop("bye")
    (err,) = out
    assert type(err) is ActorGone and err.actor == "parent" and err.reason == "bye"


# -- 6. every ask ends --------------------------------------------------------------------


class EarlyReplier(Actor):
    def __init__(self) -> None:
        self.log: list[tuple[bool, bool]] = []

    async def handle(self, msg: Ping) -> str:
        first = self.reply(msg, "early")
        again = self.reply(msg, "twice")
        self.log.append((first, again))
        if msg.n == 1:
            raise ValueError("raised after the reply")
        return "returned"


@TRACED
async def test_an_early_reply_is_the_answer(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    """§6: ``self.reply(msg, v)`` answers the ask at once; the handler's later return value
    or exception is then ignored for that asker (the actor keeps running). ``reply``
    returns False for a tell and for an ask already answered. Catches a second answer
    overriding the first."""
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(EarlyReplier)
        assert await ref.ask(Ping(0)) == "early"
        assert await ref.ask(Ping(1)) == "early"
        await ref.tell(Ping(2))
        await wait_all_tasks_blocked()
        inst = ref.instance
        assert isinstance(inst, EarlyReplier)
        assert inst.log == [(True, False), (True, False), (False, False)]
        assert ref.statistics().failures == 0


class Taker(Actor):
    async def handle(self, msg: Ping | Nap) -> str:
        if isinstance(msg, Ping):
            return "handled"
        await self.receive(Ping)
        if msg.seconds == 1:
            raise KeyError("the handler failed")
        if msg.seconds == 2:
            await trio.sleep(100)  # until the stop cancels it
        return "done"


@TRACED
@pytest.mark.parametrize("mode", ["returns", "raises", "cancelled"])
async def test_an_ask_taken_by_receive_and_not_answered_gets_none_or_the_error(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool, mode: str
) -> None:
    """§6: an ask taken by ``receive`` and not answered gets ``None`` when the handler
    returns, the handler's exception when it raises, ``ActorGone`` (the stop's reason)
    when a stop cancels it. Catches a taken ask left hanging (the fail_after) or answered
    with the wrong outcome."""
    seconds = {"returns": 0, "raises": 1, "cancelled": 2}[mode]
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(Taker)
        got: dict[str, object] = {}

        async def ask(key: str, msg: Ping | Nap) -> None:
            try:
                got[key] = await ref.ask(msg)
            except (KeyError, ActorGone) as exc:
                got[key] = exc

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, "outer", Nap(seconds))
                await wait_all_tasks_blocked()
                nursery.start_soon(ask, "taken", Ping(7))
                await wait_all_tasks_blocked()
                if mode == "cancelled":
                    await ref.stop("halt", grace=0)
        if mode == "returns":
            assert got == {"outer": "done", "taken": None}
        elif mode == "raises":
            assert isinstance(got["outer"], KeyError) and got["taken"] is got["outer"]
        else:
            assert all(type(e) is ActorGone and e.reason == "halt" for e in got.values())
        assert ref.alive == (mode != "cancelled")


class BadTimeouts(Actor):
    async def handle(self, msg: Ping | Nap) -> object:
        if isinstance(msg, Ping):
            return "ping"
        if msg.seconds:
            await trio.sleep(msg.seconds)
            return None
        errors = []
        for bad in (-1, math.nan):
            try:
                await self.receive(Ping, timeout=bad)
            except ValueError as exc:
                errors.append(str(exc))
        return errors, self.queued


async def test_a_bad_receive_timeout_is_a_value_error_and_takes_nothing(
    actor_runtime: Runtime,
) -> None:
    """§6: ``receive(timeout=)`` negative or NaN raises ``ValueError`` naming the value,
    before anything is taken. Catches NaN slipping through (``timeout < 0`` is False for
    NaN) or a message taken first."""
    ref = await actor_runtime.spawn(BadTimeouts)
    await ref.tell(Nap(1))
    async with trio.open_nursery() as nursery:
        got: list[Any] = []

        async def ask() -> None:
            got.append(await ref.ask(Nap(0)))

        nursery.start_soon(ask)
        await wait_all_tasks_blocked()
        await ref.tell(Ping())  # queued behind the asking Nap: there to be taken
    ((errors, queued),) = got
    assert len(errors) == 2 and "-1" in errors[0] and "nan" in errors[1]
    assert queued == 1
    assert await ref.ask(Ping()) == "ping"


# -- 7. stop ------------------------------------------------------------------------------


async def test_stop_grace_is_the_earliest_deadline_of_all_stops(actor_runtime: Runtime) -> None:
    """§7: the handler is cancelled at the earliest deadline of every stop asked for: a
    later, longer grace (or none) never extends it; a negative or NaN grace is a
    ``ValueError``. Catches the first or the latest grace winning."""
    ref = await actor_runtime.spawn(Leaf)
    await ref.tell(Nap(100))
    await wait_all_tasks_blocked()
    for bad in (-1, math.nan):  # refused before anything is requested
        with pytest.raises(ValueError, match="grace"):
            await ref.stop(grace=bad)
    assert ref.statistics().state == "running"
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(ref.stop, grace=10))  # deadline t0 + 10
        await trio.sleep(1)
        nursery.start_soon(functools.partial(ref.stop, grace=2))  # deadline t0 + 3
        await trio.sleep(1)
        nursery.start_soon(functools.partial(ref.stop, grace=50))
        nursery.start_soon(ref.stop)  # no grace
    assert trio.current_time() - t0 == 3.0
    assert not ref.alive


class Family(Actor):
    async def on_start(self) -> None:
        self.kid = await self.spawn(Leaf, name="kid")

    async def handle(self, msg: Nap) -> None:
        await self.kid.tell(msg)


class Child(Actor):
    def __init__(self, parent: trioxide.ActorRef) -> None:
        self.parent = parent

    async def handle(self, msg: Ping) -> str:
        await self.parent.stop("from below")  # only a request: returns at once
        return "requested"


class Parent(Actor):
    async def on_start(self) -> None:
        self.kid = await self.spawn(Child, self.ref, name="kid")

    async def handle(self, msg: Ping) -> None:
        pass


async def test_stop_called_by_a_descendant_only_requests_it(actor_runtime: Runtime) -> None:
    """§7: ``await ref.stop()`` called from an actor inside *ref*'s tree only requests the
    stop (waiting would deadlock: the parent stops the child first). Catches a stop that
    waits for the exit of an ancestor."""
    parent = await actor_runtime.spawn(Parent, name="p")
    inst = parent.instance
    assert isinstance(inst, Parent)
    with trio.fail_after(10):
        assert await inst.kid.ask(Ping()) == "requested"
        assert await parent.wait_exited() == "from below"
    assert not inst.kid.alive


class FailsThenBacksOff(Actor):
    async def handle(self, msg: Ping) -> None:
        raise ValueError("failed before the stop")


class FailsOnStop(Actor):
    async def handle(self, msg: Ping) -> None:
        pass

    async def on_stop(self, reason: object) -> None:
        raise OSError("on_stop failed while cancelled")


# -- 8. exit and drain --------------------------------------------------------------------


class Temporary(Actor):
    async def handle(self, msg: Ping | Nap) -> str:
        if isinstance(msg, Nap):
            await trio.sleep(msg.seconds)
        elif msg.n < 0:
            raise ValueError("the temporary actor failed")
        return "handled"


@TRACED
async def test_a_failure_that_ends_the_actor_drains_its_queue_with_the_exception(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    """§8: when a failure ends the actor (here a temporary one), every queued ask is
    answered by the drain: ``ActorGone(path, the exception)``. Catches asks left hanging
    or told another reason."""
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(Temporary, name="temp", restart="temporary")
        await ref.tell(Nap(1))
        await ref.tell(Ping(-1))
        got: list[ActorGone] = []

        async def ask() -> None:
            try:
                await ref.ask(Ping(0))
            except ActorGone as exc:
                got.append(exc)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(ask)
        assert len(got) == 2
        assert all(e.actor == "temp" and e.reason is ref.exit_reason for e in got)
        assert isinstance(ref.exit_reason, ValueError)
        assert ref.statistics().dropped == 2


class RaisingDrain(Actor):
    async def handle(self, msg: Ping | Nap) -> None:
        if isinstance(msg, Nap):
            await trio.sleep(msg.seconds)

    def drain(self, msg: Any) -> Any:
        raise LookupError(f"cannot drain {msg!r}")


async def test_a_drain_hook_that_raises_answers_with_its_exception(actor_runtime: Runtime) -> None:
    """§8: a ``drain`` hook that raises: its exception is the queued ask's answer (a tell's
    is discarded); the exit goes on. Catches the hook's exception failing the exit."""
    ref = await actor_runtime.spawn(RaisingDrain)
    await ref.tell(Nap(1))
    await ref.tell(Ping(1))
    got: list[BaseException] = []

    async def ask() -> None:
        try:
            await ref.ask(Ping(2))
        except LookupError as exc:
            got.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await wait_all_tasks_blocked()
        await ref.stop("bye")
    assert [str(e) for e in got] == ["cannot drain Ping(n=2)"]
    assert ref.exit_reason == "bye" and ref.statistics().dropped == 2


# -- 9. supervision -----------------------------------------------------------------------


class Phoenix(Actor):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def on_start(self) -> None:
        self.log.append(f"start at {trio.current_time()}")
        self.kid = await self.spawn(Leaf, name="kid")
        self.start_soon(self._task)
        self.send_after(5, Ping(1))

    async def _task(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.log.append("task cancelled")

    async def handle(self, msg: Ping) -> trioxide.ActorRef:
        if msg.n < 0:
            raise ValueError("crash")
        if msg.n == 1:
            self.log.append(f"tick at {trio.current_time()}")
        return self.kid


async def test_a_restart_runs_on_start_again_and_ends_the_old_incarnations_things(
    actor_runtime: Runtime,
) -> None:
    """§9/§10: a restart builds a new instance from the same arguments and runs
    ``on_start`` again; the failed incarnation's child actors, tasks and timers were
    cancelled with it. Catches a timer or child that outlives its incarnation."""
    log: list[str] = []
    ref = await actor_runtime.spawn(Phoenix, log, name="phoenix", restart="permanent")
    first_kid = await ref.ask(Ping(0))
    await trio.sleep(1)
    await ref.tell(Ping(-1))
    second_kid = await ref.ask(Ping(0))
    assert second_kid is not first_kid and second_kid.path == first_kid.path
    assert not first_kid.alive and second_kid.alive
    await trio.sleep(10)
    assert log == ["start at 0.0", "task cancelled", "start at 1.0", "tick at 6.0"]


class CrashesLater(Actor):
    async def handle(self, msg: Nap) -> None:
        await trio.sleep(msg.seconds)
        raise ValueError("failed while stopping")


async def test_an_unsupervised_failure_during_a_stop_escalates(
    trioxide_seed: int, autojump_clock: trio.abc.Clock
) -> None:
    """§9: a failure while a stop is pending never restarts; an unsupervised actor
    (``restart=None``) escalates it, errors are never silently lost. Catches the stop
    swallowing the failure."""
    with pytest.raises(ExceptionGroup) as info:
        async with open_runtime(seed=trioxide_seed) as rt:
            ref = await rt.spawn(CrashesLater)
            await ref.tell(Nap(1))
            await wait_all_tasks_blocked()
            await ref.stop("planned")
            await trio.sleep_forever()
    assert info.group_contains(ValueError, match="failed while stopping", depth=None)
    assert trio.current_time() == 1.0


# -- 12. determinism ------------------------------------------------------------------------


async def test_a_cancelled_ask_is_traced_by_the_asker_not_by_the_abort_callback(
    actor_runtime: Runtime, trace_sink: tx.MemorySink
) -> None:
    """§12: abort callbacks (run by Trio in an order that depends on object ids) only
    change state; the asker traces its cancellation when it resumes, in its own turn.
    Catches tracing from the abort callback (the event would be there before any task
    ran)."""
    ref = await actor_runtime.spawn(Leaf)
    await ref.tell(Nap(5))
    scope = trio.CancelScope()

    async def asker() -> None:
        with scope:
            await ref.ask(Ping())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(asker)
        await wait_all_tasks_blocked()
        assert ref.statistics().queued == 1
        scope.cancel()  # runs the abort callback now: the ask is withdrawn...
        assert ref.statistics().queued == 0
        assert trace_sink.of_kind("cancel") == []  # ...but nothing is traced yet
    (cancel,) = trace_sink.of_kind("cancel")
    assert cancel.detail == "cancelled"


# -- the document itself ----------------------------------------------------------------------

#: ``[tests/runtime/test_x.py::test_name]``, or several in one pair of brackets separated by
#: commas; a file alone (``[tests/runtime/test_fault_fuzz.py]``) cites a whole test module.
BRACKETS = re.compile(r"\[([^\[\]]*tests/[^\[\]]*)\]")
REFERENCE = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?")
SECTION = re.compile(r"^## (\d+)\. (.+)$", re.M)


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def _sections(text: str) -> list[tuple[str, str]]:
    marks = list(SECTION.finditer(text))
    return [
        (m.group(0), text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)])
        for i, m in enumerate(marks)
    ]


SEPARATOR = re.compile(r"\|[\s|:-]+\|$")


def _items(body: str) -> list[str]:
    """The guarantee items of a section: top-level bullets, numbered steps and table body
    rows (continuation lines included; a table's header and separator are not items)."""
    items: list[str] = []
    current: list[str] | None = None
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"(\* |\d+\. |\| )", line):
            if current is not None:
                items.append(" ".join(current))
            header = i + 1 < len(lines) and SEPARATOR.match(lines[i + 1])
            current = None if SEPARATOR.match(line) or header else [line]
        elif current is not None and line.startswith("  ") and line.strip():
            current.append(line.strip())
        elif current is not None:
            items.append(" ".join(current))
            current = None
    if current is not None:
        items.append(" ".join(current))
    return items


def test_every_reference_in_semantics_md_exists() -> None:
    """Every test cited by ``docs/semantics.md`` exists (a test function of that name in
    that file; a cited module exists); every numbered section but the limitations cites
    at least one, and so does each of its bullets, steps and table rows."""
    text = SEMANTICS.read_text()
    refs = [m for b in BRACKETS.finditer(text) for m in REFERENCE.finditer(b.group(1))]
    assert len(refs) >= 80, "the parser finds the references"
    missing = []
    cache: dict[str, set[str]] = {}
    for ref in refs:
        path, name = ref.group(1), ref.group(2)
        file = ROOT / path
        if not file.is_file():
            missing.append(f"{path}: no such file")
            continue
        if name is not None and name not in cache.setdefault(path, _test_names(file)):
            missing.append(f"{path}::{name}: no such test")
    assert not missing, "\n".join(missing)

    sections = _sections(text)
    assert [int(title.split(".")[0][3:]) for title, _ in sections] == list(
        range(1, len(sections) + 1)
    )
    *guarantees, (last_title, _) = sections
    assert "limitations" in last_title.lower(), "the last section says what is not guaranteed"
    unpinned = []
    for title, body in guarantees:
        if not BRACKETS.search(body):
            unpinned.append(f"{title}: no reference")
        for item in _items(body):
            if not BRACKETS.search(item):
                unpinned.append(f"{title}: {item[:90]}")
    assert not unpinned, "guarantees without a test:\n" + "\n".join(unpinned)
