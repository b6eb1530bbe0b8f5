"""``TraceLinks``: which distributed trace (W3C trace context) a message belongs to.

A process serving HTTP learns a trace context with each request (``Tracer.http_serve``).
The asks its handler makes carry that request's ``msg_id`` as their cause; the actors
that handle them send further messages, spawn children, and call other services. For
those calls to continue the request's trace, the tracer remembers, for the messages
sent while handling a linked message, the context they descend from (``inherit``), and
for the actors spawned while handling one, theirs (``spawned``): a VMM's runner handling
``PutState`` and the monitor it spawns then call Propolis in the trace of the request
that started the VMM.

Bounded: at most ``max_entries`` messages and as many actors are remembered (the oldest
are forgotten first), so a long-running process holds a fixed amount however many
requests it serves. Nothing here is created in a process that serves no HTTP request.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LinkStatistics", "TraceLinks"]

#: A position in a distributed trace: ``(trace_id, span_id)``, W3C hex strings.
Context = tuple[str, str]


@dataclass(frozen=True)
class LinkStatistics:
    """``messages``/``actors``: how many are remembered now; ``forgotten``: evicted."""

    messages: int
    actors: int
    forgotten: int


class TraceLinks:
    """Bounded maps ``msg_id -> Context`` and ``actor path -> Context``."""

    __slots__ = ("_actors", "_max", "_messages", "forgotten")

    def __init__(self, max_entries: int = 65_536) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self._max = max_entries
        self._messages: dict[int, Context] = {}
        self._actors: dict[str, Context] = {}
        self.forgotten = 0

    def _bound(self, table: dict[int, Context] | dict[str, Context]) -> None:
        if len(table) > self._max:
            del table[next(iter(table))]  # type: ignore[arg-type]
            self.forgotten += 1

    def bind(self, msg_id: int, ctx: Context) -> None:
        """*msg_id* (a served request's event) is handled in *ctx*."""
        self._messages[msg_id] = ctx
        self._bound(self._messages)

    def inherit(self, msg_id: int, cause: int) -> None:
        """*msg_id* was sent while *cause* was handled: it continues *cause*'s context."""
        ctx = self._messages.get(cause)
        if ctx is not None:
            self._messages[msg_id] = ctx
            self._bound(self._messages)

    def spawned(self, actor: str, cause: int) -> None:
        """*actor* was spawned while *cause* was handled: its own calls continue that
        context (a later spawn of the same path replaces it)."""
        ctx = self._messages.get(cause)
        if ctx is not None:
            self._actors.pop(actor, None)
            self._actors[actor] = ctx
            self._bound(self._actors)

    def context_of(self, actor: str | None, cause: int | None) -> Context | None:
        """The context a step of *actor* taken while handling *cause* continues: the
        message's, else the actor's (a task of an actor spawned in a trace), else None."""
        if cause is not None:
            ctx = self._messages.get(cause)
            if ctx is not None:
                return ctx
        if actor is not None:
            return self._actors.get(actor)
        return None

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(len(self._messages), len(self._actors), self.forgotten)
