"""The VMM reservoir manager and the simulated hypervisor (spec/sled-agent.md section 3,
scenario 11). Async tests run in virtual time (MockClock, autojump), so every time below
is exact: the default hypervisor has 120 GiB eligible and takes 1 s per GiB."""

from __future__ import annotations

import math
import re

import pytest
import trio

from trioxide.actors.reservoir import (
    Failed,
    GetReservoir,
    NotConfigured,
    Pending,
    Percentage,
    Ready,
    ReservoirBusy,
    ReservoirConfigError,
    ReservoirMode,
    ReservoirState,
    ReservoirStatus,
    ReservoirUnavailable,
    SetReservoirSize,
    SizeMiB,
    VmmReservoirManager,
    reservoir_bytes_for,
    wait_for_reservoir,
)
from trioxide.actors.sim.hypervisor import (
    GiB,
    InsufficientMemory,
    MiB,
    ReservoirAllocationError,
    SimHypervisor,
)
from trioxide.runtime import ActorRef, Runtime, Watch

ELIGIBLE = 120 * GiB


async def spawn_manager(
    rt: Runtime, hv: SimHypervisor, mode: ReservoirMode | None
) -> tuple[ActorRef, VmmReservoirManager]:
    ref = await rt.spawn(VmmReservoirManager, hv, mode, name="reservoir")
    inst = ref.instance
    assert isinstance(inst, VmmReservoirManager)
    return ref, inst


async def ready_at(watch: Watch[ReservoirState]) -> tuple[ReservoirState, float]:
    """Wait until the watch leaves Pending; the state and the virtual time then."""
    state = await watch.wait_for(lambda s: not isinstance(s, Pending))
    return state, trio.current_time()


# -- sizing (pure) -----------------------------------------------------------------------


@pytest.mark.parametrize("percent", [0.0, 0.09, -1.0, 100.0, 100.5, math.nan, math.inf])
def test_percentage_out_of_range_is_a_config_error(percent: float) -> None:
    with pytest.raises(ReservoirConfigError, match=re.escape(str(percent))):
        reservoir_bytes_for(Percentage(percent), ELIGIBLE)


def test_sizing_rounds_down_to_2mib() -> None:
    # floor(120 GiB * 33.3 / 100) = 42906723287 bytes -> 20459 * 2 MiB
    assert reservoir_bytes_for(ReservoirMode.percentage(33.3), ELIGIBLE) == 20459 * 2 * MiB
    assert reservoir_bytes_for(Percentage(0.1), ELIGIBLE) == 61 * 2 * MiB  # 122.88 MiB
    assert reservoir_bytes_for(Percentage(99.99), ELIGIBLE) == 61433 * 2 * MiB  # 122867.712 MiB
    assert reservoir_bytes_for(Percentage(50), ELIGIBLE) == 60 * GiB
    assert reservoir_bytes_for(ReservoirMode.size_mib(1537), ELIGIBLE) == 1536 * MiB
    assert reservoir_bytes_for(SizeMiB(1), ELIGIBLE) == 0
    assert reservoir_bytes_for(SizeMiB(120 * 1024), ELIGIBLE) == ELIGIBLE


@pytest.mark.parametrize("mib", [-2, 120 * 1024 + 1])
def test_size_out_of_range_is_a_config_error(mib: int) -> None:
    with pytest.raises(ReservoirConfigError, match=str(mib)):
        reservoir_bytes_for(SizeMiB(mib), ELIGIBLE)


# -- the hypervisor alone ----------------------------------------------------------------


def test_reserve_vmm_memory_insufficient() -> None:
    hv = SimHypervisor()
    with pytest.raises(InsufficientMemory) as info:
        hv.reserve_vmm_memory("vmm-0", 1 * GiB)  # no reservoir yet
    assert (info.value.requested_bytes, info.value.available_bytes) == (GiB, 0)
    assert hv.vmm_memory("vmm-0") == 0
    assert hv.statistics().vmm_rejections == 1


async def test_reserve_vmm_memory_accounts_within_the_reservoir(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    _, mgr = await spawn_manager(actor_runtime, hv, SizeMiB(4 * 1024))
    assert await wait_for_reservoir(mgr.watch, 4 * GiB, timeout=10.0) == 4 * GiB

    hv.reserve_vmm_memory("vmm-a", 3 * GiB)
    with pytest.raises(InsufficientMemory, match="vmm-b") as info:
        hv.reserve_vmm_memory("vmm-b", 2 * GiB)
    assert info.value.available_bytes == 1 * GiB
    assert hv.vmm_memory("vmm-b") == 0
    with pytest.raises(ValueError, match="already holds"):
        hv.reserve_vmm_memory("vmm-a", 1)
    assert hv.release_vmm_memory("vmm-a") == 3 * GiB
    assert hv.release_vmm_memory("vmm-a") == 0  # idempotent
    hv.reserve_vmm_memory("vmm-b", 2 * GiB)
    s = hv.statistics()
    assert (s.vmm_reserved_bytes, s.vmm_count, s.vmm_reservations, s.vmm_rejections) == (
        2 * GiB,
        1,
        2,
        1,
    )


async def test_hypervisor_steps_take_their_time_and_are_atomic(actor_runtime: Runtime) -> None:
    hv = SimHypervisor(seconds_per_gib=2.0, fail_after_bytes=GiB)
    t0 = trio.current_time()
    assert await hv.grow_reservoir(GiB // 2) == GiB // 2
    assert trio.current_time() == t0 + 1.0
    with pytest.raises(ReservoirAllocationError) as info:
        await hv.grow_reservoir(GiB)  # to 1.5 GiB > fail_after_bytes: fails after its time
    assert trio.current_time() == t0 + 3.0
    assert hv.reservoir_bytes == info.value.reservoir_bytes == GiB // 2
    with trio.move_on_after(0.5):
        await hv.grow_reservoir(GiB // 4)
    assert hv.reservoir_bytes == GiB // 2  # cancelled step: nothing applied
    s = hv.statistics()
    assert (s.grow_steps, s.failed_steps, s.cancelled_steps) == (1, 1, 1)


# -- configuration -----------------------------------------------------------------------


async def test_set_percentage_out_of_range_changes_nothing(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    ref, mgr = await spawn_manager(actor_runtime, hv, None)
    assert mgr.watch.value == NotConfigured()
    version = mgr.watch.version
    for percent in (0.05, 100.0, 250.0):
        with pytest.raises(ReservoirConfigError, match=re.escape(str(percent))):
            await ref.ask(SetReservoirSize(Percentage(percent)), timeout=1.0)
    with pytest.raises(ReservoirConfigError, match="123904 MiB"):
        await ref.ask(SetReservoirSize(SizeMiB(121 * 1024)), timeout=1.0)
    status = await ref.ask(GetReservoir(), timeout=1.0)
    assert isinstance(status, ReservoirStatus)
    assert (status.state, status.desired_bytes, status.actual_bytes) == (NotConfigured(), 0, 0)
    assert (status.reservoir_bytes, status.mode, status.resizing) == (0, None, False)
    assert mgr.watch.version == version  # nothing published
    assert hv.reservoir_bytes == 0
    assert mgr.statistics().config_errors == 4
    assert mgr.statistics().resizes_started == 0


async def test_invalid_boot_mode_publishes_failed_at_size_zero(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    ref, mgr = await spawn_manager(actor_runtime, hv, Percentage(100.0))
    state = mgr.watch.value
    assert isinstance(state, Failed)
    assert state.actual_bytes == 0
    assert "invalid reservoir configuration" in state.error and "100.0" in state.error
    status = await ref.ask(GetReservoir(), timeout=1.0)
    assert (status.desired_bytes, status.actual_bytes, hv.reservoir_bytes) == (0, 0, 0)
    with pytest.raises(ReservoirUnavailable, match=re.escape("100.0")):
        await wait_for_reservoir(mgr.watch, GiB, timeout=5.0)


@pytest.mark.parametrize("mode", [None, SizeMiB(0), SizeMiB(1)])
async def test_no_reservoir_at_boot_is_not_configured(
    actor_runtime: Runtime, mode: ReservoirMode | None
) -> None:
    hv = SimHypervisor()
    _, mgr = await spawn_manager(actor_runtime, hv, mode)
    assert mgr.watch.value == NotConfigured()
    t0 = trio.current_time()
    with pytest.raises(ReservoirUnavailable, match="no VMM reservoir is configured") as info:
        await wait_for_reservoir(mgr.watch, 0, timeout=60.0)
    assert info.value.state == NotConfigured()
    assert trio.current_time() == t0  # at once


# -- allocation --------------------------------------------------------------------------


async def test_percentage_allocates_in_1gib_steps_then_ready(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    t0 = trio.current_time()
    ref, mgr = await spawn_manager(actor_runtime, hv, ReservoirMode.percentage(33.3))
    target = 20459 * 2 * MiB  # 39 GiB + 982 MiB
    assert mgr.watch.value == Pending(target)
    status = await ref.ask(GetReservoir(), timeout=1.0)
    assert (status.desired_bytes, status.actual_bytes, status.resizing) == (target, 0, True)

    state, t = await ready_at(mgr.watch)
    assert state == Ready(target)
    assert t == t0 + 39 + 982 / 1024  # 39 one-GiB steps, then a 982 MiB step
    assert hv.reservoir_bytes == target
    hs = hv.statistics()
    assert (hs.grow_steps, hs.bytes_grown) == (40, target)
    s = mgr.statistics()
    assert (s.resizes_started, s.resizes_completed, s.resizes_failed) == (1, 1, 0)
    assert (s.current_bytes, s.desired_bytes, s.resizing) == (target, target, False)


async def test_size_mib_is_aligned_down(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    t0 = trio.current_time()
    _, mgr = await spawn_manager(actor_runtime, hv, SizeMiB(1537))
    assert mgr.watch.value == Pending(1536 * MiB)
    assert await ready_at(mgr.watch) == (Ready(1536 * MiB), t0 + 1.5)


async def test_watch_subscriber_sees_pending_then_ready(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    t0 = trio.current_time()
    _, mgr = await spawn_manager(actor_runtime, hv, SizeMiB(8 * 1024))
    seen: list[tuple[ReservoirState, float]] = []
    async for state in mgr.watch.changes():
        seen.append((state, trio.current_time() - t0))
        if not isinstance(state, Pending):
            break
    assert seen == [(Pending(8 * GiB), 0.0), (Ready(8 * GiB), 8.0)]


async def test_set_during_resize_is_busy_then_shrink(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    t0 = trio.current_time()
    ref, mgr = await spawn_manager(actor_runtime, hv, SizeMiB(10 * 1024))
    await trio.sleep(3.0)
    with pytest.raises(ReservoirBusy, match="busy") as info:
        await ref.ask(SetReservoirSize(SizeMiB(2048)), timeout=1.0)
    assert (info.value.target_bytes, info.value.reservoir_bytes) == (10 * GiB, 3 * GiB)
    assert trio.current_time() == t0 + 3.0  # immediately
    assert mgr.watch.value == Pending(10 * GiB)
    assert mgr.desired_bytes == 10 * GiB  # the refused request changed nothing

    assert await ready_at(mgr.watch) == (Ready(10 * GiB), t0 + 10.0)
    t1 = trio.current_time()
    reply = await ref.ask(SetReservoirSize(ReservoirMode.size_mib(4 * 1024)), timeout=1.0)
    assert reply == Pending(4 * GiB)
    assert await ready_at(mgr.watch) == (Ready(4 * GiB), t1 + 6.0)
    assert hv.statistics().shrink_steps == 6
    # Same size again: Ready at once, nothing resized, nothing published.
    version = mgr.watch.version
    assert await ref.ask(SetReservoirSize(SizeMiB(4 * 1024)), timeout=1.0) == Ready(4 * GiB)
    assert mgr.watch.version == version
    s = mgr.statistics()
    assert (s.resizes_started, s.resizes_completed, s.busy_rejections) == (2, 2, 1)


async def test_allocation_failure_publishes_failed_with_size_reached(
    actor_runtime: Runtime,
) -> None:
    hv = SimHypervisor(fail_after_bytes=5 * GiB + 512 * MiB)
    t0 = trio.current_time()
    ref, mgr = await spawn_manager(actor_runtime, hv, SizeMiB(10 * 1024))
    state, t = await ready_at(mgr.watch)
    assert isinstance(state, Failed)
    assert state.actual_bytes == 5 * GiB  # five steps succeeded; the sixth failed
    assert t == t0 + 6.0  # the failing step took its time; no hang
    assert "injected" in state.error
    status = await ref.ask(GetReservoir(), timeout=1.0)
    assert (status.desired_bytes, status.actual_bytes, status.reservoir_bytes) == (
        10 * GiB,
        5 * GiB,
        5 * GiB,
    )
    assert not status.resizing
    s = mgr.statistics()
    assert (s.resizes_failed, s.current_bytes) == (1, 5 * GiB)

    # Healed, the next request resumes from the size reached.
    hv.fail_after_bytes = None
    assert await ref.ask(SetReservoirSize(SizeMiB(10 * 1024)), timeout=1.0) == Pending(10 * GiB)
    assert await ready_at(mgr.watch) == (Ready(10 * GiB), t + 5.0)


async def test_shrink_below_vmm_memory_fails_keeping_size(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    ref, mgr = await spawn_manager(actor_runtime, hv, SizeMiB(4 * 1024))
    await ready_at(mgr.watch)
    hv.reserve_vmm_memory("vmm-a", 2 * GiB + 1)
    t0 = trio.current_time()
    await ref.ask(SetReservoirSize(SizeMiB(0)), timeout=1.0)
    state, t = await ready_at(mgr.watch)
    assert isinstance(state, Failed)
    assert state.actual_bytes == 3 * GiB and "used by VMMs" in state.error
    assert t == t0 + 2.0  # one step succeeded, the second could not free VMM memory


# -- wait_for_reservoir ------------------------------------------------------------------


async def test_wait_returns_at_the_moment_it_is_ready(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    t0 = trio.current_time()
    _, mgr = await spawn_manager(actor_runtime, hv, SizeMiB(16 * 1024))
    assert await wait_for_reservoir(mgr.watch, 16 * GiB, timeout=100.0) == 16 * GiB
    assert trio.current_time() == t0 + 16.0
    # Already Ready: returns at once, even with a zero timeout.
    assert await wait_for_reservoir(mgr.watch, GiB, timeout=0.0) == 16 * GiB
    assert trio.current_time() == t0 + 16.0


async def test_wait_fails_fast_on_failure(actor_runtime: Runtime) -> None:
    hv = SimHypervisor(fail_after_bytes=2 * GiB)
    t0 = trio.current_time()
    _, mgr = await spawn_manager(actor_runtime, hv, SizeMiB(64 * 1024))
    with pytest.raises(ReservoirUnavailable, match=f"failed at {2 * GiB} bytes") as info:
        await wait_for_reservoir(mgr.watch, GiB, timeout=600.0)
    assert trio.current_time() == t0 + 3.0  # when the third step failed, not the timeout
    assert isinstance(info.value.state, Failed)


async def test_wait_too_small(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    t0 = trio.current_time()
    _, mgr = await spawn_manager(actor_runtime, hv, SizeMiB(4 * 1024))
    with pytest.raises(ReservoirUnavailable, match=f"holds {4 * GiB} bytes, {8 * GiB}"):
        await wait_for_reservoir(mgr.watch, 8 * GiB, timeout=600.0)
    assert trio.current_time() == t0 + 4.0


async def test_wait_times_out_at_exactly_the_timeout(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    t0 = trio.current_time()
    _, mgr = await spawn_manager(actor_runtime, hv, Percentage(99.0))  # ~119 s
    with pytest.raises(ReservoirUnavailable, match=re.escape("timed out after 30.0 s")) as info:
        await wait_for_reservoir(mgr.watch, GiB, timeout=30.0)
    assert trio.current_time() == t0 + 30.0
    assert isinstance(info.value.state, Pending)
    assert isinstance(mgr.watch.value, Pending)  # the allocation goes on


# -- cancellation ------------------------------------------------------------------------


async def test_stop_mid_allocation_cancels_the_resize(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    t0 = trio.current_time()
    ref, mgr = await spawn_manager(actor_runtime, hv, SizeMiB(100 * 1024))
    watch = mgr.watch
    outcome: list[tuple[str, float]] = []

    async def starter() -> None:
        try:
            await wait_for_reservoir(watch, GiB, timeout=600.0)
        except ReservoirUnavailable as exc:
            outcome.append((exc.reason, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(starter)
        await trio.sleep(3.5)
        await ref.stop(reason="shutdown")
        assert trio.current_time() == t0 + 3.5  # no hang: the step in progress is cancelled
    assert not ref.alive
    assert hv.reservoir_bytes == 3 * GiB
    assert hv.statistics().cancelled_steps == 1
    state = watch.value
    assert isinstance(state, Failed)
    assert state.actual_bytes == 3 * GiB and "stopped during resize" in state.error
    assert len(outcome) == 1 and outcome[0][1] == t0 + 3.5
    assert mgr.statistics().resizes_cancelled == 1
    await trio.sleep(100.0)
    assert hv.reservoir_bytes == 3 * GiB  # nothing runs on


async def test_external_watch_survives_a_new_incarnation(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    watch: Watch[ReservoirState] = Watch(NotConfigured())
    ref = await actor_runtime.spawn(VmmReservoirManager, hv, SizeMiB(2048), watch, name="reservoir")
    assert watch.value == Pending(2 * GiB)
    await trio.sleep(1.0)
    await ref.stop()
    stopped = watch.value
    assert isinstance(stopped, Failed) and stopped.actual_bytes == GiB
    # A new manager (as a restart would build one) resumes from the hypervisor's size.
    t0 = trio.current_time()
    await actor_runtime.spawn(VmmReservoirManager, hv, SizeMiB(2048), watch, name="reservoir2")
    assert await wait_for_reservoir(watch, 2 * GiB, timeout=10.0) == 2 * GiB
    assert trio.current_time() == t0 + 1.0


async def test_stop_right_after_spawn_publishes_failed_at_zero(actor_runtime: Runtime) -> None:
    hv = SimHypervisor()
    t0 = trio.current_time()
    ref, mgr = await spawn_manager(actor_runtime, hv, SizeMiB(4 * 1024))
    await ref.stop(reason="shutdown")
    assert trio.current_time() == t0
    state = mgr.watch.value
    assert isinstance(state, Failed) and state.actual_bytes == 0
    with pytest.raises(ReservoirUnavailable, match="stopped during resize"):
        await wait_for_reservoir(mgr.watch, GiB, timeout=60.0)
    assert trio.current_time() == t0
