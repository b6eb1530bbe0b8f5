"""InstanceRunner: one per registered VMM; handles its requests one at a time
(upstream sled-agent/src/instance.rs, with the fixes of issues #5237/#5235 and #10425).

Mailbox: requests (``CurrentState``, ``PutState``, ``IssueSnapshot``) are admitted only
while fewer than 32 messages are queued (else ``InstanceChannelFull``, HTTP 503), so the
urgent kinds always fit: monitor observations (priority 3), the stop-grace timer (2) and
``Terminate`` (1) overtake queued requests. A ``Terminate`` - or a stop request,
``PutState(Stopped)`` (ours: upstream queues it behind the setup) - also preempts a
running ``PutState(Running)``: the Propolis setup runs under ``serve_until`` (still
answering ``CurrentState``), is cancelled wherever it is (waiting for the old zone's
cleanup, a zone operation, the reservoir, the launch), and its caller gets
``InstanceGone``; a stop ends the VMM ``Destroyed``. Other requests (``Reboot``, another
``Running``) wait for the setup, as upstream.

Exit sequence (ours, #5237) when the VMM halts (Destroyed/Failed observed, zone gone,
Propolis gone, stop grace expired, or terminated):
  1. publish the terminal state to Nexus and wait until it is accepted (unless Nexus owns
     the state, i.e. an unregister) - Nexus must see ``Destroyed`` before any 404;
  2. deregister from the manager (priority message, compare-and-remove by generation);
  3. hand the zone to ``ZoneCleanup`` (bundle + halt + remove happen there);
  4. stop: queued requests are drained (``CurrentState`` -> the terminal state,
     ``Terminate`` -> the terminal state, others -> ``InstanceGone``).
The runner never waits for a zone bundle. Publishing to Nexus is a child task with
backoff (250 ms, x2, max 180 s) and latest-value semantics: a Nexus outage delays
publications but never wedges request handling.

Legacy ticket mode (tests only: the pre-#3325 design the explorer shows broken): the
teardown halts the zone inline, drops the manager's ticket, then removes the zone - so a
new runner for the same id can start while this one still tears its zone down.

Decisions: ``PutState(Stopped)`` without a zone publishes ``Destroyed`` and terminates
(upstream panics); a terminate during setup ends the VMM ``Failed`` (it never ran), a
terminate of a running VMM ends it ``Destroyed``; a stop during setup ends it
``Destroyed`` (stopped on request, as a stopped VM is).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import trio

from trioxide.runtime import (
    Actor,
    ActorGone,
    ActorRef,
    Admit,
    Completed,
    Interrupted,
    MailboxFull,
    Rejected,
    Watch,
    pattern,
)

from .errors import (
    InstanceChannelFull,
    InstanceGone,
    PropolisRefused,
    ServiceUnavailable,
    VmNotRunning,
)
from .instance_monitor import InstanceMonitor, Observation
from .ports import NexusPort, PropolisLauncher, PropolisPort, PropolisUnavailable
from .propolis.crucible import Volume
from .propolis.request_queue import RequestDenied
from .propolis.state_driver import NoInstance, Reboot, Start, Stop
from .reservoir import ReservoirState, ReservoirUnavailable, wait_for_reservoir
from .sim.hypervisor import InsufficientMemory, SimHypervisor
from .sim.nexus import NexusError
from .sim.zones import SimZones, ZoneAlreadyExists, ZoneError, propolis_zone_name
from .vmm_state import SledVmmState, VmmRuntimeState, from_propolis
from .zone_cleanup import CleanupZone, WaitCleaned

__all__ = [
    "CurrentState",
    "InstanceRunner",
    "IssueSnapshot",
    "ManagerPort",
    "MigrationRecord",
    "PutState",
    "RunnerConfig",
    "RunnerExit",
    "SledServices",
    "Target",
    "Terminate",
    "VmmSpec",
    "apply_migration_observation",
]

# -- messages ----------------------------------------------------------------------------


class Target(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    REBOOT = "reboot"
    MIGRATION_TARGET = "migration_target"


class CurrentState(msgspec.Struct, frozen=True):
    """Ask: the VMM's ``VmmRuntimeState``."""


class PutState(msgspec.Struct, frozen=True):
    """Ask (or tell): move the VMM toward *target*; returns the state (or ``None``)."""

    target: Target


class IssueSnapshot(msgspec.Struct, frozen=True):
    disk_id: str
    snapshot_id: str


class Terminate(msgspec.Struct, frozen=True):
    """Ask: tear the VMM down. ``by_nexus``: Nexus owns the state (nothing is published)."""

    by_nexus: bool = True


class RunnerExit(msgspec.Struct, frozen=True):
    """The runner's exit reason (``ref.exit_reason``, ``ActorGone.reason``): why it
    exited and the VMM's terminal state, so a ``Terminate`` that arrives after the exit
    still learns the outcome."""

    why: str
    final: VmmRuntimeState


class _StopGraceExpired(msgspec.Struct, frozen=True):
    pass


class VmmSpec(msgspec.Struct, frozen=True):
    ncpus: int = 2
    memory_bytes: int = 1 << 30
    disks: dict[str, Volume] = msgspec.field(default_factory=dict)


RunnerMsg = CurrentState | PutState | IssueSnapshot | Terminate | Observation | _StopGraceExpired

#: ``PutState(STOPPED)``, and no other ``PutState``: it aborts a setup in progress (other
#: targets wait for the setup to end, as upstream's runner queues them).
STOP_REQUEST = pattern(PutState, lambda m: m.target is Target.STOPPED, name="StopRequest")
_REQUESTS = (CurrentState, PutState, IssueSnapshot)
REQUEST_INBOX = 32


@dataclass(frozen=True)
class RunnerConfig:
    stop_grace: float = 600.0
    service_wait: float = 0.2  # wait for the Propolis service and its HTTP server
    reservoir_timeout: float = 300.0
    publish_initial: float = 0.25
    publish_max: float = 180.0
    legacy: bool = False  # the pre-#3325 teardown (tests only)


class ManagerPort(Protocol):
    """The runner's only view of the table that owns it (the instance manager).

    The protocol flows one way: the manager knows the runner's messages, the runner knows
    only this interface. The manager implements it by telling its *own* messages (it
    hands a port to its runners through ``SledServices.manager``), so the runner module
    never imports the manager's. Both methods raise ``ActorGone`` once the manager is gone.
    """

    async def deregister(self, propolis_id: str, gen: int) -> None:
        """The end of the exit sequence: leave the table (compare-and-remove by *gen*)."""
        ...

    async def drop_legacy_ticket(self, instance_id: str, gen: int) -> None:
        """Legacy mode: drop the runner's ticket (whatever generation holds the key)."""
        ...


@dataclass
class SledServices:
    """The world a runner works in (assembled by the sled agent or a test)."""

    zones: SimZones
    cleanup: ActorRef  # ZoneCleanup
    nexus: NexusPort
    propolis: PropolisLauncher  # where Propolis processes run (ports.py: in-process or HTTP)
    hypervisor: SimHypervisor
    reservoir: Watch[ReservoirState] | None = None
    manager: ManagerPort | None = None  # set by the manager for the runners it spawns
    config: RunnerConfig = field(default_factory=RunnerConfig)


# -- migration records -------------------------------------------------------------------


class MigrationRecord(msgspec.Struct, frozen=True):
    id: str
    state: str  # pending | in_progress | completed | failed
    gen: int


def apply_migration_observation(
    record: MigrationRecord | None, observed_id: str, observed_state: str
) -> MigrationRecord:
    """Spec §2: same id + new state -> gen+1; new id -> replace at gen 2; none -> gen 2."""
    if record is None or record.id != observed_id:
        return MigrationRecord(observed_id, observed_state, 2)
    if record.state == observed_state:
        return record
    return MigrationRecord(record.id, observed_state, record.gen + 1)


def migration_on_halt(record: MigrationRecord | None) -> MigrationRecord | None:
    """When the VMM halts a non-terminal migration fails (gen+1); Completed never changes."""
    if record is None or record.state in ("completed", "failed"):
        return record
    return MigrationRecord(record.id, "failed", record.gen + 1)


# -- the actor ---------------------------------------------------------------------------


class InstanceRunner(Actor):
    def __init__(
        self,
        propolis_id: str,
        instance_id: str,
        gen: int,
        spec: VmmSpec,
        services: SledServices,
        migration_id: str | None = None,
        vmm_gen: int = 1,
    ) -> None:
        self.propolis_id = propolis_id
        self.vmm_gen = vmm_gen  # the runtime generation Nexus holds: published states follow
        self.instance_id = instance_id
        self.gen = gen  # the manager's table generation of this runner
        self.spec = spec
        self.svc = services
        self.cfg = services.config
        self.zone_name = propolis_zone_name(propolis_id)
        self.migration_in: MigrationRecord | None = (
            MigrationRecord(migration_id, "pending", 1) if migration_id else None
        )
        self.vmm = VmmRuntimeState(SledVmmState.STARTING, vmm_gen, 0.0)
        self.zone: str | None = None
        self.propolis: PropolisPort | None = None
        self.monitor_ref: ActorRef | None = None  # the InstanceMonitor child
        self.grace_armed = False
        self.terminating = False
        self.done_with_zone = False  # True once nothing here touches the zone any more
        self.outbox: Watch[VmmRuntimeState] = Watch(self.vmm)
        self.published = Watch(0)  # the highest generation Nexus accepted
        self.publish_attempts = 0
        self.memory_reserved = False

    async def on_start(self) -> None:
        self.vmm = VmmRuntimeState(SledVmmState.STARTING, self.vmm_gen, trio.current_time())
        self.start_soon(self._publisher, name="nexus-publisher")

    # -- mailbox rules ----------------------------------------------------------------

    def admit(self, msg: Any) -> Admit:
        if isinstance(msg, _REQUESTS) and self.queued >= REQUEST_INBOX:
            return Admit.reject(InstanceChannelFull(self.propolis_id, "32 requests queued"))
        return Admit.ENQUEUE

    def priority(self, msg: Any) -> int:
        if isinstance(msg, Observation):
            return 3
        if isinstance(msg, _StopGraceExpired):
            return 2
        if isinstance(msg, Terminate):
            return 1
        return 0

    def drain(self, msg: Any) -> Any:
        if isinstance(msg, CurrentState | Terminate):
            return self.vmm
        if isinstance(msg, Observation):
            return "break"
        return InstanceGone(self.propolis_id, "the VMM was torn down")

    # -- handlers ---------------------------------------------------------------------

    async def handle(self, msg: RunnerMsg) -> Any:
        match msg:
            case CurrentState():
                return self.vmm
            case PutState(target):
                return await self._put_state(msg, target)
            case IssueSnapshot():
                if self.propolis is None:
                    raise VmNotRunning(self.propolis_id, "no Propolis to snapshot")
                return None
            case Terminate(by_nexus):
                final = SledVmmState.DESTROYED if self.propolis else SledVmmState.FAILED
                await self._exit(final, publish=not by_nexus, reason="terminated")
                return self.vmm
            case Observation():
                return await self._observe(msg)
            case _StopGraceExpired():
                if not self.terminating:
                    await self._exit(SledVmmState.DESTROYED, publish=True, reason="stop grace")
        return None

    async def _put_state(self, msg: PutState, target: Target) -> VmmRuntimeState | None:
        if self.terminating:
            raise InstanceGone(self.propolis_id, "terminating")
        if target in (Target.RUNNING, Target.MIGRATION_TARGET):
            if self.propolis is not None:
                return None  # already set up: idempotent
            result = await self.serve_until(
                self._propolis_ensure,
                target is Target.MIGRATION_TARGET,
                serve=(CurrentState,),
                interrupt=(Terminate, STOP_REQUEST),
            )
            if isinstance(result, Interrupted):
                # Setup was cancelled wherever it was (waiting for the old zone's cleanup,
                # in a zone operation, for the reservoir, launching Propolis): what it had
                # made - a zone, reserved memory, a Propolis - goes in the exit sequence.
                what = result.msg
                if isinstance(what, Terminate):
                    await self._exit(
                        SledVmmState.FAILED, publish=not what.by_nexus, reason="terminated"
                    )
                    why = "terminated while starting"
                else:  # a stop request: the VMM never ran, and ends as stopped ones do
                    await self._exit(
                        SledVmmState.DESTROYED, publish=True, reason="stopped while starting"
                    )
                    why = "stopped while starting"
                self.reply(what, self.vmm)
                # The start request's asker (if it asked) learns the VMM is gone.
                self.reply(msg, error=InstanceGone(self.propolis_id, why))
                return None
            assert isinstance(result, Completed)
            if result.value is not None:  # setup failed: the VMM failed and is gone
                await self._exit(SledVmmState.FAILED, publish=True, reason=result.value)
                return self.vmm
            return None
        if target is Target.STOPPED:
            if self.propolis is None:
                await self._exit(SledVmmState.DESTROYED, publish=True, reason="stopped (no zone)")
                return self.vmm
            if not await self._tell_propolis(Stop()):
                return self.vmm
            self._transition(SledVmmState.STOPPING)
            if not self.grace_armed:
                self.grace_armed = True  # armed by the first Stop only, never re-armed
                self.send_after(self.cfg.stop_grace, _StopGraceExpired())
            return self.vmm
        # Reboot
        if self.propolis is None:
            raise VmNotRunning(self.propolis_id, "reboot needs a running VM")
        if not await self._tell_propolis(Reboot()):
            return self.vmm
        self._transition(SledVmmState.REBOOTING)
        return self.vmm

    async def _tell_propolis(self, msg: Any) -> bool:
        """Send a state change to Propolis. As upstream's ``put_state``: only a Propolis
        that has no VM any more (``NoInstance``: its driver is gone) fails the VMM (and
        False is returned); any other refusal goes back to the caller as
        ``PropolisRefused``, the VMM unaffected (omicron sled-agent/src/instance.rs
        ``put_state``: ``NoInstance | CreateFailed`` -> fail, else ``Error::Propolis``)."""
        assert self.propolis is not None
        try:
            await self.propolis.put_state(msg)
        except NoInstance:
            await self._exit(SledVmmState.FAILED, publish=True, reason="Propolis: no instance")
            return False
        except RequestDenied as denied:
            raise PropolisRefused(self.propolis_id, denied.reason.name, str(denied)) from None
        except Rejected as rejected:
            raise PropolisRefused(self.propolis_id, rejected.reason, str(rejected)) from None
        except PropolisUnavailable as unavailable:
            raise ServiceUnavailable(self.propolis_id, str(unavailable)) from None
        return True

    async def _create_zone(self) -> None:
        """Create the VMM's zone, owning it from the moment the name is claimed.

        ``zones.create`` claims the name at once and then works for a while: if a Terminate
        cancels it meanwhile, the zone exists, so it must already be ours to hand to cleanup
        (the #3325 symptom was a cancelled zone nobody removed: every later start of the
        VMM failed with ZoneAlreadyExists)."""
        self.zone = self.zone_name
        try:
            await self.svc.zones.create(self.zone_name)
        except ZoneAlreadyExists:
            self.zone = None  # not claimed: the name is someone else's
            raise

    async def _propolis_ensure(self, migration_target: bool) -> str | None:
        """Zone -> install -> boot -> service -> reservoir -> instance_ensure -> monitor ->
        run. Returns None on success, else why setup failed (the VMM then fails)."""
        svc = self.svc
        try:
            # A zone name is reused only after the cleanup of the previous one finished.
            await svc.cleanup.ask(WaitCleaned(self.zone_name))
            await self._create_zone()
            await svc.zones.install(self.zone_name)
            await svc.zones.boot(self.zone_name)
            await trio.sleep(self.cfg.service_wait)
            if svc.reservoir is not None:
                # Ours: wait until the reservoir is not Pending; fail fast, never hang.
                await wait_for_reservoir(
                    svc.reservoir, self.spec.memory_bytes, timeout=self.cfg.reservoir_timeout
                )
                svc.hypervisor.reserve_vmm_memory(self.propolis_id, self.spec.memory_bytes)
                self.memory_reserved = True
            try:
                handle = await svc.propolis.launch(
                    self.propolis_id, dict(self.spec.disks), migration_target
                )
            except Exception as exc:  # any launch failure: the VMM fails, the zone is cleaned
                return f"setup failed: Propolis did not launch: {exc!r}"
        except (ZoneError, ReservoirUnavailable, InsufficientMemory) as exc:
            return f"setup failed: {exc}"
        self.propolis = handle
        self.monitor_ref = await self.spawn(
            InstanceMonitor, handle, self.ref, svc.zones, self.zone_name, name="monitor"
        )
        if not migration_target:
            try:
                await handle.put_state(Start())
            except (NoInstance, RequestDenied, PropolisUnavailable) as exc:
                # Over HTTP the Propolis (or its hypervisor) can be lost between the
                # launch and the Run: the VMM fails (in-process this cannot happen).
                return f"setup failed: Propolis did not start: {exc}"
        return None

    # -- observations -----------------------------------------------------------------

    async def _observe(self, obs: Observation) -> str:
        if self.terminating:
            return "break"
        if obs.state is None:
            why = "zone gone" if obs.zone_gone else "Propolis: no instance"
            await self._exit(SledVmmState.FAILED, publish=True, reason=why)
            return "break"
        mapped = from_propolis(obs.state)
        # Every applied observation bumps the generation, even if the state is unchanged.
        self.vmm = VmmRuntimeState(mapped, self.vmm.gen + 1, trio.current_time())
        if mapped.is_terminal():
            await self._exit(mapped, publish=True, reason=f"Propolis {obs.state.value}")
            return "break"
        self.outbox.set(self.vmm)
        return "continue"

    def _transition(self, state: SledVmmState) -> None:
        self.vmm = self.vmm.transition(state, trio.current_time())
        self.outbox.set(self.vmm)

    # -- Nexus publishing -------------------------------------------------------------

    async def _publisher(self) -> None:
        """Publish the latest state to Nexus; retry with backoff; never block requests."""
        async for state in self.outbox.changes():
            if state.gen <= self.published.value:
                continue  # already accepted: a retry below sent it (or a newer one)
            delay = self.cfg.publish_initial
            while True:
                self.publish_attempts += 1
                try:
                    await self.svc.nexus.put_vmm_state(self.propolis_id, state)
                    break
                except NexusError:
                    await trio.sleep(delay)
                    delay = min(delay * 2, self.cfg.publish_max)
                    if self.outbox.value.gen > state.gen:
                        state = self.outbox.value  # a newer state supersedes this one
            if state.gen > self.published.value:
                self.published.set(state.gen)

    async def _publish_final(self, state: VmmRuntimeState) -> None:
        self.outbox.set(state)
        await self.published.wait_for(lambda gen: gen >= state.gen)

    # -- the exit sequence ------------------------------------------------------------

    async def _exit(self, final: SledVmmState, *, publish: bool, reason: str) -> None:
        if self.terminating:
            return
        self.terminating = True
        self._transition_quiet(final)
        self.migration_in = migration_on_halt(self.migration_in)
        if publish:
            # 1. Nexus sees the terminal state before the VMM leaves the table. Requests in
            # this window are still answered; a terminate by Nexus makes the wait moot.
            result = await self.serve_until(
                self._publish_final, self.vmm, serve=(CurrentState,), interrupt=(Terminate,)
            )
            if isinstance(result, Interrupted):
                self.reply(result.msg, self.vmm)
        svc = self.svc
        if self.propolis is not None:
            await svc.propolis.kill(self.propolis_id)
        if self.memory_reserved:
            svc.hypervisor.release_vmm_memory(self.propolis_id)
        if self.cfg.legacy:
            await self._legacy_teardown()
        else:
            # 2. hand the zone to cleanup (bundle/halt/remove there), 3. leave the table:
            # a runner registered for this id afterwards finds the zone's cleanup pending.
            await self._hand_over_zone()
            await self._deregister()
        # 4. drain and exit.
        self.stop(RunnerExit(reason, self.vmm))

    async def _hand_over_zone(self) -> None:
        """Give the zone to cleanup in one step: cleanup owns it from the moment the
        hand-over is queued (its admission records it), and we stop owning it in the same
        step - so the zone always has exactly one owner."""
        self.done_with_zone = True
        if self.zone is None:
            return
        handover = CleanupZone(self.zone, self.propolis_id)
        try:
            self.svc.cleanup.tell_nowait(handover)
        except MailboxFull:
            await self.svc.cleanup.tell(handover)  # (cleanup's mailbox is large: rare)

    def _transition_quiet(self, state: SledVmmState) -> None:
        self.vmm = self.vmm.transition(state, trio.current_time())

    async def _deregister(self) -> None:
        if self.svc.manager is not None:
            try:
                await self.svc.manager.deregister(self.propolis_id, self.gen)
            except ActorGone:
                pass

    async def _legacy_teardown(self) -> None:
        """The pre-#3325 order: halt (slow), drop the ticket, then remove the zone
        unprotected - a new runner for the same id may already be starting."""
        zones = self.svc.zones
        if self.zone is not None:
            try:
                await zones.halt(self.zone)
            except ZoneError:
                pass
        if self.svc.manager is not None:
            await self.svc.manager.drop_legacy_ticket(self.instance_id, self.gen)
        if self.zone is not None:
            try:
                await zones.remove(self.zone)
            except ZoneError:
                pass
        self.done_with_zone = True
