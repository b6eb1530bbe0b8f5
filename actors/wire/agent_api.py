"""The sled agent's HTTP API: an ``App`` over a running ``SledAgent`` (``SledAgentClient``).

Shaped after omicron's sled-agent API (``openapi/sled-agent/sled-agent-48.0.0-808ec1.json``,
the VMM subset; spec/sled-agent.md §9):

=======================================  ===================  ==============================
``PUT /vmms/{propolis_id}``              ``vmm_register``     ``InstanceEnsureBody`` -> 200
                                                              ``SledVmmState``
``DELETE /vmms/{propolis_id}``           ``vmm_unregister``   200 ``VmmUnregisterResponse``
``GET /vmms/{propolis_id}/state``        ``vmm_get_state``    200 ``SledVmmState``
``PUT /vmms/{propolis_id}/state``        ``vmm_put_state``    ``VmmPutStateBody`` -> 200
                                                              ``VmmPutStateResponse``
``GET /inventory``                       ``inventory``        200 ``Inventory`` (a subset)
``GET /reservoir``, ``PUT /reservoir``   ours                 the VMM reservoir
``GET /nexus-notifier``                  ours                 what the notifier knows
=======================================  ===================  ==============================

Guarantees:

* **Every error is typed.** A ``SledAgentError`` is answered with its own ``status`` and
  ``code`` (``actors/errors.py``: 400 ``INVALID_REQUEST`` naming the field and value, 404/410
  ``NO_SUCH_INSTANCE``, 409 ``PROPOLIS_ALREADY_REGISTERED``, 503 ``INSTANCE_CHANNEL_FULL`` /
  ``SERVICE_UNAVAILABLE`` ...). A body that does not decode is 400 naming the JSON path
  (``App``). Anything else would be a 500 ``INTERNAL_ERROR`` - a bug, never an answer to
  bad input (the schemathesis test holds the API to that).
* **Never a hang.** Handlers only call ``SledAgentClient``, whose asks are bounded by its
  ``ask_timeout`` (``AskTimeout`` -> 503 ``SERVICE_UNAVAILABLE``); a full runner inbox is
  refused at once (503 ``INSTANCE_CHANNEL_FULL``, the runner's admission).
* **Input is checked before anything is sent** (``SledAgentClient``'s boundary checks run
  on the decoded body; the wire types add the schema-level bounds the OpenAPI document
  shows).

Deviations from upstream (the simulation has no use for them, so they are not accepted as
if they meant something): ``InstanceEnsureBody`` has no ``local_config``, ``metadata`` or
``propolis_addr`` (unknown fields are ignored, as serde does by default, so an upstream-shaped
body still registers); ``vmm_spec`` is ``{ncpus, memory_bytes, disks}`` (the part of
Propolis's ``InstanceSpec`` the simulation models: the board's CPUs and memory, and the
Crucible backends' VCRs keyed by backend id) instead of Propolis's whole instance spec;
``vmm_runtime.state`` must be ``starting`` (a VMM is always registered starting; the runner
stamps its own ``time_updated``). ``migration_in``/``migration_out`` are not reported (the
runner's ``CurrentState`` answers the VMM's runtime state only). Upstream has no reservoir
or notifier endpoint (the reservoir is sized from the sled's config and reported in the
inventory's ``reservoir_size``); ours are named in ``RESERVOIR_PATH``/``NOTIFIER_PATH``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec

from ..errors import U64_MAX, InvalidRequest, SledAgentError
from ..instance_runner import Target, VmmSpec
from ..nexus_notifier import NotifierStatistics
from ..propolis.crucible import Volume
from ..reservoir import (
    Failed,
    NotConfigured,
    Pending,
    Percentage,
    Ready,
    ReservoirState,
    ReservoirStatus,
    SizeMiB,
)
from ..sim.nexus import SledInfo
from ..sled_agent import (
    ID_MAX,
    NCPUS_MAX,
    PROPOLIS_ID_MAX,
    SledAgentClient,
    check_generation,
)
from ..vmm_state import VmmRuntimeState
from .asgi import App, HttpError, Request, Route
from .types import SledVmmStateBody, to_wire

__all__ = [
    "NOTIFIER_PATH",
    "RESERVOIR_PATH",
    "AgentApp",
    "InstanceEnsureBody",
    "InventoryBody",
    "NotifierStatusBody",
    "ReservoirPutBody",
    "ReservoirStatusBody",
    "VmmPutStateBody",
    "VmmPutStateResponse",
    "VmmUnregisterResponse",
    "agent_app",
    "error_map",
]

API_VERSION = "48.0.0"
"""The upstream sled-agent API version whose VMM operations these follow."""
RESERVOIR_PATH = "/reservoir"
NOTIFIER_PATH = "/nexus-notifier"

# Upstream's ``Generation`` and ``ByteCount`` are u64 (``format: uint64``). msgspec cannot
# bound an int past int64, so the upper bound is checked by the API boundary
# (``check_generation``: 400 naming the field) and only documented here.
U64 = Annotated[int, msgspec.Meta(ge=0, extra_json_schema={"format": "uint64", "maximum": U64_MAX})]
PositiveU64 = Annotated[
    int, msgspec.Meta(ge=1, extra_json_schema={"format": "uint64", "maximum": U64_MAX})
]
#: The ids the API boundary accepts (``sled_agent.check_id``), documented in the schema; the
#: boundary checks them (400 naming the field and saying what is wrong).
ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _id_schema(max_len: int) -> dict[str, Any]:
    return {"pattern": ID_PATTERN, "minLength": 1, "maxLength": max_len}


Id = Annotated[str, msgspec.Meta(extra_json_schema=_id_schema(ID_MAX))]
Ncpus = Annotated[int, msgspec.Meta(ge=1, le=NCPUS_MAX, extra_json_schema={"format": "uint8"})]

# -- bodies ------------------------------------------------------------------------------


class VmmSpecBody(msgspec.Struct, frozen=True):
    """The VMM's virtual hardware: vCPUs (Propolis's board ``cpus``, a u8), memory in
    bytes, and the Crucible backends (backend id -> VCR)."""

    ncpus: Ncpus = 2
    memory_bytes: PositiveU64 = 1 << 30
    disks: dict[str, Volume] = msgspec.field(default_factory=dict)


class VmmRuntimeBody(msgspec.Struct, frozen=True):
    """Upstream ``VmmRuntimeState`` as Nexus sends it in a register request: the
    generation of the record Nexus holds (the runner's states supersede it). A VMM is
    always registered ``starting``; the runner stamps its own ``time_updated``."""

    gen: U64
    state: Literal["starting"]
    time_updated: dt.datetime


class InstanceEnsureBody(msgspec.Struct, frozen=True):
    """Upstream ``InstanceEnsureBody`` (the subset the simulation uses; see the module
    docstring)."""

    instance_id: Id
    vmm_spec: VmmSpecBody
    vmm_runtime: VmmRuntimeBody
    migration_id: Id | None = None


class InstanceMigrationTargetParams(msgspec.Struct, frozen=True):
    src_propolis_addr: str


class RequestRunning(msgspec.Struct, frozen=True, tag_field="type", tag="running"):
    """Start the VMM if it is not already running."""


class RequestStopped(msgspec.Struct, frozen=True, tag_field="type", tag="stopped"):
    """Stop the VMM."""


class RequestReboot(msgspec.Struct, frozen=True, tag_field="type", tag="reboot"):
    """Reset the VMM (Propolis ``Reboot``)."""


class RequestMigrationTarget(msgspec.Struct, frozen=True, tag_field="type", tag="migration_target"):
    """Start the VMM as the target of a live migration from ``value.src_propolis_addr``."""

    value: InstanceMigrationTargetParams


VmmStateRequested = RequestRunning | RequestStopped | RequestReboot | RequestMigrationTarget

_TARGETS: dict[type, Target] = {
    RequestRunning: Target.RUNNING,
    RequestStopped: Target.STOPPED,
    RequestReboot: Target.REBOOT,
    RequestMigrationTarget: Target.MIGRATION_TARGET,
}


class VmmPutStateBody(msgspec.Struct, frozen=True):
    """Upstream ``VmmPutStateBody``."""

    state: VmmStateRequested


class VmmPutStateResponse(msgspec.Struct, frozen=True):
    """Upstream ``VmmPutStateResponse``: ``null`` when the request changed nothing yet
    (a start is asynchronous: its progress is published to Nexus)."""

    updated_runtime: SledVmmStateBody | None = None


class VmmUnregisterResponse(msgspec.Struct, frozen=True):
    """Upstream ``VmmUnregisterResponse``: ``null`` when no such VMM was registered."""

    updated_runtime: SledVmmStateBody | None = None


class InventoryBody(msgspec.Struct, frozen=True):
    """Upstream ``Inventory``, the fields the simulation knows."""

    sled_id: str
    sled_agent_address: str
    sled_role: str
    usable_hardware_threads: int
    usable_physical_ram: int
    reservoir_size: int


class ReservoirSizeMiB(msgspec.Struct, frozen=True, tag_field="type", tag="size_mib"):
    """An exact size in MiB (rounded down to 2 MiB); upstream's config
    ``vmm_reservoir_size_mb``."""

    value: U64


class ReservoirPercentage(msgspec.Struct, frozen=True, tag_field="type", tag="percentage"):
    """A percentage of the eligible RAM, ``0.1 <= value < 100``; upstream's config
    ``vmm_reservoir_percentage``."""

    value: Annotated[float, msgspec.Meta(extra_json_schema={"minimum": 0.1, "maximum": 100})]


ReservoirModeBody = ReservoirSizeMiB | ReservoirPercentage


class ReservoirPutBody(msgspec.Struct, frozen=True):
    mode: ReservoirModeBody


class ReservoirStateBody(msgspec.Struct, frozen=True):
    """``kind``: ``pending`` (resizing towards ``bytes``), ``ready`` (exactly ``bytes``),
    ``failed`` (holds ``bytes``; ``error`` says why) or ``not_configured``."""

    kind: Literal["pending", "ready", "failed", "not_configured"]
    bytes: int = 0
    error: str | None = None


class ReservoirStatusBody(msgspec.Struct, frozen=True):
    state: ReservoirStateBody
    mode: ReservoirModeBody | None
    desired_bytes: int
    actual_bytes: int
    reservoir_bytes: int
    eligible_bytes: int
    resizing: bool


class SledInfoBody(msgspec.Struct, frozen=True):
    """What Nexus knows about a sled (upstream ``SledAgentInfo``)."""

    sled_id: str
    address: str
    role: str
    usable_threads: int
    usable_ram_bytes: int
    reservoir_size_bytes: int
    generation: int
    decommissioned: bool


class NotifierStatusBody(msgspec.Struct, frozen=True):
    """The notifier's state (upstream ``NexusNotifierTaskStatus``): ``known`` is
    ``unknown``, ``not_found``, ``found`` or ``decommissioned``; ``known_info`` what Nexus
    holds; ``outstanding`` the request in flight."""

    known: str
    known_info: SledInfoBody | None
    pending: bool
    outstanding: str | None
    stopped: bool
    get_started: int
    get_completed: int
    put_started: int
    put_completed: int
    cancelled: int
    errors: int
    ignored: int


# -- conversions -------------------------------------------------------------------------


def _wire(state: VmmRuntimeState | None) -> SledVmmStateBody | None:
    return None if state is None else to_wire(state)


def _reservoir_state(state: ReservoirState) -> ReservoirStateBody:
    match state:
        case Pending(target_bytes=target):
            return ReservoirStateBody("pending", target)
        case Ready(bytes=n):
            return ReservoirStateBody("ready", n)
        case Failed(error=error, actual_bytes=actual):
            return ReservoirStateBody("failed", actual, error)
        case NotConfigured():
            return ReservoirStateBody("not_configured")
    raise AssertionError(f"unknown reservoir state {state!r}")  # pragma: no cover


def _mode_body(mode: SizeMiB | Percentage | None) -> ReservoirModeBody | None:
    match mode:
        case SizeMiB(mib=n):
            return ReservoirSizeMiB(n)
        case Percentage(percent=p):
            return ReservoirPercentage(p)
    return None


def _sled_info(info: SledInfo | None) -> SledInfoBody | None:
    if info is None:
        return None
    return SledInfoBody(**msgspec.structs.asdict(info))


def _spec(body: VmmSpecBody) -> VmmSpec:
    return VmmSpec(ncpus=body.ncpus, memory_bytes=body.memory_bytes, disks=dict(body.disks))


def _check_migration_source(addr: object) -> None:
    """``src_propolis_addr`` is a socket address (upstream: ``SocketAddr``)."""
    field = "state.value.src_propolis_addr"
    text = str(addr)
    host, sep, port = text.rpartition(":")
    ok = bool(sep and host) and len(port) <= 5 and port.isascii() and port.isdigit()
    ok = ok and 0 < int(port) <= 65535
    if ok and host.startswith("["):
        ok = host.endswith("]") and len(host) > 2
    if not ok:
        raise InvalidRequest(field, addr, "must be a socket address 'host:port' (port 1..65535)")


# -- the app -----------------------------------------------------------------------------


class AgentApp(App):
    """``App`` whose document says more: the path parameter ``propolis_id`` is documented
    with the ids the boundary accepts (at most ``PROPOLIS_ID_MAX`` characters), and a
    registration links to the operations on the VMM it registered."""

    def openapi(self) -> dict[str, Any]:
        doc = super().openapi()
        for item in doc["paths"].values():
            for op in item.values():
                for param in op.get("parameters", ()):
                    if param["name"] == "propolis_id":
                        param["schema"] = {"type": "string", **_id_schema(PROPOLIS_ID_MAX)}
        # What a registration makes possible (OpenAPI links, for clients and fuzzers).
        same_vmm = {"propolis_id": "$request.path.propolis_id"}
        links = {
            name: {"operationId": name, "parameters": same_vmm}
            for name in ("vmm_get_state", "vmm_put_state", "vmm_unregister")
        }
        register = doc["paths"]["/vmms/{propolis_id}"]["put"]
        register["responses"]["200"]["links"] = links
        return doc


def error_map(exc: Exception) -> HttpError | None:
    """A ``SledAgentError`` as its own status and code; anything else is not ours (500)."""
    if isinstance(exc, SledAgentError):
        return HttpError(exc.status, exc.code, str(exc))
    return None


def agent_app(
    client: SledAgentClient,
    *,
    address: Callable[[], str],
    threads: int = 128,
) -> App:
    """The sled agent's ``App`` over *client*. *address*: where this agent serves, once
    it listens (the inventory's ``sled_agent_address``); *threads*: the inventory's
    ``usable_hardware_threads``."""

    async def vmm_register(req: Request) -> SledVmmStateBody:
        body: InstanceEnsureBody = req.body
        check_generation("vmm_runtime.gen", body.vmm_runtime.gen)
        state = await client.register(
            req.params["propolis_id"],
            body.instance_id,
            _spec(body.vmm_spec),
            body.migration_id,
            body.vmm_runtime.gen,
        )
        return to_wire(state)

    async def vmm_unregister(req: Request) -> VmmUnregisterResponse:
        return VmmUnregisterResponse(_wire(await client.unregister(req.params["propolis_id"])))

    async def vmm_get_state(req: Request) -> SledVmmStateBody:
        return to_wire(await client.get_state(req.params["propolis_id"]))

    async def vmm_put_state(req: Request) -> VmmPutStateResponse:
        body: VmmPutStateBody = req.body
        requested = body.state
        if isinstance(requested, RequestMigrationTarget):
            _check_migration_source(requested.value.src_propolis_addr)
        target = _TARGETS[type(requested)]
        state = await client.ensure_state(req.params["propolis_id"], target)
        return VmmPutStateResponse(_wire(state))

    async def inventory(req: Request) -> InventoryBody:
        reservoir = await client.reservoir_status()
        hypervisor = client.agent.world.hypervisor
        return InventoryBody(
            sled_id=client.agent.config.sled_id,
            sled_agent_address=address(),
            sled_role="gimlet",
            usable_hardware_threads=threads,
            usable_physical_ram=hypervisor.physical_bytes,
            reservoir_size=reservoir.reservoir_bytes,
        )

    async def reservoir_get(req: Request) -> ReservoirStatusBody:
        status: ReservoirStatus = await client.reservoir_status()
        return ReservoirStatusBody(
            state=_reservoir_state(status.state),
            mode=_mode_body(status.mode),
            desired_bytes=status.desired_bytes,
            actual_bytes=status.actual_bytes,
            reservoir_bytes=status.reservoir_bytes,
            eligible_bytes=status.eligible_bytes,
            resizing=status.resizing,
        )

    async def reservoir_put(req: Request) -> ReservoirStateBody:
        body: ReservoirPutBody = req.body
        mode: SizeMiB | Percentage
        match body.mode:
            case ReservoirSizeMiB(value=n):
                mode = SizeMiB(n)
            case ReservoirPercentage(value=p):
                mode = Percentage(p)
        return _reservoir_state(await client.set_reservoir_size(mode))

    async def notifier_status(req: Request) -> NotifierStatusBody:
        stats: NotifierStatistics = await client.sled_info()
        fields: dict[str, Any] = msgspec.structs.asdict(stats)
        fields["known_info"] = _sled_info(stats.known_info)
        return NotifierStatusBody(**fields)

    vmm = "/vmms/{propolis_id}"
    routes = [
        Route("PUT", vmm, "vmm_register", vmm_register, InstanceEnsureBody, SledVmmStateBody,
              summary="Register a VMM (idempotent) and answer its state"),
        Route("DELETE", vmm, "vmm_unregister", vmm_unregister, None, VmmUnregisterResponse,
              summary="Tear a VMM down and forget it; its final state, or null if unknown"),
        Route("GET", vmm + "/state", "vmm_get_state", vmm_get_state, None, SledVmmStateBody,
              summary="A VMM's current state"),
        Route("PUT", vmm + "/state", "vmm_put_state", vmm_put_state, VmmPutStateBody,
              VmmPutStateResponse, summary="Move a VMM towards a state"),
        Route("GET", "/inventory", "inventory", inventory, None, InventoryBody,
              summary="What this sled is (the part of upstream's inventory the sim knows)"),
        Route("GET", RESERVOIR_PATH, "reservoir_get", reservoir_get, None, ReservoirStatusBody,
              summary="The VMM reservoir's state and sizes"),
        Route("PUT", RESERVOIR_PATH, "reservoir_put", reservoir_put, ReservoirPutBody,
              ReservoirStateBody, summary="Start resizing the VMM reservoir"),
        Route("GET", NOTIFIER_PATH, "nexus_notifier_status", notifier_status, None,
              NotifierStatusBody, summary="What the Nexus notifier knows and has told Nexus"),
    ]  # fmt: skip
    return AgentApp(
        "Oxide Sled Agent API (trioxide simulation)",
        API_VERSION,
        routes,
        error_map=error_map,
    )
