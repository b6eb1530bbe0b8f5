"""The message loop and dispatch: how one actor takes and handles its messages.

``run(cell)`` is the loop of one incarnation; ``dispatch`` handles one queued item (an
envelope: an ask, a traced tell, a runtime message; or a bare untraced tell). Selective
``receive`` and ``serve_until`` take messages from inside a handler, and ``reply``/
``answer`` deliver an ask's result. The loop leaves when a stop is requested.

This module is the one place where hot-path inlining is allowed (see the fenced block in
``run``): every other module calls the functions it inlines. ``bench/`` measures it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import outcome
import trio
from trio.lowlevel import reschedule, wait_task_rescheduled

from trioxide.traces import RUN_MAX_MESSAGES

from ._context import task_actor, task_name
from ._errors import ActorGone
from ._mailbox import DONE, QUEUED, RUNNING, Envelope, message_of
from ._messages import Completed, Interrupted

if TYPE_CHECKING:
    from ._cell import ActorCell

__all__ = [
    "BARE",
    "HANDLER_BATCH",
    "NOT_STOPPING",
    "ServedTellFailed",
    "answer",
    "dispatch",
    "gone",
    "receive",
    "reply",
    "run",
    "serve_until",
    "unwrap_served",
]

#: ``ActorCell.stopping`` while no stop was requested (the loop runs while it is this).
NOT_STOPPING: Final = object()

#: The actor loop yields to the scheduler after this many handled messages in a row
#: (handlers that never block would otherwise starve other tasks).
HANDLER_BATCH: Final = 64


class _BareCurrent:
    """``ActorCell.current`` while an untraced tell is handled (no envelope exists)."""

    __slots__ = ()
    msg = None
    asker = None
    id: int | None = None
    state = DONE


BARE: Any = _BareCurrent()


class _TellInHand(_BareCurrent):
    """``ActorCell.current`` while the actor loop handles a bare traced tell (one per loop:
    its ``id`` is the tell's; a message taken inside the handler gets its own envelope)."""

    __slots__ = ("id",)

    def __init__(self) -> None:
        self.id = 0


async def run(cell: ActorCell) -> None:
    """Handle messages until a stop is requested (the caller owns the loop's cancel scope)."""
    mb = cell.mailbox
    handle = cell.handle_fn
    assert handle is not None
    task = cell.task
    assert task is not None
    tr = cell.rt.tracer
    untraced = tr is None
    path = cell.path
    # The run fast path needs the concrete Tracer (its pending record and runs) writing to
    # a sink that keeps runs (Runtime.runs).
    runs = cell.rt.runs
    run: Any = None  # this loop's run; it is being recorded while it is tr.pending
    room = 0  # messages the run still takes
    fresh = True  # no handler ended since the loop last waited (or a handler failed)
    n = 0
    batch = cell.rt.next_handler_batch()
    hand = _TellInHand()  # ActorCell.current while a bare traced tell is handled
    while True:
        if n >= batch:
            n = 0
            batch = cell.rt.next_handler_batch()
            await trio.lowlevel.checkpoint()
            fresh = True
        if cell.stopping is not NOT_STOPPING:
            return
        # ready and pop are the level-0 deque and its popleft in the common state.
        if not mb.ready:
            await wait_task_rescheduled(mb.parking(task, None))  # Mailbox.wait_put
            fresh = True
            continue
        item = mb.pop()
        n += 1
        # ---- hot path (inlined dispatch; keep in step with dispatch() below) -------------
        # Untraced asks and tells, and traced tells, are handled here without the calls
        # (and coroutine frames) dispatch() makes: measured, this is what makes an untraced
        # tell ~10x a raw Trio channel and tracing cost about as much as the tell itself
        # (bench/RESULTS.md, bench/instr.py). Everything else goes through dispatch().
        if type(item) is not Envelope:
            if untraced:
                cell.current = BARE
                try:
                    await handle(item)
                except BaseException as exc:
                    _finish_taken(cell, exc)
                    raise
                finally:
                    cell.current = None
                    cell.handled += 1
                if cell.taken is not None:
                    _finish_taken(cell, None)
                continue
            # A bare traced tell: its id was queued with it (Mailbox.ids).
            mid = hand.id = mb.ids.popleft()  # type: ignore[union-attr]
            msg = item
            cell.current = hand
        elif untraced and item.asker is not None:
            cell.current = item
            if item.state == QUEUED:
                item.state = RUNNING
            try:
                result = await handle(item.msg)
            except Exception as exc:
                item.answer(outcome.Error(exc))
                _finish_taken(cell, exc)
            except BaseException as exc:
                gone(cell, item, exc)
                _finish_taken(cell, exc)
                raise
            else:
                if item.state <= RUNNING:  # Envelope.answer inlined
                    item.state = DONE
                    reschedule(item.asker, outcome.Value(result))
                if cell.taken is not None:
                    _finish_taken(cell, None)
            finally:
                cell.current = None
                cell.handled += 1
            continue
        elif untraced or item.asker is not None:
            fresh = True
            await dispatch(cell, item)
            continue
        else:
            # A traced tell in an envelope (it took a slow path: a hook, a full mailbox).
            mid = item.id
            msg = item.msg
            cell.current = item
        # A traced tell (mid, msg), cell.current set.
        assert tr is not None
        if runs:
            # Recorded into the tracer's pending HandleRun (traces._runs): no event object,
            # no call into the tracer, while nothing else is traced; a handler that
            # follows the previous one without a wait began when it ended.
            if room == 0 or tr.pending is not run:  # type: ignore[attr-defined]
                run = tr.open_run(path)  # type: ignore[attr-defined]
                room = RUN_MAX_MESSAGES
            room -= 1
            run.begin(mid, msg, fresh)
        else:
            tr.begin(path, mid, None, msg)
        try:
            await handle(msg)
        except BaseException as exc:
            fresh = True
            _note_failure(cell, mid, exc)
            tr.handle(
                path,
                mid,
                None,
                exc.error if type(exc) is ServedTellFailed else exc,
                cell.cancel_cause,
            )
            _finish_taken(cell, exc)
            raise
        finally:
            cell.current = None
            cell.handled += 1
        if runs and tr.pending is run:  # type: ignore[attr-defined]
            run.end()
            fresh = False
        else:  # something was traced meanwhile: the run was written
            fresh = True
            tr.handle(path, mid, None, None)
        if cell.taken is not None:
            _finish_taken(cell, None)
        # ---- end of hot path -------------------------------------------------------------


class ServedTellFailed(BaseException):
    """A tell served by ``serve_until`` raised: the actor must fail, even though the
    handler that called ``serve_until`` may be serving an ask (whose asker must not get
    the tell's error) and may catch ``Exception``. A ``BaseException``, so it passes
    through that handler; the incarnation fails with ``error`` (``ActorCell._incarnation``)
    and the outer asker gets ``ActorGone(path, error)``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def unwrap_served(exc: BaseException) -> BaseException:
    """*exc* with every ``ServedTellFailed`` in it replaced by the tell's own error (also
    inside exception groups, when it raced another failure)."""
    if type(exc) is ServedTellFailed:
        return exc.error
    if isinstance(exc, BaseExceptionGroup):
        inner = [unwrap_served(e) for e in exc.exceptions]
        if any(a is not b for a, b in zip(inner, exc.exceptions, strict=True)):
            return BaseExceptionGroup(exc.message, inner)
    return exc


async def dispatch(cell: ActorCell, item: Any, *, served: bool = False) -> None:
    """Handle one queued item: an envelope (ask or traced tell) or a bare message.

    The general path (``run`` inlines the untraced cases); also used for the messages a
    ``serve_until`` serves (*served*), which nest inside the current handler: a served
    tell that raises becomes ``ServedTellFailed`` (an ask's error went to its asker)."""
    prev, prev_taken = cell.current, cell.taken
    cell.taken = None
    try:
        if type(item) is Envelope:
            await _dispatch_envelope(cell, item)
            return
        cell.current = BARE
        try:
            await cell.handle_fn(item)  # type: ignore[misc]
        except BaseException as exc:
            _finish_taken(cell, exc)
            raise
        if cell.taken is not None:
            _finish_taken(cell, None)
    except Exception as exc:
        if served:
            raise ServedTellFailed(exc) from exc
        raise
    finally:
        cell.current = prev
        cell.taken = prev_taken
        cell.handled += 1


async def _dispatch_envelope(cell: ActorCell, env: Envelope) -> None:
    cell.current = env
    tr = cell.rt.tracer
    asker = env.asker
    corr = env.id if asker is not None else None
    if tr is not None:
        tr.begin(cell.path, env.id, corr, env.msg)
    try:
        if asker is None:
            await cell.handle_fn(env.msg)  # type: ignore[misc]
        else:
            if env.state == QUEUED:
                env.state = RUNNING
            try:
                result = await cell.handle_fn(env.msg)  # type: ignore[misc]
            except Exception as exc:
                answer(cell, env, outcome.Error(exc))
                if tr is not None:
                    tr.handle(cell.path, env.id, corr, exc)
                _finish_taken(cell, exc)
                return
            answer(cell, env, outcome.Value(result))
        if tr is not None:
            tr.handle(cell.path, env.id, corr, None)
        if cell.taken is not None:
            _finish_taken(cell, None)
    except BaseException as exc:
        if asker is not None:
            gone(cell, env, exc)
        if tr is not None:
            _note_failure(cell, env.id, exc)
            tr.handle(
                cell.path,
                env.id,
                corr,
                exc.error if type(exc) is ServedTellFailed else exc,
                cell.cancel_cause,
            )
        _finish_taken(cell, exc)
        raise


def _note_failure(cell: ActorCell, msg_id: int, exc: BaseException) -> None:
    """The handler of *msg_id* ended by *exc*: if that fails the incarnation (anything
    but a cancellation), it is the ``fail`` event's cause - the first such handler (a
    served tell that raised, not the handler that served it)."""
    if cell.fail_cause is None and not _cancelled(exc):
        cell.fail_cause = msg_id


def answer(cell: ActorCell, env: Envelope, result: outcome.Outcome[Any]) -> None:
    """Deliver *result* to *env*'s asker (if it still waits) and trace the reply."""
    if env.answer(result):
        tr = cell.rt.tracer
        if tr is not None:
            error = result.error if isinstance(result, outcome.Error) else None
            tr.reply(cell.path, task_actor(env.asker), cell.cause_id(), env.id, error)


def gone(cell: ActorCell, env: Envelope, exc: BaseException) -> None:
    """The handler of ask *env* ended by *exc*, not an ``Exception`` of its own: the asker
    gets ``ActorGone(path, reason)``. If the handler was merely cancelled because the
    incarnation is failing (a child task or child actor raised), that failure is not
    known yet: the answer waits until it is (``ActorCell.answer_orphans``), so the reason
    is the failure, not ``Cancelled``."""
    if cell.stopping is NOT_STOPPING and type(exc) is not ServedTellFailed and _cancelled(exc):
        if cell.orphans is None:
            cell.orphans = []
        cell.orphans.append(env)
    else:
        answer(cell, env, outcome.Error(ActorGone(cell.path, cell.why(exc))))


def _cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


def _finish_taken(cell: ActorCell, exc: BaseException | None) -> None:
    """Asks taken by receive()/Interrupted and not answered get None (or the error)."""
    taken = cell.taken
    cell.taken = None
    for item in taken or ():
        if exc is None:
            answer(cell, item, outcome.Value(None))
        elif isinstance(exc, Exception):
            answer(cell, item, outcome.Error(exc))
        else:
            gone(cell, item, exc)


def reply(cell: ActorCell, msg: Any, value: Any, error: BaseException | None) -> bool:
    """``Actor.reply``: answer the ask that carried *msg* (current or taken)."""
    result: outcome.Outcome[Any] = (
        outcome.Error(error) if error is not None else outcome.Value(value)
    )
    env = cell.current
    if env is not None and env.msg is msg and env.asker is not None:
        if env.state == QUEUED:
            env.state = RUNNING
        before: int = env.state
        answer(cell, env, result)
        return before == RUNNING
    taken = cell.taken
    if taken:
        for i, item in enumerate(taken):
            if item.msg is msg:
                del taken[i]  # answered: no longer owed when the handler ends
                before = item.state
                answer(cell, item, result)
                return before == RUNNING
    return False


# -- selective receive and serve_until ---------------------------------------------------


def _take(cell: ActorCell, item: Any, why: str) -> Any:
    """Take *item* for the current handler; return its message. An ask is recorded in
    ``cell.taken`` until it is answered (``reply``) or the handler ends
    (``_finish_taken``), so a long handler taking many messages keeps only the asks it
    still owes an answer."""
    if type(item) is not Envelope:
        return item
    if item.asker is not None:
        if cell.taken is None:
            cell.taken = []
        cell.taken.append(item)
        if item.state == QUEUED:
            item.state = RUNNING
    tr = cell.rt.tracer
    if tr is not None:
        corr = item.id if item.asker else None
        tr.receive(cell.path, item.id, cell.cause_id(), corr, item.msg, why)
    return item.msg


async def _stop_point(cell: ActorCell) -> None:
    """Where a handler taking messages itself (receive, serve_until) meets a stop: once a
    stop was asked for, no queued message is taken; the handler is cancelled instead (the
    messages stay queued and are drained)."""
    if cell.stopping is not NOT_STOPPING and cell.loop_scope is not None:
        cell.loop_scope.cancel()
    await trio.lowlevel.checkpoint_if_cancelled()


async def _park(cell: ActorCell, want: tuple[type, ...]) -> None:
    cell.waiting = True
    try:
        await cell.mailbox.wait_put(want)
    finally:
        cell.waiting = False


async def receive(cell: ActorCell, want: tuple[type, ...], timeout: float | None) -> Any:
    """``Actor.receive``: the first queued message of *want*, waiting up to *timeout*.

    Like Trio's channels: a cancellation is checked before anything is taken, and a
    message once taken is returned (the yield after taking is shielded), so a cancelled
    receive never loses a message. A matching message already queued is returned even
    with ``timeout=0``; the timeout only bounds the wait. Returns ``None`` on timeout
    (the caller raises ``ReceiveTimeout``)."""
    await _stop_point(cell)
    mb = cell.mailbox
    item = mb.take(want)
    if item is not None:
        msg = _take(cell, item, "selective")
        await trio.lowlevel.cancel_shielded_checkpoint()
        return msg
    with trio.move_on_after(math.inf if timeout is None else timeout):
        while True:
            await _park(cell, want)
            await _stop_point(cell)  # woken by a stop, or a put racing with one
            item = mb.take(want)
            if item is not None:
                return _take(cell, item, "selective")
    return TIMED_OUT


_NOTHING: Any = object()

#: ``receive``'s result when its timeout passed (distinct from any message).
TIMED_OUT: Any = object()


async def serve_until(
    cell: ActorCell,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    serve: tuple[type, ...],
    interrupt: tuple[type, ...],
) -> Completed[Any] | Interrupted:
    """``Actor.serve_until``: run *fn* in a child scope while serving *serve* messages."""
    want = serve + interrupt
    box: list[Any] = []
    mb = cell.mailbox

    async def run_fn() -> None:
        value = await fn(*args)
        box.append(value)
        mb.wake()

    tname = task_name(fn, None)
    interrupting: Any = _NOTHING
    restore: Any = _NOTHING  # cell.cancel_cause before an interrupt set it
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cell.run_task, run_fn, (), tname, name=f"{cell.path}:{tname}")
            while True:
                if box:
                    return Completed(box[0])
                await _stop_point(cell)
                item = mb.first(want) if want else None
                if item is None:
                    await _park(cell, want or (type(None),))
                    continue
                if interrupt and isinstance(message_of(item), interrupt):
                    if type(item) is Envelope and item.id:
                        restore = cell.cancel_cause
                        cell.cancel_cause = item.id  # fn's cancellation: caused by item
                    # Cancel fn and wait for it to finish before taking a tell: a
                    # cancellation arriving meanwhile then leaves it queued, never lost.
                    # An ask is taken now (its asker can no longer withdraw it; if we are
                    # cancelled, it is answered when the handler ends, like any taken ask).
                    if type(item) is Envelope and item.asker is not None:
                        interrupting = _take(cell, mb.take(interrupt), "interrupt")
                    nursery.cancel_scope.cancel()
                    break
                await dispatch(cell, mb.take(want), served=True)
    except BaseExceptionGroup as group:
        # Our own nursery wraps what fn (or a served handler) raised: give the caller
        # the exception itself, as the docstring promises.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        if restore is not _NOTHING:
            cell.cancel_cause = restore
    if interrupting is not _NOTHING:
        return Interrupted(interrupting)
    await _stop_point(cell)
    taken = mb.take(interrupt)
    assert taken is not None  # a queued tell; only this task takes messages
    return Interrupted(_take(cell, taken, "interrupt"))
