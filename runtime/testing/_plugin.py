"""The trioxide pytest plugin (registered through the ``pytest11`` entry point).

Options:
  ``--trioxide-seed=N``  seed for every test using the runtime fixtures (default: a stable
                         seed derived from the test's node id, so runs are reproducible);
  ``--trace-dir=DIR``    where failing tests save their trace (JSON Lines).

Tests that use ``actor_runtime`` (directly or through ``probe``) are run by a Trio runner
that installs the seeded scheduler *before* ``trio.run`` starts and uses
``MockClock(autojump_threshold=0)`` unless the test requests a clock fixture itself
(pytest-trio passes a clock to ``trio.run`` only when the test function asks for one).

Fixtures (async ones run under pytest-trio, in virtual time):
  ``trioxide_seed``  the seed of this test;
  ``trace_sink``     a ``traces.MemorySink`` holding the runtime's events;
  ``actor_runtime``  an open ``Runtime`` with a memory tracer, seeded, under
                     ``MockClock(autojump_threshold=0)``;
  ``probe``          a factory: ``p = await probe("name")`` spawns a ``TestProbe``.

When a test that used ``actor_runtime`` fails, its trace is written under ``--trace-dir``
and the report says how to replay it (``pytest <node id> --trioxide-seed=N``).
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioxide.traces import MemorySink, Tracer

from .._runtime import Runtime, open_runtime
from ._explore import write_trace
from ._probe import TestProbe, spawn_probe
from ._seeded import seeded_scheduler


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trioxide", "trioxide deterministic actor testing")
    group.addoption(
        "--trioxide-seed",
        type=int,
        default=None,
        help="scheduler seed for tests using the trioxide runtime fixtures",
    )
    group.addoption(
        "--trace-dir",
        default=None,
        help="directory where failing trioxide tests write their trace (JSON Lines)",
    )


def _seed_for(config: pytest.Config, nodeid: str) -> int:
    seed = config.getoption("--trioxide-seed")
    return int(seed) if seed is not None else zlib.crc32(nodeid.encode())


def _run_virtual(
    fn: Callable[[], Awaitable[Any]],
    *,
    seed: int,
    clock: trio.abc.Clock | None = None,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> Any:
    with seeded_scheduler(seed):
        return trio.run(
            fn,
            clock=clock or trio.testing.MockClock(autojump_threshold=0),
            instruments=instruments,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "actor_runtime" not in getattr(item, "fixturenames", ()):
            continue
        if any("run" in m.kwargs for m in item.iter_markers("trio")):
            continue  # the test chose its own runner
        seed = _seed_for(config, item.nodeid)
        item.add_marker(pytest.mark.trio(run=functools.partial(_run_virtual, seed=seed)))


@pytest.fixture
def trioxide_seed(request: pytest.FixtureRequest) -> int:
    return _seed_for(request.config, request.node.nodeid)


@pytest.fixture
def trace_sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
async def actor_runtime(
    trioxide_seed: int,
    trace_sink: MemorySink,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Runtime]:
    request.node.trioxide_info = (trioxide_seed, trace_sink)
    async with open_runtime(tracer=Tracer(trace_sink), name="test", seed=trioxide_seed) as rt:
        yield rt


@pytest.fixture
def probe(actor_runtime: Runtime) -> Callable[..., Awaitable[TestProbe]]:
    async def make(name: str = "probe", *, mailbox_size: int = 1024) -> TestProbe:
        return await spawn_probe(actor_runtime, name, mailbox_size=mailbox_size)

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    info = getattr(item, "trioxide_info", None)
    if info is None or report.when != "call" or not report.failed:
        return
    seed, sink = info
    lines = [f"seed: {seed}", f"replay: pytest '{item.nodeid}' --trioxide-seed={seed}"]
    trace_dir = item.config.getoption("--trace-dir")
    if trace_dir:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid).strip("_")
        path = write_trace(
            Path(trace_dir) / f"{safe}.jsonl", seed, sink.events, ["pytest", item.nodeid]
        )
        lines.append(f"trace: {path} ({len(sink)} events; open it with `trioxide view`)")
    report.sections.append(("trioxide", "\n".join(lines)))
