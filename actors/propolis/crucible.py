"""The Crucible block backend of one disk, as an actor (crucible upstairs, propolis #841).

Activation needs a connection to **every** downstairs target of every region (the
sub-volumes and the read-only parent's regions); one black-holed target blocks it
indefinitely (the livelock of propolis #841 / omicron #7398). The ``Activate`` handler runs
activation with ``serve_until``, so while it is blocked the backend still answers
``Replace`` (VCR replacement), ``ReplaceDownstairs`` and ``BackendStatus``. A replacement
during activation restarts the replaced client against the new target, and activation can
then complete. Cancelling the *asker* of ``Activate`` (the state driver aborting startup)
only withdraws the waiter: nothing here is stopped, exactly the backend contract
("startup may be cancelled before vCPUs run, and ``stop`` is then not called").

VCR replacement follows crucible ``upstairs/src/volume.rs`` (``target_replace`` ->
``compare_vcr_for_target_replacement`` -> ``compare_vcr_for_update``) and, for the result,
``Downstairs::replace`` in ``upstairs/src/downstairs.rs``; see ``docs/upstream/crucible.md``.
:func:`check_replacement` validates the new VCR against the stored one (every error is
``ReplaceRequestInvalid``, HTTP 400) and yields the one ``(old, new)`` target pair, or
``None`` for a generation-only update (``VcrMatches``). The backend then looks for the pair
in its client sets, one set of three per region, sub-volumes first, then the read-only
parent: ``Started`` (the old client restarts against the new target), ``StartedAlready`` /
``CompletedAlready`` (the new target is already a client of that region and the old one is
not), or an error ("both in use", another downstairs of the region still being replaced,
old target not found). As in propolis, the stored VCR becomes the new one on every success.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import trio

from trioxide.runtime import Actor, Watch

from ..sim.network import DownstairsNetwork

__all__ = [
    "Activate",
    "BackendStartError",
    "BackendStatus",
    "CrucibleBackend",
    "Deactivate",
    "Region",
    "Replace",
    "ReplaceDownstairs",
    "ReplaceRequestInvalid",
    "ReplaceResult",
    "Status",
    "Volume",
    "check_migration",
    "check_replacement",
]

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1

# -- volume construction requests and messages -------------------------------------------


class Region(msgspec.Struct, frozen=True, tag_field="type", tag="region"):
    """A region set (upstream ``VolumeConstructionRequest::Region``): three downstairs
    holding the same data, the region's parameters, its generation (a u64) and its
    ``CrucibleOpts``, flattened: ``id`` is ``opts.id``, ``targets`` is ``opts.target``, and
    the fields from ``lossy`` on are the other options."""

    id: str
    generation: int
    targets: tuple[str, str, str]
    block_size: int = 512
    blocks_per_extent: int = 131072
    extent_count: int = 64
    lossy: bool = False
    flush_timeout: float | None = None
    key: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None
    root_cert_pem: str | None = None
    control: str | None = None
    read_only: bool = False


# The ``CrucibleOpts`` fields other than id and targets, in the order upstream checks them.
_OPTS_FIELDS = (
    "lossy",
    "flush_timeout",
    "key",
    "cert_pem",
    "key_pem",
    "root_cert_pem",
    "control",
    "read_only",
)


class Volume(msgspec.Struct, frozen=True, tag_field="type", tag="volume"):
    """A volume construction request (VCR, upstream ``VolumeConstructionRequest::Volume``).

    The read-only parent is a region or a volume (which may have a parent of its own)."""

    id: str
    block_size: int
    sub_volumes: tuple[Region, ...]
    read_only_parent: Volume | Region | None = None

    def regions(self) -> list[Region]:
        """Every region, in the order upstream searches them for a replacement: the
        sub-volumes, then the read-only parent's regions (depth first)."""
        out = list(self.sub_volumes)
        parent = self.read_only_parent
        if isinstance(parent, Region):
            out.append(parent)
        elif parent is not None:
            out.extend(parent.regions())
        return out

    def targets(self) -> list[str]:
        return [t for region in self.regions() for t in region.targets]


class Activate(msgspec.Struct, frozen=True):
    """Ask: returns once the volume is active (all downstairs connected)."""


class Replace(msgspec.Struct, frozen=True):
    """Ask: replace the VCR; returns a ``ReplaceResult`` or raises ``ReplaceRequestInvalid``."""

    vcr: Volume


class ReplaceDownstairs(msgspec.Struct, frozen=True):
    """Ask: replace downstairs *old* by *new* directly (upstream ``BlockIO::replace_downstairs``,
    no VCR involved, the stored VCR is not touched); returns a ``ReplaceResult`` (``Missing``
    when no region has *old* or *new*) or raises ``ReplaceRequestInvalid``."""

    old: str
    new: str


class Deactivate(msgspec.Struct, frozen=True):
    """Ask: the backend's ``stop`` (flush and detach). Called on a normal VM stop only."""


class Status(msgspec.Struct, frozen=True):
    """Ask: a ``BackendStatus`` snapshot."""


class BackendStatus(msgspec.Struct, frozen=True):
    backend_id: str
    state: str  # inactive | activating | active | stopped
    generation: int
    targets: tuple[str, ...]
    connected: tuple[bool, ...]
    stop_called: bool


class ReplaceResult(enum.Enum):
    STARTED = "Started"
    STARTED_ALREADY = "StartedAlready"
    COMPLETED_ALREADY = "CompletedAlready"
    VCR_MATCHES = "VcrMatches"
    MISSING = "Missing"  # ReplaceDownstairs only; a VCR replacement turns it into an error


class ReplaceRequestInvalid(Exception):
    """A VCR replacement that can never be applied (HTTP 400)."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BackendStartError(Exception):
    """The backend failed to start (injected by tests); the VM ends Failed."""


# -- validation --------------------------------------------------------------------------

# How one region compares with its replacement (upstream ``VCRDelta``): identical, a higher
# generation only, or exactly one target changed (the generation may be equal or higher).
_Same = Literal["same"]
_Generation = Literal["generation"]
_RegionDelta = _Same | _Generation | tuple[str, str]


@dataclass(frozen=True)
class _VolumeCompare:
    """How a volume compares (upstream ``CompareResult::Volume``); ``parent`` is ``None``
    when the replacement has no read-only parent (upstream ``NewMissing``)."""

    subs: tuple[_RegionDelta, ...]
    parent: _VolumeCompare | _RegionDelta | None


def _invalid(message: str) -> ReplaceRequestInvalid:
    return ReplaceRequestInvalid(message)


def _check_ranges(vcr: Volume | Region) -> None:
    """Upstream VCRs carry u64 generations, block sizes and blocks per extent and a u32
    extent count: a value outside those never deserializes there (also a 400)."""
    if isinstance(vcr, Volume):
        if not 0 <= vcr.block_size <= U64_MAX:
            raise _invalid(f"volume {vcr.id!r} block_size {vcr.block_size} is not a u64")
        for region in vcr.sub_volumes:
            _check_ranges(region)
        if vcr.read_only_parent is not None:
            _check_ranges(vcr.read_only_parent)
        return
    for name, top in (
        ("generation", U64_MAX),
        ("block_size", U64_MAX),
        ("blocks_per_extent", U64_MAX),
        ("extent_count", U32_MAX),
    ):
        value = getattr(vcr, name)
        if not 0 <= value <= top:
            raise _invalid(f"region {vcr.id!r} {name} {value} is out of range (0..={top})")


def _compare_region(o: Region, n: Region) -> _RegionDelta:
    """Upstream ``compare_vcr_region_for_replacement``: any difference other than a higher
    generation and/or one changed target is an error."""
    if o == n:
        return "same"
    for name in ("block_size", "blocks_per_extent", "extent_count"):
        if getattr(o, name) != getattr(n, name):
            raise _invalid(
                f"sub_volume {o.id!r} {name} mismatch: {getattr(o, name)!r} vs. "
                f"{getattr(n, name)!r}"
            )
    if n.generation < o.generation:
        raise _invalid(f"sub_volume {o.id!r} generation too low: {n.generation} < {o.generation}")
    if o.id != n.id:
        raise _invalid(f"sub_volume opts id mismatch: {o.id!r} vs. {n.id!r}")
    for name in _OPTS_FIELDS:
        if getattr(o, name) != getattr(n, name):
            raise _invalid(
                f"sub_volume {o.id!r} opts {name} mismatch: {getattr(o, name)!r} vs. "
                f"{getattr(n, name)!r}"
            )
    changed = [(a, b) for a, b in zip(o.targets, n.targets, strict=True) if a != b]
    if len(changed) > 1:
        raise _invalid(
            f"sub_volume {o.id!r} has multiple different targets: {list(o.targets)} vs. "
            f"{list(n.targets)}"
        )
    if changed:
        return changed[0]
    # Every compared field is equal but the generation (upstream asserts that it differs;
    # equal here means the structs differed only in representation, e.g. a list of targets).
    return "generation" if n.generation != o.generation else "same"


def _compare_volume(o: Volume, n: Volume) -> _VolumeCompare:
    """Upstream ``compare_vcr_for_replacement`` for two volumes: the first mismatch found
    is raised at once; the caller judges the collected deltas."""
    if o.id != n.id:
        raise _invalid(f"VCR id mismatch: {o.id!r} vs. {n.id!r}")
    if o.block_size != n.block_size:
        raise _invalid(f"volume {o.id!r} block_size mismatch: {o.block_size} vs. {n.block_size}")
    if len(o.sub_volumes) != len(n.sub_volumes):
        raise _invalid(
            f"volume {o.id!r} sub_volume count mismatch: {len(o.sub_volumes)} vs. "
            f"{len(n.sub_volumes)}"
        )
    subs = tuple(_compare_region(a, b) for a, b in zip(o.sub_volumes, n.sub_volumes, strict=True))
    op, np_ = o.read_only_parent, n.read_only_parent
    parent: _VolumeCompare | _RegionDelta | None
    if np_ is None:
        parent = None  # the parent goes away once scrubbed: dropping it is valid
    elif op is None:
        raise _invalid(f"volume {o.id!r}: the replacement adds a read_only_parent ({np_.id!r})")
    elif isinstance(op, Volume) and isinstance(np_, Volume):
        parent = _compare_volume(op, np_)
    elif isinstance(op, Region) and isinstance(np_, Region):
        parent = _compare_region(op, np_)
    else:
        raise _invalid(
            f"volume {o.id!r}: read_only_parent kind changed: {type(op).__name__} vs. "
            f"{type(np_).__name__}"
        )
    return _VolumeCompare(subs, parent)


def _deltas(cmp: _VolumeCompare | _RegionDelta | None) -> list[_RegionDelta]:
    """Every region delta of a comparison, read-only parents (and theirs) included."""
    if cmp is None:
        return []
    if isinstance(cmp, _VolumeCompare):
        return [d for sub in cmp.subs for d in _deltas(sub)] + _deltas(cmp.parent)
    return [cmp]


def check_replacement(old: Volume, new: Volume) -> tuple[str, str] | None:
    """Validate *new* against the stored *old* VCR (upstream ``compare_vcr_for_update``):
    ``(old_target, new_target)`` when exactly one target changed (in a sub-volume or in the
    read-only parent), ``None`` for a generation-only update; raises
    ``ReplaceRequestInvalid`` otherwise."""
    _check_ranges(new)
    cmp = _compare_volume(old, new)
    deltas = _deltas(cmp)
    changed = [d for d in deltas if isinstance(d, tuple)]
    if len(changed) > 1:
        raise _invalid(f"multiple different targets across the VCR: {changed}")
    if all(d == "same" for d in deltas):
        raise _invalid("The VCRs have no difference")
    if changed:
        return changed[0]
    # A generation-only update. Upstream decides by the *first* sub-volume alone: unchanged
    # there means the bump is elsewhere, which it reports as a read-only parent bump.
    if not cmp.subs:
        raise _invalid(f"volume {old.id!r} has no sub_volume to carry a generation bump")
    if cmp.subs[0] == "same":
        first = old.sub_volumes[0]
        raise _invalid(
            f"generation bump without a change to sub_volume 0 ({first.id!r} stays at "
            f"generation {first.generation}): a read_only_parent generation bump alone is "
            "not valid"
        )
    return None


def check_migration(old: Volume, new: Volume) -> None:
    """Validate *new* for a migration target (upstream ``compare_vcr_for_migration``): the
    update rules of :func:`check_replacement`, and no target may change."""
    pair = check_replacement(old, new)
    if pair is not None:
        raise _invalid(f"VCR targets are different: {pair[0]} -> {pair[1]}")


# -- the actor ---------------------------------------------------------------------------


class CrucibleBackend(Actor):
    def __init__(
        self,
        backend_id: str,
        vcr: Volume,
        net: DownstairsNetwork,
        fail_activation: bool = False,
    ) -> None:
        self.backend_id = backend_id
        self.vcr = vcr
        self.net = net
        self.fail_activation = fail_activation
        self.state = "inactive"
        self.stop_called = False
        targets = vcr.targets()
        self.client_target: list[str] = list(targets)
        # One upstairs per region (three clients each), in upstream's search order.
        self.groups: list[range] = [range(i, i + 3) for i in range(0, len(targets), 3)]
        self.connected: list[bool] = [False] * len(targets)
        # Replaced while active and not back yet (upstream Connecting{Replaced}/LiveRepair).
        self.replacing: list[bool] = [False] * len(targets)
        self.progress: Watch[int] = Watch(0)
        self._scopes: list[trio.CancelScope | None] = [None] * len(targets)
        self._nursery: trio.Nursery | None = None

    async def handle(
        self, msg: Activate | Replace | ReplaceDownstairs | Deactivate | Status
    ) -> Any:
        match msg:
            case Activate():
                return await self._handle_activate()
            case Replace(vcr):
                return self._replace(vcr)
            case ReplaceDownstairs(old, new):
                return self._replace_downstairs(old, new)
            case Deactivate():
                self.stop_called = True
                self.state = "stopped"
                for scope in self._scopes:
                    if scope is not None:
                        scope.cancel()
                return None
            case Status():
                return BackendStatus(
                    self.backend_id,
                    self.state,
                    max((r.generation for r in self.vcr.sub_volumes), default=0),
                    tuple(self.client_target),
                    tuple(self.connected),
                    self.stop_called,
                )
        return None

    async def _handle_activate(self) -> str:
        if self.state == "active":
            return "active"
        if self.state == "stopped":
            raise BackendStartError(f"backend {self.backend_id} was stopped")
        if self.fail_activation:
            raise BackendStartError(f"backend {self.backend_id}: region set unavailable")
        self.state = "activating"
        await self.serve_until(self._activate, serve=(Replace, ReplaceDownstairs, Status))
        self.state = "active"
        return "active"

    async def _activate(self) -> None:
        """Connect a client to every target; done when all are connected."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for i in range(len(self.client_target)):
                self._start_client(i)
            await self.progress.wait_for(lambda _: all(self.connected))
            self._nursery = None

    def _start_client(self, i: int) -> None:
        old = self._scopes[i]
        if old is not None:
            old.cancel()
        scope = self._scopes[i] = trio.CancelScope()
        self.connected[i] = False
        nursery = self._nursery
        if nursery is not None:
            nursery.start_soon(self._client, i, self.client_target[i], scope)
        else:  # active: the replacement reconnects in the background (live repair)
            self.start_soon(self._client, i, self.client_target[i], scope, name=f"client-{i}")

    async def _client(self, i: int, target: str, scope: trio.CancelScope) -> None:
        with scope:
            await self.net.connect(target)
            self.connected[i] = True
            self.replacing[i] = False
            self.progress.set(self.progress.value + 1)

    def _replace_downstairs(self, old: str, new: str) -> ReplaceResult:
        """Upstream ``Volume::replace_downstairs`` over ``Downstairs::replace``: the first
        region holding *new* or *old* decides."""
        for group in self.groups:
            new_i = next((i for i in group if self.client_target[i] == new), None)
            old_i = next((i for i in group if self.client_target[i] == old), None)
            if new_i is not None:
                if old_i is not None:
                    raise _invalid(f"Both old {old} and new {new} targets are in use")
                # The old target is gone: assume it was this replacement.
                if self.replacing[new_i]:
                    return ReplaceResult.STARTED_ALREADY
                return ReplaceResult.COMPLETED_ALREADY
            if old_i is None:
                continue
            for i in group:  # one downstairs of a region offline at a time
                if i != old_i and self.replacing[i]:
                    raise _invalid(
                        f"Replace {old} failed: downstairs {i - group.start} "
                        f"({self.client_target[i]}) is still being replaced"
                    )
            self.client_target[old_i] = new
            # Before activation completes the new client simply connects as a new one.
            self.replacing[old_i] = self.state == "active"
            if self.state in ("activating", "active"):
                self._start_client(old_i)
            return ReplaceResult.STARTED
        return ReplaceResult.MISSING

    def _replace(self, new: Volume) -> ReplaceResult:
        """Upstream ``Volume::target_replace``; the stored VCR becomes *new* on success
        (propolis ``reconfigure_crucible_volume``)."""
        pair = check_replacement(self.vcr, new)
        if pair is None:
            self.vcr = new
            return ReplaceResult.VCR_MATCHES
        old_target, new_target = pair
        try:
            result = self._replace_downstairs(old_target, new_target)
        except ReplaceRequestInvalid as exc:
            raise _invalid(
                f"Replace downstairs failed for volume {self.vcr.id!r}: {exc.message}"
            ) from None
        if result is ReplaceResult.MISSING:
            raise _invalid(f"Volume {self.vcr.id!r} can't locate {old_target} to replace")
        self.vcr = new
        return result

    async def on_stop(self, reason: object) -> None:
        for scope in self._scopes:
            if scope is not None:
                scope.cancel()
