"""Shared bits of the benchmark scripts: the messages, sizes and the best-of-N runner.

Every benchmark function returns one number (a rate in operations per second, or a
per-actor cost) measured with ``time.perf_counter`` around the measured loop only.
``best_of`` repeats a measurement and keeps the best result, which filters out the
noise of a shared machine better than a mean does.
"""

from __future__ import annotations

import gc
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec

__all__ = [
    "INCR_ONE",
    "REPEATS",
    "Get",
    "Incr",
    "Sizes",
    "best_of",
    "callgrind_instructions",
    "interleaved_rounds",
    "median_of_rounds",
    "median_ratio",
    "timed",
]

#: How often each measurement is repeated (the best run is kept).
REPEATS: Final = 3


class Incr(msgspec.Struct, frozen=True):
    """The tell payload: add ``by`` to a counter."""

    by: int


class Get(msgspec.Struct, frozen=True):
    """The ask payload: return the counter."""


#: One pre-built message instance shared by every tell benchmark (no allocation per send
#: in any of them, so the comparison measures the transport only).
INCR_ONE: Final = Incr(1)


@dataclass(frozen=True)
class Sizes:
    """How many operations each benchmark performs."""

    tell: int
    ask: int
    pykka_tell: int
    pykka_ask: int
    idle_actors: int

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            tell=200_000, ask=50_000, pykka_tell=50_000, pykka_ask=10_000, idle_actors=100_000
        )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(tell=20_000, ask=5_000, pykka_tell=5_000, pykka_ask=1_000, idle_actors=5_000)


def timed(fn: Callable[[], object]) -> float:
    """Run *fn* once and return the wall time it took, in seconds."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_of(measure: Callable[[], float], repeats: int = REPEATS, *, higher: bool = True) -> float:
    """Run *measure* ``repeats`` times (after a full GC each) and return the best value.

    ``higher=True`` for rates (ops/s), ``False`` for costs (µs, bytes).
    """
    results: list[float] = []
    for _ in range(repeats):
        gc.collect()
        results.append(measure())
    return max(results) if higher else min(results)


def interleaved_rounds(
    measures: dict[str, Callable[[], float]], rounds: int = REPEATS
) -> list[dict[str, float]]:
    """Run every measurement once per round, *rounds* rounds; each round's results.

    Interleaving (rather than three runs of A, then three of B) exposes a measurement and
    the baseline it is compared with to the same machine load, so the ratio of two
    measurements taken in the same round is meaningful on a shared machine.
    """
    out: list[dict[str, float]] = []
    for _ in range(rounds):
        got: dict[str, float] = {}
        for key, measure in measures.items():
            gc.collect()
            got[key] = measure()
        out.append(got)
    return out


def median_of_rounds(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each measurement's median over *rounds*."""
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def median_ratio(rounds: list[dict[str, float]], a: str, b: str) -> float:
    """The median over *rounds* of ``a / b`` taken within each round."""
    return statistics.median(r[a] / r[b] for r in rounds)


def median_added_ns(rounds: list[dict[str, float]], a: str, b: str) -> float:
    """The median over *rounds* of what rate *a* adds per operation over rate *b*, in
    nanoseconds (``1e9/a - 1e9/b``, taken within each round)."""
    return statistics.median(1e9 / r[a] - 1e9 / r[b] for r in rounds)


def callgrind_instructions(program: str, *args: str, pythonpath: str) -> int:
    """Instructions executed by ``python -c program *args`` (with ``PYTHONPATH`` set to
    *pythonpath*), counted by valgrind's callgrind: repeatable to ~0.1 %, unlike wall
    time. Exits with callgrind's output if it printed no total."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg",
             sys.executable, "-c", program, *args],
            env={**os.environ, "PYTHONPATH": pythonpath},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    m = re.search(r"Collected : (\d+)", out.stderr)
    if m is None:
        raise SystemExit(f"no callgrind total in:\n{out.stderr[-2000:]}")
    return int(m.group(1))
