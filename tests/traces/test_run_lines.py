"""Run lines (``traces.RUN_LINES``, schema 4): a lone ``JsonlFileSink`` writes each run as
one line; every reader - ``read_trace``, ``iter_trace``, ``follow_trace``, the trace
server's replay, ``merge`` - hands out the events it stands for, and a run line whose
arrays do not fit together is a damaged line (reported, skipped), never a crash."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from trioxide import open_runtime, traces
from trioxide.traces import RunBody, TraceEvent, TraceHeader
from trioxide.traces import server as trace_server

from ..runtime._msgs import Counter, Get, Incr


async def _program(tracer: traces.Tracer) -> None:
    async with open_runtime(tracer=tracer, seed=5) as rt:
        counter = await rt.spawn(Counter, name="counter")
        for i in range(150):
            await counter.tell(Incr(i))
        await counter.ask(Get())
        for i in range(40):  # two types in one run of handled tells
            await counter.tell(Incr(i) if i % 2 else Get())
        await counter.ask(Get())
        await counter.stop()


def _record(path: Path, lone: bool) -> None:
    sink = traces.JsonlFileSink(path)
    tracer = (
        traces.Tracer(sink, payloads=True)
        if lone
        else traces.Tracer(sink, traces.MemorySink(), payloads=True)
    )
    try:
        trio.run(_program, tracer, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        tracer.close()


@pytest.fixture
def two_files(tmp_path: Path) -> tuple[Path, Path]:
    """The same seeded program traced into a lone file (run lines) and per event."""
    runs, plain = tmp_path / "runs.jsonl", tmp_path / "plain.jsonl"
    _record(runs, lone=True)
    _record(plain, lone=False)
    return runs, plain


def _lines(path: Path) -> list[TraceEvent]:
    return [
        msgspec.json.decode(line, type=TraceEvent) for line in path.read_bytes().splitlines()[1:]
    ]


def test_every_reader_hands_out_the_events_a_run_line_stands_for(
    two_files: tuple[Path, Path],
) -> None:
    runs, plain = two_files
    kinds = {e.kind for e in _lines(runs)}
    assert {"send_run", "handle_run"} <= kinds  # (the file has run lines)
    assert any(e.run is not None and e.run.types for e in _lines(runs))  # two types
    assert any(e.run is not None and None in e.run.t0 for e in _lines(runs))  # chained
    assert runs.stat().st_size < plain.stat().st_size / 2
    want = traces.read_trace(plain)
    got = traces.read_trace(runs)
    assert got.errors == [] and got.events == want.events
    assert [e.seq for e in got.events] == list(range(1, len(got.events) + 1))
    assert list(traces.iter_trace(runs)) == want.events
    merged = traces.merge_files([runs])
    assert [e.seq for e in merged.events] == [e.seq for e in want.events]


async def test_follow_trace_expands_run_lines(two_files: tuple[Path, Path]) -> None:
    runs, plain = two_files
    want = traces.read_trace(plain).events
    got: list[TraceEvent] = []
    with trio.move_on_after(5):
        async for event in traces.follow_trace(runs, poll_interval=0.01):
            got.append(event)
            if len(got) == len(want):
                break
    assert got == want


def test_the_trace_server_replays_the_events_of_run_lines(two_files: tuple[Path, Path]) -> None:
    runs, plain = two_files
    want = traces.read_trace(plain).events
    source = trace_server._replay_source(str(runs))
    got: list[TraceEvent] = []
    for chunk in source.chunks:
        for item in trace_server._decode_chunk(
            trace_server._chunk_lines(str(runs), chunk), chunk.line
        ):
            assert not isinstance(item, traces.LineError), item
            got.extend(item)
    assert got == want
    assert sum(trace_server._count_chunk(str(runs), c)[0] for c in source.chunks) == len(want)


_GOOD_HANDLE = TraceEvent(
    3, 1.0, "handle_run", "/a", msg_type="Incr",
    run=RunBody(ids=(1, 2), t0=(1.0, None), t=(1.5,)),
)  # fmt: skip
_BAD = {
    "ids and types differ": TraceEvent(
        3, 1.0, "handle_run", "/a",
        run=RunBody(ids=(1, 2), types=("Incr",), t0=(1.0, None), t=(1.5, 2.0)),
    ),
    "no type at all": TraceEvent(
        3, 1.0, "handle_run", "/a", run=RunBody(ids=(1,), t0=(1.0,), t=(1.5,))
    ),
    "t0 short": TraceEvent(
        3, 1.0, "handle_run", "/a", msg_type="Incr", run=RunBody(ids=(1, 2), t0=(1.0,), t=(1.5,))
    ),
    "two open": TraceEvent(
        3, 1.0, "handle_run", "/a", msg_type="Incr", run=RunBody(ids=(1, 2), t0=(1.0, 2.0))
    ),
    "first t0 chained": TraceEvent(
        3, 1.0, "handle_run", "/a", msg_type="Incr", run=RunBody(ids=(1,), t0=(None,), t=(1.5,))
    ),
    "empty": TraceEvent(3, 1.0, "handle_run", "/a", msg_type="Incr", run=RunBody()),
    "payloads on handles": TraceEvent(
        3, 1.0, "handle_run", "/a", msg_type="Incr",
        run=RunBody(ids=(1,), t0=(1.0,), t=(1.5,), payloads=(msgspec.Raw(b"1"),)),
    ),
    "sends without times": TraceEvent(3, 1.0, "send_run", "/a", msg_type="Incr", run=RunBody()),
    "sends with ids": TraceEvent(
        3, 1.0, "send_run", "/a", msg_type="Incr", run=RunBody(ids=(3,), t=(1.0,))
    ),
    "a payload missing": TraceEvent(
        3, 1.0, "send_run", "/a", msg_type="Incr",
        run=RunBody(t=(1.0, 2.0), payloads=(msgspec.Raw(b"1"),)),
    ),
    "a run kind without its run": TraceEvent(3, 1.0, "send_run", "/a", msg_type="Incr"),
    "a run on another kind": TraceEvent(
        3, 1.0, "handle", "/a", run=RunBody(ids=(1,), t0=(1.0,), t=(1.5,))
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(_BAD))
def test_a_run_line_whose_arrays_do_not_fit_is_a_damaged_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / "bad.jsonl"
    first = TraceEvent(1, 0.5, "start", "/a")
    lines = [TraceHeader(), first, _BAD[name], _GOOD_HANDLE]
    path.write_bytes(b"".join(msgspec.json.encode(x) + b"\n" for x in lines))
    got = traces.read_trace(path)
    assert [e.line for e in got.errors] == [3], got.errors
    assert got.errors[0].error  # says what does not fit
    assert [(e.seq, e.kind) for e in got.events] == [
        (1, "start"), (3, "receive"), (4, "handle"), (5, "receive")
    ]  # fmt: skip
    assert got.events[3].t == 1.5  # the second message began when the first ended
