"""InstanceManager: the sled's table of VMMs, start tokens (#3325), and (for tests) the
legacy ticket design that #3325 fixed.

Upstream (sled-agent/src/instance_manager.rs): one task owns ``jobs: propolis_id ->
Instance``; deregistration is handled before other requests. Ours:

* **Never blocked by a runner.** The manager only resolves and mutates the table; requests
  for a VMM go to its runner from the caller's side (``SledAgent``), where the runner's
  admission does the try-send (``InstanceChannelFull`` beyond 32 queued) - so a wedged
  runner slows nobody else, and the manager's handlers never await a runner.
* **Deregistration first** (priority 10) and **compare-and-remove by generation**: a stale
  removal never removes a newer registration of the same id.
* **Start tokens.** Registration and start are two saga steps. ``Register(saga, id)``
  returns the saga's token for the live entry, creating a runner (generation ``gen+1``)
  if there is none; a saga asking again gets the same token (replay-safe). If the entry
  exists but its runner is tearing down (or gone while tokens still pin the entry), we
  **never create a second runner** for the id: ``VmmTearingDown`` (retryable; the saga
  backs off and retries - chosen over waiting so a slow teardown holds no manager state
  hostage). ``StartVmm(saga, token)`` redeems (idempotently); ``ReleaseToken`` drops it.
  A table entry lives while its runner or any token references it.
* Every operation carries ``(id, gen)``; a stale generation gets ``NoSuchVmm``.

The six #3325 invariants are functions of the manager (``INVARIANTS``), checked after
every handled message by the explorer (tests/test_sled_explorer.py).

Legacy ticket mode (``legacy=True``, tests only): the table is keyed by instance id; a
registration during teardown returns the dying runner; the runner drops its ticket after
halting its zone and then removes the zone unprotected - the race of omicron #3325.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from trioxide.runtime import Actor, ActorRef, Terminated

from .errors import NoSuchVmm, PropolisAlreadyRegistered, VmmTearingDown
from .instance_runner import (
    InstanceRunner,
    ManagerPort,
    PutState,
    SledServices,
    Target,
    Terminate,
    VmmSpec,
)

__all__ = [
    "INVARIANTS",
    "Deregister",
    "EnsureRegistered",
    "EnsureUnregistered",
    "InstanceManager",
    "LegacyTicketDrop",
    "Lookup",
    "ManagerInvariant",
    "ManagerLink",
    "Register",
    "Registration",
    "ReleaseToken",
    "StartToken",
    "StartVmm",
]

# -- messages ----------------------------------------------------------------------------


class EnsureRegistered(msgspec.Struct, frozen=True):
    """Ask -> ``Registration`` (raises ``PropolisAlreadyRegistered``)."""

    propolis_id: str
    instance_id: str
    spec: VmmSpec = VmmSpec()
    migration_id: str | None = None


class EnsureUnregistered(msgspec.Struct, frozen=True):
    """Ask -> the runner to terminate (``Registration``), or ``None`` if absent."""

    propolis_id: str


class Lookup(msgspec.Struct, frozen=True):
    """Ask -> ``Registration`` of the live runner (raises ``NoSuchVmm``)."""

    propolis_id: str
    gen: int | None = None


class Register(msgspec.Struct, frozen=True):
    """Ask (start saga, step 1) -> ``StartToken`` (raises ``VmmTearingDown``)."""

    saga_id: str
    propolis_id: str
    instance_id: str
    spec: VmmSpec = VmmSpec()


class StartToken(msgspec.Struct, frozen=True):
    saga_id: str
    propolis_id: str
    gen: int


class StartVmm(msgspec.Struct, frozen=True):
    """Ask (start saga, step 2): redeem *token* (idempotent) -> the runner is told to run."""

    token: StartToken


class ReleaseToken(msgspec.Struct, frozen=True):
    """Ask (start saga, last step): drop *token*."""

    token: StartToken


class Deregister(msgspec.Struct, frozen=True):
    """From a runner at the end of its exit sequence (compare-and-remove by gen)."""

    propolis_id: str
    gen: int


class LegacyTicketDrop(msgspec.Struct, frozen=True):
    """Legacy mode: the runner's ticket drop (removes the key whatever its generation)."""

    instance_id: str
    gen: int


ManagerMsg = (
    EnsureRegistered
    | EnsureUnregistered
    | Lookup
    | Register
    | StartVmm
    | ReleaseToken
    | Deregister
    | LegacyTicketDrop
    | Terminated
)


@dataclass(frozen=True)
class ManagerLink:
    """The manager's side of ``ManagerPort``: what its runners call at the end of their
    exit sequence. It tells the manager's own messages (``Deregister``,
    ``LegacyTicketDrop``), which the manager handles first (priority 10)."""

    manager: ActorRef

    async def deregister(self, propolis_id: str, gen: int) -> None:
        await self.manager.tell(Deregister(propolis_id, gen))

    async def drop_legacy_ticket(self, instance_id: str, gen: int) -> None:
        await self.manager.tell(LegacyTicketDrop(instance_id, gen))


@dataclass(frozen=True)
class Registration:
    propolis_id: str
    instance_id: str
    gen: int
    runner: ActorRef
    created: bool


@dataclass
class Entry:
    propolis_id: str
    instance_id: str
    gen: int
    runner: ActorRef
    runner_alive: bool = True
    terminating: bool = False
    tokens: set[str] = field(default_factory=set)  # saga ids
    redeemed: set[str] = field(default_factory=set)


class InstanceManager(Actor):
    def __init__(self, services: SledServices, legacy: bool = False) -> None:
        self.svc = services
        self.legacy = legacy
        self.table: dict[str, Entry] = {}  # key: propolis id (legacy: instance id)
        self.last_gen: dict[str, int] = {}  # per propolis id; never decreases
        self.runners: list[tuple[str, int, ActorRef]] = []  # every runner ever spawned
        self.stale_removals = 0

    async def on_start(self) -> None:
        # The runners this manager spawns report back through a port to it.
        port: ManagerPort = ManagerLink(self.ref)
        self.svc = replace(self.svc, manager=port)

    def priority(self, msg: Any) -> int:
        return 10 if isinstance(msg, Deregister | LegacyTicketDrop | Terminated) else 0

    # -- helpers ----------------------------------------------------------------------

    def _key(self, propolis_id: str, instance_id: str) -> str:
        return instance_id if self.legacy else propolis_id

    def find(self, propolis_id: str) -> Entry | None:
        """The table entry of *propolis_id* (live or pinned by tokens), if any."""
        if not self.legacy:
            return self.table.get(propolis_id)
        for entry in self.table.values():
            if entry.propolis_id == propolis_id:
                return entry
        return None

    async def _create(
        self, propolis_id: str, instance_id: str, spec: VmmSpec, migration_id: str | None
    ) -> Entry:
        gen = self.last_gen.get(propolis_id, 0) + 1
        self.last_gen[propolis_id] = gen
        runner = await self.spawn(
            InstanceRunner, propolis_id, instance_id, gen, spec, self.svc, migration_id,
            name=f"runner-{propolis_id}-g{gen}", mailbox_size=128, restart="temporary",
        )  # fmt: skip
        self.monitor(runner)
        entry = Entry(propolis_id, instance_id, gen, runner)
        self.table[self._key(propolis_id, instance_id)] = entry
        self.runners.append((propolis_id, gen, runner))
        return entry

    def _registration(self, entry: Entry, created: bool) -> Registration:
        return Registration(entry.propolis_id, entry.instance_id, entry.gen, entry.runner, created)

    def _maybe_remove(self, entry: Entry) -> None:
        """Remove *entry* once neither its runner nor any token references it."""
        if not entry.runner_alive and not entry.tokens:
            key = self._key(entry.propolis_id, entry.instance_id)
            if self.table.get(key) is entry:
                del self.table[key]

    # -- handlers ---------------------------------------------------------------------

    async def handle(self, msg: ManagerMsg) -> Any:
        match msg:
            case EnsureRegistered(pid, iid, spec, migration_id):
                entry = self.find(pid) if not self.legacy else self.table.get(iid)
                if entry is not None:
                    if entry.instance_id != iid:
                        raise PropolisAlreadyRegistered(pid, f"registered for {entry.instance_id}")
                    return self._registration(entry, False)  # legacy: maybe a dying runner
                entry = await self._create(pid, iid, spec, migration_id)
                return self._registration(entry, True)
            case EnsureUnregistered(pid):
                entry = self.find(pid)
                if entry is None or not entry.runner_alive:
                    return None
                entry.terminating = True
                await entry.runner.tell(Terminate(by_nexus=True))
                return self._registration(entry, False)
            case Lookup(pid, gen):
                entry = self.find(pid)
                if (
                    entry is None
                    or not entry.runner_alive
                    or (gen is not None and gen != entry.gen)
                ):
                    raise NoSuchVmm(pid, "not registered" if entry is None else "stale generation")
                return self._registration(entry, False)
            case Register(saga, pid, iid, spec):
                return await self._register(saga, pid, iid, spec)
            case StartVmm(token):
                return await self._start(token)
            case ReleaseToken(token):
                entry = self.find(token.propolis_id)
                if entry is not None and entry.gen == token.gen:
                    entry.tokens.discard(token.saga_id)
                    self._maybe_remove(entry)
                return None
            case Deregister(pid, gen):
                entry = self.find(pid)
                if entry is None or entry.gen != gen:
                    self.stale_removals += 1  # a newer registration survives a stale removal
                    return None
                entry.runner_alive = False
                self._maybe_remove(entry)
            case LegacyTicketDrop(iid, _gen):
                self.table.pop(iid, None)  # the old design: whatever is there now
            case Terminated(ref):
                for entry in list(self.table.values()):
                    if entry.runner is ref and entry.runner_alive:
                        entry.runner_alive = False  # a runner that failed without deregistering
                        self._maybe_remove(entry)
        return None

    async def _register(self, saga: str, pid: str, iid: str, spec: VmmSpec) -> StartToken:
        entry = self.find(pid)
        if self.legacy:
            if entry is None:
                entry = self.table.get(iid)
            if entry is None:
                entry = await self._create(pid, iid, spec, None)
            return StartToken(saga, pid, entry.gen)  # no memory of tokens: the old design
        if entry is not None:
            if entry.instance_id != iid:
                raise PropolisAlreadyRegistered(pid, f"registered for {entry.instance_id}")
            if saga in entry.tokens:
                return StartToken(saga, pid, entry.gen)  # replay-safe
            if entry.terminating or not entry.runner_alive:
                raise VmmTearingDown(pid, f"generation {entry.gen} is tearing down; retry")
            entry.tokens.add(saga)
            return StartToken(saga, pid, entry.gen)
        entry = await self._create(pid, iid, spec, None)
        entry.tokens.add(saga)
        return StartToken(saga, pid, entry.gen)

    async def _start(self, token: StartToken) -> None:
        entry = self.find(token.propolis_id)
        if entry is None or entry.gen != token.gen or not entry.runner_alive:
            raise NoSuchVmm(token.propolis_id, f"generation {token.gen} is not registered")
        if not self.legacy and token.saga_id not in entry.tokens:
            raise NoSuchVmm(token.propolis_id, f"saga {token.saga_id} holds no token")
        if token.saga_id in entry.redeemed:
            return None  # redeeming again succeeds idempotently
        entry.redeemed.add(token.saga_id)
        await entry.runner.tell(PutState(Target.RUNNING))
        return None


# -- the #3325 invariants ----------------------------------------------------------------


def _alive(ref: ActorRef) -> bool:
    """A runner counts as alive while it may still act on its VMM or zone."""
    inst = ref.instance
    if inst is None:
        return False
    assert isinstance(inst, InstanceRunner)
    return not inst.done_with_zone


def gen_in_table(m: InstanceManager) -> bool:
    """The table's gen equals its runner's gen; gens never decrease (last_gen is max)."""
    for entry in m.table.values():
        if entry.gen > m.last_gen.get(entry.propolis_id, 0):
            return False
        inst = entry.runner.instance
        if isinstance(inst, InstanceRunner) and inst.gen != entry.gen:
            return False
    return True


def one_start_token_per_saga(m: InstanceManager) -> bool:
    """A saga holds at most one token per VMM id."""
    seen: set[tuple[str, str]] = set()
    for entry in m.table.values():
        for saga in entry.tokens:
            if (saga, entry.propolis_id) in seen:
                return False
            seen.add((saga, entry.propolis_id))
    return True


def only_one_alive(m: InstanceManager) -> bool:
    """At most one live runner (and so one zone) per VMM id."""
    count: dict[str, int] = {}
    for pid, _gen, ref in m.runners:
        if _alive(ref):
            count[pid] = count.get(pid, 0) + 1
    bad = {pid: n for pid, n in count.items() if n > 1}
    assert not bad, f"more than one live runner for {bad}"
    return True


def strong_ref_implies_table(m: InstanceManager) -> bool:
    """A token or a live runner implies the table entry for that id and gen."""
    entries = {(e.propolis_id, e.gen) for e in m.table.values()}
    for pid, gen, ref in m.runners:
        if _alive(ref) and (pid, gen) not in entries:
            raise AssertionError(f"live runner {pid} gen {gen} is not in the table")
    return True


def table_holds_some_reference(m: InstanceManager) -> bool:
    """Every table entry is held by its runner or by a token."""
    return all(e.runner_alive or e.tokens for e in m.table.values())


def all_saga_tokens_released(m: InstanceManager) -> bool:
    """After every saga finished: no token left."""
    return all(not e.tokens for e in m.table.values())


ManagerInvariant = Callable[[InstanceManager], bool]

#: Checked after every handled message (``all_saga_tokens_released`` only at the end).
INVARIANTS: tuple[ManagerInvariant, ...] = (
    gen_in_table,
    one_start_token_per_saga,
    only_one_alive,
    strong_ref_implies_table,
    table_holds_some_reference,
)
