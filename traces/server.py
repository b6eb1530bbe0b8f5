"""Serve a trace to the browser viewer: one loopback port for the page and a WebSocket.

``TraceServer`` listens on a single TCP port (``127.0.0.1`` and a free port by default)
and answers two kinds of request on it:

* ``GET /`` (``index.html``), ``/viewer.js``, ``/viewer.css``, ``/panels.js`` and
  ``/panels.css``: the static viewer in ``traces/viewer/``, with ``Content-Length`` and
  ``Connection: close``;
* ``GET /ws`` with ``Upgrade: websocket``: the trace stream, handed to trio-websocket.

HTTP/1.1 requests are parsed by h11, one request per connection: every response says
``Connection: close`` and the connection is closed after it (a pipelined second request
is never read). A request head must arrive within ``request_timeout`` seconds (else 408)
and hold at most 16 KiB and 100 header lines (else 431); a malformed one gets 400. Every
refusal is a complete response and closes only that connection.

Protocol (JSON text frames). Server to client::

    {"type": "hello", "header": {...trace header...}, "mode": "live" | "replay"}
    {"type": "events", "events": [<TraceEvent as a JSON object, payload embedded>, ...]}
    {"type": "dropped", "count": N}       # live: total events dropped for this client
    {"type": "line_error", "line": n, "error": "..."}   # replay: a corrupted line, skipped
    {"type": "end"}                       # replay: the file was sent; live: the sink closed
    {"type": "pong"}

Client to server: ``{"type": "ping"}`` only. Any other frame (not JSON, not an object,
an unknown type, a binary frame) closes *that* connection with code 1003.

Columns (``/ws?format=columns``, what the browser viewer asks for): the same frames, but
the events come in ``columns`` frames instead of ``events`` frames, one array per field,
and every string field (kind, actor, peer, msg_type, detail, outcome) as an index into
the frame's own string table: index 0 stands for an absent field, index ``i >= 1`` for
``strings[i - 1]`` (every frame can be decoded alone)::

    {"type": "columns", "n": 2, "strings": ["send", "sled/a", "Ping", "receive"],
     "seq": [7, 8], "t": [0.5, 0.75], "kind": [1, 4], "actor": [2, 2], "peer": [0, 0],
     "msg_id": [7, 7], "cause": [null, null], "corr": [null, null], "msg_type": [3, 3],
     "detail": [0, 0], "outcome": [0, 0], "payload": ["{...}", null]}

An absent number or payload is ``null``; a payload is its JSON text, as a string. ``hello``
then also says ``"format": "columns"``, and a replay's ``end`` adds ``"events"`` (the number sent)
and ``"build_s"`` (seconds the server spent reading the file and building the frames for
this client). A handshake asking for another format is refused (400).

Sources:

* **replay** (:meth:`TraceServer.from_file`): when the server starts, the file is
  checked in one decoding pass that keeps nothing but counts (``total``); it is then read
  again for each client as its frames are sent, a chunk at a time in a worker thread, so
  memory stays bounded whatever the size of the file and the browser parses the first
  frames while the server builds the next. Every client gets ``hello``, the events in
  order (``line_error`` frames at the place of the damaged lines, which are skipped, as
  ``traces.iter_trace`` does), then ``end``. In the ``hello`` frame, ``total`` is the
  number of events that follow. Lines appended to the file after the start are not sent.
* **live** (:attr:`TraceServer.sink`): a :class:`traces.Sink` whose ``write`` never
  blocks, never raises and costs O(number of clients): the event goes into a bounded
  history ring and into each client's bounded queue. A client whose queue is full loses
  the event (counted for that client only, reported as ``dropped``), so a slow or stalled
  browser never slows the runtime. A client that connects late first gets the history
  ring, then live events, without gap or duplicate. ``sink.close()`` sends ``end``
  (``columns`` clients: with ``events``, the number sent to them, and ``dropped``).
  ``write`` may be called from the Trio thread running :meth:`TraceServer.serve` or from
  one other thread (e.g. a runtime running under its own ``trio.run`` with a virtual
  clock): the hand-over uses only ``deque`` operations and ``TrioToken.run_sync_soon``.

Security: binding to anything but a loopback address requires a ``token``. With a token,
both the page and the WebSocket handshake must carry ``?token=...`` (else 403). Without
one (loopback only) the ``Host`` header must name the loopback address, which defeats DNS
rebinding. A WebSocket handshake that carries an ``Origin`` other than the page's own is
refused (403), so other sites open in the same browser cannot read the trace.

Live counters, per client: the sink's ``written`` counts the events written to it
(a folded handle counts as its receive and its handle, as ``traces.expand`` gives them),
so for a sink given to a tracer before its first event it is the tracer's ``seq`` - once
the tracer has written what it holds back (``Tracer.pending``: a receive waiting to be
folded into its handle, at most one record; ``Tracer.flush`` writes it). Each event
written is then, for each client, exactly one of: sent, queued, or dropped. ``dropped``
(the ``dropped`` frame's count) covers the events lost to a full queue and those that
had left the history ring before the client connected; so once the tracer is flushed
and the client's queue drained, events sent + dropped = ``written`` = the last ``seq``.

Timeouts (reading a request head, the handshake) are measured with the clock of the Trio
run serving, which must be real time: :meth:`TraceServer.serve` refuses a
``trio.testing.MockClock``, whose virtual seconds fly by whenever every task waits (and
which, with nothing left to jump to, polls without sleeping). A program whose run is in
virtual time - ``trioxide demo --view`` - serves from a thread of its own instead:
:meth:`TraceServer.serve_in_thread` runs the server under its own ``trio.run`` with the
real clock for the duration of a ``with`` block (started, stopped and joined by the
block), and the program's tracer writes to :attr:`TraceServer.sink` from its thread. The
server's timeouts then fire in real time whatever the simulation does, half-open
connections are closed, and once the simulation's run is over the server waits for I/O
with no deadline at all.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hmac
import ipaddress
import itertools
import logging
import math
import multiprocessing
import os
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlsplit

import h11
import msgspec
import trio
import trio.testing
import trio_websocket

from ._event import TraceEvent, TraceHeader
from ._expand import expand, is_folded
from ._reader import LineError, decode_event, iter_trace

__all__ = [
    "ClientStatistics",
    "ServerStatistics",
    "ServingThread",
    "TraceServer",
    "TraceServerSink",
    "is_loopback",
    "url_host",
]

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_MAX_HEAD: Final = 16 * 1024  # bytes of a request head
_MAX_HEADERS: Final = 100  # header lines of a request
_ASSETS: Final[dict[str, tuple[str, str]]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
    "/viewer.css": ("viewer.css", "text/css; charset=utf-8"),
    "/panels.js": ("panels.js", "text/javascript; charset=utf-8"),
    "/panels.css": ("panels.css", "text/css; charset=utf-8"),
}
_PAGES: Final = frozenset({"/", "/index.html"})
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_END: Final = '{"type":"end"}'
_CLOSE_TIMEOUT: Final = 1.0  # seconds to wait for a client's closing handshake
_LINGER_BYTES: Final = 64 * 1024  # read (and ignored) after a response, before closing
_PONG: Final = '{"type":"pong"}'
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
}


# -- statistics --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientStatistics:
    """One viewer connection. Live: ``sent`` events were sent to it, ``queued`` wait in
    its queue, ``dropped`` it will never get (its queue was full, or - ``missed``, part of
    ``dropped`` - they had left the history ring before it connected). Once its queue is
    empty, ``sent + dropped`` is the sink's ``written`` (see the module docstring)."""

    id: int
    remote: str
    sent: int
    dropped: int
    queued: int
    missed: int = 0


@dataclass(frozen=True)
class ServerStatistics:
    """A snapshot of :meth:`TraceServer.statistics`.

    ``sent``/``dropped`` are totals over every client since the server started (including
    clients that have gone); ``per_client`` lists the connected ones. ``history`` is the
    number of events the live history ring holds (replay: events in the file);
    ``history_dropped`` the live events that fell off the ring; ``written`` the events
    written to the live sink; ``line_errors`` the damaged lines of a replayed file.
    """

    mode: str
    clients: int
    sent: int
    dropped: int
    history: int
    history_dropped: int
    written: int
    line_errors: int
    per_client: tuple[ClientStatistics, ...]


# -- framing -----------------------------------------------------------------------------

#: The WebSocket frame formats a client may ask for (``/ws?format=...``).
LEGACY: Final = "events"
COLUMNS: Final = "columns"
_FORMATS: Final = frozenset({LEGACY, COLUMNS})
#: Events per ``columns`` frame (also capped at ``max_frame_bytes``): about 300 kB.
_COLUMN_BATCH: Final = 4096


def _event_frames(
    events: Iterable[TraceEvent], max_events: int, max_bytes: int
) -> Iterator[tuple[str, int]]:
    """Encode *events* into ``events`` frames of at most *max_events* / about *max_bytes*
    each (a single larger event gets a frame of its own). Yields (frame, event count)."""
    parts: list[bytes] = []
    size = 0
    for event in events:
        data = _encode(event)
        if parts and (len(parts) >= max_events or size + len(data) > max_bytes):
            yield _join(parts), len(parts)
            parts = []
            size = 0
        parts.append(data)
        size += len(data) + 1
    if parts:
        yield _join(parts), len(parts)


def _join(parts: list[bytes]) -> str:
    return (b'{"type":"events","events":[' + b",".join(parts) + b"]}").decode()


def _json(obj: Any) -> str:
    return _encode(obj).decode()


class _StringTable(dict[str | None, int]):
    """A ``columns`` frame's string table: index 0 is ``None`` (an absent field), then
    each string in the order it first appears (``strings``)."""

    def __init__(self) -> None:
        super().__init__({None: 0})
        self.strings: list[str] = []

    def __missing__(self, key: str | None) -> int:
        index = len(self)
        self[key] = index
        self.strings.append(key)  # type: ignore[arg-type]  # None is always present
        return index


def _column_frame(events: Sequence[TraceEvent]) -> str:
    """One ``columns`` frame of *events*, with its own string table."""
    s = _StringTable()
    frame = {
        "type": "columns",
        "n": len(events),
        "seq": [e.seq for e in events],
        "t": [e.t for e in events],
        "kind": [s[e.kind] for e in events],
        "actor": [s[e.actor] for e in events],
        "peer": [s[e.peer] for e in events],
        "msg_id": [e.msg_id for e in events],
        "cause": [e.cause for e in events],
        "corr": [e.corr for e in events],
        "msg_type": [s[e.msg_type] for e in events],
        "detail": [s[e.detail] for e in events],
        "outcome": [s[e.outcome] for e in events],
        "payload": [bytes(e.payload).decode() if e.payload else None for e in events],
        "strings": s.strings,
    }
    return _encode(frame).decode()


def _column_frames(
    events: Sequence[TraceEvent], max_events: int, max_bytes: int
) -> Iterator[tuple[str, int]]:
    """*events* as ``columns`` frames of at most *max_events* events and *max_bytes*
    bytes each (unless a single event is larger)."""
    for start in range(0, len(events), max_events):
        yield from _frames_within(events[start : start + max_events], max_bytes)


def _frames_within(events: Sequence[TraceEvent], max_bytes: int) -> Iterator[tuple[str, int]]:
    frame = _column_frame(events)
    if len(frame) <= max_bytes or len(events) == 1:
        yield frame, len(events)
    else:  # too large (large payloads): halves
        half = len(events) // 2
        yield from _frames_within(events[:half], max_bytes)
        yield from _frames_within(events[half:], max_bytes)


def _frames(
    fmt: str, events: Sequence[TraceEvent], batch: int, max_bytes: int
) -> Iterator[tuple[str, int]]:
    """*events* as frames of format *fmt* (``columns`` frames hold at least
    ``_COLUMN_BATCH`` events unless *max_bytes* says otherwise)."""
    if fmt == LEGACY:
        return _event_frames(events, batch, max_bytes)
    return _column_frames(events, max(batch, _COLUMN_BATCH), max_bytes)


# -- reading a replayed file ---------------------------------------------------------------
#
# When the server starts, the file is cut into chunks of whole lines (their byte ranges)
# and every chunk is decoded once to count its events and find its damaged lines. Each
# client's frames are then built chunk by chunk, independently of each other: in a pool of
# worker processes for a large file (so that the cores of the machine share the decoding,
# which the GIL would otherwise serialize), in a worker thread for a small one. Old-schema
# files (upgraded by traces' reader) are read with iter_trace, in a worker thread.

_READ_BLOCK: Final = 1 << 20  # bytes read at a time
_CHUNK_LINES: Final = 4096  # lines decoded at a time
#: Files of at least this many chunks are decoded by a process pool (when there are
#: several CPUs); smaller ones in a worker thread.
_POOL_MIN_CHUNKS: Final = 16
#: Chunks being built ahead of the one being sent, per client.
_AHEAD: Final = 4


@dataclass(frozen=True)
class _Chunk:
    """Whole lines of a trace file: *size* bytes from *offset*, the first being *line*."""

    offset: int
    size: int
    line: int


@dataclass(frozen=True)
class _ReplaySource:
    """A replayed file: its chunks (none for an old-schema file, read with iter_trace)."""

    path: str
    chunks: tuple[_Chunk, ...]
    old_schema: bool


def _replay_source(path: str) -> _ReplaySource:
    """Cut *path* into chunks of ``_CHUNK_LINES`` lines after its header (the lines there
    now: lines appended later are not part of the replay)."""
    with open(path, "rb") as f:
        header = msgspec.json.decode(f.readline(), type=TraceHeader)
        if header.trioxide_trace < 2:
            return _ReplaySource(path, (), old_schema=True)
        chunks: list[_Chunk] = []
        offset = f.tell()
        line = 2
        count = 0  # lines in the chunk being measured
        size = 0
        tail = b""
        while block := f.read(_READ_BLOCK):
            lines = (tail + block).split(b"\n")
            tail = lines.pop()  # an incomplete line (or b"")
            i = 0
            while i < len(lines):
                take = min(_CHUNK_LINES - count, len(lines) - i)
                size += sum(map(len, lines[i : i + take])) + take
                count += take
                i += take
                if count == _CHUNK_LINES:
                    chunks.append(_Chunk(offset, size, line))
                    offset += size
                    line += count
                    count = size = 0
        if tail:  # the last line has no newline
            size += len(tail)
            count += 1
        if count:
            chunks.append(_Chunk(offset, size, line))
    return _ReplaySource(path, tuple(chunks), old_schema=False)


def _chunk_lines(path: str, chunk: _Chunk) -> list[bytes]:
    with open(path, "rb") as f:
        f.seek(chunk.offset)
        data = f.read(chunk.size)
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    return lines


def _decode_chunk(lines: list[bytes], first: int) -> Iterator[list[TraceEvent] | LineError]:
    """Decode *lines* (numbered from *first*) as ``iter_trace`` does: the events,
    expanded, and a ``LineError`` in place of each line that is not an event."""
    try:  # the common case: every line is an event
        # The reader's own line decoder: bad UTF-8 and deep nesting are damaged lines here too.
        events = [decode_event(line) for line in lines]
    except msgspec.DecodeError:  # a damaged or a blank line: one at a time
        pass
    else:
        yield _expanded(events)
        return
    good: list[TraceEvent] = []
    for n, line in enumerate(lines, start=first):
        if not line.strip():
            continue
        try:
            good.append(decode_event(line))
        except msgspec.DecodeError as exc:
            if good:
                yield _expanded(good)
                good = []
            yield LineError(n, str(exc))
    if good:
        yield _expanded(good)


def _expanded(events: list[TraceEvent]) -> list[TraceEvent]:
    """*events* with every folded handle and run line expanded (``traces.expand``)."""
    folded = [i for i, e in enumerate(events) if e.t0 is not None or e.run is not None]
    if not folded:
        return events
    out: list[TraceEvent] = []
    start = 0
    for i in folded:
        out.extend(events[start:i])
        out.extend(expand(events[i : i + 1]))
        start = i + 1
    out.extend(events[start:])
    return out


def _count_chunk(path: str, chunk: _Chunk) -> tuple[int, list[LineError]]:
    """The number of events in *chunk* and its damaged lines (runs in a worker)."""
    count = 0
    errors: list[LineError] = []
    for item in _decode_chunk(_chunk_lines(path, chunk), chunk.line):
        if isinstance(item, LineError):
            errors.append(item)
        else:
            count += len(item)
    return count, errors


@dataclass(frozen=True)
class _Built:
    """A chunk's frames, ready to send, and the CPU seconds it took to build them."""

    frames: list[tuple[str, int]]
    cpu: float


#: A chunk being built by the pool, or built already (in a worker thread).
_Building = concurrent.futures.Future[_Built] | _Built


def _error_frame(error: LineError) -> str:
    return _json({"type": "line_error", "line": error.line, "error": error.error})


def _build_chunk(path: str, chunk: _Chunk, fmt: str, batch: int, max_bytes: int) -> _Built:
    """The frames of *chunk* in format *fmt* (runs in a worker)."""
    started = time.process_time()
    frames: list[tuple[str, int]] = []
    for item in _decode_chunk(_chunk_lines(path, chunk), chunk.line):
        if isinstance(item, LineError):
            frames.append((_error_frame(item), 0))
        else:
            frames.extend(_frames(fmt, item, batch, max_bytes))
    return _Built(frames, time.process_time() - started)


def _upgraded(path: str) -> Iterator[list[TraceEvent] | LineError]:
    """An old-schema file, through ``iter_trace`` (which upgrades its events)."""
    errors: list[LineError] = []
    pending: list[TraceEvent] = []
    for event in iter_trace(path, errors):
        if errors:
            if pending:
                yield pending
                pending = []
            yield from errors
            errors.clear()
        pending.append(event)
        if len(pending) >= _CHUNK_LINES:
            yield pending
            pending = []
    if pending:
        yield pending
    yield from errors


def _count_upgraded(path: str) -> tuple[int, list[LineError]]:
    count = 0
    errors: list[LineError] = []
    for item in _upgraded(path):
        if isinstance(item, LineError):
            errors.append(item)
        else:
            count += len(item)
    return count, errors


def _build_upgraded(
    items: Iterator[list[TraceEvent] | LineError], fmt: str, batch: int, max_bytes: int
) -> _Built | None:
    """The next frames of an old-schema file (``None`` at its end)."""
    started = time.process_time()
    item = next(items, None)
    if item is None:
        return None
    if isinstance(item, LineError):
        frames = [(_error_frame(item), 0)]
    else:
        frames = list(_frames(fmt, item, batch, max_bytes))
    return _Built(frames, time.process_time() - started)


def _new_pool() -> concurrent.futures.ProcessPoolExecutor | None:
    """Worker processes to decode a large file with (none on a single CPU)."""
    workers = min(os.cpu_count() or 1, 4)
    if workers < 2:
        return None
    context = multiprocessing.get_context("spawn")  # never fork a process with threads
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_die_with_parent
    )


def _die_with_parent() -> None:
    """In a decode worker: end with the process that started it, however that one ends
    (a ``kill -9`` of ``trioxide view`` runs none of its cleanup). Linux only
    (``PR_SET_PDEATHSIG``); elsewhere the workers exit when they find their pipe closed."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal as signals

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signals.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl: the pipe still ends it
        return
    if os.getppid() == 1:  # the parent died before the signal was set up
        os._exit(0)


async def _result(future: concurrent.futures.Future[_Built]) -> _Built:
    """Wait for *future* (of a worker process) without blocking Trio."""
    if not future.done():
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        await done.wait()
    return future.result()


# -- the live sink -----------------------------------------------------------------------


class _Client:
    __slots__ = (
        "dropped",
        "id",
        "limit",
        "missed",
        "queue",
        "remote",
        "reported",
        "sent",
        "skip_through",
    )

    def __init__(self, client_id: int, remote: str, limit: int) -> None:
        self.id = client_id
        self.remote = remote
        self.limit = limit
        self.queue: deque[TraceEvent] = deque()
        self.dropped = 0  # queue overflows: written by the sink's writer only
        self.missed = 0  # written before it connected, gone from the history ring
        self.reported = 0
        self.sent = 0
        self.skip_through: TraceEvent | None = None

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            self.id, self.remote, self.sent, self.undelivered, len(self.queue), self.missed
        )

    @property
    def undelivered(self) -> int:
        """Events of the live stream this client will never get (its ``dropped``)."""
        return self.dropped + self.missed


class TraceServerSink:
    """The live source of a :class:`TraceServer` (a :class:`traces.Sink`).

    Guarantees: ``write`` is synchronous, never awaits, never raises and uses bounded
    memory (the history ring plus one bounded queue per client); it appends to the ring
    and offers the event to every client queue, dropping it for (and counting it against)
    each client whose queue is full. ``close`` makes every client receive ``end`` after
    the events already queued; events written after ``close`` are ignored (``late``).
    """

    __slots__ = (
        "_append",
        "_clients",
        "_closed",
        "_first_seq",
        "_history",
        "_new_data",
        "_token",
        "_wake_pending",
        "errors",
        "late",
        "written",
    )

    def __init__(self, history: int) -> None:
        self._history: deque[TraceEvent] = deque(maxlen=history)
        self._append = self._history.append
        self._clients: tuple[_Client, ...] = ()
        self._closed = False
        self._first_seq: int | None = None  # of the first event written
        self._token: trio.lowlevel.TrioToken | None = None
        self._wake_pending = False
        self._new_data: trio.Event | None = None
        self.written = 0
        self.late = 0
        self.errors = 0

    # Sink API (any one writer thread) ----------------------------------------------

    def write(self, record: TraceEvent) -> None:
        try:
            if self._closed:
                self.late += 1
                return
            if self._first_seq is None:
                self._first_seq = record.seq if not is_folded(record) else record.seq - 1
            for event in expand((record,)):  # clients see every event (traces.expand)
                self.written += 1
                self._append(event)
                for client in self._clients:
                    queue = client.queue
                    # Only this writer appends; the consumer only pops, so the bound holds.
                    if len(queue) < client.limit:
                        queue.append(event)
                    else:
                        client.dropped += 1
            if not self._wake_pending:
                self._request_wake()
        except Exception:  # never raise into the runtime
            self.errors += 1

    def flush(self) -> None:
        """Nothing to do: events are visible to clients as soon as they are written."""

    def close(self) -> None:
        """End the live stream: clients get the queued events, then ``end``."""
        self._closed = True
        self._request_wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._history)

    # Server side (the Trio thread) -------------------------------------------------

    def _request_wake(self) -> None:
        token = self._token
        if token is None:
            return
        self._wake_pending = True
        try:
            token.run_sync_soon(self._wake, idempotent=False)
        except trio.RunFinishedError:
            self._token = None
            self._wake_pending = False

    def _wake(self) -> None:
        self._wake_pending = False
        event = self._new_data
        if event is not None:
            self._new_data = trio.Event()
            event.set()

    def _bind(self, token: trio.lowlevel.TrioToken | None) -> None:
        self._new_data = trio.Event() if token is not None else None
        self._wake_pending = False
        self._token = token

    def _attach(self, client: _Client) -> list[TraceEvent]:
        """Register *client* for live events and return the history so far.

        The client is registered *before* the ring is copied: an event written meanwhile
        by another thread may then be in both, and is skipped once (``skip_through``).
        """
        self._clients = (*self._clients, client)
        snapshot = list(self._history)  # one step: no other thread runs meanwhile
        client.skip_through = snapshot[-1] if snapshot else None
        first = self._first_seq
        if first is not None and len(snapshot) == self._history.maxlen:
            # The ring overflowed; a tracer's seqs are contiguous (traces.expand).
            client.missed = max(0, snapshot[0].seq - first)
        return snapshot

    def _detach(self, client: _Client) -> None:
        self._clients = tuple(c for c in self._clients if c is not client)

    def _waiter(self) -> trio.Event:
        assert self._new_data is not None
        return self._new_data

    @property
    def history_dropped(self) -> int:
        return self.written - len(self._history)


# -- HTTP plumbing -----------------------------------------------------------------------
#
# h11 parses the request head (one request per connection: every response says
# ``Connection: close``); this module only bounds it (``_MAX_HEAD`` bytes, ``_MAX_HEADERS``
# header lines) and reads it. A WebSocket handshake is then handed to trio-websocket with
# the bytes read so far put back in front of the stream (``_ReplayStream``).


class _HttpError(Exception):
    """A request this server refuses: *status* (4xx) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    @property
    def is_websocket(self) -> bool:
        upgrade = self.header("upgrade").lower()
        connection = {t.strip().lower() for t in self.header("connection").split(",")}
        return upgrade == "websocket" and "upgrade" in connection


def _request(event: h11.Request) -> _Request:
    """The parts of h11's *event* this server looks at (``_HttpError`` if not HTTP/1.x)."""
    if not event.http_version.startswith(b"1."):
        raise _HttpError(400, "malformed request line: HTTP/1.x only")
    if len(event.headers) > _MAX_HEADERS:
        raise _HttpError(431, f"too many header lines (at most {_MAX_HEADERS})")
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = event.target.decode("latin-1")
    split = urlsplit(target)
    return _Request(
        event.method.decode("latin-1"), target, split.path, parse_qs(split.query), headers
    )


async def _read_request(
    stream: trio.abc.ReceiveStream, conn: h11.Connection
) -> tuple[_Request, bytes]:
    """Read one request head with *conn*; returns the request and every byte read (the
    head and what followed it), for a WebSocket handshake to parse again.

    Raises ``_HttpError`` (malformed: 400; larger than ``_MAX_HEAD`` bytes or
    ``_MAX_HEADERS`` lines: 431) and ``EOFError`` if the peer closed before a byte.
    """
    raw = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise _HttpError(exc.error_status_hint, str(exc) or "malformed request") from None
        if event is h11.NEED_DATA:
            if len(raw) > _MAX_HEAD:
                raise _HttpError(431, "request head too large")
            data = bytes(await stream.receive_some(4096))
            raw += data
            conn.receive_data(data)  # b"": the peer closed its side
            continue
        if isinstance(event, h11.ConnectionClosed):
            raise EOFError
        assert isinstance(event, h11.Request)  # a server's first event
        if len(raw) - len(conn.trailing_data[0]) > _MAX_HEAD:
            raise _HttpError(431, "request head too large")
        return _request(event), bytes(raw)


class _ReplayStream(trio.abc.Stream):
    """A stream that first returns bytes already read from *inner*, then reads *inner*.

    Lets trio-websocket parse the handshake this server has already read.
    """

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            n = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return await self._inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        send_eof = getattr(self._inner, "send_eof", None)
        if send_eof is not None:
            await send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()


def is_loopback(host: str) -> bool:
    """Whether *host* names this machine's loopback (``localhost``, ``127.0.0.0/8``, ``::1``;
    brackets allowed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """*host* as it goes before ``:port`` in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _remote(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        peer = sock.getpeername() if sock is not None else None
    except OSError:
        peer = None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


# -- the server ----------------------------------------------------------------------------


class TraceServer:
    """Serves the trace viewer and a trace stream on one port (see the module docstring).

    Args:
      host: address to bind; anything but loopback requires *token*.
      port: TCP port, 0 (default) for a free one (see :attr:`port` once started).
      token: if set, required as ``?token=`` by the page and the WebSocket handshake.
      history: live mode: events kept for clients that connect later (newest kept).
      client_queue: live mode: events queued per client before that client drops.
      header: live mode: the trace header sent in ``hello``.
      batch: at most this many events per ``events`` frame (also capped at about
        *max_frame_bytes* bytes).
      request_timeout: seconds a connection may take to send its request head and
        complete the WebSocket handshake (real time); ``None`` for no limit.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        history: int = 200_000,
        client_queue: int = 10_000,
        *,
        header: TraceHeader | None = None,
        batch: int = 1000,
        max_frame_bytes: int = 512 * 1024,
        request_timeout: float | None = 10.0,
    ) -> None:
        if token is not None and not token:
            raise ValueError("token must be a non-empty string (or None)")
        if token is None and not is_loopback(host):
            raise ValueError(
                f"binding {host!r} (not loopback) exposes the trace: a token is required"
            )
        if history <= 0 or client_queue <= 0 or batch <= 0 or max_frame_bytes <= 0:
            raise ValueError("history, client_queue, batch and max_frame_bytes must be > 0")
        self.host = host
        self._want_port = port
        self._port: int | None = None
        self.token = token
        self.header = header or TraceHeader()
        self._batch = batch
        self._max_bytes = max_frame_bytes
        self._request_timeout = math.inf if request_timeout is None else request_timeout
        self._client_limit = client_queue
        self._sink = TraceServerSink(history)
        self._replay_path: str | None = None
        self._replay: _ReplaySource | None = None
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._replay_events = 0
        self._line_errors = 0
        self._ids = itertools.count(1)
        self._clients: dict[int, _Client] = {}
        self._gone_sent = 0
        self._gone_dropped = 0
        self._scope: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._asset_cache: dict[str, bytes] = {}

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        batch: int = 1000,
        max_frame_bytes: int = 512 * 1024,
        request_timeout: float | None = 10.0,
    ) -> TraceServer:
        """A server replaying the trace file *path* to every client.

        The header is checked now (``ValueError`` if *path* is not a trioxide trace,
        ``OSError`` if it cannot be read); the events are counted when :meth:`serve`
        starts, and read again for each client as they are sent.
        """
        with open(path, "rb") as f:
            first = f.readline()
        try:
            next(iter_trace(path), None)  # validates the header line (schema version)
            header = msgspec.json.decode(first, type=TraceHeader)
        except (msgspec.DecodeError, ValueError) as exc:
            raise ValueError(f"{os.fspath(path)}: not a trioxide trace: {exc}") from None
        server = cls(
            host,
            port,
            token,
            header=header,
            batch=batch,
            max_frame_bytes=max_frame_bytes,
            request_timeout=request_timeout,
        )
        server._replay_path = os.fspath(path)
        return server

    @staticmethod
    def generate_token() -> str:
        """A random URL-safe token (128 bits)."""
        return secrets.token_urlsafe(16)

    # -- properties ------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``"replay"`` for :meth:`from_file` servers, else ``"live"``."""
        return "live" if self._replay_path is None else "replay"

    @property
    def sink(self) -> TraceServerSink:
        """The live sink: give it to a :class:`traces.Tracer`. Not for replay servers."""
        if self._replay_path is not None:
            raise RuntimeError("a replay server has no live sink")
        return self._sink

    @property
    def port(self) -> int:
        """The bound port (after :meth:`serve` started)."""
        if self._port is None:
            raise RuntimeError("the server is not listening yet")
        return self._port

    @property
    def url(self) -> str:
        """The viewer's URL, with ``?token=`` if a token is set."""
        url = f"http://{url_host(self.host)}:{self.port}/"
        return f"{url}?token={quote(self.token, safe='')}" if self.token else url

    def statistics(self) -> ServerStatistics:
        clients = tuple(c.statistics() for c in self._clients.values())
        live = self._replay_path is None
        return ServerStatistics(
            mode=self.mode,
            clients=len(clients),
            sent=self._gone_sent + sum(c.sent for c in clients),
            dropped=self._gone_dropped + sum(c.dropped for c in clients),
            history=len(self._sink) if live else self._replay_events,
            history_dropped=self._sink.history_dropped if live else 0,
            written=self._sink.written,
            line_errors=self._line_errors,
            per_client=clients,
        )

    # -- lifecycle -------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled (or :meth:`close`). ``nursery.start`` returns
        the bound port. A replay file is counted (in a worker thread) before listening.

        The request timeouts are measured with the run's clock, so it must be real time:
        under a ``trio.testing.MockClock`` this raises ``RuntimeError`` (serve from a
        thread of its own instead: :meth:`serve_in_thread`).
        """
        if self._scope is not None:
            raise RuntimeError("this server is already serving")
        if isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
            raise RuntimeError(
                "the trace server measures its timeouts in real time, not under a "
                "MockClock: serve it from a thread of its own (TraceServer.serve_in_thread)"
            )
        token = trio.lowlevel.current_trio_token()
        try:
            if self._replay_path is not None and self._replay is None:
                self._replay = await trio.to_thread.run_sync(self._load_replay, self._replay_path)
            elif self._replay is not None and self._wants_pool(self._replay):
                self._pool = _new_pool()
            listeners = await trio.open_tcp_listeners(self._want_port, host=self.host)
            if self._want_port == 0:
                # "localhost" may resolve to both ::1 and 127.0.0.1, each with its own port.
                for extra in listeners[1:]:
                    await extra.aclose()
                listeners = listeners[:1]
            self._port = int(listeners[0].socket.getsockname()[1])
            self._sink._bind(token)
            with trio.CancelScope() as scope:
                self._scope = scope
                self._token = token
                async with trio.open_nursery() as nursery:
                    await nursery.start(trio.serve_listeners, self._handle, listeners)
                    task_status.started(self._port)
        finally:
            self._sink._bind(None)
            self._scope = None
            self._token = None
            pool, self._pool = self._pool, None
            if pool is not None:
                # Wait (off the Trio thread) for the pool's manager thread to end: left
                # running, it closes its wakeup pipe while the interpreter's exit writes
                # to it (CPython 3.11's concurrent.futures.process._python_exit), which
                # prints a traceback as `trioxide view` exits. Queued decodes are
                # cancelled; a running one finishes (a chunk, well under a second).
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(
                        functools.partial(pool.shutdown, wait=True, cancel_futures=True)
                    )

    def close(self) -> None:
        """Stop serving: :meth:`serve` returns. Callable from any thread (from another
        than the server's, it returns at once and the server stops soon after)."""
        scope, token = self._scope, self._token
        if scope is None or token is None:
            return
        try:
            here = trio.lowlevel.current_trio_token() is token
        except RuntimeError:  # not in a Trio run
            here = False
        if here:
            scope.cancel()
        else:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)

    @property
    def trio_token(self) -> trio.lowlevel.TrioToken | None:
        """The token of the Trio run serving (``None`` when not serving): to reach the
        server's run from another thread with ``trio.from_thread``."""
        return self._token

    @contextlib.contextmanager
    def serve_in_thread(self) -> Iterator[ServingThread]:
        """Serve from a new thread running its own ``trio.run`` in real time, for the
        duration of the ``with`` block: how a program whose Trio run is in virtual time
        (a ``MockClock``) shows it live. Returns once the server listens (or raises what
        :meth:`serve` raised, e.g. ``OSError`` for a port in use); at the end of the block
        the server stops and the thread is joined. Give :attr:`sink` to the program's
        tracer: its ``write`` is safe from that other thread.
        """
        thread = ServingThread(self)
        try:
            thread.start()
            yield thread
        finally:
            thread.stop()
            thread.join()

    @staticmethod
    def _wants_pool(source: _ReplaySource) -> bool:
        return len(source.chunks) >= _POOL_MIN_CHUNKS

    def _load_replay(self, path: str) -> _ReplaySource:
        """Cut the file into chunks and count their events (in a worker thread)."""
        source = _replay_source(path)
        if source.old_schema:
            count, errors = _count_upgraded(path)
        else:
            if self._wants_pool(source):
                self._pool = _new_pool()
            if self._pool is not None:
                paths = itertools.repeat(path)
                counted = list(self._pool.map(_count_chunk, paths, source.chunks, chunksize=4))
            else:
                counted = [_count_chunk(path, chunk) for chunk in source.chunks]
            count = sum(n for n, _ in counted)
            errors = [error for _, chunk_errors in counted for error in chunk_errors]
        self._replay_events = count
        self._line_errors = len(errors)
        return source

    # -- connections -----------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        """One TCP connection; never lets an error escape into the listener."""
        try:
            await self._handle_connection(stream)
        except* (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.TooSlowError,
            trio_websocket.ConnectionClosed,
            EOFError,
            OSError,
        ):
            pass  # the peer went away or was too slow: nothing to report
        except* Exception:
            log.exception("trace server: connection failed")
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        try:
            with trio.fail_after(self._request_timeout):
                request, raw = await _read_request(stream, conn)
        except trio.TooSlowError:
            await self._respond(stream, conn, 408, b"request timeout\n")
            return
        except _HttpError as exc:
            await self._respond(stream, conn, exc.status, f"{exc}\n".encode())
            return
        if self.token is None and not self._host_allowed(request.header("host")):
            await self._respond(stream, conn, 403, b"forbidden host\n")
            return
        if request.is_websocket:
            if request.path != "/ws":
                await self._respond(stream, conn, 404, b"not found\n")
            elif request.method != "GET" or not request.header("sec-websocket-key"):
                await self._respond(stream, conn, 400, b"bad websocket handshake\n")
            elif request.header("sec-websocket-version") != "13":
                await self._respond(
                    stream,
                    conn,
                    426,
                    b"websocket version 13 only\n",
                    extra=[("Sec-WebSocket-Version", "13")],
                )
            elif request.query.get("format", [LEGACY])[0] not in _FORMATS:
                await self._respond(stream, conn, 400, b"unknown format (events, columns)\n")
            else:
                await self._websocket(stream, raw, request)
            return
        if request.method not in ("GET", "HEAD"):
            await self._respond(
                stream, conn, 405, b"method not allowed\n", extra=[("Allow", "GET, HEAD")]
            )
            return
        asset = _ASSETS.get(request.path)
        if asset is None:
            await self._respond(stream, conn, 404, b"not found\n")
            return
        if request.path in _PAGES and not self._token_ok(request):
            await self._respond(stream, conn, 403, b"forbidden: this viewer needs ?token=...\n")
            return
        name, content_type = asset
        await self._respond(
            stream, conn, 200, self._asset(name), content_type, head_only=request.method == "HEAD"
        )

    def _asset(self, name: str) -> bytes:
        data = self._asset_cache.get(name)
        if data is None:
            package = __package__ or "traces"
            data = resources.files(package).joinpath("viewer", name).read_bytes()
            self._asset_cache[name] = data
        return data

    async def _respond(
        self,
        stream: trio.abc.HalfCloseableStream,
        conn: h11.Connection,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        *,
        head_only: bool = False,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Send the one response of this connection (*head_only*: to a ``HEAD``)."""
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", _CSP),
            *extra,
        ]
        reason = _REASONS.get(status, "Error")
        data = conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
        assert data is not None
        if not head_only:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)
        # Close gently: end our side, then read what the client still sends (a rest of a
        # refused head, a pipelined request) for a moment, so that closing with unread
        # bytes does not reset the connection before the client has read the response.
        with trio.move_on_after(_CLOSE_TIMEOUT):
            await stream.send_eof()
            unread = _LINGER_BYTES
            while unread > 0 and (rest := await stream.receive_some(4096)):
                unread -= len(rest)

    def _token_ok(self, request: _Request) -> bool:
        if self.token is None:
            return True
        given = request.query.get("token", [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _host_allowed(self, host: str) -> bool:
        """Without a token the server is loopback-only: the Host header must say so."""
        host = host.strip().lower()
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if port and port != str(self._port):
            return False
        return is_loopback(name or host)

    def _ws_refusal(self, request: _Request) -> str | None:
        if not self._token_ok(request):
            return "forbidden: missing or wrong token"
        origin = request.header("origin")
        if origin and origin.lower() != f"http://{request.header('host').lower()}":
            return "forbidden: cross-origin WebSocket"
        return None

    async def _websocket(self, stream: trio.SocketStream, raw: bytes, request: _Request) -> None:
        remote = _remote(stream)
        replay = _ReplayStream(stream, raw)
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(self._request_timeout):
                    ws_request = await trio_websocket.wrap_server_stream(
                        nursery, replay, message_queue_size=4, max_message_size=64 * 1024
                    )
                refusal = self._ws_refusal(request)
                if refusal is not None:
                    with trio.move_on_after(self._request_timeout):
                        await ws_request.reject(403, body=refusal.encode() + b"\n")
                    return
                with trio.fail_after(self._request_timeout):
                    ws = await ws_request.accept()
                fmt = request.query.get("format", [LEGACY])[0]
                try:
                    await self._serve_client(ws, remote, fmt)
                finally:
                    with trio.move_on_after(_CLOSE_TIMEOUT) as cleanup:
                        cleanup.shield = True
                        await ws.aclose()
            except trio.TooSlowError:
                pass
            finally:
                nursery.cancel_scope.cancel()

    async def _serve_client(
        self, ws: trio_websocket.WebSocketConnection, remote: str, fmt: str
    ) -> None:
        client = _Client(next(self._ids), remote, self._client_limit)
        self._clients[client.id] = client
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_client, ws, nursery.cancel_scope)
                try:
                    if self._replay is not None:
                        await self._pump_replay(ws, client, self._replay, fmt)
                    else:
                        await self._pump_live(ws, client, fmt)
                except trio_websocket.ConnectionClosed:
                    nursery.cancel_scope.cancel()
        finally:
            self._sink._detach(client)
            del self._clients[client.id]
            self._gone_sent += client.sent
            self._gone_dropped += client.undelivered

    async def _read_client(
        self, ws: trio_websocket.WebSocketConnection, done: trio.CancelScope
    ) -> None:
        """Answer pings; close this client (1003) on anything else; cancel *done* at exit."""
        try:
            while True:
                message = await ws.get_message()
                try:
                    if not isinstance(message, str):
                        raise ValueError("binary frame")
                    obj = msgspec.json.decode(message)
                    if not isinstance(obj, dict) or obj.get("type") != "ping":
                        raise ValueError("unknown frame")
                except ValueError as exc:
                    with trio.move_on_after(_CLOSE_TIMEOUT):
                        await ws.aclose(1003, f"malformed frame: {exc}"[:120])
                    return
                await ws.send_message(_PONG)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            done.cancel()

    def _hello(self, fmt: str, **extra: Any) -> str:
        if fmt != LEGACY:
            extra["format"] = fmt
        return _json(
            {"type": "hello", "header": msgspec.to_builtins(self.header), "mode": self.mode} | extra
        )

    async def _pump_replay(
        self,
        ws: trio_websocket.WebSocketConnection,
        client: _Client,
        source: _ReplaySource,
        fmt: str,
    ) -> None:
        """Send the file: the next chunks are built (by the process pool, or a worker
        thread) while this task sends the frames of the previous ones, in order."""
        await ws.send_message(self._hello(fmt, total=self._replay_events))
        send, receive = trio.open_memory_channel[_Building](_AHEAD)
        pending: list[concurrent.futures.Future[_Built]] = []
        build = (source.path, fmt, self._batch, self._max_bytes)

        async def produce() -> None:
            async with send:
                if source.old_schema:
                    items = _upgraded(source.path)
                    while built := await trio.to_thread.run_sync(
                        _build_upgraded, items, *build[1:]
                    ):
                        await send.send(built)
                    return
                for chunk in source.chunks:
                    pool = self._pool
                    if pool is not None:
                        future = pool.submit(_build_chunk, source.path, chunk, *build[1:])
                        pending.append(future)
                        await send.send(future)
                    else:
                        await send.send(
                            await trio.to_thread.run_sync(
                                _build_chunk, source.path, chunk, *build[1:]
                            )
                        )

        events = 0
        cpu = 0.0
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                async with receive:
                    async for item in receive:
                        built = item if isinstance(item, _Built) else await _result(item)
                        cpu += built.cpu
                        for frame, count in built.frames:
                            await ws.send_message(frame)
                            client.sent += count
                            events += count
        finally:
            for future in pending:
                future.cancel()
        if fmt == LEGACY:
            await ws.send_message(_END)
        else:
            await ws.send_message(
                _json({"type": "end", "events": events, "build_s": round(cpu, 3)})
            )

    async def _pump_live(
        self, ws: trio_websocket.WebSocketConnection, client: _Client, fmt: str
    ) -> None:
        sink = self._sink
        await ws.send_message(self._hello(fmt))
        history = sink._attach(client)
        for frame, count in _frames(fmt, history, self._batch, self._max_bytes):
            await ws.send_message(frame)
            client.sent += count
        del history
        queue = client.queue
        marker = client.skip_through
        if marker is not None:  # drop what is both in the history and the queue
            for i in range(min(len(queue), 4096)):
                if queue[i] is marker:
                    for _ in range(i + 1):
                        queue.popleft()
                    break
            client.skip_through = None
        while True:
            waiter = sink._waiter()
            # Read before the queue: every event written before ``close`` is queued then.
            closed = sink.closed
            if queue:
                batch = [queue.popleft() for _ in range(min(len(queue), self._batch))]
                for frame, count in _frames(fmt, batch, self._batch, self._max_bytes):
                    await ws.send_message(frame)
                    client.sent += count
            elif client.undelivered != client.reported:
                client.reported = client.undelivered
                await ws.send_message(_json({"type": "dropped", "count": client.reported}))
            elif closed:
                if fmt == LEGACY:
                    await ws.send_message(_END)
                else:
                    end = {"type": "end", "events": client.sent, "dropped": client.undelivered}
                    await ws.send_message(_json(end))
                return
            else:
                await waiter.wait()
                continue
            if client.undelivered != client.reported:
                client.reported = client.undelivered
                await ws.send_message(_json({"type": "dropped", "count": client.reported}))


# -- serving from a thread of its own ------------------------------------------------------


class ServingThread:
    """A :class:`TraceServer` serving from a thread of its own, under its own ``trio.run``
    (the real clock): made by :meth:`TraceServer.serve_in_thread`, which starts it, stops
    it and joins it. While no client is connected, that run waits for I/O with no
    deadline at all: it costs no CPU.

    Whenever Ctrl-C lands: a :meth:`start` that raises has stopped the server and joined
    the thread; a :meth:`stop` made before the server listens is not lost (the server
    stops as soon as it listens); and the thread is a daemon, so a thread that nothing
    stopped still never keeps the process alive.
    """

    def __init__(self, server: TraceServer) -> None:
        self.server = server
        self._listening = threading.Event()
        self._stopped = threading.Event()
        self._stop_asked = False
        self._spawned = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="trioxide trace server", daemon=True
        )

    def start(self) -> None:
        """Start the thread; return once the server listens (or raise why it could not).

        A Ctrl-C meanwhile (``KeyboardInterrupt``) stops the server and joins the thread
        before it is raised: the thread is never left running."""
        try:
            # The thread's start and the record of it happen whole: interrupted halfway
            # (Thread.start waits for the new thread), the thread would run unrecorded.
            with _ctrl_c_deferred():
                self._thread.start()
                self._spawned = True
            self._listening.wait()
        except BaseException:
            self.stop()  # kept if the server does not listen yet
            if self._spawned:
                self._thread.join()
            raise
        if self._error is not None:
            self._thread.join()
            error, self._error = self._error, None
            raise error

    def stop(self) -> None:
        """Ask the server to stop (from any thread); :meth:`wait` then returns. Asked
        before the server listens, it stops as soon as it does."""
        self._stop_asked = True
        self.server.close()

    def wait(self) -> None:
        """Block the calling thread until the server has stopped (:meth:`stop`, or it
        failed): e.g. keep serving until Ctrl-C, which interrupts this wait."""
        self._stopped.wait()

    def join(self) -> None:
        """Wait for the thread to end (at once if it never started); raise the error the
        server failed with, if any."""
        if not self._spawned:
            return
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            trio.run(functools.partial(self.server.serve, task_status=self))
        except BaseException as exc:  # handed to the thread that joins
            self._error = exc
        finally:
            self._listening.set()
            self._stopped.set()

    def started(self, value: object = None) -> None:
        """``trio.TaskStatus``: the server listens."""
        self._listening.set()
        # A stop() that came before the server could be closed is honoured now (its scope
        # exists already: a stop() after this check closes the server itself).
        if self._stop_asked:
            self.server.close()


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Run the block whole: a Ctrl-C inside it is held, and raised (``KeyboardInterrupt``)
    as the block ends. Only where Python's own SIGINT handler is in place, in the main
    thread: anywhere else Ctrl-C raises nothing here, or is someone else's to handle."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pressed:
            raise KeyboardInterrupt  # (its context: the block's own error, if any)
