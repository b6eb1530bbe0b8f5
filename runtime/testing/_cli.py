"""The ``trioxide explore`` subcommand (gathered by ``trioxide.cli``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _load(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"trioxide: expected MODULE:ATTRIBUTE, got {spec!r}")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"trioxide: cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"trioxide: {module_name!r} has no attribute {attr!r}") from None


def _explore(args: argparse.Namespace) -> int:
    from ._explore import Exploration, Perturb, explore, replay

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
        trace = Path(args.trace_dir) / f"replay-seed{args.replay}.jsonl"
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
    out = explore(
        target.scenario,
        seeds=seeds,
        invariants=target.invariants,
        at_end=target.at_end,
        perturb=perturb,
        trace_dir=args.trace_dir,
        progress=True,
    )
    print(out.summary())
    if out.violation is not None:
        print(f"replay: trioxide explore {args.scenario} --replay {out.violation.seed}")
    return 0 if out.ok else 1


def register(sub: Any) -> None:
    """Add ``explore`` to the ``trioxide`` command's subparsers *sub*."""
    ex = sub.add_parser("explore", help="run a scenario under many seeds and check its invariants")
    ex.add_argument("scenario", help="MODULE:ATTR of an Exploration (or a scenario function)")
    ex.add_argument("--seeds", type=int, default=1000, help="how many seeds (default 1000)")
    ex.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    ex.add_argument("--extra-yields", type=float, default=None, help="extra-yield probability")
    ex.add_argument("--pct", type=int, default=None, metavar="DEPTH", help="PCT change points")
    ex.add_argument("--trace-dir", default="traces-out", help="where violating traces go")
    ex.add_argument("--replay", type=int, default=None, metavar="SEED", help="replay one seed")
    ex.set_defaults(run=_explore)
