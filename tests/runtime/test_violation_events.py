"""An explorer violation is an event of its own in the run's trace (kind ``violation``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.lost_update import no_lost_update, racy_scenario
from trioxide import traces
from trioxide.cli import main
from trioxide.runtime.testing import SeededRun, explore, replay

#: A seed of the racy lost-update scenario that violates ``no_lost_update``.
SEED = 0


def _last_handle_before(events: list[traces.TraceEvent], i: int) -> traces.TraceEvent:
    return next(e for e in reversed(events[:i]) if e.kind == "handle")


def test_a_violating_replay_trace_ends_with_the_violation_caused_by_the_handled_message(
    tmp_path: Path,
) -> None:
    path = tmp_path / "racy.jsonl"
    result = replay(racy_scenario, SEED, invariants=[no_lost_update], trace_path=path)
    v = result.violation
    assert v is not None and v.invariant == "no_lost_update"
    events = traces.read_trace(path).events
    last = events[-1]
    assert last.kind == "violation" and last.outcome == "error"
    assert last.detail == f"no_lost_update: {v.message}"
    # It points at the message whose handler had just run when the invariant failed...
    handled = _last_handle_before(events, len(events) - 1)
    assert handled == v.event and handled.actor == "store"
    assert last.cause == handled.msg_id and last.actor == handled.actor
    # ... right after its handle: nothing of the run's cancellation is recorded after it.
    assert events[-2] == handled and last.seq == handled.seq + 1
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert result.events == events


def test_an_end_of_run_violation_names_the_runtime_and_no_message(tmp_path: Path) -> None:
    def never(run: SeededRun) -> bool:
        return False

    path = tmp_path / "end.jsonl"
    result = replay(racy_scenario, 3, at_end=[never], trace_path=path)
    assert result.violation is not None and result.violation.invariant == "never"
    last = traces.read_trace(path).events[-1]
    assert (last.kind, last.actor, last.cause) == ("violation", "explore", None)
    assert last.detail == "never: returned False" and last.outcome == "error"


def test_a_passing_run_has_no_violation_event() -> None:
    result = replay(racy_scenario, 3, invariants=[no_lost_update])
    assert result.ok
    assert all(e.kind != "violation" for e in result.events)
    assert result.events[-1].kind == "stop"  # the whole run, its shutdown included


def test_explore_writes_the_violation_into_the_trace_it_keeps(tmp_path: Path) -> None:
    out = explore(
        racy_scenario, seeds=[3, SEED], invariants=[no_lost_update], trace_dir=tmp_path,
        progress=False,
    )  # fmt: skip
    assert out.violation is not None and out.violation.trace_path is not None
    last = traces.read_trace(out.violation.trace_path).events[-1]
    assert last.kind == "violation" and last.cause == out.violation.event.msg_id


def test_explore_replay_on_the_command_line_prints_what_the_trace_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["explore", "examples.lost_update:racy", "--replay", str(SEED)]
    assert main([*argv, "--trace-dir", str(tmp_path)]) == 1
    printed = capsys.readouterr().out
    path = tmp_path / f"replay-seed{SEED}.jsonl"
    events = traces.read_trace(path).events
    last = events[-1]
    assert last.kind == "violation"
    invariant, _, message = (last.detail or "").partition(": ")
    handled = _last_handle_before(events, len(events) - 1)
    assert last.cause == handled.msg_id
    assert f"invariant {invariant} violated after event #{handled.seq}" in printed
    assert f"(handle {handled.actor} msg {last.cause})" in printed
    assert message in printed and str(path) in printed


def test_exports_carry_the_violation_on_the_handled_message() -> None:
    events = replay(racy_scenario, SEED, invariants=[no_lost_update]).events
    last = events[-1]
    assert last.kind == "violation"
    perfetto = traces.to_perfetto(events)["traceEvents"]
    marks = [e for e in perfetto if e.get("cat") == "violation"]
    assert [m["args"]["cause"] for m in marks] == [last.cause]
    # In OTLP it is an event of the span of the message whose handling broke the invariant.
    spans = traces.to_otlp(events)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    owners = [s for s in spans for ev in s.get("events", []) if ev["name"] == "violation"]
    assert len(owners) == 1
    attrs = {a["key"]: a["value"] for a in owners[0]["attributes"]}
    assert attrs["messaging.message.id"] == {"stringValue": str(last.cause)}
    assert attrs["messaging.destination.name"] == {"stringValue": last.actor}
