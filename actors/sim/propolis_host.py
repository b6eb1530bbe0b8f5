"""Simulated Propolis processes: one ``StateDriver`` actor per booted propolis zone.

The runner's ``instance_ensure`` is ``LaunchPropolis``: the host spawns the VMM's state
driver (with its Crucible backends on the sled's simulated downstairs network) and returns
a ``PropolisHandle`` - the "HTTP client" the runner and its monitor use. ``Crash`` kills a
Propolis abruptly (its state monitor closes: long-polls answer ``NoInstance``).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import trio

from trioxide.runtime import Actor, ActorRef

from ..propolis.crucible import Volume
from ..propolis.state_driver import StateDriver, StateMonitor, VmState
from .network import DownstairsNetwork
from .vm import SimulatedVm

__all__ = ["Crash", "Kill", "LaunchPropolis", "PropolisHandle", "PropolisHost"]

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
    propolis_id: str
    driver: ActorRef
    monitor: StateMonitor
    vm: SimulatedVm


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
