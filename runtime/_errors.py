"""Typed errors. Each carries the offending value and the actor's path."""

from __future__ import annotations

from typing import Any

import trio

__all__ = [
    "ActorGone",
    "AskDeadlock",
    "AskTimeout",
    "InvalidActor",
    "MailboxFull",
    "ReceiveTimeout",
    "Rejected",
    "TrioxideError",
    "UnhandledMessage",
]


class TrioxideError(Exception):
    """Base class of every error the runtime raises."""


class ActorGone(TrioxideError):
    """The actor has exited (or the incarnation handling the request ended).

    ``reason`` is what the actor exited with: the ``stop()`` reason, or the exception
    that ended it.
    """

    def __init__(self, actor: str, reason: object = None) -> None:
        super().__init__(actor, reason)
        self.actor = actor
        self.reason = reason

    def __str__(self) -> str:
        return f"actor {self.actor!r} is gone (reason: {self.reason!r})"


class MailboxFull(TrioxideError, trio.WouldBlock):
    """``tell_nowait``/``ask_nowait``: the mailbox holds ``capacity`` messages already."""

    def __init__(self, actor: str, capacity: int, msg: object) -> None:
        super().__init__(actor, capacity)
        self.actor = actor
        self.capacity = capacity
        self.msg = msg

    def __str__(self) -> str:
        return (
            f"mailbox of {self.actor!r} is full ({self.capacity} queued); "
            f"refused {type(self.msg).__name__}"
        )


class AskTimeout(TrioxideError, TimeoutError):
    """An ask got no reply within its timeout (mailbox wait included)."""

    def __init__(self, actor: str, msg: object, timeout: float) -> None:
        super().__init__(actor, timeout)
        self.actor = actor
        self.msg = msg
        self.timeout = timeout

    def __str__(self) -> str:
        return (
            f"ask {type(self.msg).__name__} to {self.actor!r} got no reply within {self.timeout} s"
        )


class AskDeadlock(TrioxideError, RuntimeError):
    """An ask would close a cycle of actors each waiting on the next (an ask, a spawn's
    ``on_start``, or a ``stop`` that waits for the exit), so it can never be answered.

    Raised at once in the asker, instead of hanging; nothing was sent. ``cycle`` is the
    actor paths in waiting order, starting and ending with the asker.
    """

    def __init__(self, cycle: tuple[str, ...]) -> None:
        super().__init__(cycle)
        self.cycle = cycle

    def __str__(self) -> str:
        chain = " -> ".join(repr(p) for p in self.cycle)
        return f"ask would deadlock: {chain} (each waits on the next)"


class ReceiveTimeout(TrioxideError, TimeoutError):
    """``Actor.receive(..., timeout=)`` found no matching message in time."""

    def __init__(self, actor: str, types: tuple[type, ...], timeout: float) -> None:
        super().__init__(actor, timeout)
        self.actor = actor
        self.types = types
        self.timeout = timeout

    def __str__(self) -> str:
        names = ", ".join(t.__name__ for t in self.types) or "any message"
        return f"{self.actor!r} received no {names} within {self.timeout} s"


class Rejected(TrioxideError):
    """Admission refused a message (``Admit.reject(Rejected("HaltPending"))``)."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return self.reason if self.detail is None else f"{self.reason}: {self.detail}"


class UnhandledMessage(TrioxideError, TypeError):
    """The actor does not accept this message type (refused at send time; nothing queued)."""

    def __init__(self, actor: str, msg: Any, accepted: tuple[type, ...]) -> None:
        super().__init__(actor, type(msg))
        self.actor = actor
        self.msg = msg
        self.accepted = accepted

    def __str__(self) -> str:
        kinds = " | ".join(t.__name__ for t in self.accepted)
        what = type(self.msg).__qualname__
        import msgspec

        if not isinstance(self.msg, msgspec.Struct):
            return (
                f"{self.actor!r} was sent a {what} ({self.msg!r:.80}); "
                f"messages must be msgspec.Struct instances ({kinds})"
            )
        return f"{self.actor!r} does not handle {what}; it accepts {kinds}"


class InvalidActor(TrioxideError, TypeError):
    """``spawn`` was given something that cannot be an actor (bad class or annotation)."""
