"""Every use of Trio internals lives here, behind a version check.

Trio keeps a few things private that an actor runtime needs on its hot path. Each
helper has a public-API fallback, and ``tests/test_trio_private.py`` fails loudly if
Trio changes the internals we rely on, so an upgrade cannot silently degrade us.

* ``current_task_fast()``: ``trio.lowlevel.current_task()`` without its function layers.
* ``is_cancelled(task)``: whether a blocking call in *task* would raise ``Cancelled`` now
  (public equivalent: ``trio.current_effective_deadline() == -inf``, which walks the
  whole cancel-scope chain and costs about 3x more).
* ``runnable_count()``: ``current_statistics().tasks_runnable`` without building the
  statistics object (the fair share reads it every few dozen tells).
* ``schedule_hooks``: seeding Trio's scheduling order (and, while seeded, the order of
  equal deadlines and of a cancellation's delivery); ``clock_reader``: the clock as a C call.
"""

from __future__ import annotations

import heapq
import itertools
import math
import operator
import threading
from collections.abc import Callable
from typing import Any

import trio
from trio.lowlevel import Task, current_task

__all__ = [
    "FAST_CANCEL_CHECK",
    "TESTED_TRIO",
    "cancel_pending",
    "current_task_fast",
    "is_cancelled",
    "runnable_count",
    "uncancelled_task",
]

#: Trio versions whose internals this module was checked against (major, minor).
TESTED_TRIO = ((0, 27), (0, 35))


def _trio_version() -> tuple[int, int]:
    major, minor = trio.__version__.split(".")[:2]
    return int(major), int(minor)


def _public_cancel_pending() -> bool:
    return trio.current_effective_deadline() == -math.inf


def _public_uncancelled_task() -> Task | None:
    return None if _public_cancel_pending() else current_task()


_Probed = tuple[bool, Callable[[], Task], Callable[[], bool], Callable[[], Task | None]]
_PUBLIC: _Probed = (False, current_task, _public_cancel_pending, _public_uncancelled_task)


def _probe() -> _Probed:
    version = _trio_version()
    if not (TESTED_TRIO[0] <= version <= TESTED_TRIO[1]):
        return _PUBLIC
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT
    except ImportError:  # pragma: no cover
        return _PUBLIC
    fields = {f.name for f in getattr(Task, "__attrs_attrs__", ())}
    if "_cancel_status" not in fields:  # pragma: no cover
        return _PUBLIC
    run_context = GLOBAL_RUN_CONTEXT

    def current_task_fast() -> Task:
        try:
            return run_context.task
        except AttributeError:
            raise RuntimeError("must be called from async context") from None

    def cancel_pending() -> bool:
        try:
            task = run_context.task
        except AttributeError:
            raise RuntimeError("must be called from async context") from None
        return task._cancel_status.effectively_cancelled

    def uncancelled_task() -> Task | None:
        try:
            task = run_context.task
        except AttributeError:
            raise RuntimeError("must be called from async context") from None
        return None if task._cancel_status.effectively_cancelled else task

    return True, current_task_fast, cancel_pending, uncancelled_task


#: True when the helpers read Trio's internals (else they use the public API).
FAST_CANCEL_CHECK, current_task_fast, cancel_pending, uncancelled_task = _probe()
uncancelled_task.__doc__ = (
    "The current task, or None if a blocking call in it would raise Cancelled."
)
cancel_pending.__doc__ = "Whether a blocking call in the current task would raise Cancelled."


if FAST_CANCEL_CHECK:

    def is_cancelled(task: Task) -> bool:
        """Whether a blocking call in *task* would raise ``Cancelled`` right now."""
        return task._cancel_status.effectively_cancelled

else:  # pragma: no cover - exercised only on untested Trio versions

    def is_cancelled(task: Task) -> bool:
        """Whether a blocking call in *task* would raise ``Cancelled`` right now."""
        assert task is current_task()
        return trio.current_effective_deadline() == -math.inf


# -- seeded scheduling ------------------------------------------------------------------
#
# Trio runs each scheduling batch in a random order. With the module flag
# ``_ALLOW_DETERMINISTIC_SCHEDULING`` set it first sorts the batch by task creation order,
# then shuffles it with the module RNG ``_r`` - which makes the order a pure function of
# ``_r``'s state. (Hypothesis' Trio plugin uses the same two hooks.) Seeding ``_r`` is
# therefore enough for a reproducible run; replacing ``_r`` with an object that has the
# same methods lets us pick the order ourselves (PCT-style exploration).


class _ThreadBound:
    """Trio's module RNG while a seeded run is installed: the run's *rng* in the thread
    that installed it, the RNG it replaced in every other thread. Trio's RNG is one per
    process, shared by every ``trio.run``: without this, another thread's run (the trace
    server a ``demo --view`` serves from, while a browser is connected) would consume the
    seeded run's numbers and change its schedule."""

    __slots__ = ("_fallback", "_rng", "_thread")

    def __init__(self, rng: Any, fallback: Any, thread: int) -> None:
        self._rng = rng
        self._fallback = fallback
        self._thread = thread

    def _pick(self) -> Any:
        return self._rng if threading.get_ident() == self._thread else self._fallback

    def shuffle(self, x: Any) -> None:
        self._pick().shuffle(x)

    def random(self) -> float:
        value: float = self._pick().random()
        return value

    def uniform(self, a: float, b: float) -> float:
        value: float = self._pick().uniform(a, b)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pick(), name)


# Equal deadlines: Trio keeps its deadlines in a heap of ``(deadline, id(cancel_scope),
# cancel_scope)``, so scopes whose deadlines are equal expire in the order of their memory
# addresses - and an expiry runs abort callbacks at once, whose effects can depend on that
# order (seed 2182 of the fault fuzzer: a tell either found its target's mailbox closed or
# did not, depending on what had run before in the process). While a seeded run is
# installed, deadlines are pushed with a registration counter instead of the address:
# equal deadlines expire in the order they were set.
_DEADLINE_ORDER = itertools.count()


def _deadline_add_in_order(self: Any, deadline: float, cancel_scope: Any) -> None:
    heapq.heappush(self._heap, (deadline, next(_DEADLINE_ORDER), cancel_scope))
    self._active += 1


# Cancellation delivery: a cancel status keeps its tasks and child statuses in sets, which
# iterate in memory-address order, and ``CancelStatus.recalculate`` delivers the
# cancellation to each task as it goes - running its abort callback at once, whose effects
# can depend on that order (seeds 10853 and 39177 of the fault fuzzer: whether a handler
# was cancelled before its next tell's admission ran). While a seeded run is installed,
# the statuses are updated as Trio does (parents before children) and the tasks that must
# be told are told afterwards, in the order they were spawned (``Task._counter``).
_SPAWN_ORDER = operator.attrgetter("_counter")


def _recalculate_in_order(self: Any) -> None:
    todo = [self]
    tell = []
    while todo:
        current = todo.pop()
        new_state = current._scope.cancel_called or current.parent_cancellation_is_visible_to_us
        if new_state != current.effectively_cancelled:
            if (
                current._scope._cancel_reason is None
                and current.parent_cancellation_is_visible_to_us
            ):
                current._scope._cancel_reason = current._parent._scope._cancel_reason
            current.effectively_cancelled = new_state
            if new_state:
                tell.extend(current._tasks)
            todo.extend(current._children)
    if len(tell) > 1:
        tell.sort(key=_SPAWN_ORDER)
    for task in tell:
        task._attempt_delivery_of_any_pending_cancel()


class ScheduleHooks:
    """Access to Trio's scheduler randomness, deadline order and cancellation delivery
    order; ``available`` is False on untested Trio."""

    def __init__(self) -> None:
        self.available = False
        self.active = 0
        self.reason = ""
        try:
            import trio._core._run as run_module
        except ImportError as exc:  # pragma: no cover
            self.reason = f"cannot import trio._core._run: {exc}"
            return
        version = _trio_version()
        if not (TESTED_TRIO[0] <= version <= TESTED_TRIO[1]):
            self.reason = f"trio {trio.__version__} is outside the tested range {TESTED_TRIO}"
            return
        rng = getattr(run_module, "_r", None)
        if not (hasattr(rng, "shuffle") and hasattr(rng, "random") and hasattr(rng, "seed")):
            self.reason = "trio._core._run._r is not a random.Random any more"
            return
        if not isinstance(getattr(run_module, "_ALLOW_DETERMINISTIC_SCHEDULING", None), bool):
            self.reason = "trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING is gone"
            return
        deadlines = getattr(run_module, "Deadlines", None)
        if deadlines is None or not callable(getattr(deadlines, "add", None)):
            self.reason = "trio._core._run.Deadlines.add is gone"
            return
        status = getattr(run_module, "CancelStatus", None)
        if status is None or not callable(getattr(status, "recalculate", None)):
            self.reason = "trio._core._run.CancelStatus.recalculate is gone"
            return
        self._trio_add = deadlines.add
        self._trio_recalculate = status.recalculate
        self._module: Any = run_module  # Any: we assign to names Trio declares Final
        self.available = True
        self.active = 0  # installs not yet restored

    def require(self) -> None:
        if not self.available:
            raise RuntimeError(
                f"seeded scheduling is unavailable: {self.reason}. "
                "runtime/_trio_private.py must be updated for this Trio version."
            )

    def install(self, rng: object) -> tuple[object, bool]:
        """Make scheduling a function of *rng* (a ``random.Random``-like object with
        ``shuffle``, ``random`` and ``uniform``); returns what to pass to ``restore``."""
        self.require()
        saved = (self._module._r, self._module._ALLOW_DETERMINISTIC_SCHEDULING)
        self._module._ALLOW_DETERMINISTIC_SCHEDULING = True
        self._module._r = _ThreadBound(rng, saved[0], threading.get_ident())
        if self.active == 0:
            self._module.Deadlines.add = _deadline_add_in_order
            self._module.CancelStatus.recalculate = _recalculate_in_order
        self.active += 1
        return saved

    def restore(self, saved: tuple[object, bool]) -> None:
        self._module._r, self._module._ALLOW_DETERMINISTIC_SCHEDULING = saved
        self.active -= 1
        if self.active == 0:
            self._module.Deadlines.add = self._trio_add
            self._module.CancelStatus.recalculate = self._trio_recalculate


schedule_hooks = ScheduleHooks()


# -- reading the clock without a Python frame --------------------------------------------


def clock_reader(clock: trio.abc.Clock) -> tuple[Callable[[], float], float]:
    """``(read, offset)`` with ``read() + offset == clock.current_time()``.

    For Trio's ``SystemClock`` (``current_time`` is ``self.offset + perf_counter()``) that
    is ``time.perf_counter`` and the offset: a C call instead of a Python frame per read,
    which the tracer does for every event. Any other clock (``MockClock``): its own
    ``current_time`` and 0.0.
    """
    if type(clock).__name__ == "SystemClock" and isinstance(getattr(clock, "offset", None), float):
        import time

        return time.perf_counter, clock.offset  # type: ignore[attr-defined]
    return clock.current_time, 0.0


# -- how many tasks wait for the CPU ------------------------------------------------------


def _public_runnable_count() -> int:
    return trio.lowlevel.current_statistics().tasks_runnable


def _probe_runnable() -> Callable[[], int]:
    if not FAST_CANCEL_CHECK:  # pragma: no cover - untested Trio: the public statistics
        return _public_runnable_count
    from trio._core._run import GLOBAL_RUN_CONTEXT

    run_context = GLOBAL_RUN_CONTEXT

    def runnable_count() -> int:
        return len(run_context.runner.runq)

    return runnable_count


#: Tasks on Trio's run queue now (``current_statistics().tasks_runnable`` without building
#: the statistics object). Trio empties that queue at the start of every scheduling turn
#: and tasks join it as they yield or are woken, so within a turn it only grows.
runnable_count = _probe_runnable()
