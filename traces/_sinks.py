"""Sinks: where trace events go.

Guarantee shared by every sink here: ``write`` is synchronous, never awaits, never
raises, and uses bounded memory. When a bound is hit, events are dropped and counted
(``dropped``) rather than slowing the actors down.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ._event import TraceEvent, TraceHeader
from ._expand import expand

__all__ = ["JsonlFileSink", "MemorySink", "SinkStatistics"]


@dataclass(frozen=True)
class SinkStatistics:
    written: int
    dropped: int
    buffered: int


class MemorySink:
    """A bounded ring of events for tests and live viewers.

    When full, the oldest event is overwritten and counted in ``dropped``, so the ring
    always holds the newest *maxlen* events. ``write`` costs one counter increment and
    one ``deque.append``.
    """

    __slots__ = ("_append", "_cleared", "_counted", "_direct", "_ring")

    def __init__(self, maxlen: int = 1_000_000) -> None:
        if maxlen <= 0:
            raise ValueError(f"maxlen must be positive, got {maxlen!r}")
        self._ring: deque[TraceEvent] = deque(maxlen=maxlen)
        self._append = self._ring.append
        self._cleared = 0
        self._counted = 0  # events written through write()
        self._direct: list[Callable[[], int]] = []  # counters of direct writers

    def write(self, event: TraceEvent) -> None:
        self._counted += 1
        self._append(event)

    def direct_writer(self, written: Callable[[], int]) -> Callable[[TraceEvent], None]:
        """The ring's own ``append`` (a C call, no Python frame), for a tracer that writes
        only here; *written()* must say how many events it has written so far. (The
        tracer's fast path: ``written``/``dropped`` stay exact.)"""
        self._direct.append(written)
        return self._append

    @property
    def written(self) -> int:
        """Events written to the ring (also those since overwritten or cleared)."""
        return self._counted + sum(count() for count in self._direct)

    def close(self) -> None:
        pass

    @property
    def dropped(self) -> int:
        """Events overwritten because the ring was full."""
        return self.written - self._cleared - len(self)

    @property
    def events(self) -> list[TraceEvent]:
        """A snapshot of the events held, oldest first, expanded (``traces.expand``: a
        receive folded into its handle is listed as both)."""
        return list(expand(self._ring))

    @property
    def records(self) -> list[TraceEvent]:
        """A snapshot of the records held as written (folded handles stay folded)."""
        return list(self._ring)

    def __iter__(self) -> Iterator[TraceEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        """Events held (a folded handle counts as its receive and itself)."""
        return len(self._ring) + sum(
            1 for r in self._ring if r.t0 is not None and r.kind == "handle"
        )

    def clear(self) -> None:
        self._cleared += len(self)
        self._ring.clear()

    def of_kind(self, *kinds: str) -> list[TraceEvent]:
        """The (expanded) events of these kinds."""
        return [e for e in expand(self._ring) if e.kind in kinds]

    def statistics(self) -> SinkStatistics:
        return SinkStatistics(self.written, self.dropped, len(self))


class JsonlFileSink:
    """Writes a JSON Lines trace file: the header line, then one event per line.

    Events are encoded into an in-memory buffer and written in chunks of
    ``chunk_size`` bytes; a chunk write goes to the OS page cache and does not wait
    for the disk. If the buffer would exceed ``max_buffer`` bytes (a stalled disk), new
    events are dropped and counted. ``close`` (or leaving the ``with`` block) flushes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: TraceHeader | None = None,
        *,
        chunk_size: int = 1 << 16,
        max_buffer: int = 64 << 20,
    ) -> None:
        self.path = Path(path)
        # Unbuffered: this sink does its own chunking, and flush() must reach readers.
        self._file = open(self.path, "wb", buffering=0)
        self._enc = msgspec.json.Encoder()
        self._buf = bytearray()
        self._chunk = chunk_size
        self._max = max_buffer
        self.dropped = 0
        self.written = 0
        self._closed = False
        self._file.write(self._enc.encode(header or TraceHeader()) + b"\n")

    def write(self, event: TraceEvent) -> None:
        if self._closed:
            self.dropped += 1
            return
        buf = self._buf
        if len(buf) >= self._max:
            self.dropped += 1
            return
        self._enc.encode_into(event, buf, -1)
        buf.append(10)
        self.written += 1
        if len(buf) >= self._chunk:
            self.flush()

    def flush(self) -> None:
        """Write the buffered events to the file (visible to ``follow_trace`` at once)."""
        if self._buf and not self._closed:
            try:
                self._file.write(self._buf)
            except OSError:
                # Never raise into the runtime: count what could not be written.
                self.dropped += self._buf.count(10)
            self._buf.clear()

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._file.close()
            self._closed = True

    def __enter__(self) -> JsonlFileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def statistics(self) -> SinkStatistics:
        return SinkStatistics(self.written, self.dropped, len(self._buf))
