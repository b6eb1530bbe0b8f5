"""``trioxide agent``: a sled agent as a process, serving its HTTP API (``agent_api``).

The process runs in ``process.run_process`` (real time, a trace file, a flight recorder,
optionally the live viewer). It spawns the same ``SledAgent`` the deterministic suite
runs, in a world whose simulated durations are scaled by ``--time-scale``
(``world.ScaledWorld``), and reaches Propolis and Nexus through the transport seam
(``ports.py``):

* ``--hypervisor URL``: the Propolis processes of a ``trioxide hypervisor`` over HTTP
  (``propolis_api.HttpLauncher``); without it, an in-process ``PropolisHost``;
* ``--nexus URL``: a ``trioxide nexus`` over HTTP (``nexus_api.HttpNexus``); without it, an
  in-process ``SimNexus``.

Once it listens it prints its ready line (``{"role": "agent", "addr": "127.0.0.1:port",
"sled_id": ..., ...}``). SIGTERM/SIGINT stop it cleanly (``run_process``).

What a restart loses: everything the agent knows lives in its actors' memory, so after
the process dies (``kill -9``) and starts again, no VMM it had is registered (each is 404
``NO_SUCH_INSTANCE``: to Nexus, gone), their zones and in-process Propolis instances are
gone with it, and the reservoir is back to its configured size. Upstream's sled agent
likewise keeps no VMM table across restarts (Nexus learns of the loss through the 404s).

A user's mistake - a bad ``--sled-id`` or URL (argparse: one line, status 2), a port in
use (``CommandError``: one line, status 2) - never shows a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import math
import urllib.parse
from contextlib import AsyncExitStack
from typing import Any, cast

import trio

from trioxide.runtime import Runtime
from trioxide.traces.cli import CommandError, sole_exception

from ..errors import InvalidRequest
from ..ports import NexusPort, PropolisLauncher
from ..sim.propolis_host import LocalLauncher, PropolisHost
from ..sled_agent import SledAgent, SledAgentClient, SledConfig, SledWorld, check_id
from .agent_api import agent_app
from .process import Ready, add_process_args, run_process
from .server import serve_app
from .world import DEFAULT_TIME_SCALE, ScaledWorld

__all__ = ["DEFAULT_ASK_TIMEOUT", "WireSledAgent", "add_arguments", "loopback_url", "run"]

ROLE = "agent"
DEFAULT_ASK_TIMEOUT = 5.0
"""Seconds (real time) an API request waits for an actor's answer before it is 503: well
under the rack's HTTP clients' timeout (10 s), so a slow sled is an answer, not a timeout."""
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def loopback_url(text: str) -> str:
    """An argparse ``type``: ``http://<loopback>:<port>`` (the rack runs on loopback only)."""
    try:
        url = urllib.parse.urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL: {exc}") from None
    if url.scheme != "http":
        raise argparse.ArgumentTypeError(f"{text!r}: give an http:// URL")
    if url.hostname not in _LOOPBACK:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the rack runs on loopback only (127.0.0.1, localhost or [::1])"
        )
    if port is None or port == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give the port (http://127.0.0.1:PORT)")
    if url.path not in ("", "/") or url.query or url.fragment or url.username or url.password:
        raise argparse.ArgumentTypeError(f"{text!r}: give only http://host:port")
    return f"http://{url.netloc}"


def _sled_id(text: str) -> str:
    try:
        return check_id("--sled-id", text)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(f"--sled-id {text!r}: {exc.why}") from None


def _positive(what: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{what} {text!r}: give a number > 0")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sled-id", type=_sled_id, default="sled-0", help="this sled's id")
    parser.add_argument(
        "--hypervisor",
        type=loopback_url,
        default=None,
        help="URL of a 'trioxide hypervisor' (default: Propolis runs in this process)",
    )
    parser.add_argument(
        "--nexus",
        type=loopback_url,
        default=None,
        help="URL of a 'trioxide nexus' (default: a simulated Nexus in this process)",
    )
    parser.add_argument(
        "--time-scale",
        type=_positive("--time-scale"),
        default=DEFAULT_TIME_SCALE,
        help="multiply every simulated duration (zone install/boot, ...) by this "
        f"(default {DEFAULT_TIME_SCALE}: a VMM starts in a few tens of ms)",
    )
    parser.add_argument(
        "--ask-timeout",
        type=_positive("--ask-timeout"),
        default=DEFAULT_ASK_TIMEOUT,
        help=f"seconds a request waits for the sled's actors before it is answered 503 "
        f"(default {DEFAULT_ASK_TIMEOUT})",
    )
    add_process_args(parser, ROLE)


class WireSledAgent(SledAgent):
    """``SledAgent`` with its transports (``ports.py``) as positional arguments, as
    ``Runtime.spawn`` passes them; the actor is the same."""

    def __init__(
        self,
        world: SledWorld,
        config: SledConfig,
        propolis: PropolisLauncher | None,
        nexus: NexusPort | None,
    ) -> None:
        super().__init__(world, config, propolis=propolis, nexus=nexus)


def _client(module: str, name: str, url: str) -> Any:
    """``trioxide.actors.wire.<module>.<name>(url)``, imported only when asked for."""
    cls = getattr(importlib.import_module(f".{module}", __package__), name)
    return cls(url)


async def _close(obj: object) -> None:
    aclose = getattr(obj, "aclose", None)
    if aclose is not None:
        await aclose()


async def _serve(app: Any, host: str, port: int, nursery: trio.Nursery) -> str:
    """Start serving *app*; a port in use (or a host we cannot bind) is a ``CommandError``."""
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
    scaled = ScaledWorld(args.time_scale)

    async def body(rt: Runtime, ready: Ready) -> None:
        async with AsyncExitStack() as stack:
            nexus: NexusPort | None = None
            launcher: PropolisLauncher | None = None
            world = scaled.world()
            if args.nexus is not None:
                nexus = cast(NexusPort, _client("nexus_api", "HttpNexus", args.nexus))
                stack.push_async_callback(_close, nexus)
            if args.hypervisor is not None:
                launcher = cast(
                    PropolisLauncher, _client("propolis_api", "HttpLauncher", args.hypervisor)
                )
                stack.push_async_callback(_close, launcher)
            else:
                host = await rt.spawn(
                    PropolisHost, world.network, world.vm_template, scaled.propolis_kill,
                    name="propolis-host", mailbox_size=4096,
                )  # fmt: skip
                launcher = LocalLauncher(host)
            config = SledConfig(
                sled_id=args.sled_id,
                runner=scaled.runner(),
                notifier_tick=scaled.durations["notifier_tick"],
            )
            sled = await rt.spawn(WireSledAgent, world, config, launcher, nexus, name="sled")
            client = SledAgentClient(sled, ask_timeout=args.ask_timeout)
            bound: list[str] = []
            app = agent_app(client, address=lambda: bound[0] if bound else "")
            async with trio.open_nursery() as nursery:
                addr = await _serve(app, args.host, args.port, nursery)
                bound.append(addr)
                ready(
                    addr=addr,
                    sled_id=args.sled_id,
                    hypervisor=args.hypervisor,
                    nexus=args.nexus,
                    time_scale=args.time_scale,
                )

    return run_process(ROLE, args, body, name=args.sled_id)
