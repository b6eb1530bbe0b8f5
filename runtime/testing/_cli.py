"""The ``trioxide explore`` subcommand (gathered by ``trioxide.cli``)."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from trioxide.traces.cli import CommandError, at_least

__all__ = ["register"]


def _load(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise CommandError(
            f"expected MODULE:ATTRIBUTE (e.g. examples.lost_update:racy), got {spec!r}"
        )
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise CommandError(f"{module_name!r} has no attribute {attr!r}") from None


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability: give 0..1")
    return value


class _CtrlC:
    """While entered, Ctrl-C stops ``explore`` *between* two seeded runs: the run in
    progress ends, then :meth:`seeds` raises ``KeyboardInterrupt``. So the interrupt never
    lands inside the runtime's code, where it could be taken for the scenario's own error
    (Trio installs its handler only while SIGINT has Python's default one). A second
    Ctrl-C raises ``KeyboardInterrupt`` at once."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None

    def __enter__(self) -> _CtrlC:
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def seeds(self, seeds: Iterable[int]) -> Iterator[int]:
        """*seeds*, until Ctrl-C was pressed."""
        for seed in seeds:
            if self.pressed:
                raise KeyboardInterrupt
            yield seed


def _explore(args: argparse.Namespace) -> int:
    from ._explore import Exploration, Perturb, explore, replay

    trace_dir = Path(args.trace_dir)
    if trace_dir.exists() and not trace_dir.is_dir():
        raise CommandError(f"--trace-dir {trace_dir} is a file; give a folder (made if missing)")
    target = _load(args.scenario)
    if not isinstance(target, Exploration):
        target = Exploration(target)  # a bare scenario function: no invariants
    perturb = target.perturb
    if args.extra_yields is not None or args.pct is not None:
        perturb = Perturb(
            args.extra_yields if args.extra_yields is not None else perturb.extra_yields,
            args.pct if args.pct is not None else perturb.pct_depth,
        )
    name = target.name or args.scenario
    if args.replay is not None:
        trace = trace_dir / f"replay-seed{args.replay}.jsonl"
        result = replay(
            target.scenario,
            args.replay,
            invariants=target.invariants,
            at_end=target.at_end,
            perturb=perturb,
            trace_path=trace,
        )
        events = len(result.events)
        print(f"replay {name}, seed {args.replay} (perturbation: {perturb}): {events} events")
        if result.violation is not None:
            print(f"VIOLATION {result.violation}")
        elif result.error is not None:
            print(f"ERROR: the scenario raised {result.error!r}")
        else:
            print(f"no violation; trace: {trace}")
        return 0 if result.ok else 1
    seeds = range(args.start, args.start + args.seeds)
    print(f"explore {name}: seeds {seeds.start}..{seeds.stop - 1}, perturbation: {perturb}")
    with _CtrlC() as ctrl_c:
        out = explore(
            target.scenario,
            seeds=ctrl_c.seeds(seeds),
            invariants=target.invariants,
            at_end=target.at_end,
            perturb=perturb,
            trace_dir=args.trace_dir,
            progress=True,  # a line on stderr now and then, and the summary once at the end
            label=name,
        )
    if out.violation is not None:
        print(f"replay: trioxide explore {args.scenario} --replay {out.violation.seed}")
    return 0 if out.ok else 1


def register(sub: Any) -> None:
    """Add ``explore`` to the ``trioxide`` command's subparsers *sub*."""
    ex = sub.add_parser("explore", help="run a scenario under many seeds and check its invariants")
    ex.add_argument("scenario", help="MODULE:ATTR of an Exploration (or a scenario function)")
    ex.add_argument("--seeds", type=at_least(1), default=1000, help="how many seeds (default 1000)")
    ex.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    ex.add_argument(
        "--extra-yields", type=_probability, default=None, help="extra-yield probability"
    )
    ex.add_argument(
        "--pct", type=at_least(0), default=None, metavar="DEPTH", help="PCT change points"
    )
    ex.add_argument("--trace-dir", default="traces-out", help="where violating traces go")
    ex.add_argument("--replay", type=int, default=None, metavar="SEED", help="replay one seed")
    ex.set_defaults(run=_explore)
