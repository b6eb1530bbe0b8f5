"""Where a traced tell's time goes: the tracer's work removed piece by piece.

Usage: ``python bench/bench_tracing_floor.py [--tells 200000] [--rounds 5]``

The same tell benchmark as ``bench_runtime.tell_rate`` (one task tells ``Incr(1)`` to one
``Counter``, then asks for the count) with stand-in tracers that keep the runtime's traced
path exactly as it is but do less per tell. A traced tell is a ``send`` (one tracer call
from ``tell``: a clock read and a ``TraceEvent``) and, on the actor's side, its slot in the
loop's ``HandleRun`` (``traces._runs``: ``begin``/``end``, compiled where built):

* ``nothing``: ``send`` only advances ``seq``, no runs, ``begin``/``handle`` do nothing - the
  traced structure alone (the envelope, the sender lookup, three calls);
* ``send_seq``: ``send`` only advances ``seq`` - the floor of the traced structure (the
  envelope, the sender lookup, one call) plus the runs;
* ``send_no_clock``: ``send`` builds and appends its record with ``t = 0``;
* ``per_event``: the real tracer into a ring that declines runs (``begin``/``handle``
  per tell, a ``TraceEvent`` for each: how tracing into memory worked before runs);
* ``memory``: the real ``Tracer`` into a ``MemorySink``: unlike the stand-ins (whose
  ``send`` records each send on its own), it records this stream of tells into
  ``SendRun`` records, appended by ``tell`` itself - so it can beat ``send_no_clock``.

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

__all__ = ["STAND_INS", "NothingTracer", "main", "rate_with"]


class SendSeqTracer(traces.Tracer):
    """``send`` only advances ``seq`` (after writing what is pending, as it must)."""

    def send(
        self, actor: str, sender: str | None, cause: int | None, ask: bool, msg: Any,
        system: bool = False,
    ) -> int:  # fmt: skip
        if self.pending is not None:
            self._flush_pending()
        self._seq = seq = self._seq + 1
        return seq


class SendNoClockTracer(traces.Tracer):
    """``send`` builds its record with ``t = 0``: no clock read."""

    def send(
        self, actor: str, sender: str | None, cause: int | None, ask: bool, msg: Any,
        system: bool = False,
    ) -> int:  # fmt: skip
        if self.pending is not None:
            self._flush_pending()
        self._seq = seq = self._seq + 1
        self._write(TraceEvent(seq, 0.0, "send", actor, sender, seq, cause, None,
                               type(msg).__name__, NO_PAYLOAD, None))  # fmt: skip
        return seq


class NothingTracer(SendSeqTracer):
    """Records nothing: ``send`` only advances ``seq``, no runs, ``begin``/``handle`` do
    nothing - the traced structure alone (the envelope, the sender lookup, three calls)."""

    def __init__(self, *sinks: traces.Sink) -> None:
        super().__init__(*sinks)
        self.runs = False

    def begin(self, actor: str, msg_id: int, corr: int | None, msg: Any) -> None:
        return None

    def handle(
        self, actor: str, msg_id: int, corr: int | None, exc: BaseException | None,
        cause: int | None = None,
    ) -> None:  # fmt: skip
        return None


class PerEventRing(traces.MemorySink):
    """A ``MemorySink`` that declines runs: the loop records each tell through
    ``Tracer.begin``/``handle``."""

    def run_writer(self, held: Callable[[], object]) -> None:
        return None


#: Stand-in tracers by name (``None``: untraced).
STAND_INS: dict[str, Callable[[], traces.Tracer | None]] = {
    "off": lambda: None,
    "nothing": lambda: NothingTracer(traces.MemorySink()),
    "send_seq": lambda: SendSeqTracer(traces.MemorySink()),
    "send_no_clock": lambda: SendNoClockTracer(traces.MemorySink()),
    "per_event": lambda: traces.Tracer(PerEventRing()),
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
