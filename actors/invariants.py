"""Invariants of one sled, checked after every handled message by the explorer
(``actors.sagas``) and the demo.

Two kinds. The #3325 bookkeeping of the instance manager (generations, one live runner per
VMM id, tokens) - and, above all, **symptoms an operator would notice**:

* a zone operation failed because another party's zone of that name existed or was still
  in use (``ZoneAlreadyExists`` on create, a boot/install that found someone else's zone
  state, a remove refused because the zone still runs): a VMM that cannot be started;
* a zone that exists but is owned by nobody (leaked: nothing will ever remove it, and the
  VMM id can never be started again) or by two parties at once (one will remove it under
  the other's feet);
* Nexus recorded ``Failed`` for a VMM although no failure was injected for it.

Each invariant returns True or raises ``AssertionError`` saying what is wrong; each can
fail: ``tests/sled/test_invariant_mutations.py`` breaks the implementation on purpose for
each one and shows the explorer catching it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .instance_manager import InstanceManager
from .instance_runner import InstanceRunner
from .sim.propolis_host import PropolisHost
from .sim.zones import SimZones, propolis_zone_name
from .vmm_state import VmmKind, VmmState
from .zone_cleanup import ZoneCleanup

__all__ = [
    "AT_END",
    "INVARIANTS",
    "SYMPTOMS",
    "SledInvariant",
    "SledView",
    "failed_only_when_injected",
    "gen_in_table",
    "no_leaked_table_entries",
    "only_one_alive",
    "strong_ref_implies_table",
    "tokens_belong_to_running_sagas",
    "zone_ops_never_collide",
    "zones_have_one_owner",
]


@dataclass
class SledView:
    """What the invariants look at: the manager's table, zone cleanup, the simulated world.

    ``sagas``: the start sagas still running (None when the run has no sagas, e.g. the
    demo); a token held for any other saga is a leak."""

    manager: InstanceManager
    cleanup: ZoneCleanup
    zones: SimZones
    nexus_history: dict[str, list[tuple[float, VmmState, int]]]
    host: PropolisHost | None = None
    sagas: set[str] | None = field(default=None)


SledInvariant = Callable[[SledView], bool]


def _runners(m: InstanceManager) -> list[tuple[str, int, InstanceRunner]]:
    """Every runner instance that still exists, with its VMM id and generation."""
    out = []
    for pid, gen, ref in m.runners:
        inst = ref.instance
        if inst is not None:
            assert isinstance(inst, InstanceRunner)
            out.append((pid, gen, inst))
    return out


# -- the manager's bookkeeping (#3325) ---------------------------------------------------


def gen_in_table(v: SledView) -> bool:
    """The table's gen equals its runner's gen; gens never decrease (last_gen is max)."""
    m = v.manager
    for entry in m.table.values():
        if entry.gen > m.last_gen.get(entry.propolis_id, 0):
            raise AssertionError(f"{entry.propolis_id} gen {entry.gen} is above last_gen")
        inst = entry.runner.instance
        if isinstance(inst, InstanceRunner) and inst.gen != entry.gen:
            raise AssertionError(
                f"{entry.propolis_id}: table gen {entry.gen}, its runner's gen {inst.gen}"
            )
    return True


def only_one_alive(v: SledView) -> bool:
    """At most one live runner (one that may still act on its VMM or zone) per VMM id."""
    count: dict[str, int] = {}
    for pid, _gen, inst in _runners(v.manager):
        if not inst.done_with_zone:
            count[pid] = count.get(pid, 0) + 1
    bad = {pid: n for pid, n in count.items() if n > 1}
    assert not bad, f"more than one live runner for {bad}"
    return True


def strong_ref_implies_table(v: SledView) -> bool:
    """A live runner implies the table entry for its id and gen."""
    entries = {(e.propolis_id, e.gen) for e in v.manager.table.values()}
    for pid, gen, inst in _runners(v.manager):
        if not inst.done_with_zone and (pid, gen) not in entries:
            raise AssertionError(f"live runner {pid} gen {gen} is not in the table")
    return True


def tokens_belong_to_running_sagas(v: SledView) -> bool:
    """A start token is held only by a saga that is still running: a token left behind
    keeps a deleted VMM's entry in the table, and its id can never be registered again."""
    if v.sagas is None:
        return True
    for entry in v.manager.table.values():
        leaked = entry.tokens - v.sagas
        if leaked:
            raise AssertionError(
                f"{entry.propolis_id} gen {entry.gen}: tokens of finished sagas {sorted(leaked)}"
            )
    return True


def no_leaked_table_entries(v: SledView) -> bool:
    """(At the end.) No table entry without tokens whose runner has exited: such an entry
    is never removed, and registering the VMM id again is refused forever."""
    for entry in v.manager.table.values():
        if not entry.tokens and not entry.runner.alive:
            raise AssertionError(
                f"{entry.propolis_id} gen {entry.gen}: in the table, runner exited, no tokens"
            )
    return True


# -- symptoms an operator would notice ---------------------------------------------------


def zone_ops_never_collide(v: SledView) -> bool:
    """No zone operation failed because another party's zone of that name existed or was
    still in use (failures injected by a test do not count)."""
    n = v.zones.collisions()
    if n:
        errors = {k: c for k, c in v.zones.statistics().errors.items() if c}
        raise AssertionError(f"{n} zone operation(s) collided: {errors}")
    return True


def zones_have_one_owner(v: SledView) -> bool:
    """Every existing zone is owned by exactly one party from creation to removal: the
    runner that created it (until it hands the zone over) or zone cleanup."""
    by_zone: dict[str, list[str]] = {}
    for pid, gen, inst in _runners(v.manager):
        if inst.zone is not None and not inst.done_with_zone:
            by_zone.setdefault(inst.zone, []).append(f"runner {pid} gen {gen}")
    for name in v.zones.names():
        owners = list(by_zone.get(name, ()))
        if v.cleanup.owns(name):
            owners.append("zone cleanup")
        if len(owners) != 1:
            who = " and ".join(owners) if owners else "nobody (leaked)"
            raise AssertionError(f"zone {name} is owned by {who}")
    return True


def failed_only_when_injected(v: SledView) -> bool:
    """Nexus never records ``Failed`` for a VMM unless a failure was injected for it (a
    crashed Propolis, a failing zone operation): a refused request must not fail a
    healthy VMM."""
    for pid, history in v.nexus_history.items():
        if not any(state.kind is VmmKind.FAILED for _t, state, _g in history):
            continue
        crashed = v.host is not None and pid in v.host.crashed_ids
        if not (crashed or v.zones.was_injected(propolis_zone_name(pid))):
            raise AssertionError(f"Nexus saw {pid} Failed with no failure injected")
    return True


#: Checked after every handled message.
INVARIANTS: tuple[SledInvariant, ...] = (
    gen_in_table,
    only_one_alive,
    strong_ref_implies_table,
    tokens_belong_to_running_sagas,
    zone_ops_never_collide,
    zones_have_one_owner,
    failed_only_when_injected,
)

#: The operator-visible ones among them.
SYMPTOMS: tuple[SledInvariant, ...] = (
    zone_ops_never_collide,
    zones_have_one_owner,
    failed_only_when_injected,
)

#: Checked once the run is over (every saga finished, teardowns done).
AT_END: tuple[SledInvariant, ...] = (no_leaked_table_entries, tokens_belong_to_running_sagas)
