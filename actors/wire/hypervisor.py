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
import errno
import math

import trio

from trioxide.runtime import Runtime
from trioxide.traces.cli import CommandError, sole_exception

from .process import Ready, add_process_args, run_process
from .propolis_api import hypervisor_app, open_hypervisor
from .server import serve_app

__all__ = ["add_arguments", "run"]


def _time_scale(value: str) -> float:
    try:
        scale = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--time-scale {value!r} is not a number") from None
    if not math.isfinite(scale) or scale <= 0:
        raise argparse.ArgumentTypeError(f"--time-scale {value!r} must be a number > 0")
    return scale


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_process_args(parser, "hypervisor")
    parser.add_argument(
        "--time-scale",
        type=_time_scale,
        default=1.0,
        metavar="X",
        help="multiply the simulated VM, Propolis and Crucible durations by X (default 1)",
    )


def run(args: argparse.Namespace) -> int:
    async def body(rt: Runtime, ready: Ready) -> None:
        hv = await open_hypervisor(rt, time_scale=args.time_scale)
        async with trio.open_nursery() as nursery:
            try:
                addr: str = await nursery.start(serve_app, hypervisor_app(hv), args.host, args.port)
            except BaseException as exc:
                error = sole_exception(exc)
                if isinstance(error, OSError):
                    why = (
                        "the port is in use" if error.errno == errno.EADDRINUSE else error.strerror
                    )
                    raise CommandError(
                        f"cannot listen on {args.host}:{args.port}: {why}; choose --port"
                    ) from None
                raise
            ready(addr=addr, openapi=f"http://{addr}/openapi.json", time_scale=args.time_scale)

    return run_process("hypervisor", args, body)
