"""Side-by-side A/B of the hot paths: this working tree against an earlier revision.

Usage: ``python bench/ab.py --old REV [--rounds 5]`` (REV: any commit with ``src/trioxide``,
i.e. from issue 9 on). The two versions run alternately in fresh processes, each round
measuring its own baselines (raw Trio tell, lowlevel ask ceiling) with the same benchmark
code (this tree's ``bench/``); it prints, per measurement, the per-round ratios new/old and
their median, then each version's median target ratios. Medians of paired rounds, not
best-of: this VM's absolute rates drift by ±10% within minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_MEASURE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import baselines, bench_runtime
from _harness import Sizes
s = Sizes.full()
base, mine = baselines.rate_measurements(s), bench_runtime.rate_measurements(s)
order = [("raw", base["raw_trio_tell"]), ("tell", mine["tell_off"]),
         ("ceil", base["lowlevel_ask"]), ("ask", mine["ask_timeout"]), ("on", mine["tell_on"])]
print(json.dumps({k: f() for k, f in order}))
"""


def _export(rev: str, into: Path) -> Path:
    """The package directory (``src``) of *rev*, extracted with ``git archive``."""
    archive = into / "rev.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="tar")
    src = into / "src"
    if not (src / "trioxide" / "__init__.py").exists():
        raise SystemExit(f"ab.py: {rev} has no src/trioxide (it predates issue 9)")
    return src


def _run(src: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(ROOT / "bench")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the revision to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"old": _export(args.old, Path(tmp)), "new": ROOT / "src"}
        runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for i in range(args.rounds):
            for name, src in versions.items():
                runs[name].append(_run(src))
            print(f"round {i + 1}/{args.rounds} done", flush=True)
    med = statistics.median
    for key in ("tell", "ask", "on", "raw", "ceil"):
        pairs = [n[key] / o[key] for n, o in zip(runs["new"], runs["old"], strict=True)]
        shown = " ".join(f"{p:.2f}" for p in pairs)
        print(f"new/old {key:5s} per round {shown}  median {med(pairs):.3f}")
    for name, rs in runs.items():
        print(
            f"{name}: tell/raw {med(r['tell'] / r['raw'] for r in rs):.2f}x  "
            f"ask/ceiling {med(r['ask'] / r['ceil'] for r in rs):.3f}x  "
            f"tracing on/off {med(r['on'] / r['tell'] for r in rs):.3f}x"
        )


if __name__ == "__main__":
    main()
