"""The main job (``trioxide demo``) runs and writes a readable trace."""

from __future__ import annotations

from pathlib import Path

import pytest

import traces
from actors.cli import main


def test_demo_runs_and_writes_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo.jsonl"
    assert main(["demo", "--trace", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "disk-0 crashed and was restarted: restarts=1" in printed
    assert "Rejected(HaltPending" in printed
    tf = traces.read_trace(out)
    assert tf.errors == []
    assert tf.header.command == ["trioxide", "demo"]
    kinds = {e.kind for e in tf.events}
    assert {"spawn", "send", "receive", "handle", "reply", "fail", "restart", "timeout"} <= kinds
    seqs = [e.seq for e in tf.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
