"""``ActorCell``: one actor's lifecycle, from spawn to its final exit.

An actor is one Trio task (``ActorCell.main``) that runs *incarnations* of the user's
class under its supervision policy (``_supervision.ChildSpec``). Each incarnation opens its
own nursery (child actors, child tasks, timers), runs ``on_start``, then the message loop
(``_loop.run``), until a stop request or a failure; then it stops gracefully: drain the
mailbox, stop children in reverse start order, cancel tasks, run ``on_stop``. The mailbox,
the ref and the watchers survive restarts; the final exit closes the mailbox, answers what
is still queued, and tells the watchers (``Terminated``).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import outcome
import trio
from trio.lowlevel import Task, current_task, reschedule

from trioxide.traces import unwrap

from . import _loop
from ._actor import Actor, TimerHandle, accepted_types
from ._context import current_cell, current_sender, task_actor, task_name
from ._errors import ActorGone, AskDeadlock, UnhandledMessage
from ._loop import NOT_STOPPING
from ._mailbox import DONE, RUNNING, WITHDRAWN, Envelope, Mailbox, message_of
from ._messages import Admit, Terminated
from ._ref import ActorRef
from ._supervision import ChildSpec, RestartIntensity
from ._trio_private import cancel_pending

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["START", "ActorCell"]

#: ``ActorCell.waiting_for`` of a spawner waiting for its child's ``on_start``.
START = "start"


class ActorCell:
    """Everything the runtime knows about one actor; survives restarts."""

    __slots__ = (
        "accepts",
        "admit_fn",
        "args",
        "backoff_scope",
        "cancel_cause",
        "children",
        "cls",
        "current",
        "dropped",
        "exit_reason",
        "exited_event",
        "fail_cause",
        "failures",
        "handle_fn",
        "handled",
        "ignored",
        "instance",
        "intensity",
        "last_instance",
        "loop_scope",
        "mailbox",
        "name",
        "nursery",
        "orphans",
        "parent",
        "path",
        "plain",
        "priority_fn",
        "ref",
        "rejected",
        "restarts",
        "rt",
        "spec",
        "start_status",
        "state",
        "stop_deadline",
        "stopping",
        "taken",
        "task",
        "unhandled",
        "waiting",
        "waiting_for",
        "waiting_on",
        "watchers",
    )

    def __init__(
        self,
        rt: Runtime,
        parent: ActorCell | None,
        cls: type[Actor],
        args: tuple[Any, ...],
        name: str,
        path: str,
        spec: ChildSpec,
    ) -> None:
        self.rt = rt
        self.parent = parent
        self.cls = cls
        self.args = args
        self.name = name
        self.path = path
        self.spec = spec
        self.accepts = accepted_types(cls)
        self.mailbox = Mailbox(spec.mailbox_size, traced=rt.tracer is not None)
        self.mailbox.owner = self
        self.ref: ActorRef[Any] = ActorRef(self)
        # Untraced, no admission, no priority: senders may take the bare-message fast path.
        self.plain = (
            rt.tracer is None and cls.admit is Actor.admit and cls.priority is Actor.priority
        )
        self.intensity: RestartIntensity | None = None
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
        self.stopping: object = NOT_STOPPING
        self.stop_deadline = math.inf  # handlers are cancelled then (stop's grace)
        # The message being handled: an Envelope, or _loop.BARE for an untraced tell.
        self.current: Any = None
        self.taken: list[Envelope] | None = None  # asks taken (receive, Interrupted), owed
        self.orphans: list[Envelope] | None = None  # asks to answer once the failure is known
        self.waiting = False  # the handler is parked in receive()/serve_until()
        # The actor this one's own task is blocked on (an ask, a spawn's on_start, a stop
        # waiting for the exit): the edges of the wait-for graph AskDeadlock walks.
        self.waiting_on: ActorCell | None = None
        # What that wait is for: an ask (its envelope), a spawned child's ``on_start``
        # (``START``), or - ``None`` - the target's exit. It can be over before this
        # actor's task runs again to clear it (``blocked_on``).
        self.waiting_for: Envelope | str | None = None
        # Traced runs only (msg_ids): the message whose handler raised the failure being
        # handled (the ``fail`` event's cause), and the message that led to cancelling
        # this actor's handler or tasks - the one its stopper was handling, or the
        # interrupting message of ``serve_until`` (the cause of cancelled ``handle``,
        # ``task_end`` and ``cancel`` events).
        self.fail_cause: int | None = None
        self.cancel_cause: int | None = None
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
            sender, cause = current_sender()
            accepted = str([t.__name__ for t in self.accepts])
            tr.unhandled(self.path, sender, cause, msg, accepted)
        raise UnhandledMessage(self.path, msg, self.accepts)

    def cause_id(self) -> int | None:
        """The ``msg_id`` being handled (``None`` between messages or if untraced)."""
        env = self.current
        return env.id if env is not None else None

    def wait_on(self, target: ActorCell) -> None:
        """Record that this actor's own task now waits on *target*; raise ``AskDeadlock``
        instead if *target* already waits (through a chain of actors) on this one.

        A wait that is over counts for nothing, although the waiting task has not run yet
        to clear it (``blocked_on``): a cycle through it is no deadlock."""
        chain = [self.path]
        c: ActorCell | None = target
        while c is not None:
            chain.append(c.path)
            if c is self:
                raise AskDeadlock(tuple(chain))
            c = c.blocked_on()
        self.waiting_on = target

    def blocked_on(self) -> ActorCell | None:
        """The actor this one's own task still waits on, if any: not one whose ask was
        answered (or given up), whose ``on_start`` this one spawned it for has completed,
        or that has exited."""
        target = self.waiting_on
        if target is None or target.state == "exited":
            return None
        why = self.waiting_for
        if type(why) is Envelope:
            return target if why.state <= RUNNING else None
        if why is START:
            return target if target.state == "starting" else None
        return target

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
        spec = self.spec
        try:
            while True:
                reason = "cancelled"
                try:
                    await self._incarnation()
                except Exception as exc:
                    failure = unwrap(exc)
                    reason = failure
                    self.answer_orphans(failure)
                    self.failures += 1
                    tr = self.rt.tracer
                    if tr is not None:
                        tr.fail(self.path, failure, self.fail_cause)
                        self.rt.on_failure(self, failure)  # the flight recorder's dump
                    self.fail_cause = None
                    if self.start_status is not None:
                        # The first on_start failed: the spawner gets the exception itself.
                        self.start_status = None
                        raise failure from None
                    if self.stopping is not NOT_STOPPING or self.supervisor_stopping():
                        # Failed while a stop was pending, or while what supervises it is
                        # stopping (and will stop it in turn): no restart. A supervised
                        # actor just ends; an unsupervised one escalates, because errors
                        # are never silently lost.
                        if spec.restart is not None:
                            return
                        raise
                    if not self._may_restart():
                        if spec.restart == "temporary":
                            return  # reported to monitors via Terminated, not escalated
                        raise
                    try:
                        await self._backoff()
                    except trio.Cancelled:
                        cancelled_from_outside = True
                    else:
                        cancelled_from_outside = cancel_pending()
                    if cancelled_from_outside:
                        # Cancelled from outside (a parent failing, the runtime's block
                        # raising): no restart can happen, and errors are never silently
                        # lost, so the failure escalates.
                        raise failure from None
                    if self.stopping is not NOT_STOPPING or self.supervisor_stopping():
                        return  # stopped while waiting to restart: ends with the failure
                    self.restarts += 1
                    if tr is not None:
                        tr.restart(self.path, self.restarts)
                    continue
                else:
                    reason = self.stopping
                    return
        finally:
            self.answer_orphans(reason)
            self._finalize(reason)

    def answer_orphans(self, reason: object) -> None:
        """Answer the asks whose handlers were cancelled by this incarnation's end, now
        that its reason (a failure, or the cancellation) is known (see ``_loop.gone``)."""
        orphans = self.orphans
        if orphans:
            self.orphans = None
            for env in orphans:
                _loop.answer(self, env, outcome.Error(ActorGone(self.path, reason)))

    def supervisor_stopping(self) -> bool:
        """Whether what supervises this actor is stopping - its parent, or for a top-level
        actor the runtime leaving its block - so that this actor will be stopped in turn.
        A failure then ends it instead of restarting it: a restart could only keep alive
        what is being shut down, and an actor stopped before it (a later sibling, stopped
        first) may be waiting on it, in ``on_start`` or ``on_stop``, which no grace cuts
        short (fault fuzzer seed 5517744: a crash-looping actor kept its later sibling's
        ``on_start`` ask unanswered, and leaving the block never ended)."""
        parent = self.parent
        if parent is not None:
            return parent.stopping is not NOT_STOPPING
        return self.rt.exiting

    def _may_restart(self) -> bool:
        spec = self.spec
        if spec.restart is None or spec.restart == "temporary":
            return False
        # permanent and transient both restart after an exception; neither after stop().
        if self.intensity is None:
            self.intensity = RestartIntensity(spec.max_restarts, spec.within)
        return self.intensity.allow(trio.current_time())

    async def _backoff(self) -> None:
        self.state = "restarting"
        delay = self.spec.backoff_delay(self.restarts + 1)
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
        self.handle_fn = inst.handle
        stop_reason: object = None
        ended: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await inst.on_start()
                self.state = "running"
                tr = self.rt.tracer
                if tr is not None:
                    tr.start(self.path)
                status = self.start_status
                if status is not None:
                    self.start_status = None
                    status.started()
                    del status
                with trio.CancelScope() as scope:
                    self.loop_scope = scope
                    try:
                        await _loop.run(self)
                    except BaseException as exc:
                        converted = _loop.unwrap_served(exc)
                        if converted is exc:
                            raise
                        raise converted from None  # a served tell raised: we fail
                self.loop_scope = None
                # Graceful stop: drain, stop children (reverse start order), cancel tasks.
                self.state = "stopping"
                stop_reason = self.stopping
                self._close_and_drain(stop_reason)
                for child in reversed(self.child_list()):
                    await child.ref.stop(stop_reason, grace=self.remaining_grace())
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
                await inst.on_stop(stop_reason if ended is None else unwrap(ended))
            finally:
                self.instance = None

    # -- tasks and timers ------------------------------------------------------------

    def start_task(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], name: str | None
    ) -> None:
        nursery = self.require_nursery()
        tname = task_name(fn, name)
        nursery.start_soon(self.run_task, fn, args, tname, name=f"{self.path}:{tname}")

    async def start_task_and_wait(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], name: str | None
    ) -> Any:
        nursery = self.require_nursery()
        tname = task_name(fn, name)
        return await nursery.start(
            self._run_started_task, fn, args, tname, name=f"{self.path}:{tname}"
        )

    async def run_task(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], tname: str
    ) -> None:
        tr = self.rt.tracer
        if tr is None:
            await fn(*args)
            return
        tr.task_start(self.path, self.cause_id(), tname)
        try:
            await fn(*args)
        except BaseException as exc:
            tr.task_end(self.path, tname, exc, self.cancel_cause)
            raise
        tr.task_end(self.path, tname, None)

    async def _run_started_task(
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

    def start_timer(self, delay: float, period: float | None, msg: Any) -> TimerHandle:
        self.check_accepts(msg)
        handle = TimerHandle()
        self.require_nursery().start_soon(self._timer_task, handle, delay, period, msg)
        return handle

    async def _timer_task(
        self, handle: TimerHandle, delay: float, period: float | None, msg: Any
    ) -> None:
        with handle._scope:
            deadline = trio.current_time() + delay
            while True:
                await trio.sleep_until(deadline)
                await self._post(msg)
                if period is None:
                    return
                deadline += period

    async def _post(self, msg: Any) -> None:
        """Tell from the runtime itself (timers): admission refusals are traced, not raised."""
        try:
            await self.ref._send(msg, raise_reject=False)
        except ActorGone:
            pass

    # -- stop, exit and drain ----------------------------------------------------------

    def request_stop(self, reason: object, grace: float | None) -> None:
        """Ask for a graceful stop: the loop takes no further message; the running
        handler is cancelled at once if parked in receive/serve_until, else after *grace*
        seconds (the earliest deadline of every stop asked for so far)."""
        if self.state == "exited":
            return
        if self.stopping is NOT_STOPPING:
            self.stopping = reason
            stopper = current_cell.get()
            if stopper is not None and self.cancel_cause is None:
                cause = stopper.cause_id()
                if cause is None and stopper.stopping is not NOT_STOPPING:
                    # A parent stopping its children on its way out: what stopped it.
                    cause = stopper.cancel_cause
                self.cancel_cause = cause
        if grace is not None:
            self.stop_deadline = min(self.stop_deadline, trio.current_time() + grace)
            if self.state == "stopping":
                # Already stopping its children (each waited with the grace of its time):
                # the children being stopped get the tighter remaining grace too.
                remaining = self.remaining_grace()
                for child in self.child_list():
                    if child.stopping is not NOT_STOPPING:
                        child.request_stop(child.stopping, remaining)
        if self.backoff_scope is not None:
            self.backoff_scope.cancel()
        self.mailbox.wake()
        scope = self.loop_scope
        if scope is not None and self.current is not None:
            if grace == 0 or self.waiting:
                scope.cancel()
            else:
                scope.deadline = min(scope.deadline, self.stop_deadline)

    def remaining_grace(self) -> float | None:
        """The grace left before this actor's stop deadline (children inherit it)."""
        if self.stop_deadline == math.inf:
            return None
        return max(0.0, self.stop_deadline - trio.current_time())

    def why(self, exc: BaseException) -> object:
        """The reason an asker is told when the incarnation handling its ask ends."""
        if type(exc) is _loop.ServedTellFailed:
            return exc.error
        if self.stopping is not NOT_STOPPING:
            return self.stopping
        return unwrap(exc)

    def _close_and_drain(self, reason: object) -> None:
        """Close the mailbox and answer everything still queued (idempotent)."""
        mb = self.mailbox
        if not mb.closed:
            self.exit_reason = reason
            for task in mb.close():
                # Blocked senders wake with no slot, see closed, raise ActorGone.
                reschedule(task, outcome.Value(False))
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
                tr.drop(self.path, item.id, item.id if item.asker else None, msg)
            if item.asker is not None:
                if isinstance(answer, BaseException):
                    _loop.answer(self, item, outcome.Error(answer))
                else:
                    _loop.answer(self, item, outcome.Value(answer))
            else:
                item.state = DONE

    def _finalize(self, reason: object) -> None:
        # An exception that ended the last incarnation is the exit reason even when a
        # stop had already closed the mailbox (on_stop raised, a task or child failed
        # during the graceful stop): errors are never replaced by the stop's reason.
        if isinstance(reason, BaseException) or self.exit_reason is None or not self.mailbox.closed:
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
        siblings = self.parent.children if self.parent is not None else self.rt.top_level
        if siblings is not None and siblings.get(self.name) is self:
            del siblings[self.name]
        tr = self.rt.tracer
        if tr is not None:
            tr.stop(self.path, self.exit_reason)
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
        mb = self.mailbox
        if mb.closed:
            return
        tr = self.rt.tracer
        mid = 0 if tr is None else tr.send(self.path, None, None, False, msg, system=True)
        env = Envelope(msg, None, mid, mb)
        prio = 0
        if self.priority_fn is not None:
            try:
                prio = self.priority_fn(msg)
            except Exception:
                prio = 0  # a system message is never lost to a faulty priority hook
            if type(prio) is not int:
                prio = 0
        mb.put(env, prio)

    def on_withdraw(self, env: Envelope, why: str) -> None:
        """Trace an ask given up by its caller (``why``: "cancelled" or "timeout")."""
        tr = self.rt.tracer
        if tr is not None:
            asker = current_cell.get()  # (called in the asker's task)
            tr.ask_ended(
                self.path,
                task_actor(env.asker),
                env.id,
                env.msg,
                why,
                env.state != WITHDRAWN,
                asker.cancel_cause if asker is not None and why == "cancelled" else None,
            )
