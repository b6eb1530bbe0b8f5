"""Stop, grace, drain, child actors and tasks (DESIGN.md §1 "Stop", "Exit and drain")."""

from __future__ import annotations

import msgspec
import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from trioxide.runtime import Actor, ActorGone, open_runtime

from ._msgs import Counter, Get, Incr, Sleep


class Probe(msgspec.Struct, frozen=True):
    tag: str


class Recording(Actor):
    """Records its lifecycle into a shared list; children and tasks from on_start."""

    def __init__(self, tag: str, log: list[str], children: tuple[str, ...] = ()) -> None:
        self.tag = tag
        self.log = log
        self.children = children

    async def on_start(self) -> None:
        for child in self.children:
            await self.spawn(Recording, f"{self.tag}/{child}", self.log, name=child)
        self.start_soon(self._task, name="worker")
        self.log.append(f"start {self.tag}")

    async def _task(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.log.append(f"task cancelled {self.tag}")

    async def handle(self, msg: Probe | Sleep) -> str:
        if isinstance(msg, Sleep):
            try:
                await trio.sleep(msg.seconds)
            except trio.Cancelled:
                self.log.append(f"handler cancelled {self.tag} at {trio.current_time()}")
                raise
            self.log.append(f"handler done {self.tag} at {trio.current_time()}")
            return "slept"
        return msg.tag

    def drain(self, msg: object) -> object:
        self.log.append(f"drain {self.tag} {type(msg).__name__}")
        if isinstance(msg, Probe) and msg.tag == "custom":
            return "drained reply"
        return super().drain(msg)

    async def on_stop(self, reason: object) -> None:
        self.log.append(f"on_stop {self.tag} {reason}")


async def test_stop_order_drain_children_reverse_tasks_then_on_stop(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[str] = []
    async with open_runtime() as rt:
        ref = await rt.spawn(Recording, "p", log, ("a", "b"), name="p")
        assert log == ["start p/a", "start p/b", "start p"]
        log.clear()
        ref.tell_nowait(Sleep(3.0))
        await wait_all_tasks_blocked()
        outcomes: dict[str, object] = {}

        async def ask(tag: str) -> None:
            try:
                outcomes[tag] = await ref.ask(Probe(tag))
            except ActorGone as exc:
                outcomes[tag] = f"gone: {exc.reason}"

        async with trio.open_nursery() as n:
            n.start_soon(ask, "queued")
            n.start_soon(ask, "custom")
            await wait_all_tasks_blocked()
            await ref.stop(reason="maintenance")
            assert trio.current_time() == 3.0  # the handler in progress finished
    assert outcomes == {"queued": "gone: maintenance", "custom": "drained reply"}
    assert log[0] == "handler done p at 3.0"
    drains = sorted(log[1:3])
    assert drains == ["drain p Probe", "drain p Probe"]
    assert log[3:] == [
        # children stop in reverse start order, each: its tasks cancelled, then on_stop
        "task cancelled p/b",
        "on_stop p/b maintenance",
        "task cancelled p/a",
        "on_stop p/a maintenance",
        # then the parent's own tasks, then its on_stop
        "task cancelled p",
        "on_stop p maintenance",
    ]


async def test_stop_grace_cancels_handler_after_grace(autojump_clock: trio.abc.Clock) -> None:
    log: list[str] = []
    async with open_runtime() as rt:
        ref = await rt.spawn(Recording, "x", log)
        async with trio.open_nursery() as n:
            result: list[object] = []

            async def asker() -> None:
                try:
                    await ref.ask(Sleep(100.0))
                except ActorGone as exc:
                    result.append(exc.reason)

            n.start_soon(asker)
            await trio.sleep(1.0)
            await ref.stop(reason="hurry", grace=2.0)
            assert trio.current_time() == 3.0
        assert result == ["hurry"]
        assert "handler cancelled x at 3.0" in log


async def test_stop_grace_zero_cancels_at_once(autojump_clock: trio.abc.Clock) -> None:
    log: list[str] = []
    async with open_runtime() as rt:
        ref = await rt.spawn(Recording, "x", log)
        ref.tell_nowait(Sleep(100.0))
        await trio.sleep(5)
        await ref.stop(grace=0)
        assert trio.current_time() == 5.0
        assert "handler cancelled x at 5.0" in log


async def test_stop_overtakes_queued_messages(autojump_clock: trio.abc.Clock) -> None:
    log: list[str] = []
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, 0, log, mailbox_size=10)
        ref.tell_nowait(Sleep(1.0, "first"))
        await wait_all_tasks_blocked()
        for _ in range(5):
            ref.tell_nowait(Incr(1))
        await ref.stop()
        assert ref.statistics().dropped == 5
        assert ref.statistics().handled == 1
    assert log == ["sleep first start", "sleep first end"]


async def test_stop_wakes_blocked_senders_with_actor_gone(autojump_clock: trio.abc.Clock) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Counter, mailbox_size=1)
        ref.tell_nowait(Sleep(1.0))
        await wait_all_tasks_blocked()
        ref.tell_nowait(Incr())
        errors: list[str] = []

        async def blocked_sender() -> None:
            try:
                await ref.tell(Incr())
            except ActorGone:
                errors.append("gone")

        async with trio.open_nursery() as n:
            n.start_soon(blocked_sender)
            await wait_all_tasks_blocked()
            await ref.stop()
        assert errors == ["gone"]


async def test_self_stop_from_handler(autojump_clock: trio.abc.Clock) -> None:
    class Quitter(Actor):
        async def handle(self, msg: Get) -> str:
            self.stop("done")
            await self.ref.stop("again")  # from inside: only a request, no deadlock
            return "bye"

    async with open_runtime() as rt:
        ref = await rt.spawn(Quitter)
        assert await ref.ask(Get()) == "bye"
        assert await ref.wait_exited() == "done"


async def test_stop_cancels_handler_waiting_in_receive(autojump_clock: trio.abc.Clock) -> None:
    class Waiter(Actor):
        async def handle(self, msg: Get | Incr) -> object:
            if isinstance(msg, Get):
                return await self.receive(Incr)  # never arrives
            return None

    async with open_runtime() as rt:
        ref = await rt.spawn(Waiter)
        async with trio.open_nursery() as n:
            got: list[object] = []

            async def asker() -> None:
                with pytest.raises(ActorGone):
                    await ref.ask(Get())
                got.append("gone")

            n.start_soon(asker)
            await trio.sleep(7)
            await ref.stop()  # grace=None, but receive() is a cancel point
            assert trio.current_time() == 7.0
        assert got == ["gone"]


async def test_child_task_failure_fails_the_actor(autojump_clock: trio.abc.Clock) -> None:
    class Crashy(Actor):
        async def on_start(self) -> None:
            self.start_soon(self._bad)

        async def _bad(self) -> None:
            await trio.sleep(2)
            raise OSError("disk gone")

        async def handle(self, msg: Get) -> None:
            pass

    with pytest.raises(ExceptionGroup) as info:
        async with open_runtime() as rt:
            await rt.spawn(Crashy)
            await trio.sleep(10)
    assert info.group_contains(OSError, match="disk gone", depth=None)
    assert trio.current_time() == 2.0


async def test_start_child_task_returns_started_value(autojump_clock: trio.abc.Clock) -> None:
    class Server(Actor):
        async def on_start(self) -> None:
            self.port = await self.start(self._serve, 8080)

        async def _serve(self, port: int, *, task_status: trio.TaskStatus[int]) -> None:
            await trio.sleep(1)
            task_status.started(port + 1)
            await trio.sleep_forever()

        async def handle(self, msg: Get) -> int:
            return self.port

    async with open_runtime() as rt:
        ref = await rt.spawn(Server)
        assert await ref.ask(Get()) == 8081
        assert trio.current_time() == 1.0


async def test_child_actor_failure_escalates_through_parent(autojump_clock: trio.abc.Clock) -> None:
    log: list[str] = []

    class Parent(Actor):
        async def on_start(self) -> None:
            self.child = await self.spawn(Counter, name="child")

        async def handle(self, msg: Get) -> None:
            await self.child.tell(Sleep(0))
            from ._msgs import Boom

            await self.child.tell(Boom("child broke"))

        async def on_stop(self, reason: object) -> None:
            log.append(f"parent on_stop {reason!r}")

    with pytest.raises(ExceptionGroup) as info:
        async with open_runtime() as rt:
            ref = await rt.spawn(Parent, name="parent")
            await ref.tell(Get())
            await trio.sleep_forever()
    assert info.group_contains(ValueError, match="child broke", depth=None)
    assert log == ["parent on_stop ValueError('child broke')"]
