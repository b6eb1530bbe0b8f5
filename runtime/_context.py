"""Context variables: which actor (and runtime) the current task belongs to.

Trio copies the context into every task it spawns, so an actor's child tasks see their
actor, and a child actor's task overrides it with its own cell at start.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._actor import ActorCell
    from ._runtime import Runtime

current_cell: ContextVar[ActorCell | None] = ContextVar("trioxide_current_cell", default=None)
current_runtime: ContextVar[Runtime | None] = ContextVar("trioxide_current_runtime", default=None)
