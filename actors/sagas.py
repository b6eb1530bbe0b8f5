"""The #3325 exploration: concurrent start sagas with retries, a terminator and a client
poking the VMM's state, against one VMM id, under the start-token design or the legacy
ticket design. Checked after every handled message: the sled invariants
(``actors.invariants``), symptoms included (zone collisions, zone ownership, unexplained
``Failed``); at the end, also that every stop request was answered at once
(``stops_answered_promptly``).

    trioxide explore trioxide.actors.sagas:tokens --seeds 2000   # holds every invariant
    trioxide explore trioxide.actors.sagas:legacy --seeds 300    # violations, zones too
"""

from __future__ import annotations

import trio

from trioxide.runtime.testing import Exploration, Invariant, SeededRun

from .errors import SledAgentError
from .instance_manager import InstanceManager, StartToken
from .instance_runner import RunnerConfig, Target
from .invariants import AT_END, INVARIANTS, SYMPTOMS, SledInvariant, SledView
from .propolis.request_queue import RequestDenied
from .sim.propolis_host import PropolisHost
from .sim.zones import SimZones
from .sled_agent import SledAgent, SledAgentClient, SledConfig, SledWorld
from .zone_cleanup import ZoneCleanup

__all__ = ["legacy", "legacy_bookkeeping", "saga_scenario", "tokens"]

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
    cleanup = api.agent.refs["zone-cleanup"].instance
    host = api.agent.refs["propolis-host"].instance
    assert isinstance(manager, InstanceManager)
    assert isinstance(cleanup, ZoneCleanup) and isinstance(host, PropolisHost)
    sagas: set[str] = set()
    run.state["view"] = SledView(
        manager,
        cleanup,
        world.zones,
        world.nexus.vmm_history,
        host=host,
        sagas=sagas,
        nexus_failed=world.nexus.failed_ids,
    )

    async def saga(i: int) -> None:
        name = f"saga-{i}"
        await trio.sleep(rng.uniform(0, 8))
        sagas.add(name)
        try:
            for _attempt in range(25):
                token: StartToken | None = None
                try:
                    token = await api.saga_register(name, PID, IID)
                    await api.saga_start(token)
                    return
                except SledAgentError:
                    pass  # VmmTearingDown, NoSuchVmm, InstanceGone: retry
                finally:
                    if token is not None:
                        await api.saga_release(token)
                await trio.sleep(rng.uniform(0.2, 1.5))
        finally:
            sagas.discard(name)

    async def terminator() -> None:
        for _ in range(2):
            await trio.sleep(rng.uniform(0.5, 6))
            try:
                await api.unregister(PID)
            except SledAgentError:
                pass  # (a typed answer is fine; only hangs and lost errors are not)

    stop_waits: list[float] = run.state.setdefault("stop_waits", [])

    async def poker() -> None:
        """A client asking for state changes at any time (mostly refused: not running,
        starting, gone): a refusal must never fail the VMM, and a stop is answered at once
        (``stops_answered_promptly``)."""
        for _ in range(3):
            await trio.sleep(rng.uniform(0.5, 8))
            target = rng.choice([Target.REBOOT, Target.STOPPED])
            asked = trio.current_time()
            try:
                await api.ensure_state(PID, target)
            except (SledAgentError, RequestDenied):
                pass
            if target is Target.STOPPED:
                stop_waits.append(trio.current_time() - asked)

    async with trio.open_nursery() as nursery:
        for i in range(SAGAS):
            nursery.start_soon(saga, i)
        nursery.start_soon(terminator)
        nursery.start_soon(poker)
    await trio.sleep(30)  # let teardowns and cleanups finish


def _sled_invariant(check: SledInvariant) -> Invariant:
    """*check* as an exploration invariant (holds trivially before the sled exists)."""

    def invariant(run: SeededRun) -> object:
        view = run.state.get("view")
        if view is None:
            return None
        assert isinstance(view, SledView)
        return check(view)

    invariant.__name__ = check.__name__
    invariant.__doc__ = check.__doc__
    return invariant


#: A stop is answered within this (virtual) time, whatever the VMM is doing: the exit
#: sequence's slowest step here is killing Propolis (0.5 s).
STOP_ANSWERED_WITHIN = 1.0


def stops_answered_promptly(run: SeededRun) -> bool:
    """What an operator would notice: a stop request that takes as long as the start it
    came during. Every stop the poker sent was answered within ``STOP_ANSWERED_WITHIN``
    (a stop aborts a setup in progress: waiting for the old zone's cleanup, in a zone
    operation, launching Propolis; upstream queues it behind the start)."""
    slow = [round(w, 3) for w in run.state.get("stop_waits", []) if w > STOP_ANSWERED_WITHIN]
    assert not slow, f"stop requests answered after {slow} s (limit {STOP_ANSWERED_WITHIN} s)"
    return True


INVARIANT_CHECKS = [_sled_invariant(inv) for inv in INVARIANTS]
AT_END_CHECKS = [*(_sled_invariant(inv) for inv in AT_END), stops_answered_promptly]


async def token_scenario(run: SeededRun) -> None:
    await saga_scenario(run, legacy_tickets=False)


async def legacy_scenario(run: SeededRun) -> None:
    await saga_scenario(run, legacy_tickets=True)


#: What an operator would notice (a zone that cannot be created, a leaked zone, a VMM
#: failed for nothing), checked on their own so that the legacy design is reported by its
#: symptom rather than by the bookkeeping that precedes it.
SYMPTOM_CHECKS = [_sled_invariant(inv) for inv in SYMPTOMS]

tokens = Exploration(token_scenario, INVARIANT_CHECKS, AT_END_CHECKS, name="#3325 start tokens")
legacy = Exploration(legacy_scenario, SYMPTOM_CHECKS, AT_END_CHECKS, name="#3325 legacy tickets")
legacy_bookkeeping = Exploration(
    legacy_scenario, INVARIANT_CHECKS, AT_END_CHECKS, name="#3325 legacy tickets, all invariants"
)
