"""Instructions per tell and per ask, counted by valgrind's callgrind: repeatable to ~0.1%
whatever else the machine does (wall-clock rates on this VM drift by ±20% within minutes).

Usage: ``python bench/instr.py [--old REV] [--kinds tell,tell-traced]`` (needs
``valgrind``; REV with ``src/trioxide``).
Each count is the difference between two runs of N and 2N operations, so interpreter
start-up and the runtime's set-up cancel out. With ``--old`` it prints new/old ratios.
"""

from __future__ import annotations

import argparse
import subprocess
import tarfile
import tempfile
from pathlib import Path

from _harness import callgrind_instructions

ROOT = Path(__file__).resolve().parents[1]

_PROGRAM = r"""
import sys
import trio
sys.path.insert(0, sys.argv[3])
from bench_runtime import INCR_ONE, Counter, Get
from trioxide import open_runtime, traces

N, KIND = int(sys.argv[1]), sys.argv[2]
TRACER = None
if KIND == "tell-traced":
    TRACER = traces.Tracer(traces.MemorySink())
elif KIND == "tell-jsonl":
    TRACER = traces.Tracer(traces.JsonlFileSink("/dev/null"), payloads=True)

async def main() -> None:
    async with open_runtime(tracer=TRACER) as rt:
        ref = await rt.spawn(Counter, 0, name="c", mailbox_size=1024)
        if KIND == "ask":
            for _ in range(N):
                await ref.ask(Get(), timeout=2.0)
        else:
            for _ in range(N):
                await ref.tell(INCR_ONE)
            await ref.ask(Get())

trio.run(main)
"""

#: Operations per run (and twice as many): enough for the per-op count to dominate.
SIZES = {"tell": 20_000, "ask": 2_000, "tell-traced": 10_000, "tell-jsonl": 10_000}


def _count(src: Path, kind: str, n: int) -> int:
    return callgrind_instructions(_PROGRAM, str(n), kind, str(ROOT / "bench"), pythonpath=str(src))


def per_op(src: Path, kinds: list[str] | None = None) -> dict[str, float]:
    """Instructions per operation (differences of N and 2N operations): an untraced tell,
    an ask, a tell traced into a MemorySink (no payloads) and into a JSONL file (payloads)
    (or only *kinds* of them)."""
    return {
        kind: (_count(src, kind, 2 * n) - _count(src, kind, n)) / n
        for kind, n in SIZES.items()
        if kinds is None or kind in kinds
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="also count this revision and print new/old")
    parser.add_argument("--kinds", help=f"comma-separated, of: {', '.join(SIZES)}")
    args = parser.parse_args()
    kinds = args.kinds.split(",") if args.kinds else None
    if kinds is not None and (unknown := set(kinds) - set(SIZES)):
        parser.error(f"unknown kinds {sorted(unknown)}; choose from {', '.join(SIZES)}")
    new = per_op(ROOT / "src", kinds)
    if args.old is None:
        for kind, value in new.items():
            print(f"{kind}: {value:,.0f} instructions")
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "rev.tar"
        with open(archive, "wb") as f:
            subprocess.run(["git", "-C", str(ROOT), "archive", args.old], stdout=f, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="tar")
        old = per_op(Path(tmp) / "src", kinds)
    for kind in new:
        print(
            f"{kind}: {new[kind]:,.0f} instructions (old {old[kind]:,.0f}), "
            f"new/old {new[kind] / old[kind]:.3f}"
        )


if __name__ == "__main__":
    main()
