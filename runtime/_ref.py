"""``ActorRef``: the only way to talk to an actor. Holds the senders' paths ``tell`` and
``ask``; the mailbox logic itself is ``Mailbox``'s (``try_put`` is the fast path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint, wait_task_rescheduled
from typing_extensions import TypeVar as DefaultTypeVar

from ._context import current_cell, current_sender
from ._errors import ActorGone, AskTimeout, MailboxFull
from ._mailbox import WITHDRAWN, Envelope
from ._messages import Admit
from ._trio_private import cancel_pending, uncancelled_task

if TYPE_CHECKING:
    from ._actor import Actor
    from ._cell import ActorCell
    from ._mailbox import Mailbox

__all__ = ["TELL_YIELD_EVERY", "ActorRef", "ActorStatistics", "Handles"]

#: ``tell`` that does not block yields to the scheduler once every this many calls
#: (per runtime; a task never runs more than this many tells without yielding).
TELL_YIELD_EVERY: Final = 128

#: The actor class behind a ref (``ActorRef[Counter]``); ``ActorRef`` alone means any actor.
A_co = DefaultTypeVar("A_co", covariant=True, default=Any)
M_contra = TypeVar("M_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)
_M = TypeVar("_M")
_R = TypeVar("_R")


class Handles(Protocol[M_contra, R_co]):
    """An actor whose ``handle`` takes ``M`` and returns ``R``: what a typed ref needs to
    check a message's type and give an ask's reply its type."""

    async def handle(self, msg: M_contra) -> R_co: ...


@dataclass(frozen=True)
class ActorStatistics:
    """A snapshot of one actor (``ref.statistics()``).

    ``queued``/``capacity``/``tasks_waiting_put``/``reserved`` describe the mailbox (see
    ``MailboxStatistics``); ``handled`` counts
    messages whose handler ran; ``rejected``/``ignored`` admission refusals (and
    ``tell_nowait`` on a full mailbox); ``dropped`` messages answered by the drain hook;
    ``unhandled`` sends refused for their type; ``restarts``/``failures`` the supervision
    history; ``children`` live child actors.
    """

    name: str
    path: str
    state: str
    queued: int
    capacity: int
    tasks_waiting_put: int
    reserved: int
    handled: int
    rejected: int
    ignored: int
    dropped: int
    unhandled: int
    restarts: int
    failures: int
    children: int


class ActorRef(Generic[A_co]):
    """A handle to an actor. Valid across restarts; after the final exit every send
    raises ``ActorGone``. Compare and hash by identity.

    ``ActorRef[Counter]`` (what ``spawn(Counter)`` returns) lets a type checker check the
    messages sent against ``Counter.handle``'s annotation and type an ask's reply."""

    __slots__ = ("__weakref__", "_cell")

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell

    def __repr__(self) -> str:
        return f"<ActorRef {self._cell.path} {self._cell.state}>"

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def path(self) -> str:
        return self._cell.path

    @property
    def instance(self) -> Actor | None:
        """The live actor object (``None`` while restarting or after exit). For tests."""
        return self._cell.instance

    @property
    def exit_reason(self) -> object:
        """Why the actor exited (``None`` while it runs)."""
        return self._cell.exit_reason if self._cell.state == "exited" else None

    @property
    def alive(self) -> bool:
        return self._cell.state != "exited"

    # -- sending ------------------------------------------------------------------

    async def tell(self: ActorRef[Handles[_M, Any]], msg: _M) -> None:
        """Enqueue *msg*; waits while the mailbox is full (FIFO among waiting senders).

        Raises ``UnhandledMessage`` (type not accepted), the admission's exception
        (``Admit.reject``), or ``ActorGone``. Checks for cancellation on every call and
        yields only when it blocks or every ``TELL_YIELD_EVERY`` calls.
        """
        cell = self._cell
        if not isinstance(msg, cell.accepts):
            cell.refuse_unhandled(msg)
        if cancel_pending():
            await checkpoint()
        mb = cell.mailbox
        if not (cell.plain and mb.try_put(msg, msg)):
            if mb.has_space():
                self._enqueue(cell, mb, msg, False, True)
            else:
                await self._tell_blocked(cell, mb, msg)
        rt = cell.rt
        rt.tell_budget -= 1
        if rt.tell_budget <= 0:
            rt.tell_budget = rt.next_tell_budget()
            await cancel_shielded_checkpoint()

    async def _tell_blocked(self, cell: ActorCell, mb: Mailbox, msg: Any) -> None:
        """``tell`` when the mailbox is full (or closed): wait for a reserved slot."""
        if mb.closed:
            raise ActorGone(cell.path, cell.exit_reason)
        await mb.wait_space()
        if mb.closed:
            raise ActorGone(cell.path, cell.exit_reason)
        self._enqueue(cell, mb, msg, True, True)

    def _enqueue(
        self, cell: ActorCell, mb: Mailbox, msg: Any, reserved: bool, raise_reject: bool
    ) -> None:
        """Admission, priority, tracing and put, for a sender that has its slot."""
        admit = cell.admit_fn
        if admit is not None:
            decision = admit(msg)
            if decision.action:
                if reserved:
                    mb.release()
                self._refused(decision, msg, raise_reject)
                return
        prio = 0 if cell.priority_fn is None else cell.priority_fn(msg)
        rt = cell.rt
        tr = rt.tracer
        if tr is None:
            mb.put(msg, prio, reserved=reserved)
            return
        env = Envelope(msg, None, rt.new_id(), mb)
        sender, cause = current_sender()
        tr.send(cell.path, sender, cause, env.id, None, msg)
        mb.put(env, prio, reserved=reserved)

    def tell_nowait(self: ActorRef[Handles[_M, Any]], msg: _M) -> None:
        """Enqueue *msg* or raise ``MailboxFull`` at once (also ``UnhandledMessage``, the
        admission's exception, ``ActorGone``). Never yields."""
        cell = self._cell
        if not isinstance(msg, cell.accepts):
            cell.refuse_unhandled(msg)
        mb = cell.mailbox
        if not mb.has_space():
            if mb.closed:
                raise ActorGone(cell.path, cell.exit_reason)
            cell.rejected += 1
            tr = cell.rt.tracer
            if tr is not None:
                sender, cause = current_sender()
                tr.admit(cell.path, sender, cause, msg, "full")
            raise MailboxFull(cell.path, mb.size, msg)
        self._enqueue(cell, mb, msg, False, True)

    async def _send(self, msg: Any, *, raise_reject: bool) -> None:
        """``tell`` for the runtime's own messages (timers): a refusal is traced, not raised."""
        cell = self._cell
        mb = cell.mailbox
        if mb.has_space():
            await checkpoint()
            self._enqueue(cell, mb, msg, False, raise_reject)
            return
        if mb.closed:
            raise ActorGone(cell.path, cell.exit_reason)
        await mb.wait_space()
        if mb.closed:
            raise ActorGone(cell.path, cell.exit_reason)
        self._enqueue(cell, mb, msg, True, raise_reject)

    def _refused(self, decision: Admit, msg: Any, raise_reject: bool) -> Any:
        cell = self._cell
        tr = cell.rt.tracer
        if decision.action == 1:
            cell.ignored += 1
            detail = "ignore"
        else:
            cell.rejected += 1
            detail = f"reject: {decision.exc!r}"
        if tr is not None:
            sender, cause = current_sender()
            tr.admit(cell.path, sender, cause, msg, detail)
        if decision.action != 1 and raise_reject:
            raise decision.exc  # type: ignore[misc]
        return decision.reply

    async def ask(
        self: ActorRef[Handles[_M, _R]], msg: _M, *, timeout: float | None = None
    ) -> _R:
        """Send *msg* and wait for the handler's return value.

        Ends with the reply, the handler's exception (the actor keeps running),
        ``AskTimeout`` after *timeout* seconds (mailbox wait included; a running handler
        is not cancelled, its reply is discarded), ``ActorGone``, ``UnhandledMessage``,
        the admission's exception, or the caller's own cancellation (which withdraws a
        still-queued request: the actor never handles it). Never hangs otherwise.
        """
        cell = self._cell
        if not isinstance(msg, cell.accepts):
            cell.refuse_unhandled(msg)
        task = uncancelled_task()
        if task is None:
            await checkpoint()  # raises Cancelled
            raise AssertionError("unreachable")  # pragma: no cover
        if task is cell.task and cell.current is not None:
            raise RuntimeError(
                f"{cell.path!r} asked itself from its own handler; that would deadlock"
            )
        mb = cell.mailbox
        rt = cell.rt
        deadline = 0.0
        if timeout is not None:
            if not timeout >= 0:
                raise ValueError(f"ask timeout must be >= 0 or None, got {timeout!r}")
            deadline = rt.now() + timeout
        tr = rt.tracer
        if cell.admit_fn is None and cell.priority_fn is None and tr is None:
            # The untraced fast path: no admission, no priority, nothing to record.
            env = Envelope(msg, task, 0, mb)
            if not mb.try_put(env, msg):
                reserved = False
                if not mb.has_space():
                    reserved = await self._wait_space_for_ask(cell, mb, msg, timeout, deadline)
                mb.put(env, 0, reserved=reserved)
        else:
            reserved = False
            if not mb.has_space():
                reserved = await self._wait_space_for_ask(cell, mb, msg, timeout, deadline)
            admit = cell.admit_fn
            if admit is not None:
                decision = admit(msg)
                if decision.action:
                    if reserved:
                        mb.release()
                    reply = self._refused(decision, msg, True)
                    await cancel_shielded_checkpoint()
                    return reply  # type: ignore[no-any-return]
            if tr is None:
                env = Envelope(msg, task, 0, mb)
            else:
                env = Envelope(msg, task, rt.new_id(), mb)
                sender, cause = current_sender()
                tr.send(cell.path, sender, cause, env.id, env.id, msg)
            prio = 0 if cell.priority_fn is None else cell.priority_fn(msg)
            mb.put(env, prio, reserved=reserved)
        if timeout is not None:
            rt.deadlines.add(env, timeout, deadline)
        try:
            return await wait_task_rescheduled(env.abort)  # type: ignore[no-any-return]
        except trio.Cancelled:
            # Our own cancellation withdrew (or abandoned) the request: trace it here, in
            # this task's turn, so that traces do not depend on Trio's abort order.
            if tr is not None and env.state >= WITHDRAWN:
                cell.on_withdraw(env, "cancelled")
            raise

    async def _wait_space_for_ask(
        self, cell: ActorCell, mb: Mailbox, msg: Any, timeout: float | None, deadline: float
    ) -> bool:
        """Wait for a reserved slot (within the ask's deadline); True once reserved."""
        if mb.closed:
            raise ActorGone(cell.path, cell.exit_reason)
        if timeout is None:
            await mb.wait_space()
        else:
            with trio.move_on_at(deadline) as scope:
                await mb.wait_space()
            if scope.cancelled_caught:
                raise AskTimeout(cell.path, msg, timeout)
        if mb.closed:
            raise ActorGone(cell.path, cell.exit_reason)
        return True

    # -- lifecycle ---------------------------------------------------------------------

    async def stop(self, reason: object = "stop", *, grace: float | None = None) -> None:
        """Stop the actor gracefully and wait until it has exited.

        The handler in progress may finish; after *grace* seconds it is cancelled
        (``grace=0``: at once; ``None``: no limit). A handler waiting in ``receive`` or
        ``serve_until`` is cancelled at once. Queued messages are drained (not handled),
        then children stop (reverse start order), tasks are cancelled, ``on_stop`` runs.
        Never triggers a restart. Called from the actor itself (or a descendant), it only
        requests the stop and returns.
        """
        if grace is not None and not grace >= 0:
            raise ValueError(f"grace must be >= 0 or None, got {grace!r}")
        cell = self._cell
        if cell.state != "exited":
            cell.request_stop(reason, grace)
            if not self._caller_is_inside():
                await cell.wait_exited()
                return
        await checkpoint()

    def _caller_is_inside(self) -> bool:
        caller = current_cell.get()
        target = self._cell
        while caller is not None:
            if caller is target:
                return True
            caller = caller.parent
        return False

    async def wait_exited(self) -> object:
        """Wait until the actor has finally exited; returns its exit reason."""
        await self._cell.wait_exited()
        return self._cell.exit_reason

    def statistics(self) -> ActorStatistics:
        cell = self._cell
        mb = cell.mailbox.statistics()
        return ActorStatistics(
            name=cell.name,
            path=cell.path,
            state=cell.state,
            queued=mb.queued,
            capacity=mb.capacity,
            tasks_waiting_put=mb.tasks_waiting_put,
            reserved=mb.reserved,
            handled=cell.handled,
            rejected=cell.rejected,
            ignored=cell.ignored,
            dropped=cell.dropped,
            unhandled=cell.unhandled,
            restarts=cell.restarts,
            failures=cell.failures,
            children=len(cell.children) if cell.children else 0,
        )
