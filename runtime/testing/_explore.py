"""The schedule explorer: run a scenario under many seeds, check invariants after every
handled message, stop at the first violation, and replay it exactly.

A *scenario* is ``async def scenario(run: SeededRun) -> None``: it gets a runtime
(``run.rt``) that is already open, traced and seeded, a seeded ``random.Random``
(``run.random``) for its own choices, and ``run.state`` to share objects with the
invariants. An *invariant* is ``def inv(run: SeededRun) -> bool | None``: it fails by
returning ``False`` or raising ``AssertionError``. Invariants run synchronously inside the
tracer, right after every ``handle`` event, so they see the state between two messages.

A failed invariant is recorded in the run's trace as a ``violation`` event (its ``cause``
is the handled message that was being checked), and the trace ends there: what the
explorer's cancellation of the run shakes loose afterwards is not recorded.

The same seed replays the same run: the same trace, byte for byte, and the same violation
at the same event (``replay``).
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from trioxide.traces import JsonlFileSink, MemorySink, TraceEvent, TraceHeader, Tracer, expand

from .._runtime import Runtime, open_runtime
from ._seeded import run_seeded

__all__ = [
    "Exploration",
    "ExploreResult",
    "Invariant",
    "Perturb",
    "RunResult",
    "SeededRun",
    "Violation",
    "explore",
    "replay",
    "write_trace",
]

Invariant = Callable[["SeededRun"], object]
Scenario = Callable[["SeededRun"], Awaitable[None]]


@dataclass(frozen=True)
class Perturb:
    """How to widen the interleavings a seed explores (both seeded).

    * ``extra_yields``: probability of an extra scheduling point at each send and after
      each handled message (see ``open_runtime(extra_yields=)``);
    * ``pct_depth``: order each scheduling batch by PCT priorities with this many change
      points (see ``PctScheduler``) instead of a seeded shuffle.
    """

    extra_yields: float = 0.0
    pct_depth: int | None = None

    def __str__(self) -> str:
        parts = []
        if self.extra_yields:
            parts.append(f"extra_yields={self.extra_yields}")
        if self.pct_depth is not None:
            parts.append(f"pct_depth={self.pct_depth}")
        return ", ".join(parts) or "none"


class SeededRun:
    """What a scenario and its invariants see during one seeded run.

    ``explore``/``replay`` create it; a scenario gets it as its argument, an invariant
    too. Attributes:

    * ``seed``: the run's seed;
    * ``rt``: an open ``Runtime``, traced and seeded, under
      ``MockClock(autojump_threshold=0)`` (virtual time) with Trio's scheduler seeded;
    * ``random``: a ``random.Random(seed)`` for the scenario's own choices;
    * ``state``: a dict the scenario fills for its invariants;
    * ``sink``/``events``: the trace so far.

    Guarantee: a scenario that only uses Trio time, runtime messages and ``random`` makes
    the same choices, runs the same schedule and writes the same trace (byte for byte,
    ``write_trace``) under the same seed - in this process or another - so ``replay``
    reproduces a violation ``explore`` found, at the same event. Example (run by
    ``tests/runtime/test_plugin_docs.py``):

    >>> import msgspec, trio, trioxide
    >>> from trioxide.testing import SeededRun, explore, replay
    >>> class Hit(msgspec.Struct, frozen=True):
    ...     n: int
    >>> class Log(trioxide.Actor):
    ...     def __init__(self, hits: list[int]) -> None:
    ...         self.hits = hits
    ...     async def handle(self, msg: Hit) -> None:
    ...         self.hits.append(msg.n)
    >>> async def race(run: SeededRun) -> None:  # four senders race to one actor
    ...     hits = run.state["hits"] = []
    ...     log = await run.rt.spawn(Log, hits, name="log")
    ...     async with trio.open_nursery() as nursery:
    ...         for n in range(4):
    ...             nursery.start_soon(log.tell, Hit(n))
    ...     await trio.sleep(1.0)  # virtual: returns at once
    >>> def in_order(run: SeededRun) -> bool:  # checked after every handled message
    ...     return run.state["hits"] == sorted(run.state["hits"])
    >>> found = explore(race, seeds=range(100), invariants=[in_order], progress=False)
    >>> seed = found.violation.seed
    >>> again = replay(race, seed, invariants=[in_order])
    >>> again.violation.key() == found.violation.key()  # same invariant, same event
    True
    >>> again.events == replay(race, seed, invariants=[in_order]).events  # same trace
    True
    """

    def __init__(self, seed: int, rt: Runtime, sink: MemorySink) -> None:
        """Bind a run's *seed*, its open runtime *rt* and the *sink* its tracer writes to
        (done by ``replay``; ``random`` is seeded with *seed*, ``state`` starts empty)."""
        self.seed = seed
        self.rt = rt
        self.random = random.Random(seed)
        self.state: dict[str, Any] = {}
        self.sink = sink

    @property
    def events(self) -> list[TraceEvent]:
        """The events traced so far in this run, in order (a new list on each access)."""
        return self.sink.events


@dataclass(frozen=True)
class Violation:
    """The first invariant that failed in a run, and the event after which it failed."""

    seed: int
    invariant: str
    message: str
    event: TraceEvent
    trace_path: Path | None = None

    def key(self) -> tuple[int, str, int, str]:
        """What must be equal for a replay to reproduce this violation."""
        return (self.seed, self.invariant, self.event.seq, self.message)

    def __str__(self) -> str:
        e = self.event
        where = f"event #{e.seq} at t={e.t:g} ({e.kind} {e.actor} msg {e.msg_id})"
        text = f"seed {self.seed}: invariant {self.invariant} violated after {where}: "
        text += self.message
        if self.trace_path is not None:
            text += f"\n  trace: {self.trace_path}"
        return text


@dataclass
class RunResult:
    """One seeded run."""

    seed: int
    violation: Violation | None
    error: BaseException | None
    events: list[TraceEvent]
    checks: int

    @property
    def ok(self) -> bool:
        return self.violation is None and self.error is None


@dataclass
class ExploreResult:
    """A whole exploration: stopped at the first violation (or scenario error)."""

    seeds_run: int
    violation: Violation | None
    error: tuple[int, BaseException] | None
    events: int
    checks: int
    wall: float
    seeds: list[int] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.violation is None and self.error is None

    @property
    def seeds_per_s(self) -> float:
        return self.seeds_run / self.wall if self.wall > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall if self.wall > 0 else 0.0

    def summary(self) -> str:
        head = (
            f"{self.seeds_run} seeds, {self.events:,} events, {self.checks:,} invariant "
            f"checks in {self.wall:.2f} s ({self.seeds_per_s:,.0f} seeds/s, "
            f"{self.events_per_s:,.0f} events/s)"
        )
        if self.violation is not None:
            return f"{head}\nVIOLATION {self.violation}"
        if self.error is not None:
            seed, exc = self.error
            return f"{head}\nERROR seed {seed}: the scenario raised {exc!r}"
        return f"{head}\nno violation"


@dataclass(frozen=True)
class Exploration:
    """A scenario bundled with its invariants (what ``trioxide explore`` loads)."""

    scenario: Scenario
    invariants: Sequence[Invariant] = ()
    at_end: Sequence[Invariant] = ()
    perturb: Perturb = Perturb()
    name: str = ""


class _Checker:
    """The run's sink: keeps every event and checks the invariants after each handle.

    On the first failure it records a ``violation`` event through *tracer* and keeps
    nothing after it (the run is being cancelled: the rest is the explorer's doing)."""

    def __init__(self, invariants: Sequence[Invariant], check_kinds: frozenset[str]) -> None:
        self.memory = MemorySink(maxlen=10_000_000)
        self.tracer: Tracer | None = None
        self.invariants = tuple((_name(inv), inv) for inv in invariants)
        self.check_kinds = check_kinds
        self.run: SeededRun | None = None
        self.scope: trio.CancelScope | None = None
        self.violation: Violation | None = None
        self.sealed = False  # the violation event is recorded: the trace ends there
        self.checks = 0

    def write(self, event: TraceEvent) -> None:
        if self.sealed:
            return
        self.memory.write(event)
        if event.kind == "violation":
            self.sealed = True
        elif (
            self.violation is None
            and self.run is not None
            and self.invariants
            and event.kind in self.check_kinds
        ):
            self.check(self.invariants, event)

    def check(
        self, invariants: Iterable[tuple[str, Invariant]], event: TraceEvent, end: bool = False
    ) -> None:
        """Run *invariants* after *event* (*end*: the run's end-of-run checks)."""
        assert self.run is not None
        for name, inv in invariants:
            self.checks += 1
            message = _evaluate(inv, self.run)
            if message is not None:
                # (the handle as a trace reader sees it: a folded receive expanded)
                shown = list(expand((event,)))[-1]
                self.violation = Violation(self.run.seed, name, message, shown)
                if self.tracer is not None:
                    if not end and event.kind == "handle" and event.msg_id is not None:
                        self.tracer.violation(event.actor, event.msg_id, name, message)
                    else:  # an end-of-run check: no handled message to point at
                        self.tracer.violation(self.run.rt.name, None, name, message)
                if self.scope is not None:
                    self.scope.cancel()
                return

    def close(self) -> None:
        pass


def _evaluate(inv: Invariant, run: SeededRun) -> str | None:
    """None if *inv* holds, else why not."""
    try:
        ok = inv(run)
    except AssertionError as exc:
        return str(exc) or "assertion failed"
    except Exception as exc:  # a broken invariant is reported, never swallowed
        return f"the invariant raised {exc!r}"
    if ok is False:
        return "returned False"
    return None


def _name(fn: object) -> str:
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else repr(fn)


def write_trace(
    path: str | os.PathLike[str], seed: int | None, events: Iterable[TraceEvent], command: list[str]
) -> Path:
    """Write *events* as a JSONL trace file (a deterministic header: no wall time)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    header = TraceHeader(seed=seed, trio_version=trio.__version__, command=command)
    with JsonlFileSink(p, header) as sink:
        for event in events:
            sink.write(event)
    return p


def replay(
    scenario: Scenario,
    seed: int,
    *,
    invariants: Sequence[Invariant] = (),
    at_end: Sequence[Invariant] = (),
    perturb: Perturb = Perturb(),
    trace_path: str | os.PathLike[str] | None = None,
    check_kinds: Iterable[str] = ("handle",),
) -> RunResult:
    """Run *scenario* once under *seed* (a MockClock run in a fresh ``trio.run``).

    Returns the first violation (the run is cancelled right after it), or the scenario's
    exception. The same arguments always give the same result and the same trace. If
    *trace_path* is given the trace is written there.
    """
    checker = _Checker(invariants, frozenset(check_kinds))
    tracer = checker.tracer = Tracer(checker)
    ends = tuple((_name(inv), inv) for inv in at_end)

    async def main() -> None:
        with trio.CancelScope() as scope:
            checker.scope = scope
            async with open_runtime(
                tracer=tracer, name="explore", seed=seed, extra_yields=perturb.extra_yields
            ) as rt:
                run = SeededRun(seed, rt, checker.memory)
                checker.run = run
                await scenario(run)
                if ends and checker.violation is None:
                    last = checker.memory.events[-1] if len(checker.memory) else _START
                    checker.check(ends, last, end=True)

    error: BaseException | None = None
    try:
        run_seeded(main, seed=seed, pct_depth=perturb.pct_depth)
    except Exception as exc:
        error = exc
    violation = checker.violation
    if violation is not None:
        error = None  # what the cancellation shook loose after the violation is not news
    events = checker.memory.events
    if trace_path is not None:
        path = write_trace(trace_path, seed, events, ["explore", _name(scenario), str(seed)])
        if violation is not None:
            violation = replace(violation, trace_path=path)
    return RunResult(seed, violation, error, events, checker.checks)


_START = TraceEvent(0, 0.0, "start", "explore")


def explore(
    scenario: Scenario,
    *,
    seeds: Iterable[int] = range(1000),
    invariants: Sequence[Invariant] = (),
    at_end: Sequence[Invariant] = (),
    perturb: Perturb = Perturb(),
    trace_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    progress_every: float = 5.0,
    check_kinds: Iterable[str] = ("handle",),
    label: str | None = None,
) -> ExploreResult:
    """Run *scenario* once per seed until an invariant fails or the scenario raises.

    On the first failure, the run's trace is written to ``trace_dir`` (if given) as
    ``<scenario>-seed<N>.jsonl`` and the result names the seed; ``replay`` with that seed
    reproduces it. A progress line goes to stderr every *progress_every* seconds, and the
    summary at the end, each starting ``explore <label>:`` (default: the scenario's name).
    """
    kinds = tuple(check_kinds)
    name = _name(scenario)
    shown = name if label is None else label
    t0 = last = time.perf_counter()
    done: list[int] = []
    events = checks = 0
    for seed in seeds:
        result = replay(
            scenario, seed, invariants=invariants, at_end=at_end, perturb=perturb, check_kinds=kinds
        )
        done.append(seed)
        events += len(result.events)
        checks += result.checks
        if not result.ok:
            violation = result.violation
            if trace_dir is not None:
                path = write_trace(
                    Path(trace_dir) / f"{name}-seed{seed}.jsonl",
                    seed,
                    result.events,
                    ["explore", name, str(seed)],
                )
                if violation is not None:
                    violation = replace(violation, trace_path=path)
            wall = time.perf_counter() - t0
            error = (seed, result.error) if result.error is not None else None
            out = ExploreResult(len(done), violation, error, events, checks, wall, done)
            if progress:
                print(f"explore {shown}: {out.summary()}", file=sys.stderr, flush=True)
            return out
        now = time.perf_counter()
        if progress and now - last >= progress_every:
            last = now
            rate = events / (now - t0)
            print(
                f"explore {shown}: {len(done)} seeds done, {rate:,.0f} events/s, 0 violations",
                file=sys.stderr,
                flush=True,
            )
    out = ExploreResult(len(done), None, None, events, checks, time.perf_counter() - t0, done)
    if progress:
        print(f"explore {shown}: {out.summary()}", file=sys.stderr, flush=True)
    return out
