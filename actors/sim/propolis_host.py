"""Simulated Propolis processes: one ``StateDriver`` actor per booted propolis zone.

The runner's ``instance_ensure`` is ``LaunchPropolis``: the host spawns the VMM's state
driver (with its Crucible backends on the sled's simulated downstairs network) and returns
a ``PropolisHandle`` - the in-process ``ports.PropolisPort`` the runner and its monitor use
(``trioxide.actors.wire`` has the HTTP one). ``Crash`` kills a Propolis abruptly (its state
monitor closes: long-polls answer ``NoInstance``). ``LocalLauncher`` is the in-process
``ports.PropolisLauncher``: a launch and a kill are asks to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import trio

from trioxide.runtime import Actor, ActorGone, ActorRef

from ..ports import StateRequest
from ..propolis.crucible import ReplaceResult, Volume
from ..propolis.state_driver import (
    NoInstance,
    PublishedState,
    ReplaceVcr,
    StateDriver,
    StateMonitor,
    VmState,
)
from .network import DownstairsNetwork
from .vm import SimulatedVm

__all__ = ["Crash", "Kill", "LaunchPropolis", "LocalLauncher", "PropolisHandle", "PropolisHost"]

# -- messages ----------------------------------------------------------------------------


class LaunchPropolis(msgspec.Struct, frozen=True):
    """Ask: start the Propolis of *propolis_id*; returns a ``PropolisHandle``."""

    propolis_id: str
    disks: dict[str, Volume]
    migration_target: bool = False


class Crash(msgspec.Struct, frozen=True):
    """Tell: the Propolis process dies at once (no Destroyed is published)."""

    propolis_id: str


class Kill(msgspec.Struct, frozen=True):
    """Ask: stop the Propolis process (its zone is being torn down)."""

    propolis_id: str


@dataclass(frozen=True)
class PropolisHandle:
    """One in-process Propolis: its state driver, published state and simulated VM.

    Implements ``ports.PropolisPort`` with the driver's messages: a state request is a
    tell, a VCR replacement an ask, the long poll a wait on the ``StateMonitor``. A driver
    that is gone raises ``NoInstance``."""

    propolis_id: str
    driver: ActorRef
    monitor: StateMonitor
    vm: SimulatedVm

    @property
    def alive(self) -> bool:
        return self.driver.alive

    async def put_state(self, requested: StateRequest) -> None:
        try:
            await self.driver.tell(requested)
        except ActorGone:
            raise NoInstance(self.monitor.current.gen + 1) from None

    async def wait_for_state(self, gen: int) -> PublishedState:
        return await self.monitor.wait_for_state(gen)

    async def replace_vcr(self, backend_id: str, vcr: Volume) -> ReplaceResult:
        try:
            result: ReplaceResult = await self.driver.ask(ReplaceVcr(backend_id, vcr))
        except ActorGone:
            raise NoInstance(self.monitor.current.gen + 1) from None
        return result


@dataclass(frozen=True)
class LocalLauncher:
    """``ports.PropolisLauncher`` over a ``PropolisHost`` actor in the same run."""

    host: ActorRef

    async def launch(
        self, propolis_id: str, disks: dict[str, Volume], migration_target: bool
    ) -> PropolisHandle:
        handle: PropolisHandle = await self.host.ask(
            LaunchPropolis(propolis_id, disks, migration_target)
        )
        return handle

    async def kill(self, propolis_id: str) -> None:
        await self.host.ask(Kill(propolis_id))


class PropolisHost(Actor):
    def __init__(
        self, net: DownstairsNetwork, vm_template: SimulatedVm | None = None, kill_time: float = 0.5
    ) -> None:
        self.net = net
        self.kill_time = kill_time  # a Propolis process takes a moment to die
        self.template = vm_template or SimulatedVm()
        self.running: dict[str, PropolisHandle] = {}
        self.launched = 0
        self.crashed = 0
        self.crashed_ids: set[str] = set()  # injected failures (for the sled invariants)

    async def handle(self, msg: LaunchPropolis | Crash | Kill) -> PropolisHandle | None:
        match msg:
            case LaunchPropolis(pid, disks, migration_target):
                old = self.running.pop(pid, None)
                if old is not None and old.driver.alive:
                    await old.driver.stop("replaced", grace=0)
                t = self.template
                vm = SimulatedVm(
                    fail_device_start=t.fail_device_start,
                    reset_time=t.reset_time,
                    halt_time=t.halt_time,
                    migrate_time=t.migrate_time,
                    migrate_ok=t.migrate_ok,
                )
                initial = VmState.MIGRATING if migration_target else VmState.CREATING
                monitor = StateMonitor(initial, name=f"propolis-{pid}.state")
                driver = await self.spawn(
                    StateDriver, vm, disks, self.net, monitor, migration_target,
                    name=f"propolis-{pid}", mailbox_size=256,
                )  # fmt: skip
                handle = PropolisHandle(pid, driver, monitor, vm)
                self.running[pid] = handle
                self.launched += 1
                return handle
            case Crash(pid):
                crashed = self.running.pop(pid, None)
                if crashed is not None:
                    self.crashed += 1
                    self.crashed_ids.add(pid)
                    await crashed.driver.stop("crashed", grace=0)
            case Kill(pid):
                killed = self.running.pop(pid, None)
                if killed is not None and killed.driver.alive:
                    await trio.sleep(self.kill_time)
                    await killed.driver.stop("zone halted", grace=0)
        return None
