"""Propolis over the wire, the clients: ``HttpLauncher`` -> ``HttpPropolis`` (and
``HttpPropolisDirectory``, Nexus's way to a VMM's Propolis); the server is
``propolis_api.py``.

``ports.PropolisLauncher`` and
``ports.PropolisPort`` over HTTP, with the ports' error contract: ``NoInstance`` (the
instance is gone: a ``NoInstance`` answer, or - for the long poll - the hypervisor
unreachable after a bounded retry), ``RequestDenied`` (the queue's reason, rebuilt from
the code), ``PropolisUnavailable`` (no answer in time, or an answer that does not prove
the instance gone). Every call but the long poll has a timeout; the long poll re-polls
when its (long) timeout passes. Cancelling a call aborts its request (httpx closes the
connection; the server sees the disconnect).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import msgspec
import trio

from ..ports import PropolisUnavailable, StateRequest
from ..propolis.crucible import ReplaceRequestInvalid, ReplaceResult, Volume
from ..propolis.request_queue import DenyReason, RequestDenied, RequestKind
from ..propolis.state_driver import (
    BackendNotFound,
    Gone,
    NoInstance,
    PublishedState,
    Reboot,
    Start,
    Stop,
)
from .client import HttpClient, HttpStatusError, TransportError
from .propolis_api import (
    RESULT_WIRE,
    InstanceStateMonitorRequest,
    InstanceStateMonitorResponse,
    InstanceStateRequested,
    InstanceVCRReplace,
    LaunchRequest,
    LaunchResponse,
)

__all__ = ["HttpLauncher", "HttpPropolis", "HttpPropolisDirectory", "LauncherStatistics"]

_REQUEST_OF: dict[type, InstanceStateRequested] = {Start: "Run", Stop: "Stop", Reboot: "Reboot"}
_KIND_OF: dict[str, RequestKind] = {
    "Run": RequestKind.START,
    "Stop": RequestKind.STOP,
    "Reboot": RequestKind.REBOOT,
}
_RESULT_OF: dict[str, ReplaceResult] = {v: k for k, v in RESULT_WIRE.items()}
_DENY_OF: dict[str, DenyReason] = {r.code: r for r in DenyReason}


@dataclass(frozen=True)
class LauncherStatistics:
    launched: int
    launch_retries: int  # launches tried again because nothing listened (yet)
    killed: int
    kills_unreachable: int  # nothing listened: the hypervisor (and its Propolis) was gone
    kill_failures: int  # the hypervisor did not confirm a kill (the teardown went on)
    poll_retries: int
    polls_lost: int  # long polls that ended NoInstance because the hypervisor was gone
    calls_sent: int
    calls_failed: int
    polls_sent: int
    polls_failed: int


class HttpLauncher:
    """``ports.PropolisLauncher`` for the hypervisor at *base_url*.

    *timeout*: every call but the long poll (seconds); *launch_timeout*: a launch;
    *poll_timeout*: how long one long-poll request may wait before it is re-issued (a
    long poll that times out is not a failure); *retries* / *retry_delay*: how often and
    how soon (doubling) a long poll that found the hypervisor unreachable tries again
    before it answers ``NoInstance``. Close with ``aclose`` (or ``async with``)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        launch_timeout: float = 30.0,
        poll_timeout: float = 60.0,
        retries: int = 3,
        retry_delay: float = 0.1,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.launch_timeout = launch_timeout
        self.poll_timeout = poll_timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self.calls = HttpClient(self.base_url, timeout=timeout)
        # Long polls hold a connection each while they wait: their own, larger pool, so
        # they never starve the short calls.
        self.polls = HttpClient(self.base_url, timeout=poll_timeout, max_connections=4096)
        self.launched = 0
        self.launch_retries = 0  # launches tried again because nothing was listening
        self.killed = 0
        self.kills_unreachable = 0
        self.kill_failures = 0
        self.poll_retries = 0
        self.polls_lost = 0
        self._ports: dict[str, HttpPropolis] = {}  # launched and not killed, by id

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.calls.aclose()
            await self.polls.aclose()

    async def __aenter__(self) -> HttpLauncher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def launch(
        self, propolis_id: str, disks: dict[str, Volume], migration_target: bool
    ) -> HttpPropolis:
        path = f"/admin/propolis/{quote(propolis_id, safe='')}"
        request = LaunchRequest(dict(disks), migration_target)
        # Nothing listening (the hypervisor is starting, or restarting after a crash):
        # try again with backoff for up to launch_timeout, as upstream's sled agent waits
        # for a Propolis server to come up; any other failure is final.
        deadline = trio.current_time() + self.launch_timeout
        delay = self.retry_delay
        while True:
            try:
                answer = await self.calls.call(
                    "PUT",
                    path,
                    request,
                    response=LaunchResponse,
                    timeout=max(0.0, deadline - trio.current_time()),
                )
                break
            except TransportError as exc:
                if exc.kind != "connect" or trio.current_time() + delay >= deadline:
                    raise PropolisUnavailable(propolis_id, f"launch: no answer ({exc})") from None
                self.launch_retries += 1
                await trio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except HttpStatusError as exc:
                raise PropolisUnavailable(propolis_id, f"launch refused: {exc}") from None
        assert answer is not None
        self.launched += 1
        port = HttpPropolis(self, propolis_id, answer.base_path, answer.gen)
        old = self._ports.get(propolis_id)
        if old is not None:
            old._gone(old.last_gen + 1, "replaced by a new launch")
        self._ports[propolis_id] = port
        return port

    async def kill(self, propolis_id: str) -> None:
        """Kill *propolis_id*'s Propolis. Never raises (but is cancellable): nothing
        listening means nothing runs there any more; a kill the hypervisor does not
        confirm after the retries is counted (``kill_failures``) and the caller's teardown
        goes on."""
        path = f"/admin/propolis/{quote(propolis_id, safe='')}"
        port = self._ports.pop(propolis_id, None)
        if port is not None:
            port._gone(port.last_gen + 1, "killed")
        delay = self.retry_delay
        for attempt in range(self.retries + 1):
            try:
                await self.calls.call("DELETE", path)
            except TransportError as exc:
                if exc.kind == "connect":
                    self.kills_unreachable += 1
                    return
            except HttpStatusError as exc:
                if exc.status < 500:
                    self.kill_failures += 1  # refused: retrying cannot help
                    return
            else:
                self.killed += 1
                return
            if attempt < self.retries:
                await trio.sleep(delay)
                delay *= 2
        self.kill_failures += 1

    def statistics(self) -> LauncherStatistics:
        return LauncherStatistics(
            launched=self.launched,
            launch_retries=self.launch_retries,
            killed=self.killed,
            kills_unreachable=self.kills_unreachable,
            kill_failures=self.kill_failures,
            poll_retries=self.poll_retries,
            polls_lost=self.polls_lost,
            calls_sent=self.calls.sent,
            calls_failed=self.calls.failed,
            polls_sent=self.polls.sent,
            polls_failed=self.polls.failed,
        )


class HttpPropolis:
    """``ports.PropolisPort``: one VMM's Propolis at *base_path* of the launcher's
    hypervisor. ``alive`` turns False once a call learned the instance is gone, or the
    launcher killed or replaced it; ``lost`` says why."""

    def __init__(self, launcher: HttpLauncher, propolis_id: str, base_path: str, gen: int) -> None:
        self.launcher = launcher
        self._propolis_id = propolis_id
        self.base_path = base_path
        self.last_gen = gen  # the highest generation this client has seen published
        self.lost: str | None = None

    @property
    def propolis_id(self) -> str:
        return self._propolis_id

    @property
    def alive(self) -> bool:
        return self.lost is None

    def __repr__(self) -> str:
        return f"HttpPropolis({self._propolis_id!r} at {self.launcher.base_url}{self.base_path})"

    def _gone(self, gen: int, why: str) -> NoInstance:
        if self.lost is None:
            self.lost = why
        return NoInstance(gen)

    def _typed(self, exc: HttpStatusError, gen: int, kind: RequestKind) -> Exception:
        """The port's error for an error answer (module docstring: the codes)."""
        code = exc.error_code or ""
        if code == "NoInstance":
            return self._gone(gen, f"Propolis answered {exc.status} NoInstance: {exc.message}")
        if exc.status == 403 and code in _DENY_OF:
            return RequestDenied(kind, _DENY_OF[code])
        if exc.status == 410 and code == "VmGone":
            return Gone()
        if exc.status == 404 and code == "BackendNotFound":
            return BackendNotFound(exc.message)
        if exc.status == 400 and code == "ReplaceRequestInvalid":
            return ReplaceRequestInvalid(exc.message)
        return PropolisUnavailable(self._propolis_id, f"unexpected answer: {exc}")

    async def put_state(self, requested: StateRequest) -> None:
        wire = _REQUEST_OF[type(requested)]
        try:
            await self.launcher.calls.call("PUT", f"{self.base_path}/instance/state", wire)
        except TransportError as exc:
            raise PropolisUnavailable(self._propolis_id, f"state {wire}: {exc}") from None
        except HttpStatusError as exc:
            raise self._typed(exc, self.last_gen + 1, _KIND_OF[wire]) from None

    async def wait_for_state(self, gen: int) -> PublishedState:
        """The long poll. Raises only ``NoInstance`` (or the caller's cancellation): an
        answer ``NoInstance``, or the hypervisor unreachable or failing for
        ``retries + 1`` attempts in a row; a poll that reaches its timeout is re-issued."""
        launcher = self.launcher
        path = f"{self.base_path}/instance/state-monitor"
        failures = 0
        delay = launcher.retry_delay
        while True:
            try:
                answer = await launcher.polls.call(
                    "GET",
                    path,
                    InstanceStateMonitorRequest(gen),
                    response=InstanceStateMonitorResponse,
                )
            except TransportError as exc:
                if exc.kind == "timeout":
                    failures = 0  # a long poll outlived its timeout: ask again
                    continue
                why = f"the hypervisor is unreachable: {exc}"
            except HttpStatusError as exc:
                if exc.error_code == "NoInstance":
                    raise self._gone(gen, f"{exc.status} NoInstance: {exc.message}") from None
                why = f"the state monitor failed: {exc}"
            else:
                assert answer is not None
                self.last_gen = max(self.last_gen, answer.gen)
                return PublishedState(answer.state, answer.gen)
            failures += 1
            if failures > launcher.retries:
                launcher.polls_lost += 1
                raise self._gone(gen, why) from None
            launcher.poll_retries += 1
            await trio.sleep(delay)
            delay *= 2

    async def replace_vcr(self, backend_id: str, vcr: Volume) -> ReplaceResult:
        path = f"{self.base_path}/instance/disk/{quote(backend_id, safe='')}/vcr"
        body = InstanceVCRReplace(msgspec.json.encode(vcr).decode())
        try:
            answer = await self.launcher.calls.call("PUT", path, body, response=str)
        except TransportError as exc:
            raise PropolisUnavailable(self._propolis_id, f"VCR replacement: {exc}") from None
        except HttpStatusError as exc:
            raise self._typed(exc, self.last_gen + 1, RequestKind.REPLACE_VCR) from None
        result = _RESULT_OF.get(answer or "")
        if result is None:
            raise PropolisUnavailable(self._propolis_id, f"unexpected ReplaceResult {answer!r}")
        return result


class HttpPropolisDirectory:
    """Any VMM's Propolis at the hypervisor *base_url*, by propolis id: how Nexus calls
    Propolis directly (upstream Nexus knows each VMM's Propolis address and issues the
    VCR replacement itself). Errors as ``HttpPropolis``'s."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.launcher = HttpLauncher(base_url, timeout=timeout)

    def propolis(self, propolis_id: str) -> HttpPropolis:
        return HttpPropolis(
            self.launcher, propolis_id, f"/propolis/{quote(propolis_id, safe='')}", 0
        )

    async def replace_vcr(self, propolis_id: str, backend_id: str, vcr: Volume) -> ReplaceResult:
        return await self.propolis(propolis_id).replace_vcr(backend_id, vcr)

    async def aclose(self) -> None:
        await self.launcher.aclose()
