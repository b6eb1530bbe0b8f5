"""The transport seam: how the sled agent's actors reach Propolis and Nexus.

The runner, its monitor and the notifier never know whether the service on the other
side is an actor in the same Trio run (the deterministic world: ``sim.propolis_host``,
``sim.nexus``, under ``MockClock``) or a process on the other end of an HTTP connection
(``trioxide.actors.wire``: real sockets, real time). Both worlds implement the protocols
below; the actors' logic exists once.

Error contract (both worlds raise exactly these; anything else is a bug of the transport):

* ``NoInstance`` (``propolis.state_driver``): this Propolis has no instance any more - its
  process died or its VM is gone. The runner fails the VMM.
* ``RequestDenied`` (``propolis.request_queue``): Propolis refused the state change; the
  caller gets ``PropolisRefused``, the VMM is unaffected.
* ``PropolisUnavailable``: Propolis could not be reached or did not answer in time (a
  transport failure that does not prove the instance gone). Never raised in-process.
* ``NexusError`` and its subclasses (``sim.nexus``), with the HTTP status Nexus answered.

Cancellation is always honoured: cancelling a call to either protocol aborts it (an HTTP
request in flight is abandoned, its connection closed).
"""

from __future__ import annotations

from typing import Protocol

from .propolis.crucible import ReplaceResult, Volume
from .propolis.state_driver import PublishedState, Reboot, Start, Stop
from .sim.nexus import SledInfo
from .vmm_state import VmmRuntimeState

__all__ = [
    "NexusPort",
    "PropolisLauncher",
    "PropolisPort",
    "PropolisUnavailable",
    "StateRequest",
]

#: The state changes a sled agent asks Propolis for (propolis-server's
#: ``InstanceStateRequested``: ``Run`` | ``Stop`` | ``Reboot``).
StateRequest = Start | Stop | Reboot


class PropolisUnavailable(Exception):
    """Propolis could not be reached, or did not answer in time (HTTP 503 to a caller)."""

    status = 503

    def __init__(self, propolis_id: str, why: str) -> None:
        super().__init__(f"Propolis {propolis_id}: {why}")
        self.propolis_id = propolis_id
        self.why = why


class PropolisPort(Protocol):
    """One VMM's Propolis, as its runner and monitor see it (propolis-server's API)."""

    @property
    def propolis_id(self) -> str: ...

    @property
    def alive(self) -> bool:
        """False once this Propolis is known to be gone (it may be gone before we know)."""
        ...

    async def put_state(self, requested: StateRequest) -> None:
        """``PUT /instance/state``: queue a state change (returns once it is accepted)."""
        ...

    async def wait_for_state(self, gen: int) -> PublishedState:
        """``GET /instance/state-monitor``: the published state once its generation is
        at least *gen* (a long poll); ``NoInstance`` if that will never happen."""
        ...

    async def replace_vcr(self, backend_id: str, vcr: Volume) -> ReplaceResult:
        """``PUT /instance/disk/{backend_id}/vcr``: replace a Crucible backend's VCR."""
        ...


class PropolisLauncher(Protocol):
    """Where Propolis processes run (the simulated hypervisor): launch one per VMM
    (``instance_ensure`` after the zone booted) and kill it (the zone halts)."""

    async def launch(
        self, propolis_id: str, disks: dict[str, Volume], migration_target: bool
    ) -> PropolisPort:
        """Start *propolis_id*'s Propolis with its instance created (replacing a previous
        one of that id); any failure to do so raises."""
        ...

    async def kill(self, propolis_id: str) -> None:
        """Stop *propolis_id*'s Propolis (idempotent: nothing to kill is fine)."""
        ...


class NexusPort(Protocol):
    """Nexus's internal API, as a sled agent calls it. Every method raises a
    ``NexusError`` (with its HTTP ``status``) when Nexus refuses or cannot be reached."""

    async def put_vmm_state(self, propolis_id: str, runtime: VmmRuntimeState) -> bool:
        """``cpapi_vmms_put``: publish a VMM's state (a stale generation is ignored, not
        an error). True if Nexus applied it - in-process; over HTTP True means accepted,
        since upstream answers 204 either way."""
        ...

    async def get_sled(self, sled_id: str) -> SledInfo:
        """``sled_agent_get``: what Nexus knows about this sled (``NexusNotFound``: 404)."""
        ...

    async def put_sled(self, info: SledInfo) -> None:
        """``sled_agent_put``: tell Nexus about this sled (``NexusConflict``: 409)."""
        ...
