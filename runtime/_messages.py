"""Small public value types: admission decisions, serve_until results, system messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar

import msgspec

if TYPE_CHECKING:
    from ._ref import ActorRef

__all__ = ["Admit", "Completed", "Interrupted", "Terminated"]

T = TypeVar("T")

_ENQUEUE: Final = 0
_IGNORE: Final = 1
_REJECT: Final = 2


class Admit:
    """What ``Actor.admit(msg)`` decides, synchronously, at enqueue time.

    * ``Admit.ENQUEUE`` - queue it (the default for every message);
    * ``Admit.ignore(reply=...)`` - an idempotent no-op: nothing is queued, an asker gets
      *reply* at once, a teller returns normally;
    * ``Admit.reject(exc)`` - nothing is queued and the sender (``tell``, ``tell_nowait``
      or ``ask``) gets *exc* raised.
    """

    __slots__ = ("action", "exc", "reply")
    ENQUEUE: ClassVar[Admit]

    def __init__(self, action: int, reply: Any = None, exc: BaseException | None = None) -> None:
        self.action = action
        self.reply = reply
        self.exc = exc

    @classmethod
    def ignore(cls, reply: Any = None) -> Admit:
        return cls(_IGNORE, reply=reply)

    @classmethod
    def reject(cls, exc: BaseException) -> Admit:
        if not isinstance(exc, BaseException):
            raise TypeError(f"Admit.reject needs an exception, got {exc!r}")
        return cls(_REJECT, exc=exc)

    def __repr__(self) -> str:
        if self.action == _ENQUEUE:
            return "Admit.ENQUEUE"
        if self.action == _IGNORE:
            return f"Admit.ignore(reply={self.reply!r})"
        return f"Admit.reject({self.exc!r})"


Admit.ENQUEUE = Admit(_ENQUEUE)


class Completed(Generic[T]):
    """``serve_until``: *fn* returned ``value``."""

    __slots__ = ("value",)
    __match_args__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Completed({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Completed) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


class Interrupted:
    """``serve_until``: a message of an ``interrupt`` type arrived and *fn* was cancelled.

    The message is now the caller's to handle; if it was an ask, answer it with
    ``self.reply(msg, value)`` (otherwise it gets ``None`` when the handler returns).
    """

    __slots__ = ("msg",)
    __match_args__ = ("msg",)

    def __init__(self, msg: Any) -> None:
        self.msg = msg

    def __repr__(self) -> str:
        return f"Interrupted({self.msg!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Interrupted) and other.msg == self.msg

    __hash__ = None  # type: ignore[assignment]


class Terminated(msgspec.Struct, frozen=True):
    """Delivered to a watcher (``self.monitor(ref)``) once, when *ref* finally exits.

    ``reason`` is the stop reason, or the exception the actor failed with. Accepted by
    every actor whatever its ``handle`` annotation says.
    """

    ref: ActorRef
    reason: Any = None
