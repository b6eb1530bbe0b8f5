"""Upstream conformance: omicron's sled agent (the VMM runner and the instance manager),
fact by fact, against our ``SledAgentClient`` and actors.

Source: oxidecomputer/omicron at b848b6df (2026-08-21): ``sled-agent/src/instance.rs``
(``InstanceRunner``, ``Instance``, and its ``#[cfg(test)] mod tests``),
``sled-agent/src/instance_manager.rs`` (no tests of its own) and the HTTP mapping in
``sled-agent/src/sled_agent.rs``. Propolis facts: oxidecomputer/propolis at 372a5744
(``bin/propolis-server/src/lib/server.rs``).

Each upstream test has a test here of the same name asserting the facts our simulation
can express; facts from upstream code that no upstream test pins have a test named after
the fact, citing the function. Where we deliberately differ the test says "Ours:" and
asserts our behaviour. docs/upstream/sled-agent.md lists what cannot be expressed.
"""

from __future__ import annotations

import pytest
import trio

from trioxide.actors.errors import (
    InstanceGone,
    NoSuchVmm,
    PropolisAlreadyRegistered,
    PropolisRefused,
    VmNotRunning,
)
from trioxide.actors.instance_monitor import Observation
from trioxide.actors.instance_runner import (
    CurrentState,
    PutState,
    Target,
    VmmSpec,
)
from trioxide.actors.propolis.crucible import Region, Volume
from trioxide.actors.propolis.state_driver import GuestHalted, VmState
from trioxide.actors.sim.propolis_host import Crash
from trioxide.actors.sim.vm import SimulatedVm
from trioxide.actors.sim.zones import SimZones
from trioxide.actors.vmm_state import (
    SledVmmState,
    VmmFailureReason,
    VmmKind,
    VmmRuntimeState,
    VmmState,
)
from trioxide.runtime import Runtime

from ._sled import Sled, make_sled

S = SledVmmState
OMICRON = "b848b6df"
RUNNING = VmmState(VmmKind.RUNNING)
STOPPING = VmmState(VmmKind.STOPPING)
DESTROYED = VmmState(VmmKind.DESTROYED)
FAILED = VmmState.failed(VmmFailureReason.FROM_SLED_AGENT)
STOP_GRACE_PERIOD = 600.0  # upstream InstanceRunner::STOP_GRACE_PERIOD (10 minutes)
TIMEOUT_DURATION = 30.0  # upstream tests' TIMEOUT_DURATION


def disk(pid: str) -> dict[str, Volume]:
    targets = (f"{pid}-ds-a", f"{pid}-ds-b", f"{pid}-ds-c")
    return {"disk0": Volume(f"vol-{pid}", 512, (Region(f"reg-{pid}", 1, targets),))}


async def wait_state(sled: Sled, pid: str, want: SledVmmState, within: float = 60.0) -> None:
    with trio.fail_after(within):
        while (await sled.api.get_state(pid)).state is not want:  # noqa: ASYNC110
            await trio.sleep(0.25)


async def run_vmm(sled: Sled, pid: str, spec: VmmSpec | None = None) -> None:
    await sled.api.register(pid, f"inst-{pid}", spec)
    assert await sled.api.ensure_state(pid, Target.RUNNING) is None
    await wait_state(sled, pid, S.RUNNING)


# -- the upstream tests ------------------------------------------------------------------


# upstream: omicron sled-agent/src/instance.rs test test_instance_create_events_normal (b848b6df)
async def test_instance_create_events_normal(actor_runtime: Runtime) -> None:
    """Asked directly (as the manager's ensure_state would, but awaiting the answer), a
    put_state(Running) completes successfully, and Nexus then receives Running."""
    sled = await make_sled(actor_runtime)
    await sled.api.register("p1", "i1")
    with trio.fail_after(TIMEOUT_DURATION):
        # Ours: the answer to Running is None (upstream: Some(state)); success either way.
        assert await sled.runner_ref("p1").ask(PutState(Target.RUNNING)) is None
    await sled.nexus_sees("p1", RUNNING, TIMEOUT_DURATION)
    # (Upstream also checks that one metrics message tracks the control VNIC: we have no
    # metrics or VNICs - see docs/upstream/sled-agent.md.)


# upstream: omicron sled-agent/src/instance.rs test
# test_instance_create_timeout_while_starting_propolis (b848b6df)
async def test_instance_create_timeout_while_starting_propolis(actor_runtime: Runtime) -> None:
    """A Propolis that never comes up: put_state(Running) does not complete within the
    timeout, and Nexus never sees Running."""
    zones = SimZones(install_time=1.0, boot_time=1.0)
    zones.hang_next("boot")  # the Propolis zone never boots: its server never answers
    sled = await make_sled(actor_runtime, zones=zones)
    await sled.api.register("p1", "i1")
    answered = False
    with trio.move_on_after(TIMEOUT_DURATION):
        await sled.runner_ref("p1").ask(PutState(Target.RUNNING))
        answered = True
    assert not answered, "put_state(Running) should have timed out"
    assert RUNNING not in sled.nexus("p1")
    # Ours: the runner still answers other requests while its setup is stuck.
    assert (await sled.api.get_state("p1")).state is S.STARTING


# upstream: omicron sled-agent/src/instance.rs test test_instance_manager_creation (b848b6df)
async def test_instance_manager_creation(actor_runtime: Runtime) -> None:
    """Through the instance manager: ensure_registered, then ensure_state(Running)
    succeeds, and Nexus receives Running."""
    sled = await make_sled(actor_runtime)
    registered = await sled.api.register("p1", "i1")
    assert registered.state is S.STARTING
    assert await sled.api.ensure_state("p1", Target.RUNNING) is None
    await sled.nexus_sees("p1", RUNNING, TIMEOUT_DURATION)


# upstream: omicron sled-agent/src/instance.rs test test_instance_manager_stop_timeout (b848b6df)
async def test_instance_manager_stop_timeout(actor_runtime: Runtime) -> None:
    """A Propolis that never finishes stopping: Nexus sees Stopping, and once the stop
    grace period (10 minutes) has passed the sled agent destroys the VMM and Nexus sees
    Destroyed - not Failed."""
    sled = await make_sled(actor_runtime, vm=SimulatedVm(halt_time=1e9))  # stuck stopping
    await run_vmm(sled, "p1")
    await sled.nexus_sees("p1", RUNNING, TIMEOUT_DURATION)
    t_stop = trio.current_time()
    stopping = await sled.api.ensure_state("p1", Target.STOPPED)
    assert stopping is not None and stopping.state is S.STOPPING
    await sled.nexus_sees("p1", STOPPING, TIMEOUT_DURATION)
    await trio.sleep(STOP_GRACE_PERIOD - 1)
    assert DESTROYED not in sled.nexus("p1")
    t_destroyed = await sled.nexus_sees("p1", DESTROYED, 2 + TIMEOUT_DURATION)
    assert t_destroyed == pytest.approx(t_stop + STOP_GRACE_PERIOD)
    assert FAILED not in sled.nexus("p1")


# upstream: omicron sled-agent/src/instance.rs test test_destroy_published_when_instance_removed
# (b848b6df)
async def test_destroy_published_when_instance_removed(actor_runtime: Runtime) -> None:
    """The monitor reports Destroyed (gen 5): it is told to stop monitoring (Break), the
    runner asks to be removed from the table, and by then Nexus has Destroyed; then the
    runner runs to completion."""
    sled = await make_sled(actor_runtime)
    sled.world.nexus.latency = 5.0  # publication takes a while: removal must wait for it
    await sled.api.register("p1", "i1")
    runner = sled.runner_ref("p1")
    replies: list[object] = []
    removed_at: list[float] = []

    async def watch_table() -> None:
        while sled.manager.find("p1") is not None:  # noqa: ASYNC110
            await trio.sleep(0.01)
        removed_at.append(trio.current_time())
        # Strictly before removal (upstream only checks "by the time of the removal").
        assert DESTROYED in sled.nexus("p1")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_table)
        replies.append(await runner.ask(Observation(VmState.DESTROYED, 5)))
    assert replies == ["break"]
    (t_destroyed,) = [t for t, s, _g in sled.world.nexus.vmm_history["p1"] if s == DESTROYED]
    assert t_destroyed <= removed_at[0]
    with trio.fail_after(TIMEOUT_DURATION):
        while runner.alive:  # noqa: ASYNC110
            await trio.sleep(0.1)


# upstream: omicron sled-agent/src/instance.rs test test_failed_published_when_zone_gone
# (b848b6df)
async def test_failed_published_when_zone_gone(actor_runtime: Runtime) -> None:
    """The monitor reports the zone gone: Break, the VMM is removed from the table, and
    Nexus has Failed."""
    sled = await make_sled(actor_runtime)
    await sled.api.register("p1", "i1")
    reply = await sled.runner_ref("p1").ask(Observation(None, 0, zone_gone=True))
    assert reply == "break"
    with trio.fail_after(TIMEOUT_DURATION):
        while sled.manager.find("p1") is not None:  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert sled.nexus("p1")[-1] == FAILED


# -- facts of upstream code that no upstream test pins -----------------------------------


# upstream: omicron sled-agent/src/instance.rs fn InstanceRunner::put_state (b848b6df):
# a Propolis error with code NoInstance/CreateFailed fails the VMM; any other error is
# returned to the caller (Error::Propolis; sled_agent.rs passes a Propolis 4xx through).
# Propolis answers a forbidden state change (a Reboot while starting: StartInProgress)
# with 403 (propolis server.rs instance_state_put, 372a5744).
# (The runner used to fail the VMM here - Nexus saw Failed; fixed in instance_runner.py
# `_tell_propolis`, which now raises PropolisRefused.)
async def test_put_state_refused_by_propolis_goes_back_to_the_caller(
    actor_runtime: Runtime,
) -> None:
    sled = await make_sled(actor_runtime)
    sled.world.network.blackhole("p1-ds-b")  # the disk cannot activate: Propolis starts
    await sled.api.register("p1", "i1", VmmSpec(disks=disk("p1")))
    await sled.api.ensure_state("p1", Target.RUNNING)
    with trio.fail_after(TIMEOUT_DURATION):
        while sled.runner("p1").propolis is None:  # noqa: ASYNC110
            await trio.sleep(0.1)
    propolis = sled.runner("p1").propolis
    assert propolis is not None
    with trio.fail_after(TIMEOUT_DURATION):
        await propolis.monitor.watch.wait_for(lambda p: p.state is VmState.STARTING)
    with pytest.raises(PropolisRefused) as info:
        await sled.api.ensure_state("p1", Target.REBOOT)
    assert info.value.status == 403
    assert info.value.reason.replace("_", "").lower() == "startinprogress"
    # The VMM is unaffected: still starting, still registered, Nexus never saw Failed...
    assert (await sled.api.get_state("p1")).state is S.STARTING
    assert FAILED not in sled.nexus("p1")
    # ...and it was healthy: once its disk is reachable it runs.
    sled.world.network.heal("p1-ds-b")
    await wait_state(sled, "p1", S.RUNNING)
    assert FAILED not in sled.nexus("p1")


# upstream: omicron sled-agent/src/instance.rs fn InstanceRunner::put_state (b848b6df):
# Propolis answers NoInstance (it lost its VM) -> fail_vmm_and_terminate, and the call
# returns Ok with the Failed state ("a state change operation can succeed even though
# the outcome is a failed instance").
async def test_put_state_when_propolis_has_no_instance_fails_the_vmm(
    actor_runtime: Runtime,
) -> None:
    sled = await make_sled(actor_runtime)
    await run_vmm(sled, "p1")
    runner = sled.runner("p1")
    # The monitor must not notice first (upstream: the put_state sees it): stop it.
    assert runner.monitor_ref is not None
    await runner.monitor_ref.stop()
    await sled.api.agent.refs["propolis-host"].ask(Crash("p1"))  # the VM is gone
    state = await sled.api.ensure_state("p1", Target.REBOOT)
    assert isinstance(state, VmmRuntimeState) and state.state is S.FAILED
    await sled.nexus_sees("p1", FAILED, TIMEOUT_DURATION)
    with trio.fail_after(TIMEOUT_DURATION):
        while sled.manager.find("p1") is not None:  # noqa: ASYNC110
            await trio.sleep(0.1)


# upstream: omicron sled-agent/src/instance.rs fn InstanceRunner::put_state (b848b6df):
# Reboot without a Propolis zone -> Error::VmNotRunning (500 through sled_agent.rs).
async def test_put_state_reboot_without_a_zone_is_vm_not_running(actor_runtime: Runtime) -> None:
    sled = await make_sled(actor_runtime)
    await sled.api.register("p1", "i1")
    with pytest.raises(VmNotRunning) as info:
        await sled.api.ensure_state("p1", Target.REBOOT)
    assert info.value.status == 500
    assert (await sled.api.get_state("p1")).state is S.STARTING  # nothing else happened


# upstream: omicron sled-agent/src/instance.rs fn InstanceRunner::put_state (b848b6df):
# Stopped without a Propolis zone -> force Destroyed and terminate ("what it would have
# reached if it had existed and then stopped in an orderly manner"). Upstream then
# reaches `assert!(self.running_state.is_some())` and panics. Ours: the call returns the
# Destroyed state, Nexus gets it, and the VMM leaves the table.
async def test_put_state_stopped_without_a_zone_destroys_the_vmm(actor_runtime: Runtime) -> None:
    sled = await make_sled(actor_runtime)
    await sled.api.register("p1", "i1")
    state = await sled.api.ensure_state("p1", Target.STOPPED)
    assert state is not None and state.state is S.DESTROYED
    await sled.nexus_sees("p1", DESTROYED, TIMEOUT_DURATION)
    assert FAILED not in sled.nexus("p1")
    with trio.fail_after(TIMEOUT_DURATION):
        while sled.manager.find("p1") is not None:  # noqa: ASYNC110
            await trio.sleep(0.1)
    with pytest.raises(NoSuchVmm):
        await sled.api.get_state("p1")


# upstream: omicron sled-agent/src/instance.rs fn InstanceRunner::put_state (b848b6df):
# if propolis_ensure fails and no Propolis zone was installed, "VM creation has failed
# entirely": fail_vmm_and_terminate (Nexus sees Failed, the VMM is deregistered).
async def test_put_state_running_when_zone_setup_fails_fails_the_vmm(
    actor_runtime: Runtime,
) -> None:
    zones = SimZones(install_time=1.0, boot_time=1.0)
    zones.fail_next("install")
    sled = await make_sled(actor_runtime, zones=zones)
    await sled.api.register("p1", "i1")
    assert await sled.api.ensure_state("p1", Target.RUNNING) is None  # answered at once
    await sled.nexus_sees("p1", FAILED, TIMEOUT_DURATION)
    with trio.fail_after(TIMEOUT_DURATION):
        while sled.manager.find("p1") is not None:  # noqa: ASYNC110
            await trio.sleep(0.1)
    with pytest.raises(NoSuchVmm):
        await sled.api.get_state("p1")


# upstream: omicron sled-agent/src/instance.rs fn InstanceRunner::handle_monitor_message
# (b848b6df): the monitor reports Propolis NoInstance (it crashed and lost the VM) ->
# fail_vmm_and_terminate, Break.
async def test_monitor_no_instance_fails_the_vmm(actor_runtime: Runtime) -> None:
    sled = await make_sled(actor_runtime)
    await sled.api.register("p1", "i1")
    reply = await sled.runner_ref("p1").ask(Observation(None, 0, no_instance=True))
    assert reply == "break"
    await sled.nexus_sees("p1", FAILED, TIMEOUT_DURATION)


# upstream: omicron sled-agent/src/instance.rs fn InstanceRunner::run (b848b6df): a
# terminate cancels the in-flight request and is handled by handle_termination_request
# (fail_vmm_and_terminate, reply Some(state)); with Nexus the new state owner nothing is
# published. Ours: the in-flight caller gets InstanceGone.
async def test_terminate_while_starting_preempts_the_start(actor_runtime: Runtime) -> None:
    zones = SimZones(install_time=1.0, boot_time=1.0)
    zones.hang_next("install")
    sled = await make_sled(actor_runtime, zones=zones)
    await sled.api.register("p1", "i1")
    published = sled.nexus("p1")
    outcome: list[object] = []

    async def start() -> None:
        try:
            outcome.append(await sled.runner_ref("p1").ask(PutState(Target.RUNNING)))
        except InstanceGone as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start)
        await trio.sleep(100)  # stuck installing the zone
        final = await sled.api.unregister("p1")
    assert final is not None and final.state is S.FAILED
    assert len(outcome) == 1 and isinstance(outcome[0], InstanceGone)
    assert sled.nexus("p1") == published


# upstream: omicron sled-agent/src/instance.rs fn InstanceRunner::run (b848b6df), the
# drain after deregistration: CurrentState gets the final state, PutState gets
# Error::Terminating (410 NO_SUCH_INSTANCE through sled_agent.rs). Ours: the drain starts
# once the terminal state is published; a PutState waiting then gets InstanceGone (410).
async def test_requests_during_teardown_get_the_final_state_or_410(
    actor_runtime: Runtime,
) -> None:
    sled = await make_sled(actor_runtime)
    await run_vmm(sled, "p1")
    sled.world.nexus.latency = 5.0  # the runner waits for Nexus before deregistering
    propolis = sled.runner("p1").propolis
    assert propolis is not None
    await propolis.driver.tell(GuestHalted())
    with trio.fail_after(TIMEOUT_DURATION):
        while not sled.runner("p1").terminating:  # noqa: ASYNC110
            await trio.sleep(0.01)
    runner = sled.runner_ref("p1")
    assert (await runner.ask(CurrentState())).state is S.DESTROYED  # answered at once
    with pytest.raises(InstanceGone) as info:
        await sled.api.ensure_state("p1", Target.REBOOT)
    assert (info.value.status, info.value.code) == (410, "NO_SUCH_INSTANCE")
    assert DESTROYED in sled.nexus("p1")  # the 410 came only after the publication


# upstream: omicron sled-agent/src/instance_manager.rs fn
# InstanceManagerRunner::ensure_unregistered (b848b6df): an unknown VMM -> Ok(None) at
# once.
async def test_ensure_unregistered_of_an_unknown_vmm_is_none(actor_runtime: Runtime) -> None:
    sled = await make_sled(actor_runtime)
    t = trio.current_time()
    assert await sled.api.unregister("nobody") is None
    assert trio.current_time() == t


# upstream: omicron sled-agent/src/instance_manager.rs fn
# InstanceManagerRunner::ensure_registered (b848b6df): the same propolis id for another
# instance -> PropolisAlreadyRegistered; for the same instance -> the current state.
# Ours: 409 (upstream has no specific mapping: 500).
async def test_ensure_registered_is_idempotent_per_instance(actor_runtime: Runtime) -> None:
    sled = await make_sled(actor_runtime)
    first = await sled.api.register("p1", "i1")
    with pytest.raises(PropolisAlreadyRegistered) as info:
        await sled.api.register("p1", "i2")
    assert info.value.status == 409
    again = await sled.api.register("p1", "i1")
    assert again == first


# upstream: omicron sled-agent/src/instance_manager.rs fns InstanceManager::ensure_state
# and InstanceManagerRunner::ensure_state (b848b6df): an unknown VMM -> NoSuchVmm (404
# NO_SUCH_INSTANCE) for Stopped and Reboot. For Running and MigrationTarget upstream
# answers Ok(None) before the runner (or the table) has answered, so even NoSuchVmm is
# dropped. Ours: the table is consulted first, so the caller gets NoSuchVmm for every
# target.
@pytest.mark.parametrize("target", list(Target), ids=[t.name for t in Target])
async def test_ensure_state_of_an_unknown_vmm_is_no_such_vmm(
    actor_runtime: Runtime, target: Target
) -> None:
    sled = await make_sled(actor_runtime)
    with pytest.raises(NoSuchVmm) as info:
        await sled.api.ensure_state("nobody", target)
    assert (info.value.status, info.value.code) == (404, "NO_SUCH_INSTANCE")


# upstream: omicron sled-agent/src/instance_manager.rs fn InstanceManagerRunner::run
# (b848b6df): deregistration requests are handled before the next request, "so that
# add, remove, add of the same instance always works".
async def test_add_remove_add_of_the_same_vmm(actor_runtime: Runtime) -> None:
    sled = await make_sled(actor_runtime)
    await sled.api.register("p1", "i1")
    assert await sled.api.unregister("p1") is not None
    again = await sled.api.register("p1", "i1")  # no wait in between
    assert again.state is S.STARTING
    assert (await sled.api.get_state("p1")).state is S.STARTING
