"""InstanceMonitor: long-polls one Propolis for state changes and feeds its runner in
lock-step (upstream sled-agent/src/instance.rs, the monitor task).

Each observation is an ask to the runner (``Observation``); the monitor waits for the
reply (``"continue"`` or ``"break"``) before polling again, so the runner applies
observations in order and never falls behind. The long-poll asks for ``gen = last + 1``.
When Propolis answers ``NoInstance`` the monitor checks the zone: missing or not running
-> ``zone_gone``, else ``no_instance``; either way the runner fails the VMM.
"""

from __future__ import annotations

import msgspec

from trioxide.runtime import Actor, ActorGone, ActorRef

from .ports import PropolisPort
from .propolis.state_driver import NoInstance, VmState
from .sim.zones import SimZones

__all__ = ["InstanceMonitor", "Observation"]


class Observation(msgspec.Struct, frozen=True):
    """Ask to the runner: a Propolis state (or a failure to get one). Reply: continue/break."""

    state: VmState | None
    gen: int
    zone_gone: bool = False
    no_instance: bool = False


class _Nothing(msgspec.Struct, frozen=True):
    """The monitor takes no messages; its work is its polling task."""


class InstanceMonitor(Actor):
    def __init__(
        self, propolis: PropolisPort, runner: ActorRef, zones: SimZones, zone: str
    ) -> None:
        self.propolis = propolis
        self.runner = runner
        self.zones = zones
        self.zone = zone
        self.observed = 0

    async def on_start(self) -> None:
        self.start_soon(self._poll, name="long-poll")

    async def handle(self, msg: _Nothing) -> None:
        return None

    async def _poll(self) -> None:
        last = 0
        while True:
            try:
                state = await self.propolis.wait_for_state(last + 1)
                obs = Observation(state.state, state.gen)
                last = state.gen
            except NoInstance:
                gone = not self.zones.is_running(self.zone)
                obs = Observation(None, last, zone_gone=gone, no_instance=not gone)
            self.observed += 1
            try:
                reply = await self.runner.ask(obs)
            except ActorGone:
                return  # the runner is gone: nothing left to feed
            if reply == "break" or obs.state is None:
                return
