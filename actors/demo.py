"""``trioxide demo``: a whole simulated sled under load, in virtual time.

* N VMMs (default 200) with start / reboot / stop churn, some registered again later;
* one VMM whose Crucible disk has a black-holed downstairs target, fixed by a VCR
  replacement while it is blocked in activation;
* one VMM stopped while it is blocked on activation (startup aborted, backend not stopped);
* a 120 s reservoir allocation that gates the first starts; a 60 s Nexus outage;
* 30-minute zone bundles (in ZoneCleanup, never in a runner); a few Propolis crashes.

The #3325 invariants are checked after every handled message (incrementally: for the VMMs
the message touched; for all of them every 1,000 messages and at the end). Every API call
is counted when sent and when answered (a reply or a typed error): the two totals must be
equal - nothing hangs, nothing is lost. Everything is seeded: the same seed gives the same trace.
"""

from __future__ import annotations

import gc
import shlex
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from trioxide import traces
from trioxide.runtime import open_runtime
from trioxide.runtime.testing import run_seeded

from .errors import SledAgentError, VmmTearingDown
from .instance_manager import InstanceManager
from .instance_runner import RunnerConfig, Target, VmmSpec
from .invariants import FULL_EVERY, INVARIANTS, IncrementalChecker, SledView, TraceAttribution
from .propolis.crucible import ReplaceRequestInvalid
from .propolis.request_queue import RequestDenied
from .reservoir import ReservoirMode
from .sim.disks import vmm_disk
from .sim.hypervisor import GiB, SimHypervisor
from .sim.propolis_host import Crash, PropolisHost
from .sim.zones import SimZones
from .sled_agent import SledAgent, SledAgentClient, SledConfig, SledWorld
from .vmm_state import SledVmmState, VmmKind
from .zone_cleanup import ZoneCleanup

if TYPE_CHECKING:
    from trioxide.traces.server import TraceServer

__all__ = ["INCIDENTS", "DemoOptions", "run_demo", "view_command"]

T = TypeVar("T")

#: The sled's VMM reservoir (every demo VMM has 1 GiB of guest memory).
RESERVOIR_MIB = 120 * 1024


#: How long a VMM registered again while its previous incarnation tore down may take to
#: run again before the demo stops it (virtual seconds): its old zone's cleanup comes
#: first, a 30-minute bundle behind those of the zones waited for before it.
REREG_START_LIMIT = 12 * 3600.0

#: The incidents the demo stages, by VMM id: what happens to each.
INCIDENTS = {
    "vmm-vcr": "a Crucible downstairs target is black-holed, so activation blocks; a VCR "
    "replacement fixes it and the VMM runs",
    "vmm-abort": "stopped while blocked in Crucible activation: the Stop cancels the "
    "activation (intended, not an error) and the VMM is destroyed",
}


@dataclass(frozen=True)
class DemoOptions:
    vmms: int = 200
    seed: int = 1
    trace: Path = Path("traces-out/demo.jsonl")
    duration: float = 3 * 3600.0  # virtual seconds of churn before the sled drains
    progress_every: float = 900.0  # virtual seconds between progress lines


@dataclass
class Stats:
    sent: int = 0
    answered: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    start_latencies: list[float] = field(default_factory=list)
    checks: int = 0
    violations: list[str] = field(default_factory=list)
    reregistered: int = 0  # VMMs registered again while the previous one tore down
    restart_waits: list[float] = field(default_factory=list)  # ... until Running again
    tearing_down_refusals: int = 0  # registrations refused VmmTearingDown (retried)


class _InvariantSink:
    """Checks the sled invariants after every handled message (a trace sink), incrementally:
    the per-VMM forms for the VMMs the events since the previous check touched
    (``invariants.TraceAttribution``), every invariant in full every ``full_every``
    handled messages and once the sled has drained (``check_full``). Detection delay: a
    violation whose VMM an event names is reported after the next handled message, any
    other one within ``full_every`` handled messages (``invariants.IncrementalChecker``).

    ``stats.checks`` counts invariant evaluations: one invariant on one VMM, or on the
    whole sled."""

    def __init__(self, stats: Stats, full_every: int = FULL_EVERY) -> None:
        self.stats = stats
        self.view: SledView | None = None
        self.checker = IncrementalChecker(INVARIANTS, full_every=full_every)
        self.attribution = TraceAttribution(self.checker, root="sled")

    def write(self, event: traces.TraceEvent) -> None:
        self.attribution.write(event)
        if event.kind != "handle" or self.view is None:
            return
        self._record(self.checker.check(self.view), event.t)

    def check_full(self, t: float) -> None:
        """Every invariant, in full, now (at the end of the run)."""
        if self.view is not None:
            self._record(self.checker.check_full(self.view), t)

    def _record(self, violations: list[tuple[str, str]], t: float) -> None:
        self.stats.checks = self.checker.checks
        for name, why in violations:
            self.stats.violations.append(f"{name} at t={t:g}: {why}")

    def close(self) -> None:
        pass


async def scenario(
    opts: DemoOptions, stats: Stats, sink: _InvariantSink, tracer: traces.Tracer
) -> dict[str, Any]:
    """Run the sled under load; the summary. Once the sled has started, the heap so far
    (modules, the runtime, the sled's actors: ~40k objects that live as long as the run)
    is frozen out of the cyclic GC's full collections (``gc.freeze``; a third less time
    in them at 2,000 VMMs) - unless something else froze objects already - and unfrozen
    when the run ends."""
    frozen = gc.get_freeze_count() > 0
    try:
        return await _scenario(opts, stats, sink, tracer, freeze=not frozen)
    finally:
        if not frozen:
            gc.unfreeze()


async def _scenario(
    opts: DemoOptions, stats: Stats, sink: _InvariantSink, tracer: traces.Tracer, *, freeze: bool
) -> dict[str, Any]:
    rng = __import__("random").Random(opts.seed)
    world = SledWorld(
        zones=SimZones(install_time=4.0, boot_time=2.0, halt_time=5.0, bundle_time=1800.0),
        hypervisor=SimHypervisor(physical_bytes=128 * GiB, seconds_per_gib=1.0),
    )
    world.zones.on_change(sink.attribution.zone_changed)
    config = SledConfig(reservoir=ReservoirMode.size_mib(RESERVOIR_MIB), runner=RunnerConfig())
    final: dict[str, str] = {}
    async with open_runtime(tracer=tracer, name="demo", seed=opts.seed) as rt:
        sled_ref = await rt.spawn(SledAgent, world, config, name="sled")
        api = SledAgentClient(sled_ref)
        manager = api.manager.instance
        cleanup = api.agent.refs["zone-cleanup"].instance
        host_actor = api.agent.refs["propolis-host"].instance
        assert isinstance(manager, InstanceManager) and isinstance(cleanup, ZoneCleanup)
        assert isinstance(host_actor, PropolisHost)
        sink.view = SledView(
            manager,
            cleanup,
            world.zones,
            world.nexus.vmm_history,
            host=host_actor,
            nexus_failed=world.nexus.failed_ids,
        )
        if freeze:
            gc.freeze()
        host = api.agent.refs["propolis-host"]

        async def call(fn: Callable[..., Awaitable[T]], *args: Any) -> T | None:
            stats.sent += 1
            t0 = trio.current_time()
            try:
                result = await fn(*args)
            except (SledAgentError, RequestDenied, ReplaceRequestInvalid) as exc:
                stats.errors[type(exc).__name__] += 1
                result = None
            stats.answered += 1
            stats.latencies.append(trio.current_time() - t0)
            return result

        async def wait_state(pid: str, want: SledVmmState, limit: float) -> bool:
            deadline = trio.current_time() + limit
            while trio.current_time() < deadline:
                state = await call(api.get_state, pid)
                if state is None:
                    return False
                if state.state is want:
                    return True
                await trio.sleep(2.0)
            return False

        async def nexus_sees_running(pid: str, after: int, limit: float) -> bool:
            """Whether Nexus records *pid* running (at a generation above *after*) within
            *limit*: how a saga waits for a long start - on Nexus's record, which the
            runner's publications update, not by asking the sled every few seconds."""
            deadline = trio.current_time() + limit
            while trio.current_time() < deadline:
                _t, state, gen = world.nexus.vmm_history[pid][-1]
                if gen > after and state.kind is VmmKind.RUNNING:
                    return True
                await trio.sleep(30.0)
            return False

        async def gone(pid: str, limit: float = 900.0) -> None:
            deadline = trio.current_time() + limit
            while trio.current_time() < deadline and manager.find(pid) is not None:  # noqa: ASYNC110
                await trio.sleep(5.0)

        # Nexus places a VMM on a sled only while the sled's reservoir has room for its
        # memory (upstream: omicron nexus/src/app/sagas/instance_common.rs,
        # reserve_vmm_resources, reserves the guest RAM on a sled that has it before the
        # VMM is placed there; tests/sled/test_demo.py pins it): without this, at thousands of
        # VMMs the arrivals overcommit the sled and the late starts fail for want of
        # guest memory - a placement bug, not the sled's. Every VMM here has 1 GiB.
        placement = trio.CapacityLimiter(RESERVOIR_MIB // 1024)

        async def placed(fn: Callable[..., Awaitable[None]], *args: Any) -> None:
            async with placement:
                await fn(*args)

        async def arrivals(work: trio.Nursery) -> None:
            """VMM *i* arrives at a seeded time in the first third of the run; its
            lifecycle starts once it is placed (a slot of the reservoir taken on its
            behalf, in arrival order), so the VMMs still waiting to be placed cost a
            list entry each, not a task."""
            start = trio.current_time()
            arriving = sorted((rng.uniform(0, opts.duration / 3), i) for i in range(opts.vmms))
            for at, i in arriving:
                await trio.sleep_until(start + at)
                await placement.acquire_on_behalf_of(("vmm", i))
                work.start_soon(lifecycle, i)

        async def lifecycle(i: int) -> None:
            for round_ in range(rng.randint(1, 3)):
                if round_ == 0:  # placed by arrivals()
                    try:
                        await one_vmm(i, round_)
                    finally:
                        placement.release_on_behalf_of(("vmm", i))
                else:
                    async with placement:
                        await one_vmm(i, round_)
                await trio.sleep(rng.uniform(30, 600))

        async def one_vmm(i: int, round_: int) -> None:
            """One VMM's life on the sled, from registration until it is gone."""
            pid = f"vmm-{i:03d}-{round_}"
            spec = VmmSpec(2, 1 * GiB, vmm_disk(pid))
            t_start = trio.current_time()
            await call(api.register, pid, f"inst-{i:03d}", spec)
            await call(api.ensure_state, pid, Target.RUNNING)
            if not await wait_state(pid, SledVmmState.RUNNING, 600.0):
                final[pid] = "never ran"
                await gone(pid)
                return
            stats.start_latencies.append(trio.current_time() - t_start)
            await trio.sleep(rng.uniform(60, 1200))
            if rng.random() < 0.3:
                await call(api.ensure_state, pid, Target.REBOOT)
                await trio.sleep(rng.uniform(10, 300))
            if rng.random() < 0.03:
                await host.tell(Crash(pid))  # a Propolis crash: the VMM fails
                await gone(pid)
                return
            await call(api.ensure_state, pid, Target.STOPPED)
            await gone(pid)

        async def blackholed_then_fixed() -> None:
            pid = "vmm-vcr"
            world.network.blackhole(f"{pid}-ds-b")
            await call(api.register, pid, "inst-vcr", VmmSpec(2, 1 * GiB, vmm_disk(pid)))
            await call(api.ensure_state, pid, Target.RUNNING)
            await trio.sleep(600)  # blocked in activation: Starting, no Running
            fixed = vmm_disk(pid, gen=2, middle=f"{pid}-ds-new")["disk0"]
            await call(api.replace_vcr, pid, "disk0", fixed)
            await wait_state(pid, SledVmmState.RUNNING, 300.0)
            await trio.sleep(1800)
            await call(api.ensure_state, pid, Target.STOPPED)
            await gone(pid)

        async def stopped_while_blocked() -> None:
            pid = "vmm-abort"
            world.network.blackhole(f"{pid}-ds-c")
            await call(api.register, pid, "inst-abort", VmmSpec(2, 1 * GiB, vmm_disk(pid)))
            await call(api.ensure_state, pid, Target.RUNNING)
            await trio.sleep(900)
            await call(api.ensure_state, pid, Target.STOPPED)  # aborts the startup
            await gone(pid)

        async def reregistered_while_tearing_down(i: int) -> None:
            """The race of #3325: the VMM is deleted and at once registered again (a new
            start saga for the same id) while its runner still tears it down. With start
            tokens the registration is refused (VmmTearingDown) until the old one left the
            table, and the new runner waits for the old zone's cleanup: no zone collides."""
            pid = f"vmm-rereg-{i}"
            spec = VmmSpec(2, 1 * GiB, vmm_disk(pid))
            # Early in the run, all within two minutes: their old zones reach cleanup together,
            # so each new runner waits for the bundles of the others' zones waited for first.
            await trio.sleep(rng.uniform(0, 120))
            await call(api.register, pid, f"inst-rereg-{i}", spec)
            await call(api.ensure_state, pid, Target.RUNNING)
            await wait_state(pid, SledVmmState.RUNNING, 600.0)
            await trio.sleep(rng.uniform(10, 60))
            stats.reregistered += 1
            async with trio.open_nursery() as teardown:
                # Nexus deletes the VMM (the runner kills Propolis, hands the zone over,
                # leaves the table)...
                teardown.start_soon(call, api.unregister, pid)
                await trio.sleep(0.1)
                while True:  # ...while a new start saga registers the same id at once
                    stats.sent += 1
                    try:
                        known = world.nexus.vmm_history.get(pid, [])
                        vmm_gen = known[-1][2] if known else 1  # Nexus's record
                        await api.register(pid, f"inst-rereg-{i}", spec, vmm_gen=vmm_gen)
                    except VmmTearingDown:
                        stats.tearing_down_refusals += 1
                        await trio.sleep(0.5)
                        continue
                    finally:
                        stats.answered += 1
                    break
            # The new runner waits for the old zone's cleanup - its 30-minute bundle, behind
            # the bundles of the zones waited for before it (ZoneCleanup) - then starts.
            t_wait = trio.current_time()
            await call(api.ensure_state, pid, Target.RUNNING)
            if await nexus_sees_running(pid, vmm_gen, REREG_START_LIMIT):
                stats.restart_waits.append(trio.current_time() - t_wait)
                await trio.sleep(rng.uniform(60, 600))
            else:
                final[pid] = "never ran"  # and the stop below aborts its start
            await call(api.ensure_state, pid, Target.STOPPED)
            await gone(pid)

        async def nexus_outage() -> None:
            await trio.sleep(opts.duration / 4)
            world.nexus.outage(until=trio.current_time() + 60.0)

        async def progress() -> None:
            while True:
                draining = trio.current_time() > opts.duration
                await trio.sleep(opts.progress_every * (96 if draining else 1))
                alive = sum(1 for e in manager.table.values() if e.runner_alive)
                print(
                    f"  t={trio.current_time():7.0f}s  vmms live={alive:3d}  "
                    f"requests sent={stats.sent} answered={stats.answered}  "
                    f"invariant checks={stats.checks:,}  zones={world.zones.count()}",
                    flush=True,
                )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(progress)
            async with trio.open_nursery() as work:
                work.start_soon(arrivals, work)
                for i in range(max(1, opts.vmms // 20)):
                    work.start_soon(placed, reregistered_while_tearing_down, i)
                work.start_soon(placed, blackholed_then_fixed)
                work.start_soon(placed, stopped_while_blocked)
                work.start_soon(nexus_outage)
            # Drain: zone bundles are serialized sled-wide (30 min each) - in virtual time.
            while world.zones.count() or manager.table:  # noqa: ASYNC110
                await trio.sleep(600)
            sink.check_full(trio.current_time())  # the incremental checks' last full one
            nursery.cancel_scope.cancel()
        for pid, history in world.nexus.vmm_history.items():
            final.setdefault(pid, str(history[-1][1]))
        special = {
            pid: " -> ".join(str(s) for _t, s, _g in world.nexus.vmm_history.get(pid, []))
            for pid in INCIDENTS
        }
        summary = {
            "special": special,
            "nexus_final": Counter(final.values()),
            "zones_left": world.zones.count(),
            "bundles": world.zones.statistics().bundles_collected,
            "zone_calls": sum(world.zones.statistics().calls.values()),
            "zone_collisions": world.zones.collisions(),
            "t_end": trio.current_time(),
        }
    return summary


def report(
    summary: dict[str, Any],
    stats: Stats,
    wall: float,
    opts: DemoOptions,
    file_sink: traces.JsonlFileSink,
) -> None:
    """Print the summary table."""
    result = summary

    def pct(values: list[float]) -> tuple[float, float]:
        ordered = sorted(values) or [0.0]
        return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    p50, p99 = pct(stats.latencies)
    s50, s99 = pct(stats.start_latencies)
    restarted = (
        f"; running again after p50 {statistics.median(stats.restart_waits):.0f} s, "
        f"max {max(stats.restart_waits):.0f} s (old zone's bundle first), "
        f"{len(stats.restart_waits)} of {stats.reregistered}"
        if stats.restart_waits
        else f"; none running again within {REREG_START_LIMIT:.0f} s"
    )
    by_state = ", ".join(f"{k}: {v}" for k, v in sorted(result["nexus_final"].items()))
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(stats.errors.items())) or "none"
    balance = (
        "  (equal: nothing hung, nothing lost)" if stats.sent == stats.answered else "  MISMATCH"
    )
    rows = [
        ("VMMs by final state (Nexus)", by_state),
        ("requests sent / answered", f"{stats.sent} / {stats.answered}{balance}"),
        ("typed error answers", errors),
        (
            "#3325: re-registered while tearing down",
            f"{stats.reregistered} VMMs, {stats.tearing_down_refusals} registrations refused "
            f"VmmTearingDown (retried); zone operations collided: "
            f"{result['zone_collisions']} of {result['zone_calls']:,}{restarted}",
        ),
        ("invariants checked / violated", f"{stats.checks:,} / {len(stats.violations)}"),
        ("request latency p50 / p99 (virtual)", f"{p50:.3f} s / {p99:.3f} s"),
        ("VMM start (register -> Running) p50 / p99", f"{s50:.1f} s / {s99:.1f} s"),
        ("zone bundles collected, zones left", f"{result['bundles']}, {result['zones_left']}"),
        ("virtual time / wall time", f"{result['t_end']:.0f} s / {wall:.1f} s"),
        ("trace", f"{opts.trace} ({file_sink.written:,} events, {file_sink.dropped} dropped)"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print("\nincidents staged (each opens filtered and zoomed in the viewer):")
    for pid, what in INCIDENTS.items():
        print(f"  {pid}: {what}; Nexus saw {result['special'][pid]}")
        print(f"    {view_command(opts.trace, pid)}")
    for v in stats.violations[:5]:
        print(f"VIOLATION {v}")


def _run(
    opts: DemoOptions, stats: Stats, sink: _InvariantSink, tracer: traces.Tracer
) -> dict[str, Any]:
    """The seeded run, taking Ctrl-C as every command's run does
    (:func:`trioxide.traces.cli.run_command`)."""
    return run_seeded(
        scenario,
        opts,
        stats,
        sink,
        tracer,
        seed=opts.seed,
        restrict_keyboard_interrupt_to_checkpoints=True,
    )


def view_command(trace: Path, focus: str) -> str:
    """The command that opens *trace* in the viewer focused on VMM *focus*, spelled the way
    this ``trioxide`` was run (``.venv/bin/trioxide`` after ``make demo``; ``trioxide`` when
    that is what the PATH finds; ``python -m trioxide`` when run so)."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is None or argv0.name != "trioxide":
        program = f"{_here(Path(sys.executable))} -m trioxide"
    else:
        found = shutil.which("trioxide")
        same = found is not None and Path(found).resolve() == argv0.resolve()
        program = "trioxide" if same else _here(argv0)
    return f"{program} view {shlex.quote(str(trace))} --focus {shlex.quote(focus)}"


def _here(path: Path) -> str:
    """*path* relative to the working directory when under it (else as it is), quoted."""
    try:
        return shlex.quote(str(path.absolute().relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(path))


def _viewed(
    server: TraceServer,
    opts: DemoOptions,
    stats: Stats,
    sink: _InvariantSink,
    tracer: traces.Tracer,
    file_sink: traces.JsonlFileSink,
) -> dict[str, Any]:
    """The demo, streamed live by *server*, which serves from a thread of its own in real
    time (its timeouts work, and after the run it idles) while the run is in virtual
    time; then the server keeps serving until Ctrl-C (or ``server.close()``).

    Ctrl-C once the run is over only stops the serving (the exit status is the run's);
    during the run it interrupts it, as without ``--view`` (``KeyboardInterrupt``)."""
    with server.serve_in_thread() as serving:
        print(f"live viewer: {server.url}", flush=True)
        t0 = time.perf_counter()
        summary = _run(opts, stats, sink, tracer)
        report(summary, stats, time.perf_counter() - t0, opts, file_sink)
        tracer.flush()
        server.sink.close()  # the run is over: viewers get "end" after its last event
        print(f"\nthe viewer keeps serving at {server.url} (Ctrl-C to stop)", flush=True)
        try:
            serving.wait()
        except KeyboardInterrupt:
            pass
    return summary


def run_demo(opts: DemoOptions, view: dict[str, Any] | None = None) -> int:
    """Run the demo; with *view* (host/port/token) also serve the live viewer and keep
    serving after the run until Ctrl-C."""
    try:
        opts.trace.parent.mkdir(parents=True, exist_ok=True)
        opts.trace.touch()
    except OSError as exc:  # a user's mistake: one line, no traceback
        why = exc.strerror or type(exc).__name__
        print(
            f"trioxide demo: cannot write the trace to {opts.trace}: {why}; "
            "choose another path with --trace",
            file=sys.stderr,
        )
        return 2
    header = traces.TraceHeader(
        seed=opts.seed, trio_version=trio.__version__, command=["trioxide", "demo"]
    )
    stats = Stats()
    checker = _InvariantSink(stats)
    file_sink = traces.JsonlFileSink(opts.trace, header)
    counter = traces.MemorySink(maxlen=1)
    # Always on, as in an agent process: the newest records, dumped when an actor fails.
    recorder = traces.FlightRecorder(directory=opts.trace.parent, header=header)
    server: TraceServer | None = None
    sinks: list[traces.Sink] = [file_sink, checker, counter, recorder]
    if view is not None:
        from trioxide.traces.server import TraceServer

        server = TraceServer(**view)
        sinks.append(server.sink)
    tracer = traces.Tracer(*sinks, payloads=True)
    print(f"trioxide demo: {opts.vmms} VMMs on one simulated sled, seed {opts.seed}")
    print(f"flight recorder: dumps to {opts.trace.parent / 'trioxide-<actor>-<seq>.jsonl'}")
    wall = time.perf_counter()
    if server is None:
        summary = _run(opts, stats, checker, tracer)
    else:
        summary = _viewed(server, opts, stats, checker, tracer, file_sink)
    tracer.close()
    if server is None:
        report(summary, stats, time.perf_counter() - wall, opts, file_sink)
    dumps, skipped = recorder.dumps, recorder.dumps_skipped
    print(
        f"flight recorder: {len(dumps)} dump(s) on actor failures"
        + (f", the first: {dumps[0]}" if dumps else "")
        + (f" ({skipped} skipped by its rate limit)" if skipped else "")
    )
    ok = stats.sent == stats.answered and not stats.violations
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(DemoOptions()))
