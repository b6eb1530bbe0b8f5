"""The demo's incremental invariant checks (``invariants.IncrementalChecker`` fed by
``invariants.TraceAttribution``) see what the full checks see: on the demo, under the
mutations of ``test_invariant_mutations.py``, the incremental checks - with no periodic
full check at all - report each violated invariant after the same handled message as the
full checks run after every handled message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trioxide import traces
from trioxide.actors import demo, invariants
from trioxide.actors.instance_manager import InstanceManager
from trioxide.actors.instance_runner import InstanceRunner
from trioxide.runtime.testing import run_seeded


class _Both(demo._InvariantSink):
    """The demo's sink without periodic full checks, and every full check alongside:
    the first handled message (its index) after which each invariant was reported."""

    def __init__(self, stats: demo.Stats) -> None:
        super().__init__(stats, full_every=10**9)
        self.handled = 0
        self.first_incremental: dict[str, int] = {}
        self.first_full: dict[str, int] = {}

    def write(self, event: traces.TraceEvent) -> None:
        self.attribution.write(event)
        if event.kind != "handle" or self.view is None:
            return
        self.handled += 1
        for name, _why in self.checker.check(self.view):
            self.first_incremental.setdefault(name, self.handled)
        for inv in invariants.INVARIANTS:
            try:
                ok = inv(self.view)
            except AssertionError:
                ok = False
            if not ok:
                self.first_full.setdefault(inv.__name__, self.handled)


def _run(tmp_path: Path, vmms: int = 12, seed: int = 3) -> _Both:
    opts = demo.DemoOptions(vmms=vmms, seed=seed, trace=tmp_path / "demo.jsonl")
    stats = demo.Stats()
    sink = _Both(stats)
    tracer = traces.Tracer(sink, payloads=True)
    run_seeded(demo.scenario, opts, stats, sink, tracer, seed=seed)
    tracer.close()
    return sink


def _forget_generation(mp: pytest.MonkeyPatch) -> None:
    original = InstanceManager._create

    async def create(self: InstanceManager, *args: Any) -> Any:
        entry = await original(self, *args)
        self.last_gen[entry.propolis_id] -= 1
        return entry

    mp.setattr(InstanceManager, "_create", create)


def _forget_terminating(mp: pytest.MonkeyPatch) -> None:
    original = InstanceManager.find

    def find(self: InstanceManager, propolis_id: str) -> Any:
        entry = original(self, propolis_id)
        return None if entry is not None and entry.terminating else entry

    mp.setattr(InstanceManager, "find", find)


def _zone_recorded_late(mp: pytest.MonkeyPatch) -> None:
    async def create_zone(self: InstanceRunner) -> None:
        await self.svc.zones.create(self.zone_name)
        self.zone = self.zone_name

    mp.setattr(InstanceRunner, "_create_zone", create_zone)


MUTATIONS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "gen_in_table": _forget_generation,
    "only_one_alive": _forget_terminating,
    "zones_have_one_owner": _zone_recorded_late,
}


#: Pinned (seed, VMMs) runs of the demo: different interleavings and sizes.
RUNS = [(3, 12), (1, 12), (7, 30), (11, 60)]


@pytest.mark.parametrize("invariant", sorted(MUTATIONS))
def test_incremental_checks_report_what_full_checks_report_as_early(
    invariant: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    MUTATIONS[invariant](monkeypatch)
    caught = 0
    for seed, vmms in RUNS:
        sink = _run(tmp_path, vmms=vmms, seed=seed)
        assert sink.first_incremental == sink.first_full, (seed, vmms)
        caught += invariant in sink.first_full
    assert caught >= 2  # the mutation shows in several runs, and the checks agree on each


def test_without_mutation_nothing_is_reported_and_exited_runners_are_forgotten(
    tmp_path: Path,
) -> None:
    sink = _run(tmp_path)
    assert sink.first_full == {} and sink.first_incremental == {}
    assert sink.view is not None
    manager = sink.view.manager
    assert manager.runners == {} and manager.runners_by_id == {}  # all exited, all pruned
    # Far fewer evaluations than every invariant after every handled message.
    assert sink.checker.checks < len(invariants.INVARIANTS) * sink.handled


def test_checker_runs_full_checks_periodically(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def full(view: invariants.SledView) -> bool:
        calls.append("full")
        return True

    def per_vmm(view: invariants.SledView, pid: str) -> bool:
        calls.append(pid)
        if pid == "b":
            raise AssertionError("b is wrong")
        return True

    per_vmm_forms: Any = invariants.PER_VMM
    monkeypatch.setitem(per_vmm_forms, full, per_vmm)
    checker = invariants.IncrementalChecker((full,), full_every=3)
    view: Any = object()
    assert checker.check(view) == [] and calls == ["full"]  # the first check is full
    calls.clear()
    for pid in ("a", "b", "c", "a"):
        checker.touch(pid)
    # Once per check per invariant, the first failure's message; no full check.
    assert checker.check(view) == [("full", "b is wrong")] and calls == ["a", "b"]
    calls.clear()
    assert checker.check(view) == [] and calls == []  # nothing touched
    checker.touch("b")
    assert checker.check(view) == [] and calls == ["full"]  # the 3rd since the last full
    assert checker.full_checks == 2 and checker.checks == 4
    checker.touch_all()
    assert checker.check(view) == [] and checker.full_checks == 3


async def test_the_failed_check_looks_at_failed_vmms_only_and_still_catches_one() -> None:
    """``SledView.nexus_failed`` (the demo passes ``SimNexus.failed_ids``): the full
    ``failed_only_when_injected`` visits the VMMs that failed, not every VMM ever seen,
    and still reports one that failed with nothing injected (what the full walk reports);
    an injected failure (a crashed Propolis) is fine."""
    from types import SimpleNamespace

    from trioxide.actors.sim.nexus import SimNexus
    from trioxide.actors.sim.zones import SimZones
    from trioxide.actors.vmm_state import SledVmmState, VmmRuntimeState

    nexus = SimNexus()
    for i in range(50):
        await nexus.put_vmm_state(f"ok-{i}", VmmRuntimeState(SledVmmState.RUNNING, 2, 0.0))
    await nexus.put_vmm_state("crashed", VmmRuntimeState(SledVmmState.FAILED, 3, 0.0))
    assert nexus.failed_ids == {"crashed"}
    host = SimpleNamespace(crashed_ids={"crashed"})
    visited: list[str] = []

    class Zones(SimZones):
        def was_injected(self, name: str) -> bool:
            visited.append(name)
            return super().was_injected(name)

    class History(dict[str, Any]):
        """Nexus's history, refusing to be walked whole when the failed ids are known."""

        walk_allowed = True

        def items(self) -> Any:
            assert self.walk_allowed, "walked every VMM's history"
            return super().items()

    def view(failed: set[str] | None) -> Any:
        history = History(nexus.vmm_history)
        history.walk_allowed = failed is None
        return SimpleNamespace(
            nexus_history=history, nexus_failed=failed, host=host, zones=Zones()
        )

    assert invariants.failed_only_when_injected(view(nexus.failed_ids))
    await nexus.put_vmm_state("healthy", VmmRuntimeState(SledVmmState.FAILED, 2, 0.0))
    for failed in (nexus.failed_ids, None):  # the demo's way and the full walk agree
        visited.clear()
        with pytest.raises(AssertionError, match="healthy Failed with no failure injected"):
            invariants.failed_only_when_injected(view(failed))
    visited.clear()
    host.crashed_ids.add("healthy")
    assert invariants.failed_only_when_injected(view(nexus.failed_ids))
    assert visited == []  # both failures were crashes: no zone looked at, no other VMM


def test_the_attribution_cache_of_actor_paths_stays_bounded_and_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runners come and go for the whole run: the actor-path cache is emptied when full,
    and a path seen again after that is attributed to its VMM as before."""
    monkeypatch.setattr(invariants.TraceAttribution, "ACTORS_KEPT", 8)
    checker = invariants.IncrementalChecker(full_every=10**9)
    attribution = invariants.TraceAttribution(checker, root="sled")
    for i in range(50):
        actor = f"sled/instance-manager/runner-vmm-{i}-g1"
        attribution.write(traces.TraceEvent(i + 1, 0.0, "start", actor))
        assert len(attribution._actor) <= 8
        assert list(checker._touched)[-1] == f"vmm-{i}"
    checker._touched.clear()
    attribution.write(traces.TraceEvent(99, 0.0, "start", "sled/instance-manager/runner-vmm-0-g1"))
    assert list(checker._touched) == ["vmm-0"]
