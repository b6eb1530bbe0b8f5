"""Suite-wide checks.

The repository's folders ``runtime/``, ``traces/`` and ``actors/`` are importable only as
``trioxide.runtime``, ``trioxide.traces`` and ``trioxide.actors``. pytest puts the
repository root on ``sys.path`` (the tests are packages), so a stray ``import runtime``
would load a second, separate copy of a package: this hook fails the run if that happens.
"""

from __future__ import annotations

import sys

import pytest

_OLD_NAMES = ("runtime", "traces", "actors")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stray = sorted(m for m in sys.modules if m.split(".")[0] in _OLD_NAMES)
    if stray:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nERROR: imported outside the trioxide package: {stray}", file=sys.stderr)
