"""``ActorRef``: the only way to talk to an actor. Holds the senders' paths ``tell`` and
``ask``; the mailbox logic itself is ``Mailbox``'s (``try_put`` is the fast path)."""

from __future__ import annotations

from dataclasses import dataclass
from threading import get_ident
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint, wait_task_rescheduled
from typing_extensions import TypeVar as DefaultTypeVar

from ._context import OUTSIDE, current_cell, current_sender, outside_cause
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
        if cell.plain:
            if not mb.try_put(msg, msg):
                await self._tell_slow(cell, mb, msg)
        elif (
            (tr := cell.rt.tracer) is not None
            and cell.admit_fn is None
            and cell.priority_fn is None
            and mb.try_put(msg, msg)
        ):
            # Traced, no admission or priority hook: the message bare into the mailbox and
            # its send event's seq (the message's id) into the mailbox's ids, no envelope
            # (Mailbox.ids). The actor cannot run in between: nothing here yields.
            # ---- hot path (keep in step with current_sender and Tracer.send's run) ----
            sender = current_cell.get()
            if sender is not None:
                spath: str | None = sender.path
                cur = sender.current  # (current_sender inlined)
                cause = cur.id if cur is not None else None
            elif OUTSIDE[0]:
                # A cause from outside any actor (``caused_by``): read only once one was
                # ever set, so the plain traced tell stays as cheap.
                spath, cause = None, outside_cause.get()
            else:
                spath = cause = None
            try:
                if not (
                    cell.rt.runs
                    and (run := tr.send_run) is not None  # type: ignore[attr-defined]
                    and (mid := run.add(cell.path, msg, spath, cause)) is not None
                ):
                    # Not the same send as the one before with nothing traced since (the
                    # tracer's pending SendRun takes that, traces._runs): its own event.
                    mid = tr.send(cell.path, spath, cause, False, msg)
            except BaseException:
                mb.unput()  # (e.g. the tracer's redact raised): nothing was sent
                raise
            # ---- end of hot path ----------------------------------------------------
            mb.ids.append(mid)  # type: ignore[union-attr]
        else:
            await self._tell_slow(cell, mb, msg)
        rt = cell.rt
        rt.tell_budget -= 1
        if rt.tell_budget <= 0:
            rt.tell_budget = rt.next_tell_budget()
            await cancel_shielded_checkpoint()

    async def _tell_slow(self, cell: ActorCell, mb: Mailbox, msg: Any) -> None:
        """``tell`` off the fast paths: admission or priority hooks, or a full mailbox."""
        if mb.has_space():
            self._enqueue(cell, mb, msg, False, True)
        else:
            await self._tell_blocked(cell, mb, msg)

    async def _tell_blocked(self, cell: ActorCell, mb: Mailbox, msg: Any) -> None:
        """``tell`` when the mailbox is full (or closed): wait for a reserved slot."""
        if mb.closed:
            raise ActorGone(cell.path, cell.exit_reason)
        self._check_still_open(cell, mb, await mb.wait_space())
        self._enqueue(cell, mb, msg, True, True)

    @staticmethod
    def _check_still_open(cell: ActorCell, mb: Mailbox, reserved: bool) -> None:
        """After a wait for space: ``ActorGone`` if the mailbox closed meanwhile (giving
        back a slot reserved just before the close, so none leaks)."""
        if mb.closed:
            if reserved:
                mb.release()
            raise ActorGone(cell.path, cell.exit_reason)

    def _enqueue(
        self, cell: ActorCell, mb: Mailbox, msg: Any, reserved: bool, raise_reject: bool
    ) -> None:
        """Admission, priority, tracing and put, for a sender that has its slot."""
        prio = 0
        if cell.admit_fn is not None or cell.priority_fn is not None:
            decided = self._admit(cell, mb, msg, reserved, raise_reject)
            if not isinstance(decided, int):
                return  # refused (ignored, or rejected without raising)
            prio = decided
        rt = cell.rt
        tr = rt.tracer
        if tr is None:
            mb.put(msg, prio, reserved=reserved)
            return
        sender, cause = current_sender()
        mid = tr.send(cell.path, sender, cause, False, msg)
        mb.put(Envelope(msg, None, mid, mb), prio, reserved=reserved)

    def _admit(
        self, cell: ActorCell, mb: Mailbox, msg: Any, reserved: bool, raise_reject: bool
    ) -> int | Admit:
        """Run the actor's ``admit`` and ``priority`` hooks for *msg*: its priority, or the
        refusing ``Admit`` if admission ignored it (or rejected it and *raise_reject* is
        false; with it true a rejection raises its exception here).

        Whatever the hooks do - refuse, raise, return the wrong type - a slot reserved for
        this sender is given back, so it never leaks; their own exceptions (and
        ``TypeError`` for a wrong return type) go to the sender."""
        try:
            admit = cell.admit_fn
            if admit is not None:
                decision = admit(msg)
                if type(decision) is not Admit:
                    raise TypeError(
                        f"{cell.path!r}: admit({type(msg).__name__}) returned {decision!r}; "
                        "it must return Admit.ENQUEUE, Admit.ignore(...) or Admit.reject(...)"
                    )
                if decision.action:
                    if reserved:
                        reserved = False
                        mb.release()
                    self._refused(decision, msg, raise_reject)
                    return decision
            if cell.priority_fn is None:
                return 0
            prio = cell.priority_fn(msg)
            if type(prio) is not int:
                raise TypeError(
                    f"{cell.path!r}: priority({type(msg).__name__}) returned {prio!r}; "
                    "priorities are ints"
                )
            return prio
        except BaseException:
            if reserved:
                mb.release()
            raise

    def tell_nowait(self: ActorRef[Handles[_M, Any]], msg: _M) -> None:
        """Enqueue *msg* or raise ``MailboxFull`` at once (also ``UnhandledMessage``, the
        admission's exception, ``ActorGone``). Never yields.

        Only from the runtime's own thread (``RuntimeError`` otherwise, before anything is
        touched); from another thread use ``trio.from_thread.run_sync(ref.tell_nowait, m)``.
        """
        cell = self._cell
        if get_ident() != cell.rt.thread:
            raise RuntimeError(
                f"tell_nowait to {cell.path!r} from a thread the runtime does not run in; "
                "use trio.from_thread.run_sync(ref.tell_nowait, msg)"
            )
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
        self._check_still_open(cell, mb, await mb.wait_space())
        self._enqueue(cell, mb, msg, True, raise_reject)

    def _refused(self, decision: Admit, msg: Any, raise_reject: bool) -> None:
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

    async def ask(
        self: ActorRef[Handles[_M, _R]], msg: _M, *, timeout: float | None = None
    ) -> _R:
        """Send *msg* and wait for the handler's return value.

        Ends with the reply, the handler's exception (the actor keeps running),
        ``AskTimeout`` after *timeout* seconds (mailbox wait included; a running handler
        is not cancelled, its reply is discarded), ``ActorGone``, ``UnhandledMessage``,
        the admission's exception, ``AskDeadlock`` (the ask would close a cycle of actors
        waiting on each other: raised at once, nothing sent), or the caller's own
        cancellation (which withdraws a still-queued request: the actor never handles it).
        Never hangs otherwise.
        """
        cell = self._cell
        if not isinstance(msg, cell.accepts):
            cell.refuse_unhandled(msg)
        task = uncancelled_task()
        if task is None:
            await checkpoint()  # raises Cancelled
            raise AssertionError("unreachable")  # pragma: no cover
        deadline = 0.0
        rt = cell.rt
        if timeout is not None:
            if not timeout >= 0:
                raise ValueError(f"ask timeout must be >= 0 or None, got {timeout!r}")
            deadline = rt.now() + timeout
        # An actor asking from its own task (handler or on_start) waits on the target:
        # record the edge, refusing the ask if it would close a cycle (AskDeadlock) -
        # unless the target has exited, which ActorGone says more precisely.
        waiter = current_cell.get()
        if waiter is not None and waiter.task is task:
            if cell.mailbox.closed:
                raise ActorGone(cell.path, cell.exit_reason)
            waiter.wait_on(cell)
        else:
            waiter = None
        try:
            mb = cell.mailbox
            tr = rt.tracer
            if cell.admit_fn is None and cell.priority_fn is None and tr is None:
                # The untraced fast path: no admission, no priority, nothing to record.
                env = Envelope(msg, task, 0, mb)
                if not mb.try_put(env, msg):
                    reserved = False
                    if not mb.has_space():
                        reserved = await self._wait_space_for_ask(
                            cell, mb, msg, timeout, deadline
                        )
                    mb.put(env, 0, reserved=reserved)
            else:
                reserved = False
                if not mb.has_space():
                    reserved = await self._wait_space_for_ask(cell, mb, msg, timeout, deadline)
                prio = self._admit(cell, mb, msg, reserved, True)
                if type(prio) is not int:  # ignored: the asker gets the reply at once
                    if waiter is not None:
                        waiter.waiting_on = None  # not waiting any more (wait_on)
                    await cancel_shielded_checkpoint()
                    return prio.reply  # type: ignore[union-attr,no-any-return]
                if tr is None:
                    env = Envelope(msg, task, 0, mb)
                else:
                    sender, cause = current_sender()
                    env = Envelope(msg, task, tr.send(cell.path, sender, cause, True, msg), mb)
                mb.put(env, prio, reserved=reserved)
            if timeout is not None:
                rt.deadlines.add(env, timeout, deadline)
            if waiter is not None:
                waiter.waiting_for = env  # answered, the edge is over (ActorCell.blocked_on)
            try:
                return await wait_task_rescheduled(env.abort)  # type: ignore[no-any-return]
            except trio.Cancelled:
                # Our own cancellation withdrew (or abandoned) the request: trace it here,
                # in this task's turn, so that traces do not depend on Trio's abort order.
                if tr is not None and env.state >= WITHDRAWN:
                    cell.on_withdraw(env, "cancelled")
                raise
        finally:
            if waiter is not None:
                waiter.waiting_on = waiter.waiting_for = None

    async def _wait_space_for_ask(
        self, cell: ActorCell, mb: Mailbox, msg: Any, timeout: float | None, deadline: float
    ) -> bool:
        """Wait for a reserved slot (within the ask's deadline); True once reserved."""
        if mb.closed:
            raise ActorGone(cell.path, cell.exit_reason)
        reserved = False
        if timeout is None:
            reserved = await mb.wait_space()
        else:
            with trio.move_on_at(deadline) as scope:
                reserved = await mb.wait_space()
            if scope.cancelled_caught:
                raise AskTimeout(cell.path, msg, timeout)
        self._check_still_open(cell, mb, reserved)
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
                # An actor's own task waiting for the exit is a wait-for edge (AskDeadlock
                # for the target's handler if it then asks this actor).
                waiter = current_cell.get()
                if waiter is not None and waiter.task is trio.lowlevel.current_task():
                    waiter.wait_on(cell)  # AskDeadlock if *cell* waits on us (a stop cycle)
                else:
                    waiter = None
                try:
                    await cell.wait_exited()
                finally:
                    if waiter is not None:
                        waiter.waiting_on = None
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
