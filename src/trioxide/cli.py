"""The ``trioxide`` command: the composition root of the three packages' subcommands.

Each package offers its own (``register(subparsers)``): ``demo`` and ``runtime-demo`` from
``trioxide.actors``, ``view``, ``export`` and ``trace diff`` from ``trioxide.traces``,
``explore`` from the testing toolkit. This module only gathers them; it holds no
subcommand of its own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from .actors import cli as actors_cli
from .runtime.testing import _cli as testing_cli
from .traces import cli as traces_cli
from .traces import diff as traces_diff

__all__ = ["main"]

_REGISTRARS: tuple[Callable[[Any], None], ...] = (
    actors_cli.register,
    traces_cli.register,
    traces_diff.register,
    testing_cli.register,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``trioxide`` argument parser with every package's subcommands."""
    parser = argparse.ArgumentParser(
        prog="trioxide",
        description="trioxide: an actor runtime on Trio and a simulated sled agent.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for register in _REGISTRARS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
