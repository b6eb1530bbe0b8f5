"""Seeded Trio runs: the same seed gives the same interleaving (and the same trace)."""

from __future__ import annotations

import random
import weakref
from collections.abc import Awaitable, Callable, Iterator, MutableSequence
from contextlib import contextmanager
from typing import Any, TypeVar

import trio
import trio.testing

from .._trio_private import schedule_hooks

__all__ = ["PctScheduler", "run_seeded", "seeded_scheduler"]

T = TypeVar("T")


class PctScheduler(random.Random):
    """A PCT-style scheduler (probabilistic concurrency testing, Burckhardt et al. 2010).

    Every task gets a random priority when first seen; each Trio scheduling batch runs in
    priority order (highest first). At ``depth`` change points, drawn uniformly among the
    first ``horizon`` batches, the highest-priority task of the batch is demoted below
    every other task. A bug that needs ``d`` specific ordering constraints is hit with
    probability about ``1 / (n * k^(d-1))`` per run (n tasks, k steps), far better than a
    uniform shuffle for deep bugs. Everything is drawn from the seed.
    """

    def __init__(self, seed: int, depth: int = 3, horizon: int = 2_000) -> None:
        super().__init__(seed)
        if depth < 0 or horizon < 1:
            raise ValueError(f"PCT needs depth >= 0 and horizon >= 1, got {depth}, {horizon}")
        self._priority: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._changes = sorted(self.randrange(horizon) for _ in range(depth))
        self._batch = 0
        self._demoted = 0.0

    def shuffle(self, x: MutableSequence[Any]) -> None:
        prio = self._priority
        for task in x:  # the batch arrives sorted by task creation order
            if task not in prio:
                prio[task] = 1.0 + self.random()
        # A change point falling on an empty batch waits for the next non-empty one.
        while x and self._changes and self._batch >= self._changes[0]:
            self._changes.pop(0)
            top = max(x, key=prio.__getitem__)
            self._demoted -= 1.0
            prio[top] = self._demoted
        self._batch += 1
        # Trio pops tasks from the end of the batch: put the highest priority last.
        x[:] = sorted(x, key=prio.__getitem__)


@contextmanager
def seeded_scheduler(seed: int, *, pct_depth: int | None = None) -> Iterator[random.Random]:
    """Make Trio's scheduling a pure function of *seed* inside the block.

    Use it around ``trio.run`` (the whole run is then reproducible). With ``pct_depth``
    the batches are ordered by a :class:`PctScheduler` instead of a seeded shuffle.
    Raises ``RuntimeError`` on a Trio version whose internals were not checked.
    """
    rng: random.Random = random.Random(seed) if pct_depth is None else PctScheduler(seed, pct_depth)
    saved = schedule_hooks.install(rng)
    try:
        yield rng
    finally:
        schedule_hooks.restore(saved)


def run_seeded(
    async_fn: Callable[..., Awaitable[T]],
    *args: Any,
    seed: int,
    clock: trio.abc.Clock | None = None,
    pct_depth: int | None = None,
    restrict_keyboard_interrupt_to_checkpoints: bool = False,
) -> T:
    """``trio.run(async_fn, *args)`` under a seeded scheduler and (by default) a
    ``MockClock(autojump_threshold=0)``: virtual time, reproducible interleaving.

    *restrict_keyboard_interrupt_to_checkpoints* is ``trio.run``'s: a command sets it so
    that Ctrl-C always ends it (why: :func:`trioxide.traces.cli.run_command`)."""
    with seeded_scheduler(seed, pct_depth=pct_depth):
        return trio.run(
            async_fn,
            *args,
            clock=clock or trio.testing.MockClock(autojump_threshold=0),
            restrict_keyboard_interrupt_to_checkpoints=restrict_keyboard_interrupt_to_checkpoints,
        )
