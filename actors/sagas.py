"""The #3325 exploration: concurrent start sagas with retries plus a terminator, against
one VMM id, under the start-token design or the legacy ticket design.

    trioxide explore trioxide.actors.sagas:tokens --seeds 1000   # never violates an invariant
    trioxide explore trioxide.actors.sagas:legacy --seeds 1000   # OnlyOneAlive fails on some seeds
"""

from __future__ import annotations

import trio

from trioxide.runtime.testing import Exploration, Invariant, SeededRun

from .errors import InstanceGone, NoSuchVmm, VmmTearingDown
from .instance_manager import (
    INVARIANTS,
    InstanceManager,
    ManagerInvariant,
    StartToken,
    all_saga_tokens_released,
)
from .instance_runner import RunnerConfig
from .sim.zones import SimZones
from .sled_agent import SledAgent, SledAgentClient, SledConfig, SledWorld

__all__ = ["legacy", "saga_scenario", "tokens"]

SAGAS = 4
PID, IID = "vmm-1", "inst-1"


async def saga_scenario(run: SeededRun, *, legacy_tickets: bool) -> None:
    rng = run.random
    world = SledWorld(
        zones=SimZones(
            create_time=0.1, install_time=0.5, boot_time=0.5, halt_time=1.0, remove_time=1.0,
            bundle_time=2.0,
        ),
    )  # fmt: skip
    config = SledConfig(legacy_tickets=legacy_tickets, runner=RunnerConfig(service_wait=0.1))
    sled = await run.rt.spawn(SledAgent, world, config, name="sled")
    api = SledAgentClient(sled)
    manager = api.manager.instance
    assert isinstance(manager, InstanceManager)
    run.state["manager"] = manager

    async def saga(i: int) -> None:
        await trio.sleep(rng.uniform(0, 8))
        for _attempt in range(25):
            token: StartToken | None = None
            try:
                token = await api.saga_register(f"saga-{i}", PID, IID)
                await api.saga_start(token)
                return
            except (VmmTearingDown, NoSuchVmm, InstanceGone):
                pass
            finally:
                if token is not None:
                    await api.saga_release(token)
            await trio.sleep(rng.uniform(0.2, 1.5))

    async def terminator() -> None:
        for _ in range(2):
            await trio.sleep(rng.uniform(0.5, 6))
            await api.unregister(PID)

    async with trio.open_nursery() as nursery:
        for i in range(SAGAS):
            nursery.start_soon(saga, i)
        nursery.start_soon(terminator)
    await trio.sleep(30)  # let teardowns and cleanups finish


def _manager_invariant(check: ManagerInvariant) -> Invariant:
    """*check* as an exploration invariant (holds trivially before the manager exists)."""

    def invariant(run: SeededRun) -> object:
        manager = run.state.get("manager")
        if manager is None:
            return None
        assert isinstance(manager, InstanceManager)
        return check(manager)

    invariant.__name__ = check.__name__
    invariant.__doc__ = check.__doc__
    return invariant


INVARIANT_CHECKS = [_manager_invariant(inv) for inv in INVARIANTS]
AT_END = [_manager_invariant(all_saga_tokens_released)]


async def token_scenario(run: SeededRun) -> None:
    await saga_scenario(run, legacy_tickets=False)


async def legacy_scenario(run: SeededRun) -> None:
    await saga_scenario(run, legacy_tickets=True)


tokens = Exploration(token_scenario, INVARIANT_CHECKS, AT_END, name="#3325 start tokens")
legacy = Exploration(legacy_scenario, INVARIANT_CHECKS, AT_END, name="#3325 legacy tickets")
