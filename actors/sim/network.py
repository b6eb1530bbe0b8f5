"""A simulated network to Crucible downstairs targets.

A target is reachable unless black-holed. Connecting to a reachable target takes
``latency`` seconds on the Trio clock; connecting to a black-holed one waits until it is
healed (the packets go nowhere - which is exactly why upstream activation livelocked).
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

__all__ = ["DownstairsNetwork", "NetworkStatistics"]


@dataclass(frozen=True)
class NetworkStatistics:
    blackholed: tuple[str, ...]
    connects: int
    tasks_waiting: int


class DownstairsNetwork:
    def __init__(self, *, latency: float = 0.05) -> None:
        self.latency = latency
        self._blackholed: set[str] = set()
        self._changed = trio.lowlevel.ParkingLot()
        self.connects = 0

    def blackhole(self, target: str) -> None:
        self._blackholed.add(target)

    def heal(self, target: str) -> None:
        self._blackholed.discard(target)
        self._changed.unpark_all()

    def reachable(self, target: str) -> bool:
        return target not in self._blackholed

    async def connect(self, target: str) -> None:
        """Return once connected to *target* (waits while it is black-holed)."""
        while target in self._blackholed:
            await self._changed.park()
        await trio.sleep(self.latency)
        if target in self._blackholed:  # black-holed mid-handshake: start over
            await self.connect(target)
            return
        self.connects += 1

    def statistics(self) -> NetworkStatistics:
        return NetworkStatistics(tuple(sorted(self._blackholed)), self.connects, len(self._changed))
