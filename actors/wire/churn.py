"""VMM churn through a sled agent's HTTP API: the load the load test, ``bench/bench_wire.py``
and ``trioxide rack`` drive.

``AgentCalls`` makes the requests to one agent and counts each one (``ChurnResult``);
``AgentCalls.cycle`` takes one VMM through ``register -> running -> (wait until it runs)
-> (hold) ->`` ``stopped`` and/or ``unregister``. ``churn(url, clients=N,
vmms_per_client=M)`` runs *N* concurrent clients, each taking *M* VMMs through a cycle one
after another (alternately stopped then unregistered, or unregistered while running).

A 503 (overload: ``INSTANCE_CHANNEL_FULL``, ``SERVICE_UNAVAILABLE``) is an answer, counted,
and the request is retried after a short pause (at most ``retries`` times); any other
error answer, or no answer, ends that VMM's cycle (``vmms_failed``, its outcome says why).

Guarantees: every request is counted once as sent and once as answered (with its status,
error code and latency) or as a transport failure (no answer: ``sent - answered``); every
wait is bounded (each request by the client's timeout, each wait for a state by
``wait`` seconds), so a cycle and ``churn`` always return. Clients never share a VMM, so
the only contention is the sled's own (its manager, its services).
"""

from __future__ import annotations

import datetime as dt
import statistics as stats
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from ..propolis.crucible import Volume
from .client import HttpClient, HttpStatusError, TransportError

__all__ = ["AgentCalls", "ChurnResult", "churn", "percentile"]

#: States after which a VMM never runs again.
TERMINAL = ("destroyed", "failed")


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
    latency_by_op: dict[str, list[float]] = field(default_factory=dict)
    errors_by_op: Counter[str] = field(default_factory=Counter)  # "op: status CODE"
    unanswered: list[str] = field(default_factory=list)  # what got no answer, and why
    outcomes: dict[str, str] = field(default_factory=dict)  # VMM id -> how its cycle went
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


def ensure_body(pid: str, disks: dict[str, Volume] | None = None) -> dict[str, Any]:
    """A register (``vmm_register``) body for VMM *pid*: 2 vCPUs, 1 GiB, *disks*."""
    spec: dict[str, Any] = {"ncpus": 2, "memory_bytes": 1 << 30}
    if disks:
        spec["disks"] = msgspec.to_builtins(disks)
    now = dt.datetime.now(dt.UTC).isoformat()
    return {
        "instance_id": f"inst-{pid}",
        "vmm_spec": spec,
        "vmm_runtime": {"gen": 1, "state": "starting", "time_updated": now},
    }


class AgentCalls:
    """Requests to one sled agent over *http*, each counted in *result* (see the module
    docstring). No method raises for an error answer or a missing one: they return the
    status (0: no answer)."""

    def __init__(
        self, http: HttpClient, result: ChurnResult, *, retries: int = 5, poll: float = 0.002
    ) -> None:
        self.http = http
        self.result = result
        self.retries = retries
        self.poll = poll

    async def call(self, op: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``(status, decoded body or None)``; a 503 is retried (each attempt counted)."""
        r = self.result
        for attempt in range(self.retries + 1):
            r.sent += 1
            t0 = trio.current_time()
            try:
                reply = await self.http.call(method, path, body, response=dict)
            except HttpStatusError as err:
                self._answered(op, err.status, t0)
                r.error_codes[err.error_code or "?"] += 1
                r.errors_by_op[f"{op}: {err.status} {err.error_code}"] += 1
                if err.status == 503 and attempt < self.retries:
                    await trio.sleep(0.01 * 2**attempt)
                    continue
                return err.status, None
            except TransportError as err:
                r.transport_errors[err.kind] += 1
                r.unanswered.append(f"{method} {self.http.base_url}{path}: {err}")
                return 0, None
            self._answered(op, 200, t0)
            return 200, reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _answered(self, op: str, status: int, t0: float) -> None:
        r = self.result
        latency = trio.current_time() - t0
        r.answered += 1
        r.statuses[status] += 1
        r.latencies.append(latency)
        r.latency_by_op.setdefault(op, []).append(latency)

    async def register(self, pid: str, disks: dict[str, Volume] | None = None) -> int:
        status, _ = await self.call("register", "PUT", f"/vmms/{pid}", ensure_body(pid, disks))
        return status

    async def put_state(self, pid: str, target: str) -> int:
        body = {"state": {"type": target}}
        status, _ = await self.call(f"put {target}", "PUT", f"/vmms/{pid}/state", body)
        return status

    async def unregister(self, pid: str) -> int:
        status, _ = await self.call("unregister", "DELETE", f"/vmms/{pid}")
        return status

    async def state(self, pid: str) -> str | None:
        """The VMM's state; ``None`` if the sled does not have it (or did not answer)."""
        status, got = await self.call("get state", "GET", f"/vmms/{pid}/state")
        if status != 200 or got is None:
            return None
        return str(got["vmm_state"]["state"])

    async def wait_state(self, pid: str, want: tuple[str, ...], *, within: float) -> str | None:
        """Poll until the VMM is in one of *want* or a terminal state (that state), or the
        sled does not have it (``None``); ``"stuck"`` after *within* seconds."""
        with trio.move_on_after(within):
            while True:
                state = await self.state(pid)
                if state is None or state in want or state in TERMINAL:
                    return state
                await trio.sleep(self.poll)
        return "stuck"

    async def wait_gone(self, pid: str, *, within: float) -> str:
        """Poll until the sled does not have the VMM any more; the last state seen
        (``"stuck in <state>"`` after *within* seconds)."""
        last = "registered"
        with trio.move_on_after(within):
            while True:
                state = await self.state(pid)
                if state is None:
                    return last
                last = state
                await trio.sleep(self.poll)
        return f"stuck in {last}"

    async def cycle(
        self,
        pid: str,
        *,
        stop: bool = True,
        hold: float = 0.0,
        wait: float = 10.0,
        wait_gone: bool = False,
        disks: dict[str, Volume] | None = None,
    ) -> bool:
        """One VMM from register to unregister; whether it reached ``running``. *stop*:
        ask for ``stopped`` before unregistering (else unregister it while it runs);
        *hold*: seconds it runs first; *wait_gone*: after the stop, wait until the sled
        let it go. Its outcome is in ``result.outcomes[pid]``."""
        r = self.result
        if (status := await self.register(pid, disks)) != 200:
            r.vmms_failed += 1
            r.outcomes[pid] = f"register answered {status}"
            return False
        r.vmms_started += 1
        if (status := await self.put_state(pid, "running")) != 200:
            r.vmms_failed += 1
            r.outcomes[pid] = f"running answered {status}"
            await self.unregister(pid)
            return False
        reached = await self.wait_state(pid, ("running",), within=wait)
        ran = reached == "running"
        if ran:
            r.vmms_running += 1
            await trio.sleep(hold)
            if stop:
                await self.put_state(pid, "stopped")
        last = await self.wait_gone(pid, within=wait) if wait_gone else reached
        status = await self.unregister(pid)
        if ran and status == 200:
            r.vmms_done += 1
        else:
            r.vmms_failed += 1
        r.outcomes[pid] = (
            ("ran, stopped" if stop else "ran, unregistered") if ran else f"never ran ({reached})"
        ) + f"; last seen {last}"
        return ran


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
        calls = AgentCalls(http, result, retries=retries)

        async def client(c: int) -> None:
            for i in range(vmms_per_client):
                await calls.cycle(f"{prefix}-{c}-{i}", stop=i % 2 == 0, wait=wait_running)

        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            for c in range(clients):
                nursery.start_soon(client, c)
        result.elapsed = trio.current_time() - t0
    return result
