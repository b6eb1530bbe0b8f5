"""Restart policies, intensity, backoff, escalation and monitors (DESIGN.md §1)."""

from __future__ import annotations

import msgspec
import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from trioxide.runtime import Actor, ActorGone, Terminated, open_runtime

from ._msgs import Boom, Counter, Get, Incr


class Watcher(Actor):
    """Monitors refs it is told about and records Terminated reasons with times."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, float]] = []

    async def handle(self, msg: Watch | Get) -> object:
        if isinstance(msg, Watch):
            self.monitor(msg.ref)
            return None
        return list(self.seen)


class Watch(msgspec.Struct, frozen=True):
    ref: object


class WatcherWithTerminated(Watcher):
    async def handle(self, msg: Watch | Get | Terminated) -> object:  # type: ignore[override]
        if isinstance(msg, Terminated):
            self.seen.append((msg.ref.path, repr(msg.reason), trio.current_time()))  # type: ignore[attr-defined]
            return None
        return await super().handle(msg)


async def test_permanent_restarts_keep_mailbox_and_ref(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, 5, restart="permanent", max_restarts=3, within=10.0)
        await ref.tell(Incr(1))
        first = ref.instance
        await ref.tell(Boom())  # fails the actor (a tell), queued messages survive
        await ref.tell(Incr(2))
        assert await ref.ask(Get()) == 7  # fresh state (5) + the queued Incr(2)
        assert ref.instance is not first
        assert ref.statistics().restarts == 1 and ref.statistics().failures == 1


async def test_transient_restarts_after_exception_not_after_stop(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, restart="transient")
        await ref.tell(Boom())
        assert await ref.ask(Get()) == 0
        await ref.stop("bye")
        assert not ref.alive and ref.statistics().restarts == 1


async def test_intensity_exceeded_escalates_last_exception(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(ExceptionGroup) as info:
        async with open_runtime() as rt:
            ref = await rt.spawn(Counter, restart="permanent", max_restarts=2, within=5.0)
            for i in range(3):
                await ref.tell(Boom(f"crash {i}"))
                await trio.sleep(1)
            await trio.sleep_forever()
    assert info.group_contains(ValueError, match="crash 2", depth=None)
    assert trio.current_time() == 2.0


async def test_intensity_window_slides_on_trio_clock(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, restart="permanent", max_restarts=2, within=5.0)
        for i in range(6):  # one crash every 3 s: never more than 2 within 5 s
            await ref.tell(Boom(f"crash {i}"))
            await trio.sleep(3)
        assert ref.statistics().restarts == 6


async def test_backoff_delays_restart_messages_wait(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(
            Counter, restart="permanent", max_restarts=5, within=100.0, backoff=lambda n: 2.0**n
        )
        await ref.tell(Boom())
        assert await ref.ask(Get()) == 0
        assert trio.current_time() == 2.0  # restart 1 waited 2 s; the Get was queued
        await ref.tell(Boom())
        await ref.ask(Get())
        assert trio.current_time() == 6.0  # restart 2 waited 4 s


async def test_stop_during_backoff_exits_without_restart(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, restart="permanent", backoff=60.0)
        await ref.tell(Boom())
        await wait_all_tasks_blocked()
        assert ref.statistics().state == "restarting"
        assert ref.instance is None
        await ref.tell(Incr())  # enqueued while restarting
        await ref.stop("abort")
        assert trio.current_time() == 0.0
        assert ref.statistics().restarts == 0 and ref.statistics().dropped == 1


async def test_temporary_failure_reported_to_monitor_not_escalated(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime() as rt:
        w = await rt.spawn(WatcherWithTerminated, name="w")
        t = await rt.spawn(Counter, name="temp", restart="temporary")
        await w.ask(Watch(t))
        await trio.sleep(1)
        await t.tell(Boom("temp died"))
        await trio.sleep(1)
        assert not t.alive
        assert await w.ask(Get()) == [("temp", "ValueError('temp died')", 1.0)]


async def test_terminated_once_at_final_exit_not_per_restart(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime() as rt:
        w = await rt.spawn(WatcherWithTerminated, name="w")
        p = await rt.spawn(Counter, name="perm", restart="permanent", max_restarts=10)
        await w.ask(Watch(p))
        for _ in range(3):
            await p.tell(Boom())
        await p.ask(Get())
        await trio.sleep(2)
        await p.stop("retired")
        assert await w.ask(Get()) == [("perm", "'retired'", 2.0)]
        # Monitoring an actor that is already gone delivers Terminated at once.
        await w.ask(Watch(p))
        assert len(await w.ask(Get())) == 2


async def test_terminated_accepted_whatever_annotation_says(autojump_clock: trio.abc.Clock) -> None:
    got: list[object] = []

    class Narrow(Actor):
        async def handle(self, msg: Watch) -> None:
            if isinstance(msg, Watch):
                self.monitor(msg.ref)  # type: ignore[arg-type]
            else:
                got.append(msg)

    async with open_runtime() as rt:
        n = await rt.spawn(Narrow)
        c = await rt.spawn(Counter)
        await n.tell(Watch(c))
        await c.stop("x")
        await wait_all_tasks_blocked()
        assert len(got) == 1 and isinstance(got[0], Terminated) and got[0].reason == "x"


async def test_default_policy_failure_escalates(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(ExceptionGroup) as info:
        async with open_runtime() as rt:
            ref = await rt.spawn(Counter)
            await ref.tell(Boom("unsupervised"))
            await trio.sleep_forever()
    assert info.group_contains(ValueError, match="unsupervised", depth=None)


async def test_failure_during_stop_ends_supervised_actor(autojump_clock: trio.abc.Clock) -> None:
    class SlowCrash(Actor):
        async def handle(self, msg: Get) -> None:
            await trio.sleep(1)
            raise ValueError("while stopping")

    async with open_runtime() as rt:
        ref = await rt.spawn(SlowCrash, restart="transient")
        await ref.tell(Get())
        await wait_all_tasks_blocked()
        await ref.stop("planned")
        assert repr(ref.exit_reason) == "ValueError('while stopping')"
        with pytest.raises(ActorGone):
            await ref.ask(Get())


class Looper(Actor):
    """Crash-loops: each incarnation tells itself an urgent ``Boom`` from ``on_start`` and
    fails handling it a second later - so a queued ``Get`` (priority 0) is never reached,
    and failures a second apart never fill a 0.5 s intensity window."""

    def priority(self, msg: object) -> int:
        return 5 if isinstance(msg, Boom) else 0

    async def on_start(self) -> None:
        self.ref.tell_nowait(Boom())

    async def handle(self, msg: Boom | Get) -> str:
        if isinstance(msg, Boom):
            await trio.sleep(1)
            raise ValueError("boom")
        return "served"


class Leaver(Actor):
    """Asks the looper on its way out (``on_stop``, which no grace cuts short)."""

    got: list[object] = []

    def __init__(self, looper: object) -> None:
        self.looper = looper

    async def handle(self, msg: Get) -> None:
        pass

    async def on_stop(self, reason: object) -> None:
        try:
            Leaver.got.append(await self.looper.ask(Get()))  # type: ignore[attr-defined]
        except ActorGone as exc:
            Leaver.got.append(exc)


@pytest.mark.parametrize("parent", [False, True], ids=["top-level", "children"])
async def test_an_actor_whose_supervisor_is_stopping_is_not_restarted(
    autojump_clock: trio.abc.Clock, parent: bool
) -> None:
    """Leaving the block stops top-level actors one by one, the last spawned first (and a
    stopping parent its children likewise). The leaver, stopped first, asks the
    crash-looping looper from ``on_stop``; the looper is not stopped yet, so it used to
    restart forever and never reach the ask: leaving the block never ended. Now a failure
    while its supervisor (the runtime leaving its block, or the parent) is stopping ends
    the actor, as a failure during its own stop does; its queued ask is drained."""
    Leaver.got = []

    class Parent(Actor):
        async def on_start(self) -> None:
            looper = await self.spawn(Looper, restart="permanent", max_restarts=1, within=0.5)
            await self.spawn(Leaver, looper)

        async def handle(self, msg: Get) -> None:
            pass

    with trio.fail_after(60):
        async with open_runtime() as rt:
            if parent:
                await rt.spawn(Parent)
            else:
                looper = await rt.spawn(Looper, restart="permanent", max_restarts=1, within=0.5)
                await rt.spawn(Leaver, looper)
            await trio.sleep(5)  # four restarts so far
    (answer,) = Leaver.got
    assert isinstance(answer, ActorGone) and repr(answer.reason) == "ValueError('boom')"
