"""Running scenarios: one (``run_scenario``), a batch, or many in worker processes."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .checker import Failure, check
from .records import Observation
from .scenario import Scenario, generate
from .world import run_world

MODES = (True, False)  # traced, untraced


@dataclass(frozen=True)
class RunResult:
    seed: int
    traced: bool
    failures: list[str]


def run_detailed(
    seed: int, traced: bool, trace_out: Path | None = None
) -> tuple[Scenario, Observation, list[Failure]]:
    """Generate, run and check one scenario; everything for a human to look at."""
    scenario = generate(seed)
    obs = run_world(scenario, traced, trace_out)
    return scenario, obs, check(scenario, obs)


def run_scenario(seed: int, traced: bool) -> list[str]:
    """The failures of scenario *seed* in one mode (empty: every guarantee held).

    Deterministic per ``(seed, traced)``: the scenario, the schedule (seeded) and the
    clock (virtual) are functions of the seed."""
    _, _, failures = run_detailed(seed, traced)
    return [f.render(seed, traced) for f in failures]


def run_seed(seed: int) -> list[RunResult]:
    """Both modes of one seed."""
    return [RunResult(seed, traced, run_scenario(seed, traced)) for traced in MODES]


def run_batch(seeds: Iterable[int]) -> list[RunResult]:
    return [r for seed in seeds for r in run_seed(seed)]


def replay_command(seed: int, traced: bool) -> str:
    mode = "--traced" if traced else "--untraced"
    return f"python -m tests.runtime.fuzz --replay {seed} {mode}"


def _context() -> multiprocessing.context.BaseContext:
    # fork is cheap and inherits the imported modules; spawn elsewhere.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method)


def run_parallel(
    seeds: list[int],
    workers: int,
    chunk: int = 25,
    progress: Callable[[list[RunResult]], None] | None = None,
) -> Iterator[RunResult]:
    """Run *seeds* (both modes each) in *workers* processes; yields results as chunks end.

    Chunks are handed out in order, so the work is spread evenly."""
    chunks = [seeds[i : i + chunk] for i in range(0, len(seeds), chunk)]
    if workers <= 1:
        for c in chunks:
            results = run_batch(c)
            if progress is not None:
                progress(results)
            yield from results
        return
    with _context().Pool(workers) as pool:
        for results in pool.imap_unordered(run_batch, chunks):
            if progress is not None:
                progress(results)
            yield from results


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
