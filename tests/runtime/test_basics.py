"""spawn / tell / ask / stop, errors and statistics (DESIGN.md §1)."""

from __future__ import annotations

import msgspec
import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from trioxide import runtime
from trioxide.runtime import (
    Actor,
    ActorGone,
    AskTimeout,
    MailboxFull,
    UnhandledMessage,
    open_runtime,
)

from ._msgs import Boom, Counter, Get, Incr, Note, Sleep


async def test_tell_then_ask_sees_effects_in_order(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, 10, name="counter")
        for _ in range(500):
            await ref.tell(Incr(1))
        ref.tell_nowait(Incr(2))
        assert await ref.ask(Get(), timeout=2.0) == 512
        assert trio.current_time() == 0.0


async def test_ask_handler_exception_goes_to_asker_actor_keeps_running(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, 1)
        with pytest.raises(ValueError, match="kaput"):
            await ref.ask(Boom("kaput"))
        assert await ref.ask(Get()) == 1
        assert ref.statistics().state == "running"


async def test_ask_timeout_at_exact_virtual_time_and_reply_discarded(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[str] = []
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, 0, log)
        with pytest.raises(AskTimeout) as info:
            await ref.ask(Sleep(5.0, "a"), timeout=1.5)
        assert trio.current_time() == 1.5
        assert info.value.timeout == 1.5 and info.value.actor == ref.path
        # The running handler was not cancelled: it finishes at t=5, then Get is served.
        assert await ref.ask(Get()) == 0
        assert trio.current_time() == 5.0
        assert log == ["sleep a start", "sleep a end"]


async def test_ask_timeout_counts_mailbox_wait(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, 0, mailbox_size=1)
        ref.tell_nowait(Sleep(10.0))
        await wait_all_tasks_blocked()  # the actor took the Sleep; the mailbox is empty
        ref.tell_nowait(Incr(1))  # now full
        with pytest.raises(AskTimeout):
            await ref.ask(Get(), timeout=3.0)
        assert trio.current_time() == 3.0
        # The timed-out ask never entered the mailbox.
        assert ref.statistics().queued == 1


async def test_tell_nowait_full_raises_mailbox_full_and_keeps_queue(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, 0, mailbox_size=2, name="small")
        ref.tell_nowait(Sleep(1.0))
        await wait_all_tasks_blocked()
        ref.tell_nowait(Incr(1))
        ref.tell_nowait(Incr(2))
        with pytest.raises(MailboxFull) as info:
            ref.tell_nowait(Incr(4))
        assert isinstance(info.value, trio.WouldBlock)
        assert info.value.capacity == 2 and info.value.actor == "small"
        assert await ref.ask(Get()) == 3


async def test_tell_backpressure_waits_for_space_fifo(autojump_clock: trio.abc.Clock) -> None:
    log: list[str] = []
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, 0, log, mailbox_size=1)
        ref.tell_nowait(Sleep(2.0, "blocker"))
        await wait_all_tasks_blocked()
        ref.tell_nowait(Incr(1))
        done: list[tuple[int, float]] = []

        async def sender(by: int) -> None:
            await ref.tell(Incr(by))
            done.append((by, trio.current_time()))

        async with trio.open_nursery() as n:
            for by in (10, 20, 30):
                n.start_soon(sender, by)
                await trio.sleep(0.1)
            assert ref.statistics().tasks_waiting_put == 3
        assert [by for by, _ in done] == [10, 20, 30]
        assert done[0][1] == 2.0  # space appeared when the blocker finished
        assert await ref.ask(Get()) == 61
        assert log[-3:] == ["incr 10", "incr 20", "incr 30"]


async def test_unhandled_type_and_non_struct_refused_actor_keeps_running(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, 5, name="ctr")
        with pytest.raises(UnhandledMessage) as info:
            await ref.tell(Note("hi"))
        assert info.value.actor == "ctr" and type(info.value.msg) is Note
        assert "Note" in str(info.value) and "Incr" in str(info.value)
        with pytest.raises(UnhandledMessage, match=r"must be msgspec\.Struct"):
            await ref.ask({"not": "a struct"})  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            ref.tell_nowait(42)  # UnhandledMessage is a TypeError
        assert await ref.ask(Get()) == 5
        assert ref.statistics().unhandled == 3


class Anything(Actor):
    async def handle(self, msg) -> object:  # type: ignore[no-untyped-def]
        return type(msg).__name__


class Sub(Incr, frozen=True):
    pass


async def test_no_annotation_accepts_any_struct_and_subclasses(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime() as rt:
        any_ref = await rt.spawn(Anything)
        assert await any_ref.ask(Note("x")) == "Note"
        with pytest.raises(UnhandledMessage):
            await any_ref.ask("text")  # type: ignore[arg-type]
        ctr = await rt.spawn(Counter)
        await ctr.tell(Sub(3))
        assert await ctr.ask(Get()) == 3


class BadAnnotation(Actor):
    async def handle(self, msg: DoesNotExist) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass


class NotAStruct(Actor):
    async def handle(self, msg: int) -> None:
        pass


class NoHandle(Actor):
    pass


async def test_spawn_rejects_bad_actor_classes(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        with pytest.raises(runtime.InvalidActor, match="cannot resolve"):
            await rt.spawn(BadAnnotation)
        with pytest.raises(runtime.InvalidActor, match=r"not a msgspec\.Struct"):
            await rt.spawn(NotAStruct)
        with pytest.raises(runtime.InvalidActor, match="does not define handle"):
            await rt.spawn(NoHandle)
        with pytest.raises(runtime.InvalidActor):
            await rt.spawn(int)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"mailbox_size"):
            await rt.spawn(Counter, mailbox_size=0)
        await rt.spawn(Counter, name="dup")
        with pytest.raises(ValueError, match="already running"):
            await rt.spawn(Counter, name="dup")
        with pytest.raises(ValueError, match="restart"):
            await rt.spawn(Counter, restart="sometimes")  # type: ignore[arg-type]
        assert [a.name for a in rt.actors()] == ["dup"]


class FailingStart(Actor):
    async def on_start(self) -> None:
        await trio.sleep(1)
        raise RuntimeError("no disk")

    async def handle(self, msg: Get) -> None:
        pass


async def test_on_start_failure_raised_to_spawner(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        with pytest.raises(RuntimeError, match="no disk"):
            await rt.spawn(FailingStart, name="fs", restart="permanent")
        assert rt.actors() == []
        ok = await rt.spawn(Counter, name="fs")  # the name is free again
        assert ok.alive


class Slow(Actor):
    def __init__(self) -> None:
        self.started_at = -1.0

    async def on_start(self) -> None:
        await trio.sleep(2)
        self.started_at = trio.current_time()

    async def handle(self, msg: Get) -> float:
        return self.started_at


async def test_spawn_returns_after_on_start(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Slow)
        assert trio.current_time() == 2.0
        assert await ref.ask(Get()) == 2.0


async def test_asks_to_exited_actor_raise_actor_gone(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, name="c")
        await ref.stop(reason="maintenance")
        assert not ref.alive and ref.exit_reason == "maintenance"
        with pytest.raises(ActorGone) as info:
            await ref.ask(Get())
        assert info.value.reason == "maintenance"
        with pytest.raises(ActorGone):
            await ref.tell(Incr())
        with pytest.raises(ActorGone):
            ref.tell_nowait(Incr())
        await ref.stop()  # idempotent
        assert ref.instance is None


async def test_ask_self_from_handler_is_refused_not_deadlocked(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Selfish(Actor):
        async def handle(self, msg: Get) -> str:
            try:
                await self.ref.ask(Get())
            except RuntimeError as exc:
                return str(exc)
            return "no error"

    async with open_runtime() as rt:
        ref = await rt.spawn(Selfish)
        assert "deadlock" in await ref.ask(Get())


async def test_caller_cancel_withdraws_queued_ask(autojump_clock: trio.abc.Clock) -> None:
    log: list[str] = []
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, 0, log)
        ref.tell_nowait(Sleep(5.0, "first"))
        with trio.move_on_after(1.0):
            await ref.ask(Sleep(1.0, "withdrawn"))
        assert ref.statistics().queued == 0
        assert await ref.ask(Get()) == 0
        assert trio.current_time() == 5.0
        assert "sleep withdrawn start" not in log


async def test_statistics_and_actor_tree(autojump_clock: trio.abc.Clock) -> None:
    class Parent(Actor):
        async def on_start(self) -> None:
            await self.spawn(Counter, name="a")
            await self.spawn(Counter, name="b")

        async def handle(self, msg: Get) -> None:
            pass

    async with open_runtime() as rt:
        p = await rt.spawn(Parent, name="p")
        c = await rt.spawn(Counter, name="c", mailbox_size=7)
        tree = rt.actors()
        assert [(a.path, [ch.path for ch in a.children]) for a in tree] == [
            ("p", ["p/a", "p/b"]),
            ("c", []),
        ]
        stats = c.statistics()
        assert (stats.capacity, stats.queued, stats.state) == (7, 0, "running")
        assert p.statistics().children == 2
        await c.tell(Incr())
        await c.ask(Get())
        assert c.statistics().handled == 2


async def test_exception_in_runtime_block_cancels_actors(autojump_clock: trio.abc.Clock) -> None:
    stopped: list[object] = []

    class Recorder(Actor):
        async def handle(self, msg: Get) -> None:
            pass

        async def on_stop(self, reason: object) -> None:
            stopped.append(type(reason).__name__)

    with pytest.raises(KeyError):
        async with open_runtime() as rt:
            await rt.spawn(Recorder)
            raise KeyError("user bug")
    assert stopped == ["Cancelled"]


async def test_runtime_exit_stops_actors_in_reverse_spawn_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    order: list[str] = []

    class Named(Actor):
        def __init__(self, tag: str) -> None:
            self.tag = tag

        async def handle(self, msg: Get) -> None:
            pass

        async def on_stop(self, reason: object) -> None:
            order.append(f"{self.tag}:{reason}")

    async with open_runtime() as rt:
        for tag in "abc":
            await rt.spawn(Named, tag)
    assert order == ["c:runtime exit", "b:runtime exit", "a:runtime exit"]


def test_public_api_is_explicit() -> None:
    for name in runtime.__all__:
        assert hasattr(runtime, name), name
    assert "Actor" in runtime.__all__ and "open_runtime" in runtime.__all__


async def test_ask_negative_timeout_is_a_clear_error(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter)
        with pytest.raises(ValueError, match="timeout"):
            await ref.ask(Get(), timeout=-1)
        assert await ref.ask(Get(), timeout=0.5) == 0
        assert trio.current_time() == 0.0


class Ping(msgspec.Struct, frozen=True):
    pass


async def test_cancelled_caller_never_enqueues(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter)
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await ref.tell(Incr(1))
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await ref.ask(Incr(1))
        assert await ref.ask(Get()) == 0


async def test_tell_yields_at_least_every_n_calls(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, mailbox_size=100_000)
        ran = 0
        stop = False

        async def spinner() -> None:
            nonlocal ran
            while not stop:
                ran += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as n:
            n.start_soon(spinner)
            before = ran
            for _ in range(runtime.TELL_YIELD_EVERY * 10):
                await ref.tell(Incr(1))
            stop = True
        assert ran - before >= 9
        assert await ref.ask(Get()) == runtime.TELL_YIELD_EVERY * 10
