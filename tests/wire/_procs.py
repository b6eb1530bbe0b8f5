"""Rack processes for the wire tests: start one (``trioxide <role> ...``) as a real
subprocess, read its ready line, stop it (SIGTERM, or SIGKILL for the kill tests).

Everything is bounded: a process that does not print its ready line within
``READY_TIMEOUT`` seconds (real time) fails the test; ``stop`` waits at most
``STOP_TIMEOUT`` before it kills.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
TRIOXIDE = [sys.executable, "-m", "trioxide.cli"]


@dataclass
class RackProcess:
    role: str
    proc: trio.Process
    info: dict[str, Any]
    stderr: list[bytes] = field(default_factory=list)

    @property
    def addr(self) -> str:
        return str(self.info["addr"])

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        with trio.move_on_after(STOP_TIMEOUT):
            return await self.proc.wait()
        self.proc.kill()
        return await self.proc.wait()


@asynccontextmanager
async def rack_process(
    role: str, *args: str, trace_dir: Path, name: str | None = None
) -> AsyncIterator[RackProcess]:
    """``trioxide <role> --port 0 --trace <trace_dir>/<name>.jsonl *args``, ready."""
    label = name or role
    cmd = [*TRIOXIDE, role, "--port", "0", "--trace", str(trace_dir / f"{label}.jsonl"), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await trio.lowlevel.open_process(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None and proc.stderr is not None
    rp = RackProcess(role, proc, {})
    try:
        async with trio.open_nursery() as nursery:

            async def drain_stderr() -> None:
                assert proc.stderr is not None
                async for chunk in proc.stderr:
                    rp.stderr.append(chunk)

            nursery.start_soon(drain_stderr)
            buf = b""
            with trio.fail_after(READY_TIMEOUT):
                while b"\n" not in buf:
                    chunk = await proc.stdout.receive_some(4096)
                    if not chunk:
                        raise RuntimeError(
                            f"{cmd} exited before it was ready: {b''.join(rp.stderr)!r}"
                        )
                    buf += chunk
            rp.info = json.loads(buf.split(b"\n", 1)[0])

            async def drain_stdout() -> None:
                assert proc.stdout is not None
                async for _chunk in proc.stdout:
                    pass

            nursery.start_soon(drain_stdout)
            try:
                yield rp
            finally:
                with trio.CancelScope(shield=True):
                    await rp.stop()
                nursery.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
