"""Wire shapes shared by the rack's APIs (spec/sled-agent.md §9: facts from omicron's
OpenAPI documents; the shapes, not upstream's code).

``SledVmmState`` travels from the sled agent to its callers and to Nexus:
``{"vmm_state": {"gen": u64, "state": "running", "time_updated": RFC 3339},
"migration_in": ..., "migration_out": ...}``. Our ``VmmRuntimeState.time_updated`` is a
Trio clock reading; on the wire it is a UTC time, converted with the process's clock
anchor (``wall_time``/``clock_time``), so it is a real date in any process. The anchor
(wall-clock time minus Trio time) is taken once per Trio run, so the same reading always
converts to the same date.
"""

from __future__ import annotations

import datetime as dt
import time

import msgspec
import trio

from ..vmm_state import SledVmmState, VmmRuntimeState

__all__ = [
    "MigrationRuntimeState",
    "SledVmmStateBody",
    "VmmRuntimeStateBody",
    "clock_time",
    "from_wire",
    "to_wire",
    "wall_time",
]


class VmmRuntimeStateBody(msgspec.Struct, frozen=True):
    """Upstream ``VmmRuntimeState``."""

    gen: int
    state: SledVmmState
    time_updated: dt.datetime


class MigrationRuntimeState(msgspec.Struct, frozen=True):
    """Upstream ``MigrationRuntimeState`` (the subset we track)."""

    migration_id: str
    state: str  # pending | in_progress | completed | failed
    gen: int
    time_updated: dt.datetime


class SledVmmStateBody(msgspec.Struct, frozen=True):
    """Upstream ``SledVmmState``."""

    vmm_state: VmmRuntimeStateBody
    migration_in: MigrationRuntimeState | None = None
    migration_out: MigrationRuntimeState | None = None


_anchors: dict[trio.lowlevel.TrioToken, float] = {}


def _anchor() -> float:
    """Wall-clock seconds minus Trio clock seconds, fixed for the running Trio run."""
    token = trio.lowlevel.current_trio_token()
    anchor = _anchors.get(token)
    if anchor is None:
        if len(_anchors) > 16:  # runs that ended (tests): forget them
            _anchors.clear()
        anchor = _anchors[token] = time.time() - trio.current_time()
    return anchor


def wall_time(t: float) -> dt.datetime:
    """The UTC time of Trio clock reading *t* (in the running Trio run)."""
    return dt.datetime.fromtimestamp(_anchor() + t, dt.UTC)


def clock_time(when: dt.datetime) -> float:
    """The Trio clock reading of UTC time *when* (the inverse of ``wall_time``)."""
    return when.timestamp() - _anchor()


def to_wire(state: VmmRuntimeState) -> SledVmmStateBody:
    return SledVmmStateBody(
        VmmRuntimeStateBody(state.gen, state.state, wall_time(state.time_updated))
    )


def from_wire(body: SledVmmStateBody) -> VmmRuntimeState:
    vmm = body.vmm_state
    return VmmRuntimeState(vmm.state, vmm.gen, clock_time(vmm.time_updated))
