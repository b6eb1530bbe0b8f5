"""Nexus's internal API over HTTP, the clients: the sled agent's (``HttpNexus``, a
``ports.NexusPort``) and the one of the simulation's admin endpoints (``NexusAdmin``, for
tests and ``trioxide rack``); the server is ``nexus_api.py``.

**Client guarantees** (``HttpNexus``, the ``NexusPort`` error contract): every call ends
within ``timeout`` seconds in its result or a ``NexusError`` carrying the HTTP status -
503 ``NexusUnavailable``, 409 ``NexusConflict``, 404 ``NexusNotFound``, any other error
status a ``NexusStatusError`` with that status - and a transport failure (refused,
dropped, timed out, an unreadable answer) is ``NexusUnavailable``. Cancellation is
honoured: a cancelled call abandons its request.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec
import trio

from ..propolis.crucible import ReplaceResult, Volume
from ..sim.nexus import NexusUnavailable, SledInfo, nexus_error
from ..vmm_state import VmmRuntimeState
from .client import HttpClient, HttpStatusError, TransportError
from .nexus_api import (
    ConflictsBody,
    ErrorsBody,
    FaultsState,
    NexusSummary,
    Op,
    OutageBody,
    SledAgentInfoBody,
    VcrRequestBody,
    VcrResponse,
    VmmRecord,
    sled_from_wire,
    sled_to_wire,
)
from .types import to_wire

__all__ = ["CLIENT_TIMEOUT", "HttpNexus", "HttpNexusStatistics", "NexusAdmin"]

T = TypeVar("T")

#: Seconds a client call may take in all (connect, send, wait, read).
CLIENT_TIMEOUT = 5.0


class HttpNexusStatistics(msgspec.Struct, frozen=True):
    """Calls made, answered with a 2xx, answered with an error (per status), and left
    without an answer (per transport failure kind: connect, timeout, protocol)."""

    calls: int
    ok: int
    errors: dict[int, int]
    unreachable: dict[str, int]


class HttpNexus:
    """``ports.NexusPort`` over HTTP: a sled agent's client of Nexus at *base_url*."""

    def __init__(self, base_url: str, *, timeout: float = CLIENT_TIMEOUT) -> None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be > 0 and finite, got {timeout!r}")
        self.timeout = timeout
        self.client = HttpClient(base_url, timeout=timeout)
        self._calls = 0
        self._ok = 0
        self._errors: dict[int, int] = {}
        self._unreachable: dict[str, int] = {}

    @property
    def base_url(self) -> str:
        return self.client.base_url

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> HttpNexus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def put_vmm_state(self, propolis_id: str, runtime: VmmRuntimeState) -> bool:
        """``cpapi_instances_put``. True once Nexus accepted it: upstream answers 204
        whether or not the generation was newer, so over the wire True means *accepted*
        (Nexus keeps the newer of the two either way)."""
        await self._call("PUT", f"/vmms/{_seg(propolis_id)}", to_wire(runtime))
        return True

    async def get_sled(self, sled_id: str) -> SledInfo:
        body = await self._call("GET", f"/sled-agents/{_seg(sled_id)}", response=SledAgentInfoBody)
        if body is None:
            raise NexusUnavailable(f"sled_agent_get {sled_id}: an empty answer")
        return sled_from_wire(sled_id, body)

    async def put_sled(self, info: SledInfo) -> None:
        await self._call("POST", f"/sled-agents/{_seg(info.sled_id)}", sled_to_wire(info))

    async def _call(
        self, method: str, path: str, body: Any = None, *, response: type[T] | None = None
    ) -> T | None:
        self._calls += 1
        result: T | None = None
        with trio.move_on_after(self.timeout) as scope:
            try:
                result = await self.client.call(
                    method, path, body, response=response, timeout=self.timeout
                )
            except HttpStatusError as exc:
                self._errors[exc.status] = self._errors.get(exc.status, 0) + 1
                raise nexus_error(exc.status, f"{method} {path}: {exc}") from None
            except TransportError as exc:
                self._unreachable[exc.kind] = self._unreachable.get(exc.kind, 0) + 1
                raise NexusUnavailable(f"{method} {path}: Nexus unreachable: {exc}") from None
            self._ok += 1
            return result
        assert scope.cancelled_caught
        self._unreachable["timeout"] = self._unreachable.get("timeout", 0) + 1
        raise NexusUnavailable(f"{method} {path}: no answer within {self.timeout} s")

    def statistics(self) -> HttpNexusStatistics:
        return HttpNexusStatistics(
            self._calls, self._ok, dict(self._errors), dict(self._unreachable)
        )


def _seg(value: str) -> str:
    """*value* as one path segment."""
    return quote(value, safe="")


class NexusAdmin:
    """The simulated Nexus's admin endpoints (tests and ``trioxide rack``). Errors are
    the client's: ``HttpStatusError`` / ``TransportError``."""

    def __init__(self, base_url: str, *, timeout: float = CLIENT_TIMEOUT) -> None:
        self.client = HttpClient(base_url, timeout=timeout)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> NexusAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _faults(self, method: str, path: str, body: Any) -> FaultsState:
        return _present(await self.client.call(method, path, body, response=FaultsState))

    async def outage(self, active: bool, seconds: float | None = None) -> FaultsState:
        return await self._faults("PUT", "/sim/outage", OutageBody(active, seconds))

    async def inject_conflicts(self, count: int) -> FaultsState:
        return await self._faults("POST", "/sim/conflicts", ConflictsBody(count))

    async def inject_errors(
        self, count: int, *, status: int = 500, op: Op | None = None
    ) -> FaultsState:
        return await self._faults("POST", "/sim/errors", ErrorsBody(count, status, op))

    async def decommission(self, sled_id: str) -> None:
        await self.client.call("POST", f"/sim/sleds/{_seg(sled_id)}/decommission")

    async def vmm(self, propolis_id: str) -> VmmRecord | None:
        """Nexus's record of *propolis_id*; ``None`` if it never heard of it."""
        try:
            return await self.client.call(
                "GET", f"/sim/vmms/{_seg(propolis_id)}", response=VmmRecord
            )
        except HttpStatusError as exc:
            if exc.status == 404:
                return None
            raise

    async def summary(self) -> NexusSummary:
        return _present(await self.client.call("GET", "/sim/summary", response=NexusSummary))

    async def replace_vcr(self, propolis_id: str, disk_id: str, vcr: Volume) -> ReplaceResult:
        path = f"/sim/vmms/{_seg(propolis_id)}/disks/{_seg(disk_id)}/vcr"
        answer = await self.client.call("POST", path, VcrRequestBody(vcr), response=VcrResponse)
        return _present(answer).result


def _present(value: T | None) -> T:
    if value is None:
        raise TransportError("protocol", "", "an empty answer where a body was expected")
    return value
