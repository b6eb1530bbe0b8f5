"""Rack processes for the wire tests: ``trioxide <role> --port 0 --trace <dir>/<name>.jsonl
...`` as a real subprocess, ready (its JSON ready line read), always stopped at the end
(``actors/wire/children.py``, which ``trioxide rack`` uses too)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from trioxide.actors.wire.children import Child, open_child, trioxide_command

__all__ = ["TRIOXIDE", "Child", "rack_process"]

TRIOXIDE = trioxide_command()


@asynccontextmanager
async def rack_process(
    role: str, *args: str, trace_dir: Path, name: str | None = None
) -> AsyncIterator[Child]:
    """``trioxide <role> --port 0 --trace <trace_dir>/<name>.jsonl *args``, ready."""
    trace = trace_dir / f"{name or role}.jsonl"
    argv = [*TRIOXIDE, role, "--port", "0", "--trace", str(trace), *args]
    async with open_child(argv) as child:
        yield child
