"""Sinks: where trace events go.

Guarantee shared by every sink here: ``write`` is synchronous, never awaits, never
raises, never does file I/O, and uses bounded memory - bounded by bytes, not only by
events: a record's payload and detail count. When a bound is hit, events are dropped and
counted (``dropped``) rather than slowing the actors down.

File I/O happens on a writer thread owned by the sink (:class:`JsonlFileSink`): a stalled
disk stalls that thread only.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

import msgspec

from ._event import TraceEvent, TraceHeader
from ._expand import expand, is_folded, records_of, run_line
from ._runs import RUN_TYPES, Run

__all__ = ["JsonlFileSink", "MemorySink", "SinkStatistics", "TraceFileObject"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class SinkStatistics:
    """``written``: records accepted; ``dropped``: records lost to a bound (or to a failed
    write); ``buffered``: what is held - events for a memory ring, encoded bytes not yet
    handed to the writer thread for a file sink; ``queued``: bytes handed to the writer
    thread and not yet written (file sinks only)."""

    written: int
    dropped: int
    buffered: int
    queued: int = 0


class TraceFileObject(Protocol):
    """What :class:`JsonlFileSink` writes to: ``write`` returns the bytes written (``None``
    meaning all of them), as a raw binary file does."""

    def write(self, data: memoryview, /) -> int | None: ...

    def close(self) -> None: ...


def _open_unbuffered(path: Path) -> TraceFileObject:
    # Unbuffered: the sink does its own chunking, and a flush must reach readers.
    return open(path, "wb", buffering=0)


class _Worker(Generic[_T]):
    """Runs ``work(item)`` for every submitted item, in submission order, on one thread.

    The thread (not a daemon) is started by ``submit`` when there is work and ends after
    *idle_timeout* seconds without any, so an owner that is never closed does not keep the
    process alive for longer than that; ``close`` joins it. The submitting thread takes
    the lock once per item (never while ``work`` runs): a ``work`` stuck in the OS never
    blocks it. ``work`` must not raise (an exception is swallowed: the item counts as
    done). After ``close``, *finish* runs once, when the last item is done.
    """

    def __init__(
        self,
        name: str,
        work: Callable[[_T], None],
        finish: Callable[[], None] = lambda: None,
        idle_timeout: float = 0.5,
    ) -> None:
        self._name = name
        self._work = work
        self._finish = finish
        self._idle = idle_timeout
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[_T] = deque()
        self._thread: threading.Thread | None = None  # the running writer, if any
        self._last: threading.Thread | None = None  # the last one started (for close)
        self._closed = False
        self.submitted = 0
        self.done = 0

    def submit(self, item: _T) -> int:
        """Queue *item*; returns its ticket (for ``wait``)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("submit after close")
            self._items.append(item)
            self.submitted += 1
            ticket = self.submitted
            if self._thread is None:
                # The new thread's first step takes this lock: it starts working once we
                # leave the block. (Thread.start only waits for the thread to exist.)
                self._thread = self._last = threading.Thread(
                    target=self._run, name=self._name, daemon=False
                )
                self._thread.start()
            else:
                self._cond.notify()
        return ticket

    @property
    def pending(self) -> int:
        """Items submitted and not yet done."""
        return self.submitted - self.done

    def wait(self, ticket: int, timeout: float | None) -> bool:
        """Wait until the item *ticket* (and every one before it) is done, at most
        *timeout* seconds; whether it is."""
        with self._cond:
            return self._cond.wait_for(lambda: self.done >= ticket, timeout)

    def close(self, timeout: float | None) -> bool:
        """No more items; the thread finishes the queued ones, runs *finish* and ends.
        Waits for that at most *timeout* seconds; whether it ended."""
        with self._cond:
            if self._closed:
                thread = self._last
            else:
                self._closed = True
                thread = self._thread
                self._cond.notify_all()
                if thread is None:
                    self._finish()
                    thread = self._last
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        cond, items = self._cond, self._items
        while True:
            with cond:
                if not items and not self._closed:
                    cond.wait(self._idle)
                if not items:
                    self._thread = None  # the next submit starts a new thread
                    closed = self._closed
                    cond.notify_all()
                    break
                item = items.popleft()
            try:
                self._work(item)
            except Exception:  # work counts its own failures: the queue goes on
                pass
            with cond:
                self.done += 1
                cond.notify_all()
        if closed:
            self._finish()


def _extra_bytes(event: TraceEvent) -> int:
    detail = event.detail
    return len(event.payload) + (len(detail) if detail is not None else 0)


class MemorySink:
    """A bounded ring of events for tests and live viewers.

    Two bounds, both enforced by dropping the *oldest* records (counted in ``dropped``),
    so the ring always holds the newest records that fit:

    * ``maxlen`` records; each costs about ``RECORD_BYTES`` of memory (the event and its
      numbers), so the records themselves use at most about ``maxlen * RECORD_BYTES``;
    * ``max_bytes`` of payloads and details (their lengths, counted once per record: the
      tracer puts a message's payload on its ``send`` only).

    So the ring holds at most about ``maxlen * RECORD_BYTES + max_bytes`` bytes
    (``nbytes`` is the current estimate). A record whose payload and detail alone exceed
    ``max_bytes`` is dropped at once.

    ``write`` costs a counter increment and a ``deque.append``, plus the byte accounting
    for a record with a payload or a detail. A tracer whose only sink is this ring appends
    to it directly (``direct_writer``: no Python frame per event); records written that
    way are bounded by ``maxlen`` only - the byte bound is enforced on ``write``. Without
    payloads, records are small (a detail is a type name or an exception's description),
    so ``maxlen`` bounds them; a sink that must hold a byte bound whatever it is given
    (``FlightRecorder``) declines the direct path.

    On the direct path the ring also keeps runs whole (``write_run``: the actor loop's
    runs of handled tells, ``traces.HandleRun``, and runs of tells sent, ``traces.SendRun``;
    up to ``RUN_MAX_MESSAGES`` messages at most ``RUN_EVENT_BYTES`` per event); ``maxlen``
    then bounds the *events* held, checked whenever a run or a record through ``write``
    is written. Every view (``events``, ``records``, ``len``) expands them.
    """

    #: Estimated memory of one record without its payload and detail (measured with
    #: tracemalloc: about 185 bytes for the event, its float and ints, and the ring slot).
    RECORD_BYTES: ClassVar[int] = 192

    #: Estimated memory of one event inside a run - the pure-Python recorders' figure: a
    #: ``PyHandleRun`` message is four list slots, its id and its end time for two events
    #: (``sys.getsizeof`` over the runs of 20,000 tells: about 88 bytes per message, list
    #: growth and ring slots included). The compiled runs take less (a full ``HandleRun``
    #: ~17 bytes per event, a full ``SendRun`` ~10): counted at this rate too, an
    #: over-estimate.
    RUN_EVENT_BYTES: ClassVar[int] = 48

    __slots__ = (
        "_append",
        "_big",
        "_cleared",
        "_counted",
        "_direct",
        "_extra",
        "_held",
        "_max_extra",
        "_ring",
        "_run_extra",
        "_runs",
    )

    def __init__(self, maxlen: int = 1_000_000, max_bytes: int = 64 << 20) -> None:
        if maxlen <= 0:
            raise ValueError(f"maxlen must be positive, got {maxlen!r}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, got {max_bytes!r}")
        self._ring: deque[TraceEvent | Run] = deque(maxlen=maxlen)
        self._append = self._ring.append
        self._cleared = 0
        self._counted = 0  # events written through write() (a folded handle counts 2)
        self._direct: list[Callable[[], int]] = []  # counters of direct writers
        self._max_extra = max_bytes
        self._extra = 0  # payload + detail bytes of the records in _big
        # (seq, payload + detail bytes) of held records that have any, oldest first.
        self._big: deque[tuple[int, int]] = deque()
        # (seq, events - 1) of the runs held, oldest first; _run_extra is their sum.
        self._runs: deque[tuple[int, int]] = deque()
        self._run_extra = 0
        self._held: list[Callable[[], object]] = []  # pending records of run writers

    def _held_runs(self) -> list[Run]:
        """The runs tracers still hold (not written yet, shown as held)."""
        runs = []
        for held in self._held:
            run = held()
            if isinstance(run, RUN_TYPES) and run.count:
                runs.append(run)
        return runs

    def _all(self) -> list[TraceEvent | Run]:
        return [*self._ring, *self._held_runs()] if self._held else list(self._ring)

    def write(self, event: TraceEvent) -> None:
        # A folded handle stands for its receive too (``len`` counts it twice).
        self._counted += 1 if event.t0 is None else 2
        self._ring.append(event)  # (faster than the bound method in a slot, on 3.11)
        if event.payload or event.detail is not None:
            self._account(event)
        if self._run_extra:  # runs held: maxlen bounds their events too
            self._bound_events()

    def _account(self, event: TraceEvent) -> None:
        """Count *event*'s payload and detail; drop the oldest records while over."""
        big = self._big
        # Forget the records the ring has overwritten (seqs increase along the ring).
        oldest = self._ring[0].seq
        while big and big[0][0] < oldest:
            self._extra -= big.popleft()[1]
        size = _extra_bytes(event)
        if size > self._max_extra:
            self._ring.pop()  # alone over the bound: dropped at once (counted)
        elif size:
            big.append((event.seq, size))
            self._extra += size
            if self._extra > self._max_extra:
                self._trim()

    def _trim(self) -> None:
        ring, big = self._ring, self._big
        while self._extra > self._max_extra and ring:
            seq = ring.popleft().seq
            while big and big[0][0] <= seq:
                self._extra -= big.popleft()[1]

    def run_writer(self, held: Callable[[], object]) -> Callable[[Run], None] | None:
        """``write_run``, for a tracer that appends to this ring directly
        (``direct_writer``) and records runs of handled tells (``Tracer.runs``); *held()*
        is the tracer's pending record: a run there is shown as held (every
        view includes it), so reading the ring never lags behind the actors."""
        self._held.append(held)
        return self.write_run

    def write_run(self, run: Run) -> None:
        """Keep *run* whole (the writer for runs, see ``run_writer``); drop the oldest
        records while the events held exceed ``maxlen``."""
        self._ring.append(run)
        self._forget_runs()
        extra = run.count - 1
        self._runs.append((run.seq, extra))
        self._run_extra += extra
        self._bound_events()

    def _bound_events(self) -> None:
        """Drop the oldest records while the events held exceed ``maxlen``."""
        ring = self._ring
        maxlen = self.maxlen
        self._forget_runs()
        while len(ring) + self._run_extra > maxlen and len(ring) > 1:
            ring.popleft()
            self._forget_runs()

    def _forget_runs(self) -> None:
        """Stop counting the runs the ring no longer holds (seqs increase along it)."""
        runs, ring = self._runs, self._ring
        oldest = ring[0].seq if ring else None
        while runs and (oldest is None or runs[0][0] < oldest):
            self._run_extra -= runs.popleft()[1]

    def direct_writer(self, written: Callable[[], int]) -> Callable[[TraceEvent], None]:
        """The ring's own ``append`` (a C call, no Python frame), for a tracer that writes
        only here; *written()* must say how many events it has written so far. (The
        tracer's fast path: ``written``/``dropped`` stay exact; ``max_bytes`` is not
        checked for records written this way, see the class docstring.)"""
        self._direct.append(written)
        return self._append

    @property
    def maxlen(self) -> int:
        """The most records the ring holds."""
        maxlen = self._ring.maxlen
        assert maxlen is not None
        return maxlen

    @property
    def max_bytes(self) -> int:
        """The most payload and detail bytes the ring holds (records written by ``write``)."""
        return self._max_extra

    @property
    def nbytes(self) -> int:
        """Estimated memory held: ``RECORD_BYTES`` per record plus payloads and details
        (of the records written by ``write``)."""
        big, ring = self._big, self._ring
        if big:
            oldest = ring[0].seq if ring else big[-1][0] + 1
            while big and big[0][0] < oldest:
                self._extra -= big.popleft()[1]
        self._forget_runs()
        runs = len(self._runs)
        return (
            (len(ring) - runs) * self.RECORD_BYTES
            + (runs + self._run_extra) * self.RUN_EVENT_BYTES
            + self._extra
        )

    @property
    def written(self) -> int:
        """Events written to the ring (also those since dropped or cleared)."""
        return self._counted + sum(count() for count in self._direct)

    def close(self) -> None:
        pass

    @property
    def dropped(self) -> int:
        """Events dropped to stay within ``maxlen`` or ``max_bytes``."""
        return self.written - self._cleared - len(self)

    @property
    def events(self) -> list[TraceEvent]:
        """A snapshot of the events held, oldest first, expanded (``traces.expand``: a
        receive folded into its handle is listed as both)."""
        return list(expand(self._all()))

    @property
    def records(self) -> list[TraceEvent]:
        """A snapshot of the records held as written (folded handles stay folded)."""
        return list(records_of(self._all()))

    def __iter__(self) -> Iterator[TraceEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        """Events held (a folded handle counts as its receive and itself)."""
        self._forget_runs()
        ring = self._ring
        return (
            len(ring)
            + self._run_extra
            + sum(run.count for run in self._held_runs())
            + sum(1 for r in ring if type(r) is TraceEvent and is_folded(r))
        )

    def clear(self) -> None:
        self._cleared += len(self)
        self._ring.clear()
        self._big.clear()
        self._extra = 0
        self._runs.clear()
        self._run_extra = 0

    def of_kind(self, *kinds: str) -> list[TraceEvent]:
        """The (expanded) events of these kinds."""
        return [e for e in expand(self._all()) if e.kind in kinds]

    def statistics(self) -> SinkStatistics:
        return SinkStatistics(self.written, self.dropped, len(self))


class JsonlFileSink:
    """Writes a JSON Lines trace file: the header line, then one record per line.

    Guarantees:

    * **Never blocks the caller.** ``write`` encodes the record (msgspec, one C call)
      into an in-memory buffer; full chunks of ``chunk_size`` bytes are handed to a writer
      thread owned by the sink, which alone does file I/O. A stalled disk stalls that
      thread, never the actors.
    * **Bounded by bytes.** Encoded bytes not yet written (the buffer and the chunks
      handed over) never exceed ``max_buffer``; a record that does not fit is dropped and
      counted in ``dropped``. (A record is held once, encoded: a 32 MiB payload costs
      32 MiB here until written, whatever else holds the event.)
    * **Order kept.** The header first, then records in ``write`` order, by one thread.
    * **The header names the run.** A header without a seed is written with the first
      chunk of records (or by ``flush``/``close``), so that ``open_runtime(seed=N)`` can
      give it its seed first (:meth:`use_seed`); any other is written at once.
    * **Drops counted.** ``dropped`` = records refused (buffer full, or sink closed) plus
      records lost to a failed write (``OSError``: the sink never raises into the
      runtime) or abandoned by ``close`` on a stalled disk.

    ``flush`` hands the buffer over and waits - at most ``flush_timeout`` seconds - until
    everything written so far is in the file (visible to ``follow_trace``); the runtime
    calls it (through ``Tracer.flush``) when it exits. ``close`` (or leaving the ``with``
    block) flushes, then ends the writer thread and closes the file. The writer thread
    also ends by itself after half a second with nothing to write (and is started again
    when there is), so a sink that is never closed does not keep the process alive.

    *opener* (default: ``open(path, "wb", buffering=0)``) opens the file; it is called
    once, here.
    """

    __slots__ = (
        "_abandon",
        "_buf",
        "_chunk",
        "_closed",
        "_done",
        "_enc",
        "_file",
        "_handed",
        "_header",
        "_limit",
        "_lost",
        "_max",
        "_refused",
        "_room",
        "_writer",
        "flush_timeout",
        "path",
        "written",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: TraceHeader | None = None,
        *,
        chunk_size: int = 1 << 16,
        max_buffer: int = 64 << 20,
        flush_timeout: float = 2.0,
        opener: Callable[[Path], TraceFileObject] = _open_unbuffered,
    ) -> None:
        self.path = Path(path)
        self.flush_timeout = flush_timeout
        self._file = opener(self.path)
        self._enc = msgspec.json.Encoder()
        self._buf = bytearray()
        self._chunk = chunk_size
        self._max = max_buffer
        self.written = 0
        self._refused = 0  # records refused by write (caller's thread only)
        self._lost = 0  # records lost by the writer (writer thread only)
        self._handed = 0  # event bytes handed to the writer (caller's thread only)
        self._done = 0  # event bytes the writer is done with (writer thread only)
        self._room = max_buffer  # what the buffer may grow to before a recheck
        self._limit = min(chunk_size, max_buffer + 1)  # the length that needs a look
        self._closed = False
        self._abandon = False  # close() timed out: drop what is still queued
        self._writer: _Worker[tuple[bytes | bytearray, bool]] = _Worker(
            f"trioxide-trace-writer {self.path.name}", self._write_chunk, self._file.close
        )
        # Written first; it is not part of the event budget.
        self._header: TraceHeader | None = header or TraceHeader()
        if self._header.seed is not None:
            self._submit_header()

    def use_seed(self, seed: int) -> None:
        """Record *seed* in the header if the header has none and is not written yet (the
        runtime calls it for ``open_runtime(seed=...)``)."""
        if self._header is not None and self._header.seed is None:
            self._header = msgspec.structs.replace(self._header, seed=seed)

    def use_header(self, header: TraceHeader) -> bool:
        """Write *header* instead of the one given (a rack process anchors its clock once
        its run has started: ``TraceHeader.clock_at_start``), if that one is not written
        yet; whether it was replaced."""
        if self._header is None:
            return False
        self._header = header
        if header.seed is not None:
            self._submit_header()
        return True

    def write(self, event: TraceEvent) -> None:
        buf = self._buf
        start = len(buf)
        if start >= self._room and not self._has_room(start):
            self._refused += 1
            return
        self._enc.encode_into(event, buf, -1)
        buf.append(10)
        if len(buf) >= self._limit and not self._settle(start):
            return
        self.written += 1

    #: A tracer recording payloads may give this sink runs of sends with their payloads
    #: (``Tracer``: the payloads are encoded as the sends happen, the lines when the run
    #: is written).
    runs_with_payloads: ClassVar[bool] = True

    def run_writer(self, held: Callable[[], object]) -> Callable[[Run], None]:
        """``write_run``: a lone tracer records runs (``Tracer.runs``) and writes them
        here once complete. (*held*, the tracer's pending record, is not needed: this
        sink has no views; a run is in the file after it was written and flushed, as any
        record.)"""
        return self.write_run

    def write_run(self, run: Run) -> None:
        """Write *run* as one run line (``traces.RUN_LINES``: its records in a fraction of
        the bytes; readers expand it). ``written`` and ``dropped`` count the records it
        stands for; a line that does not fit is dropped whole."""
        line = run_line(run)
        body = line.run
        assert body is not None
        n = len(body.ids) or len(body.t)  # records: a folded handle or receive, or a send
        buf = self._buf
        start = len(buf)
        if start >= self._room and not self._has_room(start):
            self._refused += n
            return
        self._enc.encode_into(line, buf, -1)
        buf.append(10)
        if len(buf) >= self._limit and not self._settle(start, n):
            return
        self.written += n

    def _recheck(self) -> None:
        """Recompute the room left (the writer may have made some) and the length at
        which ``write`` must look again: a full chunk, or more than the room."""
        room = -1 if self._closed else self._max - (self._handed - self._done)
        self._room = room
        self._limit = min(self._chunk, room + 1)

    def _has_room(self, start: int) -> bool:
        self._recheck()
        return start < self._room

    def _settle(self, start: int, records: int = 1) -> bool:
        """After encoding a line (of *records* records) at *start*: take it back if it
        does not fit, hand a full chunk over; whether the line was kept."""
        buf = self._buf
        if len(buf) > self._room:
            self._recheck()
            if len(buf) > self._room:
                del buf[start:]
                self._refused += records
                return False
        if len(buf) >= self._chunk:
            self._handoff()
        return True

    def _submit_header(self) -> None:
        if self._header is not None:
            self._writer.submit((msgspec.json.encode(self._header) + b"\n", False))
            self._header = None

    def _handoff(self) -> None:
        self._submit_header()
        buf = self._buf
        if buf:
            # A copy of exactly the bytes counted (the buffer may have grown up to 1.5x
            # for a big record); the buffer itself is reused: refilling a cleared buffer
            # costs fewer copies than growing a new one (callgrind: ~400 instructions per
            # record less).
            data = bytes(buf)
            buf.clear()
            self._handed += len(data)
            self._writer.submit((data, True))
        self._recheck()

    def _write_chunk(self, item: tuple[bytes | bytearray, bool]) -> None:
        """The writer thread: write one chunk, count what could not be written."""
        data, counted = item
        unwritten = memoryview(data)
        try:
            if self._abandon:
                pass
            else:
                try:
                    while unwritten:
                        n = self._file.write(unwritten)
                        if n is None:
                            n = len(unwritten)
                        if n <= 0:
                            raise OSError("the trace file accepted no bytes")
                        unwritten = unwritten[n:]
                except Exception:  # never raise: count the lines that were not written
                    pass
            if counted:
                self._lost += bytes(unwritten).count(b"\n")
                self._done += len(data)
        finally:
            unwritten.release()

    @property
    def dropped(self) -> int:
        """Records refused (buffer full, sink closed) or lost (failed write, abandoned)."""
        return self._refused + self._lost

    @property
    def pending_bytes(self) -> int:
        """Encoded bytes accepted and not yet written (at most ``max_buffer``)."""
        return len(self._buf) + self._handed - self._done

    def flush(self, timeout: float | None = None) -> bool:
        """Hand everything written so far to the writer thread and wait until it is in
        the file, at most *timeout* seconds (default ``flush_timeout``). Returns whether
        it is; the writer keeps going either way."""
        if self._closed:
            return self._writer.pending == 0
        self._handoff()
        wait = self.flush_timeout if timeout is None else timeout
        return self._writer.wait(self._writer.submitted, wait)

    def close(self) -> None:
        """Flush (at most ``flush_timeout``), then stop the writer thread and close the
        file. If the disk is stalled past the timeout, what is still queued is dropped and
        counted, and the writer thread closes the file once its current write returns
        (``close`` waits for that at most ``flush_timeout`` more; calling it again waits
        again)."""
        if self._closed:
            self._writer.close(self.flush_timeout)  # (again: wait for the writer once more)
            return
        complete = self.flush()
        self._closed = True
        self._recheck()
        if not complete:
            self._abandon = True
        self._writer.close(self.flush_timeout)

    def __enter__(self) -> JsonlFileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def statistics(self) -> SinkStatistics:
        return SinkStatistics(self.written, self.dropped, len(self._buf), self._handed - self._done)
