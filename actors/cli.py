"""The ``trioxide`` subcommands this package offers: ``demo`` and ``runtime-demo``, and the
rack's processes (``wire/cli.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trioxide.traces.cli import add_server_args, at_least, server_errors, server_options

__all__ = ["register"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo

    opts = DemoOptions(vmms=args.vmms, seed=args.seed, trace=args.trace)
    if args.view:
        view = server_options(args)
        with server_errors(args.host, args.port):
            return run_demo(opts, view=view)
    return run_demo(opts)


def _runtime_demo(args: argparse.Namespace) -> int:
    from ._runtime_demo import run

    return run(args.trace)


def register(sub: Any) -> None:
    """Add ``demo``, ``runtime-demo`` and the rack's processes to the ``trioxide``
    command's subparsers *sub*."""
    demo = sub.add_parser("demo", help="a whole simulated sled under load, in virtual time")
    demo.add_argument(
        "--trace", type=Path, default=Path("traces-out/demo.jsonl"), help="trace file to write"
    )
    demo.add_argument("--vmms", type=at_least(1), default=200, help="number of VMMs (default 200)")
    demo.add_argument("--seed", type=int, default=1, help="scheduler and scenario seed")
    demo.add_argument("--view", action="store_true", help="serve the live viewer while it runs")
    add_server_args(demo)
    demo.set_defaults(run=_demo)
    small = sub.add_parser("runtime-demo", help="a small example of the runtime alone")
    small.add_argument(
        "--trace", type=Path, default=Path("traces-out/runtime-demo.jsonl"), help="trace file"
    )
    small.set_defaults(run=_runtime_demo)
    from .wire import cli as wire_cli

    wire_cli.register(sub)
