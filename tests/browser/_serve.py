"""What the browser tests share: Debian's Chromium (never a downloaded one), a demo trace,
and ``trioxide view`` serving it in a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from trioxide.cli import main as cli

__all__ = ["CHROMIUM", "launch", "needs_chromium", "served", "write_demo_trace"]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Mark a module with it (``pytestmark = needs_chromium``): skipped where Chromium is missing.
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no Debian chromium")
_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def launch(playwright: Any) -> Any:
    """A headless Debian Chromium driven by *playwright*."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=_ARGS)


def write_demo_trace(path: Path, vmms: int = 6, seed: int = 2) -> Path:
    """The demo's trace (small: a few VMMs, both incidents) written to *path*."""
    assert cli(["demo", "--vmms", str(vmms), "--seed", str(seed), "--trace", str(path)]) == 0
    return path


@contextmanager
def served(trace: Path, *args: str) -> Iterator[str]:
    """``trioxide view TRACE ARGS`` in a subprocess; yields the URL it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioxide", "view", str(trace), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/\S*", line)
        assert match, f"no URL in {line!r}"
        yield match.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
