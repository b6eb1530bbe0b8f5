"""``trioxide trace diff A B``: the first event where two traces diverge (issue 13, item 3)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from examples.lost_update import no_lost_update, racy_scenario
from trioxide import traces
from trioxide.actors.sagas import legacy
from trioxide.cli import main
from trioxide.runtime.testing import replay
from trioxide.traces import TraceEvent, TraceHeader
from trioxide.traces.diff import causal_chain, first_divergence, format_divergence

E = TraceEvent


def first_index_differing(a: Sequence[TraceEvent], b: Sequence[TraceEvent]) -> int:
    """Computed here independently of the tool: where the two event lists part."""
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def diff(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main(["trace", "diff", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def version_line(out: str, label: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"  {label}: "))


def write(path: Path, events: Sequence[TraceEvent], seed: int | None = None) -> Path:
    with traces.JsonlFileSink(path, TraceHeader(seed=seed)) as sink:
        for e in events:
            sink.write(e)
    return path


# -- two seeds of the explorer's scenarios -------------------------------------------------


def test_a_diff_of_two_seeds_of_the_legacy_explorer_names_the_first_divergent_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"legacy-{seed}.jsonl"
        replay(
            legacy.scenario, seed, invariants=legacy.invariants, at_end=legacy.at_end,
            trace_path=path,
        )  # fmt: skip
        paths.append(path)
    a, b = (traces.read_trace(p).events for p in paths)
    i = first_index_differing(a, b)
    assert 0 < i < min(len(a), len(b))  # a shared start, then a real divergence
    code, out, err = diff(capsys, *paths)
    assert code == 1 and err == ""
    assert out.startswith(f"the traces diverge at seq {a[i].seq} (event {i + 1})")
    assert "(seed 0)" in out and "(seed 1)" in out
    for label, event in (("A", a[i]), ("B", b[i])):
        line = version_line(out, label)
        assert f"seq={event.seq} " in line and f"kind={event.kind!r}" in line
        assert f"actor={event.actor!r}" in line
        if event.msg_type is not None:
            assert f"msg_type={event.msg_type!r}" in line
    assert f"after it: {len(a) - i - 1} more events in A, {len(b) - i - 1} in B" in out


def test_a_passing_and_a_violating_seed_diverge_where_their_schedules_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails, passes = tmp_path / "seed0.jsonl", tmp_path / "seed3.jsonl"
    assert replay(racy_scenario, 0, invariants=[no_lost_update], trace_path=fails).violation
    assert replay(racy_scenario, 3, invariants=[no_lost_update], trace_path=passes).ok
    a, b = traces.read_trace(fails).events, traces.read_trace(passes).events
    i = first_index_differing(a, b)
    d = first_divergence(a, b)
    assert d is not None and d.index == i and (d.a, d.b) == (a[i], b[i])
    assert d.fields == tuple(
        f for f in TraceEvent.__struct_fields__ if getattr(a[i], f) != getattr(b[i], f)
    )
    code, out, _ = diff(capsys, fails, passes)
    assert code == 1 and f"diverge at seq {a[i].seq} " in out
    assert f"they differ in: {', '.join(d.fields)}" in out


def test_the_same_seed_twice_is_the_same_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [tmp_path / f"run{n}.jsonl" for n in (1, 2)]
    for path in paths:
        replay(racy_scenario, 0, invariants=[no_lost_update], trace_path=path)
    code, out, _ = diff(capsys, *paths)
    n = len(traces.read_trace(paths[0]).events)
    assert code == 0 and out.startswith(f"the traces are the same ({n} events,")


# -- causal chains, time, one trace ending ----------------------------------------------

#: outside -> client (Go, msg 1); the client asks the store (Read, msg 3); the store
#: handles it, replies; the client then tells the store Write (msg 6).
SHARED = [
    E(1, 0.0, "send", "client", None, 1, None, 1, "Go"),
    E(2, 0.0, "receive", "client", None, 1, None, 1, "Go"),
    E(3, 0.0, "send", "store", "client", 3, 1, 3, "Read"),
    E(4, 0.5, "receive", "store", None, 3, 1, 3, "Read"),
]
REPLY = E(5, 1.0, "handle", "store", None, 3, None, 3, "Read", outcome="ok")


def write_event(value: int, t: float = 1.5) -> TraceEvent:
    payload = msgspec.Raw(msgspec.json.encode({"value": value}))
    return E(6, t, "send", "store", "client", 6, 1, None, "Write", payload)


def test_the_report_shows_both_versions_and_each_causal_chain_with_the_shared_part_marked() -> None:
    a = [*SHARED, REPLY, write_event(1)]
    b = [*SHARED, REPLY, write_event(2), E(7, 2.0, "receive", "store", None, 6, 1, None, "Write")]
    d = first_divergence(a, b)
    assert d is not None and d.index == 5 and d.fields == ("payload",)
    # Write (msg 6) was sent while the client handled Go (msg 1), sent from outside.
    assert d.chain_a == (a[0], a[5]) and d.chain_b == (b[0], b[5]) and d.shared == 1
    assert (d.after_a, d.after_b) == (0, 1)
    out = format_divergence(d, name_a="one", name_b="two")
    lines = out.splitlines()
    assert lines[0] == "the traces diverge at seq 6 (event 6), actor store (A = one, B = two)"
    assert 'payload={"value":1}' in version_line(out, "A")
    assert 'payload={"value":2}' in version_line(out, "B")
    chain_a = lines[lines.index(next(x for x in lines if x.startswith("causal chain in A"))) :]
    assert chain_a[1] == "  = seq 1 t=0 send Go msg 1: (outside) -> client"
    assert chain_a[2] == "  A seq 6 t=1.5 send Write msg 6: client -> store"
    assert lines[-1] == "after it: 0 more events in A, 1 in B"


def test_a_step_about_a_message_chains_through_that_messages_send() -> None:
    chain = causal_chain([*SHARED, REPLY], REPLY)
    assert chain == (SHARED[0], SHARED[2], REPLY)  # Go (outside) -> Read -> its handle


def test_times_differ_between_real_clock_runs_and_ignore_time_leaves_them_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = [*SHARED, REPLY, write_event(1)]
    b = [msgspec.structs.replace(e, t=e.t + 0.25) for e in a]
    d = first_divergence(a, b)
    assert d is not None and d.index == 0 and d.fields == ("t",)
    assert first_divergence(a, b, ignore_time=True) is None
    pa, pb = write(tmp_path / "a.jsonl", a), write(tmp_path / "b.jsonl", b)
    assert diff(capsys, pa, pb)[0] == 1
    code, out, _ = diff(capsys, pa, pb, "--ignore-time")
    assert code == 0 and "the traces are the same" in out


def test_a_trace_that_ends_early_is_reported_as_ending_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = [*SHARED, REPLY, write_event(1)]
    pa, pb = write(tmp_path / "a.jsonl", full[:4]), write(tmp_path / "b.jsonl", full)
    code, out, _ = diff(capsys, pa, pb)
    assert code == 1
    assert out.startswith("the traces diverge at seq 5 (event 5), actor store")
    assert "  A: (the trace ends here after 4 events)" in out
    assert version_line(out, "B").startswith("  B: seq=5 ")
    assert "after it: 0 more events in A, 1 in B" in out


# -- mistakes: one line, exit 2 -------------------------------------------------------------


def test_unusable_files_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path / "good.jsonl", SHARED)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "binary.jsonl").write_bytes(b"\x00\xff\xfe garbage\n")
    cases = {
        tmp_path / "missing.jsonl": "no such trace file",
        tmp_path: "is a folder",
        tmp_path / "empty.jsonl": "is not a trioxide trace",
        tmp_path / "binary.jsonl": "is not a trioxide trace",
    }
    for path, why in cases.items():
        for args in ((path, good), (good, path)):
            code, out, err = diff(capsys, *args)
            assert code == 2 and out == ""
            assert err.count("\n") == 1 and err.startswith("trioxide: ") and why in err
            assert str(path) in err


def test_a_corrupted_line_is_reported_with_its_number_and_the_rest_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pa = write(tmp_path / "a.jsonl", SHARED)
    pb = write(tmp_path / "b.jsonl", SHARED)
    with open(pb, "ab") as f:
        f.write(b'{"seq": 5, "t": \n')
    code, out, err = diff(capsys, pa, pb)
    assert code == 0 and "the traces are the same (4 events" in out
    assert err.startswith(f"{pb}:6: skipped a corrupted line")


def test_the_command_never_prints_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trioxide", "trace", "diff", str(tmp_path / "x"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("trioxide: ") and proc.stderr.count("\n") == 1
