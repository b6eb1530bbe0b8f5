"""Ask latency under load (issue 12, item 6): what an unrelated ask waits while the
process is busy.

The load: ``--actors`` (1,000) actors, each fed by its own producer task that tells as
fast as its mailbox lets it (a stream of ``Incr(1)``). The probe: one task asks an idle
``Counter`` (not one of the loaded actors, so its mailbox is empty) ``--asks`` times in a
row and records each round trip (``time.perf_counter``). The same shape in raw Trio: a
memory channel per consumer (buffer 1,024, like the default mailbox), a producer per
channel, and a server answering requests that carry their own reply channel.

An ask to an idle actor waits about two scheduler turns (the actor wakes in one, the
asker in the next), so its latency is what the other tasks run per turn: each producer
runs up to the tell budget before it yields, each actor up to ``HANDLER_BATCH`` messages.
The throughput of the load in the same window is printed too: that is the trade.

Usage: ``python bench/bench_latency.py [--actors N] [--asks N] [--rounds N] [--json F]``.
Prints p50/p99 (ms) per round and the median over the interleaved rounds.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from dataclasses import asdict, dataclass

import trio
from _harness import INCR_ONE, Get, Incr

from trioxide import runtime

__all__ = ["LatencyResult", "raw_trio_latency", "trioxide_latency"]

#: Seconds the load runs before the first probe (every producer has filled its mailbox).
WARMUP = 0.3


@dataclass(frozen=True)
class LatencyResult:
    """One run: ask round trips under load, and the load's own throughput meanwhile."""

    p50_ms: float
    p99_ms: float
    max_ms: float
    load_msgs_per_s: float


def _result(lat: list[float], handled: int, elapsed: float) -> LatencyResult:
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return LatencyResult(
        p50_ms=statistics.median(lat) * 1e3,
        p99_ms=q[98] * 1e3,
        max_ms=lat[-1] * 1e3,
        load_msgs_per_s=handled / elapsed,
    )


class Counter(runtime.Actor):
    """Counts ``Incr``; answers ``Get`` with the count."""

    def __init__(self) -> None:
        self.n = 0

    async def handle(self, msg: Incr | Get) -> int | None:
        if type(msg) is Incr:
            self.n += msg.by
            return None
        return self.n


def trioxide_latency(actors: int, asks: int) -> LatencyResult:
    """Ask round trips to an idle actor while *actors* actors each receive a tell stream."""

    async def main() -> LatencyResult:
        async with runtime.open_runtime(tracer=None) as rt:
            loaded = [await rt.spawn(Counter, name=f"c{i}") for i in range(actors)]
            probe = await rt.spawn(Counter, name="probe")

            async def produce(ref: runtime.ActorRef[Counter]) -> None:
                tell = ref.tell
                while True:
                    await tell(INCR_ONE)

            lat: list[float] = []
            async with trio.open_nursery() as nursery:
                for ref in loaded:
                    nursery.start_soon(produce, ref)
                await trio.sleep(WARMUP)
                before = sum(ref.instance.n for ref in loaded)  # type: ignore[union-attr]
                get = Get()
                t_start = time.perf_counter()
                for _ in range(asks):
                    t0 = time.perf_counter()
                    await probe.ask(get)
                    lat.append(time.perf_counter() - t0)
                elapsed = time.perf_counter() - t_start
                handled = sum(ref.instance.n for ref in loaded) - before  # type: ignore[union-attr]
                nursery.cancel_scope.cancel()
        return _result(lat, handled, elapsed)

    return trio.run(main)


def raw_trio_latency(actors: int, asks: int) -> LatencyResult:
    """The same load and probe with raw Trio memory channels."""

    async def main() -> LatencyResult:
        counts = [0] * actors

        async def consume(i: int, recv: trio.MemoryReceiveChannel[Incr]) -> None:
            async for msg in recv:
                counts[i] += msg.by

        async def produce(send: trio.MemorySendChannel[Incr]) -> None:
            while True:
                await send.send(INCR_ONE)

        req_send, req_recv = trio.open_memory_channel[tuple[Get, trio.MemorySendChannel[int]]](
            1024
        )

        async def server() -> None:
            async for _msg, reply in req_recv:
                await reply.send(0)

        lat: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            for i in range(actors):
                send, recv = trio.open_memory_channel[Incr](1024)
                nursery.start_soon(consume, i, recv)
                nursery.start_soon(produce, send)
            await trio.sleep(WARMUP)
            before = sum(counts)
            get = Get()
            t_start = time.perf_counter()
            for _ in range(asks):
                t0 = time.perf_counter()
                reply_send, reply_recv = trio.open_memory_channel[int](1)
                await req_send.send((get, reply_send))
                await reply_recv.receive()
                lat.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - t_start
            handled = sum(counts) - before
            nursery.cancel_scope.cancel()
        return _result(lat, handled, elapsed)

    return trio.run(main)


def run_latency(actors: int, asks: int, rounds: int) -> dict[str, LatencyResult]:
    """Interleaved rounds (raw Trio, then trioxide); the median of each field per side."""
    runs: dict[str, list[LatencyResult]] = {"raw_trio": [], "trioxide": []}
    for r in range(rounds):
        for key, fn in (("raw_trio", raw_trio_latency), ("trioxide", trioxide_latency)):
            gc.collect()
            res = fn(actors, asks)
            runs[key].append(res)
            print(
                f"round {r + 1} {key:9}: p50 {res.p50_ms:7.1f} ms  p99 {res.p99_ms:7.1f} ms  "
                f"max {res.max_ms:7.1f} ms  load {res.load_msgs_per_s:>10,.0f} msg/s",
                flush=True,
            )
    return {
        key: LatencyResult(
            p50_ms=statistics.median(x.p50_ms for x in xs),
            p99_ms=statistics.median(x.p99_ms for x in xs),
            max_ms=statistics.median(x.max_ms for x in xs),
            load_msgs_per_s=statistics.median(x.load_msgs_per_s for x in xs),
        )
        for key, xs in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=1000)
    parser.add_argument("--asks", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    med = run_latency(args.actors, args.asks, args.rounds)
    raw, tx = med["raw_trio"], med["trioxide"]
    print(f"\nask latency under load ({args.actors} loaded actors, median of {args.rounds} rounds)")
    print("| side | p50 ms | p99 ms | load msg/s |\n|---|---:|---:|---:|")
    for key, res in med.items():
        print(f"| {key} | {res.p50_ms:.1f} | {res.p99_ms:.1f} | {res.load_msgs_per_s:,.0f} |")
    print(f"p50 trioxide / raw Trio: {tx.p50_ms / raw.p50_ms:.2f}x; "
          f"load throughput trioxide / raw Trio: {tx.load_msgs_per_s / raw.load_msgs_per_s:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: asdict(v) for k, v in med.items()}, f, indent=2)


if __name__ == "__main__":
    main()
