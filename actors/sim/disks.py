"""The simulation's disks: one Crucible disk per VMM, its region on three downstairs
targets named after the VMM (``<vmm>-ds-a``, ``-b``, ``-c``), so a scenario can black-hole
one target of one VMM (``DownstairsNetwork.blackhole``) and fix it with a VCR naming
another (*middle*, at a higher region generation)."""

from __future__ import annotations

from ..propolis.crucible import Region, Volume

__all__ = ["vmm_disk"]


def vmm_disk(vmm: str, gen: int = 1, middle: str | None = None) -> dict[str, Volume]:
    """``{"disk0": <VCR>}`` for VMM *vmm*: region generation *gen*, its middle target
    *middle* (default ``<vmm>-ds-b``)."""
    targets = (f"{vmm}-ds-a", middle or f"{vmm}-ds-b", f"{vmm}-ds-c")
    return {"disk0": Volume(f"vol-{vmm}", 512, (Region(f"reg-{vmm}", gen, targets),))}
