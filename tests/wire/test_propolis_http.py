"""Propolis over real loopback HTTP: the hypervisor's API (``propolis_api``) served in the
test's own Trio run, reached by ``HttpLauncher``/``HttpPropolis`` - directly, and by a
``SledAgent`` whose runners and monitors use them (the same actors as in-process).

Real time: every wait is bounded with ``trio.fail_after``; simulated durations are scaled
down (``TIME_SCALE``) so a lifecycle takes a fraction of a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import trio

from trioxide.actors.errors import NoSuchBackend, NoSuchVmm, VcrReplacementInvalid
from trioxide.actors.instance_runner import InstanceRunner, RunnerConfig, RunnerExit, Target
from trioxide.actors.ports import PropolisUnavailable
from trioxide.actors.propolis.crucible import Region, ReplaceRequestInvalid, ReplaceResult, Volume
from trioxide.actors.propolis.request_queue import DenyReason, RequestDenied
from trioxide.actors.propolis.state_driver import (
    BackendNotFound,
    NoInstance,
    Reboot,
    Start,
    Stop,
    VmState,
)
from trioxide.actors.sim.zones import SimZones
from trioxide.actors.sled_agent import SledAgent, SledAgentClient, SledConfig, SledWorld
from trioxide.actors.vmm_state import SledVmmState, VmmKind
from trioxide.actors.wire.propolis_api import Hypervisor, hypervisor_app, open_hypervisor
from trioxide.actors.wire.propolis_client import HttpLauncher, HttpPropolis, HttpPropolisDirectory
from trioxide.actors.wire.server import serve_app
from trioxide.runtime import Runtime, open_runtime

from ._propolis import polling_next, running_propolis

V = VmState
TIME_SCALE = 0.02  # VM halt 2 ms, downstairs connect 1 ms, Propolis death 10 ms
WAIT = 10.0  # bound on any single wait below (real seconds)


def vol(gen: int = 1, targets: tuple[str, str, str] = ("ds-a", "ds-b", "ds-c")) -> Volume:
    return Volume("vol-1", 512, (Region("reg-1", gen, targets),))


@asynccontextmanager
async def served(rt: Runtime, **kwargs: float) -> AsyncIterator[tuple[Hypervisor, str]]:
    """A hypervisor in *rt*, served on a free loopback port: ``(hv, url)``."""
    hv = await open_hypervisor(rt, **{"time_scale": TIME_SCALE, **kwargs})
    async with trio.open_nursery() as nursery:
        addr = await nursery.start(serve_app, hypervisor_app(hv), "127.0.0.1", 0)
        yield hv, f"http://{addr}"
        nursery.cancel_scope.cancel()


async def until(check: Callable[[], bool], within: float = WAIT) -> None:
    with trio.fail_after(within):
        while not check():  # noqa: ASYNC110 (state owned by other tasks of this run)
            await trio.sleep(0.005)


@dataclass
class Rack:
    hv: Hypervisor
    url: str
    launcher: HttpLauncher
    api: SledAgentClient
    world: SledWorld

    def nexus_kinds(self, pid: str) -> list[VmmKind]:
        return [state.kind for _t, state, _g in self.world.nexus.vmm_history.get(pid, [])]

    def runner(self, pid: str) -> InstanceRunner:
        entry = self.api.agent.refs["instance-manager"].instance.find(pid)  # type: ignore[union-attr]
        assert entry is not None
        inst = entry.runner.instance
        assert isinstance(inst, InstanceRunner)
        return inst


def fast_zones() -> SimZones:
    return SimZones(
        create_time=0.001, install_time=0.005, boot_time=0.005, halt_time=0.005,
        remove_time=0.005, bundle_time=0.01,
    )  # fmt: skip


class HttpSled(SledAgent):
    """A sled agent whose Propolis launcher is given (spawn passes positional args)."""

    def __init__(self, world: SledWorld, config: SledConfig, launcher: HttpLauncher) -> None:
        super().__init__(world, config, propolis=launcher)


@asynccontextmanager
async def rack(**hv_kwargs: float) -> AsyncIterator[Rack]:
    """A hypervisor served over loopback and a sled agent (same run, real time) whose
    Propolis launcher is ``HttpLauncher`` of it; Nexus is the in-process simulation."""
    async with open_runtime(name="wire-test") as rt, served(rt, **hv_kwargs) as (hv, url):
        async with HttpLauncher(url, retry_delay=0.02) as launcher:
            world = SledWorld(zones=fast_zones())
            config = SledConfig(runner=RunnerConfig(service_wait=0.001, publish_initial=0.01))
            ref = await rt.spawn(HttpSled, world, config, launcher, name="sled")
            yield Rack(hv, url, launcher, SledAgentClient(ref), world)
            await ref.stop()


async def running(r: Rack, pid: str) -> None:
    with trio.fail_after(WAIT):
        while (await r.api.get_state(pid)).state is not SledVmmState.RUNNING:  # noqa: ASYNC110
            await trio.sleep(0.005)


# -- the sled agent over HTTP ------------------------------------------------------------


async def test_a_vmm_starts_runs_stops_and_is_destroyed_over_http() -> None:
    async with rack() as r:
        await r.api.register("p1", "i1")
        assert await r.api.ensure_state("p1", Target.RUNNING) is None
        await running(r, "p1")
        port = r.runner("p1").propolis
        assert isinstance(port, HttpPropolis) and port.alive
        status = r.hv.status()
        assert [(p.propolis_id, p.state) for p in status.propolis] == [("p1", V.RUNNING)]
        # The monitor's long polls were answered over HTTP (a poll answers with the latest
        # state, so Starting may never be seen by itself).
        assert r.hv.polls_answered >= 1 and r.launcher.polls.answered >= 1
        await until(lambda: r.hv.polls_waiting == 1)  # and it waits for the next one

        await r.api.ensure_state("p1", Target.STOPPED)
        await until(lambda: VmmKind.DESTROYED in r.nexus_kinds("p1"))
        kinds = r.nexus_kinds("p1")
        assert kinds[-1] is VmmKind.DESTROYED and VmmKind.RUNNING in kinds
        await until(lambda: r.launcher.killed == 1)  # the runner killed its Propolis
        await until(lambda: not r.hv.status().propolis)
        with pytest.raises(NoSuchVmm):
            await r.api.get_state("p1")
        assert not port.alive and port.lost == "killed"
        assert r.hv.polls_waiting == 0
        assert r.launcher.calls.failed == 0


async def test_stop_during_crucible_activation_answers_the_in_flight_long_poll() -> None:
    async with rack() as r, httpx.AsyncClient(base_url=r.url) as admin:
        # Fault injection over the hypervisor's admin API: ds-b swallows connections.
        answer = await admin.put("/admin/downstairs/ds-b", json={"reachable": False})
        assert answer.status_code == 200 and answer.json()["blackholed"] == ["ds-b"]
        from trioxide.actors.instance_runner import VmmSpec

        await r.api.register("p1", "i1", VmmSpec(disks={"disk0": vol()}))
        await r.api.ensure_state("p1", Target.RUNNING)
        # Starting is published, activation is stuck on ds-b, and the monitor's long poll
        # for the next generation is in flight on the hypervisor.
        await until(lambda: [p.state for p in r.hv.status().propolis] == [V.STARTING])
        await until(lambda: r.hv.net.statistics().tasks_waiting >= 1)
        await until(lambda: r.hv.polls_waiting == 1)
        answered = r.hv.polls_answered

        await r.api.ensure_state("p1", Target.STOPPED)
        # The stop aborts startup; the in-flight long poll is answered with it.
        await until(lambda: VmmKind.DESTROYED in r.nexus_kinds("p1"))
        assert r.hv.polls_answered > answered
        assert VmmKind.RUNNING not in r.nexus_kinds("p1")
        await until(lambda: not r.hv.status().propolis)
        assert r.hv.net.statistics().tasks_waiting == 0  # the blocked connect was cancelled


async def test_terminate_cancels_the_launch_request_in_flight() -> None:
    # A launch that takes long on the hypervisor (propolis-server starting): a Terminate
    # of the VMM cancels the runner's setup and with it the HTTP request in flight; the
    # hypervisor sees the client go away and kills the half-launched Propolis.
    async with rack(launch_time=30.0 / TIME_SCALE) as r:
        await r.api.register("p1", "i1")
        await r.api.ensure_state("p1", Target.RUNNING)
        await until(lambda: "p1" in r.hv.actor.running)  # launched, response not sent
        manager = r.api.agent.refs["instance-manager"].instance
        runner_ref = manager.find("p1").runner  # type: ignore[union-attr]
        assert r.launcher.calls.sent == 1 and r.launcher.calls.answered == 0

        final = await r.api.unregister("p1")
        assert final is not None and final.state is SledVmmState.FAILED
        await until(lambda: runner_ref.exit_reason is not None)
        reason = runner_ref.exit_reason
        assert isinstance(reason, RunnerExit) and reason.why == "terminated"
        await until(lambda: r.hv.launches_abandoned == 1)
        await until(lambda: "p1" not in r.hv.actor.running)
        assert r.hv.requests_abandoned == 1 and r.hv.launched == 0
        assert r.launcher.launched == 0 and r.launcher.calls.answered == 0
        assert r.launcher.killed == 0  # the runner had no Propolis to kill: the server did


async def test_vcr_replacement_over_http_fixes_a_blackholed_target() -> None:
    async with rack() as r:
        from trioxide.actors.instance_runner import VmmSpec

        r.hv.net.blackhole("ds-b")
        await r.api.register("p1", "i1", VmmSpec(disks={"disk0": vol()}))
        await r.api.ensure_state("p1", Target.RUNNING)
        await until(lambda: r.hv.net.statistics().tasks_waiting >= 1)
        assert [p.state for p in r.hv.status().propolis] == [V.STARTING]

        # The agent's API reaches Propolis's VCR endpoint over HTTP; activation resumes.
        new = vol(2, ("ds-a", "ds-x", "ds-c"))
        assert await r.api.replace_vcr("p1", "disk0", new) is ReplaceResult.STARTED
        await running(r, "p1")
        bump = vol(3, ("ds-a", "ds-x", "ds-c"))
        assert await r.api.replace_vcr("p1", "disk0", bump) is ReplaceResult.VCR_MATCHES
        # Crucible's refusals travel as typed errors.
        with pytest.raises(VcrReplacementInvalid, match="no difference"):
            await r.api.replace_vcr("p1", "disk0", bump)
        with pytest.raises(NoSuchBackend):
            await r.api.replace_vcr("p1", "disk9", bump)
        # Nexus's way: straight to Propolis by id (upstream Nexus calls Propolis itself).
        directory = HttpPropolisDirectory(r.url)
        try:
            again = vol(4, ("ds-a", "ds-x", "ds-c"))
            assert await directory.replace_vcr("p1", "disk0", again) is ReplaceResult.VCR_MATCHES
            with pytest.raises(NoInstance):
                await directory.replace_vcr("p9", "disk0", again)
        finally:
            await directory.aclose()


# -- propolis-server's API, through the client -------------------------------------------


@asynccontextmanager
async def propolis(**hv_kwargs: float) -> AsyncIterator[tuple[Hypervisor, HttpLauncher]]:
    async with open_runtime(name="wire-test") as rt, served(rt, **hv_kwargs) as (hv, url):
        async with HttpLauncher(url, retry_delay=0.02) as launcher:
            yield hv, launcher


async def test_upstream_server_state_machine_start_stop_and_destroy() -> None:
    # propolis phd-tests/tests/src/server_state_machine.rs: instance_start_stop_test (a
    # new instance is Creating; run -> Running; stop -> Destroyed) and
    # instance_stop_causes_destroy_test (after Destroyed, run, stop and reset fail; upstream
    # reads 404 there, ours is 410/424 with the NoInstance code of server.rs).
    async with propolis() as (_hv, launcher):
        port = await launcher.launch("p1", {}, False)
        async with httpx.AsyncClient(base_url=launcher.base_url) as raw:
            got = await raw.get("/propolis/p1/instance")
            assert got.json() == {"instance": {"properties": {"id": "p1"}, "state": "Creating"}}
        await port.put_state(Start())
        assert (await port.wait_for_state(3)).state is V.RUNNING
        await port.put_state(Stop())
        assert (await port.wait_for_state(6)).state is V.DESTROYED
        for request in (Start(), Stop(), Reboot()):
            with pytest.raises(NoInstance):
                await port.put_state(request)
        assert not port.alive


async def test_upstream_reset_requires_running_and_repeated_resets_succeed() -> None:
    # propolis phd server_state_machine.rs: instance_reset_requires_running_test and
    # instance_reset_test (a reset before the VM runs fails; ten resets in a row all
    # succeed; the VM ends Running; after Destroyed a reset fails).
    async with propolis() as (hv, launcher):
        port = await launcher.launch("p1", {}, False)
        with pytest.raises(RequestDenied) as denied:
            await port.put_state(Reboot())
        assert denied.value.reason is DenyReason.INSTANCE_NOT_ACTIVE
        await port.put_state(Start())
        assert (await port.wait_for_state(3)).state is V.RUNNING
        for _ in range(10):
            await port.put_state(Reboot())
        with trio.fail_after(WAIT):
            while (state := await port.wait_for_state(port.last_gen + 1)).state is not V.RUNNING:
                pass
        assert hv.actor.running["p1"].monitor.current == state  # settled: no reboot queued
        await port.put_state(Stop())
        assert (await port.wait_for_state(state.gen + 3)).state is V.DESTROYED
        with pytest.raises(NoInstance):
            await port.put_state(Reboot())


async def test_upstream_state_monitor_generation_semantics() -> None:
    # propolis server.rs instance_state_monitor: the answer comes at once when the
    # requested generation is <= the published one (with the latest state, whatever gen
    # was asked), else when a generation >= it is published; once the instance is gone a
    # generation never published answers 410 NoInstance.
    async with propolis() as (hv, launcher):
        hv.net.blackhole("ds-b")  # startup stays at Starting (gen 2) until healed
        port = await launcher.launch("p1", {"disk0": vol()}, False)
        assert await port.wait_for_state(0) == await port.wait_for_state(1)
        assert (await port.wait_for_state(1)).gen == 1
        await port.put_state(Start())
        assert (await port.wait_for_state(1)).gen == 2  # the latest, not gen 1
        with trio.move_on_after(0.2) as waited:
            await port.wait_for_state(3)
        assert waited.cancelled_caught  # gen 3 is not published while ds-b is black-holed
        await until(lambda: hv.polls_waiting == 0)  # ... and the cancelled poll stopped
        assert hv.requests_abandoned == 1
        async with trio.open_nursery() as nursery:
            got: list[int] = []

            async def poll() -> None:
                got.append((await port.wait_for_state(3)).gen)

            nursery.start_soon(poll)
            await until(lambda: hv.polls_waiting == 1)
            hv.net.heal("ds-b")
        assert got == [3] and hv.actor.running["p1"].monitor.current.state is V.RUNNING
        await port.put_state(Stop())
        assert (await port.wait_for_state(6)).state is V.DESTROYED
        with pytest.raises(NoInstance) as gone:
            await port.wait_for_state(7)
        assert gone.value.gen == 7 and not port.alive and "410 NoInstance" in (port.lost or "")


async def test_errors_are_typed_and_bad_input_is_a_4xx_naming_the_value() -> None:
    async with propolis() as (hv, launcher):
        port = await launcher.launch("p1", {"disk0": vol()}, False)
        with pytest.raises(BackendNotFound):
            await port.replace_vcr("disk9", vol(2))
        with pytest.raises(ReplaceRequestInvalid, match="generation too low"):
            await port.replace_vcr("disk0", vol(0))
        async with httpx.AsyncClient(base_url=launcher.base_url) as raw:

            async def code(method: str, path: str, body: object) -> tuple[int, str, str]:
                answer = await raw.request(method, path, json=body)
                err = answer.json()
                return answer.status_code, err["error_code"], err["message"]

            assert (await code("PUT", "/propolis/p1/instance/state", "Jump"))[:2] == (
                400, "INVALID_REQUEST",
            )  # fmt: skip
            status, err, message = await code(
                "GET", "/propolis/p1/instance/state-monitor", {"gen": 2**64}
            )
            assert (status, err) == (400, "INVALID_REQUEST") and str(2**64) in message
            status, err, message = await code("GET", "/propolis/p2/instance", None)
            assert (status, err) == (424, "NoInstance") and "'p2'" in message
            status, err, message = await code("PUT", "/admin/propolis/-bad", {})
            assert (status, err) == (400, "INVALID_REQUEST") and "'-bad'" in message
            status, err, message = await code(
                "PUT", "/propolis/p1/instance/disk/disk0/vcr", {"vcr_json": "{nope"}
            )
            assert (status, err) == (400, "INVALID_REQUEST") and "vcr_json" in message
            status, err, _ = await code("POST", "/admin/propolis/p2/crash", None)
            assert (status, err) == (424, "NoInstance")
            spec = (await raw.get("/openapi.json")).json()
            assert "/propolis/{propolis_id}/instance/state-monitor" in spec["paths"]
            assert hv.status().statistics.launched == 1
    # A hypervisor that is not there: a launch is PropolisUnavailable; a kill is a no-op.
    async with HttpLauncher(launcher.base_url) as gone:
        with pytest.raises(PropolisUnavailable, match="launch"):
            await gone.launch("p1", {}, False)
        await gone.kill("p1")
        assert gone.kills_unreachable == 1


async def test_a_crash_answers_the_long_poll_no_instance() -> None:
    async with propolis() as (hv, launcher), httpx.AsyncClient(base_url=launcher.base_url) as raw:
        port = await running_propolis(launcher, "p1")
        async with polling_next(port) as outcome:
            await until(lambda: hv.polls_waiting == 1)
            assert (await raw.post("/admin/propolis/p1/crash")).status_code == 204
        assert len(outcome) == 1 and not port.alive
        assert hv.status().statistics.crashed == 1
