"""Timers on the Trio clock and Watch (DESIGN.md §1)."""

from __future__ import annotations

import msgspec
import pytest
import trio

from trioxide.runtime import Actor, TimerHandle, UnhandledMessage, Watch, open_runtime


class Tick(msgspec.Struct, frozen=True):
    n: int = 0


class Cmd(msgspec.Struct, frozen=True):
    what: str


class Ticker(Actor):
    def __init__(self) -> None:
        self.ticks: list[tuple[int, float]] = []
        self.handle_every: TimerHandle | None = None

    async def on_start(self) -> None:
        self.send_after(1.5, Tick(-1))
        self.handle_every = self.send_every(2.0, Tick(1))

    async def handle(self, msg: Tick | Cmd) -> object:
        match msg:
            case Tick(n):
                self.ticks.append((n, trio.current_time()))
                if n == 1:
                    await trio.sleep(0.5)  # a slow handler does not make the timer drift
            case Cmd("cancel"):
                assert self.handle_every is not None
                self.handle_every.cancel()
            case Cmd("ticks"):
                return list(self.ticks)
            case Cmd("bad"):
                try:
                    self.send_after(1, 42)
                except UnhandledMessage as exc:
                    return str(exc)
        return None


async def test_send_after_and_send_every_on_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Ticker)
        await trio.sleep(7.0)
        await ref.tell(Cmd("cancel"))
        await trio.sleep(10.0)
        assert await ref.ask(Cmd("ticks")) == [(-1, 1.5), (1, 2.0), (1, 4.0), (1, 6.0)]
        assert "must be msgspec.Struct" in await ref.ask(Cmd("bad"))


async def test_timers_die_with_the_actor(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Ticker)
        await trio.sleep(2.5)
        inst = ref.instance
        assert isinstance(inst, Ticker)
        await ref.stop()
        await trio.sleep(100)
        assert inst.ticks == [(-1, 1.5), (1, 2.0)]


async def test_send_every_rejects_non_positive_period(autojump_clock: trio.abc.Clock) -> None:
    class Bad(Actor):
        async def on_start(self) -> None:
            self.send_every(0, Tick())

        async def handle(self, msg: Tick) -> None:
            pass

    async with open_runtime() as rt:
        with pytest.raises(ValueError, match="period"):
            await rt.spawn(Bad)


async def test_watch_value_set_wait_for(autojump_clock: trio.abc.Clock) -> None:
    w: Watch[int] = Watch(0)
    assert (w.value, w.version) == (0, 0)
    results: list[tuple[int, float]] = []

    async def waiter() -> None:
        v = await w.wait_for(lambda v: v >= 3)
        results.append((v, trio.current_time()))

    async with trio.open_nursery() as n:
        n.start_soon(waiter)
        for i in range(1, 5):
            await trio.sleep(1)
            w.set(i)
    assert results == [(3, 3.0)]
    assert await w.wait_for(lambda v: v == 4) == 4  # satisfied at once
    assert w.statistics().version == 4


async def test_watch_changes_latest_value_never_lags(autojump_clock: trio.abc.Clock) -> None:
    w: Watch[str] = Watch("a")
    seen: list[str] = []

    async def consumer() -> None:
        async for v in w.changes():
            seen.append(v)
            if v == "z":
                return
            await trio.sleep(10)  # slow consumer

    async with trio.open_nursery() as n:
        n.start_soon(consumer)
        await trio.sleep(1)
        w.set("b")
        w.set("c")  # b is skipped: the consumer only ever sees the latest
        await trio.sleep(20)
        w.set("z")
    assert seen == ["a", "c", "z"]


async def test_watch_wait_for_is_cancellable(autojump_clock: trio.abc.Clock) -> None:
    w: Watch[int] = Watch(0)
    with trio.move_on_after(5):
        await w.wait_for(lambda v: v > 0)
    assert trio.current_time() == 5.0
    assert w.statistics().tasks_waiting == 0
