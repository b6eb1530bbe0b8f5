"""How steps become trace events: the trace vocabulary's one home.

:class:`Tracer` has one typed method per event kind (``send``, ``receive``, ``handle``,
...): callers never assemble an event by position. Each method sets the event's structured
``outcome`` (see ``OUTCOMES``) and describes exceptions with :func:`describe`, so that
consumers (exporters, the OpenTelemetry sink, the viewer, the explorer) read fields, never
free text. :class:`Recorder` is the protocol the runtime codes against.

A tracer owns the global sequence counter. It never blocks: sinks are synchronous,
bounded and non-blocking by contract (see :mod:`traces._sinks`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import trio

from . import _runs
from ._event import NO_PAYLOAD, TraceEvent
from ._links import TraceLinks
from ._runs import HANDLE_RUN_TYPES, RUN_TYPES, HandleRunLike, Run, SendRunLike

__all__ = ["Recorder", "Sink", "Tracer", "describe"]


class Sink(Protocol):
    """Where events go. ``write`` must not block, must not raise, and must not send to
    actors: it runs inside the step it records (a ``send`` is written while its message
    is queued and its id not yet beside it, ``Mailbox.ids``)."""

    def write(self, event: TraceEvent) -> None: ...

    def close(self) -> None: ...


def describe(exc: BaseException) -> str:
    """An exception for a trace detail, without memory addresses.

    Trio's ``Cancelled`` repr names the cancelling task with its id, which would make
    traces of the same seed differ between processes; groups are described member by
    member.
    """
    if isinstance(exc, trio.Cancelled):
        return "Cancelled()"
    if isinstance(exc, BaseExceptionGroup):
        inner = ", ".join(describe(e) for e in exc.exceptions)
        return f"{type(exc).__name__}({exc.message!r}, [{inner}])"
    if any(isinstance(a, BaseException) for a in exc.args):
        # An exception carrying another (ActorGone(path, reason)): describe that one too.
        args = ", ".join(describe(a) if isinstance(a, BaseException) else repr(a) for a in exc.args)
        return f"{type(exc).__name__}({args})"
    return repr(exc)


def unwrap(exc: BaseException) -> BaseException:
    """The single exception inside (nested) one-element exception groups, else *exc*."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _outcome_of(exc: BaseException | None) -> str:
    """``ok``, ``cancelled`` (a ``Cancelled``, or a group of nothing else) or ``error``."""
    if exc is None:
        return "ok"
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        return "cancelled" if rest is None else "error"
    return "cancelled" if isinstance(exc, trio.Cancelled) else "error"


def _reason_str(reason: object) -> str:
    if isinstance(reason, str):
        return reason
    return describe(reason) if isinstance(reason, BaseException) else repr(reason)


class Recorder(Protocol):
    """What the runtime records: one method per event kind (``traces.KINDS``).

    ``actor`` is the path of the actor the step is about; ``sender``/``asker`` the path of
    the actor that caused it (``None`` outside any actor); ``cause`` the ``msg_id`` that
    actor was handling; ``corr`` pairs an ask with its reply (the ask's ``msg_id``).
    """

    @property
    def seq(self) -> int: ...

    def spawn(self, actor: str, parent: str | None, cause: int | None, cls_name: str) -> None: ...

    def start(self, actor: str) -> None: ...

    def stop(self, actor: str, reason: object) -> None: ...

    def fail(self, actor: str, exc: BaseException, cause: int | None = None) -> None: ...

    def restart(self, actor: str, count: int) -> None: ...

    def send(
        self,
        actor: str,
        sender: str | None,
        cause: int | None,
        ask: bool,
        msg: Any,
        system: bool = False,
    ) -> int: ...

    def admit(
        self, actor: str, sender: str | None, cause: int | None, msg: Any, decision: str
    ) -> None: ...

    def unhandled(
        self, actor: str, sender: str | None, cause: int | None, msg: Any, accepted: str
    ) -> None: ...

    def receive(
        self,
        actor: str,
        msg_id: int,
        cause: int | None,
        corr: int | None,
        msg: Any,
        taken: str | None = None,
    ) -> None: ...

    def begin(self, actor: str, msg_id: int, corr: int | None, msg: Any) -> None: ...

    def handle(
        self,
        actor: str,
        msg_id: int,
        corr: int | None,
        exc: BaseException | None,
        cause: int | None = None,
    ) -> None: ...

    def reply(
        self,
        actor: str,
        asker: str | None,
        cause: int | None,
        corr: int,
        error: BaseException | None,
    ) -> None: ...

    def ask_ended(
        self,
        actor: str,
        asker: str | None,
        msg_id: int,
        msg: Any,
        why: str,
        running: bool,
        cause: int | None = None,
    ) -> None: ...

    def drop(self, actor: str, msg_id: int, corr: int | None, msg: Any) -> None: ...

    def task_start(self, actor: str, cause: int | None, name: str) -> None: ...

    def task_end(
        self, actor: str, name: str, exc: BaseException | None, cause: int | None = None
    ) -> None: ...

    def watch_set(self, actor: str, cause: int | None, what: str) -> None: ...

    def http_send(
        self,
        actor: str,
        cause: int | None,
        service: str,
        method: str,
        path: str,
        trace_id: str,
        span_id: str,
        parent_span: str | None,
    ) -> int: ...

    def http_end(
        self,
        actor: str,
        request: int,
        status: int | None,
        exc: BaseException | None = None,
        timed_out: bool = False,
    ) -> None: ...

    def http_serve(
        self,
        actor: str,
        peer: str | None,
        method: str,
        path: str,
        trace_id: str,
        span_id: str,
        parent_span: str | None,
    ) -> int: ...

    def http_served(
        self,
        actor: str,
        request: int,
        status: int | None,
        error_code: str | None = None,
        exc: BaseException | None = None,
    ) -> None: ...

    def context_of(self, actor: str | None, cause: int | None) -> tuple[str, str] | None: ...

    def use_clock(self, clock: Callable[[], float], offset: float = 0.0) -> None: ...

    def flush(self) -> None: ...


_encode = msgspec.json.Encoder().encode


def _encode_payload(msg: Any) -> msgspec.Raw:
    try:
        return msgspec.Raw(_encode(msg))
    except (TypeError, ValueError, OverflowError):
        # Messages may carry non-serialisable fields (refs, exceptions): fall back to repr.
        return msgspec.Raw(_encode(repr(msg)))


class Tracer:
    """Assigns ``seq`` and ``t`` to every step and fans it out to *sinks*.

    Args:
      payloads: also record each message's msgspec JSON (``payload``). Off by default:
        it is the expensive part of tracing.
      redact: called with a message before its payload is encoded; return a replacement
        object (e.g. a copy with secrets blanked) or ``None`` to record no payload.
      clock: where ``t`` comes from; defaults to the Trio clock (virtual under MockClock).
    """

    __slots__ = (
        "_clock",
        "_last_send",
        "_runs_sends",
        "_seq",
        "_sinks",
        "_t_offset",
        "_write",
        "_write_run",
        "links",
        "payloads",
        "pending",
        "redact",
        "runs",
        "send_run",
    )

    def __init__(
        self,
        *sinks: Sink,
        payloads: bool = False,
        redact: Callable[[Any], Any] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._sinks: tuple[Sink, ...] = sinks
        self._seq = 0
        self._write: Callable[[TraceEvent], None]
        lone = sinks[0] if len(sinks) == 1 else None
        direct = getattr(lone, "direct_writer", None)
        self._write_run: Callable[[Run], None] = self._write_run_records
        runs = False
        if direct is not None:
            # One memory ring: append to it directly (it counts through our seq).
            self._write = direct(lambda: self.seq)
        else:
            self._write = sinks[0].write if lone is not None else self._fan_out
        run_writer = getattr(lone, "run_writer", None)
        writer = run_writer(lambda: self.pending) if run_writer is not None else None
        if writer is not None:
            self._write_run, runs = writer, True
        #: Whether the actor loop records handled tells into ``HandleRun`` records
        #: (``open_run``) and tells are recorded into ``SendRun`` records (``send``): only
        #: for a lone sink that takes runs (``run_writer``: ``MemorySink`` keeps them whole
        #: and shows the run this tracer still holds, ``JsonlFileSink`` encodes the records
        #: they stand for when they are written). Any other sinks get each event as soon as
        #: it happened.
        self.runs = runs
        #: Whether the same tell's send twice in a row opens a ``SendRun`` (``send``): with
        #: runs, and without payloads unless the sink takes runs with payloads
        #: (``runs_with_payloads``); off once trace links exist (each send with a cause must
        #: then reach ``TraceLinks.inherit``). ``_last_send``: the last tell's send written.
        self._runs_sends = runs and (
            not payloads or bool(getattr(lone, "runs_with_payloads", False))
        )
        self._last_send: TraceEvent | None = None
        #: The record held back, written before anything else is: a receive to fold into
        #: its handle (``begin``: ``(actor, msg_id, corr, msg_type, t, seq)``), a
        #: ``HandleRun`` the actor loop appends to (``open_run``) or a ``SendRun``
        #: ``ActorRef.tell`` appends to (``send``). Read by those fast paths; only the
        #: tracer sets it.
        self.pending: tuple[str, int, int | None, str, float, int] | Run | None = None
        #: ``pending`` while it is a ``SendRun`` (else ``None``): what ``ActorRef.tell``'s
        #: traced fast path offers its send to (``SendRun.add``).
        self.send_run: SendRunLike | None = None
        self._clock = clock
        self._t_offset = 0.0
        self.payloads = payloads
        self.redact = redact
        #: Which distributed trace messages and actors belong to (``TraceLinks``): made by
        #: the first ``http_serve``; ``None`` (one check per send) until then.
        self.links: TraceLinks | None = None

    def use_clock(self, clock: Callable[[], float], offset: float = 0.0) -> None:
        """Take ``t`` from ``clock() + offset`` (the runtime binds the run's clock once: for
        Trio's real clock, ``time.perf_counter`` and its offset - no Python frame per event).
        Writes what is pending first: a send run reads the clock it was opened with."""
        if self.pending is not None:
            self._flush_pending()
        self._clock = clock
        self._t_offset = offset

    @property
    def time_source(self) -> tuple[Callable[[], float], float]:
        """``(read, offset)``: ``read() + offset`` is an event's ``t`` (see ``use_clock``)."""
        return self._clock, self._t_offset

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return self._sinks

    @property
    def seq(self) -> int:
        """The ``seq`` of the last event emitted (0 before the first)."""
        pending = self.pending
        if isinstance(pending, RUN_TYPES):
            return self._seq + pending.count
        return self._seq

    def _payload(self, msg: Any) -> msgspec.Raw:
        if self.redact is not None:
            msg = self.redact(msg)
            if msg is None:
                return NO_PAYLOAD
        return _encode_payload(msg)

    def _fan_out(self, event: TraceEvent) -> None:
        for sink in self._sinks:
            sink.write(event)

    def _emit(
        self,
        kind: str,
        actor: str,
        peer: str | None = None,
        msg_id: int | None = None,
        cause: int | None = None,
        corr: int | None = None,
        msg: Any = None,
        detail: str | None = None,
        outcome: str | None = None,
        ids: tuple[str, str, str | None] | None = None,
    ) -> int:
        """Build and write one event; returns its ``seq``. ``msg`` gives ``msg_type`` and, if
        enabled, ``payload``; *ids*: the W3C ``(trace_id, span_id, parent_span)`` of an
        HTTP event.

        Private on purpose: every kind has its typed method below.
        """
        if self.pending is not None:
            self._flush_pending()
        msg_type = None
        payload = NO_PAYLOAD
        if msg is not None:
            msg_type = type(msg).__name__
            if self.payloads:
                payload = self._payload(msg)  # (first: if it raises, no seq is taken)
        self._seq = seq = self._seq + 1
        t = self._clock() + self._t_offset
        if ids is None:
            event = TraceEvent(
                seq, t, kind, actor, peer, msg_id, cause, corr, msg_type, payload, detail, outcome
            )
        else:
            event = TraceEvent(
                seq, t, kind, actor, peer, msg_id, cause, corr, msg_type, payload, detail,
                outcome, None, *ids,
            )  # fmt: skip
        self._write(event)
        return seq

    # -- lifecycle ------------------------------------------------------------------------

    def spawn(self, actor: str, parent: str | None, cause: int | None, cls_name: str) -> None:
        """*actor* was created under *parent* (``None``: top level)."""
        self._emit("spawn", actor, parent, None, cause, None, None, cls_name)
        if cause is not None and self.links is not None:
            self.links.spawned(actor, cause)

    def start(self, actor: str) -> None:
        """*actor*'s ``on_start`` completed; it takes messages."""
        self._emit("start", actor)

    def stop(self, actor: str, reason: object) -> None:
        """*actor* finally exited with *reason* (outcome ``error`` for an exception)."""
        outcome = "error" if isinstance(reason, BaseException) else "ok"
        self._emit("stop", actor, None, None, None, None, None, _reason_str(reason), outcome)

    def fail(self, actor: str, exc: BaseException, cause: int | None = None) -> None:
        """An incarnation of *actor* ended with *exc*; *cause*: the ``msg_id`` whose
        handler raised it (``None`` if no handler did: a child task, a hook)."""
        self._emit("fail", actor, None, None, cause, None, None, describe(exc), "error")

    def restart(self, actor: str, count: int) -> None:
        """The supervisor re-created *actor* (its *count*-th restart)."""
        self._emit("restart", actor, None, None, None, None, None, str(count))

    # -- messages -------------------------------------------------------------------------

    def send(
        self,
        actor: str,
        sender: str | None,
        cause: int | None,
        ask: bool,
        msg: Any,
        system: bool = False,
    ) -> int:
        """*msg* was enqueued to *actor*; returns its ``msg_id`` (the event's ``seq``), which
        is also the ``corr`` of an ask. The message's payload (if enabled) is recorded here
        only; later events about the message carry its ``msg_type``.

        With runs (``self.runs``, no payloads, no trace links), the same send again right
        after a tell's (same actor, sender, cause and message type, nothing traced in
        between) opens a ``SendRun``: ``ActorRef.tell`` appends the sends that follow to
        it while nothing else is traced.

        (A hot path: the event is built here rather than through ``_emit``.)"""
        if self.pending is not None:
            self._flush_pending()
        elif (
            (last := self._last_send) is not None
            and last.seq == self._seq  # nothing traced since
            and last.actor is actor
            and last.peer is sender
            and last.cause is cause
            and last.msg_type == type(msg).__name__
            and not ask
            and not system
        ):
            encode = None
            if self.payloads:
                encode = _encode_payload if self.redact is None else self._payload
            first = (encode(msg),) if encode is not None else ()
            self.pending = self.send_run = _runs.SendRun(
                actor, sender, cause, type(msg), self._seq + 1, self._clock, self._t_offset,
                (self._clock() + self._t_offset,), encode=encode, payloads=first,
            )  # fmt: skip
            return self._seq + 1
        payload = NO_PAYLOAD
        if self.payloads:
            payload = self._payload(msg)  # (first: if it raises, no seq is taken)
        self._seq = seq = self._seq + 1
        t = self._clock() + self._t_offset
        event = TraceEvent(
            seq, t, "send", actor, sender, seq, cause, seq if ask else None,
            type(msg).__name__, payload, "system" if system else None,
        )  # fmt: skip
        self._write(event)
        if self._runs_sends and not ask and not system:
            self._last_send = event
        if cause is not None and self.links is not None:
            self.links.inherit(seq, cause)
        return seq

    def admit(
        self, actor: str, sender: str | None, cause: int | None, msg: Any, decision: str
    ) -> None:
        """Admission refused *msg* (``ignore`` / ``reject: ...``) or the mailbox was ``full``."""
        self._emit("admit", actor, sender, None, cause, None, msg, decision)

    def unhandled(
        self, actor: str, sender: str | None, cause: int | None, msg: Any, accepted: str
    ) -> None:
        """*msg* was refused at send time: *actor* does not accept its type."""
        self._emit("unhandled", actor, sender, None, cause, None, msg, f"accepts {accepted}")

    def receive(
        self,
        actor: str,
        msg_id: int,
        cause: int | None,
        corr: int | None,
        msg: Any,
        taken: str | None = None,
    ) -> None:
        """*actor* took ``msg_id``; *taken* (``selective``/``interrupt``) if inside a handler.
        Carries the message's type; its payload is on the ``send``. (A hot path.)"""
        if self.pending is not None:
            self._flush_pending()
        self._seq = seq = self._seq + 1
        self._write(
            TraceEvent(
                seq, (self._clock() + self._t_offset), "receive", actor, None, msg_id, cause, corr,
                type(msg).__name__, NO_PAYLOAD, taken,
            )
        )  # fmt: skip

    def begin(self, actor: str, msg_id: int, corr: int | None, msg: Any) -> None:
        """*actor*'s handler starts on ``msg_id`` (taken from its mailbox). The ``receive``
        is written lazily: before the next event, or - if the next event is this message's
        ``handle`` - not at all, folded into the handle (``t0``; the receive's seq, the
        handle's minus one, is left free so ``expand`` can restore it). Traces stay
        complete and ordered; a tell whose handler traces nothing costs two events."""
        if self.pending is not None:
            self._flush_pending()
        # The receive's seq is taken now (``seq`` stays the order of what happened).
        self._seq = seq = self._seq + 1
        self.pending = (
            actor,
            msg_id,
            corr,
            type(msg).__name__,
            self._clock() + self._t_offset,
            seq,
        )

    def open_run(self, actor: str) -> HandleRunLike:
        """Write what is pending and make a new ``HandleRun`` of *actor* the pending
        record, for the actor loop to append the tells it handles to (see ``HandleRun``:
        valid while ``pending`` is the run)."""
        if self.pending is not None:
            self._flush_pending()
        run = self.pending = _runs.HandleRun(actor, self._seq + 1, self._clock, self._t_offset)
        return run

    def _write_run_records(self, run: Run) -> None:
        for record in run.records():
            self._write(record)

    def _flush_pending(self) -> None:
        pending = self.pending
        assert pending is not None
        self.pending = self.send_run = None
        if isinstance(pending, tuple):  # a receive held to fold into its handle
            actor, msg_id, corr, msg_type, t, seq = pending
            self._write(TraceEvent(seq, t, "receive", actor, None, msg_id, None, corr, msg_type))
            return
        # A run of one record is written as that record: cheaper to keep and to read.
        record = pending.lone_record()
        if record is not None:
            self._seq = record.seq
            self._write(record)
        elif pending.count:
            self._seq = pending.last_seq
            pending.freeze()
            self._write_run(pending)

    def handle(
        self,
        actor: str,
        msg_id: int,
        corr: int | None,
        exc: BaseException | None,
        cause: int | None = None,
    ) -> None:
        """The handler of ``msg_id`` ended: returned (*exc* ``None``), raised or was cancelled
        (*cause*: the ``msg_id`` of the message that led to the cancellation, if known).
        Folds the handler's ``receive`` in if nothing was traced since (``begin``). (A hot
        path: the event is built here.)"""
        pending = self.pending
        t0 = msg_type = None
        if pending is not None:
            if type(pending) is tuple and pending[1] == msg_id:
                # Folded: the receive's seq (taken by begin, this one minus 1) and time t0.
                self.pending = None
                msg_type = pending[3]
                t0 = pending[4]
            elif isinstance(pending, HANDLE_RUN_TYPES):
                # The loop's run: its open message is this one if nothing was traced since.
                taken = pending.take_open(msg_id)
                self._flush_pending()
                if taken is not None:
                    msg_type, t0 = taken
                    self._seq += 1  # the folded receive's seq
            else:
                self._flush_pending()
        self._seq = seq = self._seq + 1
        t = self._clock() + self._t_offset
        if exc is None:
            event = TraceEvent(seq, t, "handle", actor, None, msg_id, None, corr, msg_type,
                               NO_PAYLOAD, None, "ok", t0)  # fmt: skip
        else:
            exc = unwrap(exc)
            outcome = _outcome_of(exc)
            event = TraceEvent(seq, t, "handle", actor, None, msg_id,
                               cause if outcome == "cancelled" else None, corr, msg_type,
                               NO_PAYLOAD, describe(exc), outcome, t0)  # fmt: skip
        self._write(event)

    def reply(
        self,
        actor: str,
        asker: str | None,
        cause: int | None,
        corr: int,
        error: BaseException | None,
    ) -> None:
        """The ask *corr* was answered with a value (*error* ``None``) or an exception."""
        if error is None:
            self._emit("reply", actor, asker, None, cause, corr, None, None, "ok")
        else:
            self._emit("reply", actor, asker, None, cause, corr, None, describe(error), "error")

    def ask_ended(
        self,
        actor: str,
        asker: str | None,
        msg_id: int,
        msg: Any,
        why: str,
        running: bool,
        cause: int | None = None,
    ) -> None:
        """The ask ``msg_id`` was given up by its caller: *why* is ``cancelled`` or ``timeout``;
        *running*: its handler had started (it runs on, the reply is discarded); *cause*:
        the ``msg_id`` of the message that led the caller to cancel, if known."""
        kind = "cancel" if why == "cancelled" else "timeout"
        detail = f"{why} while running" if running else why
        self._emit(kind, actor, asker, msg_id, cause, msg_id, msg, detail, why)

    def drop(self, actor: str, msg_id: int, corr: int | None, msg: Any) -> None:
        """``msg_id`` was still queued when *actor* exited (answered by its drain hook)."""
        self._emit("drop", actor, None, msg_id, None, corr, msg, "drained")

    # -- tasks and watches ----------------------------------------------------------------

    def task_start(self, actor: str, cause: int | None, name: str) -> None:
        """A child task *name* of *actor* started."""
        self._emit("task_start", actor, None, None, cause, None, None, name)

    def task_end(
        self, actor: str, name: str, exc: BaseException | None, cause: int | None = None
    ) -> None:
        """The child task *name* of *actor* ended (*exc* ``None``: it returned); *cause*:
        for a cancelled task, the ``msg_id`` of the message that led to it, if known."""
        if exc is None:
            self._emit("task_end", actor, None, None, None, None, None, f"{name}: ok", "ok")
        else:
            exc = unwrap(exc)
            outcome = _outcome_of(exc)
            self._emit("task_end", actor, None, None,
                       cause if outcome == "cancelled" else None, None, None,
                       f"{name}: {describe(exc)}", outcome)  # fmt: skip

    def watch_set(self, actor: str, cause: int | None, what: str) -> None:
        """A named ``Watch`` was set by *actor*; *what* is ``name = value``."""
        self._emit("watch_set", actor, None, None, cause, None, None, what)

    # -- HTTP (a rack process's requests) --------------------------------------------------

    def _emit_http(
        self,
        kind: str,
        actor: str,
        peer: str | None,
        cause: int | None,
        corr: int | None,
        detail: str,
        outcome: str | None = None,
        ids: tuple[str, str, str | None] | None = None,
    ) -> int:
        """An HTTP event; a request (*corr* ``None``) is its own id (``msg_id`` and
        ``corr`` are its ``seq``), its end names it in *corr*."""
        if self.pending is not None:
            self._flush_pending()  # (before the request's own seq is taken)
        msg_id = None
        if corr is None:
            msg_id = corr = self._seq + 1
        return self._emit(kind, actor, peer, msg_id, cause, corr, None, detail, outcome, ids)

    def http_send(
        self,
        actor: str,
        cause: int | None,
        service: str,
        method: str,
        path: str,
        trace_id: str,
        span_id: str,
        parent_span: str | None,
    ) -> int:
        """*actor* (handling ``cause``) sent ``method path`` to *service*, with the
        traceparent ``trace_id``/``span_id`` (continuing *parent_span*, if any). Returns the
        request's id (the event's seq), which its ``http_end`` names as ``corr``."""
        ids = (trace_id, span_id, parent_span)
        return self._emit_http("http_send", actor, service, cause, None, f"{method} {path}",
                               None, ids)  # fmt: skip

    def http_end(
        self,
        actor: str,
        request: int,
        status: int | None,
        exc: BaseException | None = None,
        timed_out: bool = False,
    ) -> None:
        """The HTTP *request* of *actor* ended: answered *status* (``None``: no answer),
        *exc* the failure it ended with if it did not give a 2xx value (an error status,
        a transport failure, a cancellation); *timed_out*: that failure was the timeout."""
        if exc is None:
            outcome = "ok" if status is not None and status < 300 else "error"
            detail = str(status)
        else:
            exc = unwrap(exc)
            outcome = "timeout" if timed_out else _outcome_of(exc)
            detail = describe(exc) if outcome == "cancelled" else (str(exc) or describe(exc))
        self._emit_http("http_end", actor, None, None, request, detail, outcome)

    def http_serve(
        self,
        actor: str,
        peer: str | None,
        method: str,
        path: str,
        trace_id: str,
        span_id: str,
        parent_span: str | None,
    ) -> int:
        """The server lane *actor* took ``method path`` from *peer*, in the trace
        ``trace_id`` as its span *span_id* (*parent_span*: the client's span, if the request
        named one). Returns the request's id: the asks its handler makes carry it as their
        cause, and whatever they lead to continues this trace (``context_of``)."""
        seq = self._emit_http("http_serve", actor, peer, None, None, f"{method} {path}", None,
                              (trace_id, span_id, parent_span))  # fmt: skip
        links = self.links
        if links is None:
            links = self.links = TraceLinks()
            self._runs_sends, self._last_send = False, None
        links.bind(seq, (trace_id, span_id))
        return seq

    def http_served(
        self,
        actor: str,
        request: int,
        status: int | None,
        error_code: str | None = None,
        exc: BaseException | None = None,
    ) -> None:
        """The HTTP *request* served by *actor* was answered *status* (with Dropshot's
        *error_code*), or not answered: *exc* (the client went away, the server stopped)."""
        if status is None:
            exc = unwrap(exc) if exc is not None else None
            outcome = _outcome_of(exc) if exc is not None else "error"
            detail = describe(exc) if exc is not None else "no answer"
        else:
            outcome = "ok" if status < 400 else "error"
            detail = f"{status} {error_code}" if error_code else str(status)
        self._emit_http("http_served", actor, None, None, request, detail, outcome)

    def context_of(self, actor: str | None, cause: int | None) -> tuple[str, str] | None:
        """The W3C ``(trace_id, span_id)`` a step of *actor* taken while handling *cause*
        continues: that of the served request it descends from (through the messages sent
        and actors spawned since; see ``TraceLinks``), else ``None``."""
        links = self.links
        return None if links is None else links.context_of(actor, cause)

    # -- the explorer ---------------------------------------------------------------------

    def violation(self, actor: str, cause: int | None, invariant: str, message: str) -> None:
        """The explorer found *invariant* broken (outcome ``error``) while checking the
        message ``cause`` that *actor* handled (``cause`` ``None``: an end-of-run check,
        *actor* the runtime's name)."""
        self._emit("violation", actor, None, None, cause, None, None,
                   f"{invariant}: {message}", "error")  # fmt: skip

    # -- sinks ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Make everything emitted so far visible to readers (file sinks write through),
        including a receive still waiting to be folded into its handle."""
        if self.pending is not None:
            self._flush_pending()
        for sink in self._sinks:
            flush = getattr(sink, "flush", None)
            if flush is not None:
                flush()

    def close(self) -> None:
        """Close every sink (flushes file sinks)."""
        if self.pending is not None:
            self._flush_pending()
        for sink in self._sinks:
            sink.close()
