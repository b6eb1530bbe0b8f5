"""``trioxide agent`` as a real process (started through tests/wire/_procs.py): it answers
its API on loopback, SIGTERM stops it with status 0 and a complete trace file, ``kill -9``
then a restart on the same port serves again (with nothing of its old state), and a user's
mistakes are one line and status 2."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from trioxide import traces
from trioxide.cli import main

from ._procs import TRIOXIDE, rack_process

WAIT = 10.0


def ensure_body(instance_id: str = "inst-1") -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "vmm_spec": {"ncpus": 1, "memory_bytes": 1 << 30},
        "vmm_runtime": {"gen": 1, "state": "starting", "time_updated": "2026-01-01T00:00:00Z"},
    }


async def start_and_run(http: httpx.AsyncClient, url: str, pid: str) -> None:
    reply = await http.put(f"{url}/vmms/{pid}", json=ensure_body())
    assert reply.status_code == 200, reply.text
    reply = await http.put(f"{url}/vmms/{pid}/state", json={"state": {"type": "running"}})
    assert reply.status_code == 200, reply.text
    with trio.fail_after(WAIT):
        while True:
            reply = await http.get(f"{url}/vmms/{pid}/state")
            assert reply.status_code == 200, reply.text
            if reply.json()["vmm_state"]["state"] == "running":
                return
            await trio.sleep(0.005)


async def test_the_agent_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    async with (
        rack_process(
            "agent", "--sled-id", "sled-3", "--view-port", "0", trace_dir=tmp_path
        ) as agent,
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        assert agent.info["role"] == "agent"
        assert agent.info["sled_id"] == "sled-3" and agent.info["name"] == "sled-3"
        assert agent.addr.startswith("127.0.0.1:")
        # Its live trace viewer, on a port of its own.
        viewer = agent.info["viewer"]
        assert viewer.startswith("http://127.0.0.1:") and agent.addr not in viewer
        assert (await http.get(viewer)).status_code == 200
        await start_and_run(http, agent.url, "vmm-a")
        inventory = (await http.get(f"{agent.url}/inventory")).json()
        assert inventory["sled_id"] == "sled-3" and inventory["sled_agent_address"] == agent.addr
        doc = (await http.get(f"{agent.url}/openapi.json")).json()
        assert "/vmms/{propolis_id}/state" in doc["paths"]
        with trio.fail_after(WAIT):
            status = await agent.stop(signal.SIGTERM)
        assert status == 0, bytes(agent.stderr)
    assert b"Traceback" not in bytes(agent.stderr)
    # The trace is complete: a header naming the process, every event readable, and the
    # requests' handling in it (the runner of vmm-a, spawned and stopped).
    trace = traces.read_trace(tmp_path / "agent.jsonl")
    assert trace.header.command == ["trioxide", "agent", "sled-3"]
    assert trace.errors == [] and len(trace.events) > 0
    actors = {e.actor for e in trace.events}
    assert any("runner-vmm-a" in a for a in actors), sorted(actors)[:20]
    kinds = {e.kind for e in trace.events}
    assert {"spawn", "stop"} <= kinds, kinds


async def test_kill_9_then_restart_on_the_same_port_serves_again(tmp_path: Path) -> None:
    """State lives in the agent's memory: after kill -9 and a restart, the VMMs it had
    are unknown (404 NO_SUCH_INSTANCE) and it serves new ones."""
    async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as http:
        async with rack_process("agent", trace_dir=tmp_path, name="first") as first:
            await start_and_run(http, first.url, "vmm-k")
            port = first.addr.rsplit(":", 1)[1]
            first.kill9()
            with trio.fail_after(WAIT):
                status = await first.proc.wait()
            assert status == -signal.SIGKILL
        with pytest.raises(httpx.TransportError):
            await http.get(f"{first.url}/vmms/vmm-k/state")
        # Port 0 from rack_process comes first; the later --port wins (argparse).
        async with rack_process(
            "agent", "--port", port, trace_dir=tmp_path, name="second"
        ) as second:
            assert second.addr == first.addr
            reply = await http.get(f"{second.url}/vmms/vmm-k/state")
            assert reply.status_code == 404
            assert reply.json()["error_code"] == "NO_SUCH_INSTANCE"
            await start_and_run(http, second.url, "vmm-k")  # the same id starts afresh
            with trio.fail_after(WAIT):
                assert await second.stop() == 0


async def _run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [*TRIOXIDE, *args], capture_stdout=True, capture_stderr=True, check=False
        )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--nexus", "http://example.com:80"], "loopback only"),
        (["--nexus", "ftp://127.0.0.1:1"], "http://"),
        (["--hypervisor", "http://127.0.0.1"], "give the port"),
        (["--hypervisor", "http://127.0.0.1:99999"], "not a URL"),
        (["--sled-id", "a b"], "--sled-id"),
        (["--time-scale", "0"], "--time-scale"),
        (["--time-scale", "nan"], "--time-scale"),
        (["--host", "0.0.0.0"], "loopback only"),
    ],
)
def test_a_users_mistake_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    # Refused while parsing, before anything runs: in process (the port test below runs
    # the real command).
    assert main(["agent", "--trace", str(tmp_path / "a.jsonl"), *args]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert out == ""


async def test_a_port_in_use_is_one_line_and_status_2(tmp_path: Path) -> None:
    async with rack_process("agent", trace_dir=tmp_path, name="holder") as holder:
        port = holder.addr.rsplit(":", 1)[1]
        done = await _run_cli("agent", "--port", port, "--trace", str(tmp_path / "b.jsonl"))
    assert done.returncode == 2, done
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("trioxide: ") and "in use" in lines[0] and port in lines[0]


async def test_the_agent_over_a_hypervisor_and_a_nexus_process(tmp_path: Path) -> None:
    """--hypervisor and --nexus: the same actors reach Propolis and Nexus over HTTP; a
    VMM started through the agent's API runs in the hypervisor process and Nexus (its own
    process) records its states."""
    async with (
        rack_process("hypervisor", "--time-scale", "0.01", trace_dir=tmp_path) as hv,
        rack_process("nexus", trace_dir=tmp_path) as nexus,
        rack_process(
            "agent", "--hypervisor", hv.url, "--nexus", nexus.url, trace_dir=tmp_path
        ) as agent,
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        assert agent.info["hypervisor"] == hv.url and agent.info["nexus"] == nexus.url
        await start_and_run(http, agent.url, "vmm-w")
        with trio.fail_after(WAIT):
            while True:
                reply = await http.get(f"{nexus.url}/sim/vmms/vmm-w")
                if reply.status_code == 200 and reply.json()["state"]["kind"] == "running":
                    break
                await trio.sleep(0.01)
        reply = await http.delete(f"{agent.url}/vmms/vmm-w")
        assert reply.status_code == 200, reply.text
        assert reply.json()["updated_runtime"]["vmm_state"]["state"] == "destroyed"
        # The sled told Nexus about itself (the notifier, over HTTP), with its real address.
        with trio.fail_after(WAIT):
            while True:
                reply = await http.get(f"{nexus.url}/sled-agents/sled-0")
                if reply.status_code == 200:
                    break
                await trio.sleep(0.05)
        assert reply.json()["sa_address"] == agent.addr
        for rp in (agent, nexus, hv):
            with trio.fail_after(WAIT):
                assert await rp.stop() == 0, bytes(rp.stderr)


async def test_sigterm_ends_the_agents_in_flight_long_polls_as_cancelled(tmp_path: Path) -> None:
    """On SIGTERM the sled's actors stop before the agent's HTTP clients close: a running
    VMM's monitor has a long poll in flight, and its trace ends ``cancelled``, not as an
    error on a connection closed under it."""
    from trioxide import traces

    async with (
        rack_process("hypervisor", "--time-scale", "0.01", trace_dir=tmp_path) as hv,
        rack_process("agent", "--hypervisor", hv.url, trace_dir=tmp_path) as agent,
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
    ):
        await start_and_run(http, agent.url, "vmm-t")
        with trio.fail_after(WAIT):
            assert await agent.stop() == 0, bytes(agent.stderr)
    events = list(traces.iter_trace(tmp_path / "agent.jsonl"))
    polls = {
        e.msg_id: e
        for e in events
        if e.kind == "http_send" and "state-monitor" in (e.detail or "")
    }
    ends = [e for e in events if e.kind == "http_end" and e.corr in polls]
    assert len(polls) >= 2 and len(ends) == len(polls)  # every long poll ended
    last = max(ends, key=lambda e: e.seq)
    assert last.outcome == "cancelled", last
    assert not [e for e in ends if e.outcome == "error"], ends
