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
import errno
import math
import urllib.parse
from contextlib import AsyncExitStack
from typing import Any

import trio

from trioxide.runtime import Runtime
from trioxide.traces.cli import CommandError, sole_exception

from ..sim.nexus import SimNexus
from .nexus_api import NexusServer
from .process import Ready, add_process_args, run_process
from .propolis_api import HttpPropolisDirectory
from .server import serve_app

__all__ = ["add_arguments", "run"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
LATENCY_MAX = 60.0


def _loopback_url(text: str) -> str:
    """An argparse ``type``: ``http://<loopback>:<port>`` and nothing more."""
    try:
        url = urllib.parse.urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL: {exc}") from None
    if url.scheme != "http" or url.hostname not in _LOOPBACK or not port:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give http://127.0.0.1:PORT (the rack runs on loopback only)"
        )
    if url.path not in ("", "/") or url.query or url.fragment or url.username or url.password:
        raise argparse.ArgumentTypeError(f"{text!r}: give only http://host:port")
    return f"http://{url.netloc}"


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
        type=_loopback_url,
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


async def _serve(app: Any, host: str, port: int, nursery: trio.Nursery) -> str:
    """Start serving *app*; failing to listen is a ``CommandError`` (one line, status 2)."""
    try:
        addr: str = await nursery.start(serve_app, app, host, port)
    except BaseException as exc:
        error = sole_exception(exc)
        if isinstance(error, OSError):
            why = "the port is in use" if error.errno == errno.EADDRINUSE else error.strerror
            raise CommandError(f"cannot listen on {host}:{port}: {why}; choose --port") from None
        raise
    return addr


def run(args: argparse.Namespace) -> int:
    async def body(rt: Runtime, ready: Ready) -> None:
        async with AsyncExitStack() as stack:
            vcr: HttpPropolisDirectory | None = None
            if args.hypervisor is not None:
                vcr = HttpPropolisDirectory(args.hypervisor)
                stack.push_async_callback(vcr.aclose)
            server = await NexusServer.start(rt, SimNexus(latency=args.latency), vcr=vcr)
            async with trio.open_nursery() as nursery:
                addr = await _serve(server.app, args.host, args.port, nursery)
                ready(addr=addr, hypervisor=args.hypervisor)

    return run_process("nexus", args, body)
