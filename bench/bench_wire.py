"""The sled agent's HTTP API under VMM churn (issue 14): requests/s and p50/p99 latency.

Starts a ``trioxide agent`` process on loopback (traced to a file, as a rack process always
is; ``--time-scale`` as the agent's default) and drives ``actors.wire.churn`` against it:
``--clients`` concurrent clients each take ``--vmms`` VMMs through register -> running ->
stopped/unregister. Every request is an HTTP round trip on loopback through hypercorn and
httpx; latency is measured by the client (``trio.current_time``: real time), from sending
to the decoded answer.

Usage: ``python bench/bench_wire.py [--clients 32] [--vmms 20] [--rounds 3] [--json F]``.
Prints each round's figures and the median over the rounds; exits 1 if any request went
unanswered or any answer was a 5xx other than 503.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from trioxide.actors.wire.churn import churn

TRIOXIDE = [sys.executable, "-m", "trioxide.cli"]
READY_TIMEOUT = 30.0


async def _agent(trace: Path, time_scale: float, nursery: trio.Nursery) -> tuple[trio.Process, str]:
    cmd = [
        *TRIOXIDE,
        "agent",
        "--port",
        "0",
        "--trace",
        str(trace),
        "--time-scale",
        str(time_scale),
    ]
    proc = await trio.lowlevel.open_process(
        cmd, stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    buf = b""
    with trio.fail_after(READY_TIMEOUT):
        while b"\n" not in buf:
            chunk = await proc.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"{cmd} exited before it was ready")
            buf += chunk
    info = json.loads(buf.split(b"\n", 1)[0])

    async def drain() -> None:
        assert proc.stdout is not None
        async for _ in proc.stdout:
            pass

    nursery.start_soon(drain)
    return proc, f"http://{info['addr']}"


async def one_round(args: argparse.Namespace, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            proc, url = await _agent(Path(tmp) / "agent.jsonl", args.time_scale, nursery)
            try:
                result = await churn(
                    url, clients=args.clients, vmms_per_client=args.vmms, prefix=f"r{n}"
                )
            finally:
                proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            trace_bytes = (await (trio.Path(tmp) / "agent.jsonl").stat()).st_size
    summary = result.summary()
    summary["agent_exit"] = proc.returncode
    summary["trace_mb"] = round(trace_bytes / 1e6, 1)
    summary["ok"] = (
        result.sent == result.answered and result.server_errors == 0 and result.vmms_failed == 0
    )
    return summary


async def main(args: argparse.Namespace) -> int:
    rounds = []
    for n in range(args.rounds):
        summary = await one_round(args, n)
        rounds.append(summary)
        lat = summary["latency_ms"]
        print(
            f"round {n + 1}: {summary['answered']}/{summary['sent']} answered in "
            f"{summary['elapsed_s']} s: {summary['requests_per_s']} req/s, "
            f"p50 {lat['p50']} ms, p99 {lat['p99']} ms; statuses {summary['statuses']}; "
            f"VMMs {summary['vmms']}; trace {summary['trace_mb']} MB",
            flush=True,
        )
    median = {
        "requests_per_s": statistics.median(r["requests_per_s"] for r in rounds),
        "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in rounds),
        "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in rounds),
    }
    ok = all(r["ok"] for r in rounds)
    print(
        f"median of {args.rounds}: {median['requests_per_s']} req/s, p50 {median['p50_ms']} ms, "
        f"p99 {median['p99_ms']} ms ({args.clients} clients x {args.vmms} VMMs; "
        f"time scale {args.time_scale}) - {'PASS' if ok else 'FAIL'}"
    )
    if args.json:
        payload = {
            "config": vars(args) | {"json": str(args.json)},
            "rounds": rounds,
            "median": median,
        }
        await trio.Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0 if ok else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--vmms", type=int, default=20, help="VMMs per client")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (a fresh agent each)")
    parser.add_argument("--time-scale", type=float, default=0.01, help="the agent's time scale")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args()))
