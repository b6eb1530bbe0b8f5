"""``trioxide agent``: a sled agent as a process, serving its HTTP API (``agent_api``).

The process runs in ``process.run_process`` (real time, a trace file, a flight recorder,
optionally the live viewer). It spawns the same ``SledAgent`` the deterministic suite
runs, in a world whose simulated durations are scaled by ``--time-scale``
(``world.ScaledWorld``), and reaches Propolis and Nexus through the transport seam
(``ports.py``):

* ``--hypervisor URL``: the Propolis processes of a ``trioxide hypervisor`` over HTTP
  (``propolis_client.HttpLauncher``); without it, an in-process ``PropolisHost``;
* ``--nexus URL``: a ``trioxide nexus`` over HTTP (``nexus_client.HttpNexus``); without it, an
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
import importlib
from contextlib import AsyncExitStack
from typing import Any, cast

import trio

from trioxide.runtime import Runtime
from trioxide.traces.server import url_host

from ..errors import InvalidRequest
from ..ports import NexusPort, PropolisLauncher
from ..sim.propolis_host import LocalLauncher, PropolisHost
from ..sled_agent import SledAgent, SledAgentClient, SledConfig, SledWorld, check_id
from .agent_api import agent_app
from .process import (
    STOP_GRACE,
    Ready,
    add_process_args,
    listen_on,
    loopback_url,
    positive_number,
    run_process,
    start_serving,
)
from .world import DEFAULT_TIME_SCALE, ScaledWorld

__all__ = ["DEFAULT_ASK_TIMEOUT", "WireSledAgent", "add_arguments", "run"]

ROLE = "agent"
DEFAULT_ASK_TIMEOUT = 5.0
"""Seconds (real time) an API request waits for an actor's answer before it is 503: well
under the rack's HTTP clients' timeout (10 s), so a slow sled is an answer, not a timeout."""


def _sled_id(text: str) -> str:
    try:
        return check_id("--sled-id", text)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(f"--sled-id {text!r}: {exc.why}") from None


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
        type=positive_number("--time-scale"),
        default=DEFAULT_TIME_SCALE,
        help="multiply every simulated duration (zone install/boot, ...) by this "
        f"(default {DEFAULT_TIME_SCALE}: a VMM starts in a few tens of ms)",
    )
    parser.add_argument(
        "--ask-timeout",
        type=positive_number("--ask-timeout"),
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


def run(args: argparse.Namespace) -> int:
    scaled = ScaledWorld(args.time_scale)

    async def body(rt: Runtime, ready: Ready) -> None:
        async with AsyncExitStack() as stack:
            nexus: NexusPort | None = None
            launcher: PropolisLauncher | None = None
            world = scaled.world()
            if args.nexus is not None:
                nexus = cast(NexusPort, _client("nexus_client", "HttpNexus", args.nexus))
                stack.push_async_callback(_close, nexus)
            if args.hypervisor is not None:
                launcher = cast(
                    PropolisLauncher, _client("propolis_client", "HttpLauncher", args.hypervisor)
                )
                stack.push_async_callback(_close, launcher)
            else:
                host = await rt.spawn(
                    PropolisHost, world.network, world.vm_template, scaled.propolis_kill,
                    name="propolis-host", mailbox_size=4096,
                )  # fmt: skip
                launcher = LocalLauncher(host)
            # Bound before the sled starts: its notifier tells Nexus where it serves.
            listener = listen_on(args.host, args.port)
            stack.callback(listener.close)  # (a no-op once the server owns it)
            bound_port = listener.getsockname()[1]
            config = SledConfig(
                sled_id=args.sled_id,
                runner=scaled.runner(),
                notifier_tick=scaled.durations["notifier_tick"],
                address=f"{url_host(args.host)}:{bound_port}",
            )
            sled = await rt.spawn(WireSledAgent, world, config, launcher, nexus, name="sled")

            async def stop_sled() -> None:
                # Before the HTTP clients close (the exit stack runs this first): the
                # sled's actors stop while their in-flight calls can still end as
                # cancelled, not as a connection closed under them.
                with trio.CancelScope(shield=True):
                    await sled.stop("agent stopping", grace=STOP_GRACE / 2)

            stack.push_async_callback(stop_sled)
            client = SledAgentClient(sled, ask_timeout=args.ask_timeout)
            bound: list[str] = []
            app = agent_app(client, address=lambda: bound[0] if bound else "")
            async with trio.open_nursery() as nursery:
                addr = await start_serving(app, args.host, args.port, nursery, listener=listener)
                bound.append(addr)
                ready(
                    addr=addr,
                    sled_id=args.sled_id,
                    hypervisor=args.hypervisor,
                    nexus=args.nexus,
                    time_scale=args.time_scale,
                )

    return run_process(ROLE, args, body, name=args.sled_id)
