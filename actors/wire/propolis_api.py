"""Propolis over the wire, the server: the simulated hypervisor's HTTP API.

**Server** (``Hypervisor`` + ``hypervisor_app``): one ``PropolisHost`` actor (one
``StateDriver`` per VMM, its Crucible backends on a ``DownstairsNetwork``) served on one
loopback port. Each VMM's Propolis has the shape of propolis-server's API (propolis
``openapi/propolis-server/propolis-server-5.0.0-*.json``; spec/sled-agent.md §9) under the
base path ``/propolis/{propolis_id}``:

* ``GET  .../instance`` (``instance_get``) -> ``{instance: {properties: {id}, state}}``;
* ``PUT  .../instance/state`` (``instance_state_put``), body ``"Run"|"Stop"|"Reboot"`` -> 204;
* ``GET  .../instance/state-monitor`` (``instance_state_monitor``), body ``{gen}`` ->
  ``{gen, state, migration}`` once the published generation is >= ``gen`` (the long poll);
* ``PUT  .../instance/disk/{id}/vcr`` (``instance_issue_crucible_vcr_request``), body
  ``{vcr_json}`` -> a ``ReplaceResult`` (``"started"``, ``"vcr_matches"``, ...).

The admin routes (sim-only: what a real rack does with zones and processes) are
``PUT /admin/propolis/{id}`` (launch = the zone booted, propolis-server started and
``instance_ensure`` done: 201), ``DELETE /admin/propolis/{id}`` (kill: the zone halts),
``POST /admin/propolis/{id}/crash`` (the process dies abruptly), ``PUT
/admin/downstairs/{target}`` (black-hole or heal a Crucible target) and ``GET
/admin/status``.

Why one port with a base path per VMM rather than a port per VMM: one listening socket
and one server for the whole hypervisor (N VMMs do not cost N servers, N ports to find and
N accept loops), the process's ready line names one address, and a killed hypervisor
takes every VMM's Propolis with it exactly as a port per VMM would. The base path plays
the part of the zone's address: a client holds one ``HttpPropolis`` per VMM.

Errors are Dropshot bodies, with upstream's statuses and codes where upstream has them
(propolis ``bin/propolis-server/src/lib/server.rs``): a VMM the hypervisor does not run
answers 424 ``NoInstance`` ("Server not initialized (no instance)", upstream
``not_created_error``); a state monitor whose instance went away before the generation was
published answers 410 ``NoInstance`` ("No instance present; will never reach generation
N", ``instance_state_monitor``); a state change the request queue refuses answers 403
(``instance_state_put``'s ``ForbiddenStateChange``) with the queue's reason as the code
(``HaltPending``, ours: upstream sends no code). Ours: a missing Crucible backend 404
``BackendNotFound``, an invalid VCR replacement 400 ``ReplaceRequestInvalid``, a VCR
request dropped with the queue 410 ``VmGone``, bad ids 400 ``INVALID_REQUEST`` naming the
value. Guarantees: a client that goes away cancels its request's handler (a long poll
stops waiting; a launch in flight is undone: the half-launched Propolis is killed).

The clients (``HttpLauncher``, ``HttpPropolis``) are in ``propolis_client.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
import trio

from trioxide.runtime import ActorGone, ActorRef, Runtime

from ..errors import U64_MAX, SledAgentError
from ..ports import StateRequest
from ..propolis.crucible import ReplaceRequestInvalid, ReplaceResult, Volume
from ..propolis.request_queue import RequestDenied
from ..propolis.state_driver import (
    BackendNotFound,
    Gone,
    NoInstance,
    PublishedState,
    Reboot,
    Start,
    Stop,
    VmState,
)
from ..sim.network import DownstairsNetwork
from ..sim.propolis_host import Crash, Kill, LaunchPropolis, PropolisHandle, PropolisHost
from ..sim.vm import SimulatedVm
from ..sled_agent import PROPOLIS_ID_MAX, check_id
from .asgi import App, HttpError, Request, Route

__all__ = [
    "RESULT_WIRE",
    "DownstairsRequest",
    "HostStatistics",
    "Hypervisor",
    "HypervisorStatus",
    "InstanceGetResponse",
    "InstanceStateMonitorRequest",
    "InstanceStateMonitorResponse",
    "InstanceStateRequested",
    "InstanceVCRReplace",
    "LaunchRequest",
    "LaunchResponse",
    "hypervisor_app",
    "open_hypervisor",
]

U64 = Annotated[int, msgspec.Meta(ge=0)]  # and <= U64_MAX (checked by the handler)

# -- wire shapes (propolis-server 5.0.0; the subset we serve) ----------------------------

#: ``InstanceStateRequested``.
InstanceStateRequested = Literal["Run", "Stop", "Reboot"]
#: crucible ``ReplaceResult`` as propolis serializes it (snake case).
ReplaceResultWire = Literal[
    "started", "started_already", "completed_already", "missing", "vcr_matches"
]

_STATE_OF: dict[str, StateRequest] = {"Run": Start(), "Stop": Stop(), "Reboot": Reboot()}
#: Each ``ReplaceResult`` as it is on the wire.
RESULT_WIRE: dict[ReplaceResult, ReplaceResultWire] = {
    ReplaceResult.STARTED: "started",
    ReplaceResult.STARTED_ALREADY: "started_already",
    ReplaceResult.COMPLETED_ALREADY: "completed_already",
    ReplaceResult.MISSING: "missing",
    ReplaceResult.VCR_MATCHES: "vcr_matches",
}


class InstanceStateMonitorRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    gen: U64


class InstanceMigrationStatus(msgspec.Struct, frozen=True):
    id: str
    state: str


class InstanceMigrateStatusResponse(msgspec.Struct, frozen=True):
    """Upstream's migration statuses (the simulated Propolis reports none)."""

    migration_in: InstanceMigrationStatus | None = None
    migration_out: InstanceMigrationStatus | None = None


class InstanceStateMonitorResponse(msgspec.Struct, frozen=True):
    gen: int
    state: VmState
    migration: InstanceMigrateStatusResponse


class InstanceVCRReplace(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The new VCR as JSON text (our ``Volume`` encoding: upstream's tagged
    ``VolumeConstructionRequest`` with the region's ``CrucibleOpts`` flattened)."""

    vcr_json: str


class InstanceProperties(msgspec.Struct, frozen=True):
    id: str


class Instance(msgspec.Struct, frozen=True):
    properties: InstanceProperties
    state: VmState


class InstanceGetResponse(msgspec.Struct, frozen=True):
    instance: Instance


# -- admin shapes (sim-only) -------------------------------------------------------------


class LaunchRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Launch a Propolis: its Crucible disks (backend id -> VCR) and whether it is a
    migration target (it then starts ``Migrating`` and runs without a ``Run``)."""

    disks: dict[str, Volume] = msgspec.field(default_factory=dict)
    migration_target: bool = False


class LaunchResponse(msgspec.Struct, frozen=True):
    propolis_id: str
    base_path: str  # the VMM's Propolis API lives under this path
    state: VmState
    gen: int


class DownstairsRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``reachable: false`` black-holes the target (connections hang), ``true`` heals it."""

    reachable: bool


class NetworkStatus(msgspec.Struct, frozen=True):
    blackholed: list[str]
    connects: int
    waiting: int


class PropolisStatus(msgspec.Struct, frozen=True):
    propolis_id: str
    state: VmState
    gen: int
    alive: bool


class HostStatistics(msgspec.Struct, frozen=True):
    """What the hypervisor did: launches (and the ones abandoned mid-flight, whose
    half-launched Propolis was killed), kills, crashes, long polls now waiting and
    requests whose client went away before the answer."""

    launched: int
    launches_abandoned: int
    killed: int
    crashed: int
    polls_waiting: int
    polls_answered: int
    requests_abandoned: int


class HypervisorStatus(msgspec.Struct, frozen=True):
    time_scale: float
    propolis: list[PropolisStatus]
    network: NetworkStatus
    statistics: HostStatistics


# -- the server side ---------------------------------------------------------------------

#: Seconds a launch's cleanup (killing a half-launched Propolis) may take.
CLEANUP_TIMEOUT = 10.0


class Hypervisor:
    """The simulated hypervisor as its HTTP API serves it: a ``PropolisHost`` actor, the
    downstairs network its Crucible backends use, and the simulated durations.

    *launch_time*: how long a launch takes after the Propolis exists (propolis-server
    starting and ``instance_ensure`` creating the VM objects) - the window in which a
    client that goes away leaves a half-launched Propolis, which is then killed."""

    def __init__(
        self,
        host: ActorRef,
        net: DownstairsNetwork,
        *,
        launch_time: float = 0.5,
        time_scale: float = 1.0,
    ) -> None:
        self.host = host
        self.net = net
        self.launch_time = launch_time
        self.time_scale = time_scale
        self.launched = 0
        self.launches_abandoned = 0
        self.killed = 0
        self.polls_waiting = 0
        self.polls_answered = 0
        self.requests_abandoned = 0  # set by the app's disconnect watcher

    @property
    def actor(self) -> PropolisHost:
        inst = self.host.instance
        if not isinstance(inst, PropolisHost):
            raise HttpError(503, "SERVICE_UNAVAILABLE", "the Propolis host is not running")
        return inst

    def handle(self, propolis_id: str) -> PropolisHandle:
        """The running Propolis of *propolis_id*, else 424 ``NoInstance`` (upstream's
        answer when propolis-server has no instance)."""
        handle = self.actor.running.get(propolis_id)
        if handle is None:
            raise HttpError(
                424, "NoInstance", f"Server not initialized (no instance {propolis_id!r})"
            )
        return handle

    async def launch(
        self, propolis_id: str, disks: dict[str, Volume], migration_target: bool
    ) -> PropolisHandle:
        """Launch (replacing a Propolis of that id). If this is cancelled - the client
        went away, the process stops - whatever was launched is killed before the
        cancellation propagates."""
        try:
            handle: PropolisHandle = await self.host.ask(
                LaunchPropolis(propolis_id, disks, migration_target)
            )
            await trio.sleep(self.launch_time)
        except BaseException:
            self.launches_abandoned += 1
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + CLEANUP_TIMEOUT
                try:
                    await self.host.ask(Kill(propolis_id))
                except ActorGone:
                    pass
            raise
        self.launched += 1
        return handle

    async def kill(self, propolis_id: str) -> None:
        if propolis_id in self.actor.running:
            self.killed += 1
        await self.host.ask(Kill(propolis_id))

    async def crash(self, propolis_id: str) -> None:
        self.handle(propolis_id)  # 424 if there is nothing to crash
        await self.host.ask(Crash(propolis_id))

    async def wait_for_state(self, propolis_id: str, gen: int) -> PublishedState:
        handle = self.handle(propolis_id)
        self.polls_waiting += 1
        try:
            state = await handle.wait_for_state(gen)
        finally:
            self.polls_waiting -= 1
        self.polls_answered += 1
        return state

    def note_abandoned(self) -> None:
        """The app's disconnect watcher cancelled a request nobody waits for any more."""
        self.requests_abandoned += 1

    def statistics(self) -> HostStatistics:
        host = self.actor
        return HostStatistics(
            launched=self.launched,
            launches_abandoned=self.launches_abandoned,
            killed=self.killed,
            crashed=host.crashed,
            polls_waiting=self.polls_waiting,
            polls_answered=self.polls_answered,
            requests_abandoned=self.requests_abandoned,
        )

    def status(self) -> HypervisorStatus:
        net = self.net.statistics()
        running = [
            PropolisStatus(pid, h.monitor.current.state, h.monitor.current.gen, h.alive)
            for pid, h in sorted(self.actor.running.items())
        ]
        return HypervisorStatus(
            self.time_scale,
            running,
            NetworkStatus(list(net.blackholed), net.connects, net.tasks_waiting),
            self.statistics(),
        )


async def open_hypervisor(
    rt: Runtime, *, time_scale: float = 1.0, launch_time: float = 0.5, name: str = "propolis-host"
) -> Hypervisor:
    """Spawn the ``PropolisHost`` in *rt* with every simulated duration (VM reset, halt
    and migration, a Propolis's death, a downstairs connection, a launch) multiplied by
    *time_scale*."""
    if not time_scale > 0:
        raise ValueError(f"time_scale={time_scale!r} must be > 0")
    vm = SimulatedVm()
    template = SimulatedVm(
        reset_time=vm.reset_time * time_scale,
        halt_time=vm.halt_time * time_scale,
        migrate_time=vm.migrate_time * time_scale,
    )
    net = DownstairsNetwork(latency=DownstairsNetwork().latency * time_scale)
    kill_time = 0.5 * time_scale  # PropolisHost's default
    host = await rt.spawn(PropolisHost, net, template, kill_time, name=name, mailbox_size=4096)
    return Hypervisor(host, net, launch_time=launch_time * time_scale, time_scale=time_scale)


def _pid(request: Request) -> str:
    return check_id("propolis_id", request.params["propolis_id"], max_len=PROPOLIS_ID_MAX)


def _error_map(exc: Exception) -> HttpError | None:
    match exc:
        case NoInstance(gen=gen):
            return HttpError(
                410, "NoInstance", f"No instance present; will never reach generation {gen}"
            )
        case RequestDenied(reason=reason):
            return HttpError(403, reason.code, f"instance state change not allowed: {exc}")
        case Gone():
            return HttpError(410, "VmGone", str(exc))
        case BackendNotFound():
            return HttpError(404, "BackendNotFound", str(exc))
        case ReplaceRequestInvalid(message=message):
            return HttpError(400, "ReplaceRequestInvalid", message)
        case SledAgentError(status=status, code=code):
            return HttpError(status, code, str(exc))
    return None


def _routes(hv: Hypervisor) -> list[Route]:
    async def instance_get(request: Request) -> InstanceGetResponse:
        pid = _pid(request)
        current = hv.handle(pid).monitor.current
        return InstanceGetResponse(Instance(InstanceProperties(pid), current.state))

    async def instance_state_put(request: Request) -> None:
        try:
            await hv.handle(_pid(request)).put_state(_STATE_OF[request.body])
        except NoInstance:
            raise HttpError(410, "NoInstance", "No instance present (its VM is gone)") from None

    async def instance_state_monitor(request: Request) -> InstanceStateMonitorResponse:
        body: InstanceStateMonitorRequest = request.body
        if body.gen > U64_MAX:
            raise HttpError(400, "INVALID_REQUEST", f"gen={body.gen} is out of range (a u64)")
        state = await hv.wait_for_state(_pid(request), body.gen)
        return InstanceStateMonitorResponse(state.gen, state.state, InstanceMigrateStatusResponse())

    async def instance_vcr(request: Request) -> ReplaceResultWire:
        handle = hv.handle(_pid(request))
        disk = check_id("id", request.params["id"])
        body: InstanceVCRReplace = request.body
        try:
            vcr = msgspec.json.decode(body.vcr_json, type=Volume)
        except msgspec.MsgspecError as exc:
            raise HttpError(
                400, "INVALID_REQUEST", f"vcr_json={body.vcr_json[:64]!r} is not a VCR: {exc}"
            ) from None
        return RESULT_WIRE[await handle.replace_vcr(disk, vcr)]

    async def launch(request: Request) -> LaunchResponse:
        pid = _pid(request)
        body: LaunchRequest = request.body
        for backend_id in body.disks:
            check_id("disks key", backend_id)
        handle = await hv.launch(pid, dict(body.disks), body.migration_target)
        current = handle.monitor.current
        return LaunchResponse(pid, f"/propolis/{pid}", current.state, current.gen)

    async def kill(request: Request) -> None:
        await hv.kill(_pid(request))

    async def crash(request: Request) -> None:
        await hv.crash(_pid(request))

    async def downstairs(request: Request) -> NetworkStatus:
        target = request.params["target"]
        body: DownstairsRequest = request.body
        if body.reachable:
            hv.net.heal(target)
        else:
            hv.net.blackhole(target)
        return hv.status().network

    async def status(request: Request) -> HypervisorStatus:
        return hv.status()

    base = "/propolis/{propolis_id}"
    return [
        Route("GET", f"{base}/instance", "instance_get", instance_get,
              response=InstanceGetResponse),
        Route("PUT", f"{base}/instance/state", "instance_state_put", instance_state_put,
              body=InstanceStateRequested),
        Route("GET", f"{base}/instance/state-monitor", "instance_state_monitor",
              instance_state_monitor, body=InstanceStateMonitorRequest,
              response=InstanceStateMonitorResponse,
              summary="the published state once its generation is >= gen (a long poll)"),
        Route("PUT", f"{base}/instance/disk/{{id}}/vcr", "instance_issue_crucible_vcr_request",
              instance_vcr, body=InstanceVCRReplace, response=ReplaceResultWire),
        Route("PUT", "/admin/propolis/{propolis_id}", "propolis_launch", launch,
              body=LaunchRequest, response=LaunchResponse, status=201,
              summary="sim: the zone booted, propolis-server started, instance_ensure done"),
        Route("DELETE", "/admin/propolis/{propolis_id}", "propolis_kill", kill,
              summary="sim: the Propolis zone halts (idempotent)"),
        Route("POST", "/admin/propolis/{propolis_id}/crash", "propolis_crash", crash,
              summary="sim: the Propolis process dies abruptly"),
        Route("PUT", "/admin/downstairs/{target}", "downstairs_put", downstairs,
              body=DownstairsRequest, response=NetworkStatus,
              summary="sim: black-hole or heal a Crucible downstairs target"),
        Route("GET", "/admin/status", "hypervisor_status", status, response=HypervisorStatus),
    ]  # fmt: skip


def hypervisor_app(hv: Hypervisor) -> Callable[[dict[str, Any], Any, Any], Awaitable[None]]:
    """The hypervisor's ASGI application (``serve_app`` serves it); its OpenAPI document
    is ``GET /openapi.json``."""
    app = App(
        "Oxide Propolis Server API (trioxide simulated hypervisor)",
        "5.0.0",
        _routes(hv),
        error_map=_error_map,
        on_abandon=hv.note_abandoned,
    )
    return app
