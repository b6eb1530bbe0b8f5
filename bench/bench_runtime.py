"""trioxide measurements: tell and ask throughput, and the cost of idle actors.

* tell: one plain task tells ``Incr(1)`` *n* times to one ``Counter`` actor, then asks
  it for the count (the timing includes that final ask, i.e. every message handled);
  once with tracing off, once into a ``traces.MemorySink`` (no payloads);
* ask: sequential ``ref.ask(Get())`` round trips from one task, with ``timeout=2.0`` and
  without a timeout;
* idle actors: *n* trivial actors alive at once; spawn wall time per actor, and
  tracemalloc bytes per actor (snapshot before and after spawning).

The idle actors are spawned as a two-level tree (``isqrt(n)`` top-level ``Group``
actors, each spawning its share of ``Idle`` children; all of them count): spawning
thousands of *siblings* is quadratic in ``Runtime._spawn`` (see ``flat_spawn``), which
would take tens of minutes at 100,000. Run this file directly to print these numbers.
"""

from __future__ import annotations

import argparse
import gc
import math
import time
import tracemalloc
from dataclasses import dataclass

import msgspec
import trio
from _harness import INCR_ONE, Get, Incr, Sizes, best_of

import runtime
import traces

__all__ = [
    "Counter",
    "IdleResult",
    "ask_rate",
    "flat_spawn",
    "idle_actors",
    "run_runtime",
    "tell_rate",
]


class Counter(runtime.Actor):
    """The actor under test: counts ``Incr``, answers ``Get``."""

    def __init__(self, start: int) -> None:
        self.n = start

    async def handle(self, msg: Incr | Get) -> int | None:
        if type(msg) is Incr:
            self.n += msg.by
            return None
        return self.n


class Ping(msgspec.Struct, frozen=True):
    """What an idle actor would accept (it never receives one)."""


class SpawnIdle(msgspec.Struct, frozen=True):
    """Ask a ``Group`` to spawn ``count`` idle children."""

    count: int


class Idle(runtime.Actor):
    """The trivial idle actor."""

    async def handle(self, msg: Ping) -> None:
        return None


class Group(runtime.Actor):
    """A top-level actor that spawns idle children on request."""

    async def handle(self, msg: SpawnIdle) -> None:
        for _ in range(msg.count):
            await self.spawn(Idle)


def _tracer() -> traces.Tracer:
    # 3 events per tell (send, receive, handle): the default ring (1,000,000) holds them.
    return traces.Tracer(traces.MemorySink())


# -- tell and ask ---------------------------------------------------------------------


def tell_rate(n: int, *, tracing: bool) -> float:
    """Messages/s: *n* tells from a plain task, then one ask to wait for them all."""

    async def main() -> float:
        async with runtime.open_runtime(tracer=_tracer() if tracing else None) as rt:
            ref = await rt.spawn(Counter, 0, name="counter", mailbox_size=1024)
            tell = ref.tell
            msg = INCR_ONE
            get = Get()
            t0 = time.perf_counter()
            for _ in range(n):
                await tell(msg)
            count = await ref.ask(get, timeout=30.0)
            elapsed = time.perf_counter() - t0
            assert count == n, count
            await ref.stop()
        return n / elapsed

    return trio.run(main)


def ask_rate(n: int, *, timeout: float | None) -> float:
    """Round trips/s: *n* sequential ``ask(Get(), timeout=timeout)`` from one task."""

    async def main() -> float:
        async with runtime.open_runtime(tracer=None) as rt:
            ref = await rt.spawn(Counter, 0, name="counter", mailbox_size=1024)
            ask = ref.ask
            msg = Get()
            await ask(msg, timeout=timeout)
            t0 = time.perf_counter()
            if timeout is None:
                for _ in range(n):
                    await ask(msg)
            else:
                for _ in range(n):
                    await ask(msg, timeout=timeout)
            elapsed = time.perf_counter() - t0
            await ref.stop()
        return n / elapsed

    return trio.run(main)


# -- idle actors ------------------------------------------------------------------------


@dataclass(frozen=True)
class IdleResult:
    """Per-actor cost of *count* idle actors (one of the two fields is measured per run)."""

    count: int
    spawn_us: float
    teardown_us: float
    bytes_per_actor: float


async def _spawn_tree(rt: runtime.Runtime, n: int) -> None:
    """Spawn *n* actors: ``isqrt(n)`` groups, each with its share of idle children."""
    groups = max(1, math.isqrt(n))
    left = n - groups
    for i in range(groups):
        share = left // (groups - i)
        left -= share
        group = await rt.spawn(Group, name=f"g{i}")
        if share:
            await group.ask(SpawnIdle(share))


def idle_actors(n: int, *, trace_memory: bool) -> IdleResult:
    """Spawn *n* idle actors and keep them alive at once.

    With ``trace_memory`` the bytes per actor are measured (tracemalloc slows spawning
    down, so the spawn time is only meaningful without it). Teardown cancels them all.
    """

    async def main() -> IdleResult:
        spawn_s = 0.0
        per_actor = math.nan
        with trio.CancelScope() as outer:
            async with runtime.open_runtime(tracer=None) as rt:
                gc.collect()
                if trace_memory:
                    tracemalloc.start()
                    before = tracemalloc.take_snapshot()
                t0 = time.perf_counter()
                await _spawn_tree(rt, n)
                spawn_s = time.perf_counter() - t0
                if trace_memory:
                    gc.collect()
                    after = tracemalloc.take_snapshot()
                    tracemalloc.stop()
                    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
                    per_actor = grown / n
                    del before, after
                t1 = time.perf_counter()
                outer.cancel()  # cancel every actor at once (the teardown measured)
        teardown_s = time.perf_counter() - t1
        return IdleResult(n, spawn_s / n * 1e6, teardown_s / n * 1e6, per_actor)

    return trio.run(main)


def flat_spawn(n: int) -> float:
    """µs per spawn for *n* top-level siblings (shows the quadratic sibling-name check)."""

    async def main() -> float:
        with trio.CancelScope() as outer:
            async with runtime.open_runtime(tracer=None) as rt:
                t0 = time.perf_counter()
                for _ in range(n):
                    await rt.spawn(Idle)
                elapsed = time.perf_counter() - t0
                outer.cancel()
        return elapsed / n * 1e6

    return trio.run(main)


# -- all of them ------------------------------------------------------------------------


def run_runtime(sizes: Sizes, *, idle_repeats: int = 1) -> dict[str, float]:
    """Every trioxide measurement. Rates are best of ``REPEATS``; the idle-actor run is
    repeated ``idle_repeats`` times (each 100,000-actor run takes tens of seconds)."""
    out = {
        "tell_off": best_of(lambda: tell_rate(sizes.tell, tracing=False)),
        "tell_on": best_of(lambda: tell_rate(sizes.tell, tracing=True)),
        "ask_timeout": best_of(lambda: ask_rate(sizes.ask, timeout=2.0)),
        "ask_plain": best_of(lambda: ask_rate(sizes.ask, timeout=None)),
        "flat_spawn_1k_us": best_of(lambda: flat_spawn(1_000), higher=False),
        "flat_spawn_4k_us": best_of(lambda: flat_spawn(4_000), repeats=1, higher=False),
    }
    spawn = [idle_actors(sizes.idle_actors, trace_memory=False) for _ in range(idle_repeats)]
    best = min(spawn, key=lambda r: r.spawn_us)
    mem = idle_actors(sizes.idle_actors, trace_memory=True)
    out.update(
        idle_count=float(sizes.idle_actors),
        idle_spawn_us=best.spawn_us,
        idle_teardown_us=best.teardown_us,
        idle_bytes=mem.bytes_per_actor,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    sizes = Sizes.quick() if args.quick else Sizes.full()
    for name, value in run_runtime(sizes).items():
        print(f"{name:18} {value:14,.1f}")


if __name__ == "__main__":
    main()
