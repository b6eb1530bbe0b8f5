"""The main job (``trioxide demo``) runs and writes a readable trace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trioxide import traces
from trioxide.cli import main


def test_runtime_demo_runs_and_writes_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo.jsonl"
    assert main(["runtime-demo", "--trace", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "disk-0 crashed and was restarted: restarts=1" in printed
    assert "Rejected(HaltPending" in printed
    tf = traces.read_trace(out)
    assert tf.errors == []
    assert tf.header.command == ["trioxide", "demo"]
    kinds = {e.kind for e in tf.events}
    assert {"spawn", "send", "receive", "handle", "reply", "fail", "restart", "timeout"} <= kinds
    seqs = [e.seq for e in tf.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_explore_command_finds_replays_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    racy = "examples.lost_update:racy"
    assert main(["explore", racy, "--seeds", "50", "--trace-dir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert err.count("VIOLATION seed 0: invariant no_lost_update") == 1  # the summary, once
    assert f"replay: trioxide explore {racy} --replay 0" in out
    assert (tmp_path / "racy_scenario-seed0.jsonl").exists()
    assert main(["explore", racy, "--replay", "0", "--trace-dir", str(tmp_path)]) == 1
    assert "VIOLATION seed 0" in capsys.readouterr().out
    fixed = "examples.lost_update:fixed"
    assert main(["explore", fixed, "--seeds", "40", "--pct", "2", "--extra-yields", "0.1"]) == 0
    out, err = capsys.readouterr()
    assert "no violation" in err and "no violation" not in out


def test_explore_command_reports_bad_targets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "nothing"]) == 2
    assert "MODULE:ATTRIBUTE" in capsys.readouterr().err
    assert main(["explore", "no_such_module_xyz:thing"]) == 2
    assert "cannot import" in capsys.readouterr().err


def test_sled_demo_small_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sled.jsonl"
    assert main(["demo", "--vmms", "12", "--seed", "3", "--trace", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(equal: nothing hung, nothing lost)" in printed
    assert "/ 0" in printed.split("invariants checked / violated")[1].splitlines()[0]
    tf = traces.read_trace(out)
    assert tf.errors == [] and tf.header.seed == 3
    actors = {e.actor for e in tf.events}
    assert "demo" not in actors and any("runner-vmm-vcr" in a for a in actors)


def test_demo_trace_is_byte_identical_across_processes(tmp_path: Path) -> None:
    """Cancellations, failures and restarts included: no memory addresses leak in."""
    import subprocess
    import sys

    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for path in paths:
        subprocess.run(
            [sys.executable, "-m", "trioxide", "demo", "--vmms", "6", "--trace", str(path)],
            check=True,
            capture_output=True,
            timeout=300,
            cwd=Path(__file__).resolve().parents[2],
        )
    first, second = (p.read_bytes() for p in paths)
    assert first == second
    assert b"Cancelled()" in first and b" at 0x" not in first


def test_export_command_writes_perfetto_and_otlp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    trace = tmp_path / "sled.jsonl"
    assert main(["demo", "--vmms", "4", "--trace", str(trace)]) == 0
    # A corrupted line is reported with its number and skipped; the rest is exported.
    lines = trace.read_bytes().splitlines(keepends=True)
    lines.insert(5, b"{not json\n")
    trace.write_bytes(b"".join(lines))
    perfetto, otlp = tmp_path / "p.json", tmp_path / "o.json"
    capsys.readouterr()
    assert main(["export", str(trace), "--perfetto", str(perfetto), "--otlp", str(otlp)]) == 0
    err = capsys.readouterr().err
    assert f"{trace}:6: skipped a corrupted line" in err
    doc = json.loads(perfetto.read_text())
    assert doc["traceEvents"] and all("ph" in e for e in doc["traceEvents"])
    spans = json.loads(otlp.read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert {s["kind"] for s in spans} == {4, 5}  # PRODUCER and CONSUMER
    assert main(["export", str(trace)]) == 2
    assert "--perfetto" in capsys.readouterr().err


def test_demo_view_streams_the_run_then_idles_and_still_answers(tmp_path: Path) -> None:
    """``trioxide demo --view``: the server streams the (virtual-time) run from a thread of
    its own. A client gets every event once, in order, with counters that agree (events
    received + dropped = the tracer's seq = the last seq). After the run the server's Trio
    run waits for I/O with no deadline at all (it used to spin a CPU core: the run's
    MockClock polled forever), and a client connecting then still gets the whole run."""
    import json
    import threading

    import trio
    import trio_websocket

    from trioxide.actors.demo import DemoOptions, Stats, _InvariantSink, _viewed
    from trioxide.traces.server import TraceServer

    opts = DemoOptions(vmms=3, trace=tmp_path / "live.jsonl")
    stats = Stats()
    checker = _InvariantSink(stats)
    server = TraceServer()
    file_sink = traces.JsonlFileSink(opts.trace)
    tracer = traces.Tracer(file_sink, checker, server.sink, payloads=True)
    demo = threading.Thread(target=_viewed, args=(server, opts, stats, checker, tracer, file_sink))

    class Idle(trio.abc.Instrument):
        """Set once the server's run waits for I/O with no timer due (Trio's longest wait)."""

        def __init__(self) -> None:
            self.seen = threading.Event()

        def before_io_wait(self, timeout: float) -> None:
            if timeout >= 3600:
                self.seen.set()

    async def watch(port: int) -> tuple[dict[str, object], list[int], dict[str, object]]:
        async with trio_websocket.open_websocket(
            "127.0.0.1", port, "/ws?format=columns", use_ssl=False, max_message_size=1 << 24
        ) as ws:
            hello = json.loads(await ws.get_message())
            seqs: list[int] = []
            dropped = 0
            while (frame := json.loads(await ws.get_message()))["type"] != "end":
                if frame["type"] == "columns":
                    seqs.extend(frame["seq"])
                elif frame["type"] == "dropped":
                    dropped = frame["count"]
            assert frame["dropped"] == dropped and frame["events"] == len(seqs)
            return hello, seqs, frame

    async def main() -> None:
        demo.start()
        with trio.fail_after(30):
            while server.trio_token is None:  # noqa: ASYNC110 - the demo's thread starts it
                await trio.sleep(0.01)
            hello, seqs, end = await watch(server.port)
            assert hello["mode"] == "live"
            assert seqs == sorted(set(seqs)) and seqs[-1] == tracer.seq  # in order, once each
            assert len(seqs) + int(end["dropped"]) == tracer.seq == server.statistics().written
            # After the run: the server idles, and still answers.
            idle = Idle()
            token = server.trio_token
            assert token is not None
            token.run_sync_soon(trio.lowlevel.add_instrument, idle)
            await trio.to_thread.run_sync(idle.seen.wait, abandon_on_cancel=True)
            _, seqs, end = await watch(server.port)
            assert seqs == list(range(1, tracer.seq + 1)) and end["dropped"] == 0
        server.close()
        await trio.to_thread.run_sync(demo.join)

    trio.run(main)
    kinds = {e.kind for e in traces.read_trace(opts.trace).events}
    assert {"spawn", "send", "receive", "handle", "stop"} <= kinds
    assert stats.sent == stats.answered > 0 and not stats.violations


def test_every_vmm_registered_again_while_tearing_down_runs_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The #3325 race staged 3 times: each new incarnation waits for its old zone's
    cleanup - here the first zones handed over, so at most their three 30-minute bundles -
    and then runs, and the summary says how long that took. (Before: the demo gave up
    waiting after 600 s without saying so, and the stops it sent then waited hours behind
    the starts.)"""
    out = tmp_path / "demo.jsonl"
    assert main(["demo", "--vmms", "60", "--seed", "2", "--trace", str(out)]) == 0
    printed = capsys.readouterr().out
    row = printed.split("#3325: re-registered while tearing down")[1].splitlines()[0]
    found = re.search(r"running again after p50 (\d+) s, max (\d+) s .*, (\d+) of 3", row)
    assert found, row
    assert int(found[3]) == 3 and "never ran" not in printed
    assert int(found[2]) <= 3 * 1800 + 120  # three bundles, at most, and the start


def test_the_demo_places_vmms_only_while_the_reservoir_has_room(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reservoir with room for 4 VMMs and 30 arriving (seed 1): Nexus-like placement
    keeps every start within the reservoir, so no VMM fails for want of guest memory and
    ``failed_only_when_injected`` holds. (Without placement the late starts failed with
    "cannot reserve ... bytes of guest memory": at 2,000 VMMs in the default reservoir,
    34,798 violations.)"""
    from trioxide.actors import demo

    monkeypatch.setattr(demo, "RESERVOIR_MIB", 4 * 1024)
    out = tmp_path / "demo.jsonl"
    assert main(["demo", "--vmms", "30", "--seed", "1", "--trace", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "invariants checked / violated" in printed and "VIOLATION" not in printed
    details = [e.detail or "" for e in traces.read_trace(out).events]
    assert not any("cannot reserve" in d for d in details)


def test_an_unwritable_trace_path_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = blocker / "demo.jsonl"  # its folder is a file
    assert main(["demo", "--vmms", "2", "--trace", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert f"cannot write the trace to {bad}" in captured.err and "--trace" in captured.err
