"""``traces.export``: Perfetto (Chrome Trace Event Format) and OTLP/JSON exports of real traces."""

from __future__ import annotations

import base64
import json
import math
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from trioxide import runtime, traces
from trioxide.cli import main as cli_main
from trioxide.traces.export import (
    OUTSIDE_TRACK,
    REPLY_FLOW_ID_BASE,
    to_otlp,
    to_perfetto,
    write_otlp,
    write_perfetto,
)

from .conftest import Ask2, Boss, Kick, Slow

# -- a small scenario exercising every shape of handler --------------------------------
# (Ask2, Kick, Slow and Boss are shared with test_traces: see conftest.py)


class Boom(msgspec.Struct, frozen=True):
    pass


class Pick(msgspec.Struct, frozen=True):
    pass


class Urgent(msgspec.Struct, frozen=True):
    n: int


class Activate(msgspec.Struct, frozen=True):
    pass


class Halt(msgspec.Struct, frozen=True):
    pass


class Worker(runtime.Actor):
    async def handle(self, msg: Ask2 | Boom | Slow | Pick | Urgent | Activate | Halt) -> Any:
        match msg:
            case Ask2(n):
                return n * 2
            case Boom():
                raise ValueError("boom")
            case Slow(seconds):
                await trio.sleep(seconds)
            case Pick():
                got = await self.receive(Urgent)  # a selective receive
                self.reply(got, "picked")
                return f"picked u{got.n}"
            case Activate():
                # Serves Ask2 (nested handler slices) until Halt interrupts it.
                result = await self.serve_until(trio.sleep, 100.0, serve=(Ask2,), interrupt=(Halt,))
                if isinstance(result, runtime.Interrupted):
                    self.reply(result.msg, "halted")
                return "interrupted"
        return None


async def scenario(tracer: traces.Tracer) -> None:
    async with runtime.open_runtime(tracer=tracer, name="root") as rt:
        worker = await rt.spawn(Worker, name="worker")
        boss = await rt.spawn(Boss, worker, name="boss")
        assert await boss.ask(Kick()) == 4  # a causal chain: Kick -> Ask2, Ask2 (actor ask)
        with pytest.raises(ValueError, match="boom"):
            await worker.ask(Boom())  # handle "error: ..."
        out: dict[str, Any] = {}

        async def ask(key: str, msg: Any) -> None:
            out[key] = await worker.ask(msg)

        async with trio.open_nursery() as n:
            n.start_soon(ask, "pick", Pick())
            await wait_all_tasks_blocked()
            n.start_soon(ask, "urgent", Urgent(7))
        async with trio.open_nursery() as n:
            n.start_soon(ask, "activate", Activate())
            await trio.sleep(1.0)
            out["served"] = await worker.ask(Ask2(5))
            await trio.sleep(1.0)
            out["halt"] = await worker.ask(Halt())
        assert out == {
            "pick": "picked u7",
            "urgent": "picked",
            "served": 10,
            "halt": "halted",
            "activate": "interrupted",
        }
        with pytest.raises(runtime.AskTimeout):
            await worker.ask(Slow(10.0), timeout=1.0)  # timeout while running
        with trio.move_on_after(1.0):
            await worker.ask(Slow(0.0))  # queued behind Slow(10): cancelled (withdrawn)
        await worker.tell(Slow(0.0))
        await worker.tell(Slow(0.0))
        await worker.stop("enough", grace=0)  # running handler cancelled, queue drained


HEADER = traces.TraceHeader(
    seed=7,
    trio_version=trio.__version__,
    started_at="2024-05-01T12:00:00+00:00",
    command=["pytest", "test_export"],
)
STARTED_NS = 1_714_564_800 * 10**9  # HEADER.started_at in Unix nanoseconds


@pytest.fixture(scope="module")
def scenario_events() -> list[traces.TraceEvent]:
    sink = traces.MemorySink()
    tracer = traces.Tracer(sink, payloads=True)
    trio.run(scenario, tracer, clock=MockClock(autojump_threshold=0))
    events = sink.events
    kinds = {e.kind for e in events}
    needed = {"send", "receive", "handle", "reply", "timeout", "cancel", "drop", "spawn"}
    assert needed <= kinds, needed - kinds
    return events


@pytest.fixture(scope="module")
def demo_trace(tmp_path_factory: pytest.TempPathFactory) -> traces.TraceFile:
    path = tmp_path_factory.mktemp("demo") / "demo.jsonl"
    assert cli_main(["demo", "--vmms", "8", "--trace", str(path)]) == 0
    tf = traces.read_trace(path)
    assert tf.errors == [] and len(tf.events) > 1000
    return tf


def one(events: list[traces.TraceEvent], kind: str, **match: Any) -> traces.TraceEvent:
    found = [
        e for e in events if e.kind == kind and all(getattr(e, k) == v for k, v in match.items())
    ]
    assert len(found) == 1, (kind, match, found)
    return found[0]


def mid(event: traces.TraceEvent) -> int:
    assert event.msg_id is not None, event
    return event.msg_id


# -- Perfetto: format rules -------------------------------------------------------------

PHASES = {"X", "i", "s", "f", "M"}


def check_perfetto(doc: dict[str, Any]) -> None:
    """The rules a Chrome Trace Event Format file must follow for Perfetto and
    chrome://tracing to import every event (and draw every flow arrow)."""
    assert set(doc) == {"traceEvents", "displayTimeUnit", "otherData"}
    assert doc["displayTimeUnit"] == "ms"
    json.dumps(doc, allow_nan=False)  # no NaN / Infinity anywhere
    events = doc["traceEvents"]
    assert isinstance(events, list) and events
    thread_names: dict[int, str] = {}
    sort_index: dict[int, int] = {}
    used_tids: set[int] = set()
    slices: dict[int, list[tuple[float, float]]] = defaultdict(list)
    anchors: set[tuple[int, float, str]] = set()  # (tid, ts, cat) of slices and instants
    flows: dict[str, dict[tuple[str, int], dict[str, Any]]] = {"s": {}, "f": {}}
    for e in events:
        for field in ("ph", "ts", "pid", "tid"):
            assert field in e, (field, e)
        assert e["ph"] in PHASES, e
        assert isinstance(e["name"], str) and e["name"], e
        assert isinstance(e["pid"], int) and e["pid"] == 1
        assert isinstance(e["tid"], int) and not isinstance(e["tid"], bool)
        assert isinstance(e["ts"], int | float) and math.isfinite(e["ts"]) and e["ts"] >= 0
        if "cat" in e:
            assert isinstance(e["cat"], str) and e["cat"]
        if "args" in e:
            assert isinstance(e["args"], dict)
        ph = e["ph"]
        if ph == "M":
            assert e["ts"] == 0
            if e["name"] == "thread_name":
                assert isinstance(e["args"]["name"], str) and e["args"]["name"]
                assert e["tid"] not in thread_names
                thread_names[e["tid"]] = e["args"]["name"]
            elif e["name"] == "thread_sort_index":
                sort_index[e["tid"]] = e["args"]["sort_index"]
            else:
                assert e["name"] == "process_name" and e["args"] == {"name": "trioxide"}
            continue
        used_tids.add(e["tid"])
        if ph == "X":
            assert isinstance(e["dur"], int | float) and math.isfinite(e["dur"])
            assert e["dur"] >= 1  # at least the 1 µs minimum, so it is visible
            slices[e["tid"]].append((e["ts"], e["ts"] + e["dur"]))
            anchors.add((e["tid"], e["ts"], e["cat"]))
        elif ph == "i":
            assert e["s"] == "t"
            anchors.add((e["tid"], e["ts"], e["cat"]))
        else:
            assert isinstance(e["id"], int) and isinstance(e["cat"], str)
            flow = (e["cat"], e["id"])
            assert flow not in flows[ph], f"two {ph!r} events for flow {flow}"
            flows[ph][flow] = e
            if ph == "f":
                assert e["bp"] == "e"
    # In timestamp order: no importer re-sorts, so a flow event stays after its anchor.
    stamps = [e["ts"] for e in events]
    assert stamps == sorted(stamps)
    # Every track is named, with distinct names, and sorted.
    assert used_tids <= set(thread_names), used_tids - set(thread_names)
    assert len(set(thread_names.values())) == len(thread_names)
    assert set(sort_index) == set(thread_names)
    # Flows are paired: one start and one finish per (cat, id), same name, forwards in time.
    assert set(flows["s"]) == set(flows["f"])
    for flow, begin in flows["s"].items():
        finish = flows["f"][flow]
        assert begin["name"] == finish["name"]
        assert begin["ts"] <= finish["ts"]
        # Flows bind to events at their exact (tid, ts, cat), as Chrome DevTools requires:
        # the send instant and the handler slice (or selective-receive instant); the reply
        # instant and the "reply received" instant.
        assert (begin["tid"], begin["ts"], flow[0]) in anchors
        assert (finish["tid"], finish["ts"], flow[0]) in anchors
    # Complete events on one track nest properly (Perfetto drops partial overlaps).
    for tid, spans in slices.items():
        stack: list[float] = []
        for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= start:
                stack.pop()
            assert not stack or end <= stack[-1], f"tid {tid}: overlapping slices"
            stack.append(end)


def slices_by_msg(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Handler slices by message id (not the one-tick slices of single steps, whose args
    name their ``kind``)."""
    return {
        e["args"]["msg_id"]: e
        for e in doc["traceEvents"]
        if e["ph"] == "X" and e["cat"] == "msg" and "kind" not in e["args"]
    }


def tracks(doc: dict[str, Any]) -> dict[str, int]:
    return {e["args"]["name"]: e["tid"] for e in doc["traceEvents"] if e["name"] == "thread_name"}


def test_perfetto_scenario_follows_the_format(scenario_events: list[traces.TraceEvent]) -> None:
    check_perfetto(to_perfetto(scenario_events, header=HEADER))


def test_perfetto_demo_follows_the_format(demo_trace: traces.TraceFile) -> None:
    doc = to_perfetto(demo_trace.events, header=demo_trace.header)
    check_perfetto(doc)
    receives = [e for e in demo_trace.events if e.kind == "receive"]
    flows = [e for e in doc["traceEvents"] if e["ph"] == "s" and e["cat"] == "msg"]
    assert len(flows) == len(receives)  # every received message has its arrow
    assert {e.actor for e in demo_trace.events} <= set(tracks(doc))
    assert doc["otherData"]["seed"] == demo_trace.header.seed


def test_perfetto_tracks_are_actors_by_first_appearance(
    scenario_events: list[traces.TraceEvent],
) -> None:
    doc = to_perfetto(scenario_events)
    names = tracks(doc)
    first: list[str] = []
    for e in scenario_events:
        if e.kind == "send":  # drawn on the sender's track
            paths = [e.peer or OUTSIDE_TRACK, e.actor]
        elif e.kind == "reply" and e.peer is not None:  # an arrow to the asker's track
            paths = [e.actor, e.peer]
        else:
            paths = [e.actor]
        first += [path for path in paths if path not in first]
    assert list(names) == first
    assert list(names.values()) == list(range(1, len(first) + 1))
    assert {"worker", "boss", OUTSIDE_TRACK} <= set(names)
    sort_index = {
        e["tid"]: e["args"]["sort_index"]
        for e in doc["traceEvents"]
        if e["name"] == "thread_sort_index"
    }
    assert sort_index == {tid: tid for tid in names.values()}


def test_perfetto_slices_flows_and_instants(scenario_events: list[traces.TraceEvent]) -> None:
    evs = scenario_events
    doc = to_perfetto(evs, header=HEADER)
    tid = tracks(doc)
    by_msg = slices_by_msg(doc)
    te = doc["traceEvents"]

    # Kick is handled on boss's track; the Ask2s it sends start arrows there, inside it.
    kick = one(evs, "send", msg_type="Kick")
    kick_slice = by_msg[mid(kick)]
    assert kick_slice["tid"] == tid["boss"] and kick_slice["name"] == "Kick"
    assert kick_slice["args"]["outcome"] == "ok" and kick_slice["args"]["corr"] == kick.msg_id
    assert "detail" not in kick_slice["args"]
    assert kick_slice["args"]["payload"] == {}
    (ask2,) = (  # the ask Boss sent while handling Kick (msg_ids are seqs, not consecutive)
        e for e in evs if e.kind == "send" and e.msg_type == "Ask2" and e.corr and e.peer == "boss"
    )
    start = next(e for e in te if e["ph"] == "s" and e["cat"] == "msg" and e["id"] == ask2.msg_id)
    finish = next(e for e in te if e["ph"] == "f" and e["cat"] == "msg" and e["id"] == ask2.msg_id)
    assert start["tid"] == tid["boss"] and start["name"] == "Ask2"
    assert kick_slice["ts"] < start["ts"] < kick_slice["ts"] + kick_slice["dur"]
    ask2_slice = by_msg[mid(ask2)]
    assert finish["tid"] == tid["worker"] and finish["ts"] == ask2_slice["ts"]
    assert ask2_slice["args"]["payload"] == {"n": 2}
    assert ask2_slice["args"]["sender"] == "boss" and ask2_slice["args"]["cause"] == kick.msg_id
    send_tick = next(e for e in te if e["ph"] == "X" and e["args"].get("msg_id") == ask2.msg_id)
    assert send_tick["name"] == "send Ask2" and send_tick["tid"] == tid["boss"]
    assert send_tick["args"]["actor"] == "worker" and send_tick["args"]["peer"] == "boss"
    assert send_tick["ts"] == start["ts"] and send_tick["dur"] == 1

    # The reply to boss's ask is an arrow from worker's track to boss's.
    reply_id = REPLY_FLOW_ID_BASE + mid(ask2)
    rs = next(e for e in te if e["ph"] == "s" and e["cat"] == "reply" and e["id"] == reply_id)
    rf = next(e for e in te if e["ph"] == "f" and e["cat"] == "reply" and e["id"] == reply_id)
    assert rs["tid"] == tid["worker"] and rf["tid"] == tid["boss"]
    (received,) = (e for e in te if e["name"] == "reply received" and e["ts"] == rf["ts"])
    assert received["tid"] == tid["boss"] and received["args"]["replier"] == "worker"
    assert received["args"]["corr"] == ask2.msg_id and received["args"]["outcome"] == "ok"
    # ...but a reply to a task outside any actor has no arrow (there is no asker track).
    assert one(evs, "reply", corr=kick.msg_id).peer is None
    assert not any(e.get("id") == REPLY_FLOW_ID_BASE + mid(kick) for e in te)

    # A handler that raised is a red slice with the error.
    boom = by_msg[mid(one(evs, "send", msg_type="Boom"))]
    assert boom["args"]["outcome"] == "error"
    assert boom["args"]["detail"].startswith("ValueError('boom')")
    assert boom["cname"] == "terrible"

    # A selectively received message has no slice of its own: an instant in Pick's slice.
    urgent = one(evs, "send", msg_type="Urgent")
    pick = by_msg[mid(one(evs, "send", msg_type="Pick"))]
    assert urgent.msg_id not in by_msg
    taken = next(
        e
        for e in te
        if e["ph"] == "X"
        and e["args"].get("msg_id") == urgent.msg_id
        and e["cat"] == "msg"
        and e["args"]["kind"] == "receive"
    )
    assert taken["args"]["detail"] == "selective" and taken["tid"] == tid["worker"]
    assert pick["ts"] < taken["ts"] < pick["ts"] + pick["dur"]

    # serve_until: Ask2(5) is a slice nested in Activate's; Halt is taken as an interrupt.
    activate = by_msg[mid(one(evs, "send", msg_type="Activate"))]
    served = by_msg[
        next(mid(e) for e in evs if e.kind == "send" and bytes(e.payload) == b'{"n":5}')
    ]
    assert activate["ts"] < served["ts"]
    assert served["ts"] + served["dur"] <= activate["ts"] + activate["dur"]
    halt = one(evs, "receive", msg_type="Halt")
    assert halt.detail == "interrupt" and halt.msg_id not in by_msg

    # The handler cancelled by stop() ends there, drawn as a cancellation (not an error);
    # queued messages were dropped.
    (cancel,) = (e for e in evs if e.kind == "handle" and e.outcome == "cancelled")
    assert one(evs, "cancel", detail="cancelled").msg_id not in by_msg  # withdrawn, queued
    ended = by_msg[mid(cancel)]
    assert ended["args"]["outcome"] == "cancelled" and ended["args"]["duration_s"] > 0
    assert ended["cname"] == "grey"
    for drop in (e for e in evs if e.kind == "drop"):
        assert drop.msg_id not in by_msg
        assert any(e["ph"] == "i" and e["name"] == "drop Slow" for e in te)
    # A reply is a tick on the replier's track, its receipt one on the asker's.
    assert rs["ts"] == rf["ts"] and received["ph"] == "X" and received["dur"] == 1
    timeout = one(evs, "timeout")
    assert timeout.detail == "timeout while running"


def test_perfetto_time_axis(scenario_events: list[traces.TraceEvent]) -> None:
    """ts is t in µs, nudged at most 1 µs per step taken at the same instant."""
    doc = to_perfetto(scenario_events)
    steps = [e for e in doc["traceEvents"] if e["ph"] in {"X", "i"}]  # one per runtime step
    for e in steps:
        t_us = e["args"]["t"] * 1e6
        assert t_us - 1e-3 <= e["ts"] <= t_us + len(scenario_events)
    # One timeline point per runtime step (a reply's "received" anchor shares the reply's).
    own = [e for e in steps if e["name"] != "reply received"]
    assert (
        len({e["ts"] for e in own})
        == len(own)
        == len(scenario_events) - len([e for e in scenario_events if e.kind == "handle"])
    )
    # A handler that took virtual time lasts it: Activate served for 2 s until Halt.
    by_msg = slices_by_msg(doc)
    activate = next(s for s in by_msg.values() if s["name"] == "Activate")
    assert activate["dur"] == pytest.approx(2e6, abs=100)


def test_perfetto_and_otlp_of_cut_traces_stay_valid(
    scenario_events: list[traces.TraceEvent],
) -> None:
    """A ring buffer loses the start of a trace; a crash loses its end: handlers without a
    handle end with the trace, steps without their send or receive lose only the arrow."""
    n = len(scenario_events)
    for cut in range(1, n, 3):
        for part in (scenario_events[:cut], scenario_events[cut:]):
            check_perfetto(to_perfetto(part))
            check_otlp(to_otlp(part), part)
    first_receive = next(i for i, e in enumerate(scenario_events) if e.kind == "receive")
    head = scenario_events[: first_receive + 1]
    doc = to_perfetto(head)
    (unfinished,) = slices_by_msg(doc).values()
    assert unfinished["args"]["unfinished"] is True
    last = max(e["ts"] for e in doc["traceEvents"])
    assert unfinished["ts"] + unfinished["dur"] >= last
    (consumer,) = (s for s in spans_of(to_otlp(head)) if s["kind"] == 5)
    assert attrs(consumer)["trioxide.unfinished"] == {"boolValue": True}


def test_perfetto_of_no_events() -> None:
    doc = to_perfetto([])
    assert doc["traceEvents"] == [
        {
            "name": "process_name",
            "ph": "M",
            "ts": 0,
            "pid": 1,
            "tid": 0,
            "args": {"name": "trioxide"},
        }
    ]
    assert to_otlp([])["resourceSpans"][0]["scopeSpans"][0]["spans"] == []


# -- OTLP/JSON: structure and semantics -------------------------------------------------

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
UINT = re.compile(r"^(0|[1-9][0-9]*)$")
INT = re.compile(r"^-?(0|[1-9][0-9]*)$")


def spans_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    return spans


def attrs(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["key"]: a["value"] for a in item.get("attributes", [])}


def check_any_value(value: dict[str, Any]) -> None:
    assert len(value) == 1, value
    ((kind, v),) = value.items()
    if kind == "stringValue":
        assert isinstance(v, str)
    elif kind == "intValue":
        assert isinstance(v, str) and INT.match(v), v
    elif kind == "boolValue":
        assert isinstance(v, bool)
    elif kind == "doubleValue":
        assert isinstance(v, float) and math.isfinite(v)
    elif kind == "arrayValue":
        for item in v["values"]:
            check_any_value(item)
    else:
        raise AssertionError(f"unknown AnyValue {kind}")


def check_attributes(item: dict[str, Any]) -> None:
    keys = [a["key"] for a in item.get("attributes", [])]
    assert len(keys) == len(set(keys)), keys
    for a in item.get("attributes", []):
        assert set(a) == {"key", "value"} and isinstance(a["key"], str)
        check_any_value(a["value"])


def check_otlp(doc: dict[str, Any], events: list[traces.TraceEvent]) -> None:
    json.dumps(doc, allow_nan=False)
    assert list(doc) == ["resourceSpans"] and len(doc["resourceSpans"]) == 1
    rs = doc["resourceSpans"][0]
    check_attributes(rs["resource"])
    assert attrs(rs["resource"])["service.name"] == {"stringValue": "trioxide"}
    assert len(rs["scopeSpans"]) == 1 and rs["scopeSpans"][0]["scope"]["name"] == "trioxide"
    spans = spans_of(doc)
    by_id: dict[str, dict[str, Any]] = {}
    for s in spans:
        assert HEX32.match(s["traceId"]) and s["traceId"].strip("0")
        assert HEX16.match(s["spanId"]) and s["spanId"].strip("0")
        assert s["spanId"] not in by_id, "span ids must be unique"
        by_id[s["spanId"]] = s
        assert isinstance(s["name"], str) and s["kind"] in (4, 5)
        assert UINT.match(s["startTimeUnixNano"]) and UINT.match(s["endTimeUnixNano"])
        assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"])
        check_attributes(s)
        a = attrs(s)
        assert a["messaging.system"] == {"stringValue": "trioxide"}
        op = "send" if s["kind"] == 4 else "process"
        assert a["messaging.operation.type"] == {"stringValue": op}
        assert s["name"].endswith(f" {op}")
        assert UINT.match(a["messaging.message.id"]["stringValue"])
        assert "stringValue" in a["messaging.destination.name"]
        for ev in s.get("events", []):
            assert UINT.match(ev["timeUnixNano"]) and isinstance(ev["name"], str)
            check_attributes(ev)
        if "status" in s:
            assert s["status"]["code"] == 2 and s["status"]["message"]
    roots: Counter[str] = Counter()
    for s in spans:
        if "parentSpanId" in s:
            parent = by_id[s["parentSpanId"]]  # parents exist...
            assert parent["traceId"] == s["traceId"]  # ...in the same trace
        else:
            roots[s["traceId"]] += 1
        if s["kind"] == 5:
            links = s.get("links", [])
            assert len(links) <= 1
            for link in links:
                producer = by_id[link["spanId"]]
                assert producer["kind"] == 4 and producer["traceId"] == link["traceId"]
                assert attrs(producer)["messaging.message.id"] == attrs(s)["messaging.message.id"]
    # One root per trace: a causal chain hangs off the send that started it.
    assert set(roots.values()) <= {1}
    assert set(roots) == {s["traceId"] for s in spans}
    # One producer per send and one consumer per receive.
    kinds = Counter(s["kind"] for s in spans)
    assert kinds[4] == len({e.msg_id for e in events if e.kind == "send"})
    assert kinds[5] == len({e.msg_id for e in events if e.kind == "receive"})


def test_otlp_scenario_structure(scenario_events: list[traces.TraceEvent]) -> None:
    doc = to_otlp(scenario_events, header=HEADER)
    check_otlp(doc, scenario_events)
    # Every consumer links to its producer (the whole trace is here).
    spans = spans_of(doc)
    assert all(len(s["links"]) == 1 for s in spans if s["kind"] == 5)
    resource = attrs(doc["resourceSpans"][0]["resource"])
    assert resource["trioxide.seed"] == {"intValue": "7"}
    assert resource["process.command_args"] == {
        "arrayValue": {"values": [{"stringValue": "pytest"}, {"stringValue": "test_export"}]}
    }


def test_otlp_demo_structure(demo_trace: traces.TraceFile) -> None:
    doc = to_otlp(demo_trace.events, header=demo_trace.header)
    check_otlp(doc, demo_trace.events)
    spans = spans_of(doc)
    assert all(len(s["links"]) == 1 for s in spans if s["kind"] == 5)
    # Causal chains become traces with more than one message.
    per_trace = Counter(s["traceId"] for s in spans)
    assert max(per_trace.values()) > 4


def test_otlp_causal_chain_and_attributes(scenario_events: list[traces.TraceEvent]) -> None:
    evs = scenario_events
    spans = spans_of(to_otlp(evs, header=HEADER))
    prod = {attrs(s)["messaging.message.id"]["stringValue"]: s for s in spans if s["kind"] == 4}
    cons = {attrs(s)["messaging.message.id"]["stringValue"]: s for s in spans if s["kind"] == 5}
    kick = one(evs, "send", msg_type="Kick")
    tell1 = one(evs, "send", msg_type="Ask2", corr=None, peer="boss")
    (ask2,) = (  # the ask Boss sent while handling Kick (msg_ids are seqs, not consecutive)
        e for e in evs if e.kind == "send" and e.msg_type == "Ask2" and e.corr and e.peer == "boss"
    )
    k_prod, k_cons = prod[str(kick.msg_id)], cons[str(kick.msg_id)]
    # Kick came from outside any actor: its own trace, its consumer a child of its send.
    assert "parentSpanId" not in k_prod
    assert k_cons["parentSpanId"] == k_prod["spanId"]
    assert k_cons["links"] == [{"traceId": k_prod["traceId"], "spanId": k_prod["spanId"]}]
    # The Ask2s Boss sent while handling Kick are in Kick's trace, under Kick's handler.
    for sent in (tell1, ask2):
        p, c = prod[str(sent.msg_id)], cons[str(sent.msg_id)]
        assert p["traceId"] == c["traceId"] == k_prod["traceId"]
        assert p["parentSpanId"] == c["parentSpanId"] == k_cons["spanId"]
        assert c["links"] == [{"traceId": p["traceId"], "spanId": p["spanId"]}]
        assert p["name"] == "Ask2 send" and c["name"] == "Ask2 process"
        # Times: the header's started_at plus the virtual offset from the first event.
        assert scenario_events[0].t == 0.0
        at = str(STARTED_NS + round(sent.t * 1e9))
        assert p["startTimeUnixNano"] == p["endTimeUnixNano"] == at
    a = attrs(prod[str(ask2.msg_id)])
    assert a["messaging.destination.name"] == {"stringValue": "worker"}
    assert a["messaging.operation.name"] == {"stringValue": "ask"}
    assert a["trioxide.corr"] == {"intValue": str(ask2.msg_id)}
    assert a["trioxide.peer"] == {"stringValue": "boss"}
    assert a["trioxide.payload"] == {"stringValue": '{"n":2}'}
    assert attrs(prod[str(tell1.msg_id)])["messaging.operation.name"] == {"stringValue": "tell"}
    assert "trioxide.corr" not in attrs(prod[str(tell1.msg_id)])
    c = attrs(cons[str(ask2.msg_id)])
    assert c["trioxide.outcome"] == {"stringValue": "ok"} and "trioxide.detail" not in c
    # The reply is an event of the ask's consumer span.
    (reply,) = cons[str(ask2.msg_id)]["events"]
    assert reply["name"] == "reply" and attrs(reply)["trioxide.peer"] == {"stringValue": "boss"}
    # Errors: status ERROR with the handle detail.
    boom = cons[str(one(evs, "send", msg_type="Boom").msg_id)]
    assert boom["status"]["code"] == 2 and "ValueError('boom')" in boom["status"]["message"]
    # The cancelled handler ends there, not in error; the drained tells are events.
    (cancel,) = (e for e in evs if e.kind == "handle" and e.outcome == "cancelled")
    slow = cons[str(cancel.msg_id)]
    assert slow["endTimeUnixNano"] == str(STARTED_NS + round(cancel.t * 1e9))
    assert "status" not in slow
    assert attrs(slow)["trioxide.outcome"] == {"stringValue": "cancelled"}
    for drop in (e for e in evs if e.kind == "drop"):
        assert str(drop.msg_id) not in cons
        assert [ev["name"] for ev in prod[str(drop.msg_id)]["events"]] == ["drop"]
    # A selective receive is a zero-length consumer span under its sender's context.
    urgent = cons[str(one(evs, "receive", msg_type="Urgent").msg_id)]
    assert urgent["startTimeUnixNano"] == urgent["endTimeUnixNano"]
    assert attrs(urgent)["messaging.operation.name"] == {"stringValue": "selective"}


def test_otlp_ids_depend_on_the_seed_only(scenario_events: list[traces.TraceEvent]) -> None:
    a = spans_of(to_otlp(scenario_events, header=HEADER))
    b = spans_of(to_otlp(scenario_events, header=msgspec.structs.replace(HEADER, seed=8)))
    assert [s["name"] for s in a] == [s["name"] for s in b]
    assert not {s["spanId"] for s in a} & {s["spanId"] for s in b}
    custom = to_otlp(scenario_events, service_name="sled-agent")
    resource = attrs(custom["resourceSpans"][0]["resource"])
    assert resource["service.name"] == {"stringValue": "sled-agent"}


# -- OTLP/JSON through the real protobuf schema -----------------------------------------

ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def convert_ids(node: Any, convert: Any) -> Any:
    """OTLP/JSON writes ids in hex; the generic protobuf JSON mapping uses base64."""
    if isinstance(node, dict):
        return {k: convert(v) if k in ID_KEYS else convert_ids(v, convert) for k, v in node.items()}
    if isinstance(node, list):
        return [convert_ids(v, convert) for v in node]
    return node


def hex_to_b64(h: str) -> str:
    return base64.b64encode(bytes.fromhex(h)).decode()


def b64_to_hex(b: str) -> str:
    return base64.b64decode(b).hex()


def same_modulo_defaults(orig: Any, back: Any, where: str = "") -> None:
    """*back* (protobuf's MessageToDict) equals *orig*, except that it leaves out fields
    holding proto3 default values (e.g. a start time of 0)."""
    if isinstance(orig, dict):
        assert isinstance(back, dict) and set(back) <= set(orig), where
        for key, value in orig.items():
            if key not in back:
                assert value in ("0", 0, "", False, [], {}), f"{where}.{key} lost"
            else:
                same_modulo_defaults(value, back[key], f"{where}.{key}")
    elif isinstance(orig, list):
        assert isinstance(back, list) and len(back) == len(orig), where
        for i, (o, b) in enumerate(zip(orig, back, strict=True)):
            same_modulo_defaults(o, b, f"{where}[{i}]")
    else:
        assert orig == back, (where, orig, back)


@pytest.mark.parametrize("source", ["scenario", "demo"])
def test_otlp_round_trips_through_protobuf(source: str, request: pytest.FixtureRequest) -> None:
    json_format = pytest.importorskip("google.protobuf.json_format")
    trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    if source == "scenario":
        events, header = request.getfixturevalue("scenario_events"), HEADER
    else:
        tf = request.getfixturevalue("demo_trace")
        events, header = tf.events, tf.header
    doc = to_otlp(events, header=header)
    msg = trace_service.ExportTraceServiceRequest()
    json_format.Parse(json.dumps(convert_ids(doc, hex_to_b64)), msg)  # unknown fields fail

    spans = spans_of(doc)
    (rs,) = msg.resource_spans
    (ss,) = rs.scope_spans
    assert ss.scope.name == "trioxide" and len(ss.spans) == len(spans)
    for orig, span in zip(spans, ss.spans, strict=True):
        assert span.trace_id == bytes.fromhex(orig["traceId"]) and len(span.trace_id) == 16
        assert span.span_id == bytes.fromhex(orig["spanId"]) and len(span.span_id) == 8
        assert span.kind == orig["kind"]
        assert span.start_time_unix_nano == int(orig["startTimeUnixNano"])
        assert span.name == orig["name"]
    kinds = Counter(s.kind for s in ss.spans)
    assert kinds[4] >= kinds[5] > 0
    errors = [s for s in ss.spans if s.status.code == 2]
    assert all(s.status.message for s in errors)
    # The scenario has a handler that raised. In the demo, errors are typed refusals (e.g.
    # VmmTearingDown while a VMM re-registers); a cancellation, such as Stop aborting
    # Crucible activation, is never an error.
    assert errors or source == "demo"
    assert not any("Cancelled" in s.status.message for s in errors)

    back = json_format.MessageToDict(msg, use_integers_for_enums=True)
    same_modulo_defaults(doc, convert_ids(back, b64_to_hex))


# -- determinism and files ---------------------------------------------------------------


def test_exports_are_deterministic(
    scenario_events: list[traces.TraceEvent], tmp_path: Path
) -> None:
    shuffled = list(scenario_events)
    random.Random(0).shuffle(shuffled)  # order comes from seq, not from the input order
    for convert in (to_perfetto, to_otlp):
        first = json.dumps(convert(scenario_events, header=HEADER))
        assert json.dumps(convert(list(scenario_events), header=HEADER)) == first
        assert json.dumps(convert(iter(shuffled), header=HEADER)) == first
    for write in (write_perfetto, write_otlp):
        a, b = tmp_path / f"{write.__name__}-a.json", tmp_path / f"{write.__name__}-b.json"
        write(scenario_events, a, HEADER)
        write(iter(scenario_events), b, header=HEADER)
        assert a.read_bytes() == b.read_bytes()


def test_written_files_load_as_the_documents(demo_trace: traces.TraceFile, tmp_path: Path) -> None:
    perfetto, otlp = tmp_path / "demo.perfetto.json", tmp_path / "demo.otlp.json"
    header = msgspec.structs.replace(demo_trace.header, started_at=HEADER.started_at)
    write_perfetto(demo_trace.events, perfetto, header=header)
    write_otlp(demo_trace.events, otlp, header=header)
    assert (
        perfetto.read_bytes()
        == msgspec.json.encode(to_perfetto(demo_trace.events, header=header)) + b"\n"
    )
    assert otlp.read_bytes() == msgspec.json.encode(to_otlp(demo_trace.events, header=header)) + (
        b"\n"
    )
    # Re-reading the trace file gives the same export, byte for byte.
    again = tmp_path / "again.perfetto.json"
    write_perfetto(list(demo_trace.events), again, header=header)
    assert again.read_bytes() == perfetto.read_bytes()
