"""``trioxide nexus``: the simulated Nexus as a rack process.

Serves Nexus's internal API and the simulation's admin endpoints (``nexus_api``) over a
``SimNexus`` on loopback, inside ``process.run_process`` (trace file, flight recorder,
optional live viewer, one JSON ready line on stdout, graceful SIGTERM). Options:

* ``--hypervisor URL``: the ``trioxide hypervisor`` whose Propolis servers Nexus calls for
  a VCR replacement (``POST /sim/vmms/{id}/disks/{disk}/vcr``); without it that endpoint
  answers 503.
* ``--latency SECONDS``: every internal call takes this long (real time) before Nexus
  decides it (``SimNexus(latency=)``; default 0).

Guarantees: the process binds the loopback host it is given and nothing else; a port in
use is one line on stderr and exit status 2; its ready line is
``{"role": "nexus", "addr": "127.0.0.1:PORT", "hypervisor": URL|null, ...}``.
"""

from __future__ import annotations

import argparse
import math
from contextlib import AsyncExitStack

import trio

from trioxide.runtime import Runtime

from ..sim.nexus import SimNexus
from .nexus_api import NexusServer
from .process import Ready, add_process_args, loopback_url, run_process, start_serving
from .propolis_client import HttpPropolisDirectory

__all__ = ["add_arguments", "run"]

LATENCY_MAX = 60.0


def _latency(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= LATENCY_MAX):
        raise argparse.ArgumentTypeError(
            f"--latency {text!r}: give seconds between 0 and {LATENCY_MAX:g}"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_process_args(parser, "nexus")
    parser.add_argument(
        "--hypervisor",
        type=loopback_url,
        default=None,
        metavar="URL",
        help="URL of the 'trioxide hypervisor' Nexus calls for VCR replacements",
    )
    parser.add_argument(
        "--latency",
        type=_latency,
        default=0.0,
        metavar="SECONDS",
        help="how long each internal API call takes (default 0)",
    )


def run(args: argparse.Namespace) -> int:
    async def body(rt: Runtime, ready: Ready) -> None:
        async with AsyncExitStack() as stack:
            vcr: HttpPropolisDirectory | None = None
            if args.hypervisor is not None:
                vcr = HttpPropolisDirectory(args.hypervisor)
                stack.push_async_callback(vcr.aclose)
            server = await NexusServer.start(rt, SimNexus(latency=args.latency), vcr=vcr)
            async with trio.open_nursery() as nursery:
                addr = await start_serving(server.app, args.host, args.port, nursery)
                ready(addr=addr, hypervisor=args.hypervisor)

    return run_process("nexus", args, body)
