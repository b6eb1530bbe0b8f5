"""The trioxide pytest plugin (registered through the ``pytest11`` entry point).

Options:
  ``--trioxide-seed=N``          seed for every test using the runtime fixtures (default: a
                                 stable seed derived from the test's node id, so runs are
                                 reproducible);
  ``--trace-dir=DIR``            where tests that used ``actor_runtime`` save their trace
                                 (JSON Lines, one file per test, named after its node id);
  ``--trace-keep=failed|all``    which of those tests save it: ``failed`` (the default) or
                                 ``all``, passing ones too (needs ``--trace-dir``).

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

When a test that used ``actor_runtime`` fails, the report says how to replay it
(``pytest <node id> --trioxide-seed=N``) and, with ``--trace-dir``, where its trace is. A
saved trace's header holds the seed and ``command: ["pytest", <node id>]``.
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

_KEEP = ("failed", "all")


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
        help="directory where trioxide tests write their trace (JSON Lines); see --trace-keep",
    )
    group.addoption(
        "--trace-keep",
        choices=_KEEP,
        default="failed",
        help="whose trace --trace-dir keeps: 'failed' tests only (default) or 'all' tests",
    )


def pytest_configure(config: pytest.Config) -> None:
    keep = config.getoption("--trace-keep", default="failed")
    if keep != "failed" and not config.getoption("--trace-dir", default=None):
        raise pytest.UsageError(
            f"--trace-keep={keep} needs --trace-dir=DIR (the directory to write the traces to)"
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
    """The scheduler seed of this test: ``--trioxide-seed=N``, else crc32 of its node id.
    Same seed -> same interleaving and same trace for tests using ``actor_runtime``;
    replay with ``pytest '<node id>' --trioxide-seed=N`` (a failure report prints it).

    The default is stable across runs and machines (a test keeps its seed until it is
    renamed). Only tests that use ``actor_runtime`` (or ``probe``) run under the seeded
    scheduler; for others this is just a number.
    """
    return _seed_for(request.config, request.node.nodeid)


@pytest.fixture
def trace_sink() -> MemorySink:
    """The ``traces.MemorySink`` that ``actor_runtime`` traces every event into, in order,
    with virtual times (``trace_sink.events`` to assert on); ``--trace-dir=DIR`` saves it
    for failing tests (``--trace-keep=all``: for every test).

    Events: spawn, start, send, receive, handle, reply, timeout, cancel, fail, restart,
    stop... (``trioxide.traces.KINDS``). Bounded like any ``MemorySink``: the newest
    1,000,000 events. A saved file's header holds the seed and the test's node id; open it
    with ``trioxide view``.
    """
    return MemorySink()


@pytest.fixture
async def actor_runtime(
    trioxide_seed: int,
    trace_sink: MemorySink,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Runtime]:
    """An open ``Runtime`` for this test: seeded with ``trioxide_seed``, in virtual time
    (``MockClock(autojump_threshold=0)``), every event traced into ``trace_sink``; replay
    with ``pytest '<node id>' --trioxide-seed=N``.

    * the test runs under ``MockClock(autojump_threshold=0)`` (unless it requests a clock
      fixture itself): timers and timeouts take no wall time;
    * Trio's scheduler is seeded with ``trioxide_seed`` before ``trio.run`` starts, so the
      interleaving and the trace are a function of the seed;
    * every runtime event is traced into ``trace_sink``; the runtime (named ``test``) and
      all its actors are stopped when the test ends.

    A failing test's report prints ``replay: pytest '<node id>' --trioxide-seed=N``; with
    ``--trace-dir=DIR`` its trace is saved there (``--trace-keep=all``: passing tests' too).
    """
    request.node.trioxide_info = (trioxide_seed, trace_sink)
    async with open_runtime(tracer=Tracer(trace_sink), name="test", seed=trioxide_seed) as rt:
        yield rt


@pytest.fixture
def probe(actor_runtime: Runtime) -> Callable[..., Awaitable[TestProbe]]:
    """A factory of ``TestProbe`` actors on ``actor_runtime``: ``p = await probe("name")``;
    seeded, in virtual time and traced like ``actor_runtime`` (replay the same way).

    A probe records what it is sent (``p.received``) and asserts on it in virtual time:
    ``await p.expect(Pong, within=2.5)``, ``await p.expect_no_message(within=10.0)``;
    ``p.ref`` is its address, ``p.reply`` what it answers to asks (keyword argument:
    ``mailbox_size``, default 1024).
    """

    async def make(name: str = "probe", *, mailbox_size: int = 1024) -> TestProbe:
        return await spawn_probe(actor_runtime, name, mailbox_size=mailbox_size)

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    info = getattr(item, "trioxide_info", None)
    if info is None or report.when != "call":
        return
    keep_all = item.config.getoption("--trace-keep") == "all"
    if not (report.failed or keep_all):
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
