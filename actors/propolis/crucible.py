"""The Crucible block backend of one disk, as an actor (crucible upstairs, propolis #841).

Activation needs a connection to **all three** downstairs targets of every region; one
black-holed target blocks it indefinitely (the livelock of propolis #841 / omicron #7398).
The ``Activate`` handler runs activation with ``serve_until``, so while it is blocked the
backend still answers ``Replace`` (VCR replacement) and ``BackendStatus``. A replacement
during activation restarts the replaced client against the new target, and activation can
then complete. Cancelling the *asker* of ``Activate`` (the state driver aborting startup)
only withdraws the waiter: nothing here is stopped, exactly the backend contract
("startup may be cancelled before vCPUs run, and ``stop`` is then not called").

Replacement validation (all ``ReplaceRequestInvalid``, HTTP 400), against the stored VCR:
identical -> "The VCRs have no difference"; id, block size, sub-volume count, region
parameters or read-only parent differ; a sub-volume generation not strictly greater
("sub_volume generation invalid"); more than one target differs ("multiple different
targets"). Results: ``Started`` (one target replaced; the stored VCR becomes the new one),
``VcrMatches`` (a generation-only bump; stored), and - as upstream decides before looking
at the old target - ``StartedAlready`` / ``CompletedAlready`` when the *new* target is
already one of the clients (still connecting / connected).
"""

from __future__ import annotations

import enum
from typing import Any

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
    "ReplaceRequestInvalid",
    "ReplaceResult",
    "Status",
    "Volume",
    "check_replacement",
]

# -- volume construction requests and messages -------------------------------------------


class Region(msgspec.Struct, frozen=True):
    """A region set: three downstairs holding the same data, plus its parameters."""

    id: str
    generation: int
    targets: tuple[str, str, str]
    extent_size: int = 131072
    extent_count: int = 64
    encrypted: bool = True


class Volume(msgspec.Struct, frozen=True):
    """A volume construction request (VCR)."""

    id: str
    block_size: int
    sub_volumes: tuple[Region, ...]
    read_only_parent: Volume | None = None

    def targets(self) -> list[str]:
        return [t for region in self.sub_volumes for t in region.targets]


class Activate(msgspec.Struct, frozen=True):
    """Ask: returns once the volume is active (all downstairs connected)."""


class Replace(msgspec.Struct, frozen=True):
    """Ask: replace the VCR; returns a ``ReplaceResult`` or raises ``ReplaceRequestInvalid``."""

    vcr: Volume


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


class ReplaceRequestInvalid(Exception):
    """A VCR replacement that can never be applied (HTTP 400)."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BackendStartError(Exception):
    """The backend failed to start (injected by tests); the VM ends Failed."""


# -- validation --------------------------------------------------------------------------


def check_replacement(old: Volume, new: Volume) -> tuple[str, str] | None:
    """Validate *new* against *old*: ``(old_target, new_target)`` for a one-target
    replacement, ``None`` for a generation-only bump; raises ``ReplaceRequestInvalid``."""
    if new == old:
        raise ReplaceRequestInvalid("The VCRs have no difference")
    if new.id != old.id:
        raise ReplaceRequestInvalid(f"VCR id mismatch: {old.id} != {new.id}")
    if new.block_size != old.block_size:
        raise ReplaceRequestInvalid(f"block_size mismatch: {old.block_size} != {new.block_size}")
    if len(new.sub_volumes) != len(old.sub_volumes):
        raise ReplaceRequestInvalid(
            f"sub_volume count mismatch: {len(old.sub_volumes)} != {len(new.sub_volumes)}"
        )
    if new.read_only_parent != old.read_only_parent:
        raise ReplaceRequestInvalid("read_only_parent mismatch")
    changed: list[tuple[str, str]] = []
    for o, n in zip(old.sub_volumes, new.sub_volumes, strict=True):
        if (o.id, o.extent_size, o.extent_count, o.encrypted) != (
            n.id,
            n.extent_size,
            n.extent_count,
            n.encrypted,
        ):
            raise ReplaceRequestInvalid(f"region params mismatch in sub_volume {o.id}")
        if n.generation <= o.generation:
            raise ReplaceRequestInvalid(
                f"sub_volume generation invalid: {n.generation} is not greater than {o.generation}"
            )
        changed.extend((a, b) for a, b in zip(o.targets, n.targets, strict=True) if a != b)
    if len(changed) > 1:
        raise ReplaceRequestInvalid(f"multiple different targets: {changed}")
    return changed[0] if changed else None


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
        self.connected: list[bool] = [False] * len(targets)
        self.progress: Watch[int] = Watch(0)
        self._scopes: list[trio.CancelScope | None] = [None] * len(targets)
        self._nursery: trio.Nursery | None = None

    async def handle(self, msg: Activate | Replace | Deactivate | Status) -> Any:
        match msg:
            case Activate():
                return await self._handle_activate()
            case Replace(vcr):
                return self._replace(vcr)
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
                    max(r.generation for r in self.vcr.sub_volumes),
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
        await self.serve_until(self._activate, serve=(Replace, Status))
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
            self.progress.set(self.progress.value + 1)

    def _replace(self, new: Volume) -> ReplaceResult:
        check = check_replacement(self.vcr, new)
        if check is None:
            self.vcr = new
            return ReplaceResult.VCR_MATCHES
        old_target, new_target = check
        if new_target in self.client_target:
            i = self.client_target.index(new_target)
            if self.connected[i]:
                return ReplaceResult.COMPLETED_ALREADY
            return ReplaceResult.STARTED_ALREADY
        i = self.client_target.index(old_target)
        self.vcr = new
        self.client_target[i] = new_target
        if self.state in ("activating", "active"):
            self._start_client(i)
        return ReplaceResult.STARTED

    async def on_stop(self, reason: object) -> None:
        for scope in self._scopes:
            if scope is not None:
                scope.cancel()
