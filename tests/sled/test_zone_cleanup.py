"""ZoneCleanup (issue #5237) and the simulated zones it works on (spec/sled-agent.md §2, §7).

Everything runs in virtual time (MockClock, autojump): the 30-minute zone bundles take
microseconds and every time below is exact. Default sim durations: halt 1 s, remove 1 s,
bundle 1800 s.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trioxide import traces
from trioxide.actors.sim.zones import (
    SimZones,
    ZoneAlreadyExists,
    ZoneError,
    ZoneMissing,
    ZoneNotInstalled,
    ZoneOpFailed,
    ZoneStateError,
    propolis_zone_name,
)
from trioxide.actors.zone_cleanup import (
    CleanupResult,
    CleanupSnapshot,
    CleanupStatus,
    CleanupZone,
    StepResult,
    WaitCleaned,
    ZoneCleanup,
)
from trioxide.runtime import ActorGone, ActorRef, AskTimeout, Runtime

BUNDLE = 1800.0

A = propolis_zone_name("pa")
B = propolis_zone_name("pb")


async def spawn_cleanup(rt: Runtime, zones: SimZones, *args: Any) -> tuple[ActorRef, ZoneCleanup]:
    ref = await rt.spawn(ZoneCleanup, zones, *args, name="zone-cleanup")
    inst = ref.instance
    assert isinstance(inst, ZoneCleanup)
    return ref, inst


async def hand_over_zones(
    rt: Runtime, zones: SimZones, n: int, max_concurrent: int
) -> tuple[ActorRef, ZoneCleanup, list[str], float]:
    """The zones of VMMs ``p0``..``p<n-1>`` (made running) handed over in that order, at
    once, to a new cleanup with *max_concurrent* slots: its ref and actor, the zone names
    and the time of the hand-over."""
    names = [propolis_zone_name(f"p{i}") for i in range(n)]
    for name in names:
        zones.add(name)
    ref, cleanup = await spawn_cleanup(rt, zones, max_concurrent)
    t0 = trio.current_time()
    for i, name in enumerate(names):
        await ref.tell(CleanupZone(name, f"p{i}"))
    return ref, cleanup, names, t0


async def wait_cleaned(ref: ActorRef, zone: str) -> CleanupResult:
    result = await ref.ask(WaitCleaned(zone))
    assert isinstance(result, CleanupResult)
    return result


async def status(ref: ActorRef) -> CleanupSnapshot:
    snap = await ref.ask(CleanupStatus())
    assert isinstance(snap, CleanupSnapshot)
    return snap


def ops(zones: SimZones, zone: str) -> list[tuple[str, float, float, str]]:
    return [(r.op, r.started, r.finished, r.result) for r in zones.history(zone)]


# -- the simulated zones -----------------------------------------------------------------


async def test_sim_zone_lifecycle_on_the_clock(autojump_clock: trio.abc.Clock) -> None:
    zones = SimZones(create_time=1.0, install_time=5.0, boot_time=2.0)
    t0 = trio.current_time()
    assert zones.state(A) is None and not zones.exists(A)
    await zones.create(A)
    assert zones.state(A) == "configured"
    await zones.install(A)
    assert zones.state(A) == "installed"
    await zones.boot(A)
    assert zones.is_running(A) and trio.current_time() == t0 + 8.0
    path = await zones.collect_bundle(A)
    assert path.endswith(f"/{A}/1.tar.gz") and zones.is_running(A)  # any state
    await zones.halt(A)
    assert zones.state(A) == "halted"
    await zones.halt(A)  # idempotent, takes no time
    await zones.boot(A)  # a halted zone is still installed
    await zones.halt(A)
    await zones.remove(A)
    assert not zones.exists(A) and zones.names() == []
    assert trio.current_time() == t0 + 8.0 + BUNDLE + 1.0 + 2.0 + 1.0 + 1.0
    t = t0 + 8.0
    assert ops(zones, A) == [
        ("create", t0, t0 + 1.0, "ok"),
        ("install", t0 + 1.0, t0 + 6.0, "ok"),
        ("boot", t0 + 6.0, t, "ok"),
        ("bundle", t, t + BUNDLE, "ok"),
        ("halt", t + BUNDLE, t + BUNDLE + 1.0, "ok"),
        ("halt", t + BUNDLE + 1.0, t + BUNDLE + 1.0, "ok"),
        ("boot", t + BUNDLE + 1.0, t + BUNDLE + 3.0, "ok"),
        ("halt", t + BUNDLE + 3.0, t + BUNDLE + 4.0, "ok"),
        ("remove", t + BUNDLE + 4.0, t + BUNDLE + 5.0, "ok"),
    ]
    stats = zones.statistics()
    assert stats.zones == 0 and stats.calls["halt"] == 3 and stats.bundles_collected == 1
    assert stats.max_bundles_running == 1 and stats.in_progress == 0
    await zones.provision(A)  # the name is free again
    assert zones.is_running(A)


async def test_sim_zone_errors(autojump_clock: trio.abc.Clock) -> None:
    zones = SimZones()
    zones.add(A, "running")
    with pytest.raises(ZoneAlreadyExists, match="already exists") as exists:
        await zones.create(A)
    assert exists.value.zone == A and exists.value.op == "create"
    with pytest.raises(ZoneStateError, match="must be halted") as running:
        await zones.remove(A)
    assert running.value.state == "running" and zones.is_running(A)
    with pytest.raises(ZoneStateError):
        await zones.boot(A)

    await zones.create(B)  # configured only: the upstream create/cleanup race
    with pytest.raises(ZoneNotInstalled, match="zone must be installed before boot"):
        await zones.boot(B)
    await zones.install(B)
    with pytest.raises(ZoneStateError, match="already installed"):
        await zones.install(B)

    gone = "oxz_nothing"
    for op in (zones.install, zones.boot, zones.halt, zones.remove, zones.collect_bundle):
        with pytest.raises(ZoneMissing, match="no such zone"):
            await op(gone)
    with pytest.raises(ZoneMissing):
        zones.vanish(gone)

    stats = zones.statistics()
    assert stats.failures["create"] == 1 and stats.failures["boot"] == 3
    assert stats.failures["remove"] == 2 and stats.failures["bundle"] == 1
    assert ops(zones, B)[1][3] == "ZoneNotInstalled"
    assert issubclass(ZoneNotInstalled, ZoneStateError) and issubclass(ZoneMissing, ZoneError)


async def test_sim_zone_failure_injection(autojump_clock: trio.abc.Clock) -> None:
    zones = SimZones()
    zones.add(A, "installed")
    zones.add(B, "installed")
    zones.fail_next("boot", A)
    await zones.boot(B)  # the injection is for A only
    with pytest.raises(ZoneOpFailed, match="injected"):
        await zones.boot(A)
    assert zones.state(A) == "installed"  # a failed call changes nothing
    await zones.boot(A)  # only the next call fails
    assert zones.is_running(A)

    zones.hang_next("halt")
    with trio.move_on_after(1000.0):
        await zones.halt(A)
    assert zones.is_running(A) and ops(zones, A)[-1][3] == "cancelled"

    async def vanish_soon() -> None:
        await trio.sleep(10.0)
        zones.vanish(A)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(vanish_soon)
        t0 = trio.current_time()
        with pytest.raises(ZoneMissing, match="vanished"):
            await zones.collect_bundle(A)
    assert trio.current_time() == t0 + BUNDLE and not zones.exists(A)
    assert zones.statistics().bundles_collected == 0
    with pytest.raises(ValueError, match="unknown zone operation"):
        zones.fail_next("reboot")
    with pytest.raises(ValueError, match="unknown zone state"):
        zones.add("x", "booting")


# -- ZoneCleanup -------------------------------------------------------------------------


async def test_cleanup_runs_bundle_halt_remove_and_wait_returns_when_removed(
    actor_runtime: Runtime, trace_sink: traces.MemorySink
) -> None:
    zones = SimZones()
    zones.add(A)
    ref, cleanup = await spawn_cleanup(actor_runtime, zones)
    t0 = trio.current_time()
    assert await ref.ask(WaitCleaned(A)) is None  # nothing pending: at once
    assert trio.current_time() == t0
    await ref.tell(CleanupZone(A, "pa"))
    result = await wait_cleaned(ref, A)
    assert trio.current_time() == t0 + BUNDLE + 2.0  # exactly when the remove finished
    assert not zones.exists(A)
    assert result.removed and result.failures == ()
    assert (result.zone, result.propolis_id, result.handed_over, result.started) == (
        A,
        "pa",
        t0,
        t0,
    )
    assert result.bundle == StepResult("bundle", "ok", t0, t0 + BUNDLE)
    assert result.halt == StepResult("halt", "ok", t0 + BUNDLE, t0 + BUNDLE + 1.0)
    assert result.remove == StepResult("remove", "ok", t0 + BUNDLE + 1.0, t0 + BUNDLE + 2.0)
    assert result.finished == result.remove.finished
    assert result.bundle_path is not None and A in result.bundle_path
    assert [o[0] for o in ops(zones, A)] == ["add", "bundle", "halt", "remove"]

    assert await ref.ask(WaitCleaned(A)) == result  # done: at once, same result
    assert trio.current_time() == t0 + BUNDLE + 2.0
    snap = await status(ref)
    assert (snap.pending, snap.running, snap.done, snap.n_done, snap.bundling) == (
        (),
        (),
        (A,),
        1,
        None,
    )
    stats = cleanup.statistics()
    assert (stats.received, stats.completed, stats.removed, stats.failed) == (1, 1, 1, 0)
    task = [
        (e.kind, e.detail)
        for e in trace_sink.events
        if e.kind in ("task_start", "task_end") and (e.detail or "").startswith("cleanup:")
    ]
    assert task == [("task_start", f"cleanup:{A}"), ("task_end", f"cleanup:{A}: ok")]


async def test_bundles_are_serialized_while_halts_and_removes_proceed(
    actor_runtime: Runtime,
) -> None:
    zones = SimZones()
    zones.add(A)
    zones.add(B)
    ref, cleanup = await spawn_cleanup(actor_runtime, zones)
    t0 = trio.current_time()
    await ref.tell(CleanupZone(A, "pa"))
    await ref.tell(CleanupZone(B, "pb"))
    done: dict[str, tuple[float, CleanupResult]] = {}

    async def waiter(zone: str) -> None:
        result = await wait_cleaned(ref, zone)
        done[zone] = (trio.current_time(), result)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, A)
        nursery.start_soon(waiter, B)
        # While both asks wait, the actor still answers at once:
        await trio.sleep(900.0)
        snap = await status(ref)
        assert trio.current_time() == t0 + 900.0
        assert (snap.running, snap.pending, snap.bundling) == ((A, B), (), A)
        assert await ref.ask(WaitCleaned("oxz_unknown")) is None
        assert trio.current_time() == t0 + 900.0
        assert cleanup.statistics().waiters == 2
        await trio.sleep(BUNDLE + 0.5 - 900.0)  # A halting during B's bundle
        snap = await status(ref)
        assert snap.bundling == B and zones.is_running(A) and A not in done

    (ta, ra), (tb, rb) = done[A], done[B]
    assert ta == t0 + BUNDLE + 2.0 and tb == t0 + 2 * BUNDLE + 2.0
    assert (ra.bundle.started, ra.bundle.finished) == (t0, t0 + BUNDLE)
    assert (rb.bundle.started, rb.bundle.finished) == (t0 + BUNDLE, t0 + 2 * BUNDLE)
    assert rb.started == t0  # B held its concurrency slot while waiting for the bundle
    assert (ra.halt.started, ra.remove.finished) == (t0 + BUNDLE, t0 + BUNDLE + 2.0)
    assert zones.statistics().max_bundles_running == 1
    assert zones.names() == [] and cleanup.statistics().waiters == 0


async def test_concurrency_bound(actor_runtime: Runtime) -> None:
    zones = SimZones(bundle_time=1.0, halt_time=100.0, remove_time=10.0)
    ref, cleanup, names, t0 = await hand_over_zones(actor_runtime, zones, 5, 2)
    await trio.sleep(50.0)
    snap = await status(ref)
    assert snap.running == tuple(names[:2]) and snap.pending == tuple(names[2:])
    assert (snap.n_running, snap.n_pending) == (2, 3)
    results = [await wait_cleaned(ref, name) for name in names]
    # slot holders: p0, p1 from 0; p2 when p0 ends (111); p3 when p1 ends (112); p4 at 222
    assert [r.started - t0 for r in results] == [0.0, 0.0, 111.0, 112.0, 222.0]
    assert [r.finished - t0 for r in results] == [111.0, 112.0, 222.0, 223.0, 333.0]
    stats = cleanup.statistics()
    assert stats.max_running == 2 and stats.completed == 5 and stats.removed == 5
    assert zones.names() == []


@pytest.mark.parametrize("waited", [True, False], ids=["waited-for", "nobody-waits"])
async def test_a_cleanup_someone_waits_for_goes_first(actor_runtime: Runtime, waited: bool) -> None:
    # Ours: a new VMM's start waits for its old zone's cleanup (the runner's WaitCleaned);
    # in hand-over order that was behind every 30-minute bundle queued before it (the
    # demo: a VMM registered again waited 17,968 s).
    zones = SimZones(bundle_time=100.0, halt_time=5.0, remove_time=1.0)
    ref, _, names, t0 = await hand_over_zones(actor_runtime, zones, 6, 3)
    await trio.sleep(10.0)  # p0 bundles; p1, p2 hold slots for the bundle; p3-p5 pending
    got: dict[str, float] = {}

    async def wait_for(i: int) -> None:
        await wait_cleaned(ref, names[i])
        got[f"p{i}"] = trio.current_time() - t0

    async with trio.open_nursery() as nursery:
        if waited:
            nursery.start_soon(wait_for, 5)  # still pending: ahead in the slot queue
            await trio.sleep(1.0)
            nursery.start_soon(wait_for, 2)  # has a slot: ahead in the bundle queue
    results = [await wait_cleaned(ref, name) for name in names]
    order = sorted(range(6), key=lambda i: results[i].bundle.started)
    if waited:
        # p2 bundles next (100-200); p5 gets p0's slot at 106, ahead of p1 in the bundle
        # queue (200-300); p1 (300-400), then p3 and p4 in hand-over order.
        assert order == [0, 2, 5, 1, 3, 4]
        assert got == {"p2": 206.0, "p5": 306.0}
    else:
        assert order == [0, 1, 2, 3, 4, 5]
    assert [results[i].bundle.started - t0 for i in order] == [0, 100, 200, 300, 400, 500]
    assert all(r.removed for r in results) and zones.names() == []


async def test_duplicate_cleanup_is_ignored(actor_runtime: Runtime) -> None:
    zones = SimZones()
    zones.add(A)
    ref, cleanup = await spawn_cleanup(actor_runtime, zones)
    t0 = trio.current_time()
    await ref.tell(CleanupZone(A, "pa"))
    await trio.sleep(10.0)
    await ref.tell(CleanupZone(A, "pa"))  # while running
    snap = await status(ref)
    assert snap.running == (A,) and snap.n_running == 1
    result = await wait_cleaned(ref, A)
    assert result.finished == t0 + BUNDLE + 2.0
    stats = cleanup.statistics()
    assert (stats.received, stats.duplicates, stats.completed) == (2, 1, 1)
    assert zones.statistics().calls["bundle"] == 1

    # A finished cleanup does not swallow the next one of the same (recreated) name.
    zones.add(A)
    await ref.tell(CleanupZone(A, "pa"))
    again = await wait_cleaned(ref, A)
    assert again.handed_over == result.finished and again.removed
    assert zones.statistics().calls["bundle"] == 2 and cleanup.statistics().completed == 2


async def test_new_zone_of_the_same_name_waits_for_cleanup(actor_runtime: Runtime) -> None:
    """What the runner does (spec §2): never create the name before its cleanup finished."""
    zones = SimZones(create_time=1.0, install_time=5.0, boot_time=2.0)
    await zones.provision(A)
    ref, _ = await spawn_cleanup(actor_runtime, zones)
    t0 = trio.current_time()
    await ref.tell(CleanupZone(A, "pa"))
    with pytest.raises(ZoneAlreadyExists):  # the race, without waiting
        await zones.create(A)
    result = await wait_cleaned(ref, A)
    assert result.removed and trio.current_time() == t0 + BUNDLE + 2.0
    await zones.provision(A)
    assert zones.is_running(A)


async def test_failed_step_is_recorded_and_later_steps_still_run(actor_runtime: Runtime) -> None:
    zones = SimZones()
    zones.add(A)
    zones.add(B)
    zones.fail_next("bundle", A)
    ref, cleanup = await spawn_cleanup(actor_runtime, zones)
    t0 = trio.current_time()
    await ref.tell(CleanupZone(A, "pa"))
    await ref.tell(CleanupZone(B, "pb"))
    ra = await wait_cleaned(ref, A)
    assert ra.bundle.outcome == "failed" and "ZoneOpFailed" in (ra.bundle.error or "")
    assert ra.bundle.finished == t0  # failed at once
    assert ra.halt.outcome == "ok" and ra.remove.outcome == "ok" and ra.removed
    assert ra.failures == (ra.bundle,) and ra.bundle_path is None
    assert ra.finished == t0 + 2.0
    rb = await wait_cleaned(ref, B)
    assert rb.bundle.started == t0 and rb.failures == ()  # A's failed bundle freed the lock
    assert ref.statistics().failures == 0 and ref.statistics().state == "running"
    stats = cleanup.statistics()
    assert (stats.completed, stats.failed, stats.removed) == (2, 1, 2)
    snap = await status(ref)
    assert snap.n_failed == 1 and snap.done == (A, B)


async def test_hung_halt_is_abandoned_after_300_s(actor_runtime: Runtime) -> None:
    zones = SimZones()
    zones.add(A)
    zones.add(B)
    zones.hang_next("halt", A)
    ref, cleanup = await spawn_cleanup(actor_runtime, zones)
    t0 = trio.current_time()
    await ref.tell(CleanupZone(A, "pa"))
    await ref.tell(CleanupZone(B, "pb"))
    ra = await wait_cleaned(ref, A)
    assert trio.current_time() == t0 + BUNDLE + 300.0
    assert ra.halt == StepResult(
        "halt", "timeout", t0 + BUNDLE, t0 + BUNDLE + 300.0, "abandoned after 300.0 s"
    )
    # The remove is still attempted; the zone is still running, so it fails (recorded).
    assert ra.remove.outcome == "failed" and "ZoneStateError" in (ra.remove.error or "")
    assert not ra.removed and zones.is_running(A)
    assert ops(zones, A)[2] == ("halt", t0 + BUNDLE, t0 + BUNDLE + 300.0, "cancelled")
    rb = await wait_cleaned(ref, B)  # B was not held up by A's halt
    assert rb.finished == t0 + 2 * BUNDLE + 2.0 and rb.removed
    stats = cleanup.statistics()
    assert (stats.halt_timeouts, stats.failed, stats.removed) == (1, 1, 1)
    assert ref.statistics().state == "running"


async def test_custom_halt_and_bundle_timeouts(actor_runtime: Runtime) -> None:
    zones = SimZones()
    zones.add(A)
    zones.hang_next("bundle")
    zones.hang_next("halt")
    ref, cleanup = await spawn_cleanup(actor_runtime, zones, 4, 5.0, 60.0)
    t0 = trio.current_time()
    await ref.tell(CleanupZone(A, "pa"))
    result = await wait_cleaned(ref, A)
    assert (result.bundle.outcome, result.bundle.finished) == ("timeout", t0 + 60.0)
    assert (result.halt.outcome, result.halt.finished) == ("timeout", t0 + 65.0)
    stats = cleanup.statistics()
    assert (stats.bundle_timeouts, stats.halt_timeouts) == (1, 1)


async def test_vanished_zone_is_gone_not_failed(actor_runtime: Runtime) -> None:
    zones = SimZones()
    zones.add(A)
    ref, cleanup = await spawn_cleanup(actor_runtime, zones)
    t0 = trio.current_time()
    await ref.tell(CleanupZone(A, "pa"))
    await trio.sleep(10.0)
    zones.vanish(A)  # ZoneGone: it disappears during the bundle
    result = await wait_cleaned(ref, A)
    assert [s.outcome for s in (result.bundle, result.halt, result.remove)] == ["gone"] * 3
    assert result.removed and result.failures == () and result.finished == t0 + BUNDLE
    assert cleanup.statistics().failed == 0


async def test_wait_cleaned_ask_timeout_does_not_disturb_cleanup(actor_runtime: Runtime) -> None:
    zones = SimZones()
    zones.add(A)
    ref, cleanup = await spawn_cleanup(actor_runtime, zones)
    t0 = trio.current_time()
    await ref.tell(CleanupZone(A, "pa"))
    with pytest.raises(AskTimeout):
        await ref.ask(WaitCleaned(A), timeout=60.0)
    assert trio.current_time() == t0 + 60.0
    result = await wait_cleaned(ref, A)
    assert result.finished == t0 + BUNDLE + 2.0 and trio.current_time() == result.finished
    assert cleanup.statistics().waiters == 0


async def test_stop_cancels_inflight_cleanups(actor_runtime: Runtime) -> None:
    zones = SimZones()
    zones.add(A)
    zones.add(B)
    ref, cleanup = await spawn_cleanup(actor_runtime, zones)
    t0 = trio.current_time()
    await ref.tell(CleanupZone(A, "pa"))
    await ref.tell(CleanupZone(B, "pb"))
    outcome: list[BaseException] = []

    async def waiter() -> None:
        try:
            await ref.ask(WaitCleaned(A))
        except ActorGone as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(100.0)
        await ref.stop(reason="shutdown")
        assert trio.current_time() == t0 + 100.0  # no wait for the 30-minute bundle
    assert len(outcome) == 1
    stats = cleanup.statistics()
    assert (stats.cancelled, stats.completed, stats.pending, stats.running) == (2, 0, 0, 0)
    assert stats.waiters == 0 and stats.bundling is None
    assert zones.is_running(A) and zones.is_running(B)  # left as they were
    assert ops(zones, A)[-1] == ("bundle", t0, t0 + 100.0, "cancelled")
    assert ops(zones, B) == [("add", t0, t0, "ok")]  # never got the bundle lock
    assert zones.statistics().in_progress == 0


def test_constructor_validates() -> None:
    zones = SimZones()
    with pytest.raises(ValueError, match="max_concurrent"):
        ZoneCleanup(zones, 0)
    with pytest.raises(ValueError, match="halt_timeout"):
        ZoneCleanup(zones, 4, 0.0)
    with pytest.raises(ValueError, match="bundle_timeout"):
        ZoneCleanup(zones, 4, 300.0, -1.0)
    cleanup = ZoneCleanup(zones)
    assert (cleanup.max_concurrent, cleanup.halt_timeout, cleanup.bundle_timeout) == (
        4,
        300.0,
        None,
    )
