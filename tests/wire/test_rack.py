"""``trioxide rack``: the main job at scale, end to end (real processes on loopback).

One bounded run with every fault: it must exit 0 (every request answered, no 5xx but
503, each fault had its effect, every process stopped cleanly) and say so in its summary;
its trace files merge. A user's mistake is one line and status 2.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

TRIOXIDE = [sys.executable, "-m", "trioxide.cli"]


@pytest.fixture(scope="module")
def rack_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("rack")
    done = subprocess.run(
        [*TRIOXIDE, "rack", "--sleds", "2", "--vmms", "2", "--rounds", "3", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=out,
    )
    return done, out


def test_rack_answers_every_request_under_faults(
    rack_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, _out = rack_run
    text = done.stdout
    assert done.returncode == 0, text + done.stderr[-3000:]
    m = re.search(r"sent (\d+), answered (\d+) \(([^)]*)\)", text)
    assert m is not None, text
    assert m.group(1) == m.group(2) and int(m.group(1)) > 0
    codes = [int(c.split(":")[0]) for c in m.group(3).split(", ")]
    assert all(c < 500 or c == 503 for c in codes), m.group(3)
    for fault in (
        "VCR replacement",
        "stop during activation",
        "Nexus outage",
        "hypervisor kill -9",
    ):
        assert re.search(rf"{fault}: .*\[ok\]", text), (fault, text)
    assert "NOT AS EXPECTED" not in text and "UNANSWERED" not in text
    assert re.search(r"exit statuses: nexus 0, sled-0 0, sled-1 0, .*-9, hypervisor 0", text), text
    assert "Traceback" not in done.stderr


def test_rack_writes_a_trace_per_process(
    rack_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _done, out = rack_run
    names = {p.name for p in out.glob("*.jsonl")}
    assert {
        "nexus.jsonl",
        "sled-0.jsonl",
        "sled-1.jsonl",
        "hypervisor.jsonl",
        "rack.jsonl",
    } <= names
    assert "hypervisor-2.jsonl" in names  # the hypervisor started again after kill -9
    for name in ("nexus.jsonl", "sled-0.jsonl", "rack.jsonl"):
        lines = (out / name).read_text().splitlines()
        assert lines[0].startswith('{"trioxide_trace"') and len(lines) > 10, name


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--sleds", "0"], "--sleds"), (["--vmms", "x"], "--vmms")],
)
def test_rack_mistakes_are_one_line(args: list[str], needle: str) -> None:
    done = subprocess.run([*TRIOXIDE, "rack", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
