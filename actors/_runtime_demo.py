"""A small, complete runtime example: what ``trioxide demo`` runs until the sled agent lands.

A "disk pool" actor supervises three disk workers; a client asks them for work with
timeouts; one worker crashes and is restarted (permanent, intensity 3 in 10 s); a
request queue actor uses admission (ignore / reject); a Watch publishes pool health;
timers drive a heartbeat. Everything runs in virtual time (MockClock), so the 10-minute
scenario finishes in well under a second, and the whole run is written as a trace.
"""

from __future__ import annotations

import sys
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import trio
import trio.testing

from trioxide import runtime, traces
from trioxide.runtime import Actor, Admit, Rejected, Terminated, Watch
from trioxide.traces.cli import run_command

# -- messages ---------------------------------------------------------------------------


class Read(msgspec.Struct, frozen=True):
    block: int


class Corrupt(msgspec.Struct, frozen=True):
    pass


class Heartbeat(msgspec.Struct, frozen=True):
    pass


class Health(msgspec.Struct, frozen=True):
    pass


class Start(msgspec.Struct, frozen=True):
    pass


class Halt(msgspec.Struct, frozen=True):
    pass


# -- actors -----------------------------------------------------------------------------


class Disk(Actor):
    """Serves reads after a per-disk latency; ``Corrupt`` crashes it (a tell failure)."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.reads = 0

    async def handle(self, msg: Read | Corrupt) -> int | None:
        if isinstance(msg, Corrupt):
            raise OSError("checksum mismatch")
        await trio.sleep(self.latency)
        self.reads += 1
        return msg.block * 2


class Pool(Actor):
    """Supervises the disks, counts heartbeats, publishes how many disks are up."""

    def __init__(self, health: Watch[int]) -> None:
        self.health = health
        self.disks: list[runtime.ActorRef] = []
        self.beats = 0

    async def on_start(self) -> None:
        for i, latency in enumerate((0.010, 0.020, 5.0)):
            ref = await self.spawn(
                Disk, latency, name=f"disk-{i}", restart="permanent", max_restarts=3, within=10.0
            )
            self.monitor(ref)
            self.disks.append(ref)
        self.health.set(len(self.disks))
        self.send_every(60.0, Heartbeat())

    async def handle(self, msg: Heartbeat | Health | Terminated) -> object:
        match msg:
            case Heartbeat():
                self.beats += 1
            case Health():
                return {d.name: d.statistics().restarts for d in self.disks}
            case Terminated(ref):
                self.disks.remove(ref)
                self.health.set(len(self.disks))
        return None


class Requests(Actor):
    """A tiny Propolis-like request queue: Start is idempotent, Halt wins."""

    def __init__(self) -> None:
        self.started = False
        self.halting = False

    def admit(self, msg: object) -> Admit:
        if self.halting:
            return Admit.reject(Rejected("HaltPending", "Instance is preparing to stop"))
        if isinstance(msg, Start) and self.started:
            return Admit.ignore(reply="already started")
        if isinstance(msg, Start):
            self.started = True
        if isinstance(msg, Halt):
            self.halting = True
        return Admit.ENQUEUE

    async def handle(self, msg: Start | Halt) -> str:
        await trio.sleep(1.0)
        return f"{type(msg).__name__.lower()} done"


# -- the scenario -----------------------------------------------------------------------


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    outcomes: Tally[str] = field(default_factory=Tally)

    def say(self, text: str) -> None:
        self.lines.append(f"[t={trio.current_time():8.3f}] {text}")
        print(self.lines[-1])


async def scenario(report: Report, tracer: traces.Tracer) -> None:
    health: Watch[int] = Watch(0, name="pool.health")
    async with runtime.open_runtime(tracer=tracer, name="demo") as rt:
        pool = await rt.spawn(Pool, health, name="pool")
        requests = await rt.spawn(Requests, name="requests")
        report.say(f"spawned {[a.path for a in rt.actors()]}; disks up: {health.value}")

        inst = pool.instance
        assert isinstance(inst, Pool)
        disks = list(inst.disks)

        async def client(i: int) -> None:
            disk = disks[i % len(disks)]
            try:
                value = await disk.ask(Read(i), timeout=1.0)
                report.outcomes[f"reply from {disk.name}"] += 1
                assert value == i * 2
            except runtime.AskTimeout:
                report.outcomes[f"timeout from {disk.name}"] += 1
            except runtime.ActorGone:
                report.outcomes[f"gone: {disk.name}"] += 1

        async with trio.open_nursery() as n:
            for i in range(30):
                n.start_soon(client, i)
        report.say(f"30 reads done: {dict(sorted(report.outcomes.items()))}")

        await disks[0].tell(Corrupt())
        await trio.sleep(0.001)
        report.say(f"disk-0 crashed and was restarted: restarts={disks[0].statistics().restarts}")
        assert await disks[0].ask(Read(21), timeout=1.0) == 42
        report.say("disk-0 serves again (same ref, mailbox kept)")

        report.say(f"Start -> {await requests.ask(Start())}")
        report.say(f"Start again -> {await requests.ask(Start())!r} (admission: ignore)")
        await requests.tell(Halt())
        try:
            await requests.ask(Start())
        except Rejected as exc:
            report.say(f"Start after Halt -> Rejected({exc})")

        await trio.sleep(600)  # ten virtual minutes of heartbeats
        report.say(f"heartbeats after 10 min: {inst.beats}; pool health {await pool.ask(Health())}")
        await disks[2].stop("decommissioned")
        await health.wait_for(lambda up: up == 2)
        report.say(f"disk-2 stopped; the pool saw Terminated; disks up: {health.value}")
    report.say("runtime closed: every actor stopped in reverse order")


def run(out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    header = traces.TraceHeader(
        seed=None, trio_version=trio.__version__, command=["trioxide", "demo"]
    )
    sink = traces.JsonlFileSink(out, header)
    memory = traces.MemorySink()
    tracer = traces.Tracer(sink, memory, payloads=True)
    report = Report()
    wall = time.perf_counter()
    run_command(scenario, report, tracer, clock=trio.testing.MockClock(autojump_threshold=0))
    tracer.close()
    wall = time.perf_counter() - wall
    kinds = Tally(e.kind for e in memory.events)
    print()
    print(f"trace: {out} ({sink.written} events, {sink.dropped} dropped)")
    print("events by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))
    print(f"wall time: {wall:.3f} s for {memory.events[-1].t:.1f} s of virtual time")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(Path("traces-out/demo.jsonl")))
