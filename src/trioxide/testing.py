"""Deterministic testing of trioxide actors (like ``trio.testing``).

The toolkit lives in ``trioxide.runtime.testing``; this module is its public name. See that
package for the overview: virtual time, seeded scheduling, the explorer (``SeededRun`` has a
complete example), ``TestProbe`` and the pytest plugin (fixtures ``actor_runtime``,
``probe``, ``trace_sink``, ``trioxide_seed``: see ``pytest --fixtures``; options
``--trioxide-seed``, ``--trace-dir``, ``--trace-keep=all``).
"""

from .runtime.testing import (
    Exploration,
    ExploreResult,
    Invariant,
    PctScheduler,
    Perturb,
    RunResult,
    SeededRun,
    TestProbe,
    Violation,
    explore,
    replay,
    run_seeded,
    seeded_scheduler,
    seeds,
    spawn_probe,
    write_trace,
)

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
