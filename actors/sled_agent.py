"""SledAgent: the root actor of the agent, and the public API a control plane calls.

Tree (spec/sled-agent.md §0)::

    sled
     ├─ reservoir        VmmReservoirManager (publishes the reservoir state on a Watch)
     ├─ zone-cleanup     ZoneCleanup (bundles + teardown of defunct zones)
     ├─ propolis-host    the simulated Propolis processes (one StateDriver per VMM)
     ├─ instance-manager InstanceManager
     │   └─ runner-<id>-g<gen>   InstanceRunner  └─ monitor  InstanceMonitor
     └─ nexus-notifier   NexusNotifier (sled info, reservoir size, generations)

``SledAgentClient`` is the API: registration goes to the manager; requests for one VMM
go from the caller's task straight to that VMM's runner, whose admission does the
try-send (``InstanceChannelFull``) - the manager never waits on a runner.

The API boundary (docs/upstream/sled-agent.md):

* **Input is checked before anything is sent**, so bad input changes nothing: ids are
  strings of ASCII letters, digits, ``-``, ``_`` and ``.`` starting with a letter or digit
  (a propolis id at most 43 characters, so that its zone name ``oxz_propolis-server_<id>``
  fits illumos' 63; other ids at most 63); generations are ``u64`` (``0..2**64-1``, no
  ``bool``); specs, VCRs and tokens must be well-typed structs (checked field by field
  against their annotations). A violation is ``InvalidRequest`` (400) naming the field
  and the value.
* **Every error a caller gets is an ``actors.errors.SledAgentError``** with its HTTP
  status: runtime and simulation errors are mapped in ``_api_errors`` (the table is in
  the docs), and anything unforeseen becomes ``InternalError`` (500) with the original
  as ``__cause__``. Cancellation of the caller is never caught.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import msgspec

from trioxide.runtime import (
    Actor,
    ActorGone,
    ActorRef,
    AskTimeout,
    MailboxFull,
    Rejected,
    Watch,
)

from .errors import (
    U64_MAX,
    InstanceChannelFull,
    InstanceGone,
    InternalError,
    InvalidRequest,
    NoSuchBackend,
    PropolisRefused,
    ReservoirBusyError,
    ReservoirConfigInvalid,
    ServiceUnavailable,
    SledAgentError,
    Terminating,
    VcrReplacementInvalid,
    VmNotRunning,
)
from .instance_manager import (
    EnsureRegistered,
    EnsureUnregistered,
    InstanceManager,
    Lookup,
    Register,
    Registration,
    ReleaseToken,
    StartToken,
    StartVmm,
)
from .instance_runner import (
    CurrentState,
    InstanceRunner,
    PutState,
    RunnerConfig,
    RunnerExit,
    SledServices,
    Target,
    Terminate,
    VmmSpec,
)
from .nexus_notifier import NexusNotifier, NotifierStatistics, NotifierStatus
from .ports import NexusPort, PropolisLauncher, PropolisPort, PropolisUnavailable
from .propolis.crucible import Region, ReplaceRequestInvalid, ReplaceResult, Volume
from .propolis.request_queue import RequestDenied
from .propolis.state_driver import BackendNotFound, Gone, NoInstance
from .reservoir import (
    GetReservoir,
    NotConfigured,
    Percentage,
    ReservoirBusy,
    ReservoirConfigError,
    ReservoirMode,
    ReservoirState,
    ReservoirStatus,
    SetReservoirSize,
    SizeMiB,
    VmmReservoirManager,
)
from .sim.hypervisor import SimHypervisor
from .sim.network import DownstairsNetwork
from .sim.nexus import SimNexus, SledInfo
from .sim.propolis_host import LocalLauncher, PropolisHost
from .sim.vm import SimulatedVm
from .sim.zones import SimZones, propolis_zone_name
from .vmm_state import VmmRuntimeState
from .zone_cleanup import ZoneCleanup

__all__ = [
    "ID_MAX",
    "NCPUS_MAX",
    "PROPOLIS_ID_MAX",
    "SledAgent",
    "SledAgentClient",
    "SledConfig",
    "SledWorld",
    "check_generation",
    "check_id",
    "check_spec",
    "check_vcr",
]


class _Nothing(msgspec.Struct, frozen=True):
    pass


@dataclass
class SledWorld:
    """The simulated hardware and services around one sled (all on the Trio clock)."""

    zones: SimZones = field(default_factory=lambda: SimZones(install_time=1.0, boot_time=1.0))
    nexus: SimNexus = field(default_factory=SimNexus)
    hypervisor: SimHypervisor = field(default_factory=SimHypervisor)
    network: DownstairsNetwork = field(default_factory=DownstairsNetwork)
    vm_template: SimulatedVm = field(default_factory=SimulatedVm)


@dataclass(frozen=True)
class SledConfig:
    sled_id: str = "sled-0"
    reservoir: ReservoirMode | None = None
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    cleanup_concurrency: int = 4
    legacy_tickets: bool = False  # tests only: the pre-#3325 manager
    notifier_tick: float = 2.0  # seconds between the notifier's retries (upstream: 2 s)
    address: str = "[fd00:1122:3344:101::1]:12345"  # where this sled agent serves (told Nexus)


class SledAgent(Actor):
    """The sled agent's root actor.

    *propolis* and *nexus* are the transport seam (``ports.py``): by default the agent
    reaches the world's in-process simulations (a ``PropolisHost`` child and
    ``world.nexus``); an agent process passes HTTP clients instead
    (``trioxide.actors.wire``) and the same actors talk over the wire."""

    def __init__(
        self,
        world: SledWorld,
        config: SledConfig,
        *,
        propolis: PropolisLauncher | None = None,
        nexus: NexusPort | None = None,
    ) -> None:
        self.world = world
        self.config = config
        self.propolis = propolis
        self.nexus: NexusPort = world.nexus if nexus is None else nexus
        self.reservoir_watch: Watch[ReservoirState] = Watch(NotConfigured(), name="reservoir")
        self.services: SledServices | None = None
        self.refs: dict[str, ActorRef] = {}

    async def on_start(self) -> None:
        w, cfg = self.world, self.config
        self.refs["reservoir"] = await self.spawn(
            VmmReservoirManager, w.hypervisor, cfg.reservoir, self.reservoir_watch, name="reservoir"
        )
        self.refs["zone-cleanup"] = await self.spawn(
            ZoneCleanup, w.zones, cfg.cleanup_concurrency, name="zone-cleanup"
        )
        launcher = self.propolis
        if launcher is None:
            self.refs["propolis-host"] = await self.spawn(
                PropolisHost, w.network, w.vm_template, name="propolis-host", mailbox_size=4096
            )
            launcher = LocalLauncher(self.refs["propolis-host"])
        self.services = SledServices(
            zones=w.zones,
            cleanup=self.refs["zone-cleanup"],
            nexus=self.nexus,
            propolis=launcher,
            hypervisor=w.hypervisor,
            reservoir=self.reservoir_watch if cfg.reservoir is not None else None,
            config=replace(cfg.runner, legacy=cfg.legacy_tickets),
        )
        self.refs["instance-manager"] = await self.spawn(
            InstanceManager, self.services, cfg.legacy_tickets, name="instance-manager",
            mailbox_size=256,
        )  # fmt: skip
        info = SledInfo(
            sled_id=cfg.sled_id,
            address=cfg.address,
            role="gimlet",
            usable_threads=128,
            usable_ram_bytes=w.hypervisor.physical_bytes,
            reservoir_size_bytes=0,
            generation=0,
            decommissioned=False,
        )
        self.refs["nexus-notifier"] = await self.spawn(
            NexusNotifier,
            self.nexus,
            info,
            lambda: w.hypervisor.reservoir_bytes,
            self.reservoir_watch,
            cfg.notifier_tick,
            name="nexus-notifier",
            mailbox_size=256,
        )

    async def handle(self, msg: _Nothing) -> None:
        return None


# -- input validation (the API boundary) -------------------------------------------------

ZONE_NAME_MAX = 63  # illumos: ZONENAME_MAX is 64 bytes with the terminating NUL
PROPOLIS_ID_MAX = ZONE_NAME_MAX - len(propolis_zone_name(""))
"""43: the zone ``oxz_propolis-server_<propolis id>`` must be a valid zone name."""
ID_MAX = ZONE_NAME_MAX
"""Instance, migration, saga and backend ids (a UUID is 36 characters)."""
NCPUS_MAX = 255  # upstream: propolis ``Board.cpus`` is a u8
_ID_CHAR = re.compile(r"[A-Za-z0-9_.-]")
_ID_FIRST = re.compile(r"[A-Za-z0-9]")
_VCR_DEPTH_MAX = 8  # read-only parents nested deeper than this are refused


def check_id(field: str, value: object, *, max_len: int = ID_MAX) -> str:
    """*value* if it is an acceptable id, else ``InvalidRequest`` naming *field*."""
    if not isinstance(value, str):
        raise InvalidRequest(field, value, f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidRequest(field, value, "must not be empty")
    if len(value) > max_len:
        why = f"is {len(value)} characters long; at most {max_len} are allowed"
        if max_len == PROPOLIS_ID_MAX:
            why += f" (its zone name must fit in {ZONE_NAME_MAX})"
        raise InvalidRequest(field, value, why)
    for ch in value:
        if _ID_CHAR.fullmatch(ch):
            continue
        if ch == "/":
            why = "contains '/'"
        elif ch.isspace():
            why = f"contains whitespace ({ch!r})"
        else:
            why = f"contains {ch!r}; ids are ASCII letters, digits, '-', '_' and '.'"
        raise InvalidRequest(field, value, why)
    if not _ID_FIRST.fullmatch(value[0]):
        raise InvalidRequest(field, value, "must start with a letter or a digit")
    return value


def check_generation(field: str, value: object) -> int:
    """*value* if it is a ``u64`` generation (an int, not a bool, in ``0..2**64-1``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(field, value, f"must be an integer (u64), got {type(value).__name__}")
    if not 0 <= value <= U64_MAX:
        raise InvalidRequest(field, value, "is out of range: generations are u64 (0..2^64-1)")
    return value


def _check_int(field: str, value: object, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(field, value, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidRequest(field, value, f"must be in {what}")
    return value


def _check_struct(field: str, value: object, typ: type[msgspec.Struct]) -> None:
    """Every field of the *typ* *value* matches its annotation (msgspec builds structs
    without checking them: round-trip through builtins to check them all). The fields a
    caller is most likely to get wrong are checked before, by name and value."""
    try:
        builtins = msgspec.to_builtins(value, builtin_types=(bytes, bytearray, memoryview))
        msgspec.convert(builtins, typ)
    except (msgspec.ValidationError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        why = str(exc).replace("`$", f"`{field}")
        raise InvalidRequest(field, value, why) from None


def _require(field: str, value: object, typ: type) -> None:
    if not isinstance(value, typ):
        why = f"must be a {typ.__name__}, got {type(value).__name__}"
        raise InvalidRequest(field, value, why)


def _regions(field: str, vcr: Volume, depth: int = 0) -> Iterator[tuple[str, Region]]:
    """The regions of *vcr* (sub-volumes, then read-only parents), with their paths;
    tolerant of a malformed VCR (``_check_struct`` reports that)."""
    if depth > _VCR_DEPTH_MAX:
        raise InvalidRequest(field, vcr, f"read-only parents nest deeper than {_VCR_DEPTH_MAX}")
    subs = vcr.sub_volumes
    if isinstance(subs, tuple | list):
        for i, region in enumerate(subs):
            if isinstance(region, Region):
                yield f"{field}.sub_volumes[{i}]", region
    parent = vcr.read_only_parent
    if isinstance(parent, Region):
        yield f"{field}.read_only_parent", parent
    elif isinstance(parent, Volume):
        yield from _regions(f"{field}.read_only_parent", parent, depth + 1)


def check_vcr(field: str, vcr: object) -> Volume:
    """A well-typed VCR whose region generations are all ``u64``."""
    _require(field, vcr, Volume)
    assert isinstance(vcr, Volume)
    for path, region in _regions(field, vcr):
        check_generation(f"{path}.generation", region.generation)
    _check_struct(field, vcr, Volume)
    return vcr


def check_spec(field: str, spec: object) -> VmmSpec:
    """A well-typed ``VmmSpec``: 1..255 vCPUs, 1..2^64-1 bytes, disks keyed by backend
    ids (they name the Crucible backends) with valid VCRs."""
    _require(field, spec, VmmSpec)
    assert isinstance(spec, VmmSpec)
    _check_int(f"{field}.ncpus", spec.ncpus, 1, NCPUS_MAX, f"1..{NCPUS_MAX} (a u8)")
    _check_int(f"{field}.memory_bytes", spec.memory_bytes, 1, U64_MAX, "1..2^64-1 (a u64)")
    _require(f"{field}.disks", spec.disks, dict)
    for backend_id, vcr in spec.disks.items():
        check_id(f"{field}.disks key", backend_id)
        check_vcr(f"{field}.disks[{backend_id!r}]", vcr)
    _check_struct(field, spec, VmmSpec)
    return spec


def _check_token(token: object) -> StartToken:
    _require("token", token, StartToken)
    assert isinstance(token, StartToken)
    check_id("token.saga_id", token.saga_id)
    check_id("token.propolis_id", token.propolis_id, max_len=PROPOLIS_ID_MAX)
    check_generation("token.gen", token.gen)
    return token


def _check_propolis_id(value: object) -> str:
    return check_id("propolis_id", value, max_len=PROPOLIS_ID_MAX)


# -- the API -----------------------------------------------------------------------------


class SledAgentClient:
    """The sled agent's API (what an HTTP layer or a test calls).

    Every method checks its input first (``InvalidRequest``, 400, nothing sent) and ends
    with its result or a ``SledAgentError`` carrying the HTTP status (see the module
    docstring); it never hangs: each ask it makes is answered by the actor, its drain
    or ``ActorGone`` - and, with *ask_timeout* (seconds on the runtime's clock), within
    that time per ask (``AskTimeout``: 503 ``SERVICE_UNAVAILABLE``). ``None`` (the default,
    the deterministic tests) waits for the actor's answer."""

    def __init__(self, sled: ActorRef, *, ask_timeout: float | None = None) -> None:
        if ask_timeout is not None and not ask_timeout > 0:
            raise ValueError(f"ask_timeout must be > 0 or None, got {ask_timeout!r}")
        self.ask_timeout = ask_timeout
        inst = sled.instance
        if not isinstance(inst, SledAgent):
            raise TypeError(f"SledAgentClient needs a running SledAgent, got {sled!r}")
        self.sled = sled
        self.agent = inst
        self.manager = inst.refs["instance-manager"]
        self.reservoir = inst.refs["reservoir"]
        self.notifier = inst.refs["nexus-notifier"]
        # The sled's own services: one of them gone is an internal error, not a VMM gone.
        self._services = frozenset({sled.path, *(ref.path for ref in inst.refs.values())})

    async def register(
        self,
        propolis_id: str,
        instance_id: str,
        spec: VmmSpec | None = None,
        migration_id: str | None = None,
        vmm_gen: int = 1,
    ) -> VmmRuntimeState:
        """Register the VMM (idempotent). *vmm_gen*: the generation of the runtime state
        Nexus holds for it (upstream's ``vmm_runtime``); registering an id again after a
        teardown passes the record's generation, so the new runner's states supersede it."""
        pid = _check_propolis_id(propolis_id)
        iid = check_id("instance_id", instance_id)
        vmm_spec = VmmSpec() if spec is None else check_spec("spec", spec)
        if migration_id is not None:
            check_id("migration_id", migration_id)
        gen = check_generation("vmm_gen", vmm_gen)
        with self._api_errors(pid):
            reg: Registration = await self.manager.ask(
                EnsureRegistered(pid, iid, vmm_spec, migration_id, gen), timeout=self.ask_timeout
            )
            state: VmmRuntimeState = await reg.runner.ask(CurrentState(), timeout=self.ask_timeout)
            return state

    async def unregister(self, propolis_id: str) -> VmmRuntimeState | None:
        pid = _check_propolis_id(propolis_id)
        with self._api_errors(pid):
            reg: Registration | None = await self.manager.ask(
                EnsureUnregistered(pid), timeout=self.ask_timeout
            )
            if reg is None:
                return None
            try:
                # Terminate is always admitted (a full request queue cannot refuse it) and
                # idempotent: the runner (or its drain) answers with the terminal state.
                state: VmmRuntimeState = await reg.runner.ask(
                    Terminate(by_nexus=True), timeout=self.ask_timeout
                )
            except ActorGone as gone:
                # The manager's own Terminate already ended the runner: its exit says how.
                return gone.reason.final if isinstance(gone.reason, RunnerExit) else None
            return state

    async def ensure_state(self, propolis_id: str, target: Target) -> VmmRuntimeState | None:
        pid = _check_propolis_id(propolis_id)
        if not isinstance(target, Target):
            kinds = ", ".join(t.name for t in Target)
            raise InvalidRequest("target", target, f"must be a Target ({kinds})", pid)
        with self._api_errors(pid):
            reg: Registration = await self.manager.ask(Lookup(pid), timeout=self.ask_timeout)
            if target in (Target.RUNNING, Target.MIGRATION_TARGET):
                # Zone creation is long: the caller gets None at once (upstream behaviour).
                await reg.runner.tell(PutState(target))
                return None
            result: VmmRuntimeState | None = await reg.runner.ask(
                PutState(target), timeout=self.ask_timeout
            )
            return result

    async def get_state(self, propolis_id: str) -> VmmRuntimeState:
        pid = _check_propolis_id(propolis_id)
        with self._api_errors(pid):
            reg: Registration = await self.manager.ask(Lookup(pid), timeout=self.ask_timeout)
            state: VmmRuntimeState = await reg.runner.ask(CurrentState(), timeout=self.ask_timeout)
            return state

    async def replace_vcr(self, propolis_id: str, backend_id: str, vcr: Volume) -> ReplaceResult:
        """Replace the VCR of the VMM's Crucible backend *backend_id* (upstream: Nexus
        calls Propolis's ``instance_issue_crucible_vcr_request`` directly)."""
        pid = _check_propolis_id(propolis_id)
        check_id("backend_id", backend_id)
        check_vcr("vcr", vcr)
        with self._api_errors(pid):
            reg: Registration = await self.manager.ask(Lookup(pid), timeout=self.ask_timeout)
            propolis = self._propolis(reg)
            try:
                result: ReplaceResult = await propolis.replace_vcr(backend_id, vcr)
            except ReplaceRequestInvalid as invalid:
                raise VcrReplacementInvalid("vcr", vcr, invalid.message, pid) from invalid
            return result

    async def set_reservoir_size(self, mode: SizeMiB | Percentage) -> ReservoirState:
        """Start resizing the reservoir: ``Pending(target)``, or ``Ready`` if already there."""
        if not isinstance(mode, SizeMiB | Percentage):
            why = f"must be a SizeMiB or a Percentage, got {type(mode).__name__}"
            raise InvalidRequest("mode", mode, why)
        with self._api_errors():
            try:
                state: ReservoirState = await self.reservoir.ask(
                    SetReservoirSize(mode), timeout=self.ask_timeout
                )
            except ReservoirConfigError as invalid:
                raise ReservoirConfigInvalid("mode", mode, str(invalid)) from invalid
            return state

    async def reservoir_status(self) -> ReservoirStatus:
        with self._api_errors():
            status: ReservoirStatus = await self.reservoir.ask(
                GetReservoir(), timeout=self.ask_timeout
            )
            return status

    async def sled_info(self) -> NotifierStatistics:
        """What the notifier knows and has told Nexus."""
        with self._api_errors():
            stats: NotifierStatistics = await self.notifier.ask(
                NotifierStatus(), timeout=self.ask_timeout
            )
            return stats

    # -- start sagas (#3325 tokens) ---------------------------------------------------

    async def saga_register(
        self, saga_id: str, propolis_id: str, instance_id: str, spec: VmmSpec | None = None
    ) -> StartToken:
        sid = check_id("saga_id", saga_id)
        pid = _check_propolis_id(propolis_id)
        iid = check_id("instance_id", instance_id)
        vmm_spec = VmmSpec() if spec is None else check_spec("spec", spec)
        with self._api_errors(pid):
            token: StartToken = await self.manager.ask(
                Register(sid, pid, iid, vmm_spec), timeout=self.ask_timeout
            )
            return token

    async def saga_start(self, token: StartToken) -> None:
        checked = _check_token(token)
        with self._api_errors(checked.propolis_id):
            await self.manager.ask(StartVmm(checked), timeout=self.ask_timeout)

    async def saga_release(self, token: StartToken) -> None:
        checked = _check_token(token)
        with self._api_errors(checked.propolis_id):
            await self.manager.ask(ReleaseToken(checked), timeout=self.ask_timeout)

    # -- helpers ------------------------------------------------------------------------

    def _propolis(self, reg: Registration) -> PropolisPort:
        """The VMM's Propolis, read from its runner without a message (so a VCR
        replacement adds no events to the trace), with a typed error for every stage of a
        teardown: runner gone or going, no Propolis yet, Propolis gone."""
        pid = reg.propolis_id
        runner = reg.runner.instance  # None once the runner has exited
        if not isinstance(runner, InstanceRunner):
            raise InstanceGone(pid, "the runner is gone")
        if runner.terminating:
            raise Terminating(pid, "the VMM is being torn down")
        handle = runner.propolis
        if handle is None:
            raise VmNotRunning(pid, "no Propolis is running (the VM has not been created)")
        if not handle.alive:
            raise InstanceGone(pid, "its Propolis is gone")
        return handle

    @contextlib.contextmanager
    def _api_errors(self, propolis_id: str = "") -> Iterator[None]:
        """Let ``SledAgentError`` through; turn anything else into one (the original is
        the ``__cause__``). ``BaseException`` (cancellation) is never caught."""
        try:
            yield
        except SledAgentError:
            raise
        except Exception as exc:
            raise self._typed(exc, propolis_id) from exc

    def _typed(self, exc: Exception, pid: str) -> SledAgentError:
        """The sled-agent error for a runtime or simulation error (the table in
        docs/upstream/sled-agent.md)."""
        match exc:
            case ActorGone(actor=actor, reason=reason):
                if actor in self._services:
                    return InternalError(pid, f"sled service {actor!r} is gone")
                if isinstance(reason, RunnerExit):
                    return InstanceGone(pid, f"the VMM was torn down ({reason.why})")
                return InstanceGone(pid, f"{actor!r} is gone")
            case MailboxFull(actor=actor):
                if actor in self._services:
                    return ServiceUnavailable(pid, f"the mailbox of {actor!r} is full")
                return InstanceChannelFull(pid, f"the mailbox of {actor!r} is full")
            case AskTimeout():
                return ServiceUnavailable(pid, str(exc))
            case RequestDenied(reason=reason):
                return PropolisRefused(pid, reason.code, str(exc))
            case Rejected():
                return ServiceUnavailable(pid, f"refused: {exc}")
            case Gone() | NoInstance():
                return InstanceGone(pid, f"Propolis: {exc}")
            case PropolisUnavailable():
                return ServiceUnavailable(pid, str(exc))
            case BackendNotFound():
                return NoSuchBackend(pid, str(exc))
            case ReservoirBusy():
                return ReservoirBusyError(exc)
        return InternalError(pid, f"{type(exc).__name__}: {exc}")
