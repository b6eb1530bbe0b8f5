"""Where the time and memory go in trioxide (not part of ``run_all``; run it by hand).

Usage: ``python bench/profile_runtime.py [tell|ask|spawn|memory ...]`` (default: all).

* ``tell``: a manual split of the tell path into the producer side (tells into a
  mailbox whose actor is held inside a handler, so no wakeups happen) and the actor side
  (draining those messages), tracing off and on; then cProfile of the normal benchmark.
* ``ask``: cProfile of sequential asks with ``timeout=2.0``, and the cost of the timeout.
* ``spawn``: cProfile of spawning idle actors, and the share of the cyclic GC.
* ``memory``: tracemalloc statistics (by line and by traceback) for idle actors, and a
  histogram of the GC-tracked objects each idle actor adds.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import sys
import time
import tracemalloc
from collections import Counter as Histogram
from collections.abc import Callable

import trio
import trio.lowlevel
from _harness import INCR_ONE, Get, Incr
from bench_runtime import _spawn_tree as spawn_tree
from bench_runtime import ask_rate, tell_rate

from trioxide import runtime, traces

__all__ = ["main"]


def _profile(fn: Callable[[], object], limit: int = 22, sort: str = "tottime") -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(limit)
    return out.getvalue()


# -- tell -------------------------------------------------------------------------------


class Held(runtime.Actor):
    """Counts ``Incr``; the first ``Get`` is held until ``gate`` is set (fills the mailbox)."""

    def __init__(self, gate: trio.Event) -> None:
        self.gate = gate
        self.n = 0

    async def handle(self, msg: Incr | Get) -> int | None:
        if type(msg) is Incr:
            self.n += msg.by
            return None
        await self.gate.wait()
        return self.n


def tell_split(n: int, *, tracing: bool) -> tuple[float, float]:
    """(producer µs/tell, actor µs/message) measured apart from each other."""

    async def main() -> tuple[float, float]:
        tracer = traces.Tracer(traces.MemorySink()) if tracing else None
        async with runtime.open_runtime(tracer=tracer) as rt:
            gate = trio.Event()
            ref = await rt.spawn(Held, gate, mailbox_size=n + 10)
            ref.tell_nowait(Get())  # the actor takes it and waits on the gate
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            msg = INCR_ONE
            t0 = time.perf_counter()
            for _ in range(n):
                await ref.tell(msg)
            produce = time.perf_counter() - t0
            t1 = time.perf_counter()
            gate.set()
            count = await ref.ask(Get())
            consume = time.perf_counter() - t1
            assert count == n, count
        return produce / n * 1e6, consume / n * 1e6

    return trio.run(main)


def profile_tell() -> None:
    n = 100_000
    print("== tell: manual split (best of 3, µs per message) ==")
    for tracing in (False, True):
        best = min((tell_split(n, tracing=tracing) for _ in range(3)), key=sum)
        print(
            f"tracing {'on ' if tracing else 'off'}: producer {best[0]:.2f} µs/tell, "
            f"actor {best[1]:.2f} µs/msg, sum {sum(best):.2f} µs "
            f"(benchmark: {1e6 / tell_rate(n, tracing=tracing):.2f} µs/msg end to end)"
        )
    print("\n== tell, tracing off: cProfile (100,000 tells) ==")
    print(_profile(lambda: tell_rate(n, tracing=False)))
    print("== tell, tracing on: cProfile (100,000 tells) ==")
    print(_profile(lambda: tell_rate(n, tracing=True), limit=16))


# -- ask --------------------------------------------------------------------------------


def profile_ask() -> None:
    n = 30_000
    with_t = max(ask_rate(n, timeout=2.0) for _ in range(3))
    without = max(ask_rate(n, timeout=None) for _ in range(3))
    print("== ask: timeout cost (best of 3) ==")
    print(
        f"timeout=2.0: {1e6 / with_t:.2f} µs/ask; no timeout: {1e6 / without:.2f} µs/ask; "
        f"the deadline bookkeeping costs {1e6 / with_t - 1e6 / without:.2f} µs/ask"
    )
    print("\n== ask, timeout=2.0: cProfile (30,000 asks) ==")
    print(_profile(lambda: ask_rate(n, timeout=2.0)))


# -- spawn ------------------------------------------------------------------------------


class _GcClock:
    """Sums the time spent in cyclic GC collections (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.started = 0.0
        self.by_gen: Histogram[int] = Histogram()

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self.started
            self.by_gen[info["generation"]] += 1


def _spawn_and_exit(
    n: int, *, spawn_prof: cProfile.Profile | None = None, exit_prof: cProfile.Profile | None = None
) -> tuple[float, float, float]:
    """Spawn *n* idle actors (two-level tree), then cancel them all.

    Returns (µs per spawn, GC µs per spawn, teardown µs per actor).
    """
    clock = _GcClock()

    async def main() -> tuple[float, float, float]:
        with trio.CancelScope() as outer:
            async with runtime.open_runtime(tracer=None) as rt:
                gc.callbacks.append(clock)
                t0 = time.perf_counter()
                if spawn_prof is not None:
                    spawn_prof.enable()
                await spawn_tree(rt, n)
                if spawn_prof is not None:
                    spawn_prof.disable()
                spawn = time.perf_counter() - t0
                gc_spawn = clock.total
                gc.callbacks.remove(clock)
                if exit_prof is not None:
                    exit_prof.enable()
                t1 = time.perf_counter()
                outer.cancel()
        teardown = time.perf_counter() - t1
        if exit_prof is not None:
            exit_prof.disable()
        return spawn / n * 1e6, gc_spawn / n * 1e6, teardown / n * 1e6

    return trio.run(main)


def _stats(prof: cProfile.Profile, limit: int = 22) -> str:
    out = io.StringIO()
    pstats.Stats(prof, stream=out).strip_dirs().sort_stats("tottime").print_stats(limit)
    return out.getvalue()


def profile_spawn() -> None:
    from bench_runtime import flat_spawn

    n = 30_000
    print(f"== spawn: {n:,} idle actors (2-level tree) ==")
    us, gc_us, down = _spawn_and_exit(n)
    print(f"GC on : {us:.1f} µs/spawn, of which cyclic GC {gc_us:.1f}; teardown {down:.1f} µs")
    gc.disable()
    try:
        us, gc_us, down = _spawn_and_exit(n)
    finally:
        gc.enable()
    print(f"GC off: {us:.1f} µs/spawn; teardown {down:.1f} µs")
    for flat in (500, 2_000, 8_000):
        print(f"flat siblings {flat:>6,}: {flat_spawn(flat):.1f} µs/spawn")
    spawn_prof, exit_prof = cProfile.Profile(), cProfile.Profile()
    gc.disable()  # keep collections out of the per-function times
    try:
        _spawn_and_exit(10_000, spawn_prof=spawn_prof, exit_prof=exit_prof)
    finally:
        gc.enable()
    print("\n== spawn: cProfile (10,000 actors, 2-level tree, GC off) ==")
    print(_stats(spawn_prof))
    print("== teardown by cancellation: cProfile (10,000 actors, GC off) ==")
    print(_stats(exit_prof, 14))


# -- memory -----------------------------------------------------------------------------


def profile_memory() -> None:
    n = 20_000

    async def main() -> None:
        with trio.CancelScope() as outer:
            async with runtime.open_runtime(tracer=None) as rt:
                gc.collect()
                types_before = Histogram(type(o).__qualname__ for o in gc.get_objects())
                tracemalloc.start(12)
                before = tracemalloc.take_snapshot()
                await spawn_tree(rt, n)
                gc.collect()
                after = tracemalloc.take_snapshot()
                tracemalloc.stop()
                types_after = Histogram(type(o).__qualname__ for o in gc.get_objects())
                by_line = after.compare_to(before, "lineno")
                total = sum(d.size_diff for d in by_line)
                print(f"== memory: {n:,} idle actors: {total / n:,.0f} B/actor (tracemalloc) ==")
                print("top allocation sites (bytes per actor, blocks per actor):")
                for d in by_line[:30]:
                    frame = d.traceback[0]
                    where = f"{_short(frame.filename)}:{frame.lineno}"
                    line = _source(frame.filename, frame.lineno)
                    print(f"  {d.size_diff / n:7.0f} B {d.count_diff / n:5.2f}  {where:40} {line}")
                by_tb = after.compare_to(before, "traceback")
                print("\ntop tracebacks (innermost runtime/trio frames):")
                for d in by_tb[:12]:
                    frames = [
                        f"{_short(f.filename)}:{f.lineno}"
                        for f in reversed(d.traceback)
                        if "site-packages/trio" in f.filename or "/runtime/" in f.filename
                    ][:4]
                    print(f"  {d.size_diff / n:7.0f} B  {' <- '.join(frames)}")
                grown = types_after - types_before
                tracked = sum(grown.values())
                print(f"\nGC-tracked objects per actor: {tracked / n:.1f}")
                for name, count in grown.most_common(20):
                    print(f"  {count / n:5.2f}  {name}")
                outer.cancel()

    trio.run(main)


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "/lib/python3"):
        i = filename.find(marker)
        if i >= 0:
            return filename[i + len(marker) :]
    return filename


def _source(filename: str, lineno: int) -> str:
    import linecache

    return linecache.getline(filename, lineno).strip()[:60]


SECTIONS: dict[str, Callable[[], None]] = {
    "tell": profile_tell,
    "ask": profile_ask,
    "spawn": profile_spawn,
    "memory": profile_memory,
}


def main() -> None:
    wanted = sys.argv[1:] or list(SECTIONS)
    for name in wanted:
        SECTIONS[name]()
        print()


if __name__ == "__main__":
    main()
