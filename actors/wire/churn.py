"""VMM churn through a sled agent's HTTP API: the load the load test, ``bench/bench_wire.py``
and the rack drive.

``churn(url, clients=N, vmms_per_client=M)`` runs *N* concurrent clients; each takes *M*
VMMs, one after another, through ``register -> running -> (wait until running) ->``
either ``stopped -> unregister`` or ``unregister`` while running (alternately). A 503
(overload: ``INSTANCE_CHANNEL_FULL``, ``SERVICE_UNAVAILABLE``) is an answer, counted, and
the step is retried after a short pause (at most ``retries`` times); any other error
answer ends that VMM's cycle (counted in ``vmms_failed``).

Guarantees: every request is counted once as sent and once as answered (with its status
and latency) or as a transport failure (no answer: ``sent - answered``); everything runs
in the caller's nursery and is bounded (each request by the client's timeout, each wait
for ``running`` by ``wait_running`` seconds), so ``churn`` always returns. Clients never
share a VMM, so the only contention is the sled's own (its manager, its services).
"""

from __future__ import annotations

import statistics as stats
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio

from .client import HttpClient, HttpStatusError, TransportError

__all__ = ["ChurnResult", "churn", "percentile"]


def percentile(values: list[float], q: float) -> float:
    """The *q*-quantile (0..1) of *values* by the nearest-rank method (0.0 if empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class ChurnResult:
    """What a churn did. Latencies are seconds (real time), per answered request."""

    sent: int = 0
    answered: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    vmms_started: int = 0
    vmms_running: int = 0
    vmms_done: int = 0
    vmms_failed: int = 0
    elapsed: float = 0.0

    @property
    def server_errors(self) -> int:
        """Answers 5xx other than 503 (none is ever expected)."""
        return sum(n for status, n in self.statuses.items() if status >= 500 and status != 503)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "sent": self.sent,
            "answered": self.answered,
            "statuses": dict(sorted(self.statuses.items())),
            "error_codes": dict(sorted(self.error_codes.items())),
            "transport_errors": dict(self.transport_errors),
            "vmms": {
                "started": self.vmms_started,
                "running": self.vmms_running,
                "done": self.vmms_done,
                "failed": self.vmms_failed,
            },
            "elapsed_s": round(self.elapsed, 3),
            "requests_per_s": round(self.answered / self.elapsed, 1) if self.elapsed else 0.0,
            "latency_ms": {
                "p50": round(percentile(lat, 0.50) * 1e3, 2),
                "p99": round(percentile(lat, 0.99) * 1e3, 2),
                "max": round(max(lat, default=0.0) * 1e3, 2),
                "mean": round(stats.fmean(lat) * 1e3, 2) if lat else 0.0,
            },
        }


class _Failed(Exception):
    """A VMM's cycle ended by an error answer other than a retried 503."""


class _Churner:
    def __init__(self, http: HttpClient, result: ChurnResult, retries: int, wait_running: float):
        self.http = http
        self.result = result
        self.retries = retries
        self.wait_running = wait_running

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """One request; retried on 503 (each attempt counted). Raises ``_Failed`` on any
        other error answer or when no answer came."""
        r = self.result
        for attempt in range(self.retries + 1):
            r.sent += 1
            t0 = trio.current_time()
            try:
                reply = await self.http.call(method, path, body, response=dict)
            except HttpStatusError as err:
                r.answered += 1
                r.latencies.append(trio.current_time() - t0)
                r.statuses[err.status] += 1
                r.error_codes[err.error_code or "?"] += 1
                if err.status == 503 and attempt < self.retries:
                    await trio.sleep(0.01 * 2**attempt)
                    continue
                raise _Failed(f"{method} {path}: {err}") from None
            except TransportError as err:
                r.transport_errors[err.kind] += 1
                raise _Failed(f"{method} {path}: {err}") from None
            r.answered += 1
            r.latencies.append(trio.current_time() - t0)
            r.statuses[200] += 1
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def cycle(self, pid: str, index: int) -> None:
        r = self.result
        body = {
            "instance_id": f"inst-{pid}",
            "vmm_spec": {"ncpus": 2, "memory_bytes": 1 << 30},
            "vmm_runtime": {"gen": 1, "state": "starting", "time_updated": _EPOCH},
        }
        try:
            await self.request("PUT", f"/vmms/{pid}", body)
            r.vmms_started += 1
            await self.request("PUT", f"/vmms/{pid}/state", {"state": {"type": "running"}})
            with trio.move_on_after(self.wait_running) as waited:
                while True:
                    state = await self.request("GET", f"/vmms/{pid}/state")
                    if state["vmm_state"]["state"] == "running":
                        break
                    await trio.sleep(0.002)
            if waited.cancelled_caught:
                raise _Failed(f"{pid} did not reach running in {self.wait_running} s")
            r.vmms_running += 1
            if index % 2 == 0:
                await self.request("PUT", f"/vmms/{pid}/state", {"state": {"type": "stopped"}})
            await self.request("DELETE", f"/vmms/{pid}")
            r.vmms_done += 1
        except _Failed:
            r.vmms_failed += 1


_EPOCH = "2026-01-01T00:00:00Z"


async def churn(
    url: str,
    *,
    clients: int,
    vmms_per_client: int,
    prefix: str = "churn",
    retries: int = 5,
    wait_running: float = 10.0,
    timeout: float = 10.0,
) -> ChurnResult:
    """Churn ``clients * vmms_per_client`` VMMs through the agent at *url* (see the module
    docstring); VMM ids are ``<prefix>-<client>-<n>``."""
    if clients < 1 or vmms_per_client < 1:
        raise ValueError(
            f"clients and vmms_per_client must be >= 1, got {clients}, {vmms_per_client}"
        )
    result = ChurnResult()
    async with HttpClient(url, timeout=timeout, max_connections=clients) as http:
        churner = _Churner(http, result, retries, wait_running)

        async def client(c: int) -> None:
            for i in range(vmms_per_client):
                await churner.cycle(f"{prefix}-{c}-{i}", i)

        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            for c in range(clients):
                nursery.start_soon(client, c)
        result.elapsed = trio.current_time() - t0
    return result
