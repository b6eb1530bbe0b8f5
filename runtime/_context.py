"""Who is who: which actor (and runtime) a task belongs to, and the names tasks get.

Trio copies the context into every task it spawns, so an actor's child tasks see their
actor, and a child actor's task overrides it with its own cell at start.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from trio.lowlevel import Task

if TYPE_CHECKING:
    from ._cell import ActorCell
    from ._runtime import Runtime

__all__ = ["current_cell", "current_runtime", "current_sender", "task_actor", "task_name"]

current_cell: ContextVar[ActorCell | None] = ContextVar("trioxide_current_cell", default=None)
current_runtime: ContextVar[Runtime | None] = ContextVar("trioxide_current_runtime", default=None)


def current_sender() -> tuple[str | None, int | None]:
    """The calling task's actor path and the ``msg_id`` it is handling (for tracing)."""
    sender = current_cell.get()
    if sender is None:
        return None, None
    return sender.path, sender.cause_id()


def task_actor(task: Task | None) -> str | None:
    """Path of the actor a task belongs to (for a trace's ``peer``), if any."""
    if task is None:
        return None
    try:
        cell = task.context.get(current_cell)
    except Exception:  # pragma: no cover
        return None
    return cell.path if cell is not None else None


def task_name(fn: object, name: str | None) -> str:
    """The name a child task is traced under: *name*, or *fn*'s qualified name."""
    if name is not None:
        return name
    qualname = getattr(fn, "__qualname__", None)
    return qualname if isinstance(qualname, str) else repr(fn)
