"""Nexus's internal API over HTTP, the server: ``NexusServer``, an ``App`` over a
``SimNexus``.

**The internal API** (omicron ``openapi/nexus-internal/nexus-internal-1.0.0-6d8ade.json``;
spec/sled-agent.md §9), the operations a sled agent calls:

* ``PUT /vmms/{propolis_id}`` (``cpapi_instances_put``): body ``SledVmmState`` -> 204. A
  stale generation is ignored, as upstream does (still 204).
* ``GET /sled-agents/{sled_id}`` (``sled_agent_get``) -> 200 ``SledAgentInfo``; 404
  ``ObjectNotFound`` for an unknown sled.
* ``POST /sled-agents/{sled_id}`` (``sled_agent_put``): body ``SledAgentInfo`` -> 204;
  409 ``Conflict`` when the generation is not newer than the stored one or the sled is
  decommissioned. ``decommissioned`` in the body has no effect (upstream's schema says
  so): only Nexus sets it (here: the admin endpoint).

Errors carry omicron's ``error_code``s (``common/src/api/external/error.rs``):
``ObjectNotFound`` 404, ``Conflict`` 409, ``ServiceNotAvailable`` 503, ``Internal`` 500;
a bad path parameter is 400 ``INVALID_REQUEST`` naming it (as the foundation names a bad
body).

**The simulation's admin endpoints** (``/sim/...``, ours; never subject to outages):
outage on/off (``PUT /sim/outage``: every internal call answers 503), injected sled-PUT
conflicts (``POST /sim/conflicts``) and injected 5xx answers (``POST /sim/errors``), a
sled's decommissioning, one VMM's record (``GET /sim/vmms/{id}``), the summary a rack run
reads at its end (``GET /sim/summary``: the VMM table with histories, the sleds, the
request log counts, the HTTP answers), and the Nexus-side VCR replacement
(``POST /sim/vmms/{id}/disks/{disk}/vcr``): Nexus calls that VMM's Propolis directly, as
upstream's region replacement does (propolis ``instance_issue_crucible_vcr_request``).

**Server guarantees.** Every internal call is an ask to one ``NexusActor`` (so the Nexus
process's trace shows each call being handled) with a timeout: an actor that does not
answer in ``ask_timeout`` seconds is a 503, never a hang. Bad input is a 400 naming the
value, never a 500.

The clients (``HttpNexus``, ``NexusAdmin``) are in ``nexus_client.py``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal, Protocol, TypeVar

import msgspec
import trio

from trioxide.runtime import Actor, ActorGone, ActorRef, AskTimeout, Runtime

from ..errors import SledAgentError
from ..ports import PropolisUnavailable
from ..propolis.crucible import ReplaceRequestInvalid, ReplaceResult, Volume
from ..propolis.request_queue import RequestDenied
from ..propolis.state_driver import BackendNotFound, Gone, NoInstance
from ..sim.nexus import (
    OPS,
    NexusError,
    NexusStatistics,
    SimNexus,
    SledInfo,
)
from ..sled_agent import ID_MAX, PROPOLIS_ID_MAX, check_generation, check_id, check_vcr
from ..vmm_state import VmmRuntimeState, VmmState
from .asgi import App, HttpError, Request, Route
from .types import SledVmmStateBody, from_wire, wall_time

__all__ = [
    "ASK_TIMEOUT",
    "ConflictsBody",
    "ErrorsBody",
    "FaultsState",
    "GetSled",
    "HistoryEntry",
    "NexusActor",
    "NexusServer",
    "NexusSummary",
    "Op",
    "OutageBody",
    "PutSled",
    "PutVmm",
    "SledAgentInfoBody",
    "SledRecord",
    "VcrReplacer",
    "VcrRequestBody",
    "VcrResponse",
    "VmmRecord",
    "sled_from_wire",
    "sled_to_wire",
]

T = TypeVar("T")

#: Seconds an HTTP handler waits for the Nexus actor before answering 503.
ASK_TIMEOUT = 5.0

U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgspec decodes ints up to 2**64 - 1
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]
Status5xx = Annotated[int, msgspec.Meta(ge=500, le=599)]
Op = Literal["get_sled", "put_sled", "put_vmm"]

_CODES = {
    400: "INVALID_REQUEST",
    404: "ObjectNotFound",
    409: "Conflict",
    500: "Internal",
    503: "ServiceNotAvailable",
}

# -- wire shapes -------------------------------------------------------------------------


class SledAgentInfoBody(msgspec.Struct, frozen=True):
    """Upstream ``SledAgentInfo``, the fields we model (``baseboard``, ``cpu_family`` and
    ``repo_depot_port`` are left out: nothing here reads them)."""

    sa_address: str
    role: Literal["gimlet", "scrimlet"]
    usable_hardware_threads: U32
    usable_physical_ram: U64
    reservoir_size: U64
    generation: U64
    decommissioned: bool


def sled_to_wire(info: SledInfo) -> SledAgentInfoBody:
    role: Literal["gimlet", "scrimlet"] = "scrimlet" if info.role == "scrimlet" else "gimlet"
    return SledAgentInfoBody(
        sa_address=info.address,
        role=role,
        usable_hardware_threads=info.usable_threads,
        usable_physical_ram=info.usable_ram_bytes,
        reservoir_size=info.reservoir_size_bytes,
        generation=info.generation,
        decommissioned=info.decommissioned,
    )


def sled_from_wire(sled_id: str, body: SledAgentInfoBody) -> SledInfo:
    return SledInfo(
        sled_id=sled_id,
        address=body.sa_address,
        role=body.role,
        usable_threads=body.usable_hardware_threads,
        usable_ram_bytes=body.usable_physical_ram,
        reservoir_size_bytes=body.reservoir_size,
        generation=body.generation,
        decommissioned=body.decommissioned,
    )


class OutageBody(msgspec.Struct, frozen=True):
    """``active``: every internal call answers 503 until turned off, or for ``seconds``."""

    active: bool
    seconds: Seconds | None = None


class ConflictsBody(msgspec.Struct, frozen=True):
    """The next ``count`` sled PUTs answer 409."""

    count: Count


class ErrorsBody(msgspec.Struct, frozen=True):
    """The next ``count`` internal calls (of ``op``, if given) answer ``status``."""

    count: Count
    status: Status5xx = 500
    op: Op | None = None


class FaultsState(msgspec.Struct, frozen=True):
    """The faults in force: whether Nexus answers, and injections not yet consumed."""

    available: bool
    pending_conflicts: int
    pending_errors: int


class VcrRequestBody(msgspec.Struct, frozen=True):
    """The new VCR for one Crucible backend of a VMM's Propolis."""

    vcr: Volume


class VcrResponse(msgspec.Struct, frozen=True):
    """What Propolis answered (upstream ``ReplaceResult``)."""

    result: ReplaceResult


class HistoryEntry(msgspec.Struct, frozen=True):
    time: dt.datetime
    state: VmmState
    gen: int


class VmmRecord(msgspec.Struct, frozen=True):
    """Nexus's record of one VMM and every update it applied, oldest first."""

    propolis_id: str
    state: VmmState
    gen: int
    time_updated: dt.datetime
    history: list[HistoryEntry]


class SledRecord(msgspec.Struct, frozen=True):
    sled_id: str
    info: SledAgentInfoBody


class NexusSummary(msgspec.Struct, frozen=True):
    """Everything a rack run reports of Nexus at its end (lists sorted by id)."""

    vmms: list[VmmRecord]
    sleds: list[SledRecord]
    requests: dict[str, int]  # the request log's count per op
    statistics: dict[str, int]  # SimNexus.statistics()
    http_requests: int
    http_answered: dict[int, int]  # status -> count
    vcr_replacements: dict[str, int]  # outcome -> count
    faults: FaultsState


# -- the actor ---------------------------------------------------------------------------


class PutVmm(msgspec.Struct, frozen=True):
    """Ask: ``cpapi_instances_put``; the reply is whether the update was applied."""

    propolis_id: str
    runtime: VmmRuntimeState


class GetSled(msgspec.Struct, frozen=True):
    """Ask: ``sled_agent_get``."""

    sled_id: str


class PutSled(msgspec.Struct, frozen=True):
    """Ask: ``sled_agent_put``."""

    info: SledInfo


class NexusActor(Actor):
    """Nexus's side of every internal call: applies it to the ``SimNexus``, one call at a
    time (a ``NexusError`` is the asker's answer; the actor keeps running)."""

    def __init__(self, nexus: SimNexus) -> None:
        self.nexus = nexus

    async def handle(self, msg: PutVmm | GetSled | PutSled) -> bool | SledInfo | None:
        match msg:
            case PutVmm(propolis_id, runtime):
                return await self.nexus.put_vmm_state(propolis_id, runtime)
            case GetSled(sled_id):
                return await self.nexus.get_sled(sled_id)
            case PutSled(info):
                await self.nexus.put_sled(info)
        return None


# -- the server --------------------------------------------------------------------------


class VcrReplacer(Protocol):
    """How Nexus reaches a VMM's Propolis to replace a Crucible backend's VCR
    (``propolis_client.HttpPropolisDirectory`` over the wire). Raises the ``PropolisPort``
    errors: ``NoInstance``, ``Gone``, ``BackendNotFound``, ``ReplaceRequestInvalid``,
    ``RequestDenied``, ``PropolisUnavailable``."""

    async def replace_vcr(self, propolis_id: str, backend_id: str, vcr: Volume) -> ReplaceResult:
        """Propolis's ``PUT /instance/disk/{backend_id}/vcr`` for *propolis_id*."""
        ...


def _param(request: Request, name: str, *, max_len: int = ID_MAX) -> str:
    """Path parameter *name*, checked as an id (a 400 naming it and its value if not)."""
    return _checked(check_id, name, request.params[name], max_len=max_len)


def _checked(check: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``check(*args, **kwargs)``; its ``InvalidRequest`` (naming the field and the
    value) becomes a 400 with the same code and detail."""
    try:
        return check(*args, **kwargs)
    except SledAgentError as exc:
        raise HttpError(exc.status, exc.code, exc.detail) from None


class NexusServer:
    """The Nexus internal API (and the admin endpoints) over *nexus*, as an ``App``.

    ``await NexusServer.start(rt, nexus, vcr=...)`` spawns the ``NexusActor`` in *rt*;
    serve ``server.app`` with ``serve_app``. Without *vcr* the VCR endpoint answers 503
    (Nexus knows no hypervisor)."""

    def __init__(
        self,
        nexus: SimNexus,
        actor: ActorRef[NexusActor],
        *,
        vcr: VcrReplacer | None = None,
        ask_timeout: float = ASK_TIMEOUT,
    ) -> None:
        if not (ask_timeout > 0 and math.isfinite(ask_timeout)):
            raise ValueError(f"ask_timeout must be > 0 and finite, got {ask_timeout!r}")
        self.nexus = nexus
        self.actor = actor
        self.vcr = vcr
        self.ask_timeout = ask_timeout
        self.vcr_outcomes: dict[str, int] = {}
        self.app = App(
            "Nexus internal API (simulated)",
            "1.0.0",
            self._routes(),
            error_map=_error_map,
        )

    @classmethod
    async def start(
        cls,
        rt: Runtime,
        nexus: SimNexus,
        *,
        vcr: VcrReplacer | None = None,
        ask_timeout: float = ASK_TIMEOUT,
        name: str = "nexus",
    ) -> NexusServer:
        ref: ActorRef[NexusActor] = await rt.spawn(NexusActor, nexus, name=name)
        return cls(nexus, ref, vcr=vcr, ask_timeout=ask_timeout)

    def _routes(self) -> list[Route]:
        return [
            Route("PUT", "/vmms/{propolis_id}", "cpapi_instances_put", self._put_vmm,
                  body=SledVmmStateBody, summary="Report updated state for a VMM."),
            Route("GET", "/sled-agents/{sled_id}", "sled_agent_get", self._get_sled,
                  response=SledAgentInfoBody,
                  summary="Return information about the given sled agent"),
            Route("POST", "/sled-agents/{sled_id}", "sled_agent_put", self._put_sled,
                  body=SledAgentInfoBody,
                  summary="Report that the sled agent for the specified sled has come online."),
            Route("PUT", "/sim/outage", "sim_outage", self._outage, body=OutageBody,
                  response=FaultsState, summary="Start or end an outage (503 on every call)."),
            Route("POST", "/sim/conflicts", "sim_inject_conflicts", self._conflicts,
                  body=ConflictsBody, response=FaultsState,
                  summary="The next N sled PUTs answer 409."),
            Route("POST", "/sim/errors", "sim_inject_errors", self._errors, body=ErrorsBody,
                  response=FaultsState, summary="The next N internal calls answer a 5xx."),
            Route("POST", "/sim/sleds/{sled_id}/decommission", "sim_sled_decommission",
                  self._decommission, summary="Mark a sled decommissioned."),
            Route("GET", "/sim/vmms/{propolis_id}", "sim_vmm_get", self._get_vmm,
                  response=VmmRecord, summary="Nexus's record of one VMM, with its history."),
            Route("GET", "/sim/summary", "sim_summary", self._summary, response=NexusSummary,
                  summary="The VMM table, the sleds and the request counts."),
            Route("POST", "/sim/vmms/{propolis_id}/disks/{disk_id}/vcr", "sim_vcr_replace",
                  self._replace_vcr, body=VcrRequestBody, response=VcrResponse,
                  summary="Replace a Crucible backend's VCR through the VMM's Propolis."),
        ]  # fmt: skip

    async def _ask(self, msg: PutVmm | GetSled | PutSled) -> Any:
        try:
            return await self.actor.ask(msg, timeout=self.ask_timeout)
        except AskTimeout:
            raise HttpError(
                503, _CODES[503], f"Nexus did not answer within {self.ask_timeout} s"
            ) from None
        except ActorGone:
            raise HttpError(503, _CODES[503], "Nexus is shutting down") from None

    # -- the internal API -------------------------------------------------------------

    async def _put_vmm(self, request: Request) -> None:
        pid = _param(request, "propolis_id", max_len=PROPOLIS_ID_MAX)
        body: SledVmmStateBody = request.body
        _checked(check_generation, "vmm_state.gen", body.vmm_state.gen)
        await self._ask(PutVmm(pid, from_wire(body)))

    async def _get_sled(self, request: Request) -> SledAgentInfoBody:
        sled_id = _param(request, "sled_id")
        info: SledInfo = await self._ask(GetSled(sled_id))
        return sled_to_wire(info)

    async def _put_sled(self, request: Request) -> None:
        sled_id = _param(request, "sled_id")
        body: SledAgentInfoBody = request.body
        # Upstream: "Setting it on an upsert from sled-agent has no effect."
        info = sled_from_wire(sled_id, msgspec.structs.replace(body, decommissioned=False))
        await self._ask(PutSled(info))

    # -- the admin endpoints ----------------------------------------------------------

    def faults(self) -> FaultsState:
        pending = self.nexus.pending_faults()
        return FaultsState(self.nexus.available, pending["conflicts"], pending["errors"])

    async def _outage(self, request: Request) -> FaultsState:
        body: OutageBody = request.body
        if not body.active:
            self.nexus.set_available(True)
        elif body.seconds is None:
            self.nexus.set_available(False)
        else:
            self.nexus.outage(trio.current_time() + body.seconds)
        return self.faults()

    async def _conflicts(self, request: Request) -> FaultsState:
        body: ConflictsBody = request.body
        self.nexus.inject_put_conflict(body.count)
        return self.faults()

    async def _errors(self, request: Request) -> FaultsState:
        body: ErrorsBody = request.body
        self.nexus.inject_errors(body.count, status=body.status, op=body.op)
        return self.faults()

    async def _decommission(self, request: Request) -> None:
        sled_id = _param(request, "sled_id")
        self.nexus.decommission(sled_id)

    async def _get_vmm(self, request: Request) -> VmmRecord:
        pid = request.params["propolis_id"]
        record = self.vmm_record(pid)
        if record is None:
            raise HttpError(404, _CODES[404], f"not found: vmm with id {pid!r}")
        return record

    async def _summary(self, request: Request) -> NexusSummary:
        return self.summary()

    async def _replace_vcr(self, request: Request) -> VcrResponse:
        pid = _param(request, "propolis_id", max_len=PROPOLIS_ID_MAX)
        disk = _param(request, "disk_id")
        body: VcrRequestBody = request.body
        vcr = _checked(check_vcr, "vcr", body.vcr)
        if self.vcr is None:
            self._count_vcr("no_hypervisor")
            raise HttpError(
                503, _CODES[503], "Nexus knows no hypervisor (start it with --hypervisor)"
            )
        try:
            result = await self.vcr.replace_vcr(pid, disk, vcr)
        except Exception as exc:
            self._count_vcr(type(exc).__name__)
            raise
        self._count_vcr(result.value)
        return VcrResponse(result)

    def _count_vcr(self, outcome: str) -> None:
        self.vcr_outcomes[outcome] = self.vcr_outcomes.get(outcome, 0) + 1

    # -- observability ----------------------------------------------------------------

    def vmm_record(self, propolis_id: str) -> VmmRecord | None:
        """Nexus's record of *propolis_id* (``None`` if it never heard of it)."""
        record = self.nexus.vmm(propolis_id)
        if record is None:
            return None
        history = [
            HistoryEntry(wall_time(t), state, gen)
            for t, state, gen in self.nexus.vmm_history.get(propolis_id, [])
        ]
        return VmmRecord(
            propolis_id, record.state, record.gen, wall_time(record.time_updated), history
        )

    def summary(self) -> NexusSummary:
        """The VMM table, the sleds, the request counts and the HTTP answers."""
        nexus = self.nexus
        vmms = [self.vmm_record(pid) for pid in sorted(nexus.vmm_history)]
        sleds = [SledRecord(sid, sled_to_wire(info)) for sid, info in sorted(nexus.sleds().items())]
        requests = {op: 0 for op in OPS}
        for r in nexus.request_log:
            requests[r.op] += 1
        stats: NexusStatistics = nexus.statistics()
        return NexusSummary(
            vmms=[v for v in vmms if v is not None],
            sleds=sleds,
            requests=requests,
            statistics=asdict(stats),
            http_requests=self.app.requests,
            http_answered=dict(sorted(self.app.answered.items())),
            vcr_replacements=dict(sorted(self.vcr_outcomes.items())),
            faults=self.faults(),
        )

    def statistics(self) -> NexusSummary:
        return self.summary()


def _error_map(exc: Exception) -> HttpError | None:
    """Nexus's errors by their status; Propolis's (the VCR endpoint) as Propolis
    answered them (``propolis_api``'s codes), an unreachable Propolis as 503."""
    match exc:
        case NexusError(status=status):
            return HttpError(status, _CODES.get(status, _CODES[500]), str(exc))
        case NoInstance():
            return HttpError(410, "NoInstance", f"the VMM's Propolis has no instance: {exc}")
        case Gone():
            return HttpError(410, "VmGone", str(exc))
        case BackendNotFound():
            return HttpError(404, "BackendNotFound", str(exc))
        case ReplaceRequestInvalid(message=message):
            return HttpError(400, "ReplaceRequestInvalid", message)
        case RequestDenied(reason=reason):
            return HttpError(403, reason.code, str(exc))
        case PropolisUnavailable():
            return HttpError(503, _CODES[503], str(exc))
    return None
