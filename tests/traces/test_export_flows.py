"""Exports that Perfetto and Jaeger read as meant: every Perfetto flow arrow is bound to a
slice on its own track, and OTLP spans sit at the run's wall-clock time."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from trio.testing import MockClock

from trioxide import runtime, traces
from trioxide.cli import main as cli_main
from trioxide.traces import export
from trioxide.traces.export import REPLY_FLOW_ID_BASE, to_otlp

from .conftest import Boss, Kick, Worker

Span = tuple[float, float, dict[str, Any]]  # (start, end, the slice's event)


@pytest.fixture(scope="module")
def demo_trace_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flows") / "demo.jsonl"
    assert cli_main(["demo", "--vmms", "6", "--seed", "2", "--trace", str(path)]) == 0
    return path


def slices_per_track(events: list[dict[str, Any]]) -> dict[tuple[int, int], list[Span]]:
    """The slices of each (pid, tid): complete events ("X", from ts to ts + dur) and
    begin/end pairs ("B" ... "E", matched as a stack per track)."""
    tracks: dict[tuple[int, int], list[Span]] = defaultdict(list)
    open_b: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        track = (e.get("pid", 0), e.get("tid", 0))
        if e["ph"] == "X":
            tracks[track].append((e["ts"], e["ts"] + e["dur"], e))
        elif e["ph"] == "B":
            open_b[track].append(e)
        elif e["ph"] == "E":
            begin = open_b[track].pop()
            tracks[track].append((begin["ts"], e["ts"], begin))
    return tracks


def unbound_flows(doc: dict[str, Any]) -> tuple[int, list[str]]:
    """Check every flow event of a Chrome Trace Event Format document, as the format binds
    them: a flow start ("s") or step ("t") binds to the enclosing slice on its own thread
    (same pid and tid) at its timestamp; a flow end ("f") with ``"bp": "e"`` binds to the
    enclosing slice too (without it, to the next slice to begin: we always say "e").

    The rule checked, for every flow event F at timestamp T on (pid, tid): some slice S on
    the same (pid, tid) has ``S.start <= T < S.end`` (half-open: a slice that ends at T
    has been popped off its track's stack by then), and the innermost such slice - the
    one an importer binds F to - is the step F belongs to: the message's send or handler
    (``args.msg_id == id``), or the reply (``args.corr == id - REPLY_FLOW_ID_BASE``).

    Returns (flow events checked, a description of each that fails)."""
    events = doc["traceEvents"]
    tracks = slices_per_track(events)
    checked = 0
    bad: list[str] = []
    for e in events:
        if e["ph"] not in ("s", "t", "f"):
            continue
        checked += 1
        t = e["ts"]
        if e["ph"] == "f" and e.get("bp") != "e":
            bad.append(f"flow end without bp=e: {e}")
            continue
        around = [s for s in tracks[(e.get("pid", 0), e.get("tid", 0))] if s[0] <= t < s[1]]
        if not around:
            bad.append(f"no slice encloses {e}")
            continue
        innermost = max(around, key=lambda s: (s[0], -s[1]))[2]
        args = innermost.get("args", {})
        if e["cat"] == "reply":
            if args.get("corr") != e["id"] - REPLY_FLOW_ID_BASE:
                bad.append(f"{e} binds to {innermost['name']} {args}")
        elif args.get("msg_id") != e["id"]:
            bad.append(f"{e} binds to {innermost['name']} {args}")
    return checked, bad


def test_every_perfetto_flow_of_the_demo_is_bound_to_its_slice(
    demo_trace_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "demo.perfetto.json"
    assert cli_main(["export", str(demo_trace_path), "--perfetto", str(out)]) == 0
    doc = json.loads(out.read_bytes())
    checked, bad = unbound_flows(doc)
    tf = traces.read_trace(demo_trace_path)
    receives = sum(1 for e in tf.events if e.kind == "receive")
    assert checked >= 2 * receives > 1000  # a start and an end per received message...
    assert bad == [], f"{len(bad)} of {checked} flow events unbound, e.g. {bad[:3]}"
    # ...including sends from outside any actor and replies into asking tasks.
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert export.OUTSIDE_TRACK in names


def test_the_flow_check_catches_an_unbound_arrow() -> None:
    """The rule bites: an arrow from an instant, one at a slice's very end, one bound to
    the wrong slice, and an end that would bind to the next slice are all reported."""
    x = {"ph": "X", "cat": "msg", "name": "H", "ts": 10, "dur": 5, "pid": 1, "tid": 1}
    doc = {
        "traceEvents": [
            {**x, "args": {"msg_id": 1}},
            {"ph": "i", "cat": "msg", "name": "send", "ts": 20, "pid": 1, "tid": 2, "s": "t"},
            {"ph": "s", "cat": "msg", "id": 1, "ts": 20, "pid": 1, "tid": 2},  # an instant
            {"ph": "s", "cat": "msg", "id": 1, "ts": 15, "pid": 1, "tid": 1},  # at the end
            {"ph": "f", "cat": "msg", "id": 2, "ts": 10, "pid": 1, "tid": 1, "bp": "e"},
            {"ph": "f", "cat": "msg", "id": 1, "ts": 10, "pid": 1, "tid": 1},  # next slice
            {"ph": "f", "cat": "msg", "id": 1, "ts": 12, "pid": 1, "tid": 1, "bp": "e"},  # ok
        ]
    }
    checked, bad = unbound_flows(doc)
    assert checked == 5 and len(bad) == 4


async def asking_task_scenario(tracer: traces.Tracer) -> None:
    """Sends from outside any actor and from an actor's task, and a reply into that task."""
    async with runtime.open_runtime(tracer=tracer, name="root") as rt:
        worker = await rt.spawn(Worker, runtime.Watch(0, name="w"), name="worker")
        boss = await rt.spawn(Boss, worker, name="boss")
        assert await boss.ask(Kick()) == 4
        await trio.sleep(1.0)


def test_scenario_flows_are_bound_too() -> None:
    sink = traces.MemorySink()
    trio.run(
        asking_task_scenario,
        traces.Tracer(sink, payloads=True),
        clock=MockClock(autojump_threshold=0),
    )
    checked, bad = unbound_flows(export.to_perfetto(sink.events))
    assert checked > 0 and bad == []


# -- OTLP: wall-clock times ----------------------------------------------------------------


def span_times(doc: dict[str, Any]) -> list[int]:
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    return [int(s[k]) for s in spans for k in ("startTimeUnixNano", "endTimeUnixNano")]


def test_otlp_spans_start_at_the_runs_wall_clock_start(demo_trace_path: Path) -> None:
    tf = traces.read_trace(demo_trace_path)
    first_t = tf.events[0].t
    header = msgspec.structs.replace(tf.header, started_at="2025-03-04T05:06:07.5Z")
    start = 1_741_064_767_500_000_000
    doc = to_otlp(tf.events, header=header)
    assert min(span_times(doc)) == start
    sent = {e.msg_id: e.t for e in tf.events if e.kind == "send"}
    producers = [s for s in doc["resourceSpans"][0]["scopeSpans"][0]["spans"] if s["kind"] == 4]
    assert len(producers) == len(sent) > 500  # the 6-VMM demo: ~600 sends
    for span in producers:  # each at the run's start plus its virtual offset
        attrs = {a["key"]: a["value"]["stringValue"] for a in span["attributes"][:5]}
        t = sent[int(attrs["messaging.message.id"])]
        assert int(span["startTimeUnixNano"]) == start + round((t - first_t) * 1e9)
    assert max(span_times(doc)) <= start + round((tf.events[-1].t - first_t) * 1e9)
    # A time without a zone is UTC; an explicit start wins over the header.
    naive = msgspec.structs.replace(tf.header, started_at="2025-03-04T05:06:07.500")
    assert min(span_times(to_otlp(tf.events, header=naive))) == start
    assert min(span_times(to_otlp(tf.events, header=header, started_at_ns=7))) == 7


def test_otlp_without_a_start_is_placed_at_the_export_time(
    demo_trace_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tf = traces.read_trace(demo_trace_path)
    assert tf.header.started_at is None  # the demo's header is deterministic: no wall time
    monkeypatch.setattr(export.time, "time_ns", lambda: 1_800_000_000 * 10**9)
    assert min(span_times(to_otlp(tf.events, header=tf.header))) == 1_800_000_000 * 10**9


def test_otlp_refuses_a_started_at_that_is_no_time() -> None:
    header = traces.TraceHeader(started_at="yesterday")
    events = [traces.TraceEvent(1, 0.0, "send", "a", msg_id=1)]
    with pytest.raises(ValueError, match="started_at 'yesterday' is not an ISO 8601 time"):
        to_otlp(events, header=header)


def test_otel_sink_places_the_first_event_at_its_epoch() -> None:
    """Whatever the Trio clock's origin: here a clock that has run for 5,000 s."""
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    sdk_export = pytest.importorskip("opentelemetry.sdk.trace.export")
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(sdk_export.SimpleSpanProcessor(exporter))
    sink = traces.otel.OtelSink(provider.get_tracer("test"), epoch_ns=10**18)
    clock = MockClock(autojump_threshold=0)

    async def main() -> None:
        clock.jump(5000.0)
        await asking_task_scenario(traces.Tracer(sink))

    trio.run(main, clock=clock)
    sink.close()
    spans = exporter.get_finished_spans()
    assert spans and sink.errors == 0
    assert min(s.start_time for s in spans) == 10**18
    assert max(s.end_time for s in spans) < 10**18 + 5 * 10**9  # a few virtual seconds
