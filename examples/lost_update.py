"""A deliberately racy toy: two clients increment a store with a read-then-write ask pair.

Client ``Go`` handler: a few scheduling points of "work", then ``v = await
store.ask(Read())`` and ``await store.tell(Write(v + 1))``. If both clients read before
either writes, one increment is lost. Client 0 works 0 steps, client 1 works 2: whether
their read-write pairs overlap is decided by the scheduler (about half of the seeds). The invariant
``no_lost_update`` (checked after every handled message) catches it the moment the second
write lands. ``fixed`` uses an atomic ``Add`` message instead and never violates.

    trioxide explore examples.lost_update:racy --seeds 200
    trioxide explore examples.lost_update:fixed --seeds 1000
"""

from __future__ import annotations

import msgspec
import trio

from trioxide.runtime import Actor, ActorRef
from trioxide.runtime.testing import Exploration, SeededRun

# -- messages ---------------------------------------------------------------------------


class Read(msgspec.Struct, frozen=True):
    pass


class Write(msgspec.Struct, frozen=True):
    value: int


class Add(msgspec.Struct, frozen=True):
    by: int


class Go(msgspec.Struct, frozen=True):
    rounds: int
    work: int = 0  # scheduling points before each read


# -- actors -----------------------------------------------------------------------------


class Store(Actor):
    def __init__(self) -> None:
        self.value = 0
        self.increments = 0  # writes/adds handled: what value should be

    async def handle(self, msg: Read | Write | Add) -> int | None:
        match msg:
            case Read():
                return self.value
            case Write(value):
                self.value = value
                self.increments += 1
            case Add(by):
                self.value += by
                self.increments += 1
        return None


class Client(Actor):
    def __init__(self, store: ActorRef, atomic: bool) -> None:
        self.store = store
        self.atomic = atomic

    async def handle(self, msg: Go) -> None:
        for _ in range(msg.rounds):
            for _ in range(msg.work):
                await trio.lowlevel.checkpoint()
            if self.atomic:
                await self.store.tell(Add(1))
            else:
                value = await self.store.ask(Read())
                await self.store.tell(Write(value + 1))


# -- scenario and invariant -------------------------------------------------------------


async def _scenario(run: SeededRun, *, atomic: bool, clients: int = 2, rounds: int = 1) -> None:
    store = await run.rt.spawn(Store, name="store")
    run.state["store"] = store
    refs = [await run.rt.spawn(Client, store, atomic, name=f"client-{i}") for i in range(clients)]
    async with trio.open_nursery() as nursery:
        for i, ref in enumerate(refs):
            nursery.start_soon(ref.ask, Go(rounds, work=2 * i))
    await store.ask(Read())  # every write is handled before the scenario ends


async def racy_scenario(run: SeededRun) -> None:
    await _scenario(run, atomic=False)


async def fixed_scenario(run: SeededRun) -> None:
    await _scenario(run, atomic=True)


def no_lost_update(run: SeededRun) -> bool | None:
    store = run.state.get("store")
    inst = store.instance if store is not None else None
    if not isinstance(inst, Store):
        return None
    assert inst.value == inst.increments, (
        f"store value {inst.value} after {inst.increments} increments (an update was lost)"
    )
    return True


racy = Exploration(racy_scenario, invariants=[no_lost_update], name="lost-update (racy)")
fixed = Exploration(fixed_scenario, invariants=[no_lost_update], name="lost-update (fixed)")
