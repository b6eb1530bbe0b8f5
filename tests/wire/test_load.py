"""Load through the sled agent's HTTP API: N concurrent clients churn VMMs (register ->
running -> stopped/unregister) against a ``trioxide agent`` process, a bounded number of
requests. Every request sent is answered, no answer is a 5xx other than 503, every VMM
goes round its cycle, and the sled is empty afterwards. The figures are printed (``-s``);
``bench/bench_wire.py`` measures the same load at a larger size."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from trioxide.actors.wire.churn import churn, percentile

from ._procs import rack_process

CLIENTS = 16
VMMS_PER_CLIENT = 6
WAIT = 60.0  # the bound of the whole churn (it takes a few seconds)


async def test_concurrent_clients_churning_vmms_get_every_answer(tmp_path: Path) -> None:
    async with rack_process("agent", trace_dir=tmp_path) as agent:
        with trio.fail_after(WAIT):
            result = await churn(agent.url, clients=CLIENTS, vmms_per_client=VMMS_PER_CLIENT)
        print("\nload:", json.dumps(result.summary()))
        total = CLIENTS * VMMS_PER_CLIENT
        assert result.sent == result.answered, result.summary()
        assert not result.transport_errors
        assert result.server_errors == 0, result.statuses
        assert set(result.statuses) <= {200, 503}, result.summary()
        assert (result.vmms_started, result.vmms_running, result.vmms_done) == (total,) * 3
        assert result.vmms_failed == 0
        # Each VMM: register, run, >= 1 poll, (stop,) unregister.
        assert result.answered >= total * 4 + total // 2
        assert 0 < percentile(result.latencies, 0.5) <= percentile(result.latencies, 0.99)
        # Nothing is left registered: every id is unknown now.
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            for c in range(CLIENTS):
                reply = await http.get(f"{agent.url}/vmms/churn-{c}-0/state")
                assert reply.status_code == 404, reply.text
        assert agent.proc.returncode is None
