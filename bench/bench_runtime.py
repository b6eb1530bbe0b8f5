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
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec
import trio
from _harness import INCR_ONE, Get, Incr, Sizes, best_of

from trioxide import runtime, traces

__all__ = [
    "Counter",
    "IdleResult",
    "ask_rate",
    "flat_spawn",
    "idle_actors",
    "idle_actors_subprocess",
    "rate_measurements",
    "run_runtime",
    "run_spawn",
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


def _jsonl_tracer(path: str) -> traces.Tracer:
    # What an agent process writing its trace to disk runs: the file sink, payloads on.
    return traces.Tracer(traces.JsonlFileSink(path, traces.TraceHeader()), payloads=True)


def tell_rate(n: int, *, tracing: bool | str) -> float:
    """Messages/s: *n* tells from a plain task, then one ask to wait for them all.
    *tracing*: ``False``, ``True`` (a ``MemorySink``, no payloads) or ``"jsonl"`` (a
    JSONL file in a temporary directory, payloads on; the time includes handing the last
    records to the writer thread, not waiting for the disk)."""
    with tempfile.TemporaryDirectory() as tmp:
        return _tell_rate(n, tracing, os.path.join(tmp, "bench.jsonl"))


def _tell_rate(n: int, tracing: bool | str, path: str) -> float:
    async def main() -> float:
        tracer = None
        if tracing == "jsonl":
            tracer = _jsonl_tracer(path)
        elif tracing:
            tracer = _tracer()
        async with runtime.open_runtime(tracer=tracer) as rt:
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
        if tracer is not None:
            tracer.close()  # outside the measured loop: joins a file sink's writer
        return n / elapsed

    return trio.run(main)


class Relay(runtime.Actor):
    """Tells each message it handles on to *target*: a handler that traces something
    (its send) every time, so the actor loop's runs of handled tells break each time."""

    def __init__(self, target: runtime.ActorRef[Counter]) -> None:
        self.target = target

    async def handle(self, msg: Incr) -> None:
        await self.target.tell(msg)


def relay_rate(n: int, *, tracing: bool) -> float:
    """Messages/s through a relay: *n* tells from a plain task to a ``Relay``, which tells
    each on to a ``Counter``; then asks the counter until all arrived. *tracing*: a
    ``MemorySink``, no payloads."""

    async def main() -> float:
        async with runtime.open_runtime(tracer=_tracer() if tracing else None) as rt:
            counter = await rt.spawn(Counter, 0, name="counter", mailbox_size=1024)
            relay = await rt.spawn(Relay, counter, name="relay", mailbox_size=1024)
            msg, get = INCR_ONE, Get()
            t0 = time.perf_counter()
            for _ in range(n):
                await relay.tell(msg)
            while await counter.ask(get, timeout=30.0) != n:
                await trio.lowlevel.checkpoint()
            elapsed = time.perf_counter() - t0
            await relay.stop()
            await counter.stop()
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
    """The cost of *count* idle actors alive at once."""

    count: int
    spawn_us: float  # wall time per spawn, over the untraced actors
    bytes_per_actor: float  # tracemalloc growth per actor, over the traced actors
    traced: int  # how many of the *count* actors were spawned under tracemalloc


async def _spawn_tree(rt: runtime.Runtime, n: int, prefix: str = "g") -> None:
    """Spawn *n* actors: ``isqrt(n)`` groups, each with its share of idle children."""
    groups = max(1, math.isqrt(n))
    left = n - groups
    for i in range(groups):
        share = left // (groups - i)
        left -= share
        group = await rt.spawn(Group, name=f"{prefix}{i}")
        if share:
            await group.ask(SpawnIdle(share))


def idle_actors(n: int, *, traced_share: float = 0.1, exit_process: bool = False) -> IdleResult:
    """Spawn *n* idle actors and keep them all alive; measure spawn time and memory.

    tracemalloc slows spawning down about threefold, so the first ``1 - traced_share``
    of the actors are spawned untraced and timed, the rest under tracemalloc (snapshot
    before and after) for the bytes per actor, with the first ones still alive. With
    ``exit_process`` the process ends right after measuring (``os._exit``): tearing
    100,000 actors down takes another 15-30 s and is not what is measured.
    """
    traced = max(1, round(n * traced_share))
    untraced = n - traced

    async def main() -> IdleResult:
        with trio.CancelScope() as outer:
            async with runtime.open_runtime(tracer=None) as rt:
                gc.collect()
                t0 = time.perf_counter()
                await _spawn_tree(rt, untraced, "a")
                spawn_s = time.perf_counter() - t0
                gc.collect()
                tracemalloc.start()
                before = tracemalloc.take_snapshot()
                await _spawn_tree(rt, traced, "b")
                gc.collect()
                after = tracemalloc.take_snapshot()
                tracemalloc.stop()
                grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
                result = IdleResult(n, spawn_s / max(1, untraced) * 1e6, grown / traced, traced)
                if exit_process:
                    print(json.dumps(asdict(result)), flush=True)
                    os._exit(0)
                outer.cancel()
        return result

    return trio.run(main)


def idle_actors_subprocess(n: int) -> IdleResult:
    """``idle_actors(n)`` in a fresh interpreter that exits without the teardown."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--idle-worker", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    return IdleResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


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


def rate_measurements(sizes: Sizes) -> dict[str, Callable[[], float]]:
    """The throughput measurements (operations per second), by result key."""
    return {
        "tell_off": lambda: tell_rate(sizes.tell, tracing=False),
        "tell_on": lambda: tell_rate(sizes.tell, tracing=True),
        "tell_jsonl": lambda: tell_rate(sizes.tell, tracing="jsonl"),
        "relay_off": lambda: relay_rate(sizes.tell // 2, tracing=False),
        "relay_on": lambda: relay_rate(sizes.tell // 2, tracing=True),
        "ask_timeout": lambda: ask_rate(sizes.ask, timeout=2.0),
        "ask_plain": lambda: ask_rate(sizes.ask, timeout=None),
    }


def run_spawn(sizes: Sizes) -> dict[str, float]:
    """Idle actors (one run: each takes tens of seconds) and flat spawning (best of 3)."""
    idle = idle_actors_subprocess(sizes.idle_actors)
    return {
        "idle_count": float(idle.count),
        "idle_spawn_us": idle.spawn_us,
        "idle_bytes": idle.bytes_per_actor,
        "flat_spawn_1k_us": best_of(lambda: flat_spawn(1_000), higher=False),
        "flat_spawn_4k_us": flat_spawn(4_000),
    }


def run_runtime(sizes: Sizes) -> dict[str, float]:
    """Every trioxide measurement; rates are the best of ``REPEATS`` runs."""
    out = {key: best_of(fn) for key, fn in rate_measurements(sizes).items()}
    out.update(run_spawn(sizes))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--idle-worker", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.idle_worker:
        idle_actors(args.idle_worker, exit_process=True)
        return
    sizes = Sizes.quick() if args.quick else Sizes.full()
    for name, value in run_runtime(sizes).items():
        print(f"{name:18} {value:14,.1f}")


if __name__ == "__main__":
    main()
