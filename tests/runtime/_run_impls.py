"""Both run recorders under test: the compiled classes (``traces/_cruns.c``) and the
pure-Python ones they must match (``traces._runs.PyHandleRun``/``PySendRun``).

``run_impl`` (a fixture, parametrized) makes tracers created in the test record runs with
one of them; a test module opts in with ``pytestmark = pytest.mark.usefixtures("run_impl")``
or takes the fixture to construct runs itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from trioxide.traces import _runs

__all__ = ["RunImpl", "run_impl"]


@dataclass(frozen=True)
class RunImpl:
    name: str
    HandleRun: type[_runs.HandleRunLike]
    SendRun: type[_runs.SendRunLike]


def _impls() -> list[object]:
    compiled = [
        pytest.param(
            RunImpl("compiled", _runs._cruns.HandleRun, _runs._cruns.SendRun), id="compiled"
        )
        if _runs._cruns is not None
        else pytest.param(
            None, id="compiled", marks=pytest.mark.skip(reason="traces._cruns was not built")
        )
    ]
    return [
        *compiled,
        pytest.param(RunImpl("python", _runs.PyHandleRun, _runs.PySendRun), id="python"),
    ]


@pytest.fixture(params=_impls())
def run_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunImpl]:
    impl: RunImpl = request.param
    monkeypatch.setattr(_runs, "HandleRun", impl.HandleRun)
    monkeypatch.setattr(_runs, "SendRun", impl.SendRun)
    yield impl
