"""Nexus over the wire (actors/wire/nexus_api.py, actors/wire/nexus.py), on real loopback
sockets in real time: a ``NexusServer`` served by hypercorn in this test's Trio run (or
``trioxide nexus`` as a subprocess), called by the sled agent's actors through
``HttpNexus``. Every wait is bounded (``trio.fail_after``); simulated durations are scaled
down so that a notifier tick or a VMM start takes milliseconds.

Upstream facts ported here:

* the operations, methods, paths and statuses: omicron
  ``openapi/nexus-internal/nexus-internal-1.0.0-6d8ade.json`` (``cpapi_instances_put``,
  ``sled_agent_get``, ``sled_agent_put``);
* the notifier's request counts through injected errors: omicron
  ``sled-agent/src/nexus.rs``, test ``nexus_self_notification_test`` (its fake Nexus
  answers one injected 409 to a PUT and one injected 503 to a GET);
* the VCR replacement that unblocks an activation stuck on a black-holed downstairs:
  propolis ``instance_issue_crucible_vcr_request``, which Nexus calls on Propolis itself.
"""

from __future__ import annotations

import functools
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from trioxide.actors.instance_manager import InstanceManager, Target
from trioxide.actors.nexus_notifier import NexusNotifier, NotifierStatistics, NotifyNexusAboutSelf
from trioxide.actors.propolis.crucible import ReplaceResult, Volume
from trioxide.actors.propolis.state_driver import Start, VmState
from trioxide.actors.sim.nexus import (
    NexusConflict,
    NexusError,
    NexusNotFound,
    NexusStatusError,
    NexusUnavailable,
    SimNexus,
    SledInfo,
)
from trioxide.actors.sim.propolis_host import LocalLauncher, PropolisHost
from trioxide.actors.sled_agent import SledAgentClient, SledConfig
from trioxide.actors.vmm_state import SledVmmState, VmmKind, VmmRuntimeState
from trioxide.actors.wire.agent import WireSledAgent
from trioxide.actors.wire.client import HttpStatusError
from trioxide.actors.wire.nexus_api import NexusServer, VcrReplacer
from trioxide.actors.wire.nexus_client import HttpNexus, NexusAdmin
from trioxide.actors.wire.propolis_api import hypervisor_app, open_hypervisor
from trioxide.actors.wire.propolis_client import HttpLauncher, HttpPropolisDirectory
from trioxide.actors.wire.server import serve_app
from trioxide.actors.wire.world import ScaledWorld
from trioxide.runtime import ActorRef, Runtime, open_runtime

from ._http import raw_call
from ._procs import rack_process

WAIT = 10.0  # seconds: the bound of every wait (they take milliseconds)
TICK = 0.02  # the notifier's tick in these tests (upstream: 2 s)
TIME_SCALE = 0.01
GiB = 1 << 30
SLED = "sled-1"
BASE = SledInfo(SLED, "[fd00:1122:3344:101::1]:12345", "gimlet", 16, GiB, 0, 0)


@dataclass
class Nexus:
    """A served Nexus: its simulation, server, URL, a sled agent's client, an admin client
    and a raw client for the malformed-input tests."""

    rt: Runtime
    sim: SimNexus
    server: NexusServer
    url: str
    port: HttpNexus
    admin: NexusAdmin
    raw: httpx.AsyncClient

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, decoded JSON body or None); *body* bytes are sent as they are."""
        return await raw_call(self.raw, self.url, method, path, body)


@asynccontextmanager
async def served_nexus(
    *, vcr: VcrReplacer | None = None, timeout: float = WAIT
) -> AsyncIterator[Nexus]:
    async with open_runtime() as rt:
        sim = SimNexus()
        server = await NexusServer.start(rt, sim, vcr=vcr)
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(serve_app, server.app, "127.0.0.1", 0)
            url = f"http://{addr}"
            async with (
                HttpNexus(url, timeout=timeout) as port,
                NexusAdmin(url, timeout=WAIT) as admin,
                httpx.AsyncClient(timeout=WAIT, trust_env=False) as raw,
            ):
                yield Nexus(rt, sim, server, url, port, admin, raw)
            nursery.cancel_scope.cancel()


def rt_state(state: SledVmmState, gen: int) -> VmmRuntimeState:
    return VmmRuntimeState(state, gen, trio.current_time())


# -- the API: shapes, errors, bad input ---------------------------------------------------


async def test_openapi_document_has_upstreams_operations() -> None:
    # omicron openapi/nexus-internal/nexus-internal-1.0.0-6d8ade.json: the operation ids,
    # methods, paths and success statuses of the three calls a sled agent makes.
    async with served_nexus() as nx:
        with trio.fail_after(WAIT):
            status, doc = await nx.call("GET", "/openapi.json")
    assert status == 200
    ops = {
        (method.upper(), path, op["operationId"]): sorted(op["responses"])
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }
    assert ops[("PUT", "/vmms/{propolis_id}", "cpapi_instances_put")] == ["204", "4XX", "5XX"]
    assert ops[("GET", "/sled-agents/{sled_id}", "sled_agent_get")] == ["200", "4XX", "5XX"]
    assert ops[("POST", "/sled-agents/{sled_id}", "sled_agent_put")] == ["204", "4XX", "5XX"]
    info = doc["components"]["schemas"]["SledAgentInfoBody"]
    assert set(info["required"]) == {
        "sa_address",
        "role",
        "usable_hardware_threads",
        "usable_physical_ram",
        "reservoir_size",
        "generation",
        "decommissioned",
    }


async def test_http_nexus_maps_every_answer_to_the_ports_error_contract() -> None:
    async with served_nexus() as nx:
        with trio.fail_after(WAIT):
            with pytest.raises(NexusNotFound) as nf:
                await nx.port.get_sled(SLED)
            assert nf.value.status == 404
            await nx.port.put_sled(msgspec.structs.replace(BASE, generation=1))
            assert await nx.port.get_sled(SLED) == msgspec.structs.replace(BASE, generation=1)
            with pytest.raises(NexusConflict) as conflict:  # not newer: 409
                await nx.port.put_sled(msgspec.structs.replace(BASE, generation=1))
            assert conflict.value.status == 409
            # A sled agent cannot decommission itself (upstream: "no effect").
            await nx.port.put_sled(msgspec.structs.replace(BASE, generation=2, decommissioned=True))
            assert not (await nx.port.get_sled(SLED)).decommissioned

            await nx.admin.outage(True)
            for call in (
                lambda: nx.port.get_sled(SLED),
                lambda: nx.port.put_sled(msgspec.structs.replace(BASE, generation=3)),
                lambda: nx.port.put_vmm_state("p1", rt_state(SledVmmState.RUNNING, 2)),
            ):
                with pytest.raises(NexusUnavailable) as down:
                    await call()
                assert down.value.status == 503
            await nx.admin.outage(False)

            await nx.admin.inject_errors(1)  # a 500
            await nx.admin.inject_errors(1, status=502, op="put_vmm")
            await nx.admin.inject_errors(1, status=503, op="get_sled")
            with pytest.raises(NexusStatusError) as e502:  # the put_vmm one first
                await nx.port.put_vmm_state("p1", rt_state(SledVmmState.RUNNING, 2))
            assert e502.value.status == 502
            with pytest.raises(NexusUnavailable):  # the get_sled one
                await nx.port.get_sled(SLED)
            with pytest.raises(NexusStatusError) as e500:  # any op
                await nx.port.get_sled(SLED)
            assert e500.value.status == 500
            assert isinstance(e500.value, NexusError)
            assert await nx.port.put_vmm_state("p1", rt_state(SledVmmState.RUNNING, 2))

        stats = nx.port.statistics()
        assert stats.errors == {404: 1, 409: 1, 503: 4, 502: 1, 500: 1}
        assert stats.unreachable == {}
        assert stats.calls == stats.ok + sum(stats.errors.values())
        assert nx.sim.statistics().injected_errors == 3


async def test_http_nexus_transport_failures_are_unavailable_and_bounded() -> None:
    # Nothing listens: refused at once.
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    closed_port = listener.getsockname()[1]
    listener.close()
    async with HttpNexus(f"http://127.0.0.1:{closed_port}", timeout=WAIT) as port:
        with trio.fail_after(WAIT), pytest.raises(NexusUnavailable, match="unreachable"):
            await port.get_sled(SLED)
        assert port.statistics().unreachable == {"connect": 1}

    # A Nexus that accepts and never answers: the client's timeout ends the call.
    async def black_hole(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        (hole,) = await nursery.start(
            functools.partial(trio.serve_tcp, black_hole, 0, host="127.0.0.1")
        )
        url = f"http://127.0.0.1:{hole.socket.getsockname()[1]}"
        async with HttpNexus(url, timeout=0.2) as port:
            with trio.fail_after(WAIT), pytest.raises(NexusUnavailable):
                await port.put_vmm_state("p1", rt_state(SledVmmState.RUNNING, 2))
            assert sum(port.statistics().unreachable.values()) == 1
        # Cancellation is honoured: a call with a long timeout is abandoned when its
        # caller is cancelled, and nothing is raised in its place.
        async with HttpNexus(url, timeout=WAIT) as port:
            with trio.fail_after(WAIT):
                with trio.move_on_after(0.05) as scope:
                    await port.get_sled(SLED)
            assert scope.cancelled_caught
            assert port.statistics().ok == 0 and port.statistics().unreachable == {}
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("method", "path", "body", "names"),
    [
        ("PUT", "/vmms/p1", {"vmm_state": {"gen": -1, "state": "running",
                                           "time_updated": "2026-01-01T00:00:00Z"}}, "-1"),
        ("PUT", "/vmms/p1", {"vmm_state": {"gen": 2**64, "state": "running",
                                           "time_updated": "2026-01-01T00:00:00Z"}}, "gen"),
        ("PUT", "/vmms/p1", {"vmm_state": {"gen": 1, "state": "exploded",
                                           "time_updated": "2026-01-01T00:00:00Z"}}, "exploded"),
        ("PUT", "/vmms/p1", {"vmm_state": {"gen": 1, "state": "running",
                                           "time_updated": "yesterday"}}, "time_updated"),
        ("PUT", "/vmms/p1", {"vmm_state": {"gen": 1}}, "state"),
        ("PUT", "/vmms/p%20x", {"vmm_state": {"gen": 1, "state": "running",
                                              "time_updated": "2026-01-01T00:00:00Z"}}, "p x"),
        ("PUT", "/vmms/" + "p" * 44, {"vmm_state": {"gen": 1, "state": "running",
                                                    "time_updated": "2026-01-01T00:00:00Z"}},
         "propolis_id"),
        ("PUT", "/vmms/p1", b"{not json", "JSON"),
        ("GET", "/sled-agents/-bad", None, "-bad"),
        ("POST", "/sled-agents/s1", {"sa_address": "x", "role": "router",
                                     "usable_hardware_threads": 1, "usable_physical_ram": 1,
                                     "reservoir_size": 0, "generation": 1,
                                     "decommissioned": False}, "router"),
        ("POST", "/sled-agents/s1", {"sa_address": "x", "role": "gimlet",
                                     "usable_hardware_threads": 2**32, "usable_physical_ram": 1,
                                     "reservoir_size": 0, "generation": 1,
                                     "decommissioned": False}, "usable_hardware_threads"),
        ("POST", "/sim/conflicts", {"count": -1}, "count"),
        ("POST", "/sim/errors", {"count": 1, "status": 404}, "status"),
        ("POST", "/sim/errors", {"count": 1, "op": "reboot"}, "op"),
        ("PUT", "/sim/outage", {"active": True, "seconds": 0}, "seconds"),
        ("POST", "/sim/vmms/p1/disks/d%201/vcr",
         {"vcr": {"type": "volume", "id": "v", "block_size": 512, "sub_volumes": []}}, "d 1"),
    ],
)  # fmt: skip
async def test_bad_input_is_a_400_naming_the_value(
    method: str, path: str, body: Any, names: str
) -> None:
    async with served_nexus() as nx:
        with trio.fail_after(WAIT):
            status, answer = await nx.call(method, path, body)
    assert status == 400, answer
    assert answer["error_code"] == "INVALID_REQUEST"
    assert names in answer["message"]
    assert nx.sim.request_log == []  # nothing reached Nexus's tables
    assert nx.sim.pending_faults() == {"conflicts": 0, "errors": 0}


async def test_admin_endpoints_report_faults_records_and_summary() -> None:
    async with served_nexus() as nx:
        with trio.fail_after(WAIT):
            assert (await nx.admin.inject_conflicts(2)).pending_conflicts == 2
            assert (await nx.admin.inject_errors(3, op="put_vmm")).pending_errors == 3
            timed = await nx.admin.outage(True, seconds=0.05)
            assert not timed.available
            await trio.sleep(0.1)  # the timed outage ends by itself
            assert (await nx.admin.outage(False)).available
            assert await nx.admin.vmm("p1") is None
            with pytest.raises(HttpStatusError) as unknown:
                await nx.admin.decommission("nope")
            assert (unknown.value.status, unknown.value.error_code) == (404, "ObjectNotFound")
            nx.sim.insert_sled(BASE)
            await nx.admin.decommission(SLED)
            for gen in (2, 3, 4):  # three injected 500s, then applied
                with pytest.raises(NexusStatusError):
                    await nx.port.put_vmm_state("p1", rt_state(SledVmmState.RUNNING, gen))
            assert await nx.port.put_vmm_state("p1", rt_state(SledVmmState.RUNNING, 5))
            assert await nx.port.put_vmm_state("p1", rt_state(SledVmmState.STOPPING, 4))  # stale
            record = await nx.admin.vmm("p1")
            summary = await nx.admin.summary()
    assert record is not None
    assert (record.state.kind, record.gen, len(record.history)) == (VmmKind.RUNNING, 5, 1)
    assert summary.vmms == [record]
    assert [s.sled_id for s in summary.sleds] == [SLED] and summary.sleds[0].info.decommissioned
    assert summary.requests == {"get_sled": 0, "put_sled": 0, "put_vmm": 5}
    assert summary.statistics["stale_vmm"] == 1
    assert summary.statistics["injected_errors"] == 3
    assert summary.faults.pending_conflicts == 2  # no sled PUT consumed them
    assert summary.http_answered[500] == 3 and summary.http_answered[404] == 2


# -- the notifier over HTTP -----------------------------------------------------------------


class Reservoir:
    def __init__(self) -> None:
        self.size = 0

    def current(self) -> int:
        return self.size


def counts(s: NotifierStatistics) -> tuple[int, int, int, int, int]:
    """(get started, get completed, put started, put completed, cancelled)"""
    return (s.get_started, s.get_completed, s.put_started, s.put_completed, s.cancelled)


async def spawn_notifier(nx: Nexus, reservoir: Reservoir) -> tuple[ActorRef, NexusNotifier]:
    """The sled's notifier, reaching the served Nexus over HTTP (``nx.port``)."""
    ref = await nx.rt.spawn(
        NexusNotifier, nx.port, BASE, reservoir.current, None, TICK, name="nexus-notifier"
    )
    notifier = ref.instance
    assert isinstance(notifier, NexusNotifier)
    return ref, notifier


async def test_notifier_over_http_upstream_self_notification_sequence() -> None:
    # omicron sled-agent/src/nexus.rs nexus_self_notification_test, step by step, against
    # the Nexus process's API. Our notifier GETs before its first PUT (upstream: a GET or
    # a PUT first, "depending upon timing"), so the counts are upstream's final ones.
    reservoir = Reservoir()
    async with served_nexus() as nx:
        ref, notifier = await spawn_notifier(nx, reservoir)

        async def settled(check: Callable[[NotifierStatistics], bool]) -> NotifierStatistics:
            with trio.fail_after(WAIT):
                return await notifier.status.wait_for(
                    lambda s: not s.pending and s.outstanding is None and check(s)
                )

        # 1. Startup: GET (404), PUT gen 1, then pending is cancelled by the equality.
        s = await settled(lambda s: s.cancelled == 1)
        assert counts(s) == (1, 1, 1, 1, 1)
        assert nx.sim.sled(SLED) == msgspec.structs.replace(BASE, generation=1)
        # 2. Notify with nothing changed: no request, cancelled again.
        await ref.tell(NotifyNexusAboutSelf())
        s = await settled(lambda s: s.cancelled == 2)
        assert counts(s) == (1, 1, 1, 1, 2)
        # 3. The reservoir changes: one PUT with the next generation.
        reservoir.size = 1 << 20
        await ref.tell(NotifyNexusAboutSelf())
        s = await settled(lambda s: s.cancelled == 3)
        assert counts(s) == (1, 1, 2, 2, 3)
        # 4. A PUT answered 409: re-GET, then PUT gen + 1 (spec §7 item 10).
        await nx.admin.inject_conflicts(1)
        reservoir.size = 2 << 20
        await ref.tell(NotifyNexusAboutSelf())
        s = await settled(lambda s: s.cancelled == 4)
        assert counts(s) == (2, 2, 4, 4, 4)
        assert [(r.op, r.generation) for r in nx.sim.request_log[-3:]] == [
            ("put_sled", 3),  # refused (409)
            ("get_sled", None),
            ("put_sled", 3),  # gen + 1 of what the GET showed (2)
        ]
        # 5. A GET error is armed, but the state is known: no GET, one PUT.
        await nx.admin.inject_errors(1, status=503, op="get_sled")
        reservoir.size = 3 << 20
        await ref.tell(NotifyNexusAboutSelf())
        s = await settled(lambda s: s.cancelled == 5)
        assert counts(s) == (2, 2, 5, 5, 5)
        # 6. A PUT error now: PUT (409), GET (503, the armed error), GET, PUT.
        await nx.admin.inject_conflicts(1)
        reservoir.size = 4 << 20
        await ref.tell(NotifyNexusAboutSelf())
        s = await settled(lambda s: s.cancelled == 6)
        assert counts(s) == (4, 4, 7, 7, 6)
        assert s.errors == 3
        stored = nx.sim.sled(SLED)
        assert stored is not None and stored == s.known_info
        assert (stored.generation, stored.reservoir_size_bytes) == (5, 4 << 20)
        assert nx.port.statistics().errors == {404: 1, 409: 2, 503: 1}
        await ref.stop()


async def test_notifier_stops_for_good_on_a_decommissioned_sled() -> None:
    # spec §4: a conflict leads to a re-GET, which shows the decommissioned sled, which
    # stops the notifier; no request is sent again.
    reservoir = Reservoir()
    async with served_nexus() as nx:
        ref, notifier = await spawn_notifier(nx, reservoir)
        with trio.fail_after(WAIT):
            await notifier.status.wait_for(lambda s: s.cancelled == 1)
            await nx.admin.decommission(SLED)
            reservoir.size = 1 << 20
            await ref.tell(NotifyNexusAboutSelf())
            s = await notifier.status.wait_for(lambda s: s.stopped)
        assert (s.known, s.pending) == ("decommissioned", False)
        sent = len(nx.sim.request_log)
        await ref.tell(NotifyNexusAboutSelf())
        await trio.sleep(5 * TICK)
        assert len(nx.sim.request_log) == sent
        assert notifier.statistics().ignored == 1
        await ref.stop()


# -- the runner's publisher over HTTP ---------------------------------------------------------


@asynccontextmanager
async def sled_agent(nx: Nexus) -> AsyncIterator[SledAgentClient]:
    scaled = ScaledWorld(TIME_SCALE)
    world = scaled.world()
    host = await nx.rt.spawn(
        PropolisHost, world.network, world.vm_template, scaled.propolis_kill, name="ph"
    )
    config = SledConfig(sled_id="sled-7", runner=scaled.runner())
    sled = await nx.rt.spawn(
        WireSledAgent, world, config, LocalLauncher(host), nx.port, name="sled"
    )
    try:
        yield SledAgentClient(sled, ask_timeout=WAIT)
    finally:
        await sled.stop()
        await host.stop()


async def until(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Poll *check* (a predicate, or an async one) until it holds (bounded by ``WAIT``)."""
    with trio.fail_after(WAIT):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(0.005)


async def nexus_holds(nx: Nexus, pid: str, kind: VmmKind, gen: int) -> None:
    def holds() -> bool:
        r = nx.sim.vmm(pid)
        return r is not None and (r.state.kind, r.gen) == (kind, gen)

    await until(holds)


def history(nx: Nexus, pid: str) -> list[tuple[VmmKind, int]]:
    return [(state.kind, gen) for _t, state, gen in nx.sim.vmm_history.get(pid, [])]


async def test_vmm_states_reach_nexus_in_order_through_an_outage_and_5xx() -> None:
    async with served_nexus() as nx, sled_agent(nx) as api:
        # The VMM starts while Nexus is down: every publication is refused (503).
        await nx.admin.outage(True)
        await api.register("p1", "inst-1")
        await api.ensure_state("p1", Target.RUNNING)

        async def running_on_sled() -> bool:
            return (await api.get_state("p1")).state is SledVmmState.RUNNING

        await until(running_on_sled)
        running = await api.get_state("p1")
        assert nx.sim.vmm("p1") is None
        refused = nx.port.statistics().errors.get(503, 0)
        assert refused >= 1
        # Back up: the publisher's retry carries the newest state; the states it
        # superseded while Nexus was down are never sent.
        await nx.admin.outage(False)
        await nexus_holds(nx, "p1", VmmKind.RUNNING, running.gen)
        assert history(nx, "p1") == [(VmmKind.RUNNING, running.gen)]

        # Stop with Nexus answering 500 to the next three VMM updates: the runner's exit
        # waits until Nexus has its final state, which arrives after the retries.
        await nx.admin.inject_errors(3, op="put_vmm")
        await api.ensure_state("p1", Target.STOPPED)
        manager = api.manager.instance
        assert isinstance(manager, InstanceManager)
        await until(lambda: manager.find("p1") is None)  # the runner has exited
        final = history(nx, "p1")[-1]
        assert final[0] is VmmKind.DESTROYED
        gens = [gen for _kind, gen in history(nx, "p1")]
        assert gens == sorted(set(gens))  # in order, each applied once
        assert nx.port.statistics().errors[500] == 3
        assert nx.sim.pending_faults()["errors"] == 0


# -- the Nexus-side VCR replacement, straight to Propolis ----------------------------------------


def vol(gen: int, targets: tuple[str, str, str]) -> Volume:
    from trioxide.actors.propolis.crucible import Region

    return Volume("vol-1", 512, (Region("reg-1", gen, targets),))


async def test_nexus_vcr_replacement_unblocks_a_blackholed_activation() -> None:
    async with open_runtime() as rt, trio.open_nursery() as nursery:
        hv = await open_hypervisor(rt, time_scale=TIME_SCALE)
        hv_addr = await nursery.start(serve_app, hypervisor_app(hv), "127.0.0.1", 0)
        hv_url = f"http://{hv_addr}"
        hv.net.blackhole("ds-b")
        async with (
            HttpLauncher(hv_url) as launcher,
            aclosing(HttpPropolisDirectory(hv_url)) as directory,
            served_nexus(vcr=directory) as nx,
        ):
            with trio.fail_after(WAIT):
                propolis = await launcher.launch(
                    "p1", {"disk0": vol(1, ("ds-a", "ds-b", "ds-c"))}, False
                )
                await propolis.put_state(Start())
                starting = await propolis.wait_for_state(2)
                assert starting.state is VmState.STARTING
                with trio.move_on_after(0.2):  # activation waits for ds-b, for ever
                    await propolis.wait_for_state(3)
                assert hv.handle("p1").monitor.current.state is VmState.STARTING

                replaced = vol(2, ("ds-a", "ds-x", "ds-c"))
                assert await nx.admin.replace_vcr("p1", "disk0", replaced) is ReplaceResult.STARTED
                running = await propolis.wait_for_state(3)
                assert running.state is VmState.RUNNING
                errors = []
                for pid, disk, vcr in [
                    ("p1", "disk0", replaced),  # stored by Propolis: the same VCR again
                    ("p9", "disk0", replaced),  # no such Propolis
                    ("p1", "disk9", replaced),  # no such backend
                    ("p1", "disk0", vol(3, ("ds-y", "ds-z", "ds-c"))),  # two targets differ
                ]:
                    with pytest.raises(HttpStatusError) as refused:
                        await nx.admin.replace_vcr(pid, disk, vcr)
                    errors.append((refused.value.status, refused.value.error_code))
                    if len(errors) == 1:
                        assert "no difference" in refused.value.message
            summary = await nx.admin.summary()
        nursery.cancel_scope.cancel()
    assert errors == [
        (400, "ReplaceRequestInvalid"),
        (410, "NoInstance"),
        (404, "BackendNotFound"),
        (400, "ReplaceRequestInvalid"),
    ]
    assert summary.vcr_replacements == {
        "BackendNotFound": 1,
        "NoInstance": 1,
        "ReplaceRequestInvalid": 2,
        "Started": 1,
    }


# -- the process --------------------------------------------------------------------------------


async def test_nexus_process_serves_records_and_stops_cleanly(tmp_path: Path) -> None:
    async with open_runtime() as rt, trio.open_nursery() as nursery:
        hv = await open_hypervisor(rt, time_scale=TIME_SCALE)
        hv_addr = await nursery.start(serve_app, hypervisor_app(hv), "127.0.0.1", 0)
        async with (
            rack_process("nexus", "--hypervisor", f"http://{hv_addr}", trace_dir=tmp_path) as proc,
            HttpNexus(proc.url, timeout=WAIT) as port,
            NexusAdmin(proc.url, timeout=WAIT) as admin,
            HttpLauncher(f"http://{hv_addr}") as launcher,
        ):
            assert proc.info["role"] == "nexus"
            assert proc.info["hypervisor"] == f"http://{hv_addr}"
            with trio.fail_after(WAIT):
                for gen, state in enumerate((SledVmmState.STARTING, SledVmmState.RUNNING), 2):
                    assert await port.put_vmm_state("p1", rt_state(state, gen))
                await port.put_sled(BASE)
                await launcher.launch("p1", {"disk0": vol(1, ("ds-a", "ds-b", "ds-c"))}, False)
                result = await admin.replace_vcr("p1", "disk0", vol(2, ("ds-a", "ds-x", "ds-c")))
                summary = await admin.summary()
            assert result is ReplaceResult.STARTED
            with trio.fail_after(WAIT):
                status = await proc.stop(signal.SIGTERM)
        nursery.cancel_scope.cancel()
    assert status == 0, bytes(proc.stderr)
    (record,) = summary.vmms
    assert [(h.state.kind, h.gen) for h in record.history] == [
        (VmmKind.STARTING, 2),
        (VmmKind.RUNNING, 3),
    ]
    assert summary.requests == {"get_sled": 0, "put_sled": 1, "put_vmm": 2}
    assert summary.vcr_replacements == {"Started": 1}
    lines = (tmp_path / "nexus.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["command"] == ["trioxide", "nexus"]
    handled = [json.loads(line) for line in lines[1:]]
    assert [e.get("msg_type") for e in handled if e["kind"] == "send"] == [
        "PutVmm",
        "PutVmm",
        "PutSled",
    ]


# -- schemathesis against the served document ---------------------------------------------------

#: The admin calls that change the faults in force (an outage answers 503 to everything, an
#: injected error is a 5xx by design): fuzzing them would make the other answers meaningless.
FAULT_OPERATIONS = ("sim_outage", "sim_inject_conflicts", "sim_inject_errors")


def fuzz(url: str, max_examples: int) -> dict[tuple[str, int], int]:
    """Schemathesis over every operation of the Nexus at *url* but the fault injectors
    (blocking: run in a worker thread). Returns (operation id, status) -> count."""
    import schemathesis

    schema = schemathesis.openapi.from_url(url + "/openapi.json", timeout=WAIT)
    seen: dict[tuple[str, int], int] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        if op.definition.raw["operationId"] not in FAULT_OPERATIONS:
            fuzz_operation(url, op, max_examples, seen)
    return seen


def fuzz_operation(url: str, op: Any, max_examples: int, seen: dict[tuple[str, int], int]) -> None:
    from hypothesis import HealthCheck, given, settings

    op_id = op.definition.raw["operationId"]

    @given(case=op.as_strategy())
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        reply = case.call(base_url=url, timeout=WAIT)
        key = (op_id, reply.status_code)
        seen[key] = seen.get(key, 0) + 1
        # Never a 5xx: the one 503 is the VCR endpoint's, Nexus knowing no hypervisor.
        assert reply.status_code < 500 or key == ("sim_vcr_replace", 503), (
            case.path,
            case.body,
            reply.text,
        )
        if reply.status_code >= 400:
            error = reply.json()
            assert error["error_code"] and error["message"], reply.text

    check()


async def test_schemathesis_finds_no_5xx_in_the_nexus_process(tmp_path: Path) -> None:
    async with rack_process("nexus", trace_dir=tmp_path) as proc:
        with trio.fail_after(120):
            seen = await trio.to_thread.run_sync(fuzz, proc.url, 15)
        with trio.fail_after(WAIT):
            assert await proc.stop() == 0
    ops = {op for op, _status in seen}
    assert {"cpapi_instances_put", "sled_agent_get", "sled_agent_put", "sim_summary"} <= ops
    assert not [key for key in seen if key[1] >= 500 and key[0] != "sim_vcr_replace"]
