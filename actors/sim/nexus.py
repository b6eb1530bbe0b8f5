"""A simulated Nexus (the control plane), as seen by one or more sled agents.

Two tables, as upstream Nexus keeps them in CockroachDB:

* **Sleds** (``sled_agent_get`` / ``sled_agent_put`` upstream): a ``SledInfo`` per sled id.
  A PUT is accepted only if its generation is strictly greater than the stored one and the
  sled is not decommissioned (else ``NexusConflict``, 409); the first PUT of an unknown sled
  creates it, whatever its generation. A GET of an unknown sled raises ``NexusNotFound``
  (404).
* **VMMs**, keyed by propolis id (``cpapi_vmms_put`` upstream): the Nexus-side ``VmmState``
  plus the generation. ``put_vmm_state`` converts the sled-agent state with ``to_nexus`` and
  applies it only if ``gen > stored gen`` (a stale update is ignored, not an error); the
  first update of an unknown VMM creates it. ``note_sled_404`` is how Nexus reacts when a
  sled call answers 404 for a VMM it believes exists: a non-terminal VMM becomes
  ``Failed(no_such_instance)`` (spec §5) - which is why the runner must publish
  ``Destroyed`` *before* it deregisters.

Fault injection and timing, all on the Trio clock (nothing here reads wall time or object
ids, so a run is deterministic under ``MockClock``):

* ``latency`` seconds per call (default 0: the call is still a checkpoint). The outcome of
  a call is decided, logged and counted when it is *processed*, at the end of its latency.
* ``outage(until)`` / ``set_available(False)``: every async call raises
  ``NexusUnavailable`` (503) while ``now < until`` or while unavailable.
  ``set_available(True)`` also ends a timed outage.
* ``inject_put_conflict(n)``: the next *n* sled PUTs raise ``NexusConflict`` (not applied).
* ``inject_errors(n, status=500, op=None)``: the next *n* calls (of *op*, if given) that
  get past an outage fail with that 5xx status (``nexus_error``: 503 is
  ``NexusUnavailable``, any other ``NexusStatusError``), before any other rule; nothing is
  applied. (The wire Nexus's fault endpoints use it; the deterministic suite does not.)

Observability: ``request_log`` (one ``NexusRequest(t, op, target, generation)`` per async
call, whatever its outcome; ``generation`` is ``None`` for a GET), ``vmm_history``
(every applied VMM update, including ``note_sled_404``), ``statistics()``.

Synchronous helpers (``insert_sled``, ``decommission``, ``vmm_state``, ``note_sled_404``)
model Nexus's own side: they are never subject to latency or outages and are not logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import trio

from ..vmm_state import VmmFailureReason, VmmKind, VmmRuntimeState, VmmState, to_nexus

__all__ = [
    "OPS",
    "OP_GET_SLED",
    "OP_PUT_SLED",
    "OP_PUT_VMM",
    "NexusConflict",
    "NexusError",
    "NexusNotFound",
    "NexusRequest",
    "NexusStatistics",
    "NexusStatusError",
    "NexusUnavailable",
    "NexusVmm",
    "SimNexus",
    "SledInfo",
    "nexus_error",
]

OP_GET_SLED = "get_sled"
OP_PUT_SLED = "put_sled"
OP_PUT_VMM = "put_vmm"
OPS = (OP_GET_SLED, OP_PUT_SLED, OP_PUT_VMM)


class SledInfo(msgspec.Struct, frozen=True):
    """What Nexus knows about a sled (upstream ``SledAgentInfo``)."""

    sled_id: str
    address: str
    role: str  # "gimlet" | "scrimlet"
    usable_threads: int
    usable_ram_bytes: int
    reservoir_size_bytes: int
    generation: int
    decommissioned: bool = False


class NexusVmm(msgspec.Struct, frozen=True, gc=False):
    """Nexus's record of one VMM: its state, generation and when it was last applied."""

    state: VmmState
    gen: int
    time_updated: float


class NexusRequest(msgspec.Struct, frozen=True, gc=False):
    """One async call as Nexus processed it. (Not tracked by the cyclic GC: a run keeps
    tens of thousands, and holding only strings and numbers it can be part of no
    cycle.)"""

    t: float
    op: str  # "get_sled" | "put_sled" | "put_vmm"
    target: str  # sled id or propolis id
    generation: int | None  # None for a GET


@dataclass(frozen=True)
class NexusStatistics:
    get_sled: int
    put_sled: int
    put_vmm: int
    unavailable: int  # calls refused with 503
    not_found: int  # GETs answered 404
    conflicts: int  # sled PUTs refused with 409 (injected or by the rule)
    stale_vmm: int  # VMM updates ignored by the generation rule
    marked_failed: int  # VMMs set Failed(no_such_instance) by note_sled_404
    injected_errors: int = 0  # calls failed with an injected 5xx (``inject_errors``)


class NexusError(Exception):
    """An error answer from Nexus; ``status`` is its HTTP status code."""

    status = 500


class NexusNotFound(NexusError):
    """404: no such sled."""

    status = 404


class NexusConflict(NexusError):
    """409: a sled PUT with a generation not newer than the stored one, or to a
    decommissioned sled (or an injected conflict)."""

    status = 409


class NexusUnavailable(NexusError):
    """503: Nexus is in an outage."""

    status = 503


class NexusStatusError(NexusError):
    """An error answer with any other status (a 5xx other than 503, or an unexpected
    4xx from a Nexus across the wire): ``status`` is the instance's own."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_BY_STATUS: dict[int, type[NexusError]] = {
    NexusNotFound.status: NexusNotFound,
    NexusConflict.status: NexusConflict,
    NexusUnavailable.status: NexusUnavailable,
}


def nexus_error(status: int, message: str) -> NexusError:
    """The ``NexusError`` for an answer with HTTP *status*: 404 ``NexusNotFound``, 409
    ``NexusConflict``, 503 ``NexusUnavailable``, any other ``NexusStatusError``."""
    cls = _BY_STATUS.get(status)
    return cls(message) if cls is not None else NexusStatusError(status, message)


class SimNexus:
    """A deterministic, in-memory Nexus with injectable latency, outages and conflicts."""

    def __init__(self, *, latency: float = 0.0) -> None:
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency!r}")
        self.latency = latency
        self._sleds: dict[str, SledInfo] = {}
        self._vmms: dict[str, NexusVmm] = {}
        self.vmm_history: dict[str, list[tuple[float, VmmState, int]]] = {}
        #: The VMM ids whose history holds a ``Failed`` state (so that a check of every
        #: failed VMM costs what there is to check, not a walk of every VMM ever seen).
        self.failed_ids: set[str] = set()
        self.request_log: list[NexusRequest] = []
        self._available = True
        self._down_until = float("-inf")
        self._put_conflicts = 0
        #: Injected error answers, per op (``None``: any op), in injection order.
        self._errors: dict[str | None, list[int]] = {}
        self._get_sled = 0
        self._put_sled = 0
        self._put_vmm = 0
        self._unavailable = 0
        self._not_found = 0
        self._conflicts = 0
        self._stale_vmm = 0
        self._marked_failed = 0
        self._injected_errors = 0

    # -- fault injection -----------------------------------------------------------------

    def outage(self, until: float) -> None:
        """Refuse every async call with ``NexusUnavailable`` until Trio time *until*."""
        self._down_until = until

    def set_available(self, available: bool) -> None:
        """``False``: refuse every call until ``set_available(True)``, which also ends a
        timed outage."""
        self._available = available
        if available:
            self._down_until = float("-inf")

    @property
    def available(self) -> bool:
        return self._available and trio.current_time() >= self._down_until

    def inject_put_conflict(self, n: int = 1) -> None:
        """The next *n* sled PUTs (that get past an outage) raise ``NexusConflict``."""
        self._put_conflicts += n

    def inject_errors(self, n: int = 1, *, status: int = 500, op: str | None = None) -> None:
        """The next *n* calls (only calls of *op*, if given) that get past an outage fail
        with *status* (500..599) and change nothing."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        if not 500 <= status <= 599:
            raise ValueError(f"status must be a 5xx, got {status!r}")
        if op is not None and op not in OPS:
            raise ValueError(f"op must be one of {OPS} or None, got {op!r}")
        self._errors.setdefault(op, []).extend([status] * n)

    def pending_faults(self) -> dict[str, int]:
        """Injected faults not yet consumed: ``conflicts`` and ``errors`` (all ops)."""
        return {
            "conflicts": self._put_conflicts,
            "errors": sum(len(q) for q in self._errors.values()),
        }

    # -- sleds ---------------------------------------------------------------------------

    async def get_sled(self, sled_id: str) -> SledInfo:
        """The stored record; ``NexusNotFound`` if unknown, ``NexusUnavailable`` in an outage."""
        await self._arrive(OP_GET_SLED, sled_id, None)
        self._get_sled += 1
        self._check_available()
        self._check_injected(OP_GET_SLED, sled_id)
        info = self._sleds.get(sled_id)
        if info is None:
            self._not_found += 1
            raise NexusNotFound(f"sled {sled_id} not found")
        return info

    async def put_sled(self, info: SledInfo) -> None:
        """Upsert: create an unknown sled; replace a known one only if
        ``info.generation > stored.generation`` and it is not decommissioned, else raise
        ``NexusConflict``."""
        await self._arrive(OP_PUT_SLED, info.sled_id, info.generation)
        self._put_sled += 1
        self._check_available()
        self._check_injected(OP_PUT_SLED, info.sled_id)
        if self._put_conflicts > 0:
            self._put_conflicts -= 1
            self._conflicts += 1
            raise NexusConflict(f"sled {info.sled_id}: injected conflict")
        stored = self._sleds.get(info.sled_id)
        if stored is not None:
            if stored.decommissioned:
                self._conflicts += 1
                raise NexusConflict(f"sled {info.sled_id} is decommissioned")
            if info.generation <= stored.generation:
                self._conflicts += 1
                raise NexusConflict(
                    f"sled {info.sled_id}: generation {info.generation} is not newer than "
                    f"{stored.generation}"
                )
        self._sleds[info.sled_id] = info

    def insert_sled(self, info: SledInfo) -> None:
        """Test setup: store *info* as is (no rule, no latency, not logged)."""
        self._sleds[info.sled_id] = info

    def sled(self, sled_id: str) -> SledInfo | None:
        """The stored record, synchronously (for assertions)."""
        return self._sleds.get(sled_id)

    def sleds(self) -> dict[str, SledInfo]:
        """Every stored sled record, by sled id (a copy)."""
        return dict(self._sleds)

    def decommission(self, sled_id: str) -> None:
        """Mark the sled decommissioned (generation unchanged): later PUTs conflict and a
        GET shows it. ``NexusNotFound`` if unknown."""
        stored = self._sleds.get(sled_id)
        if stored is None:
            raise NexusNotFound(f"sled {sled_id} not found")
        self._sleds[sled_id] = msgspec.structs.replace(stored, decommissioned=True)

    # -- VMMs ----------------------------------------------------------------------------

    async def put_vmm_state(self, propolis_id: str, runtime: VmmRuntimeState) -> bool:
        """Apply the sled agent's state if ``runtime.gen`` is newer than the stored
        generation (or the VMM is new): returns ``True``; a stale update is ignored and
        returns ``False``. Raises ``NexusUnavailable`` in an outage."""
        await self._arrive(OP_PUT_VMM, propolis_id, runtime.gen)
        self._put_vmm += 1
        self._check_available()
        self._check_injected(OP_PUT_VMM, propolis_id)
        stored = self._vmms.get(propolis_id)
        if stored is not None and runtime.gen <= stored.gen:
            self._stale_vmm += 1
            return False
        self._apply_vmm(propolis_id, to_nexus(runtime.state), runtime.gen)
        return True

    def vmm_state(self, propolis_id: str) -> VmmState | None:
        """Nexus's current state of the VMM, ``None`` if it never heard of it."""
        record = self._vmms.get(propolis_id)
        return None if record is None else record.state

    def vmm(self, propolis_id: str) -> NexusVmm | None:
        """Nexus's full record of the VMM (state, gen, time_updated)."""
        return self._vmms.get(propolis_id)

    def note_sled_404(self, propolis_id: str) -> bool:
        """A sled call answered 404 for *propolis_id*. If Nexus knows the VMM and its state
        is not terminal, it becomes ``Failed(no_such_instance)`` with ``gen + 1`` (so a
        sled update must be newer than that to override it) and this returns ``True``;
        an unknown or terminal VMM is left alone (``False``)."""
        stored = self._vmms.get(propolis_id)
        if stored is None or stored.state.is_terminal():
            return False
        self._marked_failed += 1
        self._apply_vmm(
            propolis_id, VmmState.failed(VmmFailureReason.NO_SUCH_INSTANCE), stored.gen + 1
        )
        return True

    def _apply_vmm(self, propolis_id: str, state: VmmState, gen: int) -> None:
        now = trio.current_time()
        self._vmms[propolis_id] = NexusVmm(state, gen, now)
        self.vmm_history.setdefault(propolis_id, []).append((now, state, gen))
        if state.kind is VmmKind.FAILED:
            self.failed_ids.add(propolis_id)

    # -- common --------------------------------------------------------------------------

    async def _arrive(self, op: str, target: str, generation: int | None) -> None:
        await trio.sleep(self.latency)
        self.request_log.append(NexusRequest(trio.current_time(), op, target, generation))

    def _check_available(self) -> None:
        if not self.available:
            self._unavailable += 1
            raise NexusUnavailable("Nexus is unavailable (503)")

    def _check_injected(self, op: str, target: str) -> None:
        if not self._errors:
            return
        for key in (op, None):
            queue = self._errors.get(key)
            if queue:
                status = queue.pop(0)
                if not queue:
                    del self._errors[key]
                self._injected_errors += 1
                raise nexus_error(status, f"{op} {target}: injected error ({status})")

    def requests(self, op: str | None = None) -> list[NexusRequest]:
        """The request log, optionally only the calls of one *op*."""
        return [r for r in self.request_log if op is None or r.op == op]

    def statistics(self) -> NexusStatistics:
        return NexusStatistics(
            get_sled=self._get_sled,
            put_sled=self._put_sled,
            put_vmm=self._put_vmm,
            unavailable=self._unavailable,
            not_found=self._not_found,
            conflicts=self._conflicts,
            stale_vmm=self._stale_vmm,
            marked_failed=self._marked_failed,
            injected_errors=self._injected_errors,
        )
