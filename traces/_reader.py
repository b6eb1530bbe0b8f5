"""Reading trace files back, tolerant of damage: a bad line is reported and skipped.

A line is bad - reported as a :class:`LineError` with its 1-based number, and skipped -
if it is not a JSON event, if it is not valid UTF-8 (anywhere, payload included), or if
it nests arrays and objects more than :data:`MAX_DEPTH` deep (anywhere, payload
included): so no reader raises ``RecursionError``, and whoever decodes a payload later
(the viewer, the exporters) gets valid UTF-8 JSON of bounded depth. The checks cost two
``bytes.count`` and one ``isascii`` per ordinary line; only a line that could fail them
is looked at more closely (in bounded memory).
"""

from __future__ import annotations

import codecs
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import trio

from ._event import RUN_LINES, SCHEMA_VERSION, TraceEvent, TraceHeader
from ._expand import check_run_line, expand

__all__ = [
    "MAX_DEPTH",
    "LineError",
    "TraceFile",
    "decode_event",
    "follow_trace",
    "iter_trace",
    "read_trace",
]

#: The deepest nesting of arrays and objects a trace line may have (the event object
#: itself counts as one level): far more than any message needs, far less than what
#: would exhaust the Python stack of whoever decodes the payload.
MAX_DEPTH = 64

_event_decoder = msgspec.json.Decoder(TraceEvent)
_header_decoder = msgspec.json.Decoder(TraceHeader)


class _HeaderMark(msgspec.Struct):
    trioxide_trace: int


_mark_decoder = msgspec.json.Decoder(_HeaderMark)


_TO_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_SCAN_CHUNK = 1 << 16  # bytes scanned at a time for brackets (bounded temporaries)
_UTF8_CHUNK = 1 << 20  # bytes validated at a time (a bounded temporary copy)


def _brackets_outside_strings(line: bytes) -> bytes:
    """The brackets of *line* outside its JSON strings, ``{}`` written ``[]``. Scanned a
    chunk at a time (escapes removed, then what is between quotes), so that a huge line
    costs little more than its brackets."""
    out = bytearray()
    in_string = False
    escaped_first = False  # the chunk before ended with a backslash escaping this byte
    view = memoryview(line)
    try:
        for start in range(0, len(view), _SCAN_CHUNK):
            chunk = bytes(view[start + escaped_first : start + _SCAN_CHUNK])
            escaped_first = False
            if b"\\" in chunk:  # (backslashes occur in strings only, as escapes)
                chunk = chunk.replace(b"\\\\", b"")
                if chunk.endswith(b"\\"):
                    chunk = chunk[:-1]
                    escaped_first = True
                chunk = chunk.replace(b'\\"', b"")
            parts = chunk.translate(None, _NOT_STRUCTURE).split(b'"')
            out += b"".join(parts[in_string::2]).translate(_TO_BRACKETS)
            in_string ^= len(parts) % 2 == 0  # an odd number of quotes
    finally:
        view.release()
    return bytes(out)


def _depth_error(line: bytes) -> str | None:
    """Why *line* nests too deep, if it does. Exact for valid JSON: of the brackets
    outside strings, the innermost pairs are taken away once per level."""
    if line.count(b"[") + line.count(b"{") <= MAX_DEPTH:
        return None  # the common case: not enough brackets to nest that deep
    rest = _brackets_outside_strings(line)
    for _ in range(MAX_DEPTH):
        inner = rest.replace(b"[]", b"")
        if not inner or inner == rest:  # (unchanged: unbalanced, for the decoder to say)
            return None
        rest = inner
    return f"nested more than {MAX_DEPTH} levels deep"


def _utf8_error(line: bytes | msgspec.Raw) -> str | None:
    """Where *line* is not valid UTF-8, if it is not (checked a chunk at a time)."""
    if isinstance(line, bytes) and line.isascii():
        return None
    view = memoryview(line)
    start = 0
    try:
        while start < len(view):
            end = min(start + _UTF8_CHUNK, len(view))
            for _ in range(3):  # never cut a character in two (at most 3 bytes follow)
                if end < len(view) and view[end] & 0xC0 == 0x80:
                    end -= 1
            try:
                codecs.utf_8_decode(view[start:end], "strict", True)
            except UnicodeDecodeError as exc:
                return f"invalid UTF-8 at byte {start + exc.start + 1} of the line"
            start = end
    finally:
        view.release()
    return None


def decode_event(line: bytes) -> TraceEvent:
    """One trace line as an event (not expanded: a folded handle, or a run line standing
    for many records). Raises ``msgspec.DecodeError`` if the line is not an event, is not
    valid UTF-8, nests more than ``MAX_DEPTH`` deep, or is a run line whose arrays do not
    fit together."""
    problem = _utf8_error(line) or _depth_error(line)
    if problem is not None:
        raise msgspec.DecodeError(problem)
    try:
        event = _event_decoder.decode(line)
    except RecursionError:  # (only for unbalanced lines, which _depth_error leaves alone)
        raise msgspec.DecodeError(f"nested more than {MAX_DEPTH} levels deep") from None
    if event.run is not None or event.kind in RUN_LINES:
        try:
            check_run_line(event)
        except ValueError as exc:
            raise msgspec.DecodeError(str(exc)) from None
    return event


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


def upgrade_v1(event: TraceEvent) -> TraceEvent:
    """A schema-1 event in today's vocabulary: its outcome was spelled in ``detail``
    ("ok", "value", "error: ..."), and a handler cancelled by stop was a ``cancel`` event
    whose detail began with "error:"."""
    detail = event.detail
    kind = event.kind
    if kind in ("handle", "reply", "task_end") and detail is not None:
        name, sep, rest = detail.partition(": ") if kind == "task_end" else ("", "", detail)
        if rest in ("ok", "value"):
            return msgspec.structs.replace(
                event, outcome="ok", detail=f"{name}: ok" if sep else None
            )
        if rest.startswith("error: "):
            rest = rest[len("error: ") :]
        outcome = "cancelled" if rest.startswith("Cancelled(") else "error"
        return msgspec.structs.replace(
            event, outcome=outcome, detail=f"{name}{sep}{rest}" if sep else rest
        )
    if kind == "cancel" and detail is not None and detail.startswith("error: "):
        rest = detail[len("error: ") :]
        outcome = "error" if "Cancelled()" not in rest else "cancelled"
        return msgspec.structs.replace(event, kind="handle", outcome=outcome, detail=rest)
    if kind in ("cancel", "timeout") and detail is not None:
        return msgspec.structs.replace(event, outcome="cancelled" if kind == "cancel" else kind)
    return event


def _decode_header(line: bytes) -> TraceHeader:
    problem = _utf8_error(line) or _depth_error(line)
    if problem is not None:
        raise msgspec.DecodeError(problem)
    try:
        _mark_decoder.decode(line)  # the schema version must be present
        header = _header_decoder.decode(line)
    except RecursionError:
        raise msgspec.DecodeError(f"nested more than {MAX_DEPTH} levels deep") from None
    if header.trioxide_trace > SCHEMA_VERSION:
        raise ValueError(
            f"trace schema {header.trioxide_trace} is newer than this reader ({SCHEMA_VERSION})"
        )
    return header


def iter_trace(
    path: str | os.PathLike[str], errors: list[LineError] | None = None
) -> Iterator[TraceEvent]:
    """Yield the events of *path* (expanded: ``traces.expand``); undecodable lines are
    appended to *errors* and skipped."""
    with open(path, "rb") as f:
        first = f.readline()
        old = _decode_header(first).trioxide_trace < 2
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            try:
                event = decode_event(line)
            except msgspec.DecodeError as exc:
                if errors is not None:
                    errors.append(LineError(lineno, str(exc)))
                continue
            if old:
                yield upgrade_v1(event)
            else:
                yield from expand((event,))


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
    old = False
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
                    old = _decode_header(line).trioxide_trace < 2
                    continue
                if not line.strip():
                    continue
                try:
                    event = decode_event(line)
                except msgspec.DecodeError as exc:
                    if errors is not None:
                        errors.append(LineError(lineno, str(exc)))
                    continue
                if old:
                    yield upgrade_v1(event)
                else:
                    for e in expand((event,)):
                        yield e
        else:
            await trio.sleep(poll_interval)
