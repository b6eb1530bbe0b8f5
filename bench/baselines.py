"""Baselines the runtime is compared against, measured in the same process run.

* raw Trio tell/ask: what a user writes with ``trio.open_memory_channel``;
* lowlevel ceiling tell/ask: a deque plus ``wait_task_rescheduled``/``reschedule``, with
  no type checks, admission, priorities or tracing: about the fastest any Trio actor
  runtime written in Python can be;
* pykka ``ThreadingActor`` tell/ask: the thread-based actor library.

Each consumer does the same trivial work as the trioxide ``Counter`` actor (add
``msg.by`` to a counter). Run this file directly to print the baselines alone.
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import outcome
import pykka
import trio
import trio.testing
from _harness import INCR_ONE, Get, Incr, Sizes, best_of
from trio.lowlevel import Abort, Task, checkpoint, current_task, reschedule, wait_task_rescheduled

__all__ = [
    "lowlevel_ask",
    "lowlevel_tell",
    "pykka_ask",
    "pykka_tell",
    "rate_measurements",
    "raw_trio_ask",
    "raw_trio_tell",
    "run_baselines",
]

#: The lowlevel producer yields once every this many sends (as ``ActorRef.tell`` does).
YIELD_EVERY = 128


# -- raw Trio memory channels ---------------------------------------------------------


def raw_trio_tell(n: int) -> float:
    """Messages/s: one ``await send(msg)`` per message into ``open_memory_channel(n)``,
    consumed by ``async for``. Timed until the consumer has counted all *n*."""

    async def main() -> float:
        send, recv = trio.open_memory_channel[Incr](n)
        total = 0

        async def consumer() -> None:
            nonlocal total
            seen = 0
            async for msg in recv:
                total += msg.by
                seen += 1
                if seen == n:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.lowlevel.checkpoint()  # let the consumer reach its first receive
            t0 = time.perf_counter()
            for _ in range(n):
                await send.send(INCR_ONE)
        elapsed = time.perf_counter() - t0
        assert total == n, total
        return n / elapsed

    return trio.run(main)


def raw_trio_ask(n: int) -> float:
    """Round trips/s: the request travels with a fresh ``open_memory_channel(1)`` reply
    channel; the requester awaits the reply. Sequential, one requester."""

    async def main() -> float:
        send, recv = trio.open_memory_channel[tuple[Get, trio.MemorySendChannel[int]]](1024)
        count = 0

        async def server() -> None:
            async for _msg, reply in recv:
                await reply.send(count)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            await trio.lowlevel.checkpoint()
            msg = Get()
            t0 = time.perf_counter()
            for _ in range(n):
                reply_send, reply_recv = trio.open_memory_channel[int](1)
                await send.send((msg, reply_send))
                await reply_recv.receive()
            elapsed = time.perf_counter() - t0
            nursery.cancel_scope.cancel()
        return n / elapsed

    return trio.run(main)


# -- lowlevel ceiling: deque + reschedule ---------------------------------------------


class _Box:
    """A bare mailbox: a deque and the parked consumer task (if any)."""

    __slots__ = ("q", "waiter")

    def __init__(self) -> None:
        self.q: deque[Any] = deque()
        self.waiter: Task | None = None

    async def park(self) -> None:
        self.waiter = current_task()

        def abort(_: object) -> Abort:
            self.waiter = None
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)


def lowlevel_tell(n: int) -> float:
    """Messages/s into a deque; the consumer parks with ``wait_task_rescheduled`` when it
    is empty, the producer ``reschedule``s it and checkpoints every 128 sends."""

    async def main() -> float:
        box = _Box()
        total = 0

        async def consumer() -> None:
            nonlocal total
            q = box.q
            seen = 0
            while seen < n:
                if not q:
                    await box.park()
                    continue
                msg = q.popleft()
                total += msg.by
                seen += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await checkpoint()
            q = box.q
            msg = INCR_ONE
            budget = YIELD_EVERY
            t0 = time.perf_counter()
            for _ in range(n):
                q.append(msg)
                waiter = box.waiter
                if waiter is not None:
                    box.waiter = None
                    reschedule(waiter)
                budget -= 1
                if budget == 0:
                    budget = YIELD_EVERY
                    await checkpoint()
        elapsed = time.perf_counter() - t0
        assert total == n, total
        return n / elapsed

    return trio.run(main)


def lowlevel_ask(n: int) -> float:
    """Round trips/s: the requester appends ``(msg, task)`` and parks with
    ``wait_task_rescheduled``; the consumer answers with ``reschedule(task, Value(..))``."""

    async def main() -> float:
        box = _Box()
        count = 0

        async def server() -> None:
            q = box.q
            while True:
                if not q:
                    await box.park()
                    continue
                _msg, task = q.popleft()
                reschedule(task, outcome.Value(count))

        def abort(_: object) -> Abort:  # pragma: no cover - the benchmark never cancels
            return Abort.FAILED

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            await checkpoint()
            q = box.q
            msg = Get()
            t0 = time.perf_counter()
            for _ in range(n):
                q.append((msg, current_task()))
                waiter = box.waiter
                if waiter is not None:
                    box.waiter = None
                    reschedule(waiter)
                await wait_task_rescheduled(abort)
            elapsed = time.perf_counter() - t0
            nursery.cancel_scope.cancel()
        return n / elapsed

    return trio.run(main)


# -- pykka ------------------------------------------------------------------------------


class PykkaCounter(pykka.ThreadingActor):
    """The pykka twin of the trioxide ``Counter``."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def on_receive(self, message: Any) -> Any:
        if type(message) is Incr:
            self.n += message.by
            return None
        return self.n


def pykka_tell(n: int) -> float:
    """Messages/s: ``actor_ref.tell(msg)`` *n* times, then one ``ask`` to wait for them."""
    ref = PykkaCounter.start()
    try:
        get = Get()
        ref.ask(get)  # warm the actor thread
        msg = INCR_ONE
        t0 = time.perf_counter()
        for _ in range(n):
            ref.tell(msg)
        count = ref.ask(get)
        elapsed = time.perf_counter() - t0
        assert count == n, count
        return n / elapsed
    finally:
        ref.stop()


def pykka_ask(n: int) -> float:
    """Round trips/s: sequential blocking ``actor_ref.ask(msg)`` from one thread."""
    ref = PykkaCounter.start()
    try:
        get = Get()
        ref.ask(get)
        t0 = time.perf_counter()
        for _ in range(n):
            ref.ask(get)
        return n / (time.perf_counter() - t0)
    finally:
        ref.stop()


# -- all of them ------------------------------------------------------------------------


def rate_measurements(sizes: Sizes) -> dict[str, Callable[[], float]]:
    """The baseline measurements (operations per second), by result key."""
    return {
        "raw_trio_tell": lambda: raw_trio_tell(sizes.tell),
        "raw_trio_ask": lambda: raw_trio_ask(sizes.ask),
        "lowlevel_tell": lambda: lowlevel_tell(sizes.tell),
        "lowlevel_ask": lambda: lowlevel_ask(sizes.ask),
        "pykka_tell": lambda: pykka_tell(sizes.pykka_tell),
        "pykka_ask": lambda: pykka_ask(sizes.pykka_ask),
    }


def run_baselines(sizes: Sizes) -> dict[str, float]:
    """Every baseline, best of ``REPEATS`` runs each; rates in operations per second."""
    return {key: best_of(fn) for key, fn in rate_measurements(sizes).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    sizes = Sizes.quick() if args.quick else Sizes.full()
    for name, rate in run_baselines(sizes).items():
        print(f"{name:16} {rate:14,.0f} /s")


if __name__ == "__main__":
    main()


# -- the structural floor of an idle actor ------------------------------------------------


def _abort_ok(_: object) -> Abort:
    return Abort.SUCCEEDED


async def _bare_task(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await wait_task_rescheduled(_abort_ok)


async def _task_with_nursery_and_scope(
    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with trio.open_nursery():
        with trio.CancelScope():
            task_status.started()
            await wait_task_rescheduled(_abort_ok)


def idle_floor(n: int) -> dict[str, float]:
    """Bytes per parked Trio task (tracemalloc): bare, and with its own nursery and cancel
    scope - the structure the runtime contract gives every actor, before any actor state."""
    import gc
    import tracemalloc

    out: dict[str, float] = {}

    async def main() -> None:
        for key, fn in (
            ("floor_bare_task", _bare_task),
            ("floor_task_nursery_scope", _task_with_nursery_and_scope),
        ):
            async with trio.open_nursery() as nursery:
                gc.collect()
                tracemalloc.start()
                before = tracemalloc.take_snapshot()
                for _ in range(n):
                    nursery.start_soon(fn)
                await trio.testing.wait_all_tasks_blocked()
                after = tracemalloc.take_snapshot()
                tracemalloc.stop()
                grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
                out[key] = grown / n
                nursery.cancel_scope.cancel()

    trio.run(main)
    return out
