"""A fault-space fuzzer for the trioxide runtime's guarantees.

A seed becomes a random, bounded scenario (``scenario.generate``): an actor tree with
random spawn options, admission/priority rules, monitors, crashing hooks, handler plans
(sleep, raise, receive, serve_until, asks and tells that may form ask cycles, crashing
child tasks, self-stops), and an outside driver (tells, asks with timeouts and cancel
scopes, stops with various graces, leaving or raising out of the block). ``world`` runs it
under a seeded scheduler and a virtual clock, traced or untraced, and records everything;
``checker`` holds the record against the guarantees of ``docs/semantics.md`` (G1-G7;
G7: the flight recorder of traced runs).

* ``run_scenario(seed, traced) -> list[str]``: the failures of one run (empty = ok);
* ``python -m tests.runtime.fuzz --scenarios N [--start S] [--workers 2]``;
* ``python -m tests.runtime.fuzz --replay SEED [--traced|--untraced] [--trace-out FILE]``.
"""

from __future__ import annotations

from .checker import Failure, check, key_of
from .runner import RunResult, run_batch, run_detailed, run_parallel, run_scenario, run_seed
from .scenario import Scenario, generate
from .world import ASK_DEADLOCK_AVAILABLE, run_world

__all__ = [
    "ASK_DEADLOCK_AVAILABLE",
    "Failure",
    "RunResult",
    "Scenario",
    "check",
    "generate",
    "key_of",
    "run_batch",
    "run_detailed",
    "run_parallel",
    "run_scenario",
    "run_seed",
    "run_world",
]
