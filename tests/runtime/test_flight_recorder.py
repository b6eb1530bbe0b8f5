"""The flight recorder: an always-on ring of trace records bounded by bytes, dumped to a
trace file when an actor fails, on SIGUSR1, and on ``Runtime.dump_trace``."""

from __future__ import annotations

import math
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import msgspec
import pytest
import trio

from trioxide import Actor, open_runtime, traces

from ._msgs import Boom, Counter, Get, Incr, Sleep

MIB = 1 << 20


class Blob(msgspec.Struct, frozen=True):
    data: str


class Taker(Actor):
    async def handle(self, msg: Blob | Get) -> int:
        return 0


def kinds_of(events: list[traces.TraceEvent], actor: str) -> list[str]:
    return [e.kind for e in events if e.actor == actor]


async def test_a_failing_actor_dumps_its_fail_and_the_messages_before_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    recorder = traces.FlightRecorder(directory=tmp_path)
    with pytest.RaisesGroup(ValueError, flatten_subgroups=True):
        async with open_runtime(flight_recorder=recorder) as rt:
            ref = await rt.spawn(Counter, name="counter")
            for _ in range(3):
                await ref.tell(Incr())
            await ref.tell(Boom("kaput"))
            await trio.sleep_forever()  # the failure escalates and ends the block
    # Leaving the block flushed the tracer: the dump asked for at the failure is written.
    (dump,) = recorder.dumps
    fail = next(e for e in recorder.events if e.kind == "fail")
    assert dump == tmp_path / f"trioxide-counter-{fail.seq}.jsonl"
    tf = traces.read_trace(dump)
    assert tf.errors == [] and tf.header == recorder.header
    assert tf.events[-1] == fail and fail.detail == "ValueError('kaput')"
    assert [e.msg_type for e in tf.events if e.kind == "send"] == ["Incr"] * 3 + ["Boom"]
    handled = [e for e in tf.events if e.kind == "handle"]
    assert [e.outcome for e in handled] == ["ok"] * 3 + ["error"]
    assert tf.events == [e for e in recorder.events if e.seq <= fail.seq]
    left = sorted(p.name for p in tmp_path.iterdir())  # noqa: ASYNC240 - a test's check
    assert left == [dump.name]  # written under a temporary name, then renamed


async def test_a_crash_loop_dumps_at_most_max_dumps_at_least_min_interval_apart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    recorder = traces.FlightRecorder(directory=tmp_path, min_interval=10.0, max_dumps=3)
    async with open_runtime(flight_recorder=recorder) as rt:
        ref = await rt.spawn(Counter, name="loop", restart="permanent", max_restarts=100)
        for _ in range(40):
            await ref.tell(Boom())
            await trio.sleep(1.0)
            recorder.flush()  # (the previous dump is written: skips depend on time only)
    fails = [e for e in recorder.events if e.kind == "fail"]
    assert len(fails) == 40
    # Dumped at the 1st, 11th and 21st failure (10 s apart), then max_dumps is reached.
    assert recorder.dumps == [tmp_path / f"trioxide-loop-{fails[i].seq}.jsonl" for i in (0, 10, 20)]
    assert recorder.auto_dumps == 3 and recorder.dumps_skipped == 37


async def test_dump_trace_writes_what_is_held_now_including_a_receive_held_to_fold(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The tracer holds a receive until the next event (to fold it into its handle):
    ``dump_trace`` flushes it, so a handler that is still running shows in the dump."""
    recorder = traces.FlightRecorder(directory=tmp_path)
    async with open_runtime(flight_recorder=recorder, name="svc") as rt:
        ref = await rt.spawn(Counter, name="counter")
        await ref.tell(Incr())
        await ref.tell(Sleep(math.inf, "stuck"))  # (virtual time may jump: to_thread)
        await trio.testing.wait_all_tasks_blocked()
        path = await rt.dump_trace(tmp_path / "now.jsonl")
        assert path == tmp_path / "now.jsonl"
        events = traces.read_trace(path).events
        assert events == recorder.events
        last = events[-1]
        assert (last.kind, last.actor, last.msg_type) == ("receive", "counter", "Sleep")
        default = await rt.dump_trace()
        assert default == tmp_path / f"trioxide-svc-{recorder.records[-1].seq}.jsonl"
        assert traces.read_trace(default).events == recorder.events
        await ref.stop(grace=0)


async def test_without_a_recorder_dump_trace_refuses_and_failures_cost_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = traces.MemorySink()
    async with open_runtime(tracer=traces.Tracer(sink)) as rt:
        assert rt.flight_recorder is None
        with pytest.raises(RuntimeError, match="no flight recorder"):
            await rt.dump_trace()
        ref = await rt.spawn(Counter, name="c", restart="permanent")
        await ref.tell(Boom())
        assert await ref.ask(Get()) == 0  # failed, restarted: nothing else happened
    assert [e.kind for e in sink.events].count("fail") == 1


async def test_the_recorder_stays_under_its_byte_bound_with_big_payloads(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Every record goes through ``write`` (the recorder declines the tracer's direct
    path), so payloads count whatever the tracer records: estimated and measured memory
    stay under ``max_bytes``."""
    recorder = traces.FlightRecorder(max_bytes=4 * MIB, directory=tmp_path)
    assert recorder.max_total_bytes <= 4 * MIB
    blobs = [Blob(str(i) * (200 * 1024)) for i in range(10)]  # 200 KiB each
    tracer = traces.Tracer(recorder, payloads=True)
    async with open_runtime(tracer=tracer) as rt:  # found among the tracer's sinks
        assert rt.flight_recorder is recorder
        ref = await rt.spawn(Taker, name="taker")
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(3):
                for blob in blobs:
                    await ref.tell(blob)
                assert recorder.nbytes <= recorder.max_total_bytes
            await ref.ask(Get())
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
    assert recorder.nbytes <= recorder.max_total_bytes
    assert recorder.dropped > 0
    # The extras budget (4 MiB - 16,384 records = 1 MiB) holds 5 payloads of 200 KiB; with the
    # encoder's growth slack (msgspec keeps up to 1.5x) that is well under 4 MiB.
    assert grown < 4 * MIB
    held = [e for e in recorder.records if e.msg_type == "Blob" and len(e.payload) > 0]
    assert 0 < len(held) <= 5
    assert [msgspec.json.decode(e.payload, type=Blob) for e in held] == blobs[-len(held) :]


async def test_a_recorder_given_with_a_tracer_must_be_one_of_its_sinks(
    tmp_path: Path,
) -> None:
    recorder = traces.FlightRecorder(directory=tmp_path)
    with pytest.raises(ValueError, match="one of the tracer's sinks"):
        async with open_runtime(
            tracer=traces.Tracer(traces.MemorySink()), flight_recorder=recorder
        ):
            pass  # pragma: no cover
    two = traces.Tracer(recorder, traces.FlightRecorder(directory=tmp_path))
    with pytest.raises(ValueError, match="more than one FlightRecorder"):
        async with open_runtime(tracer=two):
            pass  # pragma: no cover
    tracer = traces.Tracer(traces.MemorySink(), recorder)
    async with open_runtime(tracer=tracer, flight_recorder=recorder) as rt:
        assert rt.flight_recorder is recorder and rt.tracer is tracer


def test_dump_soon_is_rate_limited_and_dump_writes_at_once(tmp_path: Path) -> None:
    recorder = traces.FlightRecorder(directory=tmp_path / "new", min_interval=5.0, max_dumps=2)
    tracer = traces.Tracer(recorder, clock=lambda: 0.0)
    tracer.start("a")
    first = recorder.dump_soon("a", now=100.0)
    assert first == tmp_path / "new" / "trioxide-a-1.jsonl"
    recorder.flush()
    assert recorder.dump_soon("a", now=104.9) is None  # too soon
    tracer.stop("a", "done")
    assert recorder.dump_soon("x/y z", now=105.0) == tmp_path / "new" / "trioxide-x_y_z-2.jsonl"
    recorder.flush()
    assert recorder.dump_soon("a", now=200.0) is None  # max_dumps reached
    assert recorder.dump_soon("a", limited=False) is not None  # explicit: not limited
    recorder.flush()
    assert recorder.dumps_skipped == 2 and recorder.auto_dumps == 2
    # A name taken already gets a suffix; nothing is overwritten.
    again = recorder.dump_soon("a", limited=False)
    recorder.close()
    assert again == tmp_path / "new" / "trioxide-a-2.jsonl"
    assert recorder.dumps[-1] == tmp_path / "new" / "trioxide-a-2-1.jsonl"
    assert [len(traces.read_trace(p).events) for p in recorder.dumps] == [1, 2, 2, 2]
    here = recorder.dump(tmp_path / "direct.jsonl")
    assert traces.read_trace(here).events == recorder.events
    assert recorder.dump_soon("a", limited=False) is None  # closed: skipped, never raised


def test_off_the_main_thread_the_runtime_does_not_listen_for_sigusr1(tmp_path: Path) -> None:
    recorder = traces.FlightRecorder(directory=tmp_path)
    result: list[object] = []

    async def main() -> None:
        async with open_runtime(flight_recorder=recorder) as rt:
            ref = await rt.spawn(Counter, name="c")
            result.append(await ref.ask(Get()))

    def run() -> None:
        try:
            trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        except BaseException as exc:  # pragma: no cover - reported below
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert result == [0]


SIGUSR1_SCRIPT = textwrap.dedent(
    """
    import sys
    import trio
    from trioxide import open_runtime, traces
    from tests.runtime._msgs import Counter, Incr

    async def main() -> None:
        recorder = traces.FlightRecorder(directory=sys.argv[1])
        async with open_runtime(flight_recorder=recorder, name="svc") as rt:
            ref = await rt.spawn(Counter, name="counter")
            for _ in range(5):
                await ref.tell(Incr())
            await ref.tell(Incr(by=7))
            print("ready", flush=True)
            await trio.sleep_forever()

    trio.run(main)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_sigusr1_dumps_the_flight_recorder_of_a_running_process(tmp_path: Path) -> None:
    """A real process and a real signal (real time, bounded): the dump appears while the
    process keeps running."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGUSR1_SCRIPT, str(tmp_path)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the subprocess did not get ready"
        assert proc.stdout.readline() == "ready\n"
        os.kill(proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 60
        dumps: list[Path] = []
        while not dumps and time.monotonic() < deadline:
            dumps = list(tmp_path.glob("trioxide-svc.sigusr1-*.jsonl"))
            if not dumps:
                time.sleep(0.02)
        assert dumps, "no dump appeared"
        assert proc.poll() is None  # still running
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    (dump,) = dumps
    events = traces.read_trace(dump).events
    sends = [e for e in events if e.kind == "send" and e.actor == "counter"]
    assert [e.msg_type for e in sends] == ["Incr"] * 6
    assert kinds_of(events, "counter")[:2] == ["spawn", "start"]
    assert events[-1].kind in ("handle", "receive")
    assert dump.name == f"trioxide-svc.sigusr1-{events[-1].seq}.jsonl"


def test_the_demo_runs_with_the_flight_recorder_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trioxide.cli import main

    out = tmp_path / "demo.jsonl"
    assert main(["demo", "--vmms", "3", "--trace", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"flight recorder: dumps to {tmp_path}/trioxide-<actor>-<seq>.jsonl" in printed
    assert traces.read_trace(out).errors == []


async def test_a_dump_of_a_seeded_run_names_its_seed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The header of a dump says how to replay the run: ``open_runtime(seed=...)``."""
    recorder = traces.FlightRecorder(directory=tmp_path)
    async with open_runtime(flight_recorder=recorder, seed=7, name="svc") as rt:
        ref = await rt.spawn(Counter, name="counter")
        await ref.tell(Incr())
        path = await rt.dump_trace(tmp_path / "seeded.jsonl")
        await ref.stop()
    assert traces.read_trace(path).header.seed == 7


async def _stream_then_fail(tracer: traces.Tracer, n: int) -> None:
    # Seeded: the same interleaving for both tracers compared below.
    with pytest.RaisesGroup(ValueError, flatten_subgroups=True):
        async with open_runtime(tracer=tracer, seed=2) as rt:
            ref = await rt.spawn(Counter, name="counter", mailbox_size=1024)
            for _ in range(n):
                await ref.tell(Incr())
            await ref.tell(Boom("kaput"))
            await trio.sleep_forever()


@pytest.mark.usefixtures("run_impl")
async def test_a_lone_recorder_keeps_runs_and_its_dump_holds_their_events(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The recorder alone (what ``open_runtime(flight_recorder=...)`` traces into) keeps
    runs of sends and handled tells; its views and its dump on a failure hold the events
    they stand for - those of per-event recording, seq for seq."""
    recorder = traces.FlightRecorder(directory=tmp_path)
    tracer = traces.Tracer(recorder)
    assert tracer.runs
    await _stream_then_fail(tracer, 500)
    reference = traces.MemorySink()
    await _stream_then_fail(traces.Tracer(reference, traces.MemorySink()), 500)
    assert any(isinstance(r, traces._runs.SEND_RUN_TYPES) for r in recorder._ring)
    assert any(isinstance(r, traces._runs.HANDLE_RUN_TYPES) for r in recorder._ring)
    assert recorder.events == reference.events
    assert recorder.written == len(recorder) == tracer.seq and recorder.dropped == 0
    (dump,) = recorder.dumps
    fail = next(e for e in recorder.events if e.kind == "fail")
    assert dump.name == f"trioxide-counter-{fail.seq}.jsonl"
    assert traces.read_trace(dump).events == [e for e in reference.events if e.seq <= fail.seq]


async def test_a_recorder_keeping_runs_holds_at_most_max_records_events(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """``max_records`` bounds the events written, runs included, whichever way they came
    (runs, events through ``write``, details); the run the tracer still holds adds at
    most ``2 * RUN_MAX_MESSAGES``; the counts add up at every step, also while the tracer
    holds a run; a dump's name is the newest seq even when the newest record is a run."""
    recorder = traces.FlightRecorder(
        max_bytes=200 * traces.FlightRecorder.RECORD_BYTES + 64 * 1024,
        directory=tmp_path,
        max_records=200,
    )
    tracer = traces.Tracer(recorder)
    async with open_runtime(tracer=tracer) as rt:
        ref = await rt.spawn(Counter, name="counter", mailbox_size=1024)
        for i in range(3000):
            await ref.tell(Incr() if i % 500 else Sleep(0.0, tag="x" * 100))
            if i % 97 == 0:  # (plus the run the tracer still holds, shown by every view)
                assert len(recorder) <= 200 + 2 * traces.RUN_MAX_MESSAGES
                assert recorder.nbytes <= recorder.max_total_bytes
                assert recorder.dropped + len(recorder) == recorder.written == tracer.seq
        for _ in range(60):  # events through write, after runs
            await ref.ask(Get())
            assert not isinstance(tracer.pending, traces.HandleRun | traces.SendRun)
            assert len(recorder) <= 200
        tracer.flush()
        assert len(recorder) <= 200 and recorder.dropped > 0
        assert recorder.dropped + len(recorder) == recorder.written == tracer.seq
        seqs = [e.seq for e in recorder.events]
        assert seqs == list(range(tracer.seq - len(seqs) + 1, tracer.seq + 1))
        assert recorder.path_for("x").name == f"trioxide-x-{tracer.seq}.jsonl"
        await ref.stop()
