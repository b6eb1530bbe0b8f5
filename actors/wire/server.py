"""Serving an ``App`` on loopback with hypercorn's Trio worker.

``serve_app`` runs until cancelled and reports the address it bound (port 0 picks a free
port) through ``task_status``; use it in a nursery::

    addr = await nursery.start(serve_app, app, "127.0.0.1", 0)

Guarantees: the server task is owned by the caller's nursery (no detached tasks); it binds
only the host it is given; cancelling its scope closes the listening socket and every
connection.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

__all__ = ["bind_listener", "serve_app"]


def _config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("trioxide.wire.hypercorn")
    config.keep_alive_timeout = 75.0  # longer than any long poll's idle gap
    config.graceful_timeout = 0.0
    return config


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to *host*:*port* (0: a free port), not yet listening: for a
    process that must know its address before it serves (``serve_app(..., listener=)``).
    Raises ``OSError`` (a port in use, an address not of this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_app(
    app: Any,
    host: str,
    port: int,
    *,
    listener: socket.socket | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *app* on *host*:*port* until cancelled; reports ``"host:port"`` as bound.
    With *listener* (``bind_listener``), serve on that socket instead: it belongs to the
    server from then on (closed when it stops)."""
    config = _config(host, port)
    if listener is not None:
        config.bind = [f"fd://{listener.detach()}"]

    class _Relay:
        def started(self, binds: list[str] | None = None) -> None:
            bound = (binds or [f"http://{host}:{port}"])[0]
            task_status.started(bound.removeprefix("http://"))

    await serve(app, config, task_status=_Relay())
