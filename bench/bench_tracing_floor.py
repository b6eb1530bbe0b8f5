"""Where a traced tell's time goes: the tracer's work removed piece by piece.

Usage: ``python bench/bench_tracing_floor.py [--tells 200000] [--rounds 5]``

The same tell benchmark as ``bench_runtime.tell_rate`` (one task tells ``Incr(1)`` to one
``Counter``, then asks for the count) with stand-in tracers that keep the runtime's traced
path exactly as it is but do less per event:

* ``null``: every tracer call only advances ``seq`` - the floor of the runtime's traced
  structure and the three calls per tell (``send``, ``begin``, ``handle``);
* ``one_clock``: ``null`` plus one clock read per tell (on ``send``);
* ``three_clocks``: ``null`` plus a clock read per call, as the real tracer does;
* ``builds``: the real tracer's records (two ``TraceEvent`` built and appended to the
  ring, the pending receive), but ``t = 0`` - no clock read;
* ``memory``: the real ``Tracer`` into a ``MemorySink``.

Prints the median over interleaved rounds of each rate divided by the untraced rate of the
same round: what tracing could at best reach with each piece made free.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import trio
from _harness import INCR_ONE, Get, interleaved_rounds
from bench_runtime import Counter

from trioxide import runtime, traces
from trioxide.traces import NO_PAYLOAD, TraceEvent

__all__ = ["STAND_INS", "main", "rate_with"]


class NullTracer(traces.Tracer):
    """Each message event only advances ``seq``."""

    def send(
        self, actor: str, sender: str | None, cause: int | None, ask: bool, msg: Any,
        system: bool = False,
    ) -> int:  # fmt: skip
        self._seq = seq = self._seq + 1
        return seq

    def begin(self, actor: str, msg_id: int, corr: int | None, msg: Any) -> None:
        self._seq += 1

    def handle(self, actor: str, msg_id: int, corr: int | None, exc: BaseException | None) -> None:
        self._seq += 1


class OneClockTracer(NullTracer):
    """``NullTracer`` plus one clock read per tell."""

    def send(
        self, actor: str, sender: str | None, cause: int | None, ask: bool, msg: Any,
        system: bool = False,
    ) -> int:  # fmt: skip
        self._seq = seq = self._seq + 1
        self._clock() + self._t_offset
        return seq


class ThreeClocksTracer(OneClockTracer):
    """``NullTracer`` plus a clock read per call."""

    def begin(self, actor: str, msg_id: int, corr: int | None, msg: Any) -> None:
        self._seq += 1
        self._clock() + self._t_offset

    def handle(self, actor: str, msg_id: int, corr: int | None, exc: BaseException | None) -> None:
        self._seq += 1
        self._clock() + self._t_offset


class BuildsTracer(traces.Tracer):
    """The real records, with ``t = 0``: no clock read."""

    def send(
        self, actor: str, sender: str | None, cause: int | None, ask: bool, msg: Any,
        system: bool = False,
    ) -> int:  # fmt: skip
        self._seq = seq = self._seq + 1
        self._write(TraceEvent(seq, 0.0, "send", actor, sender, seq, cause, None,
                               type(msg).__name__, NO_PAYLOAD, None))  # fmt: skip
        return seq

    def begin(self, actor: str, msg_id: int, corr: int | None, msg: Any) -> None:
        self._seq = seq = self._seq + 1
        self._pending = (actor, msg_id, corr, type(msg).__name__, 0.0, seq)

    def handle(self, actor: str, msg_id: int, corr: int | None, exc: BaseException | None) -> None:
        pending, self._pending = self._pending, None
        msg_type, t0 = (pending[3], pending[4]) if pending is not None else (None, None)
        self._seq = seq = self._seq + 1
        self._write(TraceEvent(seq, 0.0, "handle", actor, None, msg_id, None, corr, msg_type,
                               NO_PAYLOAD, None, "ok", t0))  # fmt: skip


#: Stand-in tracers by name (``None``: untraced).
STAND_INS: dict[str, Callable[[], traces.Tracer | None]] = {
    "off": lambda: None,
    "null": lambda: NullTracer(traces.MemorySink()),
    "one_clock": lambda: OneClockTracer(traces.MemorySink()),
    "three_clocks": lambda: ThreeClocksTracer(traces.MemorySink()),
    "builds": lambda: BuildsTracer(traces.MemorySink()),
    "memory": lambda: traces.Tracer(traces.MemorySink()),
}


def rate_with(make: Callable[[], traces.Tracer | None], n: int) -> float:
    """Tells per second with the tracer *make* returns."""

    async def main() -> float:
        async with runtime.open_runtime(tracer=make()) as rt:
            ref = await rt.spawn(Counter, 0, name="counter", mailbox_size=1024)
            t0 = time.perf_counter()
            for _ in range(n):
                await ref.tell(INCR_ONE)
            count = await ref.ask(Get(), timeout=30.0)
            elapsed = time.perf_counter() - t0
            assert count == n, count
            await ref.stop()
        return n / elapsed

    return trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tells", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds = interleaved_rounds(
        {k: (lambda make=make: rate_with(make, args.tells)) for k, make in STAND_INS.items()},
        args.rounds,
    )
    print(f"traced tell / untraced tell, median of {args.rounds} interleaved rounds")
    for key in STAND_INS:
        ratio = statistics.median(r[key] / r["off"] for r in rounds)
        tells = statistics.median(r[key] for r in rounds)
        print(f"  {key:<14} {tells:>12,.0f} tells/s  {ratio:.2f}x")


if __name__ == "__main__":
    main()
