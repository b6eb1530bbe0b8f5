"""The rack's subcommands: each process module offers ``add_arguments(parser)`` and
``run(args) -> int``; this module adds them to the ``trioxide`` command."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

__all__ = ["register"]

#: (subcommand, module in this package, help)
PROCESSES: tuple[tuple[str, str, str], ...] = (
    ("agent", "agent", "a sled agent process serving its HTTP API"),
    ("nexus", "nexus", "the simulated Nexus process (its internal API over HTTP)"),
    ("hypervisor", "hypervisor", "the simulated hypervisor process (Propolis over HTTP)"),
    ("rack", "rack", "a rack on loopback: Nexus, a hypervisor and N sled agents, with faults"),
)


def _runner(module: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        status: int = importlib.import_module(f".{module}", __package__).run(args)
        return status

    return run


def register(sub: Any) -> None:
    for command, module, text in PROCESSES:
        parser = sub.add_parser(command, help=text)
        importlib.import_module(f".{module}", __package__).add_arguments(parser)
        parser.set_defaults(run=_runner(module))
