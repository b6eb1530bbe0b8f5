"""``Actor``: the class users subclass. Hooks to override, and thin helpers.

The machinery behind one actor is elsewhere: its lifecycle and supervision in
``_cell.py``, the message loop in ``_loop.py``. Every helper here forwards to them.

The helpers (``spawn``, ``monitor``, ``reply``, ...) cannot be shadowed by a subclass: a
class attribute of the same name is refused when the subclass is defined, and assigning
``self.monitor = ...`` raises ``InvalidActor`` (the helpers are data descriptors), so an
actor's own state can never silently hide the runtime's API.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import trio

from . import _loop
from ._errors import ActorGone, InvalidActor, ReceiveTimeout
from ._messages import Admit, Completed, Interrupted
from ._ref import ActorRef
from ._supervision import SpawnOptions

if TYPE_CHECKING:
    from typing import Self, Unpack

    from ._cell import ActorCell

__all__ = ["HELPERS", "Actor", "TimerHandle", "accepted_types"]

_F = TypeVar("_F", bound=Callable[..., Any])


class _Helper:
    """A runtime helper method that an instance attribute cannot hide (a data descriptor)."""

    __slots__ = ("fn", "name")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.name = fn.__name__

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        return self.fn if obj is None else types.MethodType(self.fn, obj)

    def __set__(self, obj: object, value: object) -> None:
        raise InvalidActor(_shadow_message(type(obj), self.name))


if TYPE_CHECKING:

    def _helper(fn: _F) -> _F:
        return fn

else:
    _helper = _Helper


def _is_seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shadow_message(cls: type, name: str) -> str:
    return (
        f"{cls.__qualname__}.{name} would hide the runtime helper Actor.{name}; "
        f"give the attribute another name"
    )


class TimerHandle:
    """Returned by ``send_after``/``send_every``; ``cancel()`` stops the timer (idempotent)."""

    __slots__ = ("_scope",)

    def __init__(self) -> None:
        self._scope = trio.CancelScope()

    def cancel(self) -> None:
        self._scope.cancel()

    @property
    def cancelled(self) -> bool:
        return self._scope.cancel_called


class Actor:
    """Base class of every actor.

    Override ``handle`` (required; its parameter annotation declares the accepted message
    types, its return annotation the reply type of an ask), and optionally ``on_start``,
    ``on_stop``, ``admit``, ``priority`` and ``drain``. ``__init__`` receives ``spawn``'s
    positional arguments and need not call ``super()``; the helpers below (``ref``,
    ``spawn``, ``start_soon``, ...) are available from ``on_start`` on, and no attribute of
    a subclass may take their names (``HELPERS``). The attribute ``_actor_cell`` is
    reserved.
    """

    _actor_cell: ActorCell

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in HELPERS:
            if name in cls.__dict__:
                raise InvalidActor(_shadow_message(cls, name))

    # -- hooks (override) -------------------------------------------------------------

    async def on_start(self) -> None:
        """Runs before the first message; ``spawn`` returns after it. Failure -> spawner."""

    async def handle(self, msg: Any) -> Any:
        """Handle one message; the return value answers an ask."""
        raise NotImplementedError

    async def on_stop(self, reason: object) -> None:
        """Runs when an incarnation ends (after children stopped and tasks were cancelled).

        *reason* is the ``stop()`` reason or the exception that ended the incarnation. If
        the actor is being cancelled from outside, this runs in a cancelled context.
        """

    def admit(self, msg: Any) -> Admit:
        """Synchronous admission at enqueue time (default: always enqueue)."""
        return Admit.ENQUEUE

    def priority(self, msg: Any) -> int:
        """Mailbox priority of *msg*; higher is handled first, FIFO within a level."""
        return 0

    def drain(self, msg: Any) -> Any:
        """The answer for a message still queued when the actor finally exits.

        Return a reply value, or an exception instance to raise in the asker. Default:
        ``ActorGone(path, reason)``. Also called for queued tells (result discarded).
        """
        cell = self._actor_cell
        return ActorGone(cell.path, cell.exit_reason)

    # -- helpers (not overridable) ----------------------------------------------------

    @property
    def ref(self) -> ActorRef[Self]:
        """This actor's ref (stable across restarts)."""
        return self._actor_cell.ref

    @ref.setter
    def ref(self, value: object) -> None:
        raise InvalidActor(_shadow_message(type(self), "ref"))

    @property
    def queued(self) -> int:
        """Messages waiting in this actor's mailbox (the one being handled not counted).

        Useful in ``admit`` to keep room for urgent kinds: e.g. reject requests beyond 32
        queued while terminate and monitor messages are always admitted."""
        return len(self._actor_cell.mailbox)

    @queued.setter
    def queued(self, value: object) -> None:
        raise InvalidActor(_shadow_message(type(self), "queued"))

    @_helper
    async def spawn(
        self,
        cls: type[_A],
        *args: Any,
        name: str | None = None,
        **options: Unpack[SpawnOptions],
    ) -> ActorRef[_A]:
        """Spawn a child actor in this actor's nursery (see ``Runtime.spawn``)."""
        cell = self._actor_cell
        return await cell.rt.spawn_child(cell, cls, args, name, options)

    @_helper
    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        """Start a child task in this actor's nursery. Its failure fails the actor."""
        self._actor_cell.start_task(fn, args, name)

    @_helper
    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> Any:
        """Like ``nursery.start``: *fn* gets ``task_status`` and this returns its value."""
        return await self._actor_cell.start_task_and_wait(fn, args, name)

    @_helper
    def send_after(self, delay: float, msg: Any) -> TimerHandle:
        """Tell *msg* to this actor after *delay* seconds (Trio clock). Cancelled with the actor."""
        if not (_is_seconds(delay) and 0 <= delay < math.inf):
            raise ValueError(f"send_after delay must be finite seconds >= 0, got {delay!r}")
        return self._actor_cell.start_timer(delay, None, msg)

    @_helper
    def send_every(self, period: float, msg: Any) -> TimerHandle:
        """Tell *msg* to this actor every *period* seconds, drift-free, until cancelled."""
        if not (_is_seconds(period) and 0 < period < math.inf):
            raise ValueError(f"send_every period must be finite seconds > 0, got {period!r}")
        return self._actor_cell.start_timer(period, period, msg)

    @_helper
    def monitor(self, ref: ActorRef[Any]) -> None:
        """Deliver ``Terminated(ref, reason)`` to this actor when *ref* finally exits (at once
        if it already has). Sent once, not per restart."""
        if not isinstance(ref, ActorRef):
            raise TypeError(f"monitor() needs an ActorRef, got {ref!r}")
        ref._cell.add_watcher(self._actor_cell)

    @_helper
    async def receive(self, *types: type, timeout: float | None = None) -> Any:
        """Inside a handler: take the first queued message of *types* (any if none given),
        leaving the others queued in order. Waits if there is none yet.

        Raises ``ReceiveTimeout`` after *timeout* seconds (a matching message already
        queued is returned even with ``timeout=0``). A cancel point: cancellation is
        checked before taking, and a message taken is always returned, never lost. After
        ``stop()`` was asked for it takes nothing: the handler is cancelled instead. If the
        message is an ask, answer it with ``self.reply(msg, value)``.
        """
        cell = self._actor_cell
        cell.require_handler("receive")
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"receive timeout must be >= 0 or None, got {timeout!r}")
        msg = await _loop.receive(cell, types or (object,), timeout)
        if msg is _loop.TIMED_OUT:
            assert timeout is not None
            raise ReceiveTimeout(cell.path, types, timeout)
        return msg

    @_helper
    async def serve_until(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        serve: tuple[type, ...] = (),
        interrupt: tuple[type, ...] = (),
    ) -> Completed[Any] | Interrupted:
        """Run ``fn(*args)`` while handling queued messages of *serve* types normally.

        Returns ``Completed(value)`` when *fn* returns (its completion is checked before
        each message), or ``Interrupted(msg)`` when a message of an *interrupt* type is
        dequeued first: *fn* is then cancelled (its scope exits before this returns). An
        exception from *fn* propagates. A cancel point for ``stop()``.
        """
        cell = self._actor_cell
        cell.require_handler("serve_until")
        return await _loop.serve_until(cell, fn, args, tuple(serve), tuple(interrupt))

    @_helper
    def reply(self, msg: Any, value: Any = None, *, error: BaseException | None = None) -> bool:
        """Answer the ask that carried *msg* (the current message, or one taken by
        ``receive``/``Interrupted``) with *value*, or raise *error* in the asker.

        Returns False if *msg* came by ``tell`` or was already answered (then nothing
        happens). Replying to the current message early makes the handler's return value
        (or exception) ignored for that asker."""
        return _loop.reply(self._actor_cell, msg, value, error)

    @_helper
    def stop(self, reason: object = "stop") -> None:
        """Ask this actor to stop after the current handler (synchronous)."""
        self._actor_cell.request_stop(reason, None)


_A = TypeVar("_A", bound=Actor)

#: Names of the ``Actor`` helpers, which a subclass may not define or assign.
HELPERS: frozenset[str] = frozenset(
    name for name, value in vars(Actor).items() if isinstance(value, _Helper | property)
)


_accepts_cache: dict[type, tuple[type, ...]] = {}


def accepted_types(cls: type[Actor]) -> tuple[type, ...]:
    """The message types ``cls.handle`` accepts, from its annotation (cached per class)."""
    cached = _accepts_cache.get(cls)
    if cached is not None:
        return cached
    handle = cls.handle
    if handle is Actor.handle:
        raise InvalidActor(f"{cls.__qualname__} does not define handle(self, msg)")
    params = list(inspect.signature(handle).parameters.values())
    if len(params) != 2:
        raise InvalidActor(
            f"{cls.__qualname__}.handle must take exactly one message argument, "
            f"got parameters {[p.name for p in params]}"
        )
    pname = params[1].name
    try:
        hints = typing.get_type_hints(handle)
    except Exception as exc:
        raise InvalidActor(
            f"cannot resolve the annotation of {cls.__qualname__}.handle: {exc!r}"
        ) from exc
    ann = hints.get(pname, inspect.Parameter.empty)
    result: tuple[type, ...]
    if ann is inspect.Parameter.empty or ann is Any or ann is object:
        result = (msgspec.Struct,)
    else:
        origin = typing.get_origin(ann)
        members = typing.get_args(ann) if origin in (typing.Union, types.UnionType) else (ann,)
        out: list[type] = []
        for m in members:
            if m is type(None):
                continue
            if not (isinstance(m, type) and issubclass(m, msgspec.Struct)):
                raise InvalidActor(
                    f"{cls.__qualname__}.handle accepts {m!r}, which is not a msgspec.Struct "
                    "subclass; messages must be Structs"
                )
            out.append(m)
        if not out:
            raise InvalidActor(f"{cls.__qualname__}.handle accepts no message type ({ann!r})")
        result = tuple(out)
    _accepts_cache[cls] = result
    return result
