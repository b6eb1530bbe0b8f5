"""The bounded, prioritised mailbox and the envelopes it holds.

Hot-path rules (see docs/semantics.md):

* a queued item is either a **bare message** (an untraced ``tell``: no allocation beyond
  the message itself) or an ``Envelope`` (asks, traced messages, runtime messages);
* ``put`` and ``pop`` are synchronous and O(1) (one deque per priority level in use);
* ``pop`` is an attribute that is, in the common state (one priority level in use, no
  withdrawn envelope, no blocked sender), the level-0 deque's own ``popleft``: taking a
  message costs a C call, no Python frame. Every state change that leaves the common state
  switches it to the general ``_pop_slow`` and back (``_retune``), so the queue's
  rules live here only;
* the queued count is derived (deque lengths, minus withdrawn envelopes still in them),
  so a fast ``pop`` needs no bookkeeping;
* a withdrawn envelope (an ask whose caller was cancelled or timed out while it was
  queued) stays in its deque but no longer counts; ``pop`` skips it;
* the actor task parks only when it has nothing to do, and ``put`` wakes it only if it is
  parked and (for a selective ``receive``) the message matches what it waits for;
* senders blocked on a full mailbox are served FIFO: a freed slot is *reserved* for the
  first waiter, so a newcomer cannot overtake it;
* an idle actor's mailbox allocates nothing but itself: deques are created on first use.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sized
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import outcome
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

__all__ = ["Envelope", "Mailbox", "MailboxStatistics"]

# Envelope states.
QUEUED: Final = 0
RUNNING: Final = 1
DONE: Final = 2  # replied (or a message that was handled/drained)
WITHDRAWN: Final = 3  # an ask abandoned by its caller (cancel or timeout) while queued
ABANDONED: Final = 4  # an ask abandoned by its caller while its handler ran


class Envelope(msgspec.Struct, eq=False):
    """A queued message with identity (an ask, a traced tell, a runtime message):
    ``Envelope(msg, asker, id, mailbox)``; ``asker`` is the parked task of an ask, ``id``
    the message's trace id (0 untraced), ``mailbox`` is told when the asker withdraws.
    ``timeout``/``deadline`` are set for timed asks (``DeadlineQueue.add``).

    A msgspec Struct, not a class with ``__init__``: built in C, it costs a fraction of a
    Python constructor on the traced and ask paths; compared by identity. Tracked by the
    cyclic GC: an envelope sits in cycles (its mailbox's queue holds it and it holds the
    mailbox; a cell still refers to the one it took last), and an untracked one
    (``gc=False``, as it was) kept every actor, mailbox and task of a finished run alive
    (``tests/runtime/test_fault_fuzz.py::test_fuzzed_runs_leave_nothing_alive``).
    """

    msg: Any
    asker: Task | None
    id: int
    mailbox: Mailbox
    state: int = QUEUED
    timeout: float = 0.0
    deadline: float = 0.0

    # -- the asker side -----------------------------------------------------------

    def abort(self, _: object) -> Abort:
        """Trio abort callback: the asker was cancelled while waiting for the reply.

        Only state changes here, no tracing: Trio runs abort callbacks in an order that
        depends on object ids, so the asker traces its cancellation when it resumes.
        """
        if self.state == QUEUED:
            self.state = WITHDRAWN
            self.mailbox.withdrawn()
        elif self.state == RUNNING:
            self.state = ABANDONED  # the handler runs on; its reply will be discarded
        return Abort.SUCCEEDED

    def answer(self, result: outcome.Outcome[Any]) -> bool:
        """Deliver *result* to the asker; ``False`` if it is no longer waiting."""
        if self.state <= RUNNING:
            self.state = DONE
            reschedule(self.asker, result)  # type: ignore[arg-type]
            return True
        return False


def message_of(item: Any) -> Any:
    """The message of a queued item (bare message or envelope)."""
    return item.msg if type(item) is Envelope else item


@dataclass(frozen=True)
class MailboxStatistics:
    """A snapshot of a mailbox (Trio style).

    ``queued``: live messages waiting (the one being handled not counted); ``capacity``:
    ``mailbox_size``; ``tasks_waiting_put``: senders blocked on a full mailbox;
    ``reserved``: slots handed to woken senders and not yet used; ``receiver_waiting``:
    the actor is parked for a message; ``closed``: the actor has finally exited.
    """

    queued: int
    capacity: int
    tasks_waiting_put: int
    reserved: int
    receiver_waiting: bool
    closed: bool


def _pop_empty() -> Any:
    """``Mailbox.pop`` before anything was ever queued (shared: an idle actor allocates
    nothing for it)."""
    raise IndexError("pop from an empty mailbox")


class _LiveCount:
    """``Mailbox.ready`` outside the common state: the live count, computed."""

    __slots__ = ("_mailbox",)

    def __init__(self, mailbox: Mailbox) -> None:
        self._mailbox = mailbox

    def __len__(self) -> int:
        return self._mailbox.count


def _wanted(msg: Any, want: tuple[type, ...]) -> bool:
    """Whether a receiver parked for *want* must be woken by *msg*. A pattern whose
    predicate raises wakes it: the receiver's own search then meets the error, in its
    handler - never the sender, whose message is already queued (``runtime._pattern``)."""
    try:
        return isinstance(msg, want)
    except Exception:
        return True


class Mailbox:
    """Queued messages of one actor: bounded, FIFO within a priority, higher priority first.

    ``capacity`` counts queued messages only (not the one being handled). The runtime's
    system messages (``Terminated``) may exceed it: they are never lost.

    ``pop()`` takes the next live item (highest priority, then FIFO) and raises
    ``IndexError`` when there is none; ``ready`` is truthy while there is one. In the
    common state both are the level-0 deque's own (its ``popleft``, the deque itself), so
    the actor loop pays no Python call to take a message (``_retune`` keeps them right).
    """

    __slots__ = (
        "_limit",
        "_n_other",
        "_putters",
        "_q0",
        "_queues",
        "_reserved",
        "_traced",
        "_waiter",
        "_want",
        "_withdrawn",
        "closed",
        "ids",
        "owner",
        "pop",
        "ready",
        "size",
    )

    def __init__(self, capacity: int, *, traced: bool = False) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"mailbox_size must be a positive int, got {capacity!r}")
        self.size = capacity
        self.closed = False
        self._q0: deque[Any] | None = None  # priority 0, created on first put
        self._traced = traced
        #: Traced mailboxes only (else ``None``): the trace ids of the bare messages in the
        #: level-0 deque, in order. A traced tell on the fast path queues its message bare
        #: and its id here (``ActorRef.tell``), so it needs no envelope; the actor loop's
        #: fast pop takes the id with it, and every other way out of the mailbox
        #: (``pop`` outside the common state, ``first``, ``take``, ``drain``) hands such a
        #: message out in an envelope carrying its id (``_wrap``).
        self.ids: deque[int] | None = None
        # Every level, highest first, once a level other than 0 was used.
        self._queues: dict[int, deque[Any]] | None = None
        self._n_other = 0  # items in the deques of levels other than 0
        self._withdrawn = 0  # withdrawn envelopes still sitting in a deque
        self._waiter: Task | None = None  # the actor task, parked
        self._want: tuple[type, ...] | None = None  # what a parked receive() waits for
        self._putters: deque[Task] | None = None  # senders blocked on a full mailbox
        self._reserved = 0  # slots handed to woken putters, not yet used
        self.owner: Any = None  # the ActorCell (told about withdrawals, for tracing)
        self.pop: Callable[[], Any] = _pop_empty  # nothing queued yet (and nothing allocated)
        self.ready: Sized = ()
        self._limit = capacity  # senders may add while len(level-0 deque) < this (_retune)

    def _count(self) -> int:
        q = self._q0
        return (len(q) if q is not None else 0) + self._n_other - self._withdrawn

    @property
    def count(self) -> int:
        """Live (non-withdrawn) queued items."""
        return self._count()

    def __len__(self) -> int:
        return self.count

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            queued=self.count,
            capacity=self.size,
            tasks_waiting_put=len(self._putters) if self._putters else 0,
            reserved=self._reserved,
            receiver_waiting=self._waiter is not None,
            closed=self.closed,
        )

    def _retune(self) -> None:
        """Re-derive the fast paths after any change of levels, withdrawals, blocked
        senders, reservations or closing: ``pop``/``ready`` are the level-0 deque's own
        methods when that is all it takes, and ``_limit`` is the level-0 length below which
        ``try_put`` may admit (0 while a sender waits: it goes first)."""
        q = self._q0
        putters = self._putters
        if q is None and not putters:
            self.pop = _pop_empty  # never used: nothing was ever queued
            self.ready = ()
        elif q is not None and not self._n_other and not self._withdrawn and not putters:
            self.pop = q.popleft
            self.ready = q
        else:
            self.pop = self._pop_slow
            if type(self.ready) is not _LiveCount:
                self.ready = _LiveCount(self)
        self._limit = (
            0
            if putters or self.closed
            else self.size - self._n_other + self._withdrawn - self._reserved
        )

    # -- space ------------------------------------------------------------------------

    def has_space(self) -> bool:
        """Whether a sender may put now (a free slot, and no blocked sender ahead of it)."""
        q = self._q0
        return (len(q) if q is not None else 0) < self._limit

    async def wait_space(self) -> bool:
        """Park until a slot is reserved for the caller (FIFO among waiters).

        Returns True with one slot reserved: the caller must ``put(..., reserved=True)``
        or ``release()`` it - also if it finds the mailbox closed by then. Returns False
        if it was woken because the mailbox closed (``close()``'s waiters get
        ``outcome.Value(False)``): nothing reserved. Raises ``Cancelled`` (nothing
        reserved) if cancelled first.
        """
        task = current_task()
        putters = self._putters
        if putters is None:
            putters = self._putters = deque()
        putters.append(task)
        self._retune()  # a pop must now hand the freed slot on

        def abort(_: object) -> Abort:
            try:
                putters.remove(task)
            except ValueError:  # pragma: no cover - already woken
                pass
            self._retune()
            return Abort.SUCCEEDED

        reserved: bool = await wait_task_rescheduled(abort)
        return reserved

    def release(self) -> None:
        """Give back a reserved slot that will not be used."""
        self._reserved -= 1
        self._retune()
        self._wake_putter()

    def _wake_putter(self) -> None:
        putters = self._putters
        if putters and self.count + self._reserved < self.size and not self.closed:
            self._reserved += 1
            reschedule(putters.popleft(), outcome.Value(True))
            self._retune()

    # -- put / pop --------------------------------------------------------------------

    def try_put(self, item: Any, msg: Any) -> bool:
        """The senders' fast path: put *item* (whose message is *msg*) at priority 0 if a
        slot is free and no sender is waiting for one; otherwise change nothing and return
        False (the caller then takes the general path: wait, admission, priority, put)."""
        q = self._q0
        if q is None:
            q = self._new_q0()
        if len(q) >= self._limit:
            return False
        q.append(item)
        waiter = self._waiter
        if waiter is not None and (self._want is None or _wanted(msg, self._want)):
            self._waiter = None
            reschedule(waiter)
        return True

    def unput(self) -> None:
        """Take back the item the caller has just put with ``try_put`` (nothing has run
        since): a traced tell whose ``send`` raised before its id was queued."""
        assert self._q0 is not None
        self._q0.pop()

    def _wrap(self, item: Any, mid: int) -> Envelope:
        """A bare traced tell of the level-0 deque, in the envelope other paths expect."""
        return Envelope(item, None, mid, self)

    def put(self, item: Any, priority: int = 0, *, reserved: bool = False) -> None:
        """Enqueue a bare message or an envelope (synchronous; capacity is the caller's)."""
        msg = item.msg if type(item) is Envelope else item
        if priority == 0:
            q = self._q0
            if q is None:
                q = self._new_q0()
            q.append(item)
        else:
            self._level(priority).append(item)
            self._n_other += 1
        if reserved or priority:
            if reserved:
                self._reserved -= 1
            self._retune()
        waiter = self._waiter
        if waiter is not None and (self._want is None or _wanted(msg, self._want)):
            self._waiter = None
            reschedule(waiter)

    def _new_q0(self) -> deque[Any]:
        q = self._q0 = deque()
        if self._traced:
            self.ids = deque()
        if self._queues is not None:
            self._queues[0] = q
        self._retune()
        return q

    def _level(self, priority: int) -> deque[Any]:
        queues = self._queues
        if queues is None:
            q0 = self._q0 if self._q0 is not None else self._new_q0()
            queues = self._queues = {0: q0}
        q = queues.get(priority)
        if q is None:
            q = deque()
            self._queues = dict(sorted({**queues, priority: q}.items(), reverse=True))
        return q

    def _deques(self) -> list[tuple[int, deque[Any]]]:
        """The (level, deque) pairs in delivery order (highest priority first)."""
        if self._queues is not None:
            return list(self._queues.items())
        return [(0, self._q0)] if self._q0 is not None else []

    def _pop_slow(self) -> Any:
        """``pop`` outside the common state: levels, withdrawn envelopes, blocked senders."""
        for level, q in self._deques():
            while q:
                item = q.popleft()
                if level:
                    self._n_other -= 1
                if type(item) is Envelope:
                    if item.state == WITHDRAWN:
                        self._withdrawn -= 1
                        continue
                elif self.ids is not None and not level:
                    item = self._wrap(item, self.ids.popleft())
                if self._putters:
                    self._wake_putter()
                self._retune()
                return item
        self._retune()
        raise IndexError("pop from an empty mailbox")

    def _find(self, types: tuple[type, ...]) -> tuple[Any, deque[Any], int, int] | None:
        """The first live item whose message is one of *types* and where it is: ``(item,
        deque, index, bare)``, *bare* the bare messages before it in its deque. In a traced
        mailbox a bare tell comes in an envelope with its id (``ids[bare]``, left there);
        ``None`` if there is no such item."""
        for level, q in self._deques():
            bare = 0
            for i, item in enumerate(q):
                if type(item) is Envelope:
                    if item.state != WITHDRAWN and isinstance(item.msg, types):
                        return item, q, i, bare
                elif isinstance(item, types):
                    if self.ids is not None and not level:
                        item = self._wrap(item, self.ids[bare])
                    return item, q, i, bare
                else:
                    bare += 1
        return None

    def first(self, types: tuple[type, ...]) -> Any:
        """The first live item whose message is one of *types*, left queued (``None``)."""
        found = self._find(types)
        return found[0] if found is not None else None

    def take(self, types: tuple[type, ...]) -> Any:
        """Selective receive: remove the first live item whose message is one of *types*
        (``None`` if there is none)."""
        found = self._find(types)
        if found is None:
            return None
        item, q, i, bare = found
        if item is not q[i]:  # a bare traced tell, wrapped: its id leaves too
            del self.ids[bare]  # type: ignore[union-attr]
        del q[i]
        if q is not self._q0:
            self._n_other -= 1
            self._retune()
        if self._putters:
            self._wake_putter()
        return item

    def withdrawn(self) -> None:
        """An envelope still in a deque was abandoned by its asker (it stays, skipped)."""
        self._withdrawn += 1
        self._retune()
        if self._putters:
            self._wake_putter()

    def drain(self) -> list[Any]:
        """Remove and return every live item, in delivery order."""
        out: list[Any] = []
        ids = self.ids
        for level, q in self._deques():
            while q:
                item = q.popleft()
                if type(item) is Envelope:
                    if item.state != WITHDRAWN:
                        out.append(item)
                elif ids is not None and not level:
                    out.append(self._wrap(item, ids.popleft()))
                else:
                    out.append(item)
        self._n_other = 0
        self._withdrawn = 0
        self._retune()
        return out

    # -- the receiver side -----------------------------------------------------------

    def abort_wait(self, _: object) -> Abort:
        """Trio abort callback of the parked actor task."""
        self._waiter = None
        return Abort.SUCCEEDED

    async def wait_put(self, want: tuple[type, ...] | None = None) -> None:
        """Park the actor task until a (matching) message is put or ``wake()`` is called."""
        await wait_task_rescheduled(self.parking(current_task(), want))

    def parking(self, task: Task, want: tuple[type, ...] | None) -> Callable[[Any], Abort]:
        """Record *task* as the receiver about to park (``wait_put`` without its coroutine
        frame, for the actor loop); returns the abort callback to park with."""
        self._waiter = task
        self._want = want
        return self.abort_wait

    def wake(self) -> None:
        """Wake the parked actor task, if any (stop requests, serve_until completion)."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            reschedule(waiter)

    def close(self) -> list[Task]:
        """Refuse further puts; return the blocked senders, to be woken with
        ``outcome.Value(False)`` (``wait_space`` returns False: nothing reserved)."""
        self.closed = True
        putters = list(self._putters) if self._putters else []
        if self._putters:
            self._putters.clear()
        self._retune()
        return putters
