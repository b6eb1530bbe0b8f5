"""Reading trace files back, tolerant of damage: a bad line is reported and skipped."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import trio

from ._event import SCHEMA_VERSION, TraceEvent, TraceHeader

__all__ = ["LineError", "TraceFile", "follow_trace", "iter_trace", "read_trace"]

_event_decoder = msgspec.json.Decoder(TraceEvent)
_header_decoder = msgspec.json.Decoder(TraceHeader)


class _HeaderMark(msgspec.Struct):
    trioxide_trace: int


_mark_decoder = msgspec.json.Decoder(_HeaderMark)


@dataclass(frozen=True)
class LineError:
    """A line that could not be decoded (1-based ``line`` number)."""

    line: int
    error: str


@dataclass
class TraceFile:
    header: TraceHeader
    events: list[TraceEvent] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)


def _decode_header(line: bytes) -> TraceHeader:
    _mark_decoder.decode(line)  # the schema version must be present
    header = _header_decoder.decode(line)
    if header.trioxide_trace > SCHEMA_VERSION:
        raise ValueError(
            f"trace schema {header.trioxide_trace} is newer than this reader ({SCHEMA_VERSION})"
        )
    return header


def iter_trace(
    path: str | os.PathLike[str], errors: list[LineError] | None = None
) -> Iterator[TraceEvent]:
    """Yield the events of *path*; undecodable lines are appended to *errors* and skipped."""
    with open(path, "rb") as f:
        first = f.readline()
        _decode_header(first)
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            try:
                yield _event_decoder.decode(line)
            except msgspec.DecodeError as exc:
                if errors is not None:
                    errors.append(LineError(lineno, str(exc)))


def read_trace(path: str | os.PathLike[str]) -> TraceFile:
    """Read a whole trace file. Raises ``ValueError`` only if the header is unusable."""
    with open(path, "rb") as f:
        try:
            header = _decode_header(f.readline())
        except msgspec.DecodeError as exc:
            raise ValueError(f"{path}: line 1 is not a trioxide trace header: {exc}") from None
    tf = TraceFile(header)
    tf.events.extend(iter_trace(path, tf.errors))
    return tf


async def follow_trace(
    path: str | os.PathLike[str],
    *,
    poll_interval: float = 0.1,
    errors: list[LineError] | None = None,
) -> AsyncIterator[TraceEvent]:
    """Yield events as they are appended to *path* (like ``tail -f``), forever.

    Partial lines (a writer mid-flush) are held until their newline arrives.
    """
    p = Path(path)
    pending = b""
    lineno = 0
    offset = 0
    while True:
        async with await trio.open_file(p, "rb") as f:
            await f.seek(offset)
            chunk = await f.read()
        if chunk:
            offset += len(chunk)
            data = pending + chunk
            *lines, pending = data.split(b"\n")
            for line in lines:
                lineno += 1
                if lineno == 1:
                    _decode_header(line)
                    continue
                if not line.strip():
                    continue
                try:
                    yield _event_decoder.decode(line)
                except msgspec.DecodeError as exc:
                    if errors is not None:
                        errors.append(LineError(lineno, str(exc)))
        else:
            await trio.sleep(poll_interval)
