"""Upstream conformance: propolis's external request queue, fact by fact.

Source: oxidecomputer/propolis ``bin/propolis-server/src/lib/vm/request_queue.rs``, its
``#[cfg(test)] mod test`` (unit tests and three proptests) and the saved proptest seeds in
``bin/propolis-server/src/proptest-regressions/vm/request_queue.txt``. Read at commit
7cd7c880 (PR #880, merged 2025-03-11); the tests are unchanged in ba4d338f (2025-03-26),
the file's last change on master (checked against master 372a5744, 2026-06-26).

Each upstream test has a test here of the same name that asserts the same facts against
:class:`RequestQueue` (the dispositions and their memory) and, where the fact is about
what gets dequeued, against the ``StateDriver`` actor (its mailbox is our queue:
``admit`` runs the dispositions, ``priority`` orders state changes before component
changes, ``drain`` answers VCR requests left behind). Upstream's ``try_queue`` returning
``Ok`` is "not denied" here; a request upstream would leave on the queue is one
``offer`` enqueued; one upstream would not is one ``offer`` ignored.

Where we deliberately differ, the test says "Ours:" and asserts our behaviour. There is one
such difference: ``MigrateAsSource`` while a start is pending is denied ``StartInProgress``
(spec/propolis.md §1); upstream queues it and its startup loop then hits ``unreachable!``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st
from trio.testing import wait_all_tasks_blocked

from trioxide import traces
from trioxide.actors.propolis.crucible import Region, Volume
from trioxide.actors.propolis.request_queue import (
    DenyReason,
    Disposition,
    QueueState,
    RequestDenied,
    RequestKind,
    RequestQueue,
)
from trioxide.actors.propolis.state_driver import (
    BackendNotFound,
    DriverMsg,
    Gone,
    GuestHalted,
    MigrateAsSource,
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
from trioxide.runtime import ActorRef, Runtime

K = RequestKind
V = VmState

# -- helpers -----------------------------------------------------------------------------


def accepted(d: Disposition) -> bool:
    """Upstream ``try_queue(..).is_ok()``: queued or ignored, not denied."""
    return d.denied is None


def running_queue() -> RequestQueue:
    """Upstream's "simulate a running instance": auto start, then Start{succeeded}."""
    q = RequestQueue(auto_start=True)
    q.start_completed(True)
    return q


def a_vcr() -> Volume:
    return Volume("vol-1", 512, (Region("reg-1", 2, ("ds-a", "ds-x", "ds-c")),))


@dataclass
class Vm:
    driver: ActorRef[StateDriver]
    monitor: StateMonitor
    sim: SimulatedVm

    @property
    def instance(self) -> StateDriver:
        inst = self.driver.instance
        assert isinstance(inst, StateDriver)
        return inst


async def make_vm(rt: Runtime, sim: SimulatedVm | None = None) -> Vm:
    """A driver without disks: startup has no backend to activate. A ``ReplaceVcr`` is
    then answered ``BackendNotFound`` - still a component change, dequeued as one."""
    monitor = StateMonitor(V.CREATING)
    sim = sim or SimulatedVm()
    driver = await rt.spawn(StateDriver, sim, {}, DownstairsNetwork(), monitor, name="propolis")
    return Vm(driver, monitor, sim)


def received(sink: traces.MemorySink) -> list[str]:
    """The driver's dequeued messages, in order (``receive`` trace events)."""
    return [e.msg_type or "" for e in sink.events if e.kind == "receive"]


# -- the unit tests ----------------------------------------------------------------------


# upstream: request_queue.rs test::start_requests_become_idempotent_after_first_request (propolis 7cd7c880)  # noqa: E501
async def test_start_requests_become_idempotent_after_first_request(
    actor_runtime: Runtime, trace_sink: traces.MemorySink
) -> None:
    q = RequestQueue()
    assert q.offer(K.START).enqueue  # the first start is queued
    second = q.offer(K.START)
    assert accepted(second) and second.ignored  # succeeds, but only one Start is queued
    q.start_completed(True)
    after = q.offer(K.START)
    assert accepted(after) and after.ignored  # still ignored once running
    # The driver: one Start dequeued, nothing left queued.
    vm = await make_vm(actor_runtime)
    await vm.driver.tell(Start())
    await vm.driver.tell(Start())
    await vm.monitor.wait_for_state(3)
    await vm.driver.tell(Start())
    await wait_all_tasks_blocked()
    assert vm.monitor.states() == [V.CREATING, V.STARTING, V.RUNNING]
    assert received(trace_sink) == ["Start"]
    assert vm.instance.queued == 0


# upstream: request_queue.rs test::migrate_as_source_is_not_idempotent (propolis 7cd7c880)
def test_migrate_as_source_is_not_idempotent() -> None:
    q = running_queue()
    assert q.offer(K.MIGRATE_AS_SOURCE).enqueue
    # Another request to migrate out is denied while the first is not disposed of.
    assert q.offer(K.MIGRATE_AS_SOURCE).denied is DenyReason.ALREADY_MIGRATION_SOURCE
    # A failed migration: the VM keeps running and may try again.
    q.migration_out_completed(False)
    assert q.offer(K.MIGRATE_AS_SOURCE).enqueue
    # A successful one ends the VM here: no more migrations out.
    q.migration_out_completed(True)
    assert q.offer(K.MIGRATE_AS_SOURCE).denied is DenyReason.MIGRATED_OUT


# upstream: request_queue.rs test::stop_requests_are_idempotent (propolis 7cd7c880, 2025-03-11)
async def test_stop_requests_are_idempotent(
    actor_runtime: Runtime, trace_sink: traces.MemorySink
) -> None:
    q = running_queue()
    assert q.offer(K.STOP).enqueue
    second = q.offer(K.STOP)
    assert accepted(second) and second.ignored  # one Stop on the queue
    # The driver: two Stops accepted, one dequeued.
    vm = await make_vm(actor_runtime)
    await vm.driver.tell(Start())
    await vm.monitor.wait_for_state(3)
    await vm.driver.tell(Stop())
    await vm.driver.tell(Stop())
    await vm.driver.wait_exited()
    assert received(trace_sink) == ["Start", "Stop"]
    assert vm.monitor.states()[3:] == [V.STOPPING, V.STOPPED, V.DESTROYED]


# upstream: request_queue.rs test::stop_requests_ignored_after_vm_failure (propolis 7cd7c880)
def test_stop_requests_ignored_after_vm_failure() -> None:
    q = RequestQueue(auto_start=True)
    q.start_completed(False)
    d = q.offer(K.STOP)
    assert accepted(d) and d.ignored  # success, and nothing queued
    assert q.state is QueueState.FAILED


# upstream: request_queue.rs test::reboot_requests_are_idempotent_except_when_stopping (propolis 7cd7c880)  # noqa: E501
def test_reboot_requests_are_idempotent_except_when_stopping() -> None:
    q = running_queue()
    # Five reboots are accepted; only the first is queued.
    outcomes = [q.offer(K.REBOOT) for _ in range(5)]
    assert all(accepted(d) for d in outcomes)
    assert [d.enqueue for d in outcomes] == [True, False, False, False, False]
    # Once the reboot is done a new one can be queued.
    q.reboot_completed()
    assert q.offer(K.REBOOT).enqueue
    q.reboot_completed()
    # Reboot queued, then Stop: later reboots are denied, also after the reboot is done.
    assert q.offer(K.REBOOT).enqueue
    assert q.offer(K.STOP).enqueue
    assert q.offer(K.REBOOT).denied is DenyReason.HALT_PENDING
    q.reboot_completed()
    assert q.offer(K.REBOOT).denied is DenyReason.HALT_PENDING


# upstream: request_queue.rs test::mutation_disallowed_after_stopped (propolis 7cd7c880, 2025-03-11)
def test_mutation_disallowed_after_stopped() -> None:
    q = running_queue()
    assert accepted(q.offer(K.STOP))
    q.stop_completed()
    assert q.offer(K.REPLACE_VCR).denied is DenyReason.HALTED


# upstream: request_queue.rs test::vcr_requests_canceled_when_queue_drops (propolis 7cd7c880)
# Upstream's `impl Drop` answers queued VCR requests 410 GONE; our queue is the driver's
# mailbox, drained when the driver exits. The exit here is the case the Drop comment names:
# a guest event (handled before requests, as upstream's input queue pops guest events
# first) shuts the VM down while the VCR request is queued.
async def test_vcr_requests_canceled_when_queue_drops(actor_runtime: Runtime) -> None:
    vm = await make_vm(actor_runtime)
    await vm.driver.tell(Start())
    await vm.monitor.wait_for_state(3)
    await vm.driver.tell(Reboot())
    await wait_all_tasks_blocked()  # the driver is busy resetting the VM (0.5 s)
    outcome: list[object] = []

    async def replace() -> None:
        try:
            outcome.append(await vm.driver.ask(ReplaceVcr("disk0", a_vcr())))
        except Gone as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(replace)
        await wait_all_tasks_blocked()  # the VCR request is queued
        await vm.driver.tell(GuestHalted())
    assert len(outcome) == 1
    gone = outcome[0]
    assert isinstance(gone, Gone)
    assert gone.status == 410
    assert str(gone) == "VM destroyed before request could be handled"
    assert vm.monitor.states()[3:] == [V.REBOOTING, V.RUNNING, V.STOPPED, V.DESTROYED]


# -- facts from the code and the proptests' comments -------------------------------------


# upstream: request_queue.rs ExternalRequestQueue::should_queue, the Stop arm ("Always queue
# requests to stop a VM unless one is already present"), and the proptests' "Stop requests
# always succeed (they are never denied)" (propolis 7cd7c880, 2025-03-11). Commit 152287d
# on the #880 branch removed a short-lived denial with a pending migration out before the
# merge; no version on master ever had it.
@pytest.mark.parametrize("state", list(QueueState))
@pytest.mark.parametrize(
    ("reboot", "migrate", "stop"), list(itertools.product([False, True], repeat=3))
)
def test_stop_requests_are_never_denied(
    state: QueueState, reboot: bool, migrate: bool, stop: bool
) -> None:
    q = RequestQueue()
    q.state = state
    q.awaiting_reboot, q.awaiting_migration_out, q.awaiting_stop = reboot, migrate, stop
    d = q.offer(K.STOP)
    assert accepted(d)
    assert d.ignored == (q.terminal or stop)  # ignored: terminal, or a stop already awaited
    assert q.awaiting_stop == (stop or not q.terminal)


# upstream: request_queue.rs ExternalRequestQueue::notify_request_completed, its assertions
# (propolis 7cd7c880, 2025-03-11): Start completes only from StartPending; Reboot and
# MigrationOut only while Running and awaited; Stop only while awaited. Upstream panics;
# ours raises RuntimeError (a driver bug either way).
def test_notify_request_completed_checks_the_queue_memory() -> None:
    q = RequestQueue()
    with pytest.raises(RuntimeError, match="start completed"):
        q.start_completed(True)  # no start pending
    q.state, q.awaiting_reboot, q.awaiting_migration_out = QueueState.START_PENDING, True, True
    with pytest.raises(RuntimeError, match="reboot completed"):
        q.reboot_completed()  # awaited, but not running
    with pytest.raises(RuntimeError, match="migration out completed"):
        q.migration_out_completed(False)
    with pytest.raises(RuntimeError, match="stop completed"):
        q.stop_completed()  # no stop awaited
    q.state = QueueState.RUNNING
    q.reboot_completed()
    q.migration_out_completed(False)
    assert (q.awaiting_reboot, q.awaiting_migration_out, q.state) == (
        False,
        False,
        QueueState.RUNNING,
    )


# upstream: request_queue.rs ExternalRequestQueue::pop_front ("the next state change request
# is popped first (even if it arrived later in time than the next component change
# request)") and the saved proptest seed `ops = [Enqueue(ReconfigureCrucible), Enqueue(Start
# { will_succeed: true }), Dequeue]` (propolis 7cd7c880, 2025-03-11).
async def test_pop_front_takes_state_changes_before_older_component_changes(
    actor_runtime: Runtime, trace_sink: traces.MemorySink
) -> None:
    vm = await make_vm(actor_runtime, SimulatedVm(migrate_ok=False))
    await vm.driver.tell(Start())
    await vm.monitor.wait_for_state(3)
    await vm.driver.tell(Reboot())
    await wait_all_tasks_blocked()  # the driver is busy resetting the VM
    outcome: list[object] = []

    async def replace() -> None:
        try:
            await vm.driver.ask(ReplaceVcr("disk0", a_vcr()))
        except BackendNotFound as exc:  # this driver has no disks: handled, answered 404
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(replace)
        await wait_all_tasks_blocked()  # the older VCR request is queued
        await vm.driver.tell(MigrateAsSource("m1"))  # a newer state change
    assert received(trace_sink) == ["Start", "Reboot", "MigrateAsSource", "ReplaceVcr"]
    assert len(outcome) == 1 and isinstance(outcome[0], BackendNotFound)
    # The migration (failed) was over before the VCR request was handled.
    assert vm.monitor.states()[3:] == [V.REBOOTING, V.RUNNING, V.MIGRATING, V.RUNNING]


# -- the proptests -----------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    """Upstream's proptest ``RequestKind``: Start and Migrate carry their outcome."""

    kind: RequestKind
    will_succeed: bool = True


REQUESTS = [
    Req(K.START, True),
    Req(K.START, False),
    Req(K.STOP),
    Req(K.REBOOT),
    Req(K.MIGRATE_AS_SOURCE, True),
    Req(K.MIGRATE_AS_SOURCE, False),
    Req(K.REPLACE_VCR),
]
requests = st.lists(st.sampled_from(REQUESTS), max_size=100)  # upstream: vec(.., 0..100)

START, START_FAILS = Req(K.START, True), Req(K.START, False)
MIGRATE, MIGRATE_FAILS = Req(K.MIGRATE_AS_SOURCE, True), Req(K.MIGRATE_AS_SOURCE, False)
STOP, REBOOT, VCR = Req(K.STOP), Req(K.REBOOT), Req(K.REPLACE_VCR)

# The saved seeds (proptest-regressions/vm/request_queue.txt) for the two `reqs`
# proptests; seeds older than the `will_succeed` fields read as succeeding.
SEEDS = [[MIGRATE, STOP], [START, STOP, MIGRATE], [START, MIGRATE], [MIGRATE]]
SEEDS.append([START, MIGRATE_FAILS, REBOOT])

deterministic = settings(max_examples=300, deadline=None, derandomize=True, database=None)


def with_seeds(test: Callable[[list[Req]], None]) -> Callable[[list[Req]], None]:
    for seed in SEEDS:
        test = example(seed)(test)
    return test


# upstream: request_queue.rs test::request_queuing_before_start_acknowledged (propolis 7cd7c880)
# A proptest. Requests are offered but nothing is ever dequeued.
@deterministic
@with_seeds
@given(requests)
def test_request_queuing_before_start_acknowledged(reqs: list[Req]) -> None:
    q = RequestQueue()
    started = stop_requested = False
    for req in reqs:
        d = q.offer(req.kind)
        if req.kind is K.START:
            assert accepted(d) != stop_requested  # denied only once a stop is pending
            started = started or accepted(d)
        elif req.kind is K.STOP:
            assert accepted(d)  # Stop requests always succeed
            stop_requested = True
        elif req.kind is K.REBOOT:
            assert not accepted(d)  # never before the start is acknowledged
        elif req.kind is K.MIGRATE_AS_SOURCE:
            # Upstream: accepted iff started, no stop pending and no migration out queued
            # (then queued while the start is pending). Ours: denied, StartInProgress exactly
            # where upstream would queue it - so no migration out is ever pending here.
            assert not accepted(d)
            if started and not stop_requested:
                assert d.denied is DenyReason.START_IN_PROGRESS
        else:
            assert accepted(d)  # VCR replacement: always queued before a terminal state


# upstream: request_queue.rs test::request_queuing_with_immediate_dequeueing (propolis 7cd7c880)
# A proptest. Every queued request is dequeued and completed at once.
@deterministic
@with_seeds
@given(requests)
def test_request_queuing_with_immediate_dequeueing(reqs: list[Req]) -> None:
    q = RequestQueue()
    start_requested = halted = False
    for req in reqs:
        d = q.offer(req.kind)
        if req.kind is K.START:
            # Start requests always succeed on a non-halted VM; only the first is queued.
            assert accepted(d) != halted
            assert d.enqueue == (not halted and not start_requested)
            if d.enqueue:
                start_requested = True
                q.start_completed(req.will_succeed)
                halted = not req.will_succeed  # a failed start is terminal
        elif req.kind is K.STOP:
            # Stop requests always succeed; ignored once the VM has halted.
            assert accepted(d)
            assert d.enqueue == (not halted)
            if d.enqueue:
                q.stop_completed()
                halted = True
        elif req.kind is K.REBOOT:
            assert d.enqueue == (start_requested and not halted)
            assert accepted(d) == d.enqueue
            if d.enqueue:
                q.reboot_completed()
        elif req.kind is K.MIGRATE_AS_SOURCE:
            # Same disposition as Reboot; a successful migration out halts the VM here.
            assert d.enqueue == (start_requested and not halted)
            assert accepted(d) == d.enqueue
            if d.enqueue:
                q.migration_out_completed(req.will_succeed)
                halted = req.will_succeed
        else:
            assert d.enqueue == (not halted)  # VCR: queued for any unhalted VM
            assert accepted(d) == d.enqueue
        assert q.terminal == halted


@dataclass
class QueueDequeueTest:
    """Upstream's ``QueueDequeueTest`` helper, over :class:`RequestQueue`.

    ``queue`` is what the driver's mailbox would hold: accepted requests in arrival order,
    dequeued by ``StateDriver.priority`` (the higher level first, FIFO within a level - the
    runtime's mailbox contract). ``expected_*`` and the flags are upstream's model.
    """

    rq: RequestQueue = field(default_factory=RequestQueue)
    queue: list[tuple[Req, DriverMsg]] = field(default_factory=list)
    expected_state: deque[Req] = field(default_factory=deque)
    expected_component: deque[Req] = field(default_factory=deque)
    start_requested: bool = False
    started: bool = False
    stop_requested: bool = False
    reboot_requested: bool = False
    migrate_out_requested: bool = False
    halted: bool = False

    def run(self, ops: list[Req | None]) -> None:
        for op in ops:
            if op is not None:
                self.queue_request(op)
            else:
                self.dequeue_request()
                if self.halted:
                    return

    def queue_request(self, req: Req) -> None:
        """Offer *req*; assert upstream's verdict and whether it is queued."""
        d = self.rq.offer(req.kind)
        expect_queued = self.expect(req, d)
        assert d.enqueue == expect_queued, (req, d, self)
        if d.enqueue:
            self.queue.append((req, MESSAGES[req.kind]))
            if req.kind is K.REPLACE_VCR:
                self.expected_component.append(req)
            else:
                self.expected_state.append(req)

    def expect(self, req: Req, d: Disposition) -> bool:
        """Upstream's expectations for *req* (its verdict asserted here); True if it is to
        be queued. Updates the model's flags."""
        kind = req.kind
        if kind is K.START:
            if self.halted or self.stop_requested:
                assert not accepted(d)
                return False
            assert accepted(d)
            first, self.start_requested = not self.start_requested, True
            return first
        if kind is K.STOP:
            assert accepted(d)  # always, also with a migration out pending
            if self.halted or self.stop_requested:
                return False
            self.stop_requested = True
            return True
        if kind is K.REBOOT:
            if not self.started or self.halted or self.stop_requested or self.migrate_out_requested:
                assert not accepted(d)
                return False
            assert accepted(d)
            first, self.reboot_requested = not self.reboot_requested, True
            return first
        if kind is K.MIGRATE_AS_SOURCE:
            blocked = self.halted or self.stop_requested or self.migrate_out_requested
            if self.start_requested and not self.started and not blocked:
                # Upstream accepts and queues it while the start is pending. Ours:
                # denied StartInProgress (spec/propolis.md section 1).
                assert d.denied is DenyReason.START_IN_PROGRESS
                return False
            if not self.started or blocked:
                assert not accepted(d)
                return False
            assert accepted(d)
            self.migrate_out_requested = True
            return True
        if self.halted:  # ReplaceVcr
            assert not accepted(d)
            return False
        assert accepted(d)
        return True

    def dequeue_request(self) -> None:
        dequeued = self.pop_front()
        expected = (
            self.expected_state.popleft()
            if self.expected_state
            else (self.expected_component.popleft() if self.expected_component else None)
        )
        assert dequeued == expected, (dequeued, expected, self)
        if dequeued is None:
            return
        kind = dequeued.kind
        if kind is K.START:
            self.rq.start_completed(dequeued.will_succeed)
            self.started, self.halted = dequeued.will_succeed, not dequeued.will_succeed
        elif kind is K.STOP:
            self.rq.stop_completed()
            self.halted = True
        elif kind is K.REBOOT:
            self.rq.reboot_completed()
            self.reboot_requested = False
        elif kind is K.MIGRATE_AS_SOURCE:
            self.rq.migration_out_completed(dequeued.will_succeed)
            self.migrate_out_requested = False
            self.halted = dequeued.will_succeed

    def pop_front(self) -> Req | None:
        if not self.queue:
            return None
        levels = [DRIVER.priority(msg) for _, msg in self.queue]
        i = levels.index(max(levels))  # the first of the highest level
        return self.queue.pop(i)[0]


DRIVER = StateDriver(SimulatedVm(), {}, DownstairsNetwork(), StateMonitor(V.CREATING))
MESSAGES: dict[RequestKind, DriverMsg] = {
    K.START: Start(),
    K.STOP: Stop(),
    K.REBOOT: Reboot(),
    K.MIGRATE_AS_SOURCE: MigrateAsSource("m1"),
    K.REPLACE_VCR: ReplaceVcr("disk0", a_vcr()),
}

ops = st.lists(st.one_of(st.sampled_from(REQUESTS), st.none()), max_size=100)  # None: Dequeue


# upstream: request_queue.rs test::request_queue_dequeue (propolis 7cd7c880, 2025-03-11)
# A proptest over QueueDequeueTest: random enqueues and dequeues; each dequeued request must
# be the one the model expects next, and is then reported complete.
@deterministic
@example([VCR, START, None])  # saved seed: the Start jumps ahead of the older VCR request
@example([START, None, MIGRATE_FAILS, STOP, REBOOT, None, None])
@given(ops)
def test_request_queue_dequeue(program: list[Req | None]) -> None:
    QueueDequeueTest().run(program)


# upstream: request_queue.rs enum RequestDeniedReason, its `#[error(..)]` messages
# (propolis 7cd7c880, 2025-03-11): the reasons and the texts clients see.
def test_request_denied_reasons_and_messages() -> None:
    assert {r.code: r.value for r in DenyReason} == {
        "InstanceNotActive": "Operation requires an active instance",
        "StartInProgress": "Instance is currently starting",
        "AlreadyMigrationSource": "Instance is already a migration source",
        "InvalidForMigrationSource": "Operation cannot be performed on a migration source",
        "HaltPending": "Instance is preparing to stop",
        "MigratedOut": "Instance has migrated out and is being torn down",
        "Halted": "Instance has already halted",
        "InstanceFailed": "Instance failed to start or halted due to a failure",
    }
    denied = RequestDenied(K.REBOOT, DenyReason.INSTANCE_NOT_ACTIVE)
    assert str(denied) == "reboot denied: InstanceNotActive: Operation requires an active instance"
