"""Sinks never block the Trio thread and bound their memory by bytes.

``JsonlFileSink`` writes from a thread of its own: a disk that stalls (here: a file whose
``write`` blocks on a ``threading.Event``) stalls that thread only - the actors keep
running, records that do not fit the byte budget are dropped and counted, and once the
disk is back the rest is written in order. ``MemorySink`` bounds payload and detail bytes
as well as records; a big payload is held once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import msgspec
import pytest
import trio

from trioxide import runtime, traces

from ..runtime._msgs import Counter, Get, Incr

HEADER = traces.TraceHeader(seed=7, trio_version=trio.__version__, command=["test"])
MIB = 1 << 20
#: The longest a test lets a stalled write wait before giving up (it is released long
#: before: this only keeps a failing test from hanging).
STALL_LIMIT = 30.0


class Blob(msgspec.Struct, frozen=True):
    data: str


class Sink(runtime.Actor):
    """Takes blobs and does nothing with them."""

    async def handle(self, msg: Blob | Get) -> int:
        return 0


class StalledDisk:
    """A trace file whose writes block until ``release`` (then go to a real file)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb", buffering=0)  # closed by close()
        self._gate = threading.Event()
        self.entered = threading.Event()  # a write has started (and is blocked)
        self.closed = False

    def write(self, data: memoryview) -> int | None:
        self.entered.set()
        if not self._gate.wait(STALL_LIMIT):
            raise OSError("the test never released the disk")
        return self._file.write(data)

    def release(self) -> None:
        self._gate.set()

    def close(self) -> None:
        self.closed = True
        self._file.close()


def stalled_sink(path: Path, **kw: float) -> tuple[traces.JsonlFileSink, StalledDisk]:
    disks: list[StalledDisk] = []

    def opener(p: Path) -> StalledDisk:
        disks.append(StalledDisk(p))
        return disks[0]

    sink = traces.JsonlFileSink(path, HEADER, opener=opener, **kw)  # type: ignore[arg-type]
    return sink, disks[0]


def file_records(path: Path) -> list[traces.TraceEvent]:
    """The records of a trace file as written (folded handles kept; a run line as the
    records it stands for), header checked."""
    lines = path.read_bytes().splitlines()
    assert msgspec.json.decode(lines[0], type=traces.TraceHeader) == HEADER
    written = [msgspec.json.decode(line, type=traces.TraceEvent) for line in lines[1:]]
    return list(traces.records_of(written))


# -- JsonlFileSink ------------------------------------------------------------------------


async def test_a_stalled_disk_never_stops_the_actors(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The done-when of the issue: 5,000 tells are handled while no byte reaches the
    disk; what does not fit the budget is dropped and counted; released, the disk gets
    the header and the accepted records, in order."""
    path = tmp_path / "stalled.jsonl"
    budget = 64 * 1024
    sink, disk = stalled_sink(path, chunk_size=4096, max_buffer=budget)
    everything = traces.MemorySink()  # every record the tracer wrote, for comparison
    try:
        async with runtime.open_runtime(tracer=traces.Tracer(sink, everything)) as rt:
            ref = await rt.spawn(Counter, name="counter")
            for _ in range(5000):
                await ref.tell(Incr())
            assert await ref.ask(Get()) == 5000  # the actors kept running
            assert disk.entered.wait(STALL_LIMIT)  # the writer is stuck in its first write
            assert path.read_bytes() == b""  # nothing reached the disk
            stats = sink.statistics()
            assert sink.dropped > 0
            assert stats.written + stats.dropped == len(everything.records)
            assert sink.pending_bytes == stats.buffered + stats.queued <= budget
            disk.release()
        # (leaving the block flushed the tracer: the sink waited for its writer)
    finally:
        disk.release()
        sink.close()
    written = file_records(path)
    assert len(written) == sink.written
    assert len(everything.records) - len(written) == sink.dropped
    seqs = [r.seq for r in written]
    assert seqs == sorted(set(seqs))  # in order, once each
    kept = set(seqs)
    assert written == [r for r in everything.records if r.seq in kept]
    # New records were dropped, the oldest kept: the file starts where the run started.
    assert written[: len(written) // 2] == everything.records[: len(written) // 2]
    assert disk.closed


async def test_a_stalled_disk_never_stops_the_actors_whose_tracer_records_runs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The same with the file as the tracer's lone sink (runs: handled tells, and sends
    with their payloads, encoded when a run is written): a run that does not fit the
    budget is dropped whole (its records counted), so the file holds the oldest records,
    in order, each whole."""

    async def tell_5000(tracer: traces.Tracer) -> None:
        async with runtime.open_runtime(tracer=tracer, seed=3) as rt:
            ref = await rt.spawn(Counter, name="counter")
            for _ in range(5000):
                await ref.tell(Incr())
            assert await ref.ask(Get()) == 5000  # the actors kept running
            if tracer.sinks[0] is sink:
                assert disk.entered.wait(STALL_LIMIT)
                assert path.read_bytes() == b""  # nothing reached the disk
                assert sink.dropped > 0
                disk.release()

    path = tmp_path / "stalled-runs.jsonl"
    sink, disk = stalled_sink(path, chunk_size=4096, max_buffer=64 * 1024)
    tracer = traces.Tracer(sink, payloads=True)
    assert tracer.runs and tracer._runs_sends
    try:
        await tell_5000(tracer)
    finally:
        disk.release()
        sink.close()
    reference = traces.MemorySink()  # the same run's records, all kept
    await tell_5000(traces.Tracer(reference, payloads=True))

    def shape(r: traces.TraceEvent) -> tuple[object, ...]:
        return (r.seq, r.kind, r.actor, r.msg_id, r.msg_type, bytes(r.payload), r.outcome)

    written = file_records(path)
    assert len(written) == sink.written
    assert sink.written + sink.dropped == len(reference.records)
    seqs = [r.seq for r in written]
    assert seqs == sorted(set(seqs))
    assert [shape(r) for r in written] == [
        shape(r) for r in reference.records if r.seq in set(seqs)
    ]
    assert seqs[:100] == list(range(1, 101))  # the oldest kept


async def test_the_file_sink_holds_a_32_mib_payload_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A record is held once, encoded: the 32 MiB payload (on the send only) costs
    32 MiB of the budget and of memory; a second one does not fit and is dropped."""
    sink, disk = stalled_sink(tmp_path / "big.jsonl", max_buffer=48 * MIB)
    blob = Blob("x" * (32 * MIB))
    try:
        async with runtime.open_runtime(tracer=traces.Tracer(sink, payloads=True)) as rt:
            ref = await rt.spawn(Sink, name="sink")
            await ref.ask(Get())
            assert disk.entered.wait(STALL_LIMIT)
            before = sink.pending_bytes
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                await ref.ask(blob)  # send (payload), receive, handle, reply
                grown = tracemalloc.get_traced_memory()[0] - base
            finally:
                tracemalloc.stop()
            held = sink.pending_bytes - before
            assert 32 * MIB < held < 32 * MIB + 4096
            assert 32 * MIB < grown < 34 * MIB  # the encoded record, nothing else
            assert sink.dropped == 0
            await ref.ask(blob)  # does not fit: dropped, counted, never blocks
            assert sink.dropped == 1
            assert sink.pending_bytes <= 48 * MIB
            disk.release()
    finally:
        disk.release()
        sink.close()
    (big,) = [
        r
        for r in file_records(tmp_path / "big.jsonl")
        if len(r.payload) > 0 and r.msg_type == "Blob"
    ]
    assert msgspec.json.decode(big.payload, type=Blob) == blob


def test_flush_waits_for_the_writer_at_most_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "flush.jsonl"
    sink, disk = stalled_sink(path)
    try:
        sink.write(traces.TraceEvent(1, 0.0, "start", "a"))
        assert sink.flush(timeout=0.01) is False  # a stalled disk: gives up, never hangs
        assert sink.statistics().queued > 0
        disk.release()
        assert sink.flush() is True
        assert sink.statistics() == traces.SinkStatistics(written=1, dropped=0, buffered=0)
        assert file_records(path) == [traces.TraceEvent(1, 0.0, "start", "a")]
    finally:
        disk.release()
        sink.close()


def test_close_on_a_disk_stalled_past_the_timeout_drops_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "abandoned.jsonl"
    sink, disk = stalled_sink(path, flush_timeout=0.01)
    for seq in range(1, 11):
        sink.write(traces.TraceEvent(seq, 0.0, "start", "a"))
    assert disk.entered.wait(STALL_LIMIT)
    sink.close()  # returns although the header write is still blocked
    sink.write(traces.TraceEvent(11, 0.0, "start", "a"))  # after close: dropped
    disk.release()
    sink.close()  # again: joins the writer, which closed the file
    assert disk.closed
    assert sink.written == 10 and sink.dropped == 11
    assert file_records(path) == []  # the header only


def test_a_failed_write_is_counted_never_raised(tmp_path: Path) -> None:
    class Broken:
        def write(self, data: memoryview) -> int:
            raise OSError("disk full")

        def close(self) -> None:
            pass

    sink = traces.JsonlFileSink(tmp_path / "x.jsonl", opener=lambda p: Broken())
    for seq in range(1, 4):
        sink.write(traces.TraceEvent(seq, 0.0, "start", "a"))
    assert sink.flush() is True  # done with (lost), not stuck
    assert sink.written == 3 and sink.dropped == 3
    sink.close()


def test_a_sink_never_closed_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    """The writer thread is not a daemon (nothing is cut short at exit) but ends when it
    has nothing to write: a program that forgets ``close`` still exits, file complete."""
    path = tmp_path / "unclosed.jsonl"
    script = (
        "import sys\n"
        "from trioxide import traces\n"
        "sink = traces.JsonlFileSink(sys.argv[1])\n"
        "for seq in range(1, 1001):\n"
        "    sink.write(traces.TraceEvent(seq, 0.0, 'start', 'a'))\n"
        "sink.flush()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
    assert [e.seq for e in traces.read_trace(path).events] == list(range(1, 1001))


# -- MemorySink ---------------------------------------------------------------------------


def test_memory_sink_bounds_payload_bytes_dropping_the_oldest() -> None:
    sink = traces.MemorySink(maxlen=100, max_bytes=1000)
    raw = msgspec.Raw(b'"' + b"p" * 398 + b'"')  # 400 bytes
    events = [traces.TraceEvent(i, 0.0, "send", "a", payload=raw) for i in range(1, 6)]
    for e in events[:2]:
        sink.write(e)
    assert sink.dropped == 0 and sink.nbytes == 2 * sink.RECORD_BYTES + 800
    sink.write(events[2])  # 1200 > 1000: the oldest goes
    assert sink.records == events[1:3] and sink.dropped == 1
    small = traces.TraceEvent(6, 0.0, "start", "a")
    sink.write(small)
    sink.write(traces.TraceEvent(7, 0.0, "fail", "a", detail="d" * 2000))  # alone too big
    assert sink.records == [*events[1:3], small]
    assert sink.dropped == 2 and sink.written == 5
    assert sink.nbytes == 3 * sink.RECORD_BYTES + 800 <= 100 * sink.RECORD_BYTES + 1000
    sink.clear()
    assert sink.nbytes == 0 and sink.dropped == 2


def test_memory_sink_forgets_the_bytes_of_records_the_ring_overwrote() -> None:
    sink = traces.MemorySink(maxlen=2, max_bytes=10_000)
    for seq in range(1, 101):
        sink.write(traces.TraceEvent(seq, 0.0, "fail", "a", detail="x" * 100))
    assert sink.nbytes == 2 * sink.RECORD_BYTES + 200
    assert sink.dropped == 98


async def memory_grown_by_asking(tracer: traces.Tracer, blob: Blob) -> int:
    """Bytes still allocated (tracemalloc) after one ``ask(blob)`` of a ``Sink`` actor
    traced by *tracer*, measured inside the runtime (the sinks keep what they hold)."""
    async with runtime.open_runtime(tracer=tracer) as rt:
        ref = await rt.spawn(Sink, name="sink")
        await ref.ask(Get())
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            await ref.ask(blob)
            return tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()


async def test_a_32_mib_payload_costs_32_mib_once_in_a_memory_sink(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Traced through send, receive, handle and reply, a message's payload is recorded
    once (on the send), not once per event. (Once is 48 MiB, not 32: msgspec 0.23 leaves
    its encoder's 1.5x growth slack in the bytes it returns, which the payload keeps.)"""
    sink = traces.MemorySink()
    blob = Blob("x" * (32 * MIB))
    grown = await memory_grown_by_asking(traces.Tracer(sink, payloads=True), blob)
    assert 32 * MIB < grown < 49 * MIB  # once: twice would be at least 64 MiB
    about_blob = [e for e in sink.events if e.msg_type == "Blob" or e.corr == e.msg_id]
    assert [e.kind for e in sink.events if len(e.payload) > 0 and e.msg_type == "Blob"] == ["send"]
    assert {"send", "receive", "handle"} <= {e.kind for e in about_blob}


async def test_a_byte_bounded_ring_lets_a_big_payload_go(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Through ``write`` (here: a tracer with two sinks) the byte bound holds: a payload
    bigger than ``max_bytes`` is dropped at once, and its memory is freed."""
    ring = traces.MemorySink(max_bytes=16 * MIB)
    other = traces.MemorySink(maxlen=1)
    blob = Blob("x" * (32 * MIB))
    grown = await memory_grown_by_asking(traces.Tracer(ring, other, payloads=True), blob)
    assert grown < MIB
    assert ring.nbytes <= ring.maxlen * ring.RECORD_BYTES + ring.max_bytes
    assert ring.dropped >= 1
    assert all(len(e.payload) < MIB for e in ring.records)


async def test_a_memory_sink_written_by_a_folding_tracer_counts_every_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A folded handle stands for its receive too: ``write`` counts it twice, so that
    ``dropped`` (written - held) is never negative."""
    a, b = traces.MemorySink(), traces.MemorySink()
    async with runtime.open_runtime(tracer=traces.Tracer(a, b)) as rt:
        ref = await rt.spawn(Counter, name="counter")
        for _ in range(3):
            ref.tell_nowait(Incr())
        assert await ref.ask(Get()) == 3
    assert any(traces.is_folded(r) for r in a.records)
    assert a.written == len(a) and a.dropped == 0
    assert b.statistics() == a.statistics()


@pytest.mark.parametrize("bad", [{"maxlen": 0}, {"max_bytes": -1}])
def test_memory_sink_refuses_bad_bounds(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        traces.MemorySink(**bad)


# -- under the fault fuzzer ------------------------------------------------------------------


class Counting:
    """A sink that counts the records it is given."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, event: traces.TraceEvent) -> None:
        self.n += 1

    def close(self) -> None:
        pass


def test_a_stalled_disk_changes_nothing_the_actors_do_in_fuzzed_runs(tmp_path: Path) -> None:
    """The fault fuzzer's scenarios (random actor trees, crashes, stops, timeouts, asks in
    cycles), each traced twice: once as usual, once also into a file sink whose disk is
    stalled for the whole run (and a buffer of 4 KiB). The stall changes nothing the actors
    do - the same trace, byte for byte, every guarantee held - and the file sink drops and
    counts what did not fit; once the disk is back, what it kept is written, in order and
    equal to the trace."""
    from ..runtime.fuzz import check, generate, run_world

    dropped_somewhere = False
    for seed in range(40):
        scenario = generate(seed)
        base = run_world(scenario, True)
        path = tmp_path / f"stalled-{seed}.jsonl"
        sink, disk = stalled_sink(path, max_buffer=4096, chunk_size=512)
        counted = Counting()
        stalled = run_world(scenario, True, extra_sinks=[sink, counted])
        assert check(scenario, stalled) == [], seed
        assert [msgspec.json.encode(e) for e in stalled.events] == [
            msgspec.json.encode(e) for e in base.events
        ], f"seed {seed}: the stalled disk changed the run"
        assert disk.entered.is_set() or sink.written == 0  # the disk really was stalled
        disk.release()
        sink.close()
        records = file_records(path)
        assert len(records) == sink.written  # what it accepted is in the file
        assert sink.written + sink.dropped == counted.n  # every record is accounted for
        kept = list(traces.expand(records))
        by_seq = {e.seq: msgspec.json.encode(e) for e in base.events}
        assert [e.seq for e in kept] == sorted(e.seq for e in kept)
        assert all(by_seq[e.seq] == msgspec.json.encode(e) for e in kept), seed
        dropped_somewhere |= sink.dropped > 0
    assert dropped_somewhere  # the 4 KiB buffer overflowed in some scenarios
