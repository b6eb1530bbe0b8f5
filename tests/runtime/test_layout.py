"""Structural rules of the code base (docs/architecture.md), checked on the source text.

* One direction of imports: ``actors`` -> ``runtime`` -> ``traces``; ``traces`` never
  imports ``runtime`` or ``actors``, ``runtime`` never imports ``actors``.
* The mailbox's state is private to ``runtime/_mailbox.py``: everything else uses its
  methods (``try_put`` is the senders' fast path), so no copy of put/pop exists elsewhere.
* Trace events are built in one place: only ``traces/_tracer.py`` calls ``_emit``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("runtime", "traces", "actors")
#: What each package may import from the others (its own modules always).
ALLOWED = {"traces": set(), "runtime": {"traces"}, "actors": {"runtime", "traces"}}
MAILBOX_PRIVATE = re.compile(r"\._(q0|queues|levels|putters|reserved|waiter|want)\b")


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_packages(path: Path) -> set[str]:
    """Which of the three packages *path* imports (absolute ``trioxide.X`` imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "trioxide" and len(parts) > 1 and parts[1] in PACKAGES:
                found.add(parts[1])
    return found


def test_imports_flow_one_way() -> None:
    bad = []
    for package in PACKAGES:
        for path in sources(package):
            for other in imported_packages(path) - {package} - ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)} imports trioxide.{other}")
    assert not bad, bad


def test_the_checker_sees_a_wrong_way_import(tmp_path: Path) -> None:
    p = tmp_path / "x.py"
    p.write_text("from trioxide.runtime import Actor\nimport trioxide.actors.demo\n")
    assert imported_packages(p) == {"runtime", "actors"}


def test_mailbox_state_is_private_to_the_mailbox() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{i}"
        for package in ("runtime", "actors")  # traces cannot reach a Mailbox at all
        for path in sources(package)
        if path.name != "_mailbox.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if MAILBOX_PRIVATE.search(line)
    ]
    assert not bad, f"mailbox internals used outside runtime/_mailbox.py: {bad}"
    assert MAILBOX_PRIVATE.search("mb._putters")  # the pattern itself can match


def test_trace_events_are_built_only_by_the_tracer() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{i}"
        for package in PACKAGES
        for path in sources(package)
        if path.relative_to(ROOT).as_posix() != "traces/_tracer.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\.(_?emit)\(", line)
    ]
    assert not bad, bad
