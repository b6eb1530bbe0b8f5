"""VMM state domain types (omicron issue #10425): the Nexus view, the sled-agent view, and
the conversions between them and from Propolis.

* ``VmmState`` (Nexus side): a kind plus, for ``FAILED``, a ``VmmFailureReason``.
* ``SledVmmState`` (sled-agent side): what the sled agent reports (no ``Creating``,
  ``SagaUnwound`` or reasons).
* ``VmmRuntimeState``: (state, gen, time_updated); ``transition(new, now)`` bumps the
  generation only when the state changes.
* ``from_propolis``: the runner's map from Propolis published states (spec §2).
"""

from __future__ import annotations

import enum

import msgspec

from .propolis.state_driver import VmState as PropolisState

__all__ = [
    "InstanceState",
    "SledVmmState",
    "VmmFailureReason",
    "VmmKind",
    "VmmRuntimeState",
    "VmmState",
    "from_propolis",
    "to_external",
    "to_nexus",
    "to_sled",
]


class VmmFailureReason(enum.Enum):
    PREHISTORIC = "prehistoric"
    FROM_SLED_AGENT = "from_sled_agent"
    NO_SUCH_INSTANCE = "no_such_instance"
    SLED_EXPUNGED = "sled_expunged"
    SLED_OFF = "sled_off"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    VmmFailureReason.PREHISTORIC: "the VMM failed before failure reasons were recorded",
    VmmFailureReason.FROM_SLED_AGENT: "the sled agent reported that the VMM failed",
    VmmFailureReason.NO_SUCH_INSTANCE: "the sled agent does not know this VMM (404)",
    VmmFailureReason.SLED_EXPUNGED: "the VMM's sled was expunged from the rack",
    VmmFailureReason.SLED_OFF: "the VMM's sled powered off",
}


class VmmKind(enum.Enum):
    """Nexus-side VMM states (without the failure reason)."""

    CREATING = "creating"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    REBOOTING = "rebooting"
    MIGRATING = "migrating"
    FAILED = "failed"
    DESTROYED = "destroyed"
    SAGA_UNWOUND = "saga_unwound"


class VmmState(msgspec.Struct, frozen=True, gc=False):
    """Nexus's VMM state: ``kind`` and, only for ``FAILED``, a ``reason``. (Not tracked
    by the cyclic GC: Nexus's history keeps one per update, and holding only enums it can
    be part of no cycle.)"""

    kind: VmmKind
    reason: VmmFailureReason | None = None

    def __post_init__(self) -> None:
        if (self.kind is VmmKind.FAILED) != (self.reason is not None):
            raise ValueError(f"a reason goes with FAILED and only with it: {self!r}")

    @classmethod
    def failed(cls, reason: VmmFailureReason) -> VmmState:
        return cls(VmmKind.FAILED, reason)

    def is_terminal(self) -> bool:
        return self.kind in (VmmKind.DESTROYED, VmmKind.FAILED)

    def is_failed(self) -> bool:
        return self.kind is VmmKind.FAILED

    def is_destroyable(self) -> bool:
        return self.kind in (VmmKind.DESTROYED, VmmKind.FAILED, VmmKind.SAGA_UNWOUND)

    def exists_on_sled(self) -> bool:
        return self.kind not in (VmmKind.CREATING, VmmKind.SAGA_UNWOUND, VmmKind.DESTROYED)

    def __str__(self) -> str:
        return self.kind.value if self.reason is None else f"failed({self.reason.value})"


class SledVmmState(enum.Enum):
    """What the sled agent reports for a VMM."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    REBOOTING = "rebooting"
    MIGRATING = "migrating"
    FAILED = "failed"
    DESTROYED = "destroyed"

    def is_terminal(self) -> bool:
        return self in (SledVmmState.FAILED, SledVmmState.DESTROYED)


class InstanceState(enum.Enum):
    """The external (API) instance state derived from a VMM state."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    REBOOTING = "rebooting"
    MIGRATING = "migrating"
    FAILED = "failed"
    DESTROYED = "destroyed"


class VmmRuntimeState(msgspec.Struct, frozen=True):
    state: SledVmmState
    gen: int
    time_updated: float

    def transition(self, new: SledVmmState, now: float) -> VmmRuntimeState:
        """The same state: an unchanged copy; another: ``gen + 1`` and ``time_updated``."""
        if new is self.state:
            return VmmRuntimeState(self.state, self.gen, self.time_updated)
        return VmmRuntimeState(new, self.gen + 1, now)

    def bump(self, now: float) -> VmmRuntimeState:
        """A new observation of the same state (the runner bumps gen per observation)."""
        return VmmRuntimeState(self.state, self.gen + 1, now)


def to_nexus(state: SledVmmState) -> VmmState:
    """Sled-agent state -> Nexus state (``Failed`` -> ``Failed(from_sled_agent)``)."""
    if state is SledVmmState.FAILED:
        return VmmState.failed(VmmFailureReason.FROM_SLED_AGENT)
    return VmmState(VmmKind(state.value))


def to_sled(state: VmmState) -> SledVmmState:
    """Nexus state -> sled-agent state (``Creating`` -> ``Starting``,
    ``SagaUnwound`` -> ``Destroyed``; the failure reason is dropped)."""
    if state.kind is VmmKind.CREATING:
        return SledVmmState.STARTING
    if state.kind is VmmKind.SAGA_UNWOUND:
        return SledVmmState.DESTROYED
    return SledVmmState(state.kind.value)


def to_external(state: VmmState) -> InstanceState:
    """Nexus VMM state -> external instance state."""
    kind = state.kind
    if kind in (VmmKind.CREATING, VmmKind.STARTING):
        return InstanceState.STARTING
    if kind in (VmmKind.STOPPED, VmmKind.SAGA_UNWOUND):
        return InstanceState.STOPPED
    return InstanceState(kind.value)


_FROM_PROPOLIS = {
    PropolisState.CREATING: SledVmmState.STARTING,
    PropolisState.STARTING: SledVmmState.STARTING,
    PropolisState.RUNNING: SledVmmState.RUNNING,
    PropolisState.STOPPING: SledVmmState.STOPPING,
    PropolisState.STOPPED: SledVmmState.STOPPING,  # logically stopped only at Destroyed
    PropolisState.REBOOTING: SledVmmState.REBOOTING,
    PropolisState.MIGRATING: SledVmmState.MIGRATING,
    PropolisState.FAILED: SledVmmState.FAILED,
    PropolisState.DESTROYED: SledVmmState.DESTROYED,
}


def from_propolis(state: PropolisState) -> SledVmmState:
    """The runner's map from a Propolis observation to the VMM state (spec §2)."""
    return _FROM_PROPOLIS[state]
