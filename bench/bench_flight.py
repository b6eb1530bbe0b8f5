"""The cost of leaving the flight recorder on: tell throughput untraced, traced into a
``traces.MemorySink`` (the tracer's direct path; ``memory``: the default 1,000,000-record
ring, ``ring``: one as long as the recorder's), and traced into a
``traces.FlightRecorder`` (``flight``: ``open_runtime(flight_recorder=...)``, default
16 MiB, no payloads).

Same pattern as ``bench_runtime.tell_rate``: one plain task tells ``Incr(1)`` *n* times to
one ``Counter`` actor, then asks it for the count; the measurements are interleaved round
by round (``interleaved_rounds``; medians over the rounds) so that they see the same
machine load. Prints the rates and the ratios (untraced / traced: how many times slower
tracing makes a tell).
Wall-clock rates on a shared VM drift by +-20%; ``--instr`` also counts instructions per
tell with valgrind's callgrind (the difference of runs of N and 2N tells, as
``bench/instr.py`` does), which repeats to ~0.1%.

    python bench/bench_flight.py [--tells 200000] [--rounds 5] [--instr]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import trio
from _harness import (
    INCR_ONE,
    Get,
    callgrind_instructions,
    interleaved_rounds,
    median_of_rounds,
    median_ratio,
)
from bench_runtime import Counter

from trioxide import runtime, traces

__all__ = ["flight_cost", "instructions_per_tell", "tell_rate_into"]

KINDS = ("off", "memory", "ring", "flight")
ROOT = Path(__file__).resolve().parents[1]


def tell_rate_into(n: int, into: str) -> float:
    """Messages/s: *n* tells, then one ask; *into* is ``off``, ``memory``, ``ring`` or
    ``flight``."""

    async def main() -> float:
        tracer = None
        if into == "memory":
            tracer = traces.Tracer(traces.MemorySink())
        elif into == "ring":
            tracer = traces.Tracer(traces.MemorySink(maxlen=traces.FlightRecorder().maxlen))
        recorder = traces.FlightRecorder() if into == "flight" else None
        async with runtime.open_runtime(tracer=tracer, flight_recorder=recorder) as rt:
            ref = await rt.spawn(Counter, 0, name="counter", mailbox_size=1024)
            tell = ref.tell
            msg = INCR_ONE
            t0 = time.perf_counter()
            for _ in range(n):
                await tell(msg)
            count = await ref.ask(Get(), timeout=30.0)
            elapsed = time.perf_counter() - t0
            assert count == n, count
            await ref.stop()
        if recorder is not None:
            assert recorder.nbytes <= recorder.max_total_bytes
        return n / elapsed

    return trio.run(main)


def flight_cost(n: int = 200_000, rounds: int = 5) -> dict[str, float]:
    """Median rates of ``off``, ``memory``, ``ring`` and ``flight`` over *rounds*
    interleaved rounds, and the medians of the per-round ratios ``off/memory``,
    ``off/ring``, ``off/flight`` and ``ring/flight`` (the recorder against a direct-path
    ring of its length)."""
    per_round = interleaved_rounds(
        {into: (lambda into=into: tell_rate_into(n, into)) for into in KINDS}, rounds
    )
    return {
        **median_of_rounds(per_round),
        "off/memory": median_ratio(per_round, "off", "memory"),
        "off/ring": median_ratio(per_round, "off", "ring"),
        "off/flight": median_ratio(per_round, "off", "flight"),
        "ring/flight": median_ratio(per_round, "ring", "flight"),
    }


_PROGRAM = r"""
import sys
sys.path.insert(0, sys.argv[3])
from bench_flight import tell_rate_into
tell_rate_into(int(sys.argv[1]), sys.argv[2])
"""


def _callgrind_total(into: str, n: int) -> int:
    return callgrind_instructions(
        _PROGRAM, str(n), into, str(ROOT / "bench"), pythonpath=str(ROOT / "src")
    )


def instructions_per_tell(n: int = 10_000) -> dict[str, float]:
    """Instructions per tell for each of ``KINDS`` (runs of *n* and 2*n* tells, counted
    by callgrind; their difference divided by *n*), and the ratios to ``off``."""
    per = {into: (_callgrind_total(into, 2 * n) - _callgrind_total(into, n)) / n for into in KINDS}
    return {**per, **{f"{into}/off": per[into] / per["off"] for into in KINDS[1:]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tells", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instr", action="store_true", help="also count instructions")
    args = parser.parse_args()
    r = flight_cost(args.tells, args.rounds)
    print(f"tells/s untraced                       {r['off']:>12,.0f}")
    print(f"tells/s into MemorySink()               {r['memory']:>12,.0f}")
    print(f"tells/s into a MemorySink as long      {r['ring']:>12,.0f}")
    print(f"tells/s into FlightRecorder()          {r['flight']:>12,.0f}")
    print(f"untraced / MemorySink()                 {r['off/memory']:>12.2f}x")
    print(f"untraced / MemorySink as long           {r['off/ring']:>12.2f}x")
    print(f"untraced / FlightRecorder()             {r['off/flight']:>12.2f}x")
    print(f"MemorySink as long / FlightRecorder()   {r['ring/flight']:>12.2f}x")
    if args.instr:
        i = instructions_per_tell()
        for into in KINDS:
            ratio = "" if into == "off" else f"  ({i[f'{into}/off']:.2f}x untraced)"
            print(f"instructions per tell, {into:<7} {i[into]:>10,.0f}{ratio}")


if __name__ == "__main__":
    main()
