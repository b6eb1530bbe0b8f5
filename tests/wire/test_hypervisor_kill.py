"""``kill -9`` of the hypervisor process mid-run: the sled agent's monitors see the loss,
the VMMs go Failed with a reason, and the agent stays up and keeps answering.

The hypervisor is a real ``trioxide hypervisor`` subprocess (tests/wire/_procs.py); the
sled agent runs in the test's own Trio run, in real time, with ``HttpLauncher`` as its
Propolis launcher. Every wait is bounded.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from trioxide.actors.errors import NoSuchVmm
from trioxide.actors.instance_runner import RunnerConfig, RunnerExit, Target
from trioxide.actors.sled_agent import SledAgentClient, SledConfig, SledWorld
from trioxide.actors.vmm_state import SledVmmState, VmmFailureReason, VmmKind
from trioxide.actors.wire.propolis_client import HttpLauncher, HttpPropolis
from trioxide.runtime import ActorRef, open_runtime

from ._procs import rack_process
from ._propolis import polling_next, running_propolis
from .test_propolis_http import HttpSled, fast_zones

WAIT = 15.0


async def until(check: Callable[[], bool], within: float = WAIT) -> None:
    with trio.fail_after(within):
        while not check():  # noqa: ASYNC110 (state owned by other tasks of this run)
            await trio.sleep(0.01)


async def test_kill_9_of_the_hypervisor_fails_its_vmms_and_the_agent_stays_up(
    tmp_path: Path,
) -> None:
    async with rack_process("hypervisor", "--time-scale", "0.02", trace_dir=tmp_path) as hv:
        assert hv.info["role"] == "hypervisor" and hv.info["time_scale"] == 0.02
        async with (
            open_runtime(name="agent") as rt,
            HttpLauncher(hv.url, retry_delay=0.05, launch_timeout=1.0) as launcher,
        ):
            world = SledWorld(zones=fast_zones())
            config = SledConfig(runner=RunnerConfig(service_wait=0.001, publish_initial=0.01))
            sled = await rt.spawn(HttpSled, world, config, launcher, name="sled")
            api = SledAgentClient(sled)

            def kinds(pid: str) -> list[VmmKind]:
                return [s.kind for _t, s, _g in world.nexus.vmm_history.get(pid, [])]

            pids = ["p1", "p2", "p3"]
            runners: dict[str, ActorRef] = {}
            for pid in pids:
                await api.register(pid, f"i-{pid}")
                await api.ensure_state(pid, Target.RUNNING)
            manager = api.agent.refs["instance-manager"].instance
            for pid in pids:
                with trio.fail_after(WAIT):
                    while (await api.get_state(pid)).state is not SledVmmState.RUNNING:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                runners[pid] = manager.find(pid).runner  # type: ignore[union-attr]
            ports = {pid: runners[pid].instance.propolis for pid in pids}  # type: ignore[union-attr]
            assert all(isinstance(p, HttpPropolis) and p.alive for p in ports.values())
            async with httpx.AsyncClient(base_url=hv.url) as admin:
                status = (await admin.get("/admin/status")).json()
            assert [(p["propolis_id"], p["state"]) for p in status["propolis"]] == [
                (pid, "Running") for pid in pids
            ]
            # Every monitor has a long poll in flight when the hypervisor dies.
            await until(lambda: launcher.polls.sent - launcher.polls.answered == len(pids))

            hv.kill9()
            assert await hv.proc.wait() == -signal.SIGKILL

            # The monitors see the loss (after their bounded retries), the VMMs fail.
            for pid in pids:
                await until(lambda pid=pid: VmmKind.FAILED in kinds(pid))  # type: ignore[misc]
                last = world.nexus.vmm_history[pid][-1][1]
                assert last.kind is VmmKind.FAILED
                assert last.reason is VmmFailureReason.FROM_SLED_AGENT
                await until(lambda pid=pid: runners[pid].exit_reason is not None)  # type: ignore[misc]
                reason = runners[pid].exit_reason
                assert isinstance(reason, RunnerExit) and reason.why == "Propolis: no instance"
                port = ports[pid]
                assert isinstance(port, HttpPropolis) and not port.alive
                assert port.lost is not None and "unreachable" in port.lost
            assert launcher.polls_lost == len(pids)
            assert launcher.poll_retries >= len(pids) * launcher.retries
            # The runners' kills found nothing listening: counted, not raised.
            await until(lambda: launcher.kills_unreachable == len(pids))
            assert launcher.kill_failures == 0

            # The agent stays up and keeps answering: a gone VMM is a 404, a new VMM is
            # registered and fails to launch (typed, with its reason), nothing hangs.
            for pid in pids:
                with pytest.raises(NoSuchVmm):
                    await api.get_state(pid)
            state = await api.register("p4", "i-p4")
            assert state.state is SledVmmState.STARTING
            runner4 = manager.find("p4").runner  # type: ignore[union-attr]
            await api.ensure_state("p4", Target.RUNNING)
            await until(lambda: VmmKind.FAILED in kinds("p4"))
            await until(lambda: runner4.exit_reason is not None)
            reason4 = runner4.exit_reason
            assert isinstance(reason4, RunnerExit)
            assert reason4.why.startswith("setup failed: Propolis did not launch")
            assert "PropolisUnavailable" in reason4.why
            info = await api.sled_info()
            assert info is not None
            await sled.stop()


async def test_sigterm_stops_the_hypervisor_cleanly_and_its_long_polls_end_no_instance(
    tmp_path: Path,
) -> None:
    async with rack_process("hypervisor", "--time-scale", "0.02", trace_dir=tmp_path) as hv:
        async with HttpLauncher(hv.url, retry_delay=0.05) as launcher:
            port = await running_propolis(launcher, "p1")
            async with polling_next(port) as outcome:
                await until(lambda: launcher.polls.sent == 2)
                assert await hv.stop(signal.SIGTERM) == 0  # a clean exit
            assert len(outcome) == 1 and not port.alive and launcher.polls_lost == 1
    header, *events = (tmp_path / "hypervisor.jsonl").read_text().splitlines()
    assert json.loads(header)["command"] == ["trioxide", "hypervisor"]
    assert any('"LaunchPropolis"' in line for line in events)  # the file was flushed
