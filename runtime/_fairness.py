"""How much a task may run before it yields: the fair share of a scheduling turn.

Trio runs every runnable task once per scheduling turn, so an ask to an idle actor waits
about two turns (the actor wakes in one, the asker in the next), and a turn lasts as long
as the work every runnable task does before it yields. A sender yields every
``TELL_YIELD_EVERY`` tells and an actor every ``HANDLER_BATCH`` messages; with many
runnable tasks that adds up (1,000 loaded actors and their senders: a turn of ~64,000
operations). So when many tasks are runnable each one's share shrinks, keeping a turn near
``TURN_TARGET`` operations, but never below ``MIN_SHARE`` (below that the yields cost more
throughput than the latency they buy: bench/bench_latency.py, bench/RESULTS.md).
"""

from __future__ import annotations

from typing import Final

from ._trio_private import runnable_count

__all__ = ["MIN_SHARE", "TURN_TARGET", "TurnShare"]

#: Operations (tells or handled messages) a scheduling turn aims at when many tasks run.
TURN_TARGET: Final = 16384

#: A task's share never drops below this many operations per turn.
MIN_SHARE: Final = 16


class TurnShare:
    """Per runtime: how many runnable tasks share a turn, from Trio's run queue.

    Trio empties its run queue when a turn starts and tasks join it as they yield, so the
    queue seen at a yield only grows within a turn: a shorter one means a new turn began.
    A task sees only the tasks that yielded before it in a turn, so the estimate is the
    longest queue seen this turn or, decaying by 1/32 per turn, in earlier ones: under a
    steady load it settles near the number of runnable tasks within a few turns, and it
    follows a falling load down (by half in about twenty turns).
    """

    __slots__ = ("_last_peak", "_peak")

    def __init__(self) -> None:
        self._peak = 0
        self._last_peak = 0

    def share(self, cap: int) -> int:
        """Operations the current task may run before it yields: *cap*, less when more
        than ``TURN_TARGET // cap`` tasks are runnable, never below ``MIN_SHARE``."""
        n = runnable_count()
        if n < self._peak:  # a new turn
            last = self._last_peak - (self._last_peak >> 5)
            self._last_peak = self._peak if self._peak > last else last
            self._peak = n
        elif n > self._peak:
            self._peak = n
        waiting = self._peak if self._peak > self._last_peak else self._last_peak
        share = TURN_TARGET // (waiting + 1)
        if share >= cap:
            return cap
        return share if share > MIN_SHARE else MIN_SHARE
