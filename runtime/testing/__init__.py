"""Deterministic testing of trioxide actors.

* virtual time: every helper runs under ``trio.testing.MockClock(autojump_threshold=0)``;
* seeded scheduling: ``run_seeded``/``seeded_scheduler`` (or ``open_runtime(seed=N)``)
  make an interleaving - and so the trace - a pure function of the seed;
* ``explore``/``replay``: hunt races across many seeds with invariants checked after
  every handled message, then reproduce the first violation exactly;
* ``TestProbe``: an actor to assert on what others send it;
* the pytest plugin (``trioxide.runtime.testing._plugin``, auto-loaded): fixtures
  ``actor_runtime``, ``probe``, ``trace_sink``, ``trioxide_seed`` (``pytest --fixtures``
  describes them) and the options ``--trioxide-seed``, ``--trace-dir`` and
  ``--trace-keep=failed|all`` (whose traces ``--trace-dir`` keeps);
* ``SeededRun``: what a scenario and its invariants see in one explorer run (its
  docstring has a complete ``explore``/``replay`` example);
* ``seeds()``: a Hypothesis strategy for seeds, to let Hypothesis shrink a command list
  together with the schedule (see ``tests/test_shrinking.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._explore import (
    Exploration,
    ExploreResult,
    Invariant,
    Perturb,
    RunResult,
    SeededRun,
    Violation,
    explore,
    replay,
    write_trace,
)
from ._probe import TestProbe, spawn_probe
from ._seeded import PctScheduler, run_seeded, seeded_scheduler

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "Exploration",
    "ExploreResult",
    "Invariant",
    "PctScheduler",
    "Perturb",
    "RunResult",
    "SeededRun",
    "TestProbe",
    "Violation",
    "explore",
    "replay",
    "run_seeded",
    "seeded_scheduler",
    "seeds",
    "spawn_probe",
    "write_trace",
]


def seeds() -> SearchStrategy[int]:
    """A Hypothesis strategy for scheduler seeds (shrinks towards 0)."""
    from hypothesis import strategies as st

    return st.integers(min_value=0, max_value=2**32 - 1)


def __dir__() -> list[str]:  # pragma: no cover
    return list(__all__)
