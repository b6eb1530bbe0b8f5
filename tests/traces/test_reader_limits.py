"""Trace reader limits: hostile lines are reported and skipped, huge lines cost bounded
memory in ``trioxide export``, and the header carries the seed of a seeded run."""

from __future__ import annotations

import json
import tracemalloc
from contextlib import aclosing
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from trio.testing import MockClock

from trioxide import runtime, traces
from trioxide.cli import main as cli_main
from trioxide.runtime.testing import SeededRun, replay
from trioxide.traces._reader import MAX_DEPTH

from .conftest import Ask2, Worker

HEADER = traces.TraceHeader(seed=5, trio_version=trio.__version__, command=["test"])


def ev(seq: int, kind: str = "send", **kw: Any) -> traces.TraceEvent:
    return traces.TraceEvent(seq, float(seq), kind, "a", **kw)


def line(event: traces.TraceEvent) -> bytes:
    return msgspec.json.encode(event) + b"\n"


def with_payload(seq: int, payload: bytes) -> bytes:
    """An event line whose payload is *payload*, verbatim (whatever it is)."""
    head = line(ev(seq, msg_id=seq, msg_type="P"))[:-2]  # without the closing "}\n"
    return head + b',"payload":' + payload + b"}\n"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def write(path: Path, *lines: bytes) -> Path:
    path.write_bytes(msgspec.json.encode(HEADER) + b"\n" + b"".join(lines))
    return path


GOOD = [ev(1), ev(3), ev(5)]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (with_payload(2, nested(100_000)), f"nested more than {MAX_DEPTH} levels deep"),
        (b'{"seq":2,"t":0,"kind":' + nested(100_000) + b"}\n", "levels deep"),
        (with_payload(2, b'{"name":"caf\xe9"}'), "invalid UTF-8 at byte"),  # latin-1
        (with_payload(2, b'"\xed\xa0\x80"'), "invalid UTF-8 at byte"),  # a lone surrogate
        (b'{"seq":2,"t":0,"kind":"send","actor":"\xff"}\n', "invalid UTF-8"),
    ],
    ids=["deep-payload", "deep-field", "latin1-payload", "surrogate", "bad-actor"],
)
def test_a_hostile_line_is_reported_with_its_number_and_skipped(
    tmp_path: Path, bad: bytes, message: str
) -> None:
    path = write(tmp_path / "t.jsonl", line(GOOD[0]), bad, line(GOOD[1]), line(GOOD[2]))
    tf = traces.read_trace(path)  # no RecursionError, no UnicodeDecodeError
    assert tf.events == GOOD
    assert [e.line for e in tf.errors] == [3]
    assert message in tf.errors[0].error
    errors: list[traces.LineError] = []
    assert list(traces.iter_trace(path, errors)) == GOOD
    assert errors == tf.errors


def test_nesting_is_bounded_exactly_and_strings_do_not_count(tmp_path: Path) -> None:
    # The event object is one level: a payload may nest MAX_DEPTH - 1 deep, not more.
    deepest = with_payload(2, nested(MAX_DEPTH - 1))
    too_deep = with_payload(4, b'{"a":' * MAX_DEPTH + b"0" + b"}" * MAX_DEPTH)
    brackets_in_strings = with_payload(6, b'["' + b"[{" * 5000 + b'\\"]"]')
    many_shallow = with_payload(8, b"[" + b",".join([b"[{}]"] * 5000) + b"]")
    path = write(tmp_path / "t.jsonl", deepest, too_deep, brackets_in_strings, many_shallow)
    tf = traces.read_trace(path)
    assert [e.seq for e in tf.events] == [2, 6, 8]
    assert [e.line for e in tf.errors] == [3]
    assert bytes(tf.events[0].payload) == nested(MAX_DEPTH - 1)
    # What got through decodes, whoever decodes it next (the viewer, the exporters).
    for e in tf.events:
        msgspec.json.decode(e.payload)


def test_valid_utf8_in_payloads_passes(tmp_path: Path) -> None:
    text = "héllo € 🦀 " * 100_000  # crosses the validator's chunk boundaries
    payload = msgspec.json.encode({"s": text})
    path = write(tmp_path / "t.jsonl", with_payload(2, payload))
    tf = traces.read_trace(path)
    assert tf.errors == [] and msgspec.json.decode(tf.events[0].payload) == {"s": text}
    broken = payload[:-3] + b"\xe2\x82" + payload[-3:]  # a character cut short at the end
    tf = traces.read_trace(write(tmp_path / "u.jsonl", with_payload(2, broken)))
    assert tf.events == [] and [e.line for e in tf.errors] == [2]
    assert f"at byte {len(with_payload(2, b'')) - 2 + len(payload) - 2}" in tf.errors[0].error


@pytest.mark.parametrize(
    "header",
    [
        b'{"trioxide_trace":3,"command":' + nested(100_000) + b"}",
        b'{"trioxide_trace":3,"x":' + nested(100_000) + b"}",
        b'{"trioxide_trace":3,"command":["\xff"]}',
    ],
    ids=["deep-field", "deep-unknown-field", "bad-utf8"],
)
def test_a_hostile_header_is_an_unusable_header(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(header + b"\n" + line(GOOD[0]))
    with pytest.raises(ValueError, match="line 1 is not a trioxide trace header"):
        traces.read_trace(path)


async def test_follow_trace_skips_hostile_lines(tmp_path: Path) -> None:
    """(Trio's real clock: ``follow_trace`` reads in a worker thread, and a virtual clock
    would jump past any wait for it; the deadline only guards against a hang.)"""
    path = write(
        tmp_path / "live.jsonl",
        line(GOOD[0]),
        with_payload(2, nested(100_000)),
        with_payload(4, b'"\xff"'),
        line(GOOD[1]),
        line(GOOD[2]),
    )
    got: list[traces.TraceEvent] = []
    errors: list[traces.LineError] = []
    with trio.fail_after(60):
        async with aclosing(traces.follow_trace(path, poll_interval=0.01, errors=errors)) as it:
            async for e in it:
                got.append(e)
                if len(got) == len(GOOD):
                    break
    assert got == GOOD
    assert [e.line for e in errors] == [3, 4]


def test_export_reports_hostile_lines_and_exports_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    send = ev(1, msg_id=1, msg_type="M", payload=msgspec.Raw(b'{"n":1}'))
    receive = traces.TraceEvent(2, 2.0, "receive", "a", msg_id=1, msg_type="M")
    handle = traces.TraceEvent(4, 3.0, "handle", "a", msg_id=1, outcome="ok")
    path = write(
        tmp_path / "t.jsonl",
        line(send),
        with_payload(2, nested(100_000)),
        line(receive),
        with_payload(3, b'"\xc3"'),
        line(handle),
    )
    perfetto, otlp = tmp_path / "p.json", tmp_path / "o.json"
    assert cli_main(["export", str(path), "--perfetto", str(perfetto), "--otlp", str(otlp)]) == 0
    err = capsys.readouterr().err
    assert f"{path}:3: skipped" in err and "levels deep" in err
    assert f"{path}:5: skipped" in err and "invalid UTF-8" in err
    doc = json.loads(perfetto.read_bytes())
    (handler,) = (e for e in doc["traceEvents"] if e["ph"] == "X" and e["name"] == "M")
    assert handler["args"]["payload"] == {"n": 1}
    assert json.loads(otlp.read_bytes())["resourceSpans"][0]["scopeSpans"][0]["spans"]


def test_export_of_a_huge_line_costs_a_small_multiple_of_it(tmp_path: Path) -> None:
    """``trioxide export`` streams: a payload is copied to Perfetto as it is and turned
    into an OTLP string a chunk at a time, never decoded into Python objects (which
    would cost tens of times its size)."""
    disks = [{"id": i, "name": f"disk-{i}", "ok": True, "tags": ["a", "b"]} for i in range(140_000)]
    payload = msgspec.json.encode({"disks": disks, "note": 'a "quoted" \\ [text]'})
    del disks
    assert len(payload) > 8 << 20
    send = ev(1, msg_id=1, msg_type="Big", payload=msgspec.Raw(payload))
    receive = traces.TraceEvent(2, 2.0, "receive", "a", msg_id=1, msg_type="Big")
    handle = traces.TraceEvent(3, 3.0, "handle", "a", msg_id=1, outcome="ok")
    path = write(tmp_path / "big.jsonl", line(send), line(receive), line(handle))
    perfetto, otlp = tmp_path / "p.json", tmp_path / "o.json"
    tracemalloc.start()
    try:
        assert (
            cli_main(["export", str(path), "--perfetto", str(perfetto), "--otlp", str(otlp)]) == 0
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 4 * len(payload), f"peak {peak / len(payload):.1f}x the line"
    # What was written is the payload, intact, in both formats.
    doc = json.loads(perfetto.read_bytes())
    (handler,) = (e for e in doc["traceEvents"] if e["ph"] == "X" and e["name"] == "Big")
    assert msgspec.json.encode(handler["args"]["payload"]) == payload
    spans = json.loads(otlp.read_bytes())["resourceSpans"][0]["scopeSpans"][0]["spans"]
    (text,) = (
        a["value"]["stringValue"]
        for s in spans
        for a in s["attributes"]
        if a["key"] == "trioxide.payload"
    )
    assert text == payload.decode()


# -- the header names the seed of a seeded run ------------------------------------------


async def seeded_run(tracer: traces.Tracer, seed: int) -> None:
    async with runtime.open_runtime(tracer=tracer, seed=seed) as rt:
        worker = await rt.spawn(Worker, runtime.Watch(0, name="w"), name="worker")
        await worker.tell(Ask2(1))


@pytest.mark.parametrize("header", [None, traces.TraceHeader(command=["x"])])
def test_a_seeded_runs_trace_file_header_carries_its_seed(
    tmp_path: Path, header: traces.TraceHeader | None
) -> None:
    path = tmp_path / "seeded.jsonl"
    with traces.JsonlFileSink(path, header) as sink:
        trio.run(seeded_run, traces.Tracer(sink), 31, clock=MockClock(autojump_threshold=0))
    tf = traces.read_trace(path)
    assert tf.header.seed == 31 and tf.events
    assert tf.header.command == ([] if header is None else ["x"])


def test_a_seed_in_the_header_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "seeded.jsonl"
    with traces.JsonlFileSink(path, traces.TraceHeader(seed=4)) as sink:
        trio.run(seeded_run, traces.Tracer(sink), 31, clock=MockClock(autojump_threshold=0))
    assert traces.read_trace(path).header.seed == 4


def test_the_demo_and_explorer_trace_headers_carry_their_seed(tmp_path: Path) -> None:
    demo = tmp_path / "demo.jsonl"
    assert cli_main(["demo", "--vmms", "2", "--seed", "9", "--trace", str(demo)]) == 0
    assert traces.read_trace(demo).header.seed == 9
    replay(explore_scenario, 12, trace_path=tmp_path / "explore.jsonl")
    assert traces.read_trace(tmp_path / "explore.jsonl").header.seed == 12


async def explore_scenario(run: SeededRun) -> None:
    worker = await run.rt.spawn(Worker, runtime.Watch(0, name="w"), name="worker")
    await worker.tell(Ask2(1))
