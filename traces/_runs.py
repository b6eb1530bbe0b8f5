"""Runs: consecutive same-shape events recorded as one record.

``HandleRun``: an actor loop that takes tell after tell and whose handlers trace nothing
themselves produces the same two events per message, over and over: a ``receive`` folded
into its ``handle`` (see ``traces.expand``). The loop records such a stream into one
``HandleRun`` instead (``begin``/``end``): an id, a type name and two times per message,
no event object, no call into the tracer.

``SendRun``: a sender telling one actor message after message (of one type, while
handling one message) produces the same ``send`` over and over. ``ActorRef.tell``'s traced
fast path records such a stream into one ``SendRun`` (``add``): one time per message, and
its payload if the tracer records payloads into a sink that takes such runs.

Each exists twice, with one interface (``HandleRunLike``, ``SendRunLike``): compiled
(``_cruns``, from ``_cruns.c``: C arrays, the clock read in C) and in pure Python
(``PyHandleRun``, ``PySendRun``: the reference, and the fallback where the extension was not
built or ``TRIOXIDE_PURE_PYTHON`` is set). ``HandleRun``/``SendRun`` are the ones in use.

A run is appended to only while it is the tracer's *pending* record: nothing else was
traced since it was opened. Whatever the tracer records next writes the run first
(``Tracer``), so seqs stay in order and a run stands for a contiguous range of them.

A run is a recording device, not part of the trace model: sinks get it as the records it
stands for (``records``), ``MemorySink`` keeps it whole and expands it on read. Under
``MockClock`` a run's events are byte for byte those of message-by-message recording;
under a real clock each handler's ``t0`` is the previous handler's end when the loop went
straight from one to the next within a run (the loop's own bookkeeping between them, well
under a microsecond, is not timed; a run's first handler reads the clock).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable

import msgspec

from ._event import NO_PAYLOAD, TraceEvent

__all__ = [
    "COMPILED",
    "HANDLE_RUN_TYPES",
    "PURE_PYTHON_ENV",
    "RUN_MAX_MESSAGES",
    "RUN_TYPES",
    "SEND_RUN_TYPES",
    "HandleRun",
    "PyHandleRun",
    "PySendRun",
    "Run",
    "SendRun",
]

#: The most messages one run records (then the next run opens): bounds a ring record's
#: size (``MemorySink`` counts a run as the events it stands for).
RUN_MAX_MESSAGES: Final = 64


#: ``items`` slots per message: msg_id, message type name, t0 (handler began), t (ended).
_SLOTS: Final = 4

#: ``items`` of a full run.
_FULL: Final = RUN_MAX_MESSAGES * _SLOTS


@runtime_checkable
class _RunLike(Protocol):
    """What both kinds of run offer their tracer and their readers."""

    @property
    def actor(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def last_seq(self) -> int: ...
    @property
    def frozen(self) -> bool: ...
    def freeze(self) -> None: ...
    def records(self) -> list[TraceEvent]: ...
    def lone_record(self) -> TraceEvent | None: ...


@runtime_checkable
class HandleRunLike(_RunLike, Protocol):
    """A ``HandleRun`` of either implementation (``PyHandleRun``, ``_cruns.HandleRun``)."""

    def __init__(
        self, actor: str, seq: int, clock: Callable[[], float], offset: float = 0.0
    ) -> None: ...
    @property
    def items(self) -> Sequence[Any]: ...
    def begin(self, msg_id: int, msg: object, fresh: bool) -> None: ...
    def end(self) -> None: ...
    def take_open(self, msg_id: int) -> tuple[str, float] | None: ...
    def columns(self) -> HandleColumns: ...


@runtime_checkable
class SendRunLike(_RunLike, Protocol):
    """A ``SendRun`` of either implementation (``PySendRun``, ``_cruns.SendRun``)."""

    def __init__(
        self, actor: str, sender: str | None, cause: int | None, cls: type, seq: int,
        clock: Callable[[], float], offset: float, times: Sequence[float], *,
        encode: Callable[[Any], msgspec.Raw] | None = None,
        payloads: Sequence[msgspec.Raw] = (),
    ) -> None: ...  # fmt: skip
    @property
    def sender(self) -> str | None: ...
    @property
    def cause(self) -> int | None: ...
    @property
    def cls(self) -> type: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def offset(self) -> float: ...
    @property
    def times(self) -> Sequence[float] | bytes: ...
    @property
    def encode(self) -> Callable[[Any], msgspec.Raw] | None: ...
    @property
    def payloads(self) -> Sequence[msgspec.Raw]: ...
    def add(self, actor: str, msg: object, sender: str | None, cause: int | None) -> int | None: ...


class PyHandleRun(msgspec.Struct, gc=False):
    """Tells to *actor* handled back to back, from seq *seq* on (the pure-Python
    ``HandleRun``: the reference for ``_cruns.HandleRun``).

    ``items`` holds four slots per message, ``msg_id, type name, t0, t``: the handler of
    ``msg_id`` began at ``t0`` and returned at ``t`` (times are ``clock() + offset``). The
    last message may be *open* (three slots: its handler is running); it stands for its
    ``receive`` alone. Message ``i`` has the seqs ``seq + 2i`` (its receive) and
    ``seq + 2i + 1`` (its handle).

    Only the actor loop appends (``begin``, ``end``), and only while the run is its
    tracer's pending record; once written the run never changes (``freeze``).

    Not tracked by the cyclic GC, and neither are its items once written (a tuple of
    numbers and strings, which the GC stops tracking): a ring holding thousands of runs
    adds nothing to the full collections that would otherwise walk every slot.
    """

    actor: str
    seq: int
    clock: Callable[[], float]
    offset: float = 0.0
    items: list[Any] | tuple[Any, ...] = msgspec.field(default_factory=list)

    def begin(self, msg_id: int, msg: object, fresh: bool) -> None:
        """The handler of *msg* (``msg_id``) begins: at the previous message's end if the
        loop went straight on from it (not *fresh*) and it is this run's, else now.
        Raises ``RuntimeError`` if the run was written, is full or has an open message."""
        # (One check for the three refusals: this is the actor loop's hot path.)
        items = self.items
        n = len(items)
        if type(items) is not list or n % _SLOTS or n >= _FULL:
            self._writable()
            raise RuntimeError(
                "begin(): a message of the run is still open"
                if n % _SLOTS
                else f"begin(): the run is full ({RUN_MAX_MESSAGES} messages)"
            )
        t0 = items[-1] if n and not fresh else self.clock() + self.offset
        items += (msg_id, type(msg).__name__, t0)

    def end(self) -> None:
        """The open message's handler returned, now."""
        items = self.items
        if type(items) is not list or len(items) % _SLOTS != 3:
            self._writable()
            raise RuntimeError("end(): no message of the run is open")
        items.append(self.clock() + self.offset)

    def _writable(self) -> list[Any]:
        """The items, if the run was not written yet (else ``RuntimeError``)."""
        items = self.items
        if type(items) is not list:
            raise RuntimeError("a written run never changes")
        return items

    def freeze(self) -> None:
        """The run was written: its items become a tuple."""
        self.items = tuple(self.items)

    @property
    def frozen(self) -> bool:
        """Whether the run was written."""
        return type(self.items) is tuple

    def __repr__(self) -> str:
        return f"HandleRun({self.actor!r}, seq={self.seq}, events={self.count})"

    @property
    def count(self) -> int:
        """Events the run stands for (a receive and a handle per message; an open
        message's receive)."""
        n = len(self.items)
        return n // _SLOTS * 2 + (n % _SLOTS != 0)

    @property
    def last_seq(self) -> int:
        return self.seq + self.count - 1

    def take_open(self, msg_id: int) -> tuple[str, float] | None:
        """If *msg_id* is the open message, remove it and return its type name and
        ``t0`` (its handle is then recorded on its own, folded, by the tracer)."""
        items = self._writable()
        if len(items) % _SLOTS == 3 and items[-3] == msg_id:
            t0: float = items.pop()
            name: str = items.pop()
            items.pop()
            return name, t0
        return None

    def columns(self) -> HandleColumns:
        """``(ids, types, t0, t)`` as a run line writes them (``traces.RUN_LINES``):
        *types* is the one type name if every message has it; ``t0[i]`` is ``None`` where
        message ``i`` began when message ``i - 1`` ended."""
        items = self.items
        ids, names, starts, ends = items[0::4], items[1::4], items[2::4], items[3::4]
        t0 = tuple(None if i and ends[i - 1] == start else start for i, start in enumerate(starts))
        same = bool(names) and all(name == names[0] for name in names)
        return tuple(ids), names[0] if same else tuple(names), t0, tuple(ends)

    def records(self) -> list[TraceEvent]:
        """The records the run stands for, as a tracer writes them: a folded handle per
        completed message, then the open message's receive (if any)."""
        items, seq = self.items, self.seq
        n = len(items) - len(items) % _SLOTS
        out = [self._handle(seq + 1 + i // 2, i) for i in range(0, n, _SLOTS)]
        if n < len(items):
            out.append(self._receive(seq + n // 2, n))
        return out

    def lone_record(self) -> TraceEvent | None:
        """The one record the run stands for, if it stands for one (an open message's
        receive, or one folded handle): a tracer writes that instead of the run."""
        n = len(self.items)
        if n == 3:
            return self._receive(self.seq, 0)
        if n == _SLOTS:
            return self._handle(self.seq + 1, 0)
        return None

    def _handle(self, seq: int, i: int) -> TraceEvent:
        items = self.items
        return handle_record(seq, self.actor, items[i], items[i + 1], items[i + 2], items[i + 3])

    def _receive(self, seq: int, i: int) -> TraceEvent:
        items = self.items
        return receive_record(seq, self.actor, items[i], items[i + 1], items[i + 2])


class PySendRun(msgspec.Struct, gc=False, repr_omit_defaults=False):
    """Tells from *sender* (``None``: from outside any actor) to *actor*, all of class
    *cls* and caused by *cause*, recorded back to back from seq *seq* on (the pure-Python
    ``SendRun``: the reference for ``_cruns.SendRun``).

    ``times`` holds each send's ``t``, read from ``clock() + offset``: message ``i`` is the
    event ``send`` with seq and ``msg_id`` ``seq + i`` (a tell is its send's seq). No
    payload: a tracer recording payloads opens no send runs.

    Only ``ActorRef.tell``'s traced fast path appends (``add``: at most
    ``RUN_MAX_MESSAGES``), and only while the run is its tracer's pending record; once
    written the run never changes.

    Not tracked by the cyclic GC (it refers to nothing that refers back to it): a ring
    holding thousands of runs adds nothing to the full collections that walk it.
    """

    actor: str
    sender: str | None
    cause: int | None
    cls: type
    seq: int
    clock: Callable[[], float]
    offset: float
    #: The sends' times: a list while the run is open, packed doubles once written (8
    #: bytes a send and no object the cyclic GC tracks or counts: a tuple of floats, or an
    #: ``array``, measured 16-17 gen-0 collections per 200,000 traced tells instead of 12
    #: and a full collection every few runs).
    times: list[float] | bytes
    #: ``msg -> its payload`` (``msgspec.Raw``): the run records each send's payload (a
    #: tracer recording payloads, writing to a sink that takes such runs); ``None``: none.
    encode: Callable[[Any], msgspec.Raw] | None = None
    #: Each send's payload (with *encode*).
    payloads: list[msgspec.Raw] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        self.times = list(self.times)
        self.payloads = list(self.payloads)
        if len(self.payloads) != (len(self.times) if self.encode is not None else 0):
            raise ValueError(f"{len(self.times)} times but {len(self.payloads)} payloads")

    def add(self, actor: str, msg: object, sender: str | None, cause: int | None) -> int | None:
        """If this is the run's send again (the same *actor*, *sender* and *cause* objects,
        *msg* of exactly the run's class) and the run has room, record its time now and
        return its ``msg_id``; otherwise ``None`` (nothing changed)."""
        times = self.times
        if (
            actor is self.actor
            and type(msg) is self.cls
            and sender is self.sender
            and cause is self.cause
            and type(times) is list
            and (n := len(times)) < RUN_MAX_MESSAGES
        ):
            if self.encode is None:
                times.append(self.clock() + self.offset)
            else:
                payload = self.encode(msg)
                times.append(self.clock() + self.offset)
                self.payloads.append(payload)
            return self.seq + n
        return None

    def __repr__(self) -> str:
        return f"SendRun({self.actor!r}, seq={self.seq}, events={self.count})"

    @property
    def count(self) -> int:
        """Events the run stands for (a send per message)."""
        times = self.times
        return len(times) if type(times) is list else len(times) // 8

    def freeze(self) -> None:
        """The run was written: its times become packed doubles."""
        times = self.times
        if type(times) is list:
            self.times = struct.pack(f"{len(times)}d", *times)

    @property
    def frozen(self) -> bool:
        """Whether the run was written."""
        return type(self.times) is bytes

    @property
    def last_seq(self) -> int:
        return self.seq + self.count - 1

    def records(self) -> list[TraceEvent]:
        """The ``send`` events the run stands for, as a tracer writes them."""
        times = self.times
        each = times if isinstance(times, list) else struct.unpack(f"{len(times) // 8}d", times)
        return [self._send(i, t) for i, t in enumerate(each)]

    def lone_record(self) -> TraceEvent | None:
        """The one send the run stands for, if it stands for one (a tracer writes that
        instead of the run)."""
        return next(iter(self.records())) if self.count == 1 else None

    def _send(self, i: int, t: float) -> TraceEvent:
        payload = self.payloads[i] if self.encode is not None else NO_PAYLOAD
        return send_record(self.seq + i, t, self.actor, self.sender, self.cause,
                           self.cls.__name__, payload)  # fmt: skip


# -- the records a run stands for (built here for the pure-Python runs and for run lines
# read from a file, traces._expand; the compiled runs build the same in C) -----------------


def handle_record(seq: int, actor: str, msg_id: int, name: str, t0: float, t: float) -> TraceEvent:
    """A folded ``handle`` of a tell (its ``receive`` at ``t0``)."""
    return TraceEvent(seq, t, "handle", actor, None, msg_id, None, None, name, NO_PAYLOAD, None,
                      "ok", t0)  # fmt: skip


def receive_record(seq: int, actor: str, msg_id: int, name: str, t0: float) -> TraceEvent:
    """The ``receive`` of a tell whose handler is still running."""
    return TraceEvent(seq, t0, "receive", actor, None, msg_id, None, None, name)


def send_record(
    seq: int, t: float, actor: str, sender: str | None, cause: int | None, name: str | None,
    payload: msgspec.Raw = NO_PAYLOAD,
) -> TraceEvent:  # fmt: skip
    """The ``send`` of a tell (its ``msg_id`` is its seq)."""
    return TraceEvent(seq, t, "send", actor, sender, seq, cause, None, name, payload)


#: Set ``TRIOXIDE_PURE_PYTHON=1`` to record runs with the pure-Python classes even where
#: the compiled ones were built (they are the fallback where they were not).
PURE_PYTHON_ENV: Final = "TRIOXIDE_PURE_PYTHON"

_cruns: ModuleType | None
try:
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        raise ImportError(f"{PURE_PYTHON_ENV} is set")
    from . import _cruns as _compiled
except ImportError:
    _cruns = None
else:
    _compiled.bind(TraceEvent, NO_PAYLOAD, RUN_MAX_MESSAGES)
    _cruns = _compiled

#: Whether runs are recorded by the compiled classes (``_cruns``: C arrays, the clock read
#: in C; measured 0.55x tracing on/off instead of 0.44x, ``bench/RESULTS.md``).
COMPILED: Final = _cruns is not None

#: The classes tracers record runs with (``Tracer`` reads them when it opens a run).
HandleRun: type[HandleRunLike] = _cruns.HandleRun if _cruns is not None else PyHandleRun
SendRun: type[SendRunLike] = _cruns.SendRun if _cruns is not None else PySendRun

#: The run classes of both implementations, for ``isinstance`` (typed as the protocols
#: they implement, so that a check narrows to them).
HANDLE_RUN_TYPES: Final[tuple[type[HandleRunLike], ...]] = (PyHandleRun,) + (
    (_cruns.HandleRun,) if _cruns is not None else ()
)
SEND_RUN_TYPES: Final[tuple[type[SendRunLike], ...]] = (PySendRun,) + (
    (_cruns.SendRun,) if _cruns is not None else ()
)
RUN_TYPES: Final[tuple[type[HandleRunLike] | type[SendRunLike], ...]] = (
    HANDLE_RUN_TYPES + SEND_RUN_TYPES
)

#: ``HandleRun.columns()``: ``(ids, types, t0, t)``.
HandleColumns: TypeAlias = (
    "tuple[tuple[int, ...], str | tuple[str, ...], tuple[float | None, ...], tuple[float, ...]]"
)

#: A run of either kind (``MemorySink`` keeps both whole).
Run: TypeAlias = "HandleRunLike | SendRunLike"
