"""``trioxide demo`` names the incidents it stages and how to open each in the viewer."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from trioxide.actors.demo import INCIDENTS, view_command
from trioxide.cli import main as cli
from trioxide.traces.cli import with_focus


def test_demo_prints_each_incident_with_its_view_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(tmp_path / ".venv" / "bin" / "trioxide")])
    assert cli(["demo", "--vmms", "3", "--trace", "out/sled.jsonl"]) == 0
    out = capsys.readouterr().out
    assert set(INCIDENTS) == {"vmm-vcr", "vmm-abort"}
    for pid in INCIDENTS:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(f"{pid}:"))
        assert "Nexus saw starting" in line and line.rstrip().endswith("destroyed")
        # as `make demo` runs it: the venv's script, relative to the working directory
        assert f".venv/bin/trioxide view out/sled.jsonl --focus {pid}" in out


def test_view_command_spells_the_program_as_it_was_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["/somewhere/else/trioxide"])
    cmd = view_command(Path("a b.jsonl"), "vmm-abort")
    assert shlex.split(cmd) == [
        "/somewhere/else/trioxide",
        "view",
        "a b.jsonl",
        "--focus",
        "vmm-abort",
    ]
    monkeypatch.setattr(sys, "argv", ["/x/__main__.py"])  # python -m trioxide
    assert shlex.split(view_command(Path("t.jsonl"), "v"))[1:3] == ["-m", "trioxide"]


def test_view_focus_is_a_url_parameter() -> None:
    assert with_focus("http://127.0.0.1:1/", "vmm-vcr") == "http://127.0.0.1:1/?focus=vmm-vcr"
    assert with_focus("http://h:1/?token=t", "a&b") == "http://h:1/?token=t&focus=a%26b"
    assert with_focus("http://h:1/", None) == "http://h:1/"
