"""The sled agent's HTTP API (actors/wire/agent_api.py) over a real loopback socket, in
real time: a ``SledAgent`` in this test's Trio run, served by hypercorn, called with the
rack's ``HttpClient``. Every wait is bounded (``trio.fail_after``); simulated durations are
scaled down (``ScaledWorld``) so a VMM starts in milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import jsonschema_rs
import msgspec
import pytest
import trio

from trioxide.actors.sim.propolis_host import LocalLauncher, PropolisHost
from trioxide.actors.sled_agent import PROPOLIS_ID_MAX, SledAgentClient, SledConfig, SledWorld
from trioxide.actors.wire.agent import WireSledAgent
from trioxide.actors.wire.agent_api import agent_app
from trioxide.actors.wire.client import HttpClient, HttpStatusError
from trioxide.actors.wire.server import serve_app
from trioxide.actors.wire.world import ScaledWorld
from trioxide.runtime import open_runtime

from ._http import raw_call

TIME_SCALE = 0.01
WAIT = 10.0  # seconds: the bound of every wait (they take milliseconds)


@dataclass
class Agent:
    http: HttpClient
    raw: httpx.AsyncClient
    url: str
    world: SledWorld
    api: SledAgentClient

    def agent_reservoir(self) -> object:
        """The reservoir's published state, read in process."""
        return self.api.agent.reservoir_watch.value

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, decoded JSON body or None) - for the error tests."""
        return await raw_call(self.raw, self.url, method, path, body)


@asynccontextmanager
async def agent(*, ask_timeout: float = 5.0) -> AsyncIterator[Agent]:
    scaled = ScaledWorld(TIME_SCALE)
    world = scaled.world()
    async with open_runtime() as rt:
        host = await rt.spawn(
            PropolisHost, world.network, world.vm_template, scaled.propolis_kill, name="ph"
        )
        config = SledConfig(sled_id="sled-7", runner=scaled.runner())
        sled = await rt.spawn(WireSledAgent, world, config, LocalLauncher(host), None, name="sled")
        api = SledAgentClient(sled, ask_timeout=ask_timeout)
        bound: list[str] = []
        app = agent_app(api, address=lambda: bound[0])
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(serve_app, app, "127.0.0.1", 0)
            bound.append(addr)
            url = f"http://{addr}"
            async with (
                HttpClient(url, timeout=WAIT) as http,
                httpx.AsyncClient(timeout=WAIT, trust_env=False) as raw,
            ):
                yield Agent(http, raw, url, world, api)
            nursery.cancel_scope.cancel()


def ensure_body(instance_id: str = "inst-1", gen: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "vmm_spec": {"ncpus": 2, "memory_bytes": 1 << 30, **spec},
        "vmm_runtime": {"gen": gen, "state": "starting", "time_updated": "2026-01-01T00:00:00Z"},
    }


async def until(done: Callable[[], bool]) -> None:
    """Poll *done* every few milliseconds (callers bound the wait)."""
    while True:
        if done():
            return
        await trio.sleep(0.002)


async def wait_state(a: Agent, pid: str, want: Callable[[str], bool]) -> dict[str, Any]:
    with trio.fail_after(WAIT):
        while True:
            status, body = await a.call("GET", f"/vmms/{pid}/state")
            assert status == 200, body
            if want(body["vmm_state"]["state"]):
                return dict(body)
            await trio.sleep(0.005)


def assert_error(got: tuple[int, Any], status: int, code: str, *words: str) -> str:
    """The answer is *status* with Dropshot's error body, *code*, naming *words*."""
    st, body = got
    assert st == status, got
    assert set(body) == {"request_id", "error_code", "message"}, body
    assert body["error_code"] == code, body
    for word in words:
        assert word in body["message"], (word, body)
    return str(body["message"])


# -- the VMM lifecycle --------------------------------------------------------------------


async def test_register_run_stop_unregister() -> None:
    async with agent() as a:
        status, reg = await a.call("PUT", "/vmms/vmm-1", ensure_body(gen=5))
        assert status == 200, reg
        assert reg["vmm_state"]["state"] == "starting"
        assert reg["vmm_state"]["gen"] == 5  # the runner starts from Nexus's generation
        assert reg["migration_in"] is None and reg["migration_out"] is None
        # Registering again is idempotent: the same VMM, the same state.
        status, again = await a.call("PUT", "/vmms/vmm-1", ensure_body(gen=5))
        assert status == 200
        assert again["vmm_state"]["gen"] == 5 and again["vmm_state"]["state"] == "starting"

        put = await a.call("PUT", "/vmms/vmm-1/state", {"state": {"type": "running"}})
        assert put == (200, {"updated_runtime": None})  # a start is asynchronous (upstream)
        running = await wait_state(a, "vmm-1", lambda s: s == "running")
        assert running["vmm_state"]["gen"] > 5

        status, stopped = await a.call("PUT", "/vmms/vmm-1/state", {"state": {"type": "stopped"}})
        assert status == 200
        assert stopped["updated_runtime"]["vmm_state"]["state"] == "stopping"
        assert stopped["updated_runtime"]["vmm_state"]["gen"] > running["vmm_state"]["gen"]
        # Stopped: Propolis halts, the runner publishes Destroyed and leaves the table.
        with trio.fail_after(WAIT):
            await until(lambda: a.api.manager.instance.find("vmm-1") is None)  # type: ignore[union-attr]
        assert_error(await a.call("GET", "/vmms/vmm-1/state"), 404, "NO_SUCH_INSTANCE", "vmm-1")
        # Nexus (the in-process SimNexus here) saw it destroyed.
        assert str(a.world.nexus.vmm_state("vmm-1")) == "destroyed"
        # Unregistering a VMM that is not there: null (upstream: nothing changed).
        assert await a.call("DELETE", "/vmms/vmm-1") == (200, {"updated_runtime": None})


async def test_unregister_a_running_vmm_answers_its_final_state() -> None:
    async with agent() as a:
        assert (await a.call("PUT", "/vmms/vmm-2", ensure_body()))[0] == 200
        await a.call("PUT", "/vmms/vmm-2/state", {"state": {"type": "running"}})
        await wait_state(a, "vmm-2", lambda s: s == "running")
        status, body = await a.call("DELETE", "/vmms/vmm-2")
        assert status == 200
        assert body["updated_runtime"]["vmm_state"]["state"] == "destroyed"
        assert_error(await a.call("GET", "/vmms/vmm-2/state"), 404, "NO_SUCH_INSTANCE")


async def test_reboot_and_migration_target() -> None:
    async with agent() as a:
        await a.call("PUT", "/vmms/vmm-3", ensure_body())
        await a.call("PUT", "/vmms/vmm-3/state", {"state": {"type": "running"}})
        await wait_state(a, "vmm-3", lambda s: s == "running")
        status, body = await a.call("PUT", "/vmms/vmm-3/state", {"state": {"type": "reboot"}})
        assert status == 200
        assert body["updated_runtime"]["vmm_state"]["state"] == "rebooting"
        await wait_state(a, "vmm-3", lambda s: s == "running")

        body = ensure_body()
        body["migration_id"] = "mig-1"
        assert (await a.call("PUT", "/vmms/vmm-4", body))[0] == 200
        target = {"type": "migration_target", "value": {"src_propolis_addr": "[fd00::1]:12400"}}
        assert await a.call("PUT", "/vmms/vmm-4/state", {"state": target}) == (
            200,
            {"updated_runtime": None},
        )
        await wait_state(a, "vmm-4", lambda s: s == "running")


async def test_the_http_client_decodes_the_wire_shapes() -> None:
    from trioxide.actors.wire.agent_api import VmmUnregisterResponse
    from trioxide.actors.wire.types import SledVmmStateBody, from_wire

    async with agent() as a:
        state = await a.http.call("PUT", "/vmms/vmm-5", ensure_body(), response=SledVmmStateBody)
        assert state is not None
        assert from_wire(state).gen == 1
        gone = await a.http.call("DELETE", "/vmms/vmm-5", response=VmmUnregisterResponse)
        assert gone is not None and gone.updated_runtime is not None
        assert gone.updated_runtime.vmm_state.state.value == "failed"  # it never ran
        with pytest.raises(HttpStatusError) as err:
            await a.http.call("GET", "/vmms/vmm-5/state", response=SledVmmStateBody)
        assert (err.value.status, err.value.error_code) == (404, "NO_SUCH_INSTANCE")


# -- every error status ------------------------------------------------------------------


async def test_bad_input_is_400_naming_the_field() -> None:
    async with agent() as a:
        body = ensure_body()
        cases: list[tuple[str, str, Any, str, tuple[str, ...]]] = [
            ("PUT", "/vmms/bad%20id", body, "INVALID_REQUEST", ("propolis_id", "whitespace")),
            ("PUT", "/vmms/" + "p" * (PROPOLIS_ID_MAX + 1), body, "INVALID_REQUEST",
             ("propolis_id", "at most 43")),
            ("GET", "/vmms/-x/state", None, "INVALID_REQUEST", ("propolis_id", "start with")),
            ("GET", "/vmms/a%2Fb/state", None, "INVALID_REQUEST", ("propolis_id", "'/'")),
            ("PUT", "/vmms/v", {**body, "instance_id": "i/1"}, "INVALID_REQUEST",
             ("instance_id", "'/'")),
            ("PUT", "/vmms/v", {"vmm_spec": {}}, "INVALID_REQUEST", ("instance_id",)),
            ("PUT", "/vmms/v", ensure_body(ncpus=0), "INVALID_REQUEST", ("vmm_spec.ncpus",)),
            ("PUT", "/vmms/v", ensure_body(ncpus=256), "INVALID_REQUEST", ("vmm_spec.ncpus",)),
            ("PUT", "/vmms/v", ensure_body(memory_bytes=2**64), "INVALID_REQUEST",
             ("memory_bytes",)),
            ("PUT", "/vmms/v", ensure_body(gen=2**64), "INVALID_REQUEST",
             ("vmm_runtime.gen", "u64")),
            ("PUT", "/vmms/v", ensure_body(gen=-1), "INVALID_REQUEST", ("vmm_runtime.gen",)),
            ("PUT", "/vmms/v", {**body, "migration_id": "m m"}, "INVALID_REQUEST",
             ("migration_id",)),
            ("PUT", "/vmms/v", ensure_body(disks={"d 1": {}}), "INVALID_REQUEST", ("disks",)),
            ("PUT", "/vmms/v", {**body, "vmm_runtime": {**body["vmm_runtime"], "state": "running"}},
             "INVALID_REQUEST", ("vmm_runtime.state", "running")),
            ("PUT", "/vmms/v", b"{not json", "INVALID_REQUEST", ("not valid JSON",)),
            ("PUT", "/vmms/v", b"", "INVALID_REQUEST", ("body is required",)),
            ("PUT", "/vmms/v/state", {"state": {"type": "paused"}}, "INVALID_REQUEST",
             ("state", "paused")),
            ("PUT", "/vmms/v/state", {"state": {"type": "migration_target"}}, "INVALID_REQUEST",
             ("value",)),
            ("PUT", "/vmms/v/state",
             {"state": {"type": "migration_target", "value": {"src_propolis_addr": "nowhere"}}},
             "INVALID_REQUEST", ("src_propolis_addr", "nowhere")),
            ("PUT", "/reservoir", {"mode": {"type": "percentage", "value": 100}},
             "RESERVOIR_CONFIG_INVALID", ("percentage", "100")),
            ("PUT", "/reservoir", {"mode": {"type": "size_mib", "value": 2**40}},
             "RESERVOIR_CONFIG_INVALID", ("MiB",)),
            ("PUT", "/reservoir", {"mode": {"type": "size_mib", "value": -1}}, "INVALID_REQUEST",
             ("mode.value",)),
        ]  # fmt: skip
        for method, path, payload, code, words in cases:
            assert_error(await a.call(method, path, payload), 400, code, *words)
        # Nothing was registered by any of them.
        assert_error(await a.call("GET", "/vmms/v/state"), 404, "NO_SUCH_INSTANCE")


async def test_routing_errors_and_oversized_bodies() -> None:
    async with agent() as a:
        assert_error(await a.call("GET", "/nowhere"), 404, "NOT_FOUND", "/nowhere")
        assert_error(await a.call("POST", "/vmms/v"), 405, "METHOD_NOT_ALLOWED", "POST")
        reply = await a.raw.request("TRACE", a.url + "/vmms/v/state")
        assert reply.status_code == 405 and reply.headers["allow"] == "GET, PUT"  # RFC 9110
        big = b'{"instance_id": "' + b"x" * (2 << 20) + b'"}'
        assert_error(await a.call("PUT", "/vmms/v", big), 413, "PAYLOAD_TOO_LARGE")


async def test_a_propolis_id_of_another_instance_is_409() -> None:
    async with agent() as a:
        assert (await a.call("PUT", "/vmms/vmm-9", ensure_body("inst-a")))[0] == 200
        assert_error(
            await a.call("PUT", "/vmms/vmm-9", ensure_body("inst-b")),
            409,
            "PROPOLIS_ALREADY_REGISTERED",
            "vmm-9",
        )


async def test_teardown_overload_and_timeouts_are_410_and_503() -> None:
    """A VMM whose runner waits for Nexus (down) while it exits: requests past 32 queued
    are refused at once (503 INSTANCE_CHANNEL_FULL), the 32 admitted learn the VMM is gone
    once it exits (410 NO_SUCH_INSTANCE)."""
    async with agent(ask_timeout=WAIT) as a:
        assert (await a.call("PUT", "/vmms/vmm-t", ensure_body()))[0] == 200
        entry = a.api.manager.instance.find("vmm-t")  # type: ignore[union-attr]
        runner = entry.runner.instance
        a.world.nexus.set_available(False)
        results: list[tuple[int, Any]] = []

        async def reboot() -> None:
            results.append(await a.call("PUT", "/vmms/vmm-t/state", {"state": {"type": "reboot"}}))

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                # Stopped without a zone: the runner publishes Destroyed and waits for
                # Nexus to take it before it leaves the table.
                stop = nursery.start_soon
                stop(a.call, "PUT", "/vmms/vmm-t/state", {"state": {"type": "stopped"}})
                await until(lambda: runner.terminating)
                for _ in range(40):
                    nursery.start_soon(reboot)
                await until(lambda: runner.queued == 32 and len(results) == 8)
                a.world.nexus.set_available(True)
        full = [b for s, b in results if s == 503]
        gone = [b for s, b in results if s == 410]
        assert len(full) == 8 and len(gone) == 32, results
        assert {b["error_code"] for b in full} == {"INSTANCE_CHANNEL_FULL"}
        assert {b["error_code"] for b in gone} == {"NO_SUCH_INSTANCE"}

    # An ask that is not answered in time is 503 SERVICE_UNAVAILABLE, not a hang.
    async with agent(ask_timeout=0.2) as a:
        assert (await a.call("PUT", "/vmms/vmm-u", ensure_body()))[0] == 200
        a.world.nexus.outage(until=trio.current_time() + 1.0)
        got = await a.call("PUT", "/vmms/vmm-u/state", {"state": {"type": "stopped"}})
        assert_error(got, 503, "SERVICE_UNAVAILABLE", "vmm-u")


async def test_reservoir_busy_is_503_and_the_inventory_reports_its_size() -> None:
    async with agent() as a:
        status, reservoir = await a.call("GET", "/reservoir")
        assert status == 200 and reservoir["state"] == {
            "kind": "not_configured",
            "bytes": 0,
            "error": None,
        }
        status, state = await a.call(
            "PUT", "/reservoir", {"mode": {"type": "size_mib", "value": 4096}}
        )
        assert (status, state["kind"], state["bytes"]) == (200, "pending", 4096 << 20)
        busy = await a.call("PUT", "/reservoir", {"mode": {"type": "size_mib", "value": 2048}})
        assert_error(busy, 503, "RESERVOIR_BUSY", "busy")
        with trio.fail_after(WAIT):
            await until(lambda: type(a.agent_reservoir()).__name__ == "Ready")
        status, reservoir = await a.call("GET", "/reservoir")
        assert reservoir["mode"] == {"type": "size_mib", "value": 4096}
        assert reservoir["actual_bytes"] == 4096 << 20
        status, inventory = await a.call("GET", "/inventory")
        assert status == 200
        assert inventory["sled_id"] == "sled-7"
        assert inventory["sled_agent_address"] == a.url.removeprefix("http://")
        assert inventory["reservoir_size"] == 4096 << 20


async def test_the_notifier_status_says_what_nexus_knows() -> None:
    async with agent() as a:
        notifier = a.api.notifier.instance
        with trio.fail_after(WAIT):
            await until(lambda: notifier.get_completed >= 1)  # type: ignore[union-attr]
        status, body = await a.call("GET", "/nexus-notifier")
        assert status == 200
        # An empty Nexus: the sled's GET was a 404; it PUTs itself on the next tick.
        assert body["known"] == "not_found" and body["known_info"] is None, body
        assert body["get_completed"] >= 1 and body["errors"] == 0


# -- the OpenAPI document ----------------------------------------------------------------

OPERATIONS = {
    ("put", "/vmms/{propolis_id}"): "vmm_register",
    ("delete", "/vmms/{propolis_id}"): "vmm_unregister",
    ("get", "/vmms/{propolis_id}/state"): "vmm_get_state",
    ("put", "/vmms/{propolis_id}/state"): "vmm_put_state",
    ("get", "/inventory"): "inventory",
    ("get", "/reservoir"): "reservoir_get",
    ("put", "/reservoir"): "reservoir_put",
    ("get", "/nexus-notifier"): "nexus_notifier_status",
}


def _validator(doc: dict[str, Any], ref: str) -> Any:
    return jsonschema_rs.validator_for({"$ref": ref, "components": doc["components"]})


async def test_the_openapi_document_is_complete_and_the_answers_match_it() -> None:
    import schemathesis

    async with agent() as a:
        status, doc = await a.call("GET", "/openapi.json")
        assert status == 200
        assert doc["info"]["version"] == "48.0.0"
        ops = {
            (method, path): op["operationId"]
            for path, item in doc["paths"].items()
            for method, op in item.items()
        }
        assert ops == OPERATIONS
        # Upstream's operation ids and shapes (sled-agent-48.0.0-808ec1.json).
        schemas = doc["components"]["schemas"]
        for name in ("InstanceEnsureBody", "VmmPutStateBody", "VmmPutStateResponse",
                     "VmmUnregisterResponse", "SledVmmStateBody", "ErrorBody"):  # fmt: skip
            assert name in schemas
        assert set(schemas["SledVmmStateBody"]["required"]) == {"vmm_state"}
        # Every $ref resolves, and the document loads as an OpenAPI schema.
        text = json.dumps(doc)
        for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
            assert name in schemas, name
        schema = schemathesis.openapi.from_dict(doc)
        assert len(list(schema.get_all_operations())) == len(OPERATIONS)

        # Real answers validate against the documented schemas.
        register = doc["paths"]["/vmms/{propolis_id}"]["put"]
        ok_ref = register["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        err_ref = register["responses"]["4XX"]["content"]["application/json"]["schema"]["$ref"]
        status, body = await a.call("PUT", "/vmms/vmm-o", ensure_body())
        _validator(doc, ok_ref).validate(body)
        status, body = await a.call("PUT", "/vmms/vmm-o", ensure_body(ncpus=0))
        assert status == 400
        _validator(doc, err_ref).validate(body)
        for path, ref_path in (("/reservoir", "/reservoir"), ("/inventory", "/inventory"),
                               ("/nexus-notifier", "/nexus-notifier")):  # fmt: skip
            response = doc["paths"][ref_path]["get"]["responses"]["200"]
            status, body = await a.call("GET", path)
            assert status == 200
            _validator(doc, response["content"]["application/json"]["schema"]["$ref"]).validate(
                body
            )


def test_the_wire_types_round_trip() -> None:
    from trioxide.actors.wire.agent_api import InstanceEnsureBody, VmmPutStateBody

    body = msgspec.json.decode(json.dumps(ensure_body()).encode(), type=InstanceEnsureBody)
    assert body.vmm_spec.ncpus == 2 and body.vmm_runtime.gen == 1
    put = msgspec.json.decode(b'{"state": {"type": "reboot"}}', type=VmmPutStateBody)
    assert msgspec.json.encode(put) == b'{"state":{"type":"reboot"}}'
