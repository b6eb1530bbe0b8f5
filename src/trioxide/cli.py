"""The ``trioxide`` command: the composition root of the three packages' subcommands.

Each package offers its own (``register(subparsers)``): ``demo`` and ``runtime-demo`` from
``trioxide.actors``, ``view``, ``export`` and ``trace diff`` from ``trioxide.traces``,
``explore`` from the testing toolkit. This module gathers them and reports a user's
mistakes in one place:

* a :class:`CommandError` raised by a subcommand, and an ``OSError`` about a path the user
  gave (missing, a folder, unreadable), print one line, ``trioxide: <message>``, on stderr
  and exit with status 2;
* a bad argument (``--port 99999``, ``--vmms 0``) is refused while parsing: one line, status 2;
* Ctrl-C exits quietly with status 130 - also while the command is still starting: this
  module imports only the standard library at first and loads the packages (about half a
  second) inside ``main``, where the interrupt is caught;
* ``trioxide --debug ...`` shows the Python traceback of any of these instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from .traces.cli import CommandError

__all__ = ["CommandError", "build_parser", "main"]

#: The modules whose ``register(subparsers)`` add the subcommands, in ``--help`` order.
_REGISTRARS = (
    "trioxide.actors.cli",
    "trioxide.traces.cli",
    "trioxide.traces.diff",
    "trioxide.runtime.testing._cli",
)


def __getattr__(name: str) -> Any:
    if name == "CommandError":  # re-exported, loaded with the packages
        return importlib.import_module("trioxide.traces.cli").CommandError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    for module in _REGISTRARS:
        register: Callable[[Any], None] = importlib.import_module(module).register
        register(sub)
    return parser


def _one_line(exc: BaseException) -> str | None:
    """The line that reports *exc* as a user's mistake, or ``None`` if it is not one."""
    from .traces.cli import CommandError

    if isinstance(exc, CommandError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or type(exc).__name__}; check the path"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the ``trioxide`` command with *argv* (default: ``sys.argv[1:]``); return its
    exit status. Never raises for a user's mistake or Ctrl-C (unless ``--debug``)."""
    try:
        args = build_parser().parse_args(argv)  # (imports the packages)
        from .traces.cli import sole_exception
    except SystemExit as exc:  # --help, or an argument refused (and reported) by argparse
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:  # Ctrl-C while starting
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            raise
        return _INTERRUPTED
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
