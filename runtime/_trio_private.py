"""Every use of Trio internals lives here, behind a version check.

Trio keeps a few things private that an actor runtime needs on its hot path. Each
helper has a public-API fallback, and ``tests/test_trio_private.py`` fails loudly if
Trio changes the internals we rely on, so an upgrade cannot silently degrade us.

* ``current_task_fast()``: ``trio.lowlevel.current_task()`` without its function layers.
* ``is_cancelled(task)``: whether a blocking call in *task* would raise ``Cancelled`` now
  (public equivalent: ``trio.current_effective_deadline() == -inf``, which walks the
  whole cancel-scope chain and costs about 3x more).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio
from trio.lowlevel import Task, current_task

__all__ = [
    "FAST_CANCEL_CHECK",
    "TESTED_TRIO",
    "cancel_pending",
    "current_task_fast",
    "is_cancelled",
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
