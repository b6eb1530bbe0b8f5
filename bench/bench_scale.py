"""Is the sled demo linear at scale? ``trioxide demo --vmms 2000`` against ``--vmms 200``.

Usage: ``python bench/bench_scale.py [--rounds 5] [--small 200] [--large 2000]``
(also run by ``make bench``).

Each round runs the demo (seed 1, trace written to a temporary directory) once at each
size, alternately, every run in a fresh interpreter (``python -m trioxide demo``), so a
slow phase of a shared machine hits both sizes alike. Prints every run's wall time (and
CPU time: user + sys of the child, less sensitive to other load), the ratio of each round
and the median of the rounds' ratios, against ``--max-ratio`` (default 10: ten times the
VMMs in at most ten times the time; with ``--strict`` a MISS exits 1), and the ratio of
the two runs' trace events (the work itself: what a perfectly linear run's ratio would
be). Exits with an error if a run crashes. A run's own verdict (exit 1: a violated
invariant, a request never answered) is shown, not judged here: the tests do that.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Run:
    vmms: int
    wall: float  # seconds, the child process from start to exit
    cpu: float  # seconds, user + sys of the child
    summary: dict[str, str]  # the demo's summary table
    exit_code: int  # the demo's verdict: 0, or 1 (a violation or an unanswered request)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_demo(vmms: int, seed: int, tmp: Path, src: Path | None) -> Run:
    """One ``trioxide demo`` in a fresh interpreter; raises if it fails."""
    trace = tmp / f"demo-{vmms}.jsonl"
    cmd = [sys.executable, "-m", "trioxide", "demo", "--vmms", str(vmms), "--seed", str(seed)]
    env = dict(os.environ)
    if src is not None:  # measure another source tree (e.g. a checkout of the baseline)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    cpu0, t0 = _children_cpu(), time.perf_counter()
    done = subprocess.run(
        [*cmd, "--trace", str(trace)], capture_output=True, text=True, cwd=ROOT, env=env
    )
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    trace.unlink(missing_ok=True)
    summary = summary_of(done.stdout)
    # Exit 1 with a summary: the run completed and reported a violated invariant or an
    # unanswered request (its own verdict, shown); anything else is a crash.
    if done.returncode not in (0, 1) or "invariants checked / violated" not in summary:
        raise SystemExit(
            f"demo --vmms {vmms} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return Run(vmms, wall, cpu, summary, done.returncode)


def summary_of(output: str) -> dict[str, str]:
    """The demo's summary table (after the blank line), as row -> value."""
    rows: dict[str, str] = {}
    for line in output.split("\n\n", 1)[-1].splitlines():
        key, sep, value = line.partition("  ")
        if sep and key:
            rows[key.strip()] = value.strip()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--small", type=int, default=200, help="VMMs of the small run")
    parser.add_argument("--large", type=int, default=2000, help="VMMs of the large run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-ratio", type=float, default=10.0)
    parser.add_argument("--strict", action="store_true", help="exit 1 on a MISS")
    parser.add_argument("--src", type=Path, help="import trioxide from this folder instead")
    args = parser.parse_args(argv)
    scale = args.large / args.small
    print(
        f"sled demo at scale: --vmms {args.large} vs --vmms {args.small} ({scale:g}x the "
        f"VMMs), {args.rounds} interleaved rounds, seed {args.seed}"
        + (f", trioxide from {args.src}" if args.src else ""),
        flush=True,
    )
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    walls: dict[int, list[float]] = {args.small: [], args.large: []}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for i in range(args.rounds):
            # Alternate which size goes first, so neither always runs after the other.
            sizes = (args.small, args.large) if i % 2 == 0 else (args.large, args.small)
            runs = {n: run_demo(n, args.seed, Path(tmp), args.src) for n in sizes}
            small, large = runs[args.small], runs[args.large]
            for r in (small, large):
                walls[r.vmms].append(r.wall)
            ratios.append(large.wall / small.wall)
            cpu_ratios.append(large.cpu / small.cpu)
            print(
                f"  round {i + 1}: {args.small} VMMs {small.wall:6.2f} s (cpu {small.cpu:6.2f} s)"
                f"   {args.large} VMMs {large.wall:7.2f} s (cpu {large.cpu:7.2f} s)"
                f"   ratio {ratios[-1]:5.2f} (cpu {cpu_ratios[-1]:5.2f})",
                flush=True,
            )
            if i == 0:
                for r in (small, large):
                    checks = r.summary["invariants checked / violated"]
                    sent = r.summary.get("requests sent / answered", "?")
                    print(
                        f"    {r.vmms} VMMs: exit {r.exit_code}; invariants checked / violated "
                        f"{checks}; requests sent / answered {sent}"
                    )
    ratio = statistics.median(ratios)
    ok = ratio <= args.max_ratio
    events = {r.vmms: _events(r) for r in (small, large)}
    if all(events.values()):
        print(
            f"trace events: {args.small} VMMs {events[args.small]:,}, {args.large} VMMs "
            f"{events[args.large]:,} (ratio {events[args.large] / events[args.small]:.2f}: "
            "the work itself)"
        )
    print(
        f"median wall time: {args.small} VMMs {statistics.median(walls[args.small]):.2f} s, "
        f"{args.large} VMMs {statistics.median(walls[args.large]):.2f} s"
    )
    print(
        f"ratio (median of rounds): {ratio:.2f} (cpu {statistics.median(cpu_ratios):.2f})  "
        f"target <= {args.max_ratio:g}: {'PASS' if ok else 'MISS'}"
    )
    return 0 if ok or not args.strict else 1


def _events(run: Run) -> int:
    """The number of trace events a run wrote (from its summary's trace row), or 0."""
    m = re.search(r"\(([\d,]+) events", run.summary.get("trace", ""))
    return int(m.group(1).replace(",", "")) if m else 0


if __name__ == "__main__":
    sys.exit(main())
