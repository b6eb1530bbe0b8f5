"""The ``trioxide`` command: the composition root of the three packages' subcommands.

Each package offers its own (``register(subparsers)``): ``demo`` and ``runtime-demo`` from
``trioxide.actors``, ``view``, ``export`` and ``trace diff`` from ``trioxide.traces``,
``explore`` from the testing toolkit. This module gathers them and reports a user's
mistakes in one place:

* a :class:`CommandError` raised by a subcommand, and an ``OSError`` about a path the user
  gave (missing, a folder, unreadable), print one line, ``trioxide: <message>``, on stderr
  and exit with status 2;
* a bad argument (``--port 99999``, ``--vmms 0``) is refused while parsing: one line, status 2;
* Ctrl-C exits quietly with status 130;
* ``trioxide --debug ...`` shows the Python traceback of any of these instead.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

from .actors import cli as actors_cli
from .runtime.testing import _cli as testing_cli
from .traces import cli as traces_cli
from .traces import diff as traces_diff
from .traces.cli import CommandError, sole_exception

__all__ = ["CommandError", "build_parser", "main"]

_REGISTRARS: tuple[Callable[[Any], None], ...] = (
    actors_cli.register,
    traces_cli.register,
    traces_diff.register,
    testing_cli.register,
)

#: The exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block); its subparsers too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``trioxide`` argument parser with every package's subcommands."""
    parser = _Parser(
        prog="trioxide",
        description="trioxide: an actor runtime on Trio and a simulated sled agent.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for register in _REGISTRARS:
        register(sub)
    return parser


def _one_line(exc: BaseException) -> str | None:
    """The line that reports *exc* as a user's mistake, or ``None`` if it is not one."""
    if isinstance(exc, CommandError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or type(exc).__name__}; check the path"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the ``trioxide`` command with *argv* (default: ``sys.argv[1:]``); return its
    exit status. Never raises for a user's mistake or Ctrl-C (unless ``--debug``)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or an argument refused (and reported) by argparse
        return exc.code if isinstance(exc.code, int) else 0
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except BaseException as exc:
        error = sole_exception(exc)
        if args.debug:
            raise
        if isinstance(error, KeyboardInterrupt):
            # Ctrl-C lands wherever the program was (Trio raises it at once in code that
            # is not KI-protected), e.g. between a task's coroutine being created and
            # being scheduled: that coroutine is then collected unstarted, and Python's
            # "coroutine ... was never awaited" warning would follow the quiet exit.
            # An artefact of the interrupt, not something the user can act on.
            warnings.filterwarnings(
                "ignore", message="coroutine .* was never awaited", category=RuntimeWarning
            )
            return _INTERRUPTED
        line = _one_line(error)
        if line is None:
            raise
        print(f"trioxide: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
