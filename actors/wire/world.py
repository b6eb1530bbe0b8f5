"""The simulated world of a sled agent process, with its durations scaled for real time.

In the deterministic suite the simulated hardware takes its nominal times on the
``MockClock`` (a zone install of seconds, a zone bundle of half an hour) at no cost. A
rack process runs on the real clock, so ``ScaledWorld(time_scale)`` multiplies every
simulated duration - zone operations, the Propolis service wait, VM reset/halt/migration,
Crucible connection latency, reservoir sizing, the Propolis kill, the runner's stop grace
and Nexus publishing backoff - by *time_scale*. The default, ``DEFAULT_TIME_SCALE``, starts
a VMM in a few tens of milliseconds (create + install + boot + service wait = 2.3 s
nominal, 23 ms scaled).

Guarantees: the world is built from the same classes the deterministic tests use (only
their timings differ); a time scale must be finite and > 0 (``ValueError`` naming it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..instance_runner import RunnerConfig
from ..sim.hypervisor import SimHypervisor
from ..sim.network import DownstairsNetwork
from ..sim.nexus import SimNexus
from ..sim.vm import SimulatedVm
from ..sim.zones import SimZones
from ..sled_agent import SledWorld

__all__ = ["DEFAULT_TIME_SCALE", "NOMINAL", "ScaledWorld"]

DEFAULT_TIME_SCALE = 0.01

#: The nominal durations (seconds of simulated time) that the scale multiplies. The zone
#: times are ``SledWorld``'s (install and boot 1 s) and ``SimZones``' defaults; the others
#: the defaults of their classes.
NOMINAL: dict[str, float] = {
    "zone_create": 0.1,
    "zone_install": 1.0,
    "zone_boot": 1.0,
    "zone_halt": 1.0,
    "zone_remove": 1.0,
    "zone_bundle": 1800.0,
    "vm_reset": 0.5,
    "vm_halt": 0.1,
    "vm_migrate": 2.0,
    "downstairs_latency": 0.05,
    "reservoir_seconds_per_gib": 1.0,
    "propolis_kill": 0.5,
    "stop_grace": 600.0,
    "service_wait": 0.2,
    "reservoir_timeout": 300.0,
    "publish_initial": 0.25,
    "publish_max": 180.0,
    "notifier_tick": 2.0,
}


@dataclass(frozen=True)
class ScaledWorld:
    """Every simulated duration of one sled, times *time_scale*."""

    time_scale: float = DEFAULT_TIME_SCALE
    durations: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        scale = self.time_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise ValueError(f"time scale must be a number, got {scale!r}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"time scale must be finite and > 0, got {scale!r}")
        object.__setattr__(self, "durations", {k: v * scale for k, v in NOMINAL.items()})

    def world(self, nexus: SimNexus | None = None) -> SledWorld:
        """A fresh ``SledWorld`` (with *nexus*, or a new in-process ``SimNexus``)."""
        d = self.durations
        return SledWorld(
            zones=SimZones(
                create_time=d["zone_create"],
                install_time=d["zone_install"],
                boot_time=d["zone_boot"],
                halt_time=d["zone_halt"],
                remove_time=d["zone_remove"],
                bundle_time=d["zone_bundle"],
            ),
            nexus=SimNexus() if nexus is None else nexus,
            hypervisor=SimHypervisor(seconds_per_gib=d["reservoir_seconds_per_gib"]),
            network=DownstairsNetwork(latency=d["downstairs_latency"]),
            vm_template=SimulatedVm(
                reset_time=d["vm_reset"], halt_time=d["vm_halt"], migrate_time=d["vm_migrate"]
            ),
        )

    def runner(self) -> RunnerConfig:
        """The runner's timings, scaled."""
        d = self.durations
        return RunnerConfig(
            stop_grace=d["stop_grace"],
            service_wait=d["service_wait"],
            reservoir_timeout=d["reservoir_timeout"],
            publish_initial=d["publish_initial"],
            publish_max=d["publish_max"],
        )

    @property
    def propolis_kill(self) -> float:
        """How long an in-process Propolis takes to die (``PropolisHost(kill_time=)``)."""
        return self.durations["propolis_kill"]
