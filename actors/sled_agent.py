"""SledAgent: the root actor of the agent, and the public API a control plane calls.

Tree (spec/sled-agent.md §0)::

    sled
     ├─ reservoir        VmmReservoirManager (publishes the reservoir state on a Watch)
     ├─ zone-cleanup     ZoneCleanup (bundles + teardown of defunct zones)
     ├─ propolis-host    the simulated Propolis processes (one StateDriver per VMM)
     ├─ instance-manager InstanceManager
     │   └─ runner-<id>-g<gen>   InstanceRunner  └─ monitor  InstanceMonitor
     └─ nexus-notifier   NexusNotifier (sled info, reservoir size, generations)

``SledAgentClient`` is the API: registration goes to the manager; requests for one VMM
go from the caller's task straight to that VMM's runner, whose admission does the
try-send (``InstanceChannelFull``) - the manager never waits on a runner. Errors come out
as the typed ``actors.errors`` exceptions (each with its HTTP status).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from trioxide.runtime import Actor, ActorGone, ActorRef, Watch

from .errors import InstanceGone, NoSuchVmm
from .instance_manager import (
    EnsureRegistered,
    EnsureUnregistered,
    InstanceManager,
    Lookup,
    Register,
    Registration,
    ReleaseToken,
    StartToken,
    StartVmm,
)
from .instance_runner import (
    CurrentState,
    PutState,
    RunnerConfig,
    RunnerExit,
    SledServices,
    Target,
    Terminate,
    VmmSpec,
)
from .nexus_notifier import NexusNotifier, NotifierStatistics, NotifierStatus
from .propolis.crucible import ReplaceResult, Volume
from .propolis.state_driver import ReplaceVcr
from .reservoir import (
    GetReservoir,
    NotConfigured,
    Percentage,
    ReservoirMode,
    ReservoirState,
    ReservoirStatus,
    SetReservoirSize,
    SizeMiB,
    VmmReservoirManager,
)
from .sim.hypervisor import SimHypervisor
from .sim.network import DownstairsNetwork
from .sim.nexus import SimNexus, SledInfo
from .sim.propolis_host import PropolisHost
from .sim.vm import SimulatedVm
from .sim.zones import SimZones
from .vmm_state import VmmRuntimeState
from .zone_cleanup import ZoneCleanup

__all__ = ["SledAgent", "SledAgentClient", "SledConfig", "SledWorld"]


class _Nothing(msgspec.Struct, frozen=True):
    pass


@dataclass
class SledWorld:
    """The simulated hardware and services around one sled (all on the Trio clock)."""

    zones: SimZones = field(default_factory=lambda: SimZones(install_time=1.0, boot_time=1.0))
    nexus: SimNexus = field(default_factory=SimNexus)
    hypervisor: SimHypervisor = field(default_factory=SimHypervisor)
    network: DownstairsNetwork = field(default_factory=DownstairsNetwork)
    vm_template: SimulatedVm = field(default_factory=SimulatedVm)


@dataclass(frozen=True)
class SledConfig:
    sled_id: str = "sled-0"
    reservoir: ReservoirMode | None = None
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    cleanup_concurrency: int = 4
    legacy_tickets: bool = False  # tests only: the pre-#3325 manager


class SledAgent(Actor):
    def __init__(self, world: SledWorld, config: SledConfig) -> None:
        self.world = world
        self.config = config
        self.reservoir_watch: Watch[ReservoirState] = Watch(NotConfigured(), name="reservoir")
        self.services: SledServices | None = None
        self.refs: dict[str, ActorRef] = {}

    async def on_start(self) -> None:
        w, cfg = self.world, self.config
        self.refs["reservoir"] = await self.spawn(
            VmmReservoirManager, w.hypervisor, cfg.reservoir, self.reservoir_watch, name="reservoir"
        )
        self.refs["zone-cleanup"] = await self.spawn(
            ZoneCleanup, w.zones, cfg.cleanup_concurrency, name="zone-cleanup"
        )
        self.refs["propolis-host"] = await self.spawn(
            PropolisHost, w.network, w.vm_template, name="propolis-host", mailbox_size=4096
        )
        self.services = SledServices(
            zones=w.zones,
            cleanup=self.refs["zone-cleanup"],
            nexus=w.nexus,
            propolis_host=self.refs["propolis-host"],
            hypervisor=w.hypervisor,
            reservoir=self.reservoir_watch if cfg.reservoir is not None else None,
            config=replace(cfg.runner, legacy=cfg.legacy_tickets),
        )
        self.refs["instance-manager"] = await self.spawn(
            InstanceManager, self.services, cfg.legacy_tickets, name="instance-manager",
            mailbox_size=256,
        )  # fmt: skip
        info = SledInfo(
            sled_id=cfg.sled_id,
            address="[fd00:1122:3344:101::1]:12345",
            role="gimlet",
            usable_threads=128,
            usable_ram_bytes=w.hypervisor.physical_bytes,
            reservoir_size_bytes=0,
            generation=0,
            decommissioned=False,
        )
        self.refs["nexus-notifier"] = await self.spawn(
            NexusNotifier,
            w.nexus,
            info,
            lambda: w.hypervisor.reservoir_bytes,
            self.reservoir_watch,
            name="nexus-notifier",
            mailbox_size=256,
        )

    async def handle(self, msg: _Nothing) -> None:
        return None


class SledAgentClient:
    """The sled agent's API (what an HTTP layer or a test calls)."""

    def __init__(self, sled: ActorRef) -> None:
        inst = sled.instance
        assert isinstance(inst, SledAgent)
        self.sled = sled
        self.agent = inst
        self.manager = inst.refs["instance-manager"]
        self.reservoir = inst.refs["reservoir"]
        self.notifier = inst.refs["nexus-notifier"]

    async def register(
        self,
        propolis_id: str,
        instance_id: str,
        spec: VmmSpec | None = None,
        migration_id: str | None = None,
    ) -> VmmRuntimeState:
        reg: Registration = await self.manager.ask(
            EnsureRegistered(propolis_id, instance_id, spec or VmmSpec(), migration_id)
        )
        state: VmmRuntimeState = await self._ask_runner(reg, CurrentState())
        return state

    async def unregister(self, propolis_id: str) -> VmmRuntimeState | None:
        reg: Registration | None = await self.manager.ask(EnsureUnregistered(propolis_id))
        if reg is None:
            return None
        try:
            # Terminate is always admitted (a full request queue cannot refuse it) and
            # idempotent: the runner (or its drain) answers with the terminal state.
            state: VmmRuntimeState = await reg.runner.ask(Terminate(by_nexus=True))
        except ActorGone as gone:
            # The manager's own Terminate already ended the runner: its exit says how.
            return gone.reason.final if isinstance(gone.reason, RunnerExit) else None
        return state

    async def ensure_state(self, propolis_id: str, target: Target) -> VmmRuntimeState | None:
        reg: Registration = await self.manager.ask(Lookup(propolis_id))
        if target in (Target.RUNNING, Target.MIGRATION_TARGET):
            # Zone creation is long: the caller gets None at once (upstream behaviour).
            try:
                await reg.runner.tell(PutState(target))
            except ActorGone:
                raise InstanceGone(propolis_id, "the runner is gone") from None
            return None
        result: VmmRuntimeState | None = await self._ask_runner(reg, PutState(target))
        return result

    async def get_state(self, propolis_id: str) -> VmmRuntimeState:
        reg: Registration = await self.manager.ask(Lookup(propolis_id))
        state: VmmRuntimeState = await self._ask_runner(reg, CurrentState())
        return state

    async def replace_vcr(self, propolis_id: str, backend_id: str, vcr: Volume) -> ReplaceResult:
        reg: Registration = await self.manager.ask(Lookup(propolis_id))
        inst = reg.runner.instance
        propolis = getattr(inst, "propolis", None)
        if propolis is None:
            raise NoSuchVmm(propolis_id, "no Propolis is running")
        result: ReplaceResult = await propolis.driver.ask(ReplaceVcr(backend_id, vcr))
        return result

    async def set_reservoir_size(self, mode: SizeMiB | Percentage) -> ReservoirState:
        """Start resizing the reservoir: ``Pending(target)``, or ``Ready`` if already there."""
        state: ReservoirState = await self.reservoir.ask(SetReservoirSize(mode))
        return state

    async def reservoir_status(self) -> ReservoirStatus:
        status: ReservoirStatus = await self.reservoir.ask(GetReservoir())
        return status

    async def sled_info(self) -> NotifierStatistics:
        """What the notifier knows and has told Nexus."""
        stats: NotifierStatistics = await self.notifier.ask(NotifierStatus())
        return stats

    # -- start sagas (#3325 tokens) ---------------------------------------------------

    async def saga_register(
        self, saga_id: str, propolis_id: str, instance_id: str, spec: VmmSpec | None = None
    ) -> StartToken:
        token: StartToken = await self.manager.ask(
            Register(saga_id, propolis_id, instance_id, spec or VmmSpec())
        )
        return token

    async def saga_start(self, token: StartToken) -> None:
        await self.manager.ask(StartVmm(token))

    async def saga_release(self, token: StartToken) -> None:
        await self.manager.ask(ReleaseToken(token))

    async def _ask_runner(self, reg: Registration, msg: CurrentState | PutState) -> Any:
        try:
            return await reg.runner.ask(msg)
        except ActorGone:
            raise InstanceGone(reg.propolis_id, "the runner is gone") from None
