"""Propolis as actors: the state driver and Crucible backend (spec/propolis.md §2-§4)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from trioxide import traces
from trioxide.actors.propolis.crucible import (
    CrucibleBackend,
    Region,
    ReplaceDownstairs,
    ReplaceRequestInvalid,
    ReplaceResult,
    Status,
    Volume,
)
from trioxide.actors.propolis.request_queue import DenyReason, RequestDenied
from trioxide.actors.propolis.state_driver import (
    BackendNotFound,
    Gone,
    GuestHalted,
    GuestRebooted,
    MigrateAsSource,
    NoInstance,
    Reboot,
    ReplaceVcr,
    Start,
    StateDriver,
    StateMonitor,
    Stop,
    VmState,
)
from trioxide.actors.sim.network import DownstairsNetwork
from trioxide.actors.sim.vm import SimulatedVm
from trioxide.runtime import ActorGone, ActorRef, Runtime

V = VmState


def vol(gen: int = 1, targets: tuple[str, str, str] = ("ds-a", "ds-b", "ds-c")) -> Volume:
    return Volume("vol-1", 512, (Region("reg-1", gen, targets),))


@dataclass
class Vm:
    driver: ActorRef
    monitor: StateMonitor
    net: DownstairsNetwork
    sim: SimulatedVm

    @property
    def backend(self) -> CrucibleBackend:
        inst = self.driver.instance
        assert isinstance(inst, StateDriver)
        b = inst.backends["disk0"].instance
        assert isinstance(b, CrucibleBackend)
        return b


async def make_vm(
    rt: Runtime,
    *,
    blackhole: str | None = None,
    migration_target: bool = False,
    failing_backend: bool = False,
    sim: SimulatedVm | None = None,
) -> Vm:
    net = DownstairsNetwork()
    if blackhole:
        net.blackhole(blackhole)
    monitor = StateMonitor(V.MIGRATING if migration_target else V.CREATING)
    sim = sim or SimulatedVm()
    driver = await rt.spawn(
        StateDriver,
        sim,
        {"disk0": vol()},
        net,
        monitor,
        migration_target,
        frozenset({"disk0"}) if failing_backend else frozenset(),
        name="propolis",
    )
    return Vm(driver, monitor, net, sim)


def task_events(sink: traces.MemorySink, name: str) -> list[tuple[str, str]]:
    return [
        (e.kind, e.detail or "")
        for e in sink.events
        if e.kind in ("task_start", "task_end") and (e.detail or "").startswith(name)
    ]


async def test_normal_start_and_stop(actor_runtime: Runtime) -> None:
    vm = await make_vm(actor_runtime)
    await vm.driver.tell(Start())
    running = await vm.monitor.wait_for_state(3)
    assert running.state is V.RUNNING
    assert vm.monitor.states() == [V.CREATING, V.STARTING, V.RUNNING]
    backend = vm.backend
    await vm.driver.tell(Stop())
    final = await vm.monitor.wait_for_state(6)
    assert final.state is V.DESTROYED
    assert vm.monitor.states()[3:] == [V.STOPPING, V.STOPPED, V.DESTROYED]
    assert backend.stop_called  # a normal stop stops the backends
    with pytest.raises(NoInstance, match="never reach generation 7"):
        await vm.monitor.wait_for_state(7)


async def test_blackholed_target_blocks_start_then_vcr_replacement_unblocks(
    actor_runtime: Runtime, trace_sink: traces.MemorySink
) -> None:
    vm = await make_vm(actor_runtime, blackhole="ds-b")
    await vm.driver.tell(Start())
    with trio.move_on_after(5.0):
        await vm.monitor.wait_for_state(3)
    assert trio.current_time() == 5.0
    assert vm.monitor.states() == [V.CREATING, V.STARTING]  # no Running within 5 s
    # The driver still serves VCR replacements while activation is blocked.
    result = await vm.driver.ask(ReplaceVcr("disk0", vol(2, ("ds-a", "ds-x", "ds-c"))))
    assert result is ReplaceResult.STARTED
    running = await vm.monitor.wait_for_state(3)
    assert running.state is V.RUNNING
    assert trio.current_time() == pytest.approx(5.0 + vm.net.latency)
    assert vm.monitor.states() == [V.CREATING, V.STARTING, V.RUNNING]
    assert vm.backend.vcr == vol(2, ("ds-a", "ds-x", "ds-c"))  # stored VCR updated
    # A further generation-only bump matches.
    bump = await vm.driver.ask(ReplaceVcr("disk0", vol(3, ("ds-a", "ds-x", "ds-c"))))
    assert bump is ReplaceResult.VCR_MATCHES
    assert task_events(trace_sink, "StateDriver._start_backends") == [
        ("task_start", "StateDriver._start_backends"),
        ("task_end", "StateDriver._start_backends: ok"),
    ]


async def test_stop_while_blocked_cancels_backend_startup(
    actor_runtime: Runtime, trace_sink: traces.MemorySink
) -> None:
    vm = await make_vm(actor_runtime, blackhole="ds-c")
    await vm.driver.tell(Start())
    await trio.sleep(30)
    backend = vm.backend
    await vm.driver.tell(Stop())
    final = await vm.monitor.wait_for_state(4)
    assert final.state is V.DESTROYED
    assert vm.monitor.states() == [V.CREATING, V.STARTING, V.STOPPED, V.DESTROYED]
    assert trio.current_time() == 30.0
    assert not backend.stop_called  # startup was cancelled; stop() never called
    # The scoped backend-startup task started and was cancelled (see the trace).
    started, ended = task_events(trace_sink, "StateDriver._start_backends")
    assert started == ("task_start", "StateDriver._start_backends")
    assert ended[0] == "task_end" and "Cancelled" in ended[1]
    # A later VCR request: Halted while the driver runs down, gone after.
    with pytest.raises((RequestDenied, ActorGone)) as info:
        await vm.driver.ask(ReplaceVcr("disk0", vol(2, ("ds-a", "ds-b", "ds-x"))))
    if isinstance(info.value, RequestDenied):
        assert info.value.reason is DenyReason.HALTED
    await vm.driver.wait_exited()
    with pytest.raises(NoInstance):
        await vm.monitor.wait_for_state(5)


async def test_vcr_queued_then_stop_while_blocked_stop_wins_vcr_gets_gone(
    actor_runtime: Runtime,
) -> None:
    vm = await make_vm(actor_runtime, blackhole="ds-a")
    await vm.driver.tell(Start())
    await wait_all_tasks_blocked()
    outcome: list[object] = []

    async def replace() -> None:
        try:
            outcome.append(
                await vm.driver.ask(ReplaceVcr("disk0", vol(2, ("ds-x", "ds-b", "ds-c"))))
            )
        except Gone as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        # Both are enqueued in the same scheduling batch, before the driver runs again:
        # the Stop (a state change) is dequeued first and aborts startup.
        nursery.start_soon(replace)
        nursery.start_soon(vm.driver.tell, Stop())
    assert len(outcome) == 1 and isinstance(outcome[0], Gone)
    assert str(outcome[0]) == "VM destroyed before request could be handled"
    assert vm.monitor.states() == [V.CREATING, V.STARTING, V.STOPPED, V.DESTROYED]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        # A *lower* generation is refused; an equal one with one target changed is valid
        # (crucible volume.rs test_volume_replace_low_gen / volume_replace_basic).
        (vol(0, ("ds-a", "ds-x", "ds-c")), "generation too low: 0 < 1"),
        (vol(2, ("ds-x", "ds-y", "ds-c")), "multiple different targets"),
        (vol(1), "The VCRs have no difference"),
        (Volume("vol-2", 512, (Region("reg-1", 2, ("ds-a", "ds-x", "ds-c")),)), "VCR id mismatch"),
        (Volume("vol-1", 4096, (Region("reg-1", 2, ("ds-a", "ds-x", "ds-c")),)), "block_size"),
        (
            Volume("vol-1", 512, (Region("reg-1", 2, ("ds-a", "ds-x", "ds-c"), key="k2"),)),
            "opts key mismatch",
        ),
        (
            Volume(
                "vol-1",
                512,
                (Region("reg-1", 2, ("ds-a", "ds-x", "ds-c")),),
                Region("rop-1", 1, ("ds-p", "ds-q", "ds-r")),
            ),
            "adds a read_only_parent",
        ),
        # ds-b -> ds-c while ds-b is still a client: "both in use" (downstairs.rs replace).
        (vol(2, ("ds-a", "ds-c", "ds-c")), "Both old ds-b and new ds-c targets are in use"),
    ],
    ids=[
        "lower-gen",
        "two-targets",
        "identical",
        "id",
        "block-size",
        "opts",
        "adds-parent",
        "both-in-use",
    ],
)
async def test_invalid_replacements_leave_activation_blocked(
    actor_runtime: Runtime, bad: Volume, message: str
) -> None:
    vm = await make_vm(actor_runtime, blackhole="ds-b")
    await vm.driver.tell(Start())
    await trio.sleep(1)
    with pytest.raises(ReplaceRequestInvalid, match=message) as info:
        await vm.driver.ask(ReplaceVcr("disk0", bad))
    assert info.value.status == 400
    assert vm.backend.vcr == vol()  # stored VCR unchanged
    with trio.move_on_after(10):
        await vm.monitor.wait_for_state(3)
    assert vm.monitor.states() == [V.CREATING, V.STARTING]  # still blocked
    with pytest.raises(BackendNotFound):
        await vm.driver.ask(ReplaceVcr("disk9", bad))


async def test_equal_generation_replacement_and_target_in_use(actor_runtime: Runtime) -> None:
    """An equal generation with one target changed is a valid replacement (crucible
    volume.rs volume_replace_basic, gen_bump false); replacing a target by one already in
    use while the old one is still present is an error, not ``CompletedAlready``
    (downstairs.rs ``Downstairs::replace``). ``StartedAlready``/``CompletedAlready``, which
    need the old target gone, are covered on the backend in test_upstream_crucible.py."""
    vm = await make_vm(actor_runtime, blackhole="ds-b")
    await vm.driver.tell(Start())
    await trio.sleep(1)
    vm.net.blackhole("ds-x")  # the replacement target is slow to come up
    replaced = vol(1, ("ds-a", "ds-x", "ds-c"))  # generation unchanged
    assert await vm.driver.ask(ReplaceVcr("disk0", replaced)) is ReplaceResult.STARTED
    # Bringing ds-x in again in place of ds-c, while ds-c is still a client.
    with pytest.raises(ReplaceRequestInvalid) as info:
        await vm.driver.ask(ReplaceVcr("disk0", vol(2, ("ds-a", "ds-x", "ds-x"))))
    assert "Both old ds-c and new ds-x targets are in use" in info.value.message
    assert vm.backend.vcr == replaced  # stored VCR unchanged by the refusal
    vm.net.heal("ds-x")
    await vm.monitor.wait_for_state(3)
    assert vm.monitor.states() == [V.CREATING, V.STARTING, V.RUNNING]
    inst = vm.driver.instance
    assert isinstance(inst, StateDriver)
    backend = inst.backends["disk0"]
    status = await backend.ask(Status())
    assert status.state == "active" and all(status.connected)
    assert status.targets == ("ds-a", "ds-x", "ds-c")
    # The backend's own replace_downstairs path answers "both in use" the same way.
    with pytest.raises(ReplaceRequestInvalid, match="in use"):
        await backend.ask(ReplaceDownstairs("ds-a", "ds-c"))


async def test_backend_start_error_fails_the_vm(actor_runtime: Runtime) -> None:
    vm = await make_vm(actor_runtime, failing_backend=True)
    inst = vm.driver.instance
    assert isinstance(inst, StateDriver)
    await vm.driver.tell(Start())
    await vm.monitor.wait_for_state(3)
    assert vm.monitor.states() == [V.CREATING, V.STARTING, V.FAILED]
    assert inst.queue.state.value == "failed"
    await vm.driver.wait_exited()
    with pytest.raises((RequestDenied, ActorGone)):
        await vm.driver.tell(Reboot())


async def test_device_start_error_fails_the_vm(actor_runtime: Runtime) -> None:
    vm = await make_vm(actor_runtime, sim=SimulatedVm(fail_device_start=True))
    await vm.driver.tell(Start())
    await vm.monitor.wait_for_state(3)
    assert vm.monitor.states() == [V.CREATING, V.STARTING, V.FAILED]


async def test_fire_and_forget_requests_and_denials(
    actor_runtime: Runtime, trace_sink: traces.MemorySink
) -> None:
    vm = await make_vm(actor_runtime, blackhole="ds-b")
    with pytest.raises(RequestDenied) as info:
        await vm.driver.tell(Reboot())  # not started yet
    assert info.value.reason is DenyReason.INSTANCE_NOT_ACTIVE
    await vm.driver.tell(Start())
    await vm.driver.tell(Start())  # ignored: success, nothing queued
    for req in (Reboot(), MigrateAsSource("m1")):
        with pytest.raises(RequestDenied) as info:
            await vm.driver.tell(req)
        assert info.value.reason is DenyReason.START_IN_PROGRESS
    vm.net.heal("ds-b")
    await vm.monitor.wait_for_state(3)
    for _ in range(5):
        await vm.driver.tell(Reboot())  # one queued, four ignored
    await vm.monitor.wait_for_state(5)
    assert vm.monitor.states() == [V.CREATING, V.STARTING, V.RUNNING, V.REBOOTING, V.RUNNING]
    starts = [e for e in trace_sink.events if e.kind == "receive" and e.msg_type == "Start"]
    reboots = [e for e in trace_sink.events if e.kind == "receive" and e.msg_type == "Reboot"]
    assert len(starts) == 1 and len(reboots) == 1
    admits = [e.detail for e in trace_sink.events if e.kind == "admit"]
    assert admits.count("ignore") == 5


async def test_issue_879_queued_stop_survives_a_return_to_running(
    actor_runtime: Runtime,
) -> None:
    """The queue remembers a queued Stop across "now running": Reboot/Migrate stay denied."""
    vm = await make_vm(actor_runtime)
    await vm.driver.tell(Start())
    await vm.monitor.wait_for_state(3)
    await vm.driver.tell(Reboot())
    await wait_all_tasks_blocked()  # rebooting (reset takes 0.5 s)
    await vm.driver.tell(Stop())  # queued behind the reboot
    for req in (Reboot(), MigrateAsSource("m1"), Start()):
        with pytest.raises(RequestDenied) as info:
            await vm.driver.tell(req)
        assert info.value.reason is DenyReason.HALT_PENDING
    await vm.monitor.wait_for_state(8)
    assert vm.monitor.history[4].state is V.RUNNING  # back to running, Stop still pending
    assert vm.monitor.states()[3:] == [V.REBOOTING, V.RUNNING, V.STOPPING, V.STOPPED, V.DESTROYED]


async def test_stop_queued_during_start_aborts_it(actor_runtime: Runtime) -> None:
    vm = await make_vm(actor_runtime)
    await vm.driver.tell(Start())
    await vm.driver.tell(Stop())  # dequeued while the backends activate
    await vm.monitor.wait_for_state(4)
    assert vm.monitor.states() == [V.CREATING, V.STARTING, V.STOPPED, V.DESTROYED]


async def test_guest_halt_and_guest_reboot(actor_runtime: Runtime) -> None:
    vm = await make_vm(actor_runtime)
    await vm.driver.tell(Start())
    await vm.monitor.wait_for_state(3)
    await vm.driver.tell(GuestRebooted())
    await vm.monitor.wait_for_state(5)
    await vm.driver.tell(GuestHalted())
    await vm.monitor.wait_for_state(7)
    assert vm.monitor.states() == [
        V.CREATING, V.STARTING, V.RUNNING, V.REBOOTING, V.RUNNING, V.STOPPED, V.DESTROYED,
    ]  # fmt: skip
    await vm.driver.wait_exited()
    with pytest.raises(ActorGone):
        await vm.driver.tell(Stop())


async def test_migration_target_starts_migrating_then_runs(actor_runtime: Runtime) -> None:
    target = await make_vm(actor_runtime, migration_target=True)
    assert target.monitor.current.state is V.MIGRATING
    with pytest.raises(RequestDenied) as info:
        await target.driver.tell(Reboot())  # auto start: the queue is StartPending
    assert info.value.reason is DenyReason.START_IN_PROGRESS
    await target.driver.tell(Start())  # ignored: already starting
    await target.monitor.wait_for_state(2)
    assert target.monitor.states() == [V.MIGRATING, V.RUNNING]
    await target.driver.tell(Reboot())  # now a normal running VM
    await target.monitor.wait_for_state(4)
    assert target.monitor.states()[2:] == [V.REBOOTING, V.RUNNING]


async def test_migrate_out_success_and_failure(actor_runtime: Runtime) -> None:
    sim = SimulatedVm(migrate_ok=False)
    vm = await make_vm(actor_runtime, sim=sim)
    await vm.driver.tell(Start())
    await vm.monitor.wait_for_state(3)
    await vm.driver.tell(MigrateAsSource("m1"))
    with pytest.raises(RequestDenied) as info:
        await vm.driver.tell(MigrateAsSource("m2"))  # not idempotent
    assert info.value.reason is DenyReason.ALREADY_MIGRATION_SOURCE
    await vm.monitor.wait_for_state(5)
    assert vm.monitor.states()[3:] == [V.MIGRATING, V.RUNNING]  # failed: back to running
    sim.migrate_ok = True
    await vm.driver.tell(MigrateAsSource("m3"))
    await vm.monitor.wait_for_state(7)
    assert vm.monitor.states()[5:] == [V.MIGRATING, V.DESTROYED]
    await vm.driver.wait_exited()


@pytest.mark.parametrize("migrate_ok", [False, True], ids=["migration-fails", "migration-succeeds"])
async def test_stop_while_migrating_out_is_queued_behind_the_migration(
    actor_runtime: Runtime, trace_sink: traces.MemorySink, migrate_ok: bool
) -> None:
    """A Stop with a migration out pending is accepted, never denied (upstream
    request_queue.rs: only an awaited stop makes a Stop ignored; propolis 7cd7c880). It
    waits behind the migration (upstream state_driver.rs handles one request at a time):
    a failed migration resumes the VM and the Stop then halts it; after a successful one
    the driver exits and the queued Stop is dropped with the queue, unhandled."""
    vm = await make_vm(actor_runtime, sim=SimulatedVm(migrate_ok=migrate_ok))
    await vm.driver.tell(Start())
    await vm.monitor.wait_for_state(3)
    await vm.driver.tell(MigrateAsSource("m1"))
    await wait_all_tasks_blocked()  # the migration is in progress (it takes 2 s)
    await vm.driver.tell(Stop())  # accepted: no RequestDenied
    await vm.driver.tell(Stop())  # ignored: a stop is already awaited
    with pytest.raises(RequestDenied) as info:
        await vm.driver.tell(Reboot())  # still denied: the reboot may belong to the target
    assert info.value.reason is DenyReason.INVALID_FOR_MIGRATION_SOURCE
    await vm.driver.wait_exited()
    stops = [e for e in trace_sink.events if e.kind == "receive" and e.msg_type == "Stop"]
    if migrate_ok:
        assert vm.monitor.states()[3:] == [V.MIGRATING, V.DESTROYED]
        assert stops == []  # dropped with the queue
    else:
        assert vm.monitor.states()[3:] == [
            V.MIGRATING, V.RUNNING, V.STOPPING, V.STOPPED, V.DESTROYED,
        ]  # fmt: skip
        assert len(stops) == 1


async def test_stop_before_start(actor_runtime: Runtime) -> None:
    vm = await make_vm(actor_runtime)
    await vm.driver.tell(Stop())
    await vm.monitor.wait_for_state(3)
    assert vm.monitor.states() == [V.CREATING, V.STOPPED, V.DESTROYED]
