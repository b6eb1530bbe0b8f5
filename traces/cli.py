"""The ``trioxide`` subcommands this package offers: ``view`` and ``export``.

The command itself (``trioxide.cli``) gathers these with the other packages' subcommands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["add_server_args", "register", "server_options", "with_focus"]


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """The trace server's options (``--host``, ``--port``, ``--token``)."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--token", default=None, help="required when binding beyond loopback")


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """``TraceServer`` keyword arguments from the options of :func:`add_server_args`."""
    return {"host": args.host, "port": args.port, "token": args.token}


def _view(args: argparse.Namespace) -> int:
    import trio

    from .server import TraceServer

    if not args.trace.exists():
        raise SystemExit(f"trioxide: no such trace file: {args.trace}")
    server = TraceServer.from_file(args.trace, **server_options(args))

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            url = with_focus(server.url, args.focus)
            print(f"trioxide view: {args.trace} at {url}  (Ctrl-C to stop)", flush=True)

    try:
        trio.run(serve)
    except KeyboardInterrupt:
        pass
    return 0


def _export(args: argparse.Namespace) -> int:
    from ._reader import read_trace
    from .export import write_otlp, write_perfetto

    if args.perfetto is None and args.otlp is None:
        raise SystemExit("trioxide export: give --perfetto FILE and/or --otlp FILE")
    tf = read_trace(args.trace)
    for err in tf.errors:
        print(f"{args.trace}:{err.line}: skipped a corrupted line: {err.error}", file=sys.stderr)
    if args.perfetto is not None:
        write_perfetto(tf.events, args.perfetto, header=tf.header)
        print(f"wrote {args.perfetto} (Chrome trace JSON: open it in ui.perfetto.dev)")
    if args.otlp is not None:
        write_otlp(tf.events, args.otlp, header=tf.header)
        print(f"wrote {args.otlp} (OTLP/JSON spans)")
    return 0


def with_focus(url: str, focus: str | None) -> str:
    """*url* with ``focus=`` added (the page opens filtered and zoomed to that VMM)."""
    if not focus:
        return url
    return f"{url}{'&' if '?' in url else '?'}focus={quote(focus, safe='')}"


def register(sub: Any) -> None:
    """Add ``view`` and ``export`` to the ``trioxide`` command's subparsers *sub*."""
    view = sub.add_parser("view", help="replay a trace file in the browser viewer")
    view.add_argument("trace", type=Path, help="a JSON Lines trace file")
    view.add_argument(
        "--focus",
        metavar="VMM",
        help="open filtered to this VMM id (e.g. vmm-vcr) and zoomed to its events",
    )
    add_server_args(view)
    view.set_defaults(run=_view)
    export = sub.add_parser("export", help="convert a trace to Perfetto or OTLP JSON")
    export.add_argument("trace", type=Path, help="a JSON Lines trace file")
    export.add_argument("--perfetto", type=Path, help="write Chrome/Perfetto trace JSON here")
    export.add_argument("--otlp", type=Path, help="write OTLP/JSON spans here")
    export.set_defaults(run=_export)
