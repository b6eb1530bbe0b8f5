"""Regression tests for the guarantees that broke under faults (issue 10), each the
smallest deterministic case of one class the fault fuzzer found. Where tracing could
matter, a test runs both untraced (the inlined fast paths) and traced."""

from __future__ import annotations

import math
import threading
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

import trioxide
from trioxide import (
    Actor,
    ActorGone,
    ActorRef,
    Admit,
    AskDeadlock,
    AskTimeout,
    Completed,
    Interrupted,
    Runtime,
    Terminated,
    open_runtime,
)
from trioxide import traces as tx


class Item(msgspec.Struct, frozen=True):
    n: int


class Boom(msgspec.Struct, frozen=True):
    pass


class Go(msgspec.Struct, frozen=True):
    seconds: float = 0.0


class Watch_(msgspec.Struct, frozen=True):
    target: Any


TRACED = pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])


def tracer(traced: bool) -> tx.Tracer | None:
    return tx.Tracer(tx.MemorySink()) if traced else None


class Watcher(Actor):
    """Monitors refs it is told about and keeps every Terminated it gets."""

    def __init__(self) -> None:
        self.got: list[Terminated] = []

    async def handle(self, msg: Watch_ | Terminated) -> None:
        if isinstance(msg, Watch_):
            self.monitor(msg.target)
        else:
            self.got.append(msg)


async def watch(rt: Runtime, ref: trioxide.ActorRef) -> Watcher:
    w = await rt.spawn(Watcher)
    await w.ask(Watch_(ref))
    inst = w.instance
    assert isinstance(inst, Watcher)
    return inst


# -- 1. an exception during a stop is the exit reason ----------------------------------------


class StopRaises(Actor):
    async def handle(self, msg: Go) -> None:
        await trio.sleep(msg.seconds)

    async def on_stop(self, reason: object) -> None:
        raise KeyError("on_stop failed")


@TRACED
async def test_on_stop_raising_during_a_graceful_stop_is_the_exit_reason(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(StopRaises, restart="transient")
        watcher = await watch(rt, ref)
        await ref.stop("done")  # supervised: ends with the error, no restart, no escalation
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(ref.exit_reason, KeyError)
        assert [t.reason for t in watcher.got] == [ref.exit_reason]
        assert ref.statistics().restarts == 0


class TaskCrashesDuringStop(Actor):
    async def on_start(self) -> None:
        self.start_soon(self.crash_when_cancelled)

    async def crash_when_cancelled(self) -> None:
        try:
            await trio.sleep_forever()
        finally:  # the graceful stop cancels the tasks after draining the mailbox
            raise ValueError("task crashed while the actor stopped")

    async def handle(self, msg: Go) -> None:
        await trio.sleep(msg.seconds)


@TRACED
async def test_a_task_crash_during_the_graceful_stop_is_the_exit_reason(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(TaskCrashesDuringStop, restart="permanent")
        watcher = await watch(rt, ref)
        await ref.tell(Go(5))
        await ref.tell(Go(5))  # queued: drained by the stop
        await trio.sleep(0.5)
        await ref.stop("done")
        assert isinstance(ref.exit_reason, ValueError)
        await trio.testing.wait_all_tasks_blocked()
        assert [t.reason for t in watcher.got] == [ref.exit_reason]


class FailingChild(Actor):
    async def handle(self, msg: Go) -> None:
        await trio.sleep(msg.seconds)

    async def on_stop(self, reason: object) -> None:
        raise OSError("child failed while stopping")


class Parent(Actor):
    def __init__(self) -> None:
        self.child: trioxide.ActorRef | None = None

    async def on_start(self) -> None:
        self.child = await self.spawn(FailingChild, name="child")  # unsupervised child

    async def handle(self, msg: Go) -> None:
        pass


async def test_a_child_escalating_during_the_parents_stop_is_the_parents_exit_reason(
    trioxide_seed: int,
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime(seed=trioxide_seed) as rt:
        parent = await rt.spawn(Parent, restart="transient")
        await parent.stop("done")
        assert isinstance(parent.exit_reason, OSError)


# -- 2. a tell served inside an ask's serve_until that raises fails the actor ----------------


class Server(Actor):
    async def handle(self, msg: Go | Boom) -> str:
        if isinstance(msg, Boom):
            raise ValueError("the served tell failed")
        result = await self.serve_until(trio.sleep, msg.seconds, serve=(Boom,))
        assert isinstance(result, Completed)
        return "completed"


@TRACED
async def test_a_served_tell_that_raises_fails_the_actor_not_the_outer_asker(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(Server, restart="transient")
        async with trio.open_nursery() as nursery:
            outcome: list[BaseException] = []

            async def asker() -> None:
                try:
                    await ref.ask(Go(10), timeout=100)
                except Exception as exc:
                    outcome.append(exc)

            nursery.start_soon(asker)
            await trio.sleep(1)
            await ref.tell(Boom())
        (gone,) = outcome
        assert isinstance(gone, ActorGone) and isinstance(gone.reason, ValueError)
        stats = ref.statistics()
        assert stats.failures == 1 and stats.restarts == 1  # the actor failed, restarted
        assert await ref.ask(Go(0)) == "completed"


# -- 3. a message taken by receive() is never lost -------------------------------------------


class Receiver(Actor):
    def __init__(self) -> None:
        self.taken: list[Item] = []
        self.drained: list[Any] = []

    async def handle(self, msg: Go | Item) -> Any:
        if isinstance(msg, Item):
            self.taken.append(msg)
            return None
        if msg.seconds == -1:  # receive with timeout 0
            got = await self.receive(Item, timeout=0)
            self.taken.append(got)
            return got
        if msg.seconds > 100:  # just nap
            await trio.sleep(msg.seconds - 100)
            return None
        if msg.seconds == -2:  # receive inside an already-cancelled scope
            with trio.CancelScope() as scope:
                scope.cancel()
                self.taken.append(await self.receive(Item))
            return "cancelled"
        got = await self.receive(Item)
        self.taken.append(got)
        return got

    def drain(self, msg: Any) -> Any:
        self.drained.append(msg)
        return super().drain(msg)


@TRACED
async def test_receive_with_timeout_0_returns_a_queued_message(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(Receiver, mailbox_size=4)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.tell, Go(5))  # occupies the handler first
            await trio.testing.wait_all_tasks_blocked()
            result: list[Any] = []

            async def ask() -> None:
                result.append(await ref.ask(Go(-1)))

            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            await ref.tell(Item(1))
            await ref.tell(Item(2))  # unblocks the Go(5) handler's receive
        assert result == [Item(1)] or result == [Item(2)]
        assert sorted(i.n for i in ref.instance.taken) == [1, 2]  # type: ignore[union-attr]


@TRACED
async def test_a_cancelled_receive_takes_nothing(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(Receiver, mailbox_size=4)
        inst = ref.instance
        assert isinstance(inst, Receiver)
        await ref.tell(Go(101))  # the handler naps 1 s...
        await ref.tell(Go(-2))  # ...so this and
        await ref.tell(Item(1))  # this queue behind it, in this order
        await trio.sleep(2)
        # Go(-2)'s receive, in a cancelled scope, took nothing: Item(1) was then handled.
        assert inst.taken == [Item(1)] and inst.drained == []


@TRACED
async def test_tell_nowait_then_stop_grace_0_on_a_parked_receive_drains_the_message(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(Receiver, mailbox_size=4)
        inst = ref.instance
        assert isinstance(inst, Receiver)
        await ref.tell(Go(0))  # parks in receive(Item)
        await trio.testing.wait_all_tasks_blocked()
        ref.tell_nowait(Item(9))  # wakes the receiver...
        await ref.stop(grace=0)  # ...but the stop comes first: nothing more is taken
        assert inst.taken + inst.drained == [Item(9)]


# -- 4. no queued message is handled after stop() --------------------------------------------


class Looper(Actor):
    def __init__(self) -> None:
        self.seen: list[int] = []
        self.drained: list[int] = []

    async def handle(self, msg: Go | Item) -> None:
        if isinstance(msg, Item):
            self.seen.append(msg.n)
            await trio.sleep(1)
            return
        if msg.seconds == 0:  # loop on receive, busy between receives
            while True:
                got = await self.receive(Item)
                self.seen.append(got.n)
                await trio.sleep(1)
        else:  # serve Items while a long operation runs
            await self.serve_until(trio.sleep, 1000, serve=(Item,))

    def drain(self, msg: Any) -> Any:
        if isinstance(msg, Item):
            self.drained.append(msg.n)
        return super().drain(msg)


@TRACED
@pytest.mark.parametrize("mode", [0.0, 1.0], ids=["receive-loop", "serve_until"])
async def test_no_queued_message_is_taken_after_stop(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool, mode: float
) -> None:
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(Looper, mailbox_size=16)
        inst = ref.instance
        assert isinstance(inst, Looper)
        await ref.tell(Go(mode))
        for n in range(6):
            await ref.tell(Item(n))
        await trio.sleep(1.5)  # busy with the second Item
        assert inst.seen == [0, 1]
        await ref.stop("enough")  # the running Item finishes; no further Item is taken
        assert inst.seen == [0, 1]
        assert inst.drained == [2, 3, 4, 5]


# -- 5. stop's grace bounds the children too -------------------------------------------------


class Busy(Actor):
    async def handle(self, msg: Go) -> None:
        await trio.sleep(msg.seconds)


class Family(Actor):
    async def on_start(self) -> None:
        self.kid = await self.spawn(Busy, name="kid")

    async def handle(self, msg: Go) -> None:
        await self.kid.tell(msg)


@TRACED
@pytest.mark.parametrize("grace", [0.0, 5.0])
async def test_children_inherit_the_remaining_grace(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool, grace: float
) -> None:
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(Family)
        await ref.tell(Go(999))
        await trio.testing.wait_all_tasks_blocked()
        t0 = trio.current_time()
        await ref.stop(grace=grace)
        assert trio.current_time() - t0 == grace  # not 999


# -- 6. a raising admit() or priority() leaks no slot ---------------------------------------


class Picky(Actor):
    def admit(self, msg: Any) -> Admit:
        if isinstance(msg, Item) and msg.n < 0:
            raise LookupError("admit failed")
        return Admit.ENQUEUE

    def priority(self, msg: Any) -> int:
        if isinstance(msg, Item) and msg.n == 99:
            raise ArithmeticError("priority failed")
        return 0

    async def handle(self, msg: Go | Item) -> None:
        if isinstance(msg, Go):
            await trio.sleep(msg.seconds)


@TRACED
@pytest.mark.parametrize(("bad", "error"), [(-1, LookupError), (99, ArithmeticError)])
async def test_a_raising_admission_hook_gives_the_reserved_slot_back(
    trioxide_seed: int,
    autojump_clock: trio.abc.Clock,
    traced: bool,
    bad: int,
    error: type[Exception],
) -> None:
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(Picky, mailbox_size=1)
        await ref.tell(Go(10))  # handled at once: the handler is busy
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell(Go(0))  # fills the mailbox
        errors: list[BaseException] = []

        async def blocked_sender() -> None:
            try:
                await ref.tell(Item(bad))  # waits for a slot, then the hook raises
            except Exception as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_sender)
            await trio.testing.wait_all_tasks_blocked()
        assert [type(e) for e in errors] == [error]
        assert ref.statistics().reserved == 0
        with trio.fail_after(100):  # virtual: these would block forever on a leaked slot
            for n in range(3):
                await ref.tell(Item(n))
        assert ref.statistics().queued <= 1


# -- 7. tell_nowait from a foreign thread ----------------------------------------------------


async def test_tell_nowait_from_another_thread_is_refused_before_touching_anything(
    trioxide_seed: int,
) -> None:
    async with open_runtime(seed=trioxide_seed) as rt:
        ref = await rt.spawn(Receiver, mailbox_size=4)
        with pytest.raises(RuntimeError, match=r"trio\.from_thread\.run_sync"):
            await trio.to_thread.run_sync(ref.tell_nowait, Item(1))
        assert ref.statistics().queued == 0

        def from_thread() -> None:  # the supported way
            assert threading.current_thread() is not threading.main_thread()
            trio.from_thread.run_sync(ref.tell_nowait, Item(2))

        await trio.to_thread.run_sync(from_thread)
        await trio.testing.wait_all_tasks_blocked()
        inst = ref.instance
        assert isinstance(inst, Receiver) and inst.taken == [Item(2)]
    # The runtime exited normally: nothing wedged.


# -- 8. deadlocks are errors, not hangs ------------------------------------------------------


class AskSelfOnStart(Actor):
    async def on_start(self) -> None:
        await self.ref.ask(Go())

    async def handle(self, msg: Go) -> None:
        pass


async def test_asking_itself_from_on_start_fails_spawn_with_ask_deadlock(
    trioxide_seed: int,
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime(seed=trioxide_seed) as rt:
        with pytest.raises(AskDeadlock) as info:
            await rt.spawn(AskSelfOnStart, name="narcissus")
        assert info.value.cycle == ("narcissus", "narcissus")
        assert rt.actors() == []


class Peer(Actor):
    def __init__(self) -> None:
        self.other: trioxide.ActorRef | None = None
        self.errors: list[BaseException] = []

    async def handle(self, msg: Watch_ | Go) -> str:
        if isinstance(msg, Watch_):
            self.other = msg.target
            return "ok"
        assert self.other is not None
        try:
            return "via " + await self.other.ask(Go(msg.seconds - 1))
        except AskDeadlock as exc:
            self.errors.append(exc)
            return "deadlock"


@TRACED
@pytest.mark.parametrize("n", [2, 3])
async def test_an_ask_cycle_fails_the_ask_that_closes_it(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool, n: int
) -> None:
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        peers = [await rt.spawn(Peer, name=f"p{i}") for i in range(n)]
        for i, p in enumerate(peers):
            await p.ask(Watch_(peers[(i + 1) % n]))
        with trio.fail_after(10):
            answer = await peers[0].ask(Go(10))
        assert answer == "via " * (n - 1) + "deadlock"
        last = peers[n - 1].instance
        assert isinstance(last, Peer)
        (err,) = last.errors
        assert isinstance(err, AskDeadlock)
        assert err.cycle == (f"p{n - 1}", *(f"p{i}" for i in range(n)))
        assert all(p.alive for p in peers)  # the actors keep running


class Relay(Actor):
    """``Watch_`` sets where ``Go`` goes next. ``Go``: answer the asker at once, then ask
    the next actor (``Go(-1)`` ends the chain) - so the asker has its answer while this
    actor is still busy with the ask it made after."""

    def __init__(self) -> None:
        self.next: trioxide.ActorRef | None = None
        self.errors: list[BaseException] = []

    async def handle(self, msg: Watch_ | Go) -> str:
        if isinstance(msg, Watch_):
            self.next = msg.target
            return "ok"
        if msg.seconds < 0 or self.next is None:
            return "end"
        self.reply(msg, "answered early")
        try:
            await self.next.ask(Go(msg.seconds - 1))
        except AskDeadlock as exc:
            self.errors.append(exc)
        return "ignored"


@TRACED
@pytest.mark.parametrize("seed", range(12))
async def test_an_answered_ask_is_no_longer_a_wait_even_before_its_asker_runs(
    autojump_clock: trio.abc.Clock, traced: bool, seed: int
) -> None:
    """a asks b; b answers at once, then asks c; c asks a. If c runs before a has resumed,
    a's wait on b is over but a's task has not cleared it: c -> a -> b -> c looked like a
    cycle and c's ask failed with AskDeadlock, although a was about to go on (found by the
    fault fuzzer, seed 5394290: through an actor waiting for a child's exit). With
    seeded scheduling either order happens across seeds; no order may raise."""
    async with open_runtime(tracer=tracer(traced), seed=seed) as rt:
        a, b, c = [await rt.spawn(Relay, name=n) for n in "abc"]
        await a.ask(Watch_(b))
        await b.ask(Watch_(c))
        await c.ask(Watch_(a))
        with trio.fail_after(10):
            assert await a.ask(Go(2)) == "answered early"
            await trio.testing.wait_all_tasks_blocked()
        for ref in (a, b, c):
            inst = ref.instance
            assert isinstance(inst, Relay) and inst.errors == [], ref.path


class Joiner(Actor):
    """Tells itself ``Go`` from ``on_start``; handling it, asks its parent (as a child that
    registers with its parent on its first message does)."""

    def __init__(self, parent: trioxide.ActorRef) -> None:
        self.parent = parent
        self.answers: list[object] = []

    async def on_start(self) -> None:
        self.ref.tell_nowait(Go())

    async def handle(self, msg: Go) -> None:
        try:
            self.answers.append(await self.parent.ask(Go(1)))
        except AskDeadlock as exc:
            self.answers.append(exc)


class Host(Actor):
    async def handle(self, msg: Go) -> object:
        if msg.seconds == 0:
            return await self.spawn(Joiner, self.ref, name="child")
        return "welcome"


@pytest.mark.parametrize("seed", range(6))
async def test_a_spawner_whose_childs_on_start_completed_no_longer_waits_on_it(
    autojump_clock: trio.abc.Clock, seed: int
) -> None:
    """The child's loop runs as soon as its ``on_start`` completes, before its spawner's
    ``spawn`` returns: its first handler asking the spawner met the spawner's wait for
    ``on_start``, already over, and got AskDeadlock - for every seed."""
    async with open_runtime(seed=seed) as rt:
        host = await rt.spawn(Host, name="host")
        child = await host.ask(Go(0))
        await trio.testing.wait_all_tasks_blocked()
        inst = child.instance
        assert isinstance(inst, Joiner) and inst.answers == ["welcome"]


class AskParentOnStart(Actor):
    def __init__(self, parent: trioxide.ActorRef) -> None:
        self.parent = parent

    async def on_start(self) -> None:
        await self.parent.ask(Go())

    async def handle(self, msg: Go) -> None:
        pass


class Spawner(Actor):
    async def handle(self, msg: Go) -> str:
        try:
            await self.spawn(AskParentOnStart, self.ref, name="child")
        except AskDeadlock as exc:
            return " -> ".join(exc.cycle)
        return "spawned"


async def test_a_child_asking_its_spawner_from_on_start_is_a_deadlock(
    trioxide_seed: int,
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime(seed=trioxide_seed) as rt:
        ref = await rt.spawn(Spawner, name="parent")
        with trio.fail_after(10):
            assert await ref.ask(Go()) == "parent/child -> parent -> parent/child"


# -- 9. bad arguments get typed errors naming the value --------------------------------------


class Timers(Actor):
    async def handle(self, msg: Go) -> str:
        for call in (
            lambda: self.send_after(math.nan, Go()),
            lambda: self.send_after(-1, Go()),
            lambda: self.send_every(math.inf, Go()),
        ):
            try:
                call()
            except ValueError as exc:
                assert "nan" in str(exc) or "-1" in str(exc) or "inf" in str(exc)
            else:
                return "accepted"
        with pytest.raises(TypeError, match="ActorRef"):
            self.monitor("str")  # type: ignore[arg-type]
        return "refused"


async def test_timer_and_monitor_arguments_are_checked(
    trioxide_seed: int, autojump_clock: trio.abc.Clock
) -> None:
    async with open_runtime(seed=trioxide_seed) as rt:
        ref = await rt.spawn(Timers)
        assert await ref.ask(Go()) == "refused"


class BadHooks(Actor):
    def admit(self, msg: Any) -> Admit:
        return None if isinstance(msg, Item) and msg.n == 1 else Admit.ENQUEUE  # type: ignore[return-value]

    def priority(self, msg: Any) -> int:
        return "high" if isinstance(msg, Item) and msg.n == 2 else 0  # type: ignore[return-value]

    async def handle(self, msg: Item | Go) -> str:
        return "handled"


@TRACED
async def test_hooks_returning_the_wrong_type_raise_to_the_sender_every_time(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(BadHooks, name="hooks")
        for _ in range(2):  # the second identical send is refused too
            with pytest.raises(TypeError, match=r"'hooks': admit\(Item\) returned None"):
                await ref.tell(Item(1))
            with pytest.raises(TypeError, match=r"priority\(Item\) returned 'high'"):
                await ref.ask(Item(2))
        assert await ref.ask(Go()) == "handled"  # the actor keeps running
        assert ref.statistics().reserved == 0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"backoff": "soon"}, "'soon'"),
        ({"name": "worker\n"}, r"'worker\\n'"),
        ({"within": math.nan}, "nan"),
    ],
)
async def test_bad_spawn_arguments_name_the_value(
    actor_runtime: Runtime, kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        await actor_runtime.spawn(Busy, **kwargs)
    assert actor_runtime.actors() == []


async def test_interrupted_is_still_returned_for_an_interrupt_message(
    trioxide_seed: int,
    autojump_clock: trio.abc.Clock,
) -> None:
    class Stopper(Actor):
        async def handle(self, msg: Go | Boom) -> str:
            if isinstance(msg, Boom):
                return "boom"
            result = await self.serve_until(trio.sleep, 100, interrupt=(Boom,))
            return "interrupted" if isinstance(result, Interrupted) else "completed"

    async with open_runtime(seed=trioxide_seed) as rt:
        ref = await rt.spawn(Stopper)
        async with trio.open_nursery() as nursery:
            got: list[str] = []

            async def ask() -> None:
                got.append(await ref.ask(Go()))

            nursery.start_soon(ask)
            await trio.sleep(1)
            await ref.tell(Boom())
        assert got == ["interrupted"]


# -- found by the fault fuzzer (tests/runtime/fuzz), shrunk ----------------------------------


class FailsThenWaits(Actor):
    async def handle(self, msg: Boom) -> None:
        raise ValueError("fails")


async def test_a_stop_during_the_restart_backoff_keeps_the_failure_as_exit_reason(
    trioxide_seed: int, autojump_clock: trio.abc.Clock
) -> None:
    # fuzz seed 178: the exit reason was the stop's reason.
    async with open_runtime(seed=trioxide_seed) as rt:
        ref = await rt.spawn(FailsThenWaits, restart="transient", backoff=10.0)
        await ref.tell(Boom())
        await trio.sleep(1)  # now waiting to restart
        await ref.stop("stop")
        assert isinstance(ref.exit_reason, ValueError)


class EscalatesWhenCancelled(Actor):
    async def handle(self, msg: Go) -> None:
        pass

    async def on_stop(self, reason: object) -> None:
        raise OSError("on_stop while cancelled")


async def test_the_blocks_exception_survives_an_actor_failing_while_cancelled(
    trioxide_seed: int, autojump_clock: trio.abc.Clock
) -> None:
    # fuzz seed 384: open_runtime raised only the actor's error; the block's was lost.
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_runtime(seed=trioxide_seed) as rt:
            await rt.spawn(EscalatesWhenCancelled)
            raise LookupError("the block failed")
    assert info.group_contains(LookupError) and info.group_contains(OSError)


class StopsOnZero(Actor):
    async def handle(self, msg: Go) -> None:
        if msg.seconds:
            await trio.sleep(msg.seconds)
        else:
            self.stop("now")  # in the same turn as the pop that reserved a slot


@TRACED
async def test_a_sender_woken_with_a_slot_just_before_the_close_gives_it_back(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    # fuzz seed 1312: the reserved slot leaked when the mailbox closed before the sender ran.
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(StopsOnZero, mailbox_size=1)
        await ref.tell(Go(5))  # running until t=5
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell(Go(0))  # queued: the mailbox is full
        gone: list[BaseException] = []

        async def sender() -> None:
            try:
                await ref.tell(Go(3))  # waits; taking Go(0) reserves it the slot...
            except ActorGone as exc:
                gone.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
        # ...and Go(0)'s handler stops the actor before the sender runs: it sees closed.
        assert len(gone) == 1
        stats = ref.statistics()
        assert stats.reserved == 0 and stats.tasks_waiting_put == 0


class Interruptible(Actor):
    def __init__(self) -> None:
        self.got: list[Any] = []
        self.drained: list[Any] = []

    async def handle(self, msg: Go | Item) -> None:
        if isinstance(msg, Go):
            result = await self.serve_until(self.slow_wind_down, interrupt=(Item,))
            assert isinstance(result, Interrupted)
            self.got.append(result.msg)

    async def slow_wind_down(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(1)  # cancelling fn takes a while

    def drain(self, msg: Any) -> Any:
        self.drained.append(msg)
        return super().drain(msg)


async def serving_interruptible(rt: Runtime) -> tuple[ActorRef[Interruptible], Interruptible]:
    """An ``Interruptible`` whose handler is in ``serve_until`` (interrupted by ``Item``)."""
    ref = await rt.spawn(Interruptible)
    inst = ref.instance
    assert isinstance(inst, Interruptible)
    await ref.tell(Go())
    await trio.sleep(1)
    return ref, inst


@TRACED
async def test_an_interrupting_tell_is_not_lost_when_a_stop_cancels_the_wind_down(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    # fuzz seed 1620: Interrupted was returned from inside serve_until's nursery; a
    # cancellation during fn's wind-down replaced it and the taken tell vanished.
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref, inst = await serving_interruptible(rt)
        await ref.tell(Item(7))  # interrupts: fn is cancelled and winds down for 1 s
        await trio.sleep(0.5)
        await ref.stop(grace=0)  # cancels the handler during the wind-down
    assert inst.got + inst.drained == [Item(7)]


@TRACED
@pytest.mark.parametrize("timeout", [None, 0.25])
async def test_an_interrupting_ask_taken_during_a_stopped_wind_down_still_ends(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool, timeout: float | None
) -> None:
    # An interrupting ask is taken at once (its asker can no longer withdraw it), before
    # fn winds down; a stop during the wind-down cancels the handler before it sees the
    # Interrupted: the ask is answered ActorGone when the handler ends - or, if its own
    # timeout passed first (fuzz seed 521902), it ended with AskTimeout. Either way it
    # ends, and it is neither handled nor drained.
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref, inst = await serving_interruptible(rt)
        ended: list[BaseException] = []

        async def asker() -> None:
            try:
                await ref.ask(Item(7), timeout=timeout)
            except (ActorGone, AskTimeout) as exc:
                ended.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(asker)
            await trio.sleep(0.5)  # the ask interrupted fn, which winds down for 1 s
            await ref.stop(grace=0)  # cancels the handler during the wind-down
    assert [type(e) for e in ended] == [ActorGone if timeout is None else AskTimeout]
    assert inst.got == [] and inst.drained == []


class Lingering(Actor):
    async def handle(self, msg: Go) -> None:
        await trio.sleep(msg.seconds)


class StopsItself(Actor):
    async def on_start(self) -> None:
        self.kid = await self.spawn(Lingering, name="kid")

    async def handle(self, msg: Go) -> None:
        await self.kid.tell(Go(100))
        await trio.sleep(0.5)  # the kid is busy now
        self.stop("self-stop")  # graceful: will wait for the kid's handler (no grace)


async def test_a_later_stop_with_grace_bounds_children_already_being_stopped(
    trioxide_seed: int, autojump_clock: trio.abc.Clock
) -> None:
    # fuzz seed 1859: the child kept running its handler after the parent's stop(grace=0).
    async with open_runtime(seed=trioxide_seed) as rt:
        ref = await rt.spawn(StopsItself)
        await ref.tell(Go())
        await trio.sleep(1)  # the parent is stopping its child, which is busy until t=100
        t0 = trio.current_time()
        await ref.stop(grace=0)
        assert trio.current_time() == t0


def test_trace_details_describe_nested_exceptions_without_addresses() -> None:
    # fuzz: ActorGone(path, Cancelled(...)) carried a task address into the trace.
    async def main() -> str:
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.sleep(1)
            except trio.Cancelled as exc:
                return tx.describe(ActorGone("a", exc))
        raise AssertionError

    assert trio.run(main) == "ActorGone('a', Cancelled())"


class TaskFailsLater(Actor):
    async def on_start(self) -> None:
        self.start_soon(self.fail_at_1)

    async def fail_at_1(self) -> None:
        await trio.sleep(1)
        raise ZeroDivisionError("a child task failed")

    async def handle(self, msg: Go) -> None:
        await trio.sleep(msg.seconds)


@TRACED
async def test_an_asker_cut_short_by_a_failure_learns_the_failure(
    trioxide_seed: int, autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    # semantics review: the asker got ActorGone(path, Cancelled()) instead of the failure.
    async with open_runtime(tracer=tracer(traced), seed=trioxide_seed) as rt:
        ref = await rt.spawn(TaskFailsLater, restart="transient")
        with pytest.raises(ActorGone) as info:
            await ref.ask(Go(10))
        assert isinstance(info.value.reason, ZeroDivisionError)
        assert ref.statistics().restarts == 1


class StopsTheOther(Actor):
    def __init__(self) -> None:
        self.other: trioxide.ActorRef | None = None
        self.errors: list[AskDeadlock] = []

    async def handle(self, msg: Watch_ | Go) -> None:
        if isinstance(msg, Watch_):
            self.other = msg.target
            return
        assert self.other is not None
        await trio.sleep(msg.seconds)
        try:
            await self.other.stop("from a peer")
        except AskDeadlock as exc:
            self.errors.append(exc)


async def test_a_stop_cycle_is_a_deadlock_error(
    trioxide_seed: int, autojump_clock: trio.abc.Clock
) -> None:
    # semantics review: A awaiting b.stop() while B awaited a.stop() hung forever.
    async with open_runtime(seed=trioxide_seed) as rt:
        a = await rt.spawn(StopsTheOther, name="a")
        b = await rt.spawn(StopsTheOther, name="b")
        await a.ask(Watch_(b))
        await b.ask(Watch_(a))
        await a.tell(Go(0))
        await b.tell(Go(1))
        with trio.fail_after(10):
            await a.wait_exited()
            await b.wait_exited()
        inst_errors = [str(a.exit_reason), str(b.exit_reason)]
        assert inst_errors == ["from a peer", "from a peer"]


class Escalates(Actor):
    async def handle(self, msg: Boom) -> None:
        raise KeyError("unsupervised failure")


async def test_a_failure_while_cancelled_from_outside_escalates_not_vanishes(
    trioxide_seed: int, autojump_clock: trio.abc.Clock
) -> None:
    # fuzz seed 8826: a transient actor whose on_stop raised while the root cancelled
    # everything tried to restart (cancelled at once): its failure reached no one.
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_runtime(seed=trioxide_seed) as rt:
            await rt.spawn(StopRaises, restart="transient", backoff=1.0, name="victim")
            culprit = await rt.spawn(Escalates, name="culprit")
            await culprit.tell(Boom())
            await trio.sleep_forever()
    assert info.group_contains(KeyError) and info.group_contains(KeyError, match="on_stop")
    assert not info.group_contains(trio.Cancelled)
