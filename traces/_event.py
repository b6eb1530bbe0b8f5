"""The trace model: one :class:`TraceEvent` per runtime step, a :class:`TraceHeader` per file.

Both are msgspec Structs so that encoding a trace (JSON Lines) is a single C call per
event. ``TraceEvent`` is created with ``gc=False``: events never reference other
containers, and a ring buffer of 100,000 of them must not slow the cyclic GC.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "KINDS",
    "NO_PAYLOAD",
    "OUTCOMES",
    "RUN_LINES",
    "SCHEMA_VERSION",
    "RunBody",
    "TraceEvent",
    "TraceHeader",
]

#: The ``payload`` of an event recorded without one.
NO_PAYLOAD = msgspec.Raw()

#: Bumped whenever a field changes meaning; readers refuse newer schemas and upgrade older
#: ones (version 1 had no ``outcome``: it was spelled in ``detail`` as "ok" / "error: ...";
#: version 3 folds a receive into its handle when nothing was traced in between: ``t0``).
#: Additions that change no field's meaning - new kinds, new optional fields (the HTTP
#: kinds' ``trace_id``/``span_id``/``parent_span``, the header's ``process`` and
#: ``clock_at_start``) - keep the version: a reader that predates them skips the unknown
#: fields and shows an unknown kind as it is. Version 4 adds *run lines* (``RUN_LINES``):
#: one line that stands for many records, which a version-3 reader would show as one
#: unknown event and so lose the rest.
SCHEMA_VERSION = 4

#: Every ``kind`` the runtime emits, with what ``actor``/``peer`` mean for it.
KINDS: dict[str, str] = {
    "spawn": "actor was created under peer (its parent); detail = class name",
    "start": "on_start completed; the actor takes messages",
    "stop": "the actor finally exited; detail = reason; outcome ok, or error if the reason "
    "is an exception",
    "fail": "an incarnation ended with an exception; detail = description of it; cause = "
    "the msg_id whose handler raised it (none if no handler did: a task, a hook)",
    "restart": "the supervisor re-created the actor; detail = restart count",
    "send": "msg_id was enqueued to actor by peer (None = outside any actor); corr set for "
    "asks; detail 'system' for the runtime's own messages (Terminated)",
    "admit": "admission decided ignore/reject for a message to actor, or the mailbox was "
    "full; detail = ignore | reject: <error> | full",
    "unhandled": "a message of a type actor does not accept was refused at send time",
    "receive": "actor took msg_id from its mailbox (handler slice begins); detail "
    "'selective' or 'interrupt' when taken inside another handler (no slice of its own). "
    "Carries msg_type; the payload is on the send. Written only if something was traced "
    "between it and its handle: otherwise folded into the handle (see t0)",
    "handle": "actor's handler for msg_id finished (slice ends); outcome ok | error | "
    "cancelled (stop cancelled it; cause = the msg_id its stopper was handling, if any); "
    "detail = the exception. With t0 set it also stands for "
    "its receive (folded: the slice began at t0, nothing was traced in between; msg_type, "
    "corr as on the receive)",
    "reply": "the ask corr was answered to peer; outcome ok | error; detail = the exception",
    "drop": "msg_id was still queued when actor exited: answered by its drain hook",
    "timeout": "the ask corr timed out (outcome timeout); detail 'timeout' (withdrawn while "
    "queued: never handled) or 'timeout while running' (the handler runs on, its reply is "
    "discarded)",
    "cancel": "the ask corr was cancelled by its caller (outcome cancelled); detail "
    "'cancelled' (withdrawn while queued) or 'cancelled while running'; cause = the msg_id "
    "that led the caller to cancel (an interrupt, a stop), if known",
    "task_start": "a child task of actor started; detail = task name",
    "task_end": "a child task of actor ended; outcome ok | error | cancelled; detail = task "
    "name and outcome; cause (cancelled) = the msg_id that led to the cancellation, if known",
    "watch_set": "a named Watch was set; actor = the setter (if any); detail = watch name",
    "http_send": "actor sent an HTTP request (actor: the calling actor; outside any actor "
    "the serving lane of the request being handled, else 'http:client'); msg_id = corr = "
    "the event's seq (the request's id); cause = the msg_id being handled; peer = the "
    "service (host:port); detail = 'METHOD path'; trace_id/span_id = the traceparent sent "
    "(span_id: this client span), parent_span = the span it continues (None: a new trace)",
    "http_end": "the HTTP request corr (an http_send) ended: outcome ok (a 2xx answer) | "
    "error (an error status, or no answer) | timeout | cancelled (its caller gave up); "
    "detail = the status ('204', '503 SERVICE_UNAVAILABLE: ...') or the failure",
    "http_serve": "a server took an HTTP request: actor = the server's lane ('http:' + "
    "service); msg_id = corr = the event's seq (what the handler's asks carry as cause); "
    "peer = the client's address; detail = 'METHOD path'; trace_id and parent_span = the "
    "incoming traceparent, span_id = the server span. cause: none in a process's own "
    "trace; in a merged trace (traces.merge) the msg_id of the http_send naming parent_span",
    "http_served": "the HTTP request corr (an http_serve) was answered: outcome ok (2xx, "
    "3xx) | error (4xx, 5xx) | cancelled (the client went away, the server stopped); "
    "detail = the status and error code",
    "violation": "the explorer found an invariant broken (outcome error); actor = the actor "
    "whose handled message was being checked (else the runtime's name), cause = that "
    "message's msg_id (None for an end-of-run check); detail = 'invariant: message'. "
    "Written by trioxide.testing's explorer, never by the runtime; a violating run's "
    "trace ends with it",
}

#: The structured ``outcome`` of handler, ask and task events (``None`` on other kinds).
#: Consumers read it instead of parsing ``detail``.
OUTCOMES: dict[str, str] = {
    "ok": "completed normally (a handler returned, an ask got its value, a task returned)",
    "error": "ended with an exception (described in detail)",
    "cancelled": "cancelled: a handler or task by stop or its scope, an ask by its caller",
    "timeout": "an ask's timeout passed",
}


class RunBody(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """The messages of a run line (a ``TraceEvent`` whose ``kind`` is in ``RUN_LINES``),
    one array entry per message.

    ``handle_run``: ``ids``, ``types`` and ``t0`` of each message handled, and ``t``, when
    each handler returned - one entry fewer if the last one is still open (it stands for
    its ``receive`` alone). ``types`` is empty when every message has the line's
    ``msg_type``; ``t0[i]`` is ``None`` when message ``i`` began as message ``i - 1``
    ended (``t[i - 1]``). ``send_run``: ``t`` of each send, and ``payloads`` (each send's
    message) if the tracer recorded payloads.
    """

    ids: tuple[int, ...] = ()
    types: tuple[str, ...] = ()
    t0: tuple[float | None, ...] = ()
    t: tuple[float, ...] = ()
    payloads: tuple[msgspec.Raw, ...] = ()


#: The kinds of *run lines*: a file sink writes a run of records (``traces.HandleRun``,
#: ``traces.SendRun``) as one line - the same records, fewer bytes. Readers expand them
#: (``traces.expand``); no consumer of events ever sees these kinds.
RUN_LINES: dict[str, str] = {
    "handle_run": "tells to actor handled back to back from seq on: message i is the "
    "receive seq + 2i and the handle seq + 2i + 1 (folded: a handle with t0), msg_id "
    "run.ids[i], msg_type run.types[i] (or the line's msg_type for all), from run.t0[i] "
    "(None: run.t[i - 1]) to run.t[i]; an open last message (no t) is its receive alone; "
    "t = run.t0[0]",
    "send_run": "tells sent back to back from peer (None: outside any actor) to actor, "
    "caused by cause, of type msg_type: send i has seq and msg_id seq + i, time run.t[i] "
    "and payload run.payloads[i] (if any); t = run.t[0]",
}


class TraceEvent(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One runtime step.

    ``seq`` is global and strictly increasing within a run; ``t`` is the Trio clock
    (virtual under ``MockClock``). ``cause`` is the ``msg_id`` the emitting actor was
    handling when the step happened, which lets a reader rebuild causal chains; ``corr``
    pairs an ask with its reply (it is the ask's ``msg_id``).
    """

    seq: int
    t: float
    kind: str
    actor: str
    peer: str | None = None
    msg_id: int | None = None
    cause: int | None = None
    corr: int | None = None
    msg_type: str | None = None
    #: The message's msgspec JSON, kept undecoded; empty (``len(payload) == 0``) if none.
    payload: msgspec.Raw = NO_PAYLOAD
    detail: str | None = None
    #: One of ``OUTCOMES`` on handle, reply, cancel, timeout, task_end, fail, stop and
    #: violation events.
    outcome: str | None = None
    #: On a ``handle`` that also stands for its ``receive``: when the handler began.
    t0: float | None = None
    #: W3C trace context of the HTTP kinds (``http_send``, ``http_serve``): the trace's
    #: id (32 hex digits), the span the event opens and the span it continues (16 each).
    trace_id: str | None = None
    span_id: str | None = None
    parent_span: str | None = None
    #: On a run line only (``RUN_LINES``): the messages it stands for.
    run: RunBody | None = None


class TraceHeader(msgspec.Struct, frozen=True):
    """First line of a trace file. ``trioxide_trace`` (the schema version) is always
    written and required by readers: it is what marks a file as a trioxide trace."""

    trioxide_trace: int = SCHEMA_VERSION
    seed: int | None = None
    trio_version: str = ""
    started_at: str | None = None
    command: list[str] = msgspec.field(default_factory=list)
    #: The process that wrote the trace (a rack process: ``sled-1``, ``nexus``); what
    #: ``traces.merge`` prefixes its actors with.
    process: str | None = None
    #: The trace clock's reading (an event's ``t``) at the wall-clock instant
    #: ``started_at``: the anchor that lines up the timelines of merged traces.
    clock_at_start: float | None = None
