"""The sled agent's scenarios (spec/sled-agent.md §7: 1-9, 12), in virtual time."""

from __future__ import annotations

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from trioxide import traces
from trioxide.actors.errors import (
    InstanceChannelFull,
    InstanceGone,
    NoSuchVmm,
    PropolisAlreadyRegistered,
)
from trioxide.actors.instance_manager import Deregister
from trioxide.actors.instance_runner import (
    MigrationRecord,
    PutState,
    Target,
    apply_migration_observation,
    migration_on_halt,
)
from trioxide.actors.propolis.state_driver import GuestHalted
from trioxide.actors.sim.propolis_host import Crash
from trioxide.actors.sim.vm import SimulatedVm
from trioxide.actors.sim.zones import SimZones, propolis_zone_name
from trioxide.actors.sled_agent import SledAgent, SledAgentClient, SledConfig, SledWorld
from trioxide.actors.vmm_state import SledVmmState, VmmFailureReason, VmmKind, VmmState
from trioxide.runtime import Runtime

from ._sled import Sled, make_sled

S = SledVmmState


async def run_vmm(sled: Sled, pid: str, iid: str = "inst") -> None:
    await sled.api.register(pid, iid)
    assert await sled.api.ensure_state(pid, Target.RUNNING) is None
    while (await sled.api.get_state(pid)).state is not S.RUNNING:  # noqa: ASYNC110
        await trio.sleep(0.5)


async def test_1_running_returns_none_at_once_then_nexus_sees_running(
    actor_runtime: Runtime,
) -> None:
    sled = await make_sled(actor_runtime)
    first = await sled.api.register("p1", "i1")
    assert (first.state, first.gen) == (S.STARTING, 1)
    assert await sled.api.ensure_state("p1", Target.RUNNING) is None
    assert trio.current_time() == 0.0  # zone creation is long; the caller does not wait
    await trio.sleep(30)
    history = sled.nexus_states("p1")
    assert history[-1][0] == VmmState(VmmKind.RUNNING)
    gens = [gen for _s, gen in history]
    assert gens == sorted(set(gens)) and gens[-1] > 1  # Running has a gen above all earlier


async def test_2_destroyed_published_before_leaving_table_cleanup_outside_runner(
    actor_runtime: Runtime, trace_sink: traces.MemorySink
) -> None:
    sled = await make_sled(actor_runtime)
    sled.world.nexus.latency = 5.0  # Nexus is slow: the runner must still publish first
    await run_vmm(sled, "p1")
    runner = sled.runner("p1")
    assert runner.propolis is not None
    await runner.propolis.driver.tell(GuestHalted())
    t0 = trio.current_time()
    # In the window, GetState answers at once with the terminal state.
    state = await sled.api.get_state("p1")
    assert state.state is S.DESTROYED and trio.current_time() == t0
    while sled.manager.find("p1") is not None:  # noqa: ASYNC110
        await trio.sleep(0.1)
    left_table = trio.current_time()
    (t_destroyed,) = [
        t for t, s, _g in sled.world.nexus.vmm_history["p1"] if s.kind is VmmKind.DESTROYED
    ]
    assert t_destroyed <= left_table and left_table >= t0 + 5.0
    # The runner exited long before the 30-minute bundle; the zone is cleaned up after.
    stops = [e for e in trace_sink.events if e.kind == "stop" and "runner-p1" in e.actor]
    assert stops and stops[0].t < t0 + 60
    zone = propolis_zone_name("p1")
    assert sled.world.zones.exists(zone)
    await trio.sleep(2000)
    assert not sled.world.zones.exists(zone)
    with pytest.raises(NoSuchVmm):
        await sled.api.get_state("p1")


@pytest.mark.parametrize("vanish", [True, False], ids=["zone-gone", "no-instance"])
async def test_3_zone_gone_or_no_instance_fails_and_deregisters(
    actor_runtime: Runtime, vanish: bool
) -> None:
    sled = await make_sled(actor_runtime)
    await run_vmm(sled, "p1")
    if vanish:
        sled.world.zones.vanish(propolis_zone_name("p1"))
    await sled.api.agent.refs["propolis-host"].tell(Crash("p1"))
    await trio.sleep(5)
    assert sled.nexus_states("p1")[-1][0] == VmmState.failed(VmmFailureReason.FROM_SLED_AGENT)
    with pytest.raises(NoSuchVmm):
        await sled.api.get_state("p1")


async def test_4_stop_grace_forces_destroyed_after_600s_and_is_not_rearmed(
    actor_runtime: Runtime,
) -> None:
    sled = await make_sled(actor_runtime, vm=SimulatedVm(halt_time=1e9))  # stuck in Stopping
    await run_vmm(sled, "p1")
    t0 = trio.current_time()
    stopping = await sled.api.ensure_state("p1", Target.STOPPED)
    assert stopping is not None and stopping.state is S.STOPPING
    await trio.sleep(300)
    again = await sled.api.ensure_state("p1", Target.STOPPED)  # must not re-arm the timer
    assert again is not None and again.state is S.STOPPING
    await trio.sleep(299)
    assert sled.nexus_states("p1")[-1][0] != VmmState(VmmKind.DESTROYED)
    await trio.sleep(2)  # t0 + 601
    assert sled.nexus_states("p1")[-1][0] == VmmState(VmmKind.DESTROYED)
    (t_destroyed,) = [
        t for t, s, _g in sled.world.nexus.vmm_history["p1"] if s.kind is VmmKind.DESTROYED
    ]
    assert t_destroyed == pytest.approx(t0 + 600)


async def test_5_terminate_preempts_a_stuck_start(actor_runtime: Runtime) -> None:
    zones = SimZones(install_time=1.0, boot_time=1.0)
    zones.hang_next("install")
    sled = await make_sled(actor_runtime, zones=zones)
    await sled.api.register("p1", "i1")
    runner = sled.manager.find("p1")
    assert runner is not None
    published_before = list(sled.nexus_states("p1"))
    outcome: list[object] = []

    async def stuck_request() -> None:
        try:
            outcome.append(await runner.runner.ask(PutState(Target.RUNNING)))
        except InstanceGone as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stuck_request)
        await trio.sleep(100)  # the install hangs
        final = await sled.api.unregister("p1")
    assert final is not None and final.state is S.FAILED  # the terminate reply
    assert len(outcome) == 1 and isinstance(outcome[0], InstanceGone)
    assert sled.nexus_states("p1") == published_before  # nothing published (owner Nexus)


async def test_a_stop_aborts_a_start_waiting_for_the_old_zones_cleanup(
    actor_runtime: Runtime,
) -> None:
    # Ours (spec/sled-agent.md §2, "a stop aborts setup"): upstream's runner runs the setup
    # inside the request it handles, so a stop queues behind it. The demo showed what that
    # costs here: a VMM registered again (#3325) waits for its old zone's cleanup - behind
    # the sled's queue of 30-minute bundles, hours - and its stop waited as long.
    sled = await make_sled(actor_runtime)
    zone = propolis_zone_name("p1")
    await run_vmm(sled, "p1", "i1")
    await sled.api.ensure_state("p1", Target.STOPPED)
    while sled.manager.find("p1") is not None:  # noqa: ASYNC110
        await trio.sleep(1)
    assert sled.world.zones.exists(zone)  # its cleanup has a 30-minute bundle to collect
    # A new start of the same VMM, at the generation Nexus holds (as the demo's saga).
    await sled.api.register("p1", "i1", vmm_gen=sled.nexus_states("p1")[-1][1])
    assert await sled.api.ensure_state("p1", Target.RUNNING) is None
    await trio.sleep(60)
    assert sled.runner("p1").zone is None  # still waiting for the old zone's cleanup
    seen = len(sled.nexus_states("p1"))
    t = trio.current_time()
    with trio.fail_after(1):  # not after the bundle (1,740 s from here)
        final = await sled.api.ensure_state("p1", Target.STOPPED)
    assert final is not None and final.state is S.DESTROYED
    while sled.manager.find("p1") is not None:  # noqa: ASYNC110
        await trio.sleep(0.1)
    assert trio.current_time() - t < 5
    # Nexus saw the new VMM go from starting to destroyed; it never ran.
    assert [st.kind for st, _gen in sled.nexus_states("p1")[seen:]] == [VmmKind.DESTROYED]
    assert sled.world.hypervisor.vmm_memory("p1") == 0
    await trio.sleep(2000)  # the old zone's cleanup ran to its end, undisturbed
    assert not sled.world.zones.exists(zone) and sled.world.zones.collisions() == 0
    await run_vmm(sled, "p1", "i1")  # and the VMM starts again


async def test_a_stop_aborts_a_start_stuck_in_a_zone_operation_and_the_zone_is_cleaned(
    actor_runtime: Runtime,
) -> None:
    zones = SimZones(install_time=1.0, boot_time=1.0, bundle_time=10.0)
    zones.hang_next("install")
    sled = await make_sled(actor_runtime, zones=zones)
    zone = propolis_zone_name("p1")
    await sled.api.register("p1", "i1")
    await sled.api.ensure_state("p1", Target.RUNNING)
    await trio.sleep(100)  # the install hangs
    assert zones.exists(zone)
    with trio.fail_after(1):
        final = await sled.api.ensure_state("p1", Target.STOPPED)
    assert final is not None and final.state is S.DESTROYED
    assert sled.nexus("p1")[-1] == VmmState(VmmKind.DESTROYED)
    await trio.sleep(60)  # the zone the setup had made went to cleanup: gone
    assert not zones.exists(zone) and sled.manager.find("p1") is None


async def test_a_stop_aborts_a_start_waiting_for_the_reservoir_and_reserves_nothing(
    actor_runtime: Runtime,
) -> None:
    from trioxide.actors.reservoir import ReservoirMode
    from trioxide.actors.sim.hypervisor import GiB, SimHypervisor

    world = SledWorld(
        zones=SimZones(install_time=1.0, boot_time=1.0, bundle_time=10.0),
        hypervisor=SimHypervisor(physical_bytes=40 * GiB, control_plane_reserve_bytes=8 * GiB),
    )
    config = SledConfig(reservoir=ReservoirMode.size_mib(8 * 1024))  # Ready at 8 s
    api = SledAgentClient(await actor_runtime.spawn(SledAgent, world, config, name="sled"))
    await api.register("p1", "i1")
    await api.ensure_state("p1", Target.RUNNING)
    await trio.sleep(4)  # the zone is up; the start waits for the reservoir
    with trio.fail_after(1):
        final = await api.ensure_state("p1", Target.STOPPED)
    assert final is not None and final.state is S.DESTROYED and trio.current_time() < 5
    await trio.sleep(30)  # the reservoir became Ready meanwhile: nothing was taken from it
    assert world.hypervisor.vmm_memory("p1") == 0
    assert world.hypervisor.statistics().vmm_reservations == 0
    assert not world.zones.exists(propolis_zone_name("p1"))


async def test_6_queue_full_other_vmms_still_served(actor_runtime: Runtime) -> None:
    zones = SimZones(install_time=1.0, boot_time=1.0)
    sled = await make_sled(actor_runtime, zones=zones)
    await run_vmm(sled, "p2", "i2")
    zones.hang_next("install")
    await sled.api.register("p1", "i1")
    await sled.api.ensure_state("p1", Target.RUNNING)  # wedges p1's runner in setup
    await wait_all_tasks_blocked()
    results: list[object] = []

    async def reboot() -> None:
        try:
            results.append(await sled.api.ensure_state("p1", Target.REBOOT))
        except (InstanceChannelFull, InstanceGone) as exc:  # refused now, or drained later
            results.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(33):
            nursery.start_soon(reboot)
        await wait_all_tasks_blocked()
        full = [r for r in results if isinstance(r, InstanceChannelFull)]
        assert len(full) == 1 and full[0].status == 503 and full[0].code == "INSTANCE_CHANNEL_FULL"
        t = trio.current_time()
        assert (await sled.api.get_state("p2")).state is S.RUNNING  # promptly
        assert trio.current_time() == t
        await sled.api.unregister("p1")  # unwedge: queued requests are drained
    assert all(isinstance(r, InstanceChannelFull | InstanceGone) for r in results)


async def test_7_teardown_window_never_waits_for_the_bundle(actor_runtime: Runtime) -> None:
    sled = await make_sled(actor_runtime)
    await run_vmm(sled, "p1")
    runner = sled.runner("p1")
    assert runner.propolis is not None
    await runner.propolis.driver.tell(GuestHalted())
    for _ in range(20):
        t = trio.current_time()
        try:
            state = await sled.api.get_state("p1")
            assert state.state is S.DESTROYED
        except (InstanceGone, NoSuchVmm):
            pass
        assert trio.current_time() == t  # answered at once
        await trio.sleep(0.05)
    await trio.sleep(1)
    with pytest.raises(NoSuchVmm):
        await sled.api.get_state("p1")
    assert sled.world.zones.statistics().bundles_running == 1  # still bundling, elsewhere


async def test_8_add_remove_add_survives_a_stale_removal(actor_runtime: Runtime) -> None:
    sled = await make_sled(actor_runtime)
    await sled.api.register("p1", "i1")
    assert await sled.api.unregister("p1") is not None
    again = await sled.api.register("p1", "i1")
    assert again.state is S.STARTING
    entry = sled.manager.find("p1")
    assert entry is not None and entry.gen == 2
    await sled.api.manager.tell(Deregister("p1", 1))  # a stale removal arrives late
    await wait_all_tasks_blocked()
    assert sled.manager.find("p1") is entry
    assert sled.manager.stale_removals >= 1
    assert (await sled.api.get_state("p1")).state is S.STARTING


async def test_9_same_propolis_id_other_instance_is_refused(actor_runtime: Runtime) -> None:
    sled = await make_sled(actor_runtime)
    await sled.api.register("p1", "i1")
    with pytest.raises(PropolisAlreadyRegistered):
        await sled.api.register("p1", "i2")
    same = await sled.api.register("p1", "i1")
    assert same.state is S.STARTING


def test_12_migration_record_generations() -> None:
    rec = MigrationRecord("m1", "pending", 1)
    assert apply_migration_observation(rec, "m1", "in_progress") == MigrationRecord(
        "m1", "in_progress", 2
    )
    assert apply_migration_observation(rec, "m1", "pending") is rec  # no change, no bump
    assert apply_migration_observation(rec, "m2", "pending") == MigrationRecord("m2", "pending", 2)
    assert apply_migration_observation(None, "m3", "in_progress").gen == 2
    assert migration_on_halt(MigrationRecord("m1", "in_progress", 3)) == MigrationRecord(
        "m1", "failed", 4
    )
    done = MigrationRecord("m1", "completed", 5)
    assert migration_on_halt(done) is done
    assert migration_on_halt(None) is None


async def test_11_reservoir_start_waits_for_ready_and_nexus_learns_the_size(
    actor_runtime: Runtime,
) -> None:
    from trioxide.actors.reservoir import (
        Percentage,
        Ready,
        ReservoirBusy,
        ReservoirConfigError,
        ReservoirMode,
        SizeMiB,
    )
    from trioxide.actors.sim.hypervisor import GiB, SimHypervisor

    world = SledWorld(
        zones=SimZones(install_time=1.0, boot_time=1.0),
        hypervisor=SimHypervisor(physical_bytes=40 * GiB, control_plane_reserve_bytes=8 * GiB),
    )
    config = SledConfig(reservoir=ReservoirMode.size_mib(8 * 1024))  # 8 GiB, 1 s per GiB
    sled = Sled(
        SledAgentClient(await actor_runtime.spawn(SledAgent, world, config, name="sled")),
        world,
        actor_runtime,
    )
    with pytest.raises(ReservoirBusy):  # the boot allocation is running
        await sled.api.set_reservoir_size(SizeMiB(1024))
    await sled.api.register("p1", "i1")
    await sled.api.ensure_state("p1", Target.RUNNING)
    # The zone is up at ~2.3 s, but the start waits for the reservoir (Ready at 8 s).
    while (await sled.api.get_state("p1")).state is not S.RUNNING:  # noqa: ASYNC110
        await trio.sleep(0.25)
    assert trio.current_time() >= 8.0
    assert isinstance(sled.agent_reservoir_state(), Ready)
    await trio.sleep(10)  # the notifier's 2 s tick: Nexus learns the new size
    info = world.nexus.sled("sled-0")
    assert info is not None and info.reservoir_size_bytes == 8 * GiB
    known = await sled.api.sled_info()
    assert known.known == "found" and known.known_info.reservoir_size_bytes == 8 * GiB
    with pytest.raises(ReservoirConfigError):  # out of range: refused, the size stays
        await sled.api.set_reservoir_size(Percentage(150.0))
    assert isinstance(sled.agent_reservoir_state(), Ready)
    # A failed allocation: the next start fails fast and Nexus learns the actual size.
    world.hypervisor.fail_after_bytes = 10 * GiB
    await sled.api.set_reservoir_size(SizeMiB(16 * 1024))
    await trio.sleep(20)
    await sled.api.register("p2", "i2")
    t = trio.current_time()
    await sled.api.ensure_state("p2", Target.RUNNING)
    await trio.sleep(5)
    assert sled.nexus_states("p2")[-1][0] == VmmState.failed(VmmFailureReason.FROM_SLED_AGENT)
    assert trio.current_time() - t < 10  # fast, not the 300 s reservoir timeout
    info = world.nexus.sled("sled-0")
    assert info is not None and info.reservoir_size_bytes == 10 * GiB


async def test_a_zone_whose_create_was_cancelled_is_cleaned_up_and_the_vmm_starts_again(
    actor_runtime: Runtime,
) -> None:
    # issue 11 (the #3325 symptom under start tokens): a Terminate cancelling zone creation
    # left the claimed zone to nobody; every later start of the VMM id failed with
    # ZoneAlreadyExists. spec/sled-agent.md §2: a zone whose setup is cancelled is halted
    # by cleanup.
    zones = SimZones(create_time=5.0, install_time=1.0, boot_time=1.0, bundle_time=10.0)
    sled = await make_sled(actor_runtime, zones=zones)
    zone = propolis_zone_name("p1")
    await sled.api.register("p1", "i1")
    assert await sled.api.ensure_state("p1", Target.RUNNING) is None
    await trio.sleep(1.0)  # create has claimed the name and is still working
    assert zones.state(zone) == "configured"
    await sled.api.unregister("p1")
    while sled.manager.find("p1") is not None:  # noqa: ASYNC110
        await trio.sleep(0.5)
    await trio.sleep(60)  # the hand-over: bundle, halt, remove
    assert not zones.exists(zone)
    await run_vmm(sled, "p1", "i1")  # starts again
    assert zones.collisions() == 0


async def test_publisher_sends_a_superseding_state_once_after_an_outage(
    actor_runtime: Runtime,
) -> None:
    """Latest-value publishing through a Nexus outage: while a publication is retried, a
    newer state supersedes it; once Nexus is back that newer state is sent once, not a
    second time when the publisher looks at its outbox again (found over HTTP: Nexus
    counted one stale update per outage)."""
    sled = await make_sled(actor_runtime)
    await run_vmm(sled, "p1")
    await trio.sleep(5)
    runner = sled.runner("p1")
    nexus = sled.world.nexus
    nexus.set_available(False)
    assert await sled.api.ensure_state("p1", Target.REBOOT) is not None  # Rebooting
    await trio.sleep(30)  # retried meanwhile; observations supersede Rebooting
    assert runner.publish_attempts > 2
    nexus.set_available(True)
    await trio.sleep(400)  # past the largest backoff step reached
    s = nexus.statistics()
    assert s.stale_vmm == 0, s
    gens = [gen for _s, gen in sled.nexus_states("p1")]
    assert gens == sorted(set(gens))
    assert runner.published.value == runner.vmm.gen == gens[-1]
