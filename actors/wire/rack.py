"""``trioxide rack --sleds N``: a rack on loopback - a Nexus, a hypervisor and N sled
agents as separate processes - driven through their HTTP APIs with faults.

What it does, in real time:

1. starts ``trioxide hypervisor``, ``trioxide nexus --hypervisor URL`` and N ``trioxide
   agent --sled-id sled-<i> --hypervisor URL --nexus URL`` processes (each writes its trace
   to ``--out``/<name>.jsonl), waiting for each one's ready line;
2. churns VMMs on every sled through the sled agents' API (register, ``running``, wait
   until it runs, hold, ``stopped``, wait until it is gone, unregister), ``--vmms``
   concurrent VMM slots per sled, ``--rounds`` VMMs per slot;
3. meanwhile injects the faults (``--no-faults`` to skip them): a Crucible target
   black-holed under a starting VMM, fixed by a VCR replacement Nexus sends straight to
   Propolis; a ``stopped`` sent while another VMM's activation hangs on a black-holed
   target (the stop aborts the startup); a Nexus outage (every Nexus call answers 503
   for a while: the agents' notifiers and publishers retry); ``kill -9`` of the
   hypervisor process, restarted on the same port (the VMMs it ran fail, with a reason);
4. prints a summary: requests sent to the agents and answered (by status), latencies
   p50/p99 per operation, every VMM's outcome (what the driver saw and what Nexus holds),
   the faults and what they did, Nexus's request counts; then stops every process with
   SIGTERM (also on Ctrl-C) and prints each exit status and the command that opens the
   merged trace in the viewer.

Exit status 0 when every request was answered, no answer was a 5xx other than 503, every
fault had its expected effect and every process stopped cleanly; else 1.
"""

from __future__ import annotations

import argparse
import random
import shlex
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from trioxide.runtime import Runtime
from trioxide.traces.cli import at_least

from ..sim.disks import vmm_disk
from .children import Child, open_child, trioxide_command
from .churn import AgentCalls, ChurnResult, percentile
from .client import HttpClient, HttpStatusError, TransportError
from .nexus_client import NexusAdmin
from .process import Ready, run_process

__all__ = ["MAX_SLEDS", "RackOptions", "add_arguments", "run"]

#: The most sled agents ``--sleds`` starts: an Oxide rack's 32 compute sleds. Each is a
#: process of its own (tens of MB), started one after another: a mistyped count (``1000``
#: for ``10``) would otherwise fill the machine's memory with processes.
MAX_SLEDS = 32


@dataclass(frozen=True)
class RackOptions:
    sleds: int = 3
    vmms: int = 4  # concurrent VMM slots per sled
    rounds: int = 6  # VMMs started, one after another, per slot
    seed: int = 1
    faults: bool = True
    out: Path = Path("traces-out/rack")
    time_scale: float = 0.02
    hold: float = 0.5  # seconds a VMM runs before it is stopped (randomised up to 2x)
    wait: float = 30.0  # seconds a VMM may take to reach a state before it counts as stuck


@dataclass
class Faults:
    """What each injected fault did, and whether that was its expected effect."""

    what: dict[str, str] = field(default_factory=dict)
    ok: dict[str, bool] = field(default_factory=dict)

    def record(self, name: str, what: str, ok: bool) -> None:
        self.what[name] = what
        self.ok[name] = ok


@dataclass
class _Sled:
    name: str
    http: HttpClient
    calls: AgentCalls


class Driver:
    """Churns VMMs on the sleds and injects the faults."""

    def __init__(
        self,
        opts: RackOptions,
        sleds: list[_Sled],
        nexus: NexusAdmin,
        hypervisor: HttpClient,
        restart_hypervisor: Any,
        faults: Faults,
    ) -> None:
        self.opts = opts
        self.sleds = sleds
        self.nexus = nexus
        self.hypervisor = hypervisor
        self.restart_hypervisor = restart_hypervisor
        self.faults = faults
        self.crucible_faults_done = trio.Semaphore(0)  # released by each Crucible fault

    async def churn(self, s: int, sled: _Sled) -> None:
        async with trio.open_nursery() as nursery:
            for slot in range(self.opts.vmms):
                nursery.start_soon(self._slot, s, slot, sled)

    async def _slot(self, s: int, slot: int, sled: _Sled) -> None:
        rng = random.Random(self.opts.seed * 1000 + s * 100 + slot)
        await trio.sleep(rng.uniform(0, 0.5))
        for r in range(self.opts.rounds):
            hold = self.opts.hold * rng.uniform(1.0, 2.0)
            pid = f"s{s}-v{slot}-r{r}"
            ran = await sled.calls.cycle(
                pid, hold=hold, wait=self.opts.wait, wait_gone=True, disks=vmm_disk(pid)
            )
            if not ran:
                await trio.sleep(hold)  # as a control plane would: no hammering

    # -- faults -------------------------------------------------------------------

    async def _downstairs(self, target: str, reachable: bool) -> None:
        await self.hypervisor.call("PUT", f"/admin/downstairs/{target}", {"reachable": reachable})

    async def _start_blocked(
        self, calls: AgentCalls, pid: str, target: str, for_seconds: float
    ) -> str | None:
        """Start VMM *pid* with its Crucible *target* black-holed; its state after
        *for_seconds* (``starting``: its activation hangs)."""
        await trio.sleep(0.5)
        await self._downstairs(target, False)
        await calls.register(pid, vmm_disk(pid))
        await calls.put_state(pid, "running")
        await trio.sleep(for_seconds)
        return await calls.state(pid)

    async def blackholed_then_replaced(self) -> None:
        """A VMM whose activation hangs on a black-holed target; Nexus replaces the VCR
        with one naming a healthy target (straight to Propolis): the VMM then runs."""
        pid, name = "vmm-vcr", "VCR replacement"
        calls = self.sleds[0].calls
        before = await self._start_blocked(calls, pid, f"{pid}-ds-b", 1.5)
        fixed = vmm_disk(pid, gen=2, middle=f"{pid}-ds-new")["disk0"]
        try:
            result = await self.nexus.replace_vcr(pid, "disk0", fixed)
        except (HttpStatusError, TransportError) as exc:
            self.faults.record(name, f"Nexus's replacement failed: {exc}", False)
            return
        reached = await calls.wait_state(pid, ("running",), within=self.opts.wait)
        self.faults.record(
            name,
            f"{pid} was {before} on a black-holed target; Nexus -> Propolis: "
            f"{getattr(result, 'name', result)}; then {reached}",
            before == "starting" and reached == "running",
        )
        if reached == "running":
            await calls.put_state(pid, "stopped")
        last = await calls.wait_gone(pid, within=self.opts.wait)
        await calls.unregister(pid)
        calls.result.outcomes[pid] = f"ran after VCR replacement; last seen {last}"

    async def stopped_during_activation(self) -> None:
        """A ``stopped`` while the VMM's activation hangs on a black-holed target: the
        stop aborts the startup and the VMM ends (it never runs)."""
        pid, name = "vmm-abort", "stop during activation"
        calls = self.sleds[-1].calls
        before = await self._start_blocked(calls, pid, f"{pid}-ds-c", 1.0)
        status = await calls.put_state(pid, "stopped")
        last = await calls.wait_gone(pid, within=self.opts.wait)
        await calls.unregister(pid)
        self.faults.record(
            name,
            f"{pid} was {before}; stop answered {status}; it ended ({last}), never running",
            before == "starting" and not last.startswith("stuck"),
        )
        calls.result.outcomes[pid] = f"stopped during activation; last seen {last}"
        await self._downstairs(f"{pid}-ds-c", True)

    async def nexus_outage(self) -> None:
        name = "Nexus outage"
        await trio.sleep(1.0)
        before = await self.nexus.summary()
        await self.nexus.outage(True, 2.0)
        await trio.sleep(2.0)
        await self.nexus.outage(False)
        after = await self.nexus.summary()
        refused = after.statistics.get("unavailable", 0) - before.statistics.get("unavailable", 0)
        what = f"2 s of 503s: {refused} Nexus calls refused, then retried"
        self.faults.record(name, what, refused > 0)

    async def hypervisor_killed(self) -> None:
        name = "hypervisor kill -9"
        for _ in range(2):  # after the Crucible faults (a new hypervisor forgets them)
            await self.crucible_faults_done.acquire()
        await trio.sleep(0.5)
        running = await self._running_vmms()
        count = await self.restart_hypervisor()
        what = (
            f"killed with {count} Propolis running ({len(running)} VMMs running seen); "
            "restarted on the same port"
        )
        self.faults.record(name, what, True)

    async def _running_vmms(self) -> list[str]:
        try:
            summary = await self.nexus.summary()
        except (HttpStatusError, TransportError):
            return []
        return [v.propolis_id for v in summary.vmms if str(v.state) == "running"]

    async def _crucible_fault(self, fault: Any) -> None:
        try:
            await fault()
        finally:
            self.crucible_faults_done.release()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for s, sled in enumerate(self.sleds):
                nursery.start_soon(self.churn, s, sled)
            if self.opts.faults:
                nursery.start_soon(self._crucible_fault, self.blackholed_then_replaced)
                nursery.start_soon(self._crucible_fault, self.stopped_during_activation)
                nursery.start_soon(self.nexus_outage)
                nursery.start_soon(self.hypervisor_killed)


# -- the processes -------------------------------------------------------------------------


class _HypervisorKeeper:
    """Runs the hypervisor process and, on request, kills it (``kill -9``) and starts a
    new one on the same port - in its own task, so each process's ``open_child`` block
    nests properly."""

    def __init__(self, argv: Any) -> None:
        self.argv = argv
        self.current: Child | None = None
        self.killed: list[Child] = []
        self._kill = trio.Event()
        self._restarted = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[Child] = trio.TASK_STATUS_IGNORED) -> None:
        port, name = 0, "hypervisor"
        while True:
            async with open_child(self.argv("hypervisor", name, port=port)) as child:
                self.current = child
                if port == 0:
                    port = int(child.addr.rsplit(":", 1)[1])
                    task_status.started(child)
                else:
                    self._restarted.set()
                await self._kill.wait()
                self._kill = trio.Event()
                child.kill9()
                await child.proc.wait()
                self.killed.append(child)
            name = f"hypervisor-{len(self.killed) + 1}"

    async def kill_and_restart(self) -> None:
        self._restarted = trio.Event()
        self._kill.set()
        await self._restarted.wait()


async def _rack(opts: RackOptions) -> int:
    out = opts.out
    base = trioxide_command()
    scale = ["--time-scale", str(opts.time_scale)]
    stats = ChurnResult()
    faults = Faults()
    children: dict[str, Child] = {}

    def argv(role: str, name: str, *more: str, port: int = 0) -> list[str]:
        trace = str(out / f"{name}.jsonl")
        extra = scale if role in ("hypervisor", "agent") else []
        return [*base, role, "--port", str(port), "--trace", trace, *extra, *more]

    keeper = _HypervisorKeeper(argv)
    finished = False
    try:
        await _run_rack(opts, argv, keeper, children, stats, faults)
        finished = True
    finally:
        if not finished:  # Ctrl-C, SIGTERM or a failure: each child was stopped (open_child)
            print("\nthe rack stopped early; its processes were stopped", flush=True)
            _print_statuses(children, keeper)
    statuses = _print_statuses(children, keeper)
    clean = all(s == 0 for n, s in statuses.items() if "kill" not in n)
    files = " ".join(shlex.quote(str(p)) for p in sorted(out.glob("*.jsonl")))
    print(f"\nthe merged trace of every process:\n    trioxide view {files}")
    ok = stats.sent == stats.answered and stats.server_errors == 0
    ok = ok and all(faults.ok.values()) and clean
    return 0 if ok else 1


def _print_statuses(children: dict[str, Child], keeper: _HypervisorKeeper) -> dict[str, Any]:
    for i, child in enumerate(keeper.killed):
        children[f"hypervisor (kill -9 #{i + 1})"] = child
    if keeper.current is not None:
        children["hypervisor"] = keeper.current
    statuses = {name: child.returncode for name, child in children.items()}
    print("  exit statuses: " + ", ".join(f"{n} {s}" for n, s in statuses.items()), flush=True)
    return statuses


async def _run_rack(
    opts: RackOptions,
    argv: Any,
    keeper: _HypervisorKeeper,
    children: dict[str, Child],
    stats: ChurnResult,
    faults: Faults,
) -> None:
    async with trio.open_nursery() as processes:
        hv: Child = await processes.start(keeper.run)
        print(f"  hypervisor  {hv.url}", flush=True)
        async with AsyncExitStack() as stack:
            nexus = await stack.enter_async_context(
                open_child(argv("nexus", "nexus", "--hypervisor", hv.url))
            )
            children["nexus"] = nexus
            print(f"  nexus       {nexus.url}", flush=True)
            sleds = []
            for i in range(opts.sleds):
                name = f"sled-{i}"
                agent = await stack.enter_async_context(
                    open_child(
                        argv("agent", name, "--sled-id", name, "--hypervisor", hv.url,
                             "--nexus", nexus.url)
                    )
                )  # fmt: skip
                children[name] = agent
                http = HttpClient(agent.url, timeout=30.0)
                stack.push_async_callback(http.aclose)
                sleds.append(_Sled(name, http, AgentCalls(http, stats, poll=0.05)))
                print(f"  {name:<11} {agent.url}", flush=True)
            admin = await stack.enter_async_context(NexusAdmin(nexus.url))
            hv_client = HttpClient(hv.url, timeout=10.0)
            stack.push_async_callback(hv_client.aclose)

            async def restart_hypervisor() -> int:
                status = await hv_client.call("GET", "/admin/status", response=dict)
                count = len(status["propolis"]) if isinstance(status, dict) else 0
                await keeper.kill_and_restart()
                return count

            driver = Driver(opts, sleds, admin, hv_client, restart_hypervisor, faults)
            wall = time.perf_counter()
            await driver.run()
            elapsed = time.perf_counter() - wall
            await trio.sleep(1.0)  # the last publications reach Nexus
            summary = await admin.summary()
            _report(stats, faults, summary, elapsed)
            print("stopping the rack's processes (SIGTERM) ...", flush=True)
        processes.cancel_scope.cancel()  # the hypervisor stops last


def _report(stats: ChurnResult, faults: Faults, summary: Any, elapsed: float) -> None:
    print(f"\nrack run: {elapsed:.1f} s of real time")
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(stats.statuses.items()))
    print(f"requests to the sled agents: sent {stats.sent}, answered {stats.answered} ({codes})")
    for line in stats.unanswered[:10]:
        print(f"  UNANSWERED {line}")
    print("latency (real time)      p50        p99      n")
    for op, values in sorted(stats.latency_by_op.items()):
        p50, p99 = percentile(values, 0.5) * 1e3, percentile(values, 0.99) * 1e3
        print(f"  {op:<18} {p50:8.1f} ms {p99:8.1f} ms {len(values):6}")
    if stats.errors_by_op:
        errors = sorted(stats.errors_by_op.items())
        print("  error answers: " + ", ".join(f"{k} x{n}" for k, n in errors))
    ran = sum(1 for v in stats.outcomes.values() if v.startswith("ran"))
    print(f"VMMs: {len(stats.outcomes)} started through the API, {ran} reached running")
    held = Counter(str(v.state) for v in summary.vmms)
    print("  final states Nexus holds: " + ", ".join(f"{k} {n}" for k, n in held.most_common()))
    failed = sorted(v.propolis_id for v in summary.vmms if str(v.state).startswith("failed"))
    if failed:
        more = f" (+{len(failed) - 12} more)" if len(failed) > 12 else ""
        print(f"  failed: {', '.join(failed[:12])}{more}")
    if faults.what:
        print("faults:")
        for name, what in faults.what.items():
            mark = "ok" if faults.ok.get(name) else "NOT AS EXPECTED"
            print(f"  {name}: {what} [{mark}]")
    ops = ", ".join(f"{op} {n}" for op, n in sorted(summary.requests.items()))
    print(f"Nexus: {ops}; refused with 503 {summary.statistics.get('unavailable', 0)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sleds",
        type=at_least(1, MAX_SLEDS),
        default=3,
        help=f"sled agents, one process each (default 3, at most {MAX_SLEDS}: a rack's sleds)",
    )
    parser.add_argument(
        "--vmms", type=at_least(1), default=4, help="concurrent VMMs per sled (default 4)"
    )
    parser.add_argument(
        "--rounds", type=at_least(1), default=6, help="VMMs started per slot (default 6)"
    )
    parser.add_argument("--seed", type=int, default=1, help="the driver's random seed")
    parser.add_argument("--no-faults", dest="faults", action="store_false", help="no faults")
    parser.add_argument(
        "--out", type=Path, default=Path("traces-out/rack"), help="where the traces go"
    )


def run(args: argparse.Namespace) -> int:
    opts = RackOptions(
        sleds=args.sleds,
        vmms=args.vmms,
        rounds=args.rounds,
        seed=args.seed,
        faults=args.faults,
        out=args.out,
    )
    opts.out.mkdir(parents=True, exist_ok=True)
    for old in opts.out.glob("*.jsonl"):
        old.unlink()
    print(
        f"trioxide rack: {opts.sleds} sled agents, a hypervisor and Nexus on loopback; "
        f"{opts.vmms} VMM slots x {opts.rounds} rounds per sled"
        + (", with faults" if opts.faults else ""),
        flush=True,
    )
    status = 1
    shell = argparse.Namespace(trace=opts.out / "rack.jsonl", view_port=None, host="127.0.0.1")

    async def body(rt: Runtime, ready: Ready) -> None:
        nonlocal status
        status = await _rack(opts)

    interrupted = run_process("rack", shell, body)
    return interrupted or status
