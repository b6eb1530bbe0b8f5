"""A running Propolis over HTTP and a long poll held on it, for the tests that take the
Propolis (or its whole hypervisor) away under a waiting monitor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from trioxide.actors.propolis.state_driver import NoInstance, Start, VmState
from trioxide.actors.wire.propolis_client import HttpLauncher, HttpPropolis

__all__ = ["polling_next", "running_propolis"]


async def running_propolis(launcher: HttpLauncher, pid: str) -> HttpPropolis:
    """Launch *pid*'s Propolis and run it (its published generation 3 is Running)."""
    port = await launcher.launch(pid, {}, False)
    await port.put_state(Start())
    assert (await port.wait_for_state(3)).state is VmState.RUNNING
    return port


@asynccontextmanager
async def polling_next(port: HttpPropolis) -> AsyncIterator[list[NoInstance]]:
    """A long poll for the generation after Running, in flight for the block; the block
    ends once it did: the list holds the ``NoInstance`` it ended with, if any."""
    outcome: list[NoInstance] = []

    async def poll() -> None:
        try:
            await port.wait_for_state(4)
        except NoInstance as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        yield outcome
