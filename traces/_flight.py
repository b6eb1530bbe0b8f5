"""``FlightRecorder``: an always-on ring of the newest trace records, bounded by bytes,
dumped to a trace file when something goes wrong.

It is a sink (a :class:`MemorySink` bounded by bytes in total), so it costs what tracing
costs: one ``write`` per record, no I/O. A dump writes its current records as an ordinary
trace file (header, then the records as written: readers expand folded receives), which
``read_trace``, ``trioxide view`` and the exporters read.

The runtime uses it (``open_runtime(flight_recorder=...)``, or a recorder among the
tracer's sinks): it dumps when an actor fails, when the process gets ``SIGUSR1``, and on
``Runtime.dump_trace``. This module knows nothing of the runtime: it offers ``dump`` (now,
on the calling thread) and ``dump_soon`` (a snapshot now, written by the recorder's own
thread, rate limited for automatic dumps).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from ._event import TraceEvent, TraceHeader
from ._runs import RUN_TYPES, Run
from ._sinks import MemorySink, _Worker

__all__ = ["FlightRecorder"]

_encoder = msgspec.json.Encoder()
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")


def _write_trace(
    path: Path, header: TraceHeader, records: Sequence[TraceEvent], exclusive: bool
) -> Path:
    """Write *records* as a trace file at *path* (with *exclusive*: at ``path-N`` if a
    file of that name exists). The file appears whole: it is written under a hidden
    temporary name in the same directory, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive:
        n, base = 1, path
        while path.exists():
            path = base.with_name(f"{base.stem}-{n}{base.suffix}")
            n += 1
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(_encoder.encode(header) + b"\n")
            if records:
                f.write(_encoder.encode_lines(records))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class FlightRecorder(MemorySink):
    """A ring of the newest records, at most *max_bytes* of memory (estimated), that
    writes them to a trace file on demand.

    Bounds: at most ``max_records`` events (default: three quarters of *max_bytes* at
    ``RECORD_BYTES`` each - 65,536 events for 16 MiB) and the rest of *max_bytes* for
    payloads and details. Unlike a plain ``MemorySink`` the recorder never takes the
    tracer's direct path: every event goes through ``write``, so the byte bound holds
    whatever the tracer records (payloads, long exception descriptions). As the tracer's
    only sink it keeps runs (``traces.HandleRun``, ``traces.SendRun``: no payloads, no
    details, at most ``RUN_EVENT_BYTES`` an event), whose events count against
    ``max_records`` at every write (the run the tracer is still recording, shown by every
    view, adds at most ``RUN_MAX_MESSAGES`` messages), so an always-on recorder costs what
    tracing into a ``MemorySink`` costs.

    Dumps (files readable by ``traces.read_trace``):

    * ``dump(path)`` writes now, on the calling thread, and returns the path.
    * ``dump_soon(name)`` takes a snapshot now (a list copy of the ring) and has the
      recorder's thread write it to ``directory/trioxide-<name>-<seq>.jsonl`` (``seq``:
      the newest record's; ``-N`` is appended if that file exists); returns that path, or
      ``None`` if the dump was skipped. Automatic dumps (``limited=True``, the runtime's
      failure dumps) are rate limited: at most *max_dumps* in the recorder's life and one
      per *min_interval* seconds (of the *now* given: the runtime passes its clock); any
      dump is skipped while another is still being written, so at most one snapshot
      exists at a time. Skips are counted in ``dumps_skipped``, dumps that could not be
      written (``OSError``) in ``dumps_failed``; written paths are listed in ``dumps``.
    * A file appears whole (written under a temporary name, then renamed).

    ``flush`` waits (at most ``flush_timeout`` seconds) until the dumps asked for are
    written - the runtime calls it, through ``Tracer.flush``, when it exits; ``close``
    also ends the recorder's thread (which otherwise ends by itself when idle).

    *signal_dumps*: whether the runtime dumps on ``SIGUSR1`` (when it runs in the main
    thread).
    """

    __slots__ = (
        "_last_auto",
        "_worker",
        "auto_dumps",
        "directory",
        "dumps",
        "dumps_failed",
        "dumps_skipped",
        "flush_timeout",
        "header",
        "max_dumps",
        "min_interval",
        "signal_dumps",
    )

    def __init__(
        self,
        max_bytes: int = 16 << 20,
        directory: str | os.PathLike[str] = ".",
        *,
        header: TraceHeader | None = None,
        max_records: int | None = None,
        min_interval: float = 10.0,
        max_dumps: int = 10,
        signal_dumps: bool = True,
        flush_timeout: float = 10.0,
    ) -> None:
        records = max_records
        if records is None:
            records = max_bytes * 3 // 4 // self.RECORD_BYTES
        if records <= 0 or records * self.RECORD_BYTES > max_bytes:
            raise ValueError(
                f"max_bytes={max_bytes!r} does not fit max_records={records!r} records of "
                f"{self.RECORD_BYTES} bytes"
            )
        super().__init__(maxlen=records, max_bytes=max_bytes - records * self.RECORD_BYTES)
        self.directory = Path(directory)
        self.header = header or TraceHeader()
        self.min_interval = min_interval
        self.max_dumps = max_dumps
        self.signal_dumps = signal_dumps
        self.flush_timeout = flush_timeout
        self.auto_dumps = 0
        self.dumps_skipped = 0  # (counted on the caller's thread)
        self.dumps_failed = 0  # dumps that could not be written (the recorder's thread)
        #: Paths of the dumps written by ``dump_soon``, in the order written.
        self.dumps: list[Path] = []
        self._last_auto: float | None = None
        self._worker: _Worker[tuple[Path, list[TraceEvent]]] = _Worker(
            "trioxide-flight-recorder", self._write_job
        )

    def direct_writer(self, written: Callable[[], int]) -> Callable[[TraceEvent], None]:
        """Declined: the tracer calls ``write``, which holds the byte bound."""
        return self.write

    def run_writer(self, held: Callable[[], object]) -> Callable[[Run], None]:
        """Keep runs whole, like ``MemorySink.run_writer``, counting their events."""
        self._held.append(held)
        return self._write_run

    def _write_run(self, run: Run) -> None:
        self._counted += run.count
        self.write_run(run)

    @property
    def written(self) -> int:
        """Events written (also those since dropped or cleared), the runs the tracer still
        holds included (every view shows them)."""
        return self._counted + sum(run.count for run in self._held_runs())

    def use_seed(self, seed: int) -> None:
        """Name *seed* in the dumps' header if it names none (the runtime calls it for
        ``open_runtime(seed=...)``: a dump then says how to replay its run)."""
        if self.header.seed is None:
            self.header = msgspec.structs.replace(self.header, seed=seed)

    @property
    def max_total_bytes(self) -> int:
        """The bound on ``nbytes``: records at ``RECORD_BYTES`` plus payloads and details."""
        return self.maxlen * self.RECORD_BYTES + self.max_bytes

    def path_for(self, name: str, seq: int | None = None) -> Path:
        """Where ``dump_soon(name)`` writes: ``directory/trioxide-<name>-<seq>.jsonl``
        (*seq* defaults to the newest record's; characters other than letters, digits and
        ``_.=+-`` in *name* become ``_``)."""
        if seq is None:
            last = self._ring[-1] if self._ring else None
            if last is None:
                seq = 0
            else:
                seq = last.last_seq if isinstance(last, RUN_TYPES) else last.seq
        safe = _UNSAFE.sub("_", name) or "trace"
        return self.directory / f"trioxide-{safe}-{seq}.jsonl"

    def dump(self, path: str | os.PathLike[str]) -> Path:
        """Write the records held now to *path* (replacing it), on the calling thread."""
        return _write_trace(Path(path), self.header, self.records, exclusive=False)

    def write_snapshot(self, path: str | os.PathLike[str], records: list[TraceEvent]) -> Path:
        """Write *records* (a snapshot: ``records``) to *path*; for a caller that takes the
        snapshot on its own thread and writes on another (``Runtime.dump_trace``)."""
        return _write_trace(Path(path), self.header, records, exclusive=False)

    def dump_soon(
        self, name: str, *, now: float | None = None, limited: bool = True
    ) -> Path | None:
        """Snapshot the ring now; the recorder's thread writes it (see the class
        docstring). Never blocks on I/O, never raises."""
        if self._worker.pending:
            self.dumps_skipped += 1
            return None
        if limited:
            t = time.monotonic() if now is None else now
            last = self._last_auto
            if self.auto_dumps >= self.max_dumps or (
                last is not None and t - last < self.min_interval
            ):
                self.dumps_skipped += 1
                return None
            self._last_auto = t
            self.auto_dumps += 1
        path = self.path_for(name)
        try:
            self._worker.submit((path, self.records))
        except RuntimeError:  # closed
            self.dumps_skipped += 1
            return None
        return path

    def _write_job(self, job: tuple[Path, list[TraceEvent]]) -> None:
        path, records = job
        try:
            self.dumps.append(_write_trace(path, self.header, records, exclusive=True))
        except OSError:
            self.dumps_failed += 1

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every dump asked for so far is written, at most *timeout* seconds
        (default ``flush_timeout``); whether they are."""
        worker = self._worker
        return worker.wait(worker.submitted, self.flush_timeout if timeout is None else timeout)

    def close(self) -> None:
        """Finish the dumps asked for (at most ``flush_timeout``) and end the thread."""
        self._worker.close(self.flush_timeout)
