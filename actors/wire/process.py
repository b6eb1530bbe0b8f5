"""The shell every rack process runs in: ``trioxide agent``, ``hypervisor`` and ``nexus``.

``run_process(role, args, body)`` runs ``body(rt, ready)`` in ``trio.run`` in real time,
inside an actor runtime that traces every step to ``--trace`` (a JSON Lines file whose
header names the process: ``command`` is ``["trioxide", role, ...]``) and to an always-on
flight recorder beside it; with ``--view-port`` the process also serves its live trace
viewer (the trace server, same token rules as ``trioxide view``).

*body* calls ``ready(addr=..., **more)`` once it listens: the process then prints one
JSON line on stdout, ``{"role": ..., "addr": "127.0.0.1:port", "viewer": url|null, ...}``,
which is how ``trioxide rack`` (and the tests) learn where it is. SIGTERM and SIGINT stop
the process cleanly: the body is cancelled, the runtime stops its actors, the trace file
is flushed and closed; the exit status is 0 (130 after SIGINT, as shells report it).
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import math
import signal
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import trio

from trioxide import traces
from trioxide.runtime import Runtime, open_runtime
from trioxide.traces.cli import CommandError, port_number, run_command, sole_exception
from trioxide.traces.server import is_loopback

from .server import bind_listener, serve_app

__all__ = [
    "Ready",
    "add_process_args",
    "listen_on",
    "loopback_url",
    "positive_number",
    "run_process",
    "start_serving",
]

Ready = Callable[..., None]
#: Seconds a process's actors get to stop gracefully after SIGTERM/SIGINT.
STOP_GRACE = 10.0
Body = Callable[[Runtime, Ready], Awaitable[None]]


def _loopback(value: str) -> str:
    if not is_loopback(value):
        raise argparse.ArgumentTypeError(
            f"--host {value!r}: rack processes serve loopback only (127.0.0.1 or ::1)"
        )
    return value


def loopback_url(text: str) -> str:
    """An argparse ``type``: ``http://<loopback>:<port>`` and nothing more (the rack runs on
    loopback only); returns ``http://host:port``."""
    try:
        url = urllib.parse.urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL: {exc}") from None
    if url.scheme != "http":
        raise argparse.ArgumentTypeError(f"{text!r}: give an http:// URL")
    if url.hostname is None or not is_loopback(url.hostname):
        raise argparse.ArgumentTypeError(
            f"{text!r}: the rack runs on loopback only (127.0.0.1, localhost or [::1])"
        )
    if not port:
        raise argparse.ArgumentTypeError(f"{text!r}: give the port (http://127.0.0.1:PORT)")
    if url.path not in ("", "/") or url.query or url.fragment or url.username or url.password:
        raise argparse.ArgumentTypeError(f"{text!r}: give only http://host:port")
    return f"http://{url.netloc}"


def positive_number(option: str) -> Callable[[str], float]:
    """An argparse ``type`` for *option*: a finite number > 0."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{option} {text!r}: give a number > 0")
        return value

    return parse


async def start_serving(
    app: Any,
    host: str,
    port: int,
    nursery: trio.Nursery,
    *,
    listener: socket.socket | None = None,
) -> str:
    """Serve *app* in *nursery* (``serve_app``, on *listener* if given); returns the bound
    ``host:port``. Failing to listen (a port in use, an address we cannot bind) is a
    ``CommandError``: one line."""
    try:
        addr: str = await nursery.start(
            functools.partial(serve_app, app, host, port, listener=listener)
        )
    except BaseException as exc:
        raise _listen_error(exc, host, port) from None
    return addr


def listen_on(host: str, port: int) -> socket.socket:
    """``bind_listener`` for a rack process: failing to bind is a ``CommandError``."""
    try:
        return bind_listener(host, port)
    except OSError as exc:
        raise _listen_error(exc, host, port) from None


def _listen_error(exc: BaseException, host: str, port: int) -> BaseException:
    error = sole_exception(exc)
    if isinstance(error, OSError):
        why = "the port is in use" if error.errno == errno.EADDRINUSE else error.strerror
        return CommandError(f"cannot listen on {host}:{port}: {why}; choose --port")
    return exc


def add_process_args(parser: argparse.ArgumentParser, role: str) -> None:
    """``--host``, ``--port``, ``--trace``, ``--view-port`` for a rack process."""
    parser.add_argument("--host", type=_loopback, default="127.0.0.1", help="loopback address")
    parser.add_argument("--port", type=port_number, default=0, help="API port (0: a free one)")
    parser.add_argument(
        "--trace",
        type=Path,
        default=Path(f"traces-out/{role}.jsonl"),
        help=f"trace file to write (default traces-out/{role}.jsonl)",
    )
    parser.add_argument(
        "--view-port",
        type=port_number,
        default=None,
        help="also serve the live trace viewer on this port (0: a free one)",
    )


def run_process(role: str, args: argparse.Namespace, body: Body, *, name: str = "") -> int:
    """Run a rack process (see the module docstring); returns its exit status."""
    trace: Path = args.trace
    try:
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.touch()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise CommandError(f"cannot write the trace to {trace}: {why}; choose --trace") from None
    header = traces.TraceHeader(
        trio_version=trio.__version__,
        command=["trioxide", role, *([name] if name else [])],
        process=name or role,
    )
    file_sink = traces.JsonlFileSink(trace, header)
    recorder = traces.FlightRecorder(directory=trace.parent, header=header)
    sinks: list[traces.Sink] = [file_sink, recorder]
    server = None
    if args.view_port is not None:
        from trioxide.traces.server import TraceServer

        server = TraceServer(args.host, args.view_port, header=header)
        sinks.append(server.sink)
    tracer = traces.Tracer(*sinks, payloads=True)
    interrupted = False

    def anchor() -> None:
        # The wall clock and the trace clock (Trio's, which the runtime's tracer reads)
        # side by side: what lines this trace up with the other processes' (traces.merge).
        wall, clock = time.time(), trio.current_time()
        started = datetime.fromtimestamp(wall, UTC).isoformat(timespec="microseconds")
        anchored = msgspec.structs.replace(header, started_at=started, clock_at_start=clock)
        file_sink.use_header(anchored)
        recorder.header = anchored
        if server is not None:
            server.header = anchored

    async def main() -> None:
        nonlocal interrupted
        anchor()
        body_scope = trio.CancelScope()
        runtime_scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

                async def stop_on_signal() -> None:
                    # The first signal ends the body and lets the runtime stop its actors
                    # gracefully (for at most STOP_GRACE seconds); a second one cancels.
                    nonlocal interrupted
                    async for signum in signals:
                        interrupted = interrupted or signum == signal.SIGINT
                        if body_scope.cancel_called:
                            runtime_scope.cancel()
                            return
                        body_scope.cancel()
                        runtime_scope.deadline = trio.current_time() + STOP_GRACE

                nursery.start_soon(stop_on_signal)
                viewer = None
                if server is not None:
                    await nursery.start(server.serve)
                    viewer = server.url

                def ready(**info: Any) -> None:
                    line = {"role": role, "name": name or role, "viewer": viewer, **info}
                    print(json.dumps(line), flush=True)

                with runtime_scope:
                    async with open_runtime(tracer=tracer, name=name or role) as rt:
                        with body_scope:
                            await body(rt, ready)
                nursery.cancel_scope.cancel()

    try:
        run_command(main)  # (a Ctrl-C before the signal receiver above is open)
    finally:
        tracer.close()
    if interrupted:
        return 130
    return 0
