"""The sled under test, shared by the sled agent's test modules: ``Sled`` (the API client,
the simulated world, and shortcuts into the actors' state) and ``make_sled``."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from trioxide.actors.instance_manager import InstanceManager
from trioxide.actors.instance_runner import InstanceRunner, RunnerConfig
from trioxide.actors.reservoir import ReservoirMode
from trioxide.actors.sim.hypervisor import SimHypervisor
from trioxide.actors.sim.vm import SimulatedVm
from trioxide.actors.sim.zones import SimZones
from trioxide.actors.sled_agent import SledAgent, SledAgentClient, SledConfig, SledWorld
from trioxide.actors.vmm_state import VmmState
from trioxide.runtime import ActorRef, Runtime

__all__ = ["Sled", "make_sled"]


@dataclass
class Sled:
    api: SledAgentClient
    world: SledWorld
    rt: Runtime | None = None

    @property
    def manager(self) -> InstanceManager:
        inst = self.api.manager.instance
        assert isinstance(inst, InstanceManager)
        return inst

    def runner_ref(self, pid: str) -> ActorRef:
        """The runner of VMM *pid* in the manager's table (which must hold it)."""
        entry = self.manager.find(pid)
        assert entry is not None
        return entry.runner

    def runner(self, pid: str) -> InstanceRunner:
        inst = self.runner_ref(pid).instance
        assert isinstance(inst, InstanceRunner)
        return inst

    def table(self) -> dict[str, int]:
        """The manager's table: VMM id -> generation."""
        return {pid: e.gen for pid, e in self.manager.table.items()}

    def agent_reservoir_state(self) -> object:
        return self.api.agent.reservoir_watch.value

    def nexus(self, pid: str) -> list[VmmState]:
        """The states Nexus recorded for *pid*, in order."""
        return [state for _t, state, _gen in self.world.nexus.vmm_history.get(pid, [])]

    def nexus_states(self, pid: str) -> list[tuple[VmmState, int]]:
        """The states Nexus recorded for *pid* with their generations."""
        return [(state, gen) for _t, state, gen in self.world.nexus.vmm_history.get(pid, [])]

    async def nexus_sees(self, pid: str, state: VmmState, within: float) -> float:
        """Wait (virtual time) until Nexus holds *state* for *pid*; when it got it."""
        with trio.fail_after(within):
            while True:
                for t, seen, _gen in self.world.nexus.vmm_history.get(pid, []):
                    if seen == state:
                        return t
                await trio.sleep(0.05)


async def make_sled(
    rt: Runtime,
    *,
    zones: SimZones | None = None,
    vm: SimulatedVm | None = None,
    runner: RunnerConfig | None = None,
    reservoir: ReservoirMode | None = None,
    hypervisor: SimHypervisor | None = None,
) -> Sled:
    """A sled agent named ``sled`` spawned in *rt*, over a fresh simulated world (zones
    install and boot in 1 s, a bundle takes 30 min, unless *zones* says otherwise)."""
    world = SledWorld(
        zones=zones or SimZones(install_time=1.0, boot_time=1.0, bundle_time=1800.0),
        vm_template=vm or SimulatedVm(),
        hypervisor=hypervisor or SimHypervisor(),
    )
    config = SledConfig(reservoir=reservoir, runner=runner or RunnerConfig())
    ref = await rt.spawn(SledAgent, world, config, name="sled")
    return Sled(SledAgentClient(ref), world, rt)
