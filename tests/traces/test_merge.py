"""Merging the traces of several processes (``traces.merge``, ``trioxide view a b c``).

The traces here are written by real ``Tracer`` objects on hand-driven clocks, as three
rack processes would: a Nexus-like client calls a sled agent, whose actor then calls a
Propolis. Each process's trace clock has its own origin (Trio's real clock starts at a
random offset), and the header's anchor (``started_at`` + ``clock_at_start``) is what
lines them up.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from trioxide import traces
from trioxide.cli import main
from trioxide.traces import MergeSource, TraceEvent, TraceHeader, merge_traces

WALL0 = 1_700_000_000.0  # the wall clock when the first process started


class Proc:
    """A process's tracer on a clock that reads ``wall - WALL0 + origin``: its trace time
    is the shared wall time moved by its own *origin*."""

    def __init__(self, name: str, origin: float, started: float = 0.0) -> None:
        self.name = name
        self.origin = origin
        self.wall = started
        self.sink = traces.MemorySink()
        self.tracer = traces.Tracer(self.sink, clock=lambda: self.wall + self.origin)
        when = datetime.fromtimestamp(WALL0 + started, UTC).isoformat(timespec="microseconds")
        self.header = TraceHeader(
            command=["trioxide", "x", name],
            process=name,
            started_at=when,
            clock_at_start=started + origin,
        )

    def at(self, wall: float) -> traces.Tracer:
        self.wall = wall
        return self.tracer

    def source(self, header: TraceHeader | None = None) -> MergeSource:
        return MergeSource(header or self.header, self.sink.events)


T1 = "4bf92f3577b34da6a3ce929d0e0e4736"
S_NEXUS = "00f067aa0ba902b7"  # nexus's client span (the request to the sled agent)
S_AGENT = "1111111111111111"  # the sled agent's server span
S_RUNNER = "2222222222222222"  # the runner's client span (the request to Propolis)
S_PROP = "3333333333333333"  # Propolis's server span


def three_processes() -> tuple[Proc, Proc, Proc]:
    """nexus -> sled agent (an ask to the runner) -> propolis, on three clocks whose
    origins differ by thousands of seconds (raw times would order them wrongly)."""
    nexus = Proc("nexus", origin=50_000.0)
    agent = Proc("sled-1", origin=10.0, started=0.001)
    prop = Proc("hypervisor", origin=90_000.0, started=0.002)

    req = nexus.at(1.000).http_send(
        "http:client", None, "127.0.0.1:1", "PUT", "/vmms/v1/state", T1, S_NEXUS, None
    )
    serve = agent.at(1.001).http_serve(
        "http:sled-agent", "127.0.0.1:9", "PUT", "/vmms/v1/state", T1, S_AGENT, S_NEXUS
    )
    ask = agent.at(1.002).send("sled/runner-v1", None, serve, True, _PutState())
    agent.at(1.003).receive("sled/runner-v1", ask, None, ask, _PutState())
    assert agent.tracer.context_of("sled/runner-v1", ask) == (T1, S_AGENT)
    call = agent.at(1.004).http_send(
        "sled/runner-v1", ask, "127.0.0.1:2", "PUT", "/instance/state", T1, S_RUNNER, S_AGENT
    )
    pserve = prop.at(1.005).http_serve(
        "http:propolis", "127.0.0.1:7", "PUT", "/instance/state", T1, S_PROP, S_RUNNER
    )
    prop.at(1.006).http_served("http:propolis", pserve, 204)
    agent.at(1.007).http_end("sled/runner-v1", call, 204)
    agent.at(1.008).handle("sled/runner-v1", ask, ask, None)
    agent.at(1.009).reply("sled/runner-v1", None, ask, ask, None)
    agent.at(1.010).http_served("http:sled-agent", serve, 200)
    nexus.at(1.011).http_end("http:client", req, 200)
    return nexus, agent, prop


class _PutState(msgspec.Struct, frozen=True):
    target: str = "running"


def by_kind(events: list[TraceEvent], kind: str, actor_part: str = "") -> list[TraceEvent]:
    return [e for e in events if e.kind == kind and actor_part in e.actor]


def test_tracer_http_events_carry_the_w3c_ids_and_outcomes() -> None:
    nexus, agent, _prop = three_processes()
    send, end = nexus.sink.events
    assert (send.kind, send.msg_id, send.corr, send.detail) == (
        "http_send",
        1,
        1,
        "PUT /vmms/v1/state",
    )
    assert (send.trace_id, send.span_id, send.parent_span, send.peer) == (
        T1,
        S_NEXUS,
        None,
        "127.0.0.1:1",
    )
    assert (end.kind, end.corr, end.outcome, end.detail) == ("http_end", 1, "ok", "200")
    serve = agent.sink.events[0]
    assert (serve.kind, serve.trace_id, serve.span_id, serve.parent_span) == (
        "http_serve",
        T1,
        S_AGENT,
        S_NEXUS,
    )
    ask = agent.sink.events[1]
    assert ask.kind == "send" and ask.cause == serve.seq  # the handler's ask names the request
    assert agent.tracer.links is not None and agent.tracer.links.statistics().messages == 2


def test_http_end_and_served_outcomes() -> None:
    tr = traces.Tracer(sink := traces.MemorySink(), clock=lambda: 0.0)
    r = tr.http_send("a", None, "h:1", "GET", "/x", T1, S_NEXUS, None)
    tr.http_end("a", r, 503, RuntimeError("503 SERVICE_UNAVAILABLE: down"))
    tr.http_end("a", r, None, TimeoutError("timeout error on http://h:1/x"), timed_out=True)
    import trio

    tr.http_end("a", r, None, trio.Cancelled._create())
    s = tr.http_serve("http:s", None, "GET", "/x", T1, S_AGENT, None)
    tr.http_served("http:s", s, 404, "NOT_FOUND")
    tr.http_served("http:s", s, None, None, trio.Cancelled._create())
    got = [(e.kind, e.outcome, e.detail) for e in sink.events[1:]]
    assert got == [
        ("http_end", "error", "503 SERVICE_UNAVAILABLE: down"),
        ("http_end", "timeout", "timeout error on http://h:1/x"),
        ("http_end", "cancelled", "Cancelled()"),
        ("http_serve", None, "GET /x"),
        ("http_served", "error", "404 NOT_FOUND"),
        ("http_served", "cancelled", "Cancelled()"),
    ]


def test_merge_renumbers_prefixes_and_links_across_processes() -> None:
    nexus, agent, prop = three_processes()
    merged = merge_traces([nexus.source(), agent.source(), prop.source()])
    events = merged.events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len(events) == 2 + 8 + 2
    assert merged.processes == ["nexus", "sled-1", "hypervisor"]
    assert {e.actor.split("/")[0] for e in events} == {"nexus", "sled-1", "hypervisor"}
    st = merged.statistics
    assert (st.links, st.unmatched, st.unanchored, st.clamped, st.dangling) == (2, 0, 0, 0, 0)

    # Aligned by the anchors, the events come in wall-clock order: 1.000, 1.001, ...
    assert [round(e.t - events[0].t, 6) for e in events] == [
        round(0.001 * i, 6) for i in range(len(events))
    ]
    (nsend,) = by_kind(events, "http_send", "nexus/")
    (aserve,) = by_kind(events, "http_serve", "sled-1/")
    (rsend,) = by_kind(events, "http_send", "sled-1/")
    (pserve,) = by_kind(events, "http_serve", "hypervisor/")
    # The cross-process causal links: a served request's cause is the request sent.
    assert aserve.cause == nsend.msg_id == nsend.seq
    assert pserve.cause == rsend.msg_id
    assert (aserve.peer, nsend.peer) == ("nexus/http:client", "sled-1/http:sled-agent")
    assert (pserve.peer, rsend.peer) == ("sled-1/sled/runner-v1", "hypervisor/http:propolis")
    # Within a process, ids are renumbered with the seqs.
    (ask,) = by_kind(events, "send", "sled-1/")
    assert ask.cause == aserve.seq and ask.corr == ask.msg_id == ask.seq
    assert rsend.cause == ask.msg_id
    (reply,) = by_kind(events, "reply")
    assert reply.corr == ask.msg_id
    (rend,) = by_kind(events, "http_end", "sled-1/")
    assert rend.corr == rsend.seq
    # The W3C ids are kept as they were: one trace through three processes.
    assert {e.trace_id for e in events if e.trace_id} == {T1}


def test_merge_keeps_causal_order_when_clocks_disagree() -> None:
    nexus, agent, prop = three_processes()
    # The sled agent's anchor is 5 ms late: taken raw, it served the request before
    # Nexus sent it. The merge holds it back (and its answer before Nexus's end).
    late = msgspec.structs.replace(agent.header, clock_at_start=agent.header.clock_at_start + 0.005)
    merged = merge_traces([nexus.source(), agent.source(late), prop.source()])
    events = merged.events
    seq_of = {(e.kind, e.actor.split("/")[0]): e.seq for e in events}
    assert seq_of[("http_send", "nexus")] < seq_of[("http_serve", "sled-1")]
    assert seq_of[("http_served", "sled-1")] < seq_of[("http_end", "nexus")]
    assert seq_of[("http_send", "sled-1")] < seq_of[("http_serve", "hypervisor")]
    ts = [e.t for e in events]
    assert ts == sorted(ts)
    assert merged.statistics.clamped > 0
    (aserve,) = by_kind(events, "http_serve", "sled-1/")
    assert aserve.cause == seq_of[("http_send", "nexus")]


def test_a_request_from_outside_the_merged_traces_stays_unlinked() -> None:
    _nexus, agent, prop = three_processes()
    merged = merge_traces([agent.source(), prop.source()])  # Nexus's trace is missing
    st = merged.statistics
    assert (st.links, st.unmatched) == (1, 1)
    (aserve,) = by_kind(merged.events, "http_serve", "sled-1/")
    assert aserve.cause is None and aserve.peer == "127.0.0.1:9"


def test_unanchored_traces_keep_their_times_and_are_counted() -> None:
    nexus, agent, prop = three_processes()
    bare = msgspec.structs.replace(prop.header, started_at=None, clock_at_start=None)
    merged = merge_traces([nexus.source(), prop.source(bare)])
    assert merged.statistics.unanchored == 1
    prop_times = [e.t for e in merged.events if e.actor.startswith("hypervisor/")]
    assert prop_times == pytest.approx([1.005 + prop.origin, 1.006 + prop.origin])  # not moved
    # Causal order holds even when an unanchored clock disagrees (the agent's clock
    # reads ~11 s, Nexus's ~50001 s): its events wait for the request that caused them.
    bare = msgspec.structs.replace(agent.header, started_at=None, clock_at_start=None)
    merged = merge_traces([nexus.source(), agent.source(bare)])
    kinds = [(e.kind, e.actor.split("/")[0]) for e in merged.events]
    assert kinds.index(("http_send", "nexus")) < kinds.index(("http_serve", "sled-1"))
    assert [e.t for e in merged.events] == sorted(e.t for e in merged.events)


def test_ids_naming_no_event_get_numbers_of_their_own() -> None:
    a = Proc("a", origin=0.0)
    # A flight-recorder dump that lost its start: a handle and reply of an ask sent
    # before the first event kept (msg_id 7 names nothing here).
    a.at(0.1).handle("x", 7, 7, None)
    a.at(0.2).reply("x", None, 7, 7, None)
    b = Proc("a", origin=0.0)  # the same process name twice: made unique
    b.at(0.15).handle("x", 7, 7, None)
    merged = merge_traces([a.source(), b.source()])
    assert merged.processes == ["a", "a#2"]
    events = merged.events
    assert [e.seq for e in events] == [1, 2, 3]
    ids_a = {e.msg_id for e in events if e.actor == "a/x"} | {
        e.corr for e in events if e.actor == "a/x"
    }
    ids_a.discard(None)
    ids_b = {e.msg_id for e in events if e.actor == "a#2/x"}
    assert len(ids_a) == 1 and len(ids_b) == 1
    assert ids_a.isdisjoint(ids_b) and min(ids_a | ids_b) > 3
    assert merged.statistics.dangling == 2


def test_export_merges_several_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nexus, agent, prop = three_processes()
    paths = []
    for p in (nexus, agent, prop):
        path = tmp_path / f"{p.name}.jsonl"
        traces.write_trace(path, p.header, p.sink.events)
        paths.append(str(path))
    out = tmp_path / "merged.jsonl"
    otlp = tmp_path / "merged.otlp.json"
    perfetto = tmp_path / "merged.perfetto.json"
    argv = ["export", *paths, "--jsonl", str(out), "--otlp", str(otlp), "--perfetto", str(perfetto)]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "merged 3 traces (nexus, sled-1, hypervisor): 12 events, 2 cross-process links" in said
    tf = traces.read_trace(out)
    assert not tf.errors and len(tf.events) == 12
    assert tf.header.process == "nexus+sled-1+hypervisor"
    (pserve,) = by_kind(tf.events, "http_serve", "hypervisor/")
    assert pserve.cause is not None and tf.events[pserve.cause - 1].kind == "http_send"
    # The OTLP spans of the HTTP requests carry the W3C ids: one trace in a collector.
    doc = msgspec.json.decode(otlp.read_bytes())
    spans = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    http = {s["spanId"]: s for s in spans if s["kind"] in (2, 3)}  # SERVER, CLIENT
    assert set(http) == {S_NEXUS, S_AGENT, S_RUNNER, S_PROP}
    assert {s["traceId"] for s in http.values()} == {T1}
    assert (http[S_NEXUS]["kind"], http[S_AGENT]["kind"]) == (3, 2)
    assert "parentSpanId" not in http[S_NEXUS]
    assert http[S_AGENT]["parentSpanId"] == S_NEXUS
    assert http[S_PROP]["parentSpanId"] == S_RUNNER
    assert http[S_RUNNER]["parentSpanId"] == S_AGENT
    # The ask the sled agent's handler made is a child of its server span: same trace.
    (ask,) = [s for s in spans if s["name"] == "_PutState send"]
    assert (ask["traceId"], ask["parentSpanId"]) == (T1, S_AGENT)
    attrs = {a["key"]: a["value"] for a in http[S_PROP]["attributes"]}
    assert attrs["http.response.status_code"] == {"intValue": "204"}
    # Perfetto: an arrow (flow) from each request sent to the process serving it.
    te = msgspec.json.decode(perfetto.read_bytes())["traceEvents"]
    flows = {}
    for e in te:
        if e.get("cat") == "http" and e["ph"] in ("s", "f"):
            flows.setdefault(e["id"], {})[e["ph"]] = e["name"]
    assert sorted(f["s"] for f in flows.values()) == ["PUT /instance/state", "PUT /vmms/v1/state"]
    assert all(f["s"] == f["f"] for f in flows.values())


def test_view_and_export_refuse_a_bad_file_among_several(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nexus, _agent, _prop = three_processes()
    good = tmp_path / "nexus.jsonl"
    traces.write_trace(good, nexus.header, nexus.sink.events)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("hello\n")
    assert main(["export", str(good), str(bad), "--jsonl", str(tmp_path / "o.jsonl")]) == 2
    assert f"{bad} is not a trioxide trace" in capsys.readouterr().err
    assert main(["view", str(good), str(tmp_path / "missing.jsonl")]) == 2
    assert "no such trace file" in capsys.readouterr().err


def test_otel_sink_gives_http_spans_their_w3c_ids() -> None:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    from opentelemetry.trace import SpanKind, StatusCode

    spans = []
    for proc in three_processes():
        exporter = in_memory.InMemorySpanExporter()
        provider = sdk_trace.TracerProvider(id_generator=traces.otel.W3CIds())
        provider.add_span_processor(export.SimpleSpanProcessor(exporter))
        sink = traces.otel.OtelSink(provider.get_tracer("test"), epoch_ns=10**18)
        for e in proc.sink.events:
            sink.write(e)
        sink.close()
        spans += exporter.get_finished_spans()
    http = {
        f"{s.context.span_id:016x}": s
        for s in spans
        if s.kind in (SpanKind.CLIENT, SpanKind.SERVER)
    }
    assert set(http) == {S_NEXUS, S_AGENT, S_RUNNER, S_PROP}
    assert {f"{s.context.trace_id:032x}" for s in http.values()} == {T1}
    assert http[S_NEXUS].parent is None and http[S_NEXUS].kind is SpanKind.CLIENT
    assert f"{http[S_AGENT].parent.span_id:016x}" == S_NEXUS
    assert f"{http[S_RUNNER].parent.span_id:016x}" == S_AGENT
    assert f"{http[S_PROP].parent.span_id:016x}" == S_RUNNER
    assert http[S_PROP].attributes["http.response.status_code"] == 204
    assert http[S_PROP].status.status_code is not StatusCode.ERROR
    # The handler's ask is a child of the sled agent's server span.
    (ask,) = [s for s in spans if s.kind is SpanKind.PRODUCER]
    assert f"{ask.context.trace_id:032x}" == T1 and f"{ask.parent.span_id:016x}" == S_AGENT


def test_two_processes_of_one_name_are_told_apart_by_their_files(tmp_path: Path) -> None:
    """A hypervisor restarted after ``kill -9`` writes a second file with the same header
    ``process``: the merge names each process after its file, not ``hypervisor#2``."""
    when = datetime.fromtimestamp(WALL0, UTC).isoformat()
    header = traces.TraceHeader(process="hypervisor", started_at=when, clock_at_start=0.0)
    paths = []
    for stem in ("hypervisor", "hypervisor-2"):
        path = tmp_path / f"{stem}.jsonl"
        traces.write_trace(path, header, [traces.TraceEvent(1, 0.5, "start", "/hv")])
        paths.append(path)
    merged = traces.merge_files(paths)
    assert merged.processes == ["hypervisor", "hypervisor-2"]
    assert sorted(e.actor for e in merged.events) == ["hypervisor-2//hv", "hypervisor//hv"]
