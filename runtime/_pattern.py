"""Message patterns: select messages by a predicate, where a type is expected.

``receive(*types)`` and ``serve_until(serve=..., interrupt=...)`` select queued messages by
their type. Some choices depend on a message's value as well: a runner starting a VMM must
be interrupted by ``PutState(STOPPED)`` but not by ``PutState(REBOOT)``, which has to wait
for the start. ``pattern(PutState, lambda m: m.target is Target.STOPPED)`` is a class that
stands for exactly those messages: ``isinstance(msg, pat)`` is ``isinstance(msg, PutState)
and predicate(msg)``, so it goes wherever the selective operations take a type, and the
mailbox needs nothing new (its checks are ``isinstance`` calls).

Guarantees:

* A pattern matches a message iff the message is an instance of its *base* and the
  predicate returns a true value for it; the predicate is called with instances of
  *base* only.
* A message a pattern does not match is left where it is, in order, as if its type were
  not asked for (selective receive's own rule, semantics.md §3).

* A predicate that raises fails the handler searching the mailbox (its ``receive`` or
  ``serve_until`` raises the error), never a sender: a message whose check raised while
  it was being queued is queued, and wakes the parked receiver to meet the error itself.

The predicate should be a pure, cheap function: it is called while a message is being
queued (by the sender, when the actor is parked on the pattern) and each time the mailbox
is searched, as many times as the runtime needs. A pattern is not a message type: it
cannot be instantiated, and ``handle`` annotations take real types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

__all__ = ["pattern"]

_M = TypeVar("_M")


class _PatternMeta(type):
    """The metaclass of patterns: ``isinstance`` is the base check and the predicate."""

    _base: type
    _when: Callable[[Any], object]

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, cls._base) and bool(cls._when(obj))

    def __subclasscheck__(cls, sub: type) -> bool:
        # No class is a subclass of a pattern: matching depends on the value.
        return sub is cls

    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{cls.__name__} is a message pattern, not a message type")

    def __repr__(cls) -> str:
        return f"<pattern {cls.__name__}: {cls._base.__qualname__} if {cls._when!r}>"


def pattern(base: type[_M], when: Callable[[_M], object], *, name: str | None = None) -> type:
    """A class matching the instances of *base* for which ``when(msg)`` is true, for
    ``receive`` and ``serve_until`` (see the module docstring). *name* (default
    ``<base>If``) names it in reprs and in ``ReceiveTimeout``."""
    if not isinstance(base, type):
        raise TypeError(f"pattern base must be a class, got {base!r}")
    if not callable(when):
        raise TypeError(f"pattern predicate must be callable, got {when!r}")
    return _PatternMeta(
        name or f"{base.__name__}If",
        (),
        {"_base": base, "_when": staticmethod(when), "__module__": __name__},
    )
