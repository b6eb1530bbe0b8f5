"""Command line: ``python -m tests.runtime.fuzz``.

* ``--scenarios N [--start S] [--workers 2]``: run seeds S..S+N-1, both modes each, in
  worker processes; a progress line; every failing seed with its failures and a replay
  command; a summary grouped by failure class. Exits 1 on any failure.
* ``--replay SEED [--traced|--untraced] [--trace-out FILE] [--show-scenario]``: rerun one
  seed (both modes unless one is given) and print each failure in full.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

from .checker import key_of
from .runner import RunResult, default_workers, replay_command, run_detailed, run_parallel
from .world import ASK_DEADLOCK_AVAILABLE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.runtime.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--scenarios", type=int, default=1000, help="how many seeds (default 1000)")
    p.add_argument("--start", type=int, default=0, help="the first seed (default 0)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="worker processes (default: 2, or 1 on a single core)")  # fmt: skip
    p.add_argument("--replay", type=int, metavar="SEED", help="rerun one seed in detail")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--traced", action="store_true", help="replay only the traced run")
    mode.add_argument("--untraced", action="store_true", help="replay only the untraced run")
    p.add_argument("--trace-out", type=Path, metavar="FILE",
                   help="with --replay: write the traced run's trace (JSON Lines)")  # fmt: skip
    p.add_argument("--show-scenario", action="store_true",
                   help="with --replay: print the generated scenario")  # fmt: skip
    p.add_argument("--examples", type=int, default=2,
                   help="examples per failure class in the summary (default 2)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no per-seed failure listing")
    return p


def replay(args: argparse.Namespace) -> int:
    seed = args.replay
    modes = [True] if args.traced else [False] if args.untraced else [True, False]
    status = 0
    for traced in modes:
        trace_out = args.trace_out if traced else None
        scenario, obs, failures = run_detailed(seed, traced, trace_out)
        mode = "traced" if traced else "untraced"
        if args.show_scenario and traced == modes[0]:
            print(scenario.describe())
        print(f"seed {seed} ({mode}): {len(obs.msgs)} messages, {len(obs.cells)} actors, "
              f"{len(obs.events)} trace events, escaped={obs.escaped!r}")  # fmt: skip
        if trace_out is not None:
            print(f"  trace written to {trace_out}")
        if not failures:
            print("  all guarantees held")
            continue
        status = 1
        for f in failures:
            print(f"  FAIL {f.render(seed, traced)}")
    return status


def scan(args: argparse.Namespace) -> int:
    seeds = list(range(args.start, args.start + args.scenarios))
    total = len(seeds)
    done = 0
    failing_runs = 0
    failing_seeds: set[int] = set()
    by_class: dict[str, set[int]] = collections.defaultdict(set)
    examples: dict[str, list[str]] = collections.defaultdict(list)
    per_seed: dict[int, list[RunResult]] = collections.defaultdict(list)
    started = time.perf_counter()
    tty = sys.stderr.isatty()

    def progress(results: list[RunResult]) -> None:
        nonlocal done, failing_runs
        done += len({r.seed for r in results})
        failing_runs += sum(1 for r in results if r.failures)
        rate = done / max(time.perf_counter() - started, 1e-9)
        failing_seeds.update(r.seed for r in results if r.failures)
        line = (f"\r{done}/{total} scenarios, {len(failing_seeds)} failing seeds "
                f"({failing_runs} runs), {rate:,.0f} scenarios/s")  # fmt: skip
        if tty or done == total:
            print(line, end="" if done < total else "\n", file=sys.stderr, flush=True)

    print(f"fuzzing seeds {seeds[0]}..{seeds[-1]} in both modes with {args.workers} worker(s)"
          + ("" if ASK_DEADLOCK_AVAILABLE else " (trioxide.AskDeadlock not available yet)"),
          file=sys.stderr)  # fmt: skip
    for r in run_parallel(seeds, args.workers, progress=progress):
        per_seed[r.seed].append(r)
        if not r.failures:
            continue
        failing_seeds.add(r.seed)
        for f in r.failures:
            key = key_of(f)
            by_class[key].add(r.seed)
            if len(examples[key]) < args.examples and all(
                f" {r.seed}," not in e for e in examples[key]
            ):
                examples[key].append(f)
    wall = time.perf_counter() - started
    if not args.quiet:
        for seed in sorted(failing_seeds):
            print(f"\nseed {seed}:")
            for r in sorted(per_seed[seed], key=lambda r: not r.traced):
                for f in r.failures:
                    print(f"  {f}")
            modes = [r.traced for r in per_seed[seed] if r.failures]
            print(f"  replay: {replay_command(seed, modes[0])}")
    print(f"\n{total} scenarios ({2 * total} runs) in {wall:.1f} s "
          f"({total / wall:,.0f} scenarios/s); {len(failing_seeds)} failing seeds")  # fmt: skip
    if by_class:
        print("\nfailure classes (seeds failing):")
        for key, seeds_ in sorted(by_class.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            print(f"  {len(seeds_):5d}  {key}")
            for e in examples[key]:
                print(f"         e.g. {e}")
    return 1 if failing_seeds else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.replay is not None:
        return replay(args)
    return scan(args)


if __name__ == "__main__":
    sys.exit(main())
