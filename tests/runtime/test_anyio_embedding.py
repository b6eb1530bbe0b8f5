"""The runtime inside an anyio application on the Trio backend.

Every test is a plain function calling ``anyio.run(main, backend="trio")`` with a
``MockClock(autojump_threshold=0)``, so times are virtual and asserted exactly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import msgspec
import pytest
import trio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream
from trio.testing import MockClock

from trioxide import runtime, traces

T = TypeVar("T")


def run_anyio(fn: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(fn, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})


class Add(msgspec.Struct, frozen=True):
    n: int


class Get(msgspec.Struct, frozen=True):
    pass


class Nap(msgspec.Struct, frozen=True):
    """Sleep ``seconds`` with anyio.sleep, then reply with (tag, anyio.current_time())."""

    seconds: float
    tag: int = 0


class Counter(runtime.Actor):
    def __init__(self) -> None:
        self.total = 0
        self.naps: list[int] = []  # tags of Naps whose handler ran

    async def handle(self, msg: Add | Get | Nap) -> Any:
        match msg:
            case Add(n):
                self.total += n
            case Get():
                return self.total
            case Nap(seconds, tag):
                self.naps.append(tag)
                await anyio.sleep(seconds)
                return tag, anyio.current_time()
        return None


def test_actors_next_to_an_anyio_task_group() -> None:
    async def main() -> tuple[int, float, list[tuple[int, float]]]:
        async with runtime.open_runtime() as rt:
            counter = await rt.spawn(Counter, name="counter", mailbox_size=2)
            answers: list[tuple[int, float]] = []

            async def worker(i: int) -> None:
                await anyio.sleep(i)
                await counter.tell(Add(i))
                answers.append(await counter.ask(Nap(0.5, tag=i)))

            async with anyio.create_task_group() as tg:
                for i in range(1, 6):
                    tg.start_soon(worker, i)
            total = await counter.ask(Get())
            return total, anyio.current_time(), sorted(answers)

    total, end, answers = run_anyio(main)
    assert total == 1 + 2 + 3 + 4 + 5
    # Worker i asks at t=i; each nap takes 0.5 s and they do not overlap.
    assert answers == [(i, i + 0.5) for i in range(1, 6)]
    assert end == 5.5


def test_runtime_as_a_service_started_by_an_anyio_task_group() -> None:
    async def actor_system(
        shutdown: anyio.Event, *, task_status: TaskStatus[runtime.ActorRef]
    ) -> str:
        async with runtime.open_runtime(name="svc") as rt:
            ref = await rt.spawn(Counter, name="counter")
            task_status.started(ref)
            await shutdown.wait()
        return "closed"

    async def main() -> tuple[int, bool, float]:
        shutdown = anyio.Event()
        async with anyio.create_task_group() as tg:
            ref = await tg.start(actor_system, shutdown)
            for i in range(10):
                await ref.tell(Add(i))
            with anyio.fail_after(3):
                tag, _ = await ref.ask(Nap(2.0, tag=7))
            total = await ref.ask(Get())
            shutdown.set()
        return total + tag, ref.alive, anyio.current_time()

    total, alive, end = run_anyio(main)
    assert total == 45 + 7
    assert alive is False  # leaving open_runtime stopped it
    assert end == 2.0


class Item(msgspec.Struct, frozen=True):
    value: int


class StreamFed(runtime.Actor):
    """Pumps an anyio memory object stream into its own mailbox from a child task."""

    def __init__(self, stream: MemoryObjectReceiveStream[int]) -> None:
        self.stream = stream
        self.seen: list[tuple[int, float]] = []
        self.count = runtime.Watch(0)
        self.closed = anyio.Event()

    async def on_start(self) -> None:
        self.start_soon(self.pump, name="pump")

    async def pump(self) -> None:
        async with self.stream:
            async for value in self.stream:
                await self.ref.tell(Item(value))
        self.closed.set()

    async def handle(self, msg: Item) -> None:
        self.seen.append((msg.value, anyio.current_time()))
        self.count.set(self.count.value + 1)


def test_anyio_memory_stream_feeds_an_actor() -> None:
    sink = traces.MemorySink()

    async def main() -> tuple[list[tuple[int, float]], bool]:
        send, receive = anyio.create_memory_object_stream[int](max_buffer_size=0)
        async with runtime.open_runtime(tracer=traces.Tracer(sink)) as rt:
            ref = await rt.spawn(StreamFed, receive, name="fed")
            actor = ref.instance
            assert isinstance(actor, StreamFed)

            async def producer() -> None:
                async with send:
                    for i in range(5):
                        await send.send(i * 10)
                        await anyio.sleep(1)

            async with anyio.create_task_group() as tg:
                tg.start_soon(producer)
                with anyio.fail_after(100):
                    await actor.count.wait_for(lambda n: n == 5)
            await actor.closed.wait()
            return list(actor.seen), ref.alive

    seen, alive = run_anyio(main)
    assert seen == [(i * 10, float(i)) for i in range(5)]
    assert alive
    # The pump ran as a traced child task of the actor and ended with the stream.
    ends = [e.detail for e in sink.of_kind("task_end")]
    assert "pump: ok" in ends
    sends = sink.of_kind("send")
    assert [e.peer for e in sends] == ["fed"] * 5  # told from the actor's own child task


def test_anyio_fail_after_around_an_ask_withdraws_it() -> None:
    sink = traces.MemorySink()

    async def main() -> tuple[list[float], list[int], Any]:
        times: list[float] = []
        async with runtime.open_runtime(tracer=traces.Tracer(sink)) as rt:
            ref = await rt.spawn(Counter, name="counter")
            # Running handler: the timeout withdraws the ask, the handler runs on.
            with pytest.raises(TimeoutError):
                with anyio.fail_after(2):
                    await ref.ask(Nap(10.0, tag=1))
            times.append(anyio.current_time())
            # Queued behind that handler: withdrawn, never handled.
            with anyio.move_on_after(3) as scope:
                await ref.ask(Nap(0.0, tag=2))
            assert scope.cancelled_caught
            times.append(anyio.current_time())
            last = await ref.ask(Nap(0.0, tag=3))
            times.append(anyio.current_time())
            actor = ref.instance
            assert isinstance(actor, Counter)
            return times, list(actor.naps), last

    times, naps, last = run_anyio(main)
    assert times == [2.0, 5.0, 10.0]
    assert last == (3, 10.0)
    assert naps == [1, 3]  # the request withdrawn while queued was never handled
    cancels = [e for e in sink.of_kind("cancel") if e.detail.startswith("cancelled")]
    assert [e.t for e in cancels] == [2.0, 5.0]
    ask_ids = [e.msg_id for e in sink.of_kind("send")]
    received = {e.msg_id for e in sink.of_kind("receive")}
    assert [c.corr for c in cancels] == ask_ids[:2]
    assert ask_ids[0] in received and ask_ids[1] not in received


def test_cancelling_an_anyio_task_group_withdraws_its_pending_asks() -> None:
    sink = traces.MemorySink()

    async def main() -> tuple[list[int], list[str], float]:
        outcomes: list[str] = []
        async with runtime.open_runtime(tracer=traces.Tracer(sink)) as rt:
            ref = await rt.spawn(Counter, name="counter", mailbox_size=2)
            await ref.tell(Nap(5.0, tag=0))  # busy until t=5

            async def asker(tag: int) -> None:
                try:
                    await ref.ask(Nap(0.0, tag=tag))
                except anyio.get_cancelled_exc_class():
                    outcomes.append(f"cancelled {tag} at {anyio.current_time()}")
                    raise

            async with anyio.create_task_group() as tg:
                for tag in (1, 2, 3, 4):  # two queue, two wait for mailbox space
                    tg.start_soon(asker, tag)
                await anyio.sleep(1)
                assert ref.statistics().queued == 2
                assert ref.statistics().tasks_waiting_put == 2
                tg.cancel_scope.cancel()
            assert ref.statistics().queued == 0
            assert ref.statistics().tasks_waiting_put == 0
            tag, t = await ref.ask(Nap(0.0, tag=9))
            actor = ref.instance
            assert isinstance(actor, Counter)
            return list(actor.naps), sorted(outcomes), t

    naps, outcomes, t = run_anyio(main)
    assert outcomes == [f"cancelled {tag} at 1.0" for tag in (1, 2, 3, 4)]
    assert naps == [0, 9]  # none of the withdrawn asks ran
    assert t == 5.0
    # Every ask of the group that got into the mailbox was withdrawn, and none was
    # received. The two queued ones certainly got in; a waiting sender may be handed a
    # freed slot by a withdrawal at the same instant, get in, and be withdrawn at once.
    sends = sink.of_kind("send")
    group_ids = {e.msg_id for e in sends[1:-1]}  # between the busy tell and the last ask
    cancels = {e.msg_id for e in sink.of_kind("cancel") if e.detail.startswith("cancelled")}
    assert cancels == group_ids and 2 <= len(group_ids) <= 4
    assert not cancels & {e.msg_id for e in sink.of_kind("receive")}


class Gate(msgspec.Struct, frozen=True):
    pass


class Fanout(msgspec.Struct, frozen=True):
    seconds: tuple[float, ...]


class AnyioUser(runtime.Actor):
    """A handler written against anyio: Event, sleep, task groups, locks."""

    def __init__(self, gate: anyio.Event) -> None:
        self.gate = gate
        self.lock = anyio.Lock()

    async def handle(self, msg: Gate | Fanout) -> Any:
        match msg:
            case Gate():
                await self.gate.wait()
                return anyio.current_time()
            case Fanout(seconds):
                done: list[float] = []

                async def nap(s: float) -> None:
                    async with self.lock:
                        await anyio.sleep(s)
                        done.append(anyio.current_time())

                async with anyio.create_task_group() as tg:
                    for s in seconds:
                        tg.start_soon(nap, s)
                return sorted(done)
        return None


def test_handler_uses_anyio_primitives() -> None:
    async def main() -> tuple[float, list[float], float]:
        gate = anyio.Event()
        async with runtime.open_runtime() as rt:
            ref = await rt.spawn(AnyioUser, gate, name="anyio-user")

            async def open_gate() -> None:
                await anyio.sleep(5)
                gate.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(open_gate)
                opened = await ref.ask(Gate())
            fanned = await ref.ask(Fanout((1.0, 2.0, 3.0)))
            return opened, fanned, anyio.current_time()

    opened, fanned, end = run_anyio(main)
    assert opened == 5.0
    # The lock serialises the naps (in whatever order the tasks got it): 1 + 2 + 3 s.
    gaps = [b - a for a, b in zip([opened, *fanned], fanned, strict=False)]
    assert sorted(gaps) == [1.0, 2.0, 3.0]
    assert end == 11.0


def test_stop_grace_cancels_a_handler_in_anyio_sleep() -> None:
    async def main() -> tuple[str, float, object]:
        async with runtime.open_runtime() as rt:
            ref = await rt.spawn(Counter, name="counter")
            result: list[str] = []

            async def asker() -> None:
                try:
                    await ref.ask(Nap(100.0))
                except runtime.ActorGone as exc:
                    result.append(f"gone: {exc.reason}")

            async with anyio.create_task_group() as tg:
                tg.start_soon(asker)
                await anyio.sleep(1)
                await ref.stop("enough", grace=2.0)
                stopped_at = anyio.current_time()
            return result[0], stopped_at, ref.exit_reason

    result, stopped_at, reason = run_anyio(main)
    assert result == "gone: enough"
    assert stopped_at == 3.0
    assert reason == "enough"


class Explode(msgspec.Struct, frozen=True):
    pass


class Fragile(runtime.Actor):
    async def handle(self, msg: Explode) -> None:
        await anyio.sleep(1)
        raise ValueError("fragile")


def test_unsupervised_failure_propagates_through_anyio() -> None:
    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def app() -> None:
                async with runtime.open_runtime() as rt:
                    ref = await rt.spawn(Fragile, name="fragile")
                    await ref.tell(Explode())
                    await anyio.sleep_forever()

            tg.start_soon(app)

    with pytest.raises(BaseExceptionGroup) as info:
        run_anyio(main)
    matched = info.value.subgroup(lambda e: isinstance(e, ValueError) and str(e) == "fragile")
    assert matched is not None


def test_trio_and_anyio_cancellation_are_the_same_thing() -> None:
    # The runtime's ask checks for cancellation through Trio; an anyio scope must count.
    async def main() -> tuple[bool, int]:
        async with runtime.open_runtime() as rt:
            ref = await rt.spawn(Counter, name="counter")
            with anyio.CancelScope() as scope:
                scope.cancel()
                await ref.ask(Nap(0.0, tag=1))  # cancelled before anything is enqueued
            with anyio.CancelScope(shield=True):
                total = await ref.ask(Get())
            assert ref.instance is not None
            return scope.cancelled_caught, len(ref.instance.naps) + total  # type: ignore[attr-defined]

    cancelled, n = run_anyio(main)
    assert cancelled and n == 0


def test_trio_sleep_and_anyio_sleep_share_the_mock_clock() -> None:
    async def main() -> tuple[float, float]:
        await trio.sleep(1.5)
        a = anyio.current_time()
        await anyio.sleep(2.5)
        return a, trio.current_time()

    assert run_anyio(main) == (1.5, 4.0)
