"""``Actor`` (what users subclass) and ``ActorCell`` (the machinery behind one actor).

An actor is one Trio task (``ActorCell.main``) that runs *incarnations* of the user's
class. Each incarnation opens its own nursery (child actors, child tasks, timers), runs
``on_start``, then the message loop, until a stop request or a failure. The cell applies
the supervision policy between incarnations; the mailbox and the ref survive restarts.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
import outcome
import trio
from trio.lowlevel import Task, current_task, reschedule, wait_task_rescheduled

from ._context import current_cell
from ._errors import ActorGone, InvalidActor, ReceiveTimeout, UnhandledMessage
from ._mailbox import DONE, QUEUED, RUNNING, WITHDRAWN, Envelope, Mailbox, message_of
from ._messages import Admit, Completed, Interrupted, Terminated

if TYPE_CHECKING:
    from ._ref import ActorRef
    from ._runtime import Runtime

__all__ = ["Actor", "ActorCell", "RestartPolicy", "TimerHandle"]

RestartPolicy = Literal["permanent", "transient", "temporary"]
Backoff = float | Callable[[int], float] | None

#: The actor loop yields to the scheduler after this many handled messages in a row
#: (handlers that never block would otherwise starve other tasks).
HANDLER_BATCH: Final = 64

_NOT_STOPPING: Final = object()


def _unwrap(exc: BaseException) -> BaseException:
    """The single exception inside (nested) one-element exception groups, else *exc*."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


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
    types), and optionally ``on_start``, ``on_stop``, ``admit``, ``priority`` and ``drain``.
    ``__init__`` receives ``spawn``'s positional arguments and need not call ``super()``;
    the runtime helpers below (``ref``, ``spawn``, ``start_soon``, ...) are available from
    ``on_start`` on. The attribute ``_actor_cell`` is reserved.
    """

    _actor_cell: ActorCell

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

    # -- helpers ----------------------------------------------------------------------

    @property
    def ref(self) -> ActorRef:
        """This actor's ref (stable across restarts)."""
        return self._actor_cell.ref

    @property
    def queued(self) -> int:
        """Messages waiting in this actor's mailbox (the one being handled not counted).

        Useful in ``admit`` to keep room for urgent kinds: e.g. reject requests beyond 32
        queued while terminate and monitor messages are always admitted."""
        return self._actor_cell.mailbox.count

    async def spawn(
        self,
        cls: type[Actor],
        *args: Any,
        name: str | None = None,
        mailbox_size: int = 1024,
        restart: RestartPolicy | None = None,
        max_restarts: int = 3,
        within: float = 5.0,
        backoff: Backoff = None,
    ) -> ActorRef:
        """Spawn a child actor in this actor's nursery (see ``Runtime.spawn``)."""
        cell = self._actor_cell
        return await cell.rt._spawn(
            cell, cls, args, name, mailbox_size, restart, max_restarts, within, backoff
        )

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        """Start a child task in this actor's nursery. Its failure fails the actor."""
        cell = self._actor_cell
        nursery = cell.require_nursery()
        tname = _task_name(fn, name)
        nursery.start_soon(cell.run_task, fn, args, tname, name=f"{cell.path}:{tname}")

    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> Any:
        """Like ``nursery.start``: *fn* gets ``task_status`` and this returns its value."""
        cell = self._actor_cell
        nursery = cell.require_nursery()
        tname = _task_name(fn, name)
        return await nursery.start(
            cell.run_started_task, fn, args, tname, name=f"{cell.path}:{tname}"
        )

    def send_after(self, delay: float, msg: Any) -> TimerHandle:
        """Tell *msg* to this actor after *delay* seconds (Trio clock). Cancelled with the actor."""
        cell = self._actor_cell
        cell.check_accepts(msg)
        handle = TimerHandle()
        cell.require_nursery().start_soon(cell.timer_task, handle, delay, None, msg)
        return handle

    def send_every(self, period: float, msg: Any) -> TimerHandle:
        """Tell *msg* to this actor every *period* seconds, drift-free, until cancelled."""
        if not period > 0:
            raise ValueError(f"send_every period must be > 0, got {period!r}")
        cell = self._actor_cell
        cell.check_accepts(msg)
        handle = TimerHandle()
        cell.require_nursery().start_soon(cell.timer_task, handle, period, period, msg)
        return handle

    def monitor(self, ref: ActorRef) -> None:
        """Deliver ``Terminated(ref, reason)`` to this actor when *ref* finally exits (at once
        if it already has). Sent once, not per restart."""
        ref._cell.add_watcher(self._actor_cell)

    async def receive(self, *types: type, timeout: float | None = None) -> Any:
        """Inside a handler: take the first queued message of *types* (any if none given),
        leaving the others queued in order. Waits if there is none yet.

        Raises ``ReceiveTimeout`` after *timeout* seconds. A cancel point for ``stop()``.
        If the message is an ask, answer it with ``self.reply(msg, value)``.
        """
        cell = self._actor_cell
        cell.require_handler("receive")
        want = types or (object,)
        if timeout is None:
            return await cell.receive(want)
        with trio.move_on_after(timeout):
            return await cell.receive(want)
        raise ReceiveTimeout(cell.path, types, timeout)

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
        return await cell.serve_until(fn, args, tuple(serve), tuple(interrupt))

    def reply(self, msg: Any, value: Any = None, *, error: BaseException | None = None) -> bool:
        """Answer the ask that carried *msg* (the current message, or one taken by
        ``receive``/``Interrupted``) with *value*, or raise *error* in the asker.

        Returns False if *msg* came by ``tell`` or was already answered (then nothing
        happens). Replying to the current message early makes the handler's return value
        (or exception) ignored for that asker."""
        result = outcome.Error(error) if error is not None else outcome.Value(value)
        return self._actor_cell.reply(msg, result)

    def stop(self, reason: object = "stop") -> None:
        """Ask this actor to stop after the current handler (synchronous)."""
        self._actor_cell.request_stop(reason, None)


class _BareCurrent:
    """``ActorCell.current`` while an untraced tell is handled (no envelope exists)."""

    __slots__ = ()
    msg = None
    asker = None
    id = None
    state = DONE


_BARE: Any = _BareCurrent()


class ActorCell:
    """Everything the runtime knows about one actor; survives restarts."""

    __slots__ = (
        "accepts",
        "admit_fn",
        "args",
        "backoff",
        "backoff_scope",
        "children",
        "cls",
        "current",
        "dropped",
        "exit_reason",
        "exited_event",
        "failures",
        "handle_fn",
        "handled",
        "ignored",
        "instance",
        "last_instance",
        "loop_scope",
        "mailbox",
        "max_restarts",
        "name",
        "nursery",
        "parent",
        "path",
        "plain",
        "priority_fn",
        "ref",
        "rejected",
        "restart",
        "restart_times",
        "restarts",
        "rt",
        "start_status",
        "state",
        "stop_grace",
        "stopping",
        "taken",
        "task",
        "unhandled",
        "waiting",
        "watchers",
        "within",
    )

    def __init__(
        self,
        rt: Runtime,
        parent: ActorCell | None,
        cls: type[Actor],
        args: tuple[Any, ...],
        name: str,
        path: str,
        mailbox_size: int,
        restart: RestartPolicy | None,
        max_restarts: int,
        within: float,
        backoff: Backoff,
    ) -> None:
        from ._ref import ActorRef

        self.rt = rt
        self.parent = parent
        self.cls = cls
        self.args = args
        self.name = name
        self.path = path
        self.accepts = accepted_types(cls)
        self.mailbox = Mailbox(mailbox_size)
        self.mailbox.owner = self
        self.ref = ActorRef(self)
        # Untraced, no admission, no priority: tell may take the bare-message fast path.
        self.plain = (
            rt.tracer is None and cls.admit is Actor.admit and cls.priority is Actor.priority
        )
        self.restart = restart
        self.max_restarts = max_restarts
        self.within = within
        self.backoff = backoff
        self.restart_times: deque[float] | None = None
        self.state = "starting"
        self.instance: Actor | None = None
        self.last_instance: Actor | None = None
        self.task: Task | None = None
        self.nursery: trio.Nursery | None = None
        self.loop_scope: trio.CancelScope | None = None
        self.backoff_scope: trio.CancelScope | None = None
        self.start_status: trio.TaskStatus[None] | None = None
        self.children: dict[str, ActorCell] | None = None  # spawn order
        self.watchers: list[ActorCell] | None = None
        self.exited_event: trio.Event | None = None
        self.exit_reason: object = None
        self.stopping: object = _NOT_STOPPING
        self.stop_grace: float | None = None
        self.current: Envelope | None = None
        self.taken: list[Any] | None = None
        self.waiting = False  # the handler is parked in receive()/serve_until()
        self.admit_fn: Callable[[Any], Admit] | None = None
        self.priority_fn: Callable[[Any], int] | None = None
        self.handle_fn: Callable[[Any], Awaitable[Any]] | None = None
        self.handled = 0
        self.rejected = 0
        self.ignored = 0
        self.dropped = 0
        self.unhandled = 0
        self.restarts = 0
        self.failures = 0

    def __repr__(self) -> str:
        return f"<ActorCell {self.path} {self.state}>"

    # -- small helpers ----------------------------------------------------------------

    def require_nursery(self) -> trio.Nursery:
        if self.nursery is None:
            raise RuntimeError(f"actor {self.path!r} has no running incarnation ({self.state})")
        return self.nursery

    def require_handler(self, what: str) -> None:
        if self.current is None or current_task() is not self.task:
            raise RuntimeError(f"{what}() may only be called from {self.path!r}'s own handler")

    def check_accepts(self, msg: Any) -> None:
        if not isinstance(msg, self.accepts):
            self.refuse_unhandled(msg)

    def refuse_unhandled(self, msg: Any) -> typing.NoReturn:
        self.unhandled += 1
        tr = self.rt.tracer
        if tr is not None:
            accepted = [t.__name__ for t in self.accepts]
            emit_from_sender(tr, "unhandled", self.path, None, None, msg, f"accepts {accepted}")
        raise UnhandledMessage(self.path, msg, self.accepts)

    def child_list(self) -> list[ActorCell]:
        return list(self.children.values()) if self.children else []

    async def wait_exited(self) -> None:
        if self.state == "exited":
            await trio.lowlevel.checkpoint()
            return
        if self.exited_event is None:
            self.exited_event = trio.Event()
        await self.exited_event.wait()

    # -- supervision ------------------------------------------------------------------

    async def main(self, *, task_status: trio.TaskStatus[None]) -> None:
        """The actor's task: incarnations under the restart policy, then finalisation."""
        current_cell.set(self)
        self.task = current_task()
        # Keep the status only until started(): holding it would keep nursery.start's
        # temporary nursery alive for the actor's whole life.
        self.start_status = task_status
        del task_status
        reason: object = "cancelled"
        try:
            while True:
                reason = "cancelled"
                try:
                    await self._incarnation()
                except Exception as exc:
                    failure = _unwrap(exc)
                    reason = failure
                    self.failures += 1
                    self._trace_fail(failure)
                    if self.start_status is not None:
                        # The first on_start failed: the spawner gets the exception itself.
                        self.start_status = None
                        raise failure from None
                    if self.stopping is not _NOT_STOPPING:
                        # Failed while a stop was pending: no restart. A supervised actor
                        # just ends (its supervisor asked for the stop); an unsupervised
                        # one escalates, because errors are never silently lost.
                        if self.restart is not None:
                            return
                        raise
                    if not self._may_restart():
                        if self.restart == "temporary":
                            return  # reported to monitors via Terminated, not escalated
                        raise
                    await self._backoff()
                    if self.stopping is not _NOT_STOPPING:
                        reason = self.stopping
                        return
                    self.restarts += 1
                    tr = self.rt.tracer
                    if tr is not None:
                        tr.emit(
                            "restart", self.path, None, None, None, None, None, str(self.restarts)
                        )
                    continue
                else:
                    reason = self.stopping
                    return
        finally:
            self._finalize(reason)

    def _may_restart(self) -> bool:
        if self.restart is None or self.restart == "temporary":
            return False
        # permanent and transient both restart after an exception; neither after stop().
        now = trio.current_time()
        times = self.restart_times
        if times is None:
            times = self.restart_times = deque()
        while times and times[0] <= now - self.within:
            times.popleft()
        if len(times) >= self.max_restarts:
            return False
        times.append(now)
        return True

    async def _backoff(self) -> None:
        self.state = "restarting"
        b = self.backoff
        delay = b(self.restarts + 1) if callable(b) else (b or 0.0)
        if delay > 0:
            with trio.CancelScope() as scope:
                self.backoff_scope = scope
                await trio.sleep(delay)
            self.backoff_scope = None

    async def _incarnation(self) -> None:
        """One instance of the class: nursery, on_start, the message loop, graceful stop."""
        self.state = "starting"
        inst = self.cls(*self.args)
        inst._actor_cell = self
        self.instance = self.last_instance = inst
        cls = self.cls
        self.admit_fn = inst.admit if cls.admit is not Actor.admit else None
        self.priority_fn = inst.priority if cls.priority is not Actor.priority else None
        handle = self.handle_fn = inst.handle
        stop_reason: object = None
        ended: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await inst.on_start()
                self.state = "running"
                tr = self.rt.tracer
                if tr is not None:
                    tr.emit("start", self.path)
                status = self.start_status
                if status is not None:
                    self.start_status = None
                    status.started()
                    del status
                with trio.CancelScope() as scope:
                    self.loop_scope = scope
                    # The message loop (inlined: one coroutine frame less per actor).
                    mb = self.mailbox
                    dispatch = self._dispatch
                    untraced = self.rt.tracer is None
                    n = 0
                    batch = self.rt.next_handler_batch()
                    while self.stopping is _NOT_STOPPING:
                        if mb._queues is None:
                            # Mailbox.pop inlined for the single-level case.
                            q = mb._q0
                            if q:
                                item = q.popleft()
                                if type(item) is Envelope and item.state == WITHDRAWN:
                                    continue
                                mb.count -= 1
                                if mb._putters:
                                    mb._wake_putter()
                            else:
                                item = None
                        else:
                            item = mb.pop()
                        if item is None:
                            mb._waiter = self.task
                            mb._want = None
                            await wait_task_rescheduled(mb.abort_wait)
                            continue
                        if type(item) is Envelope:
                            if untraced and item.asker is not None:
                                # An untraced ask (ActorCell._dispatch inlined).
                                self.current = item
                                if item.state == QUEUED:
                                    item.state = RUNNING
                                try:
                                    result = await handle(item.msg)
                                except Exception as exc:
                                    item.answer(outcome.Error(exc))
                                    self._finish_taken(exc)
                                except BaseException as exc:
                                    item.answer(outcome.Error(ActorGone(self.path, self._why(exc))))
                                    self._finish_taken(exc)
                                    raise
                                else:
                                    if item.state <= RUNNING:  # Envelope.answer inlined
                                        item.state = DONE
                                        reschedule(item.asker, outcome.Value(result))
                                    if self.taken is not None:
                                        self._finish_taken(None)
                                finally:
                                    self.current = None
                                    self.handled += 1
                            else:
                                await dispatch(item)
                        else:
                            # An untraced tell: no envelope, no trace, no reply.
                            self.current = _BARE
                            try:
                                await handle(item)
                            except BaseException as exc:
                                self._finish_taken(exc)
                                raise
                            finally:
                                self.current = None
                                self.handled += 1
                            if self.taken is not None:
                                self._finish_taken(None)
                        n += 1
                        if n >= batch:
                            n = 0
                            batch = self.rt.next_handler_batch()
                            await trio.lowlevel.checkpoint()
                self.loop_scope = None
                # Graceful stop: drain, stop children (reverse start order), cancel tasks.
                self.state = "stopping"
                stop_reason = self.stopping
                self._close_and_drain(stop_reason)
                for child in reversed(self.child_list()):
                    await child.ref.stop(stop_reason)
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            ended = exc
            raise
        finally:
            self.nursery = None
            self.loop_scope = None
            self.admit_fn = None
            self.priority_fn = None
            try:
                await inst.on_stop(stop_reason if ended is None else _unwrap(ended))
            finally:
                self.instance = None

    # -- handling one message ----------------------------------------------------------

    async def _dispatch(self, item: Any) -> None:
        """Handle one queued item: an envelope (ask or traced tell) or a bare message.

        (The message loop inlines the untraced tell and ask paths; this is the general one,
        also used for messages served by ``serve_until``.)"""
        prev, prev_taken = self.current, self.taken
        self.taken = None
        try:
            if type(item) is Envelope:
                await self._dispatch_envelope(item)
                return
            self.current = _BARE
            try:
                await self.handle_fn(item)  # type: ignore[misc]
            except BaseException as exc:
                self._finish_taken(exc)
                raise
            if self.taken is not None:
                self._finish_taken(None)
        finally:
            self.current = prev
            self.taken = prev_taken
            self.handled += 1

    async def _dispatch_envelope(self, env: Envelope) -> None:
        self.current = env
        tr = self.rt.tracer
        asker = env.asker
        if tr is not None:
            tr.emit("receive", self.path, None, env.id, None, env.id if asker else None, env.msg)
        try:
            if asker is None:
                await self.handle_fn(env.msg)  # type: ignore[misc]
            else:
                if env.state == QUEUED:
                    env.state = RUNNING
                try:
                    result = await self.handle_fn(env.msg)  # type: ignore[misc]
                except Exception as exc:
                    self._answer(env, outcome.Error(exc))
                    if tr is not None:
                        tr.emit(
                            "handle", self.path, None, env.id, None, env.id, None,
                            f"error: {describe(exc)}",
                        )  # fmt: skip
                    self._finish_taken(exc)
                    return
                self._answer(env, outcome.Value(result))
            if tr is not None:
                tr.emit(
                    "handle", self.path, None, env.id, None, env.id if asker else None, None, "ok"
                )
            if self.taken is not None:
                self._finish_taken(None)
        except BaseException as exc:
            if asker is not None:
                self._answer(env, outcome.Error(ActorGone(self.path, self._why(exc))))
            if tr is not None:
                kind = "cancel" if isinstance(_unwrap(exc), trio.Cancelled) else "handle"
                tr.emit(
                    kind, self.path, None, env.id, None, None, None,
                    f"error: {describe(_unwrap(exc))}",
                )  # fmt: skip
            self._finish_taken(exc)
            raise

    def _why(self, exc: BaseException) -> object:
        if self.stopping is not _NOT_STOPPING:
            return self.stopping
        return _unwrap(exc)

    def _answer(self, env: Envelope, result: outcome.Outcome[Any]) -> None:
        if env.answer(result):
            tr = self.rt.tracer
            if tr is not None:
                detail = (
                    f"error: {describe(result.error)}"
                    if isinstance(result, outcome.Error)
                    else "value"
                )
                tr.emit(
                    "reply",
                    self.path,
                    _task_actor(env.asker),
                    None,
                    self.cause_id(),
                    env.id,
                    None,
                    detail,
                )

    def _finish_taken(self, exc: BaseException | None) -> None:
        """Asks taken by receive()/Interrupted and not answered get None (or the error)."""
        taken = self.taken
        if not taken:
            return
        self.taken = None
        for item in taken:
            if type(item) is not Envelope or item.asker is None:
                continue
            if exc is None:
                self._answer(item, outcome.Value(None))
            elif isinstance(exc, Exception):
                self._answer(item, outcome.Error(exc))
            else:
                self._answer(item, outcome.Error(ActorGone(self.path, self._why(exc))))

    def cause_id(self) -> int | None:
        env = self.current
        return env.id if env is not None else None

    def reply(self, msg: Any, result: outcome.Outcome[Any]) -> bool:
        env = self.current
        if env is not None and env.msg is msg and env.asker is not None:
            if env.state == QUEUED:
                env.state = RUNNING
            before = env.state
            self._answer(env, result)
            return before == RUNNING
        for item in self.taken or ():
            if type(item) is Envelope and item.msg is msg and item.asker is not None:
                before = item.state
                self._answer(item, result)
                return before == RUNNING
        return False

    # -- selective receive and serve_until -------------------------------------------

    def _taken(self, item: Any, why: str) -> Any:
        """Record *item* as taken by the current handler; return its message."""
        if self.taken is None:
            self.taken = []
        self.taken.append(item)
        if type(item) is not Envelope:
            return item
        if item.asker is not None and item.state == QUEUED:
            item.state = RUNNING
        tr = self.rt.tracer
        if tr is not None:
            tr.emit(
                "receive",
                self.path,
                None,
                item.id,
                self.cause_id(),
                item.id if item.asker else None,
                item.msg,
                why,
            )
        return item.msg

    async def _park(self, want: tuple[type, ...]) -> None:
        if self.stopping is not _NOT_STOPPING and self.loop_scope is not None:
            self.loop_scope.cancel()
        self.waiting = True
        try:
            await self.mailbox.wait_put(want)
        finally:
            self.waiting = False

    async def receive(self, want: tuple[type, ...]) -> Any:
        while True:
            item = self.mailbox.take(want)
            if item is not None:
                msg = self._taken(item, "selective")
                await trio.lowlevel.checkpoint()
                return msg
            await self._park(want)

    async def serve_until(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        serve: tuple[type, ...],
        interrupt: tuple[type, ...],
    ) -> Completed[Any] | Interrupted:
        want = serve + interrupt
        box: list[Any] = []
        mb = self.mailbox

        async def run_fn() -> None:
            value = await fn(*args)
            box.append(value)
            mb.wake()

        tname = _task_name(fn, None)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.run_task, run_fn, (), tname, name=f"{self.path}:{tname}")
                while True:
                    if box:
                        return Completed(box[0])
                    item = mb.take(want) if want else None
                    if item is None:
                        await self._park(want or (type(None),))
                        continue
                    msg = message_of(item)
                    if interrupt and isinstance(msg, interrupt):
                        nursery.cancel_scope.cancel()
                        return Interrupted(self._taken(item, "interrupt"))
                    await self._dispatch(item)
        except BaseExceptionGroup as group:
            # Our own nursery wraps what fn (or a served handler) raised: give the caller
            # the exception itself, as the docstring promises.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- tasks and timers ------------------------------------------------------------

    async def run_task(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], tname: str
    ) -> None:
        tr = self.rt.tracer
        if tr is None:
            await fn(*args)
            return
        tr.emit("task_start", self.path, None, None, self.cause_id(), None, None, tname)
        try:
            await fn(*args)
        except BaseException as exc:
            tr.emit(
                "task_end",
                self.path,
                None,
                None,
                None,
                None,
                None,
                f"{tname}: {describe(_unwrap(exc))}",
            )
            raise
        tr.emit("task_end", self.path, None, None, None, None, None, f"{tname}: ok")

    async def run_started_task(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        tname: str,
        *,
        task_status: trio.TaskStatus[Any],
    ) -> None:
        async def call() -> None:
            await fn(*args, task_status=task_status)

        await self.run_task(call, (), tname)

    async def timer_task(
        self, handle: TimerHandle, delay: float, period: float | None, msg: Any
    ) -> None:
        with handle._scope:
            deadline = trio.current_time() + delay
            while True:
                await trio.sleep_until(deadline)
                await self.post(msg)
                if period is None:
                    return
                deadline += period

    async def post(self, msg: Any) -> None:
        """Tell from the runtime itself (timers): admission refusals are traced, not raised."""
        try:
            await self.ref._send(msg, raise_reject=False)
        except ActorGone:
            pass

    # -- stop, exit and drain ----------------------------------------------------------

    def request_stop(self, reason: object, grace: float | None) -> None:
        if self.state == "exited":
            return
        if self.stopping is _NOT_STOPPING:
            self.stopping = reason
        if self.backoff_scope is not None:
            self.backoff_scope.cancel()
        self.mailbox.wake()
        scope = self.loop_scope
        if scope is not None and self.current is not None:
            if grace == 0 or self.waiting:
                scope.cancel()
            elif grace is not None:
                scope.deadline = min(scope.deadline, trio.current_time() + grace)
        if grace is not None:
            self.stop_grace = grace if self.stop_grace is None else min(self.stop_grace, grace)

    def _close_and_drain(self, reason: object) -> None:
        """Close the mailbox and answer everything still queued (idempotent)."""
        mb = self.mailbox
        if not mb.closed:
            self.exit_reason = reason
            for task in mb.close():
                reschedule(task)  # blocked senders wake, see closed, raise ActorGone
        inst = self.instance or self.last_instance
        tr = self.rt.tracer
        for item in mb.drain():
            self.dropped += 1
            msg = message_of(item)
            try:
                answer = inst.drain(msg) if inst is not None else ActorGone(self.path, reason)
            except Exception as exc:
                answer = exc
            if type(item) is not Envelope:
                continue
            if tr is not None:
                tr.emit(
                    "drop",
                    self.path,
                    None,
                    item.id,
                    None,
                    item.id if item.asker else None,
                    msg,
                    "drained",
                )
            if item.asker is not None:
                if isinstance(answer, BaseException):
                    self._answer(item, outcome.Error(answer))
                else:
                    self._answer(item, outcome.Value(answer))
            else:
                item.state = DONE

    def _finalize(self, reason: object) -> None:
        if self.exit_reason is None or not self.mailbox.closed:
            self.exit_reason = reason
        self._close_and_drain(self.exit_reason)
        self.state = "exited"
        self.instance = None
        self.start_status = None
        if self.watchers:
            term = Terminated(self.ref, self.exit_reason)
            for watcher in self.watchers:
                watcher.deliver_system(term)
            self.watchers = None
        siblings = self.parent.children if self.parent is not None else self.rt._children
        if siblings is not None and siblings.get(self.name) is self:
            del siblings[self.name]
        tr = self.rt.tracer
        if tr is not None:
            tr.emit("stop", self.path, None, None, None, None, None, _reason_str(self.exit_reason))
        if self.exited_event is not None:
            self.exited_event.set()

    def add_watcher(self, watcher: ActorCell) -> None:
        if self.state == "exited":
            watcher.deliver_system(Terminated(self.ref, self.exit_reason))
        else:
            if self.watchers is None:
                self.watchers = []
            self.watchers.append(watcher)

    def deliver_system(self, msg: Any) -> None:
        """Enqueue a runtime message, bypassing type checks, admission and capacity."""
        if self.mailbox.closed:
            return
        env = Envelope(msg, None, self.rt.new_id())
        tr = self.rt.tracer
        if tr is not None:
            tr.emit("send", self.path, None, env.id, None, None, msg, "system")
        prio = self.priority_fn(msg) if self.priority_fn is not None else 0
        self.mailbox.put(env, prio)

    def on_withdraw(self, env: Envelope, why: str) -> None:
        """Trace an ask given up by its caller (``why``: "cancelled" or "timeout")."""
        tr = self.rt.tracer
        if tr is not None:
            kind = "cancel" if why == "cancelled" else "timeout"
            detail = why if env.state == WITHDRAWN else f"{why} while running"
            tr.emit(
                kind,
                self.path,
                _task_actor(env.asker),
                env.id,
                None,
                env.id,
                env.msg,
                detail,
            )

    def _trace_fail(self, exc: BaseException) -> None:
        tr = self.rt.tracer
        if tr is not None:
            tr.emit("fail", self.path, None, None, None, None, None, describe(exc))


def emit_from_sender(
    tracer: Any,
    kind: str,
    target: str,
    msg_id: int | None,
    corr: int | None,
    msg: Any,
    detail: str | None = None,
) -> None:
    """Trace a step about *target* caused by the calling task's actor (if any)."""
    sender = current_cell.get()
    if sender is None:
        tracer.emit(kind, target, None, msg_id, None, corr, msg, detail)
    else:
        tracer.emit(kind, target, sender.path, msg_id, sender.cause_id(), corr, msg, detail)


def _task_name(fn: object, name: str | None) -> str:
    if name is not None:
        return name
    qualname = getattr(fn, "__qualname__", None)
    return qualname if isinstance(qualname, str) else repr(fn)


def _reason_str(reason: object) -> str:
    if isinstance(reason, str):
        return reason
    return describe(reason) if isinstance(reason, BaseException) else repr(reason)


def describe(exc: BaseException) -> str:
    """An exception for a trace detail, without memory addresses: Trio's ``Cancelled``
    repr names the cancelling task with its id, which would make traces of the same seed
    differ between processes."""
    if isinstance(exc, trio.Cancelled):
        return "Cancelled()"
    if isinstance(exc, BaseExceptionGroup):
        inner = ", ".join(describe(e) for e in exc.exceptions)
        return f"{type(exc).__name__}({exc.message!r}, [{inner}])"
    return repr(exc)


def _task_actor(task: Task | None) -> str | None:
    """Path of the actor a task belongs to (for trace ``peer``), if any."""
    if task is None:
        return None
    try:
        cell = task.context.get(current_cell)
    except Exception:  # pragma: no cover
        return None
    return cell.path if cell is not None else None
