"""Rack processes as children: start ``trioxide <role> ...``, wait for its ready line,
stop it (SIGTERM, then SIGKILL after a grace), or kill it (``kill -9``, a fault).

Guarantees: ``open_child`` returns only once the child printed its ready line (its JSON
is ``Child.info``), or raises ``ChildFailed`` with what the child wrote on stderr; the
child's stdout and stderr are drained for its whole life (it can never block on a full
pipe); leaving the ``async with`` always ends the child (SIGTERM, ``stop_grace`` seconds,
then SIGKILL) and waits for it, even when the block is cancelled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

__all__ = ["Child", "ChildFailed", "open_child", "trioxide_command"]


def trioxide_command() -> list[str]:
    """The command that runs ``trioxide`` with this interpreter."""
    return [sys.executable, "-m", "trioxide.cli"]


class ChildFailed(Exception):
    """A child exited (or timed out) before it was ready."""


@dataclass
class Child:
    """One running rack process."""

    argv: list[str]
    proc: trio.Process
    info: dict[str, Any] = field(default_factory=dict)
    stderr: bytearray = field(default_factory=bytearray)
    stdout_lines: list[str] = field(default_factory=list)
    killed: bool = False

    @property
    def addr(self) -> str:
        return str(self.info["addr"])

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def kill9(self) -> None:
        """``kill -9`` (a fault: no cleanup happens in the child)."""
        self.killed = True
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self, sig: int = signal.SIGTERM, *, grace: float = 15.0) -> int:
        """Ask the child to exit (*sig*), wait up to *grace* seconds, then SIGKILL; its
        exit status."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        with trio.move_on_after(grace):
            return await self.proc.wait()
        self.proc.kill()
        return await self.proc.wait()


@asynccontextmanager
async def open_child(
    argv: Sequence[str], *, ready_timeout: float = 30.0, stop_grace: float = 15.0
) -> AsyncIterator[Child]:
    """Run *argv* (a ``trioxide`` rack process) until the block exits; see the module."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await trio.lowlevel.open_process(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    child = Child(list(argv), proc)
    try:
        async with trio.open_nursery() as nursery:
            ready = trio.Event()

            async def read_stderr() -> None:
                assert proc.stderr is not None
                async for chunk in proc.stderr:
                    if len(child.stderr) < 1 << 20:
                        child.stderr += chunk

            async def read_stdout() -> None:
                assert proc.stdout is not None
                buf = b""
                async for chunk in proc.stdout:
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        text = line.decode(errors="replace")
                        if not ready.is_set():
                            try:
                                child.info = json.loads(text)
                            except ValueError:
                                child.stdout_lines.append(text)
                                continue
                            ready.set()
                        elif len(child.stdout_lines) < 1000:
                            child.stdout_lines.append(text)
                ready.set()  # EOF: the child is gone (checked below)

            nursery.start_soon(read_stderr)
            nursery.start_soon(read_stdout)
            with trio.move_on_after(ready_timeout) as waited:
                await ready.wait()
            if waited.cancelled_caught or not child.info:
                with trio.CancelScope(shield=True):
                    await child.stop(grace=1.0)
                why = child.stderr.decode(errors="replace").strip().splitlines()
                what = " ".join(argv[3:5]) if len(argv) > 3 else " ".join(argv)
                raise ChildFailed(
                    f"{what}: not ready"
                    + (f": {why[-1]}" if why else f" within {ready_timeout} s")
                )
            try:
                yield child
            finally:
                with trio.CancelScope(shield=True):
                    await child.stop(grace=stop_grace)
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
