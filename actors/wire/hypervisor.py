"""``trioxide hypervisor``: the simulated hypervisor as a rack process.

It hosts the Propolis actors (``PropolisHost``: one ``StateDriver`` per VMM, its Crucible
backends on a simulated downstairs network) in real time and serves them over loopback
HTTP (``propolis_api``: each VMM's Propolis API under ``/propolis/{id}``, the admin routes
under ``/admin``). ``--time-scale`` multiplies every simulated duration (VM halt, reset
and migration, a Propolis's death, a downstairs connection, a launch), so a test can run
the same lifecycle in a fraction of the time.

The ready line adds ``openapi`` (the document's URL) and ``time_scale`` to the shell's
fields. SIGTERM stops it cleanly (``process.run_process``); a ``kill -9`` is the fault
the sled agent's monitors must survive.
"""

from __future__ import annotations

import argparse

import trio

from trioxide.runtime import Runtime

from .process import Ready, add_process_args, positive_number, run_process, start_serving
from .propolis_api import hypervisor_app, open_hypervisor

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_process_args(parser, "hypervisor")
    parser.add_argument(
        "--time-scale",
        type=positive_number("--time-scale"),
        default=1.0,
        metavar="X",
        help="multiply the simulated VM, Propolis and Crucible durations by X (default 1)",
    )


def run(args: argparse.Namespace) -> int:
    async def body(rt: Runtime, ready: Ready) -> None:
        hv = await open_hypervisor(rt, time_scale=args.time_scale)
        async with trio.open_nursery() as nursery:
            addr = await start_serving(hypervisor_app(hv), args.host, args.port, nursery)
            ready(addr=addr, openapi=f"http://{addr}/openapi.json", time_scale=args.time_scale)

    return run_process("hypervisor", args, body)
