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
    "Deregister",
    "EnsureRegistered",
    "EnsureUnregistered",
    "InstanceManager",
    "LegacyTicketDrop",
    "Lookup",
    "ManagerLink",
    "Register",
    "Registration",
    "ReleaseToken",
    "StartToken",
    "StartVmm",
]

# -- messages ----------------------------------------------------------------------------


class EnsureRegistered(msgspec.Struct, frozen=True):
    """Ask -> ``Registration`` (raises ``PropolisAlreadyRegistered``).

    ``vmm_gen``: the generation of the VMM's runtime state Nexus holds (upstream's
    ``vmm_runtime`` in the register request): the runner starts from it, so what it
    publishes supersedes the record even when a VMM id is registered again."""

    propolis_id: str
    instance_id: str
    spec: VmmSpec = VmmSpec()
    migration_id: str | None = None
    vmm_gen: int = 1


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
        # The runners that may still exist, in spawn order, with their VMM id and
        # generation; and the same per VMM id (for the sled invariants). A runner is
        # forgotten once its ``Terminated`` is handled: it has exited (``ref.instance`` is
        # None), so the invariants, which skip exited runners, see nothing less.
        self.runners: dict[ActorRef, tuple[str, int]] = {}
        self.runners_by_id: dict[str, dict[ActorRef, int]] = {}
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
        self,
        propolis_id: str,
        instance_id: str,
        spec: VmmSpec,
        migration_id: str | None,
        vmm_gen: int = 1,
    ) -> Entry:
        gen = self.last_gen.get(propolis_id, 0) + 1
        self.last_gen[propolis_id] = gen
        runner = await self.spawn(
            InstanceRunner, propolis_id, instance_id, gen, spec, self.svc, migration_id,
            vmm_gen, name=f"runner-{propolis_id}-g{gen}", mailbox_size=128,
            restart="temporary",
        )  # fmt: skip
        self.monitor(runner)
        entry = Entry(propolis_id, instance_id, gen, runner)
        self.table[self._key(propolis_id, instance_id)] = entry
        self.runners[runner] = (propolis_id, gen)
        self.runners_by_id.setdefault(propolis_id, {})[runner] = gen
        return entry

    def _registration(self, entry: Entry, created: bool) -> Registration:
        return Registration(entry.propolis_id, entry.instance_id, entry.gen, entry.runner, created)

    def _maybe_remove(self, entry: Entry) -> None:
        """Remove *entry* once neither its runner nor any token references it."""
        if not entry.runner_alive and not entry.tokens:
            key = self._key(entry.propolis_id, entry.instance_id)
            if self.table.get(key) is entry:
                del self.table[key]

    def _forget_runner(self, ref: ActorRef) -> None:
        """Drop an exited runner from ``runners`` and ``runners_by_id`` (O(1))."""
        known = self.runners.pop(ref, None)
        if known is None:
            return
        of_id = self.runners_by_id.get(known[0])
        if of_id is not None:
            of_id.pop(ref, None)
            if not of_id:
                del self.runners_by_id[known[0]]

    # -- handlers ---------------------------------------------------------------------

    async def handle(self, msg: ManagerMsg) -> Any:
        match msg:
            case EnsureRegistered(pid, iid, spec, migration_id, vmm_gen):
                entry = self.find(pid) if not self.legacy else self.table.get(iid)
                if entry is not None:
                    if entry.instance_id != iid:
                        raise PropolisAlreadyRegistered(pid, f"registered for {entry.instance_id}")
                    if not self.legacy and (entry.terminating or not entry.runner_alive):
                        # Tokens (#3325): never hand out a runner that is tearing down;
                        # the caller retries once it has left the table.
                        raise VmmTearingDown(pid, f"generation {entry.gen} is tearing down; retry")
                    return self._registration(entry, False)  # legacy: maybe a dying runner
                entry = await self._create(pid, iid, spec, migration_id, vmm_gen)
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
                self._forget_runner(ref)
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
