"""The NexusNotifier actor and the simulated Nexus (spec/sled-agent.md §4, §5, scenario 10).

Every test runs in virtual time (``MockClock(autojump_threshold=0)``): request times are
exact. With zero latency a notification cycle on an empty Nexus is: GET at t=0 (404),
PUT gen 1 at t=2, pending cleared at t=4.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
import trio

from trioxide.actors.nexus_notifier import (
    NexusNotifier,
    NotifierStatistics,
    NotifierStatus,
    NotifyNexusAboutSelf,
)
from trioxide.actors.sim.nexus import (
    NexusConflict,
    NexusNotFound,
    NexusRequest,
    NexusStatistics,
    NexusUnavailable,
    SimNexus,
    SledInfo,
)
from trioxide.actors.vmm_state import (
    SledVmmState,
    VmmFailureReason,
    VmmKind,
    VmmRuntimeState,
    VmmState,
)
from trioxide.runtime import ActorRef, Runtime, Watch

GiB = 1 << 30
SLED = "sled-1"
BASE = SledInfo(SLED, "[fd00:1122:3344:101::1]:12345", "gimlet", 64, 512 * GiB, 0, 0)


def get(t: float) -> NexusRequest:
    return NexusRequest(t, "get_sled", SLED, None)


def put(t: float, gen: int) -> NexusRequest:
    return NexusRequest(t, "put_sled", SLED, gen)


def info(gen: int, reservoir: int = 0) -> SledInfo:
    return msgspec.structs.replace(BASE, generation=gen, reservoir_size_bytes=reservoir)


class Reservoir:
    """A reservoir size the notifier reads, and a Watch whose changes trigger it."""

    def __init__(self, size: int = 0) -> None:
        self.size = size
        self.watch: Watch[int] = Watch(size)

    def current(self) -> int:
        return self.size

    def set(self, size: int) -> None:
        self.size = size
        self.watch.set(size)


async def spawn_notifier(
    rt: Runtime,
    nexus: SimNexus,
    *,
    reservoir: Reservoir | None = None,
    reservoir_bytes: Callable[[], int] | None = None,
) -> tuple[ActorRef, NexusNotifier]:
    if reservoir is not None:
        reservoir_bytes = reservoir.current
    ref = await rt.spawn(
        NexusNotifier,
        nexus,
        BASE,
        reservoir_bytes,
        reservoir.watch if reservoir is not None else None,
        name="nexus-notifier",
        mailbox_size=256,
    )
    inst = ref.instance
    assert isinstance(inst, NexusNotifier)
    return ref, inst


async def wait_cancelled(notifier: NexusNotifier, n: int) -> NotifierStatistics:
    return await notifier.status.wait_for(lambda s: s.cancelled == n)


def counters(s: NotifierStatistics) -> tuple[int, int, int, int, int, int]:
    """(get_started, get_completed, put_started, put_completed, cancelled, errors)"""
    return (s.get_started, s.get_completed, s.put_started, s.put_completed, s.cancelled, s.errors)


async def settle_on_empty_nexus(
    rt: Runtime, nexus: SimNexus, *, reservoir: Reservoir | None = None
) -> tuple[ActorRef, NexusNotifier]:
    ref, notifier = await spawn_notifier(rt, nexus, reservoir=reservoir)
    await wait_cancelled(notifier, 1)
    assert trio.current_time() == 4.0
    return ref, notifier


# -- scenario 10 -------------------------------------------------------------------------


async def test_empty_nexus_get_404_then_put_gen1_then_cancelled(actor_runtime: Runtime) -> None:
    nexus = SimNexus()
    ref, notifier = await spawn_notifier(actor_runtime, nexus)
    stats = await wait_cancelled(notifier, 1)
    assert trio.current_time() == 4.0
    assert nexus.request_log == [get(0.0), put(2.0, 1)]
    assert counters(stats) == (1, 1, 1, 1, 1, 0)
    assert (stats.known, stats.pending, stats.outstanding, stats.stopped) == (
        "found",
        False,
        None,
        False,
    )
    assert stats.known_info == info(1) == nexus.sled(SLED)
    await trio.sleep(100.0)  # the tick is off while not pending: nothing more
    assert nexus.request_log == [get(0.0), put(2.0, 1)]
    assert await ref.ask(NotifierStatus(), timeout=1.0) == stats
    assert nexus.statistics() == NexusStatistics(1, 1, 0, 0, 1, 0, 0, 0)


async def test_unchanged_notify_sends_nothing(actor_runtime: Runtime) -> None:
    nexus = SimNexus()
    ref, notifier = await settle_on_empty_nexus(actor_runtime, nexus)
    await trio.sleep(6.0)
    await ref.tell(NotifyNexusAboutSelf())
    stats = await wait_cancelled(notifier, 2)
    assert trio.current_time() == 10.0  # the comparison runs at once: no tick needed
    assert counters(stats) == (1, 1, 1, 1, 2, 0)
    assert not stats.pending
    await trio.sleep(100.0)
    assert nexus.request_log == [get(0.0), put(2.0, 1)]


async def test_put_conflict_regets_then_puts_next_generation(actor_runtime: Runtime) -> None:
    nexus = SimNexus()
    size = [0]
    ref, notifier = await spawn_notifier(actor_runtime, nexus, reservoir_bytes=lambda: size[0])
    await wait_cancelled(notifier, 1)
    await trio.sleep(6.0)  # t = 10
    size[0] = 4 * GiB
    nexus.inject_put_conflict()
    await ref.tell(NotifyNexusAboutSelf())
    stats = await wait_cancelled(notifier, 2)
    assert trio.current_time() == 16.0
    assert nexus.request_log == [
        get(0.0),
        put(2.0, 1),
        put(10.0, 2),  # 409 (injected) -> known None
        get(12.0),  # re-GET: generation 1 stored
        put(14.0, 2),  # gen + 1
    ]
    assert counters(stats) == (2, 2, 3, 3, 2, 1)
    assert nexus.sled(SLED) == info(2, 4 * GiB)
    assert nexus.statistics().conflicts == 1


async def test_get_says_decommissioned_no_further_requests_ever(actor_runtime: Runtime) -> None:
    nexus = SimNexus()
    nexus.insert_sled(msgspec.structs.replace(info(7), decommissioned=True))
    ref, notifier = await spawn_notifier(actor_runtime, nexus)
    stats = await notifier.status.wait_for(lambda s: s.stopped)
    assert trio.current_time() == 2.0  # the first tick after the GET
    assert (stats.known, stats.pending) == ("decommissioned", False)
    await trio.sleep(8.0)
    await ref.tell(NotifyNexusAboutSelf())
    stats = await ref.ask(NotifierStatus(), timeout=1.0)
    assert stats.ignored == 1
    await trio.sleep(1000.0)
    assert nexus.request_log == [get(0.0)]
    assert counters(stats) == (1, 1, 0, 0, 0, 0)


async def test_decommissioned_later_put_conflicts_then_get_stops(actor_runtime: Runtime) -> None:
    nexus = SimNexus()
    res = Reservoir()
    ref, notifier = await settle_on_empty_nexus(actor_runtime, nexus, reservoir=res)
    nexus.decommission(SLED)
    await trio.sleep(6.0)
    res.set(2 * GiB)  # t = 10: a change the sled wants Nexus to know
    stats = await notifier.status.wait_for(lambda s: s.stopped)
    assert trio.current_time() == 14.0
    assert nexus.request_log == [get(0.0), put(2.0, 1), put(10.0, 2), get(12.0)]
    assert counters(stats) == (2, 2, 2, 2, 1, 1)
    res.set(8 * GiB)
    await ref.tell(NotifyNexusAboutSelf())
    await trio.sleep(1000.0)
    assert len(nexus.request_log) == 4
    assert nexus.sled(SLED) == msgspec.structs.replace(info(1), decommissioned=True)


async def test_nexus_outage_of_60s_then_success(actor_runtime: Runtime) -> None:
    nexus = SimNexus()
    nexus.outage(until=60.0)
    _ref, notifier = await spawn_notifier(actor_runtime, nexus)
    stats = await notifier.status.wait_for(lambda s: s.errors == 30 and s.outstanding is None)
    assert trio.current_time() == 58.0
    assert stats.known == "unknown" and stats.pending
    stats = await wait_cancelled(notifier, 1)
    assert trio.current_time() == 64.0
    gets = [get(2.0 * k) for k in range(31)]  # t = 0, 2, ..., 58 fail; 60 answers 404
    assert nexus.request_log == [*gets, put(62.0, 1)]
    assert counters(stats) == (31, 31, 1, 1, 1, 30)
    assert nexus.statistics().unavailable == 30


async def test_outage_during_put_regets(actor_runtime: Runtime) -> None:
    nexus = SimNexus()
    res = Reservoir()
    _ref, notifier = await settle_on_empty_nexus(actor_runtime, nexus, reservoir=res)
    await trio.sleep(6.0)
    nexus.set_available(False)
    res.set(GiB)  # t = 10: PUT gen 2 -> 503
    await notifier.status.wait_for(lambda s: s.errors == 3)  # PUT at 10, GETs at 12, 14
    assert trio.current_time() == 14.0
    nexus.set_available(True)
    stats = await wait_cancelled(notifier, 2)
    assert trio.current_time() == 20.0
    assert nexus.request_log == [
        get(0.0),
        put(2.0, 1),
        put(10.0, 2),
        get(12.0),
        get(14.0),
        get(16.0),
        put(18.0, 2),
    ]
    assert counters(stats) == (4, 4, 3, 3, 2, 3)
    assert nexus.sled(SLED) == info(2, GiB)


async def test_reservoir_watch_change_puts_new_size_and_next_generation(
    actor_runtime: Runtime,
) -> None:
    nexus = SimNexus()
    res = Reservoir()
    _ref, notifier = await settle_on_empty_nexus(actor_runtime, nexus, reservoir=res)
    assert nexus.request_log == [get(0.0), put(2.0, 1)]  # the Watch's first value: no trigger
    await trio.sleep(6.0)
    res.set(16 * GiB)
    stats = await wait_cancelled(notifier, 2)
    assert trio.current_time() == 12.0
    assert nexus.request_log == [get(0.0), put(2.0, 1), put(10.0, 2)]
    assert nexus.sled(SLED) == info(2, 16 * GiB) == stats.known_info
    res.set(16 * GiB)  # a change notification with the same size: compared, nothing sent
    stats = await wait_cancelled(notifier, 3)
    assert trio.current_time() == 12.0
    await trio.sleep(100.0)
    assert len(nexus.request_log) == 3


async def test_existing_record_put_with_next_generation(actor_runtime: Runtime) -> None:
    nexus = SimNexus()
    nexus.insert_sled(info(5))  # stored by an earlier boot, before the reservoir was set
    res = Reservoir(8 * GiB)
    _ref, notifier = await spawn_notifier(actor_runtime, nexus, reservoir=res)
    stats = await wait_cancelled(notifier, 1)
    assert trio.current_time() == 4.0
    assert nexus.request_log == [get(0.0), put(2.0, 6)]
    assert counters(stats) == (1, 1, 1, 1, 1, 0)
    assert nexus.sled(SLED) == info(6, 8 * GiB)


async def test_existing_identical_record_is_not_rewritten(actor_runtime: Runtime) -> None:
    nexus = SimNexus()
    nexus.insert_sled(info(3))
    _ref, notifier = await spawn_notifier(actor_runtime, nexus)
    stats = await wait_cancelled(notifier, 1)
    assert trio.current_time() == 2.0
    assert nexus.request_log == [get(0.0)]
    assert counters(stats) == (1, 1, 0, 0, 1, 0)


async def test_slow_nexus_one_outstanding_request_at_a_time(actor_runtime: Runtime) -> None:
    nexus = SimNexus(latency=3.0)  # longer than the tick
    _ref, notifier = await spawn_notifier(actor_runtime, nexus)
    seen: list[str | None] = []

    async def watch_outstanding() -> None:
        async for s in notifier.status.changes():
            seen.append(s.outstanding)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_outstanding)
        stats = await wait_cancelled(notifier, 1)
        nursery.cancel_scope.cancel()
    # GET sent at 0, answered at 3; the tick at 2 is skipped; PUT at 4, answered at 7;
    # the tick at 6 is skipped; the comparison at 8 clears pending.
    assert trio.current_time() == 8.0
    assert nexus.request_log == [get(3.0), put(7.0, 1)]
    assert counters(stats) == (1, 1, 1, 1, 1, 0)
    assert [o for o in seen if o is not None] == ["get", "put"]


class BuggyNexus(SimNexus):
    """A client whose first GET raises something that is not a Nexus answer."""

    def __init__(self) -> None:
        super().__init__()
        self.bugs = 1

    async def get_sled(self, sled_id: str) -> SledInfo:
        if self.bugs:
            self.bugs -= 1
            await trio.sleep(1.0)
            raise RuntimeError("client bug")
        return await super().get_sled(sled_id)


async def test_non_nexus_error_fails_the_actor_and_a_restart_starts_over(
    actor_runtime: Runtime,
) -> None:
    nexus = BuggyNexus()
    ref = await actor_runtime.spawn(
        NexusNotifier, nexus, BASE, name="nexus-notifier", restart="permanent"
    )
    first = ref.instance
    await trio.sleep(1.5)
    stats = ref.statistics()
    assert (stats.failures, stats.restarts) == (1, 1)
    notifier = ref.instance
    assert isinstance(notifier, NexusNotifier) and notifier is not first
    status = await wait_cancelled(notifier, 1)
    assert trio.current_time() == 5.0  # the new incarnation: GET at 1, PUT at 3, done at 5
    assert nexus.request_log == [get(1.0), put(3.0, 1)]
    assert counters(status) == (1, 1, 1, 1, 1, 0)


async def test_stop_with_a_request_in_flight_is_clean(actor_runtime: Runtime) -> None:
    nexus = SimNexus(latency=5.0)
    res = Reservoir()
    ref, _notifier = await spawn_notifier(actor_runtime, nexus, reservoir=res)
    await trio.sleep(1.0)
    res.set(GiB)  # a notification queued just before the stop
    await ref.stop(reason="shutdown")
    assert trio.current_time() == 1.0
    await trio.sleep(100.0)
    assert nexus.request_log == []  # the GET was cancelled before Nexus processed it


# -- the simulated Nexus -----------------------------------------------------------------


def rt(state: SledVmmState, gen: int) -> VmmRuntimeState:
    return VmmRuntimeState(state, gen, trio.current_time())


async def test_sim_put_vmm_state_generation_rule_and_history(autojump_clock: object) -> None:
    nexus = SimNexus()
    assert nexus.vmm_state("p1") is None
    assert await nexus.put_vmm_state("p1", rt(SledVmmState.STARTING, 2))  # a new VMM: any gen
    await trio.sleep(1.0)
    assert not await nexus.put_vmm_state("p1", rt(SledVmmState.RUNNING, 2))  # same gen: stale
    assert not await nexus.put_vmm_state("p1", rt(SledVmmState.STOPPING, 1))  # older: stale
    assert nexus.vmm_state("p1") == VmmState(VmmKind.STARTING)
    assert await nexus.put_vmm_state("p1", rt(SledVmmState.RUNNING, 3))
    await trio.sleep(1.0)
    assert await nexus.put_vmm_state("p1", rt(SledVmmState.FAILED, 5))
    failed = VmmState.failed(VmmFailureReason.FROM_SLED_AGENT)
    assert nexus.vmm_state("p1") == failed
    assert nexus.vmm_history["p1"] == [
        (0.0, VmmState(VmmKind.STARTING), 2),
        (1.0, VmmState(VmmKind.RUNNING), 3),
        (2.0, failed, 5),
    ]
    assert nexus.requests("put_vmm") == [
        NexusRequest(0.0, "put_vmm", "p1", 2),
        NexusRequest(1.0, "put_vmm", "p1", 2),
        NexusRequest(1.0, "put_vmm", "p1", 1),
        NexusRequest(1.0, "put_vmm", "p1", 3),
        NexusRequest(2.0, "put_vmm", "p1", 5),
    ]
    s = nexus.statistics()
    assert (s.put_vmm, s.stale_vmm) == (5, 2)


async def test_sim_note_sled_404_fails_only_non_terminal_vmms(autojump_clock: object) -> None:
    nexus = SimNexus()
    assert not nexus.note_sled_404("unknown")
    await nexus.put_vmm_state("run", rt(SledVmmState.RUNNING, 4))
    await nexus.put_vmm_state("gone", rt(SledVmmState.DESTROYED, 9))
    await nexus.put_vmm_state("bad", rt(SledVmmState.FAILED, 2))
    await trio.sleep(5.0)
    assert nexus.note_sled_404("run")
    no_such = VmmState.failed(VmmFailureReason.NO_SUCH_INSTANCE)
    assert nexus.vmm_state("run") == no_such
    assert nexus.vmm_history["run"][-1] == (5.0, no_such, 5)  # Nexus bumps the generation
    assert not nexus.note_sled_404("run")  # already terminal
    assert not nexus.note_sled_404("gone")
    assert not nexus.note_sled_404("bad")
    assert nexus.vmm_state("gone") == VmmState(VmmKind.DESTROYED)
    assert nexus.vmm_state("bad") == VmmState.failed(VmmFailureReason.FROM_SLED_AGENT)
    assert len(nexus.vmm_history["gone"]) == len(nexus.vmm_history["bad"]) == 1
    # The sled's Destroyed with the generation Nexus already used is stale.
    assert not await nexus.put_vmm_state("run", rt(SledVmmState.DESTROYED, 5))
    assert nexus.vmm_state("run") == no_such
    assert nexus.statistics().marked_failed == 1


@pytest.mark.parametrize(
    "state", [s for s in SledVmmState if not s.is_terminal()], ids=lambda s: s.value
)
async def test_sim_note_sled_404_for_every_non_terminal_state(
    autojump_clock: object, state: SledVmmState
) -> None:
    nexus = SimNexus()
    await nexus.put_vmm_state("p", rt(state, 1))
    assert nexus.note_sled_404("p")
    assert nexus.vmm_state("p") == VmmState.failed(VmmFailureReason.NO_SUCH_INSTANCE)


async def test_sim_sled_put_rules(autojump_clock: object) -> None:
    nexus = SimNexus()
    with pytest.raises(NexusNotFound) as not_found:
        await nexus.get_sled(SLED)
    assert not_found.value.status == 404
    await nexus.put_sled(info(4))  # the first PUT creates, whatever its generation
    assert await nexus.get_sled(SLED) == info(4)
    for gen in (4, 3):
        with pytest.raises(NexusConflict) as conflict:
            await nexus.put_sled(info(gen, GiB))
        assert conflict.value.status == 409
    await nexus.put_sled(info(5, GiB))
    assert nexus.sled(SLED) == info(5, GiB)
    nexus.decommission(SLED)
    with pytest.raises(NexusConflict, match="decommissioned"):
        await nexus.put_sled(info(6))
    assert (await nexus.get_sled(SLED)).decommissioned
    assert (await nexus.get_sled(SLED)).generation == 5
    with pytest.raises(NexusNotFound):
        nexus.decommission("sled-2")
    s = nexus.statistics()
    assert (s.get_sled, s.put_sled, s.not_found, s.conflicts) == (4, 5, 1, 3)


async def test_sim_injected_conflicts_and_latency(autojump_clock: object) -> None:
    nexus = SimNexus(latency=0.25)
    nexus.inject_put_conflict(2)
    for _ in range(2):
        with pytest.raises(NexusConflict, match="injected"):
            await nexus.put_sled(info(1))
    assert nexus.sled(SLED) is None
    await nexus.put_sled(info(1))
    assert trio.current_time() == 0.75
    assert nexus.request_log == [put(0.25, 1), put(0.5, 1), put(0.75, 1)]


async def test_sim_outage_and_availability(autojump_clock: object) -> None:
    nexus = SimNexus()
    nexus.insert_sled(info(1))
    nexus.outage(until=10.0)
    assert not nexus.available
    with pytest.raises(NexusUnavailable) as unavailable:
        await nexus.get_sled(SLED)
    assert unavailable.value.status == 503
    with pytest.raises(NexusUnavailable):
        await nexus.put_vmm_state("p", rt(SledVmmState.RUNNING, 1))
    assert nexus.vmm_state("p") is None  # not applied
    await trio.sleep(9.5)
    with pytest.raises(NexusUnavailable):
        await nexus.put_sled(info(2))
    await trio.sleep(0.5)  # t = 10: the outage is over
    assert nexus.available
    assert await nexus.get_sled(SLED) == info(1)
    nexus.set_available(False)
    with pytest.raises(NexusUnavailable):
        await nexus.get_sled(SLED)
    await trio.sleep(1000.0)
    assert not nexus.available
    nexus.outage(until=2000.0)
    nexus.set_available(True)  # also ends the timed outage
    assert await nexus.get_sled(SLED) == info(1)
    assert nexus.statistics().unavailable == 4
    assert [r.op for r in nexus.request_log] == [
        "get_sled",
        "put_vmm",
        "put_sled",
        "get_sled",
        "get_sled",
        "get_sled",
    ]
