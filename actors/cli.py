"""The ``trioxide`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trioxide", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo scenario in virtual time and write a trace")
    demo.add_argument(
        "--trace", type=Path, default=Path("traces-out/demo.jsonl"), help="trace file to write"
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._runtime_demo import run

        return run(args.trace)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
