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

**Incremental checking** (the demo, at thousands of VMMs). Each invariant also has a
per-VMM form (``PER_VMM[inv](view, propolis_id)``): the same check restricted to one VMM id
(its table entries, runners, zone ``propolis_zone_name(id)`` and Nexus history). The full
form holds exactly when the per-VMM form holds for every VMM id and the zones not named
after a VMM are owned properly. ``IncrementalChecker`` runs the per-VMM forms for the VMM
ids marked as touched since the last check and a full check every ``full_every`` checks;
``TraceAttribution`` derives the touched ids from trace events. The explorer
(``actors.sagas``) keeps running the full forms after every handled message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from trioxide import traces

from .instance_manager import Entry, InstanceManager
from .instance_runner import InstanceRunner
from .sim.propolis_host import PropolisHost
from .sim.zones import SimZones, propolis_zone_name
from .vmm_state import VmmKind, VmmState
from .zone_cleanup import ZoneCleanup

__all__ = [
    "AT_END",
    "FULL_EVERY",
    "INVARIANTS",
    "PER_VMM",
    "SYMPTOMS",
    "IncrementalChecker",
    "SledInvariant",
    "SledView",
    "SledVmmInvariant",
    "TraceAttribution",
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
    demo); a token held for any other saga is a leak. ``nexus_failed``: the VMM ids whose
    Nexus history holds ``Failed`` (``SimNexus.failed_ids``), if kept: then
    ``failed_only_when_injected`` looks at those only instead of every history."""

    manager: InstanceManager
    cleanup: ZoneCleanup
    zones: SimZones
    nexus_history: dict[str, list[tuple[float, VmmState, int]]]
    host: PropolisHost | None = None
    sagas: set[str] | None = field(default=None)
    nexus_failed: set[str] | None = None


SledInvariant = Callable[[SledView], bool]

#: The per-VMM form of an invariant: the same check restricted to one VMM id.
SledVmmInvariant = Callable[[SledView, str], bool]


def _runners(m: InstanceManager) -> list[tuple[str, int, InstanceRunner]]:
    """Every runner instance that still exists, with its VMM id and generation."""
    out = []
    for ref, (pid, gen) in m.runners.items():
        inst = ref.instance
        if inst is not None:
            assert isinstance(inst, InstanceRunner)
            out.append((pid, gen, inst))
    return out


def _runners_of(m: InstanceManager, pid: str) -> list[tuple[int, InstanceRunner]]:
    """The runner instances of VMM *pid* that still exist, with their generation."""
    out = []
    for ref, gen in m.runners_by_id.get(pid, {}).items():
        inst = ref.instance
        if inst is not None:
            assert isinstance(inst, InstanceRunner)
            out.append((gen, inst))
    return out


def _entries_of(m: InstanceManager, pid: str) -> list[Entry]:
    """The table entries of VMM *pid* (the table is keyed by VMM id; in legacy mode by
    instance id, so it is searched)."""
    if m.legacy:
        return [e for e in m.table.values() if e.propolis_id == pid]
    entry = m.table.get(pid)
    return [entry] if entry is not None and entry.propolis_id == pid else []


# -- the manager's bookkeeping (#3325) ---------------------------------------------------


def _check_gen(m: InstanceManager, entry: Entry) -> None:
    if entry.gen > m.last_gen.get(entry.propolis_id, 0):
        raise AssertionError(f"{entry.propolis_id} gen {entry.gen} is above last_gen")
    inst = entry.runner.instance
    if isinstance(inst, InstanceRunner) and inst.gen != entry.gen:
        raise AssertionError(
            f"{entry.propolis_id}: table gen {entry.gen}, its runner's gen {inst.gen}"
        )


def gen_in_table(v: SledView) -> bool:
    """The table's gen equals its runner's gen; gens never decrease (last_gen is max)."""
    m = v.manager
    for entry in m.table.values():
        _check_gen(m, entry)
    return True


def gen_in_table_vmm(v: SledView, pid: str) -> bool:
    m = v.manager
    for entry in _entries_of(m, pid):
        _check_gen(m, entry)
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


def only_one_alive_vmm(v: SledView, pid: str) -> bool:
    n = sum(1 for _gen, inst in _runners_of(v.manager, pid) if not inst.done_with_zone)
    assert n <= 1, f"more than one live runner for { {pid: n} }"
    return True


def strong_ref_implies_table(v: SledView) -> bool:
    """A live runner implies the table entry for its id and gen."""
    entries = {(e.propolis_id, e.gen) for e in v.manager.table.values()}
    for pid, gen, inst in _runners(v.manager):
        if not inst.done_with_zone and (pid, gen) not in entries:
            raise AssertionError(f"live runner {pid} gen {gen} is not in the table")
    return True


def strong_ref_implies_table_vmm(v: SledView, pid: str) -> bool:
    gens = {e.gen for e in _entries_of(v.manager, pid)}
    for gen, inst in _runners_of(v.manager, pid):
        if not inst.done_with_zone and gen not in gens:
            raise AssertionError(f"live runner {pid} gen {gen} is not in the table")
    return True


def _check_tokens(entry: Entry, sagas: set[str]) -> None:
    leaked = entry.tokens - sagas
    if leaked:
        raise AssertionError(
            f"{entry.propolis_id} gen {entry.gen}: tokens of finished sagas {sorted(leaked)}"
        )


def tokens_belong_to_running_sagas(v: SledView) -> bool:
    """A start token is held only by a saga that is still running: a token left behind
    keeps a deleted VMM's entry in the table, and its id can never be registered again."""
    if v.sagas is None:
        return True
    for entry in v.manager.table.values():
        _check_tokens(entry, v.sagas)
    return True


def tokens_belong_to_running_sagas_vmm(v: SledView, pid: str) -> bool:
    if v.sagas is None:
        return True
    for entry in _entries_of(v.manager, pid):
        _check_tokens(entry, v.sagas)
    return True


def _check_not_leaked(entry: Entry) -> None:
    if not entry.tokens and not entry.runner.alive:
        raise AssertionError(
            f"{entry.propolis_id} gen {entry.gen}: in the table, runner exited, no tokens"
        )


def no_leaked_table_entries(v: SledView) -> bool:
    """(At the end.) No table entry without tokens whose runner has exited: such an entry
    is never removed, and registering the VMM id again is refused forever."""
    for entry in v.manager.table.values():
        _check_not_leaked(entry)
    return True


def no_leaked_table_entries_vmm(v: SledView, pid: str) -> bool:
    for entry in _entries_of(v.manager, pid):
        _check_not_leaked(entry)
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


def zone_ops_never_collide_vmm(v: SledView, pid: str) -> bool:
    """A sled-wide counter, O(1): checked whole for any VMM."""
    return zone_ops_never_collide(v)


def _check_owners(v: SledView, name: str, runners: list[str]) -> None:
    owners = list(runners)
    if v.cleanup.owns(name):
        owners.append("zone cleanup")
    if len(owners) != 1:
        who = " and ".join(owners) if owners else "nobody (leaked)"
        raise AssertionError(f"zone {name} is owned by {who}")


def zones_have_one_owner(v: SledView) -> bool:
    """Every existing zone is owned by exactly one party from creation to removal: the
    runner that created it (until it hands the zone over) or zone cleanup."""
    by_zone: dict[str, list[str]] = {}
    for pid, gen, inst in _runners(v.manager):
        if inst.zone is not None and not inst.done_with_zone:
            by_zone.setdefault(inst.zone, []).append(f"runner {pid} gen {gen}")
    for name in v.zones.existing():
        _check_owners(v, name, by_zone.get(name, []))
    return True


def zones_have_one_owner_vmm(v: SledView, pid: str) -> bool:
    """The zone of VMM *pid* (``propolis_zone_name(pid)``: a runner only ever creates
    the zone named after its VMM id - else the full check runs) and its runners."""
    name = propolis_zone_name(pid)
    owners = []
    for gen, inst in _runners_of(v.manager, pid):
        if inst.zone is not None and not inst.done_with_zone:
            if inst.zone != name:
                return zones_have_one_owner(v)
            owners.append(f"runner {pid} gen {gen}")
    if v.zones.exists(name):
        _check_owners(v, name, owners)
    return True


def _check_failed(v: SledView, pid: str, history: list[tuple[float, VmmState, int]]) -> None:
    if not any(state.kind is VmmKind.FAILED for _t, state, _g in history):
        return
    crashed = v.host is not None and pid in v.host.crashed_ids
    if not (crashed or v.zones.was_injected(propolis_zone_name(pid))):
        raise AssertionError(f"Nexus saw {pid} Failed with no failure injected")


def failed_only_when_injected(v: SledView) -> bool:
    """Nexus never records ``Failed`` for a VMM unless a failure was injected for it (a
    crashed Propolis, a failing zone operation): a refused request must not fail a
    healthy VMM."""
    if v.nexus_failed is not None:
        for pid in sorted(v.nexus_failed):
            _check_failed(v, pid, v.nexus_history[pid])
        return True
    for pid, history in v.nexus_history.items():
        _check_failed(v, pid, history)
    return True


def failed_only_when_injected_vmm(v: SledView, pid: str) -> bool:
    history = v.nexus_history.get(pid)
    if history:
        _check_failed(v, pid, history)
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

#: The per-VMM form of each invariant. Under the sled's conventions (the table is keyed by
#: VMM id, a runner's zone is named after its VMM id) an invariant holds iff its per-VMM
#: form holds for every VMM id - except that a zone not named after any VMM is seen by
#: the full ``zones_have_one_owner`` only.
PER_VMM: Mapping[SledInvariant, SledVmmInvariant] = {
    gen_in_table: gen_in_table_vmm,
    only_one_alive: only_one_alive_vmm,
    strong_ref_implies_table: strong_ref_implies_table_vmm,
    tokens_belong_to_running_sagas: tokens_belong_to_running_sagas_vmm,
    no_leaked_table_entries: no_leaked_table_entries_vmm,
    zone_ops_never_collide: zone_ops_never_collide_vmm,
    zones_have_one_owner: zones_have_one_owner_vmm,
    failed_only_when_injected: failed_only_when_injected_vmm,
}


# -- incremental checking ------------------------------------------------------------------

#: How many checks ``IncrementalChecker`` runs between two full checks by default.
FULL_EVERY = 1000


def _holds(check: Callable[..., bool], *args: object) -> str | None:
    """None if ``check(*args)`` holds, else why not."""
    try:
        ok = check(*args)
    except AssertionError as exc:
        return str(exc)
    return "returned False" if ok is False else None


class IncrementalChecker:
    """Checks *invariants* on a growing sled without looking at all of it every time.

    ``touch(pid)`` marks VMM id *pid* as possibly changed (``touch_all()``: anything may
    have changed). ``check(view)`` - called after every handled message - runs the per-VMM
    form (``PER_VMM``) of every invariant for each VMM id touched since the previous check,
    and the full forms on the first check, after ``touch_all()``, when asked
    (``full=True``) and every ``full_every``-th check. Each failing invariant is reported
    once per check (with the message of the first VMM id it fails for). A per-VMM form is
    its full form restricted to one VMM id (see ``PER_VMM``): it fails only when the full
    form would fail at that moment too.

    **Detection delay.** A violation caused by a change that was ``touch``-ed (i.e. that
    the caller attributed to its VMM id) is reported by the first check after it - as when
    every invariant is checked after every message. Any other violation is reported by the
    next full check: at most ``full_every`` checks later (``full_every`` handled messages
    in the demo), or by the final ``check(view, full=True)``. A violation that lasts fewer
    checks than that and whose VMM id was never touched can go unreported: the explorer,
    which must see every violation, runs the full forms after every message.

    Cost: O(touched VMMs) per check, plus O(sled) every ``full_every`` checks.
    ``checks`` counts invariant evaluations (one invariant on one VMM id, or on the whole
    sled); ``full_checks`` the full sweeps.
    """

    def __init__(
        self, invariants: tuple[SledInvariant, ...] = INVARIANTS, *, full_every: int = FULL_EVERY
    ) -> None:
        if full_every < 1:
            raise ValueError(f"full_every must be >= 1, got {full_every!r}")
        self.invariants = invariants
        self.per_vmm = [(inv, PER_VMM[inv]) for inv in invariants]
        self.full_every = full_every
        self.checks = 0
        self.full_checks = 0
        self._touched: dict[str, None] = {}  # an ordered set: deterministic order
        self._all = True
        self._since_full = 0

    def touch(self, pid: str) -> None:
        self._touched[pid] = None

    def touch_all(self) -> None:
        self._all = True

    def check(self, view: SledView, *, full: bool = False) -> list[tuple[str, str]]:
        """The violations found, as (invariant name, why)."""
        self._since_full += 1
        if full or self._all or self._since_full >= self.full_every:
            return self.check_full(view)
        if not self._touched:
            return []
        touched, self._touched = self._touched, {}
        failing: dict[SledInvariant, str] = {}  # each reported once, as a full check would
        for pid in touched:
            for inv, inv_vmm in self.per_vmm:
                if inv not in failing:
                    self.checks += 1
                    why = _holds(inv_vmm, view, pid)
                    if why is not None:
                        failing[inv] = why
        return [(inv.__name__, failing[inv]) for inv in self.invariants if inv in failing]

    def check_full(self, view: SledView) -> list[tuple[str, str]]:
        """Every invariant, in full; clears the touched set."""
        self._touched.clear()
        self._all = False
        self._since_full = 0
        self.full_checks += 1
        found = []
        for inv in self.invariants:
            self.checks += 1
            why = _holds(inv, view)
            if why is not None:
                found.append((inv.__name__, why))
        return found


_PAYLOAD_VMM = re.compile(
    rb'"propolis_id":"([^"\\]+)"'  # most messages about one VMM
    rb'|"zone":"oxz_propolis-server_([^"\\]+)"'  # zone cleanup's (propolis_zone_name)
    rb"|/runner-([^\s/>\"\\]+)-g\d+(?=[\s/>\"])"  # Terminated(ref=<ActorRef .../runner-...>)
)
_ZONE_PREFIX = propolis_zone_name("")


class TraceAttribution:
    """Feeds an ``IncrementalChecker`` from a sled's trace events (a trace sink's
    ``write``): which VMM ids an event may have changed the state of.

    * any event of a runner (``<root>/instance-manager/runner-<id>-g<gen>``, its monitor,
      its tasks) or of a Propolis (``<root>/propolis-host/propolis-<id>``): that VMM id;
    * the manager, zone cleanup and the Propolis host: the VMM id(s) in the payload of the
      message (recorded from its ``send`` event; the tracer must record payloads), at the
      send (admission) and when it is handled; a cleanup task (``cleanup:<zone>``): its
      zone's VMM; a handled message whose VMM is not known: everything;
    * the reservoir and the Nexus notifier: nothing (they touch no state an invariant
      reads); any other actor's handle, task end, failure or restart: everything;
    * ``zone_changed`` (give it to ``SimZones.on_change``): a zone operation's effect, the
      moment it happens - zone operations run inside tasks, between trace events.

    Best effort by design: a state change nothing names (a Nexus record written by a
    runner's publisher task, say) is seen by the checker's next full check.
    """

    #: How many messages to the manager, zone cleanup and Propolis host may wait for
    #: their handle event; the oldest are forgotten beyond that (their handle then
    #: touches everything). Some are never handled as such (e.g. a ``WaitCleaned`` taken
    #: by an interrupt), hence the bound.
    PENDING_KEPT = 1 << 14

    #: Actor paths whose VMM id is remembered (a cache, emptied when full).
    ACTORS_KEPT = 1 << 12

    def __init__(self, checker: IncrementalChecker, root: str = "sled") -> None:
        self.checker = checker
        self._payload_actors = frozenset(
            f"{root}/{name}" for name in ("instance-manager", "zone-cleanup", "propolis-host")
        )
        self._cleanup = f"{root}/zone-cleanup"
        self._runner_prefix = f"{root}/instance-manager/runner-"
        self._propolis_prefix = f"{root}/propolis-host/propolis-"
        self._quiet = (f"{root}/reservoir", f"{root}/nexus-notifier")
        # actor path -> its VMM id, "" (touches nothing) or None (see the message/task)
        self._actor: dict[str, str | None] = {}
        self._pending: dict[int, tuple[str, ...]] = {}  # msg id -> VMM ids in its payload

    def write(self, event: traces.TraceEvent) -> None:
        actor = event.actor
        try:
            pid = self._actor[actor]
        except KeyError:
            if len(self._actor) >= self.ACTORS_KEPT:
                self._actor.clear()  # a cache: runners come and go, the sled does not grow
            pid = self._actor[actor] = self._vmm_of_actor(actor)
        if pid is not None:
            if pid:
                self.checker.touch(pid)
            return
        kind = event.kind
        if actor in self._payload_actors:
            if kind == "send":
                self._sent(event)
            elif kind == "handle":
                pids = self._pending.pop(event.msg_id, None) if event.msg_id is not None else None
                if pids is None:
                    self.checker.touch_all()
                else:
                    for p in pids:
                        self.checker.touch(p)
            elif kind in ("task_start", "task_end") and actor == self._cleanup:
                self._cleanup_task(event.detail or "")
            elif kind == "drop" and event.msg_id is not None:
                self._pending.pop(event.msg_id, None)
            elif kind in ("fail", "restart"):
                self.checker.touch_all()
        elif kind in ("handle", "task_end", "fail", "restart"):
            self.checker.touch_all()  # an actor we know nothing about

    def _vmm_of_actor(self, actor: str) -> str | None:
        for prefix in (self._runner_prefix, self._propolis_prefix):
            if actor.startswith(prefix):
                name = actor[len(prefix) :].partition("/")[0]
                if prefix is self._runner_prefix:
                    name = name.rpartition("-g")[0]
                return name or None
        if actor.startswith(self._quiet):
            return ""
        return None

    def _sent(self, event: traces.TraceEvent) -> None:
        if event.msg_id is None:
            return
        pids = tuple(
            dict.fromkeys(
                next(g for g in m.groups() if g is not None).decode()
                for m in _PAYLOAD_VMM.finditer(event.payload)
            )
        )
        if not pids:
            return  # unknown: its handle touches everything
        for p in pids:
            self.checker.touch(p)  # admission may have acted on it (zone cleanup's owns)
        pending = self._pending
        pending[event.msg_id] = pids
        if len(pending) > self.PENDING_KEPT:
            del pending[next(iter(pending))]

    def zone_changed(self, zone: str) -> None:
        """A zone was created, changed state or disappeared (``SimZones.on_change``):
        zone operations run inside tasks, between trace events."""
        if zone.startswith(_ZONE_PREFIX):
            self.checker.touch(zone[len(_ZONE_PREFIX) :])
        else:
            self.checker.touch_all()

    def _cleanup_task(self, detail: str) -> None:
        if detail.startswith("cleanup:"):  # zone cleanup's other tasks wait, change nothing
            self.zone_changed(detail[len("cleanup:") :].partition(": ")[0])
