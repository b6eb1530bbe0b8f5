"""The ``traces`` package: sinks, tracer, trace files, follow mode, and a traced runtime run."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from trio.testing import MockClock

from trioxide import runtime, traces

from .conftest import Phoenix, run_traced_scenario

# -- helpers ----------------------------------------------------------------------------


def ev(seq: int, kind: str = "send", actor: str = "a", **kw: Any) -> traces.TraceEvent:
    return traces.TraceEvent(seq, float(seq) / 4, kind, actor, **kw)


def line(event: traces.TraceEvent) -> bytes:
    return msgspec.json.encode(event) + b"\n"


HEADER = traces.TraceHeader(
    seed=42,
    trio_version=trio.__version__,
    started_at="2024-01-01T00:00:00Z",
    command=["trioxide", "run", "--seed", "42"],
)


class Ping(msgspec.Struct, frozen=True):
    n: int
    secret: str = "hunter2"


# -- MemorySink -------------------------------------------------------------------------


def test_memory_sink_is_a_bounded_ring_counting_drops() -> None:
    sink = traces.MemorySink(maxlen=3)
    events = [ev(i) for i in range(1, 6)]
    for e in events[:3]:
        sink.write(e)
    assert sink.dropped == 0 and len(sink) == 3
    for e in events[3:]:
        sink.write(e)
    assert sink.events == events[2:]  # the newest maxlen, oldest first
    assert list(sink) == events[2:]
    assert sink.dropped == 2 and sink.written == 5
    assert sink.statistics() == traces.SinkStatistics(written=5, dropped=2, buffered=3)
    sink.clear()
    assert len(sink) == 0 and sink.events == []
    assert sink.dropped == 2  # clearing is not dropping


def test_memory_sink_of_kind_and_snapshot() -> None:
    sink = traces.MemorySink()
    sink.write(ev(1, "send"))
    sink.write(ev(2, "receive"))
    sink.write(ev(3, "send"))
    assert [e.seq for e in sink.of_kind("send")] == [1, 3]
    assert [e.seq for e in sink.of_kind("send", "receive")] == [1, 2, 3]
    snapshot = sink.events
    sink.write(ev(4))
    assert len(snapshot) == 3  # a copy, not a live view


@pytest.mark.parametrize("maxlen", [0, -1])
def test_memory_sink_rejects_a_non_positive_bound(maxlen: int) -> None:
    with pytest.raises(ValueError):
        traces.MemorySink(maxlen=maxlen)


# -- Tracer -----------------------------------------------------------------------------


async def test_tracer_seq_is_monotonic_and_t_is_the_trio_clock(autojump_clock: MockClock) -> None:
    a, b = traces.MemorySink(), traces.MemorySink()
    tracer = traces.Tracer(a, b)
    assert tracer.seq == 0 and tracer.sinks == (a, b)
    for i in range(5):
        await trio.sleep(0.5)
        tracer.send("x", None, None, False, Ping(i))
    tracer.flush()  # (a run of sends is written when it stops growing)
    assert [e.seq for e in a.events] == [1, 2, 3, 4, 5]
    assert tracer.seq == 5
    assert [e.t for e in a.events] == [0.5, 1.0, 1.5, 2.0, 2.5]  # virtual time
    assert a.events == b.events  # fan-out: every sink gets every event


def test_tracer_custom_clock_and_fields() -> None:
    ticks = iter([10.0, 20.0])
    sink = traces.MemorySink()
    tracer = traces.Tracer(sink, clock=lambda: next(ticks))
    tracer.reply("srv", "cli", 7, 3, None)
    tracer.stop("srv", ValueError("x"))
    first, second = sink.events
    assert first == traces.TraceEvent(
        1, 10.0, "reply", "srv", peer="cli", cause=7, corr=3, outcome="ok"
    )
    assert second == traces.TraceEvent(
        2, 20.0, "stop", "srv", detail="ValueError('x')", outcome="error"
    )


def test_tracer_payloads_off_by_default() -> None:
    sink = traces.MemorySink()
    traces.Tracer(sink, clock=lambda: 0.0).send("a", None, None, False, Ping(1))
    (e,) = sink.events
    assert e.msg_type == "Ping" and len(e.payload) == 0


def test_tracer_payloads_on() -> None:
    sink = traces.MemorySink()
    traces.Tracer(sink, payloads=True, clock=lambda: 0.0).send("a", None, None, False, Ping(1))
    (e,) = sink.events
    assert len(e.payload) > 0
    assert msgspec.json.decode(e.payload, type=Ping) == Ping(1)


def test_tracer_redact_replaces_or_removes_the_payload() -> None:
    sink = traces.MemorySink()
    seen: list[Any] = []

    def redact(msg: Any) -> Any:
        seen.append(msg)
        if isinstance(msg, Ping) and msg.n < 0:
            return None  # record no payload at all
        return msgspec.structs.replace(msg, secret="***")

    tracer = traces.Tracer(sink, payloads=True, redact=redact, clock=lambda: 0.0)
    tracer.send("a", None, None, False, Ping(1))
    tracer.send("a", None, None, False, Ping(-1))
    tracer.stop("a", "done")  # no message: redact not called
    kept, removed, _ = sink.events
    assert seen == [Ping(1), Ping(-1)]
    assert len(kept.payload) > 0
    assert msgspec.json.decode(kept.payload) == {"n": 1, "secret": "***"}
    assert b"hunter2" not in bytes(kept.payload)
    assert len(removed.payload) == 0
    assert removed.msg_type == "Ping"  # the type of the original message


def test_tracer_redact_is_not_called_without_payloads() -> None:
    def redact(msg: Any) -> Any:
        raise AssertionError("redact called although payloads are off")

    sink = traces.MemorySink()
    traces.Tracer(sink, redact=redact, clock=lambda: 0.0).send("a", None, None, False, Ping(1))
    assert len(sink.events[0].payload) == 0


def test_tracer_payload_falls_back_to_repr() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    sink = traces.MemorySink()
    traces.Tracer(sink, payloads=True, clock=lambda: 0.0).send("a", None, None, False, Opaque())
    (e,) = sink.events
    assert e.msg_type == "Opaque"
    assert len(e.payload) > 0 and msgspec.json.decode(e.payload) == "<opaque>"


def test_tracer_close_closes_every_sink(tmp_path: Path) -> None:
    mem = traces.MemorySink()
    file_sink = traces.JsonlFileSink(tmp_path / "t.jsonl")
    tracer = traces.Tracer(mem, file_sink, clock=lambda: 0.0)
    tracer.start("a")
    tracer.close()
    assert traces.read_trace(tmp_path / "t.jsonl").events == mem.events
    tracer.stop("a", "late")  # after close: counted as dropped, never raised
    assert file_sink.dropped == 1


def test_every_documented_kind_has_a_description() -> None:
    expected = {
        "spawn",
        "start",
        "stop",
        "fail",
        "restart",
        "send",
        "admit",
        "unhandled",
        "receive",
        "handle",
        "reply",
        "drop",
        "timeout",
        "cancel",
        "task_start",
        "task_end",
        "watch_set",
    }
    assert expected <= set(traces.KINDS)
    assert all(isinstance(v, str) and v for v in traces.KINDS.values())


# -- JSONL files ------------------------------------------------------------------------


def sample_events() -> list[traces.TraceEvent]:
    return [
        traces.TraceEvent(1, 0.0, "spawn", "sled", detail="Sled"),
        traces.TraceEvent(2, 0.125, "send", "sled/im", "sled", 1, None, 1, "Ping"),
        traces.TraceEvent(3, 1e-9, "receive", "sled/im", msg_id=1, corr=1, msg_type="Ping"),
        traces.TraceEvent(4, 123456.789, "reply", "sled/im", "sled", None, 1, 1, detail="value"),
        traces.TraceEvent(5, 2.5, "watch_set", "sled", detail="state = 'ünïcödé ✓'"),
    ]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    events = sample_events()
    with traces.JsonlFileSink(path, HEADER, chunk_size=64) as sink:
        for e in events:
            sink.write(e)
    assert sink.statistics() == traces.SinkStatistics(written=5, dropped=0, buffered=0)
    tf = traces.read_trace(path)
    assert tf.header == HEADER
    assert tf.events == events
    assert tf.errors == []
    assert list(traces.iter_trace(path)) == events
    assert len(path.read_bytes().splitlines()) == 1 + len(events)


def test_jsonl_round_trip_with_payloads(tmp_path: Path) -> None:
    path = tmp_path / "payloads.jsonl"
    raw = msgspec.Raw(msgspec.json.encode(Ping(3)))
    events = [traces.TraceEvent(1, 0.5, "send", "a", msg_id=1, msg_type="Ping", payload=raw)]
    with traces.JsonlFileSink(path, HEADER) as sink:
        for e in events:
            sink.write(e)
    tf = traces.read_trace(path)
    assert tf.errors == []
    assert tf.events == events


def test_default_header_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with traces.JsonlFileSink(path) as sink:
        sink.write(ev(1))
    tf = traces.read_trace(path)
    assert tf.header.trioxide_trace == traces.SCHEMA_VERSION
    assert tf.events == [ev(1)]


def test_header_line_records_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    traces.JsonlFileSink(path, HEADER).close()
    first = msgspec.json.decode(path.read_bytes().splitlines()[0])
    assert first["trioxide_trace"] == traces.SCHEMA_VERSION


def test_corrupted_lines_are_reported_with_their_line_number_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "damaged.jsonl"
    events = sample_events()
    with traces.JsonlFileSink(path, HEADER) as sink:
        for e in events:
            sink.write(e)
    lines = path.read_bytes().splitlines(keepends=True)
    # line 1 header, 2-6 events; damage line 3, add a blank line and a torn last line
    lines[2] = b'{"seq": 2, "t": oops\n'
    lines.insert(4, b"\n")
    lines.append(line(ev(6))[:15])  # a writer died mid-line (no newline)
    path.write_bytes(b"".join(lines))
    tf = traces.read_trace(path)
    assert tf.header == HEADER
    assert tf.events == [events[0], *events[2:]]
    assert [err.line for err in tf.errors] == [3, 8]  # 1-based; the blank line 5 is no error
    assert all(err.error for err in tf.errors)
    errors: list[traces.LineError] = []
    assert list(traces.iter_trace(path, errors)) == tf.events
    assert errors == tf.errors


def test_event_with_wrong_field_type_is_a_line_error(tmp_path: Path) -> None:
    path = tmp_path / "typed.jsonl"
    path.write_bytes(
        msgspec.json.encode(HEADER)
        + b"\n"
        + b'{"seq": "one", "t": 0.0, "kind": "send", "actor": "a"}\n'
        + line(ev(2))
    )
    tf = traces.read_trace(path)
    assert tf.events == [ev(2)]
    assert [e.line for e in tf.errors] == [2]


def test_unusable_header_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"not json\n" + line(ev(1)))
    with pytest.raises(ValueError, match="line 1"):
        traces.read_trace(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.jsonl"
    header = msgspec.json.encode({"trioxide_trace": traces.SCHEMA_VERSION + 1})
    path.write_bytes(header + b"\n" + line(ev(1)))
    with pytest.raises(ValueError, match="newer"):
        traces.read_trace(path)


def test_file_sink_counts_events_dropped_when_the_buffer_is_full(tmp_path: Path) -> None:
    path = tmp_path / "stalled.jsonl"
    events = [traces.TraceEvent(i, 0.0, "send", "a") for i in range(1, 6)]
    one = len(line(events[0]))  # every event encodes to the same length
    sink = traces.JsonlFileSink(path, chunk_size=1 << 30, max_buffer=3 * one)
    for e in events:
        sink.write(e)
    assert sink.dropped == 2 and sink.written == 3
    sink.close()
    assert [e.seq for e in traces.read_trace(path).events] == [1, 2, 3]
    sink.write(ev(9))  # after close: dropped, never raised
    assert sink.dropped == 3


def test_file_sink_writes_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "chunks.jsonl"
    sink = traces.JsonlFileSink(path, chunk_size=1)  # every event goes straight out
    sink.write(ev(1))
    assert sink.statistics().buffered == 0
    sink.close()


def test_flushed_events_are_visible_to_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    sink = traces.JsonlFileSink(path, HEADER)
    try:
        sink.write(ev(1))
        sink.flush()
        data = path.read_bytes()
        assert data.count(b"\n") == 2, data
    finally:
        sink.close()


# -- follow mode ------------------------------------------------------------------------


async def wait_until(pred: Any) -> None:
    """Poll in virtual time. (A deadline would be jumped to while the follower waits
    for its file-reading thread, so bound the number of polls instead.)"""
    for _ in range(100_000):
        if pred():
            return
        await trio.sleep(0.25)
    raise AssertionError("condition never became true")


async def test_follow_trace_picks_up_appended_events(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    path = tmp_path / "live.jsonl"
    events = [ev(i, detail=f"event {i}") for i in range(1, 7)]
    path.write_bytes(msgspec.json.encode(HEADER) + b"\n" + line(events[0]) + line(events[1]))

    def append(data: bytes) -> None:
        with open(path, "ab") as f:
            f.write(data)

    got: list[traces.TraceEvent] = []
    errors: list[traces.LineError] = []

    async def follow() -> None:
        async for e in traces.follow_trace(path, poll_interval=0.1, errors=errors):
            got.append(e)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        await wait_until(lambda: len(got) == 2)
        append(line(events[2]) + line(events[3]))  # lines 4, 5
        await wait_until(lambda: len(got) == 4)
        # A partial line (writer mid-flush) is held back until its newline arrives.
        torn = line(events[4])
        append(torn[:12])
        await trio.sleep(2.0)
        assert len(got) == 4
        append(torn[12:] + b"garbage\n\n" + line(events[5]))  # lines 6, 7 (bad), 8, 9
        await wait_until(lambda: len(got) == 6)
        nursery.cancel_scope.cancel()
    assert got == events
    assert [err.line for err in errors] == [7]


# -- a traced runtime run (the scenario is in conftest.py) ---------------------------

ALL_KINDS = {
    "spawn",
    "start",
    "send",
    "receive",
    "handle",
    "reply",
    "stop",
    "admit",
    "unhandled",
    "timeout",
    "cancel",
    "drop",
    "task_start",
    "task_end",
    "watch_set",
    "fail",
    "restart",
}


async def test_runtime_trace_file_has_every_kind(tmp_path: Path, autojump_clock: MockClock) -> None:
    path = tmp_path / "run.jsonl"
    mem = traces.MemorySink()
    tracer = traces.Tracer(traces.JsonlFileSink(path, HEADER), mem)
    facts = await run_traced_scenario(tracer)
    tracer.close()
    assert facts == {"kick": 4, "timeout_at": 1.0, "phoenix_restarts": 1}

    tf = traces.read_trace(path)
    assert tf.header == HEADER and tf.errors == []
    assert tf.events == mem.events  # the file holds exactly what was emitted
    events = tf.events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(a.t <= b.t for a, b in itertools.pairwise(events))
    kinds = {e.kind for e in events}
    assert ALL_KINDS <= kinds, f"missing: {ALL_KINDS - kinds}"
    assert kinds <= set(traces.KINDS), f"undocumented: {kinds - set(traces.KINDS)}"

    def one(kind: str, **match: Any) -> traces.TraceEvent:
        found = [
            e
            for e in events
            if e.kind == kind and all(getattr(e, k) == v for k, v in match.items())
        ]
        assert len(found) == 1, (kind, match, found)
        return found[0]

    # spawn/start/stop for each actor; stop details are the reasons.
    for name in ("worker", "boss", "phoenix"):
        assert one("spawn", actor=name).detail in {"Worker", "Boss", "Phoenix"}
    assert one("stop", actor="worker").detail == "enough"
    assert one("stop", actor="boss").detail == "runtime exit"
    assert len([e for e in events if e.kind == "start" and e.actor == "phoenix"]) == 2
    assert one("fail", actor="phoenix").detail == repr(RuntimeError("phoenix burns"))
    assert one("restart", actor="phoenix").detail == "1"

    # Causality: the sends made by Boss while handling Kick carry Kick's msg_id as cause.
    kick = one("send", actor="boss", msg_type="Kick")
    assert kick.peer is None and kick.cause is None and kick.corr == kick.msg_id
    tell1 = one("send", actor="worker", peer="boss", corr=None)
    (ask2,) = (  # msg_ids are the sends' seqs: increasing, not consecutive
        e
        for e in events
        if e.kind == "send" and e.peer == "boss" and e.corr is not None and e.actor == "worker"
    )
    assert tell1.cause == kick.msg_id and ask2.cause == kick.msg_id
    assert tell1.msg_type == "Ask2" and ask2.msg_type == "Ask2"
    assert ask2.corr == ask2.msg_id

    # Ask/reply pairing: corr of a reply is the ask's msg_id; peer is the asker.
    reply2 = one("reply", corr=ask2.msg_id)
    assert reply2.actor == "worker" and reply2.peer == "boss" and reply2.outcome == "ok"
    assert reply2.cause == ask2.msg_id
    kick_reply = one("reply", corr=kick.msg_id)
    assert kick_reply.actor == "boss" and kick_reply.peer is None
    assert one("handle", msg_id=ask2.msg_id).corr == ask2.msg_id
    assert one("handle", msg_id=tell1.msg_id).corr is None

    # A named Watch set inside a handler: the setter and the message being handled.
    sets = [e for e in events if e.kind == "watch_set"]
    assert [e.detail for e in sets] == ["pings = 1", "pings = 2"]
    assert [e.cause for e in sets] == [tell1.msg_id, ask2.msg_id]
    assert {e.actor for e in sets} == {"worker"}

    # Admission and unhandled refusals are traced with the message type.
    admit = one("admit", actor="worker")
    assert admit.msg_type == "Refuse" and admit.detail.startswith("reject: ")
    assert one("unhandled", actor="worker").msg_type == "Stranger"

    # Timeout of a running handler: traced at exactly its deadline; the handler runs on
    # until stop(grace=0) cancels it.
    slow10 = min(
        (e for e in events if e.kind == "send" and e.msg_type == "Slow" and e.corr),
        key=lambda e: e.seq,
    )
    timeout = one("timeout", corr=slow10.msg_id)
    assert timeout.t == slow10.t + 1.0
    assert one("receive", msg_id=slow10.msg_id).seq < timeout.seq
    stop_cancel = one("handle", msg_id=slow10.msg_id)
    assert stop_cancel.outcome == "cancelled" and stop_cancel.detail == "Cancelled()"

    # The ask withdrawn while queued: a cancel event, never received.
    withdrawn = one("cancel", detail="cancelled")
    assert withdrawn.t == slow10.t + 2.0
    assert not [e for e in events if e.kind == "receive" and e.msg_id == withdrawn.msg_id]

    # The two queued tells were drained at the stop.
    drops = [e for e in events if e.kind == "drop"]
    assert len(drops) == 2 and {e.detail for e in drops} == {"drained"}
    assert all(e.actor == "worker" and e.corr is None for e in drops)

    # The child task of each worker incarnation.
    assert one("task_start", actor="worker").detail == "helper"
    assert one("task_end", actor="worker").detail == "helper: ok"


async def test_tracing_off_changes_nothing(autojump_clock: MockClock) -> None:
    # The same scenario without a tracer behaves identically (tracing is observation only).
    facts_off = await run_traced_scenario(None)  # type: ignore[arg-type]
    facts_on = await run_traced_scenario(traces.Tracer(traces.MemorySink()))
    assert facts_off == facts_on


async def test_leaving_open_runtime_flushes_the_trace_file(
    tmp_path: Path, autojump_clock: MockClock
) -> None:
    path = tmp_path / "run.jsonl"
    tracer = traces.Tracer(traces.JsonlFileSink(path, HEADER))
    try:
        async with runtime.open_runtime(tracer=tracer) as rt:
            await rt.spawn(Phoenix, name="phoenix")
        assert [e.kind for e in traces.read_trace(path).events] == ["spawn", "start", "stop"]
    finally:
        tracer.close()


def test_a_schema_1_file_is_read_in_todays_vocabulary(tmp_path: Path) -> None:
    """Version 1 spelled the outcome in ``detail``; the reader upgrades it (outcome field,
    and a handler cancelled by stop becomes a ``handle`` with outcome ``cancelled``)."""
    path = tmp_path / "v1.jsonl"
    lines = [
        '{"trioxide_trace":1}',
        '{"seq":1,"t":0.0,"kind":"handle","actor":"a","msg_id":1,"detail":"ok"}',
        '{"seq":2,"t":0.0,"kind":"handle","actor":"a","msg_id":2,"detail":"error: KeyError(1)"}',
        '{"seq":3,"t":0.0,"kind":"reply","actor":"a","corr":2,"detail":"value"}',
        '{"seq":4,"t":0.0,"kind":"cancel","actor":"a","msg_id":3,"detail":"error: Cancelled()"}',
        '{"seq":5,"t":0.0,"kind":"cancel","actor":"a","msg_id":4,"detail":"cancelled"}',
        '{"seq":6,"t":0.0,"kind":"task_end","actor":"a","detail":"pub: ok"}',
        '{"seq":7,"t":0.0,"kind":"timeout","actor":"a","msg_id":5,"detail":"timeout"}',
    ]
    path.write_text("\n".join(lines) + "\n")
    got = [(e.kind, e.outcome, e.detail) for e in traces.read_trace(path).events]
    assert got == [
        ("handle", "ok", None),
        ("handle", "error", "KeyError(1)"),
        ("reply", "ok", None),
        ("handle", "cancelled", "Cancelled()"),
        ("cancel", "cancelled", "cancelled"),
        ("task_end", "ok", "pub: ok"),
        ("timeout", "timeout", "timeout"),
    ]
