"""Who is who: which actor (and runtime) a task belongs to, and the names tasks get.

Trio copies the context into every task it spawns, so an actor's child tasks see their
actor, and a child actor's task overrides it with its own cell at start.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NamedTuple

from trio.lowlevel import Task

if TYPE_CHECKING:
    from ._cell import ActorCell
    from ._runtime import Runtime

__all__ = [
    "OUTSIDE",
    "TraceSite",
    "caused_by",
    "current_cell",
    "current_runtime",
    "current_sender",
    "outside_cause",
    "task_actor",
    "task_name",
    "trace_site",
]

current_cell: ContextVar[ActorCell | None] = ContextVar("trioxide_current_cell", default=None)
current_runtime: ContextVar[Runtime | None] = ContextVar("trioxide_current_runtime", default=None)
#: The cause of what a task outside any actor does (``caused_by``): read only where a
#: step's sender is looked up and the task has no actor.
outside_cause: ContextVar[int | None] = ContextVar("trioxide_outside_cause", default=None)


#: ``OUTSIDE[0]``: whether ``caused_by`` was ever entered in this process (it stays set).
#: The traced tell's fast path reads ``outside_cause`` only then: a ``ContextVar.get``
#: costs ~700 instructions there (callgrind, ``bench/instr.py --kinds tell-traced``: every
#: Trio task switch invalidates the variable's cache), a class attribute ~130, this list
#: item the least of the three.
OUTSIDE: list[bool] = [False]


def current_sender() -> tuple[str | None, int | None]:
    """The calling task's actor path and the ``msg_id`` it is handling (for tracing);
    outside any actor, ``None`` and the cause set by ``caused_by`` (if any)."""
    sender = current_cell.get()
    if sender is None:
        return None, outside_cause.get()
    return sender.path, sender.cause_id()


class caused_by:
    """``with caused_by(msg_id):`` - the messages a task outside any actor sends inside the
    block (tells, asks, and their admission or refusal events) are traced with *msg_id*
    as their ``cause``, as if an actor handling *msg_id* had sent them.

    For a task that acts on behalf of a traced event that is not an actor's message: an
    HTTP server's request handler (*msg_id*: its ``http_serve`` event), so the asks it
    makes link to the request. Tasks the block starts inherit it (Trio copies the context
    at spawn). Inside an actor's task it changes nothing: the actor's own message is the
    cause there. Tracing off: nothing is recorded, whatever the block does.
    """

    __slots__ = ("_token", "msg_id")

    def __init__(self, msg_id: int | None) -> None:
        self.msg_id = msg_id

    def __enter__(self) -> int | None:
        OUTSIDE[0] = True
        self._token = outside_cause.set(self.msg_id)
        return self.msg_id

    def __exit__(self, *exc: object) -> None:
        outside_cause.reset(self._token)


class TraceSite(NamedTuple):
    """Where the calling task stands for tracing: the runtime's tracer (``None``: tracing
    off), the runtime's name, the task's actor path (``None`` outside any actor) and the
    ``msg_id`` it is handling (``caused_by``'s outside any actor)."""

    tracer: Any
    runtime: str
    actor: str | None
    cause: int | None


def trace_site() -> TraceSite | None:
    """The calling task's ``TraceSite`` in the runtime it runs in (``None``: the task is in
    no runtime). For code that records its own steps in the runtime's trace (the HTTP
    client and server of ``trioxide.actors.wire``)."""
    rt = current_runtime.get()
    if rt is None:
        return None
    actor, cause = current_sender()
    return TraceSite(rt.tracer, rt.name, actor, cause)


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
