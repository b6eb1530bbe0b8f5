"""The ``trioxide`` subcommands this package offers: ``view`` and ``export``.

Both take one trace file or several: the traces of a rack's processes are merged into one
(``traces.merge``: one stream, actors prefixed by process, times aligned, a server's
request linked to the client's).

The command itself (``trioxide.cli``) gathers these with the other packages' subcommands.
This module, the lowest of the three packages, also holds what every subcommand shares for
reporting a user's mistakes: :class:`CommandError`, the argument types that refuse bad
counts and ports at parse time, and :func:`server_errors`; and how a command runs Trio
(:func:`run_command`).
"""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

if TYPE_CHECKING:
    import trio

__all__ = [
    "CommandError",
    "add_server_args",
    "at_least",
    "port_number",
    "register",
    "run_command",
    "server_errors",
    "server_options",
    "sole_exception",
    "with_focus",
]


class CommandError(Exception):
    """A mistake in how the ``trioxide`` command was called (a missing file, a port in use).

    The message is the whole report: one line naming the offending value and what to do.
    ``trioxide.cli.main`` prints it as ``trioxide: <message>`` and exits with status 2
    (``trioxide --debug`` shows the traceback instead).
    """


def at_least(low: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= *low* and, if given, <= *most* (else a parse
    error naming the value and the bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: give {low} or more")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{value} is too large: give at most {most}")
        return value

    return parse


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 1..65535, or 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port: give 1..65535, or 0 for any free port"
        )
    return value


def _token(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("the token must not be empty")
    return text


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """The trace server's options (``--host``, ``--port``, ``--token``)."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=port_number, default=0, help="port (default: a free one)")
    parser.add_argument("--token", type=_token, help="required when binding beyond loopback")


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """``TraceServer`` keyword arguments from the options of :func:`add_server_args`,
    checked by the server itself now (``CommandError`` for ``--host`` beyond loopback
    without ``--token``), before anything else starts."""
    from .server import TraceServer

    options = {"host": args.host, "port": args.port, "token": args.token}
    try:
        TraceServer(**options)
    except ValueError as exc:
        raise CommandError(
            f"{exc}; add --token SECRET (the printed URL carries it), "
            "or keep the default --host 127.0.0.1"
        ) from None
    return options


T = TypeVar("T")


def run_command(
    async_fn: Callable[..., Awaitable[T]], *args: Any, clock: trio.abc.Clock | None = None
) -> T:
    """``trio.run`` for a ``trioxide`` command, so that Ctrl-C always ends it: the
    interrupt is taken at a checkpoint of the run's main task
    (``restrict_keyboard_interrupt_to_checkpoints``), never inside Trio's own code, where a
    ``KeyboardInterrupt`` can leave a nursery waiting for a child that never runs
    (``Nursery.start_soon`` between registering a child and scheduling it)."""
    import trio

    return trio.run(
        async_fn, *args, clock=clock, restrict_keyboard_interrupt_to_checkpoints=True
    )


def sole_exception(exc: BaseException) -> BaseException:
    """*exc* itself, or the one exception inside (nested) groups of one, as Trio's
    nurseries wrap it; a group of several is returned as it is."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@contextmanager
def server_errors(host: str, port: int) -> Iterator[None]:
    """Report the trace server's failure to listen on *host*:*port* (a port in use, a
    host that does not resolve or is not this machine's) as a :class:`CommandError`."""
    try:
        yield
    except BaseException as exc:
        error = sole_exception(exc)
        if isinstance(error, socket.gaierror):
            why = f"cannot resolve --host {host!r} ({error.strerror})"
        elif isinstance(error, UnicodeError):  # the IDNA codec refuses the name
            why = f"--host {host!r} is not a valid host name"
        elif isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
            raise CommandError(
                f"port {port} on {host} is in use; pick another with --port or use 0"
            ) from exc
        elif isinstance(error, OSError) and error.errno == errno.EACCES:
            raise CommandError(
                f"port {port} on {host} needs privileges; pick one above 1023 or use 0"
            ) from exc
        elif isinstance(error, OSError) and error.errno == errno.EADDRNOTAVAIL:
            why = f"--host {host} is not an address of this machine"
        else:
            raise
        raise CommandError(f"{why}; give an address of this machine, such as 127.0.0.1") from exc


_EXAMPLE = "give a trace file trioxide wrote, e.g. traces-out/demo.jsonl"


def _trace_file(path: Path) -> Path:
    """*path* if it can be a trace file; a missing path, a folder or an empty file is a
    :class:`CommandError`."""
    if path.is_dir():
        raise CommandError(f"{path} is a folder, not a trace file; {_EXAMPLE}")
    if not path.exists():
        raise CommandError(f"no such trace file: {path}; {_EXAMPLE}")
    if path.stat().st_size == 0:
        raise CommandError(f"{path} is empty, not a trioxide trace; {_EXAMPLE}")
    return path


def _not_a_trace(path: Path, exc: ValueError) -> CommandError:
    """The reader's refusal of *path*'s header (``ValueError``) as one line."""
    why = str(exc)
    for prefix in (
        f"{path}: ",
        "not a trioxide trace: ",
        "line 1 is not a trioxide trace header: ",
    ):
        why = why.removeprefix(prefix)
    if "newer than this reader" in why:
        return CommandError(f"{path}: {why}; upgrade trioxide to read it")
    return CommandError(f"{path} is not a trioxide trace ({why}); {_EXAMPLE}")


def _output_file(path: Path, option: str) -> Path:
    """*path* if a file can be written there (its folder exists, it is no folder)."""
    if path.is_dir():
        raise CommandError(f"{option} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise CommandError(
            f"cannot write {option} {path}: the folder {path.parent} does not exist; "
            "create it or pick another path"
        )
    return path


def _merged(paths: list[Path]) -> Any:
    """The traces of *paths* merged (``MergedTrace``); a path that is no trace file is a
    ``CommandError`` naming it; damaged lines are reported on stderr."""
    from .merge import MergeSource, merge_traces

    sources = []
    for path in paths:
        tf = _read(path)
        sources.append(MergeSource(tf.header, tf.events, str(path)))
    return merge_traces(sources)


def _read(path: Path) -> Any:
    """The ``TraceFile`` at *path* (a user's mistake is a ``CommandError``); each
    corrupted line it skipped is reported on stderr."""
    from ._reader import read_trace

    _trace_file(path)
    try:
        tf = read_trace(path)
    except ValueError as exc:
        raise _not_a_trace(path, exc) from None
    for err in tf.errors:
        print(f"{path}:{err.line}: skipped a corrupted line: {err.error}", file=sys.stderr)
    return tf


def _merge_note(merged: Any) -> str:
    st = merged.statistics
    note = (
        f"merged {st.files} traces ({', '.join(merged.processes)}): {st.events} events, "
        f"{st.links} cross-process links"
    )
    if st.unmatched:
        note += f", {st.unmatched} requests from outside these traces"
    if st.unanchored:
        note += f", {st.unanchored} without a clock anchor (times not aligned)"
    return note


def _view(args: argparse.Namespace) -> int:
    import tempfile

    from .merge import write_trace

    options = server_options(args)
    paths: list[Path] = args.trace
    with tempfile.TemporaryDirectory(prefix="trioxide-view-") as tmp:
        note = None
        if len(paths) == 1:
            path = _trace_file(paths[0])
            shown = str(path)
        else:
            merged = _merged(paths)
            note = _merge_note(merged)
            path = write_trace(Path(tmp) / "merged.jsonl", merged.header, merged.events)
            shown = " + ".join(str(p) for p in paths)
        return _serve_view(args, options, path, shown, note)


def _serve_view(
    args: argparse.Namespace, options: dict[str, Any], path: Path, shown: str, note: str | None
) -> int:
    import trio

    from .server import TraceServer

    try:
        server = TraceServer.from_file(path, **options)
    except ValueError as exc:
        raise _not_a_trace(path, exc) from None

    async def serve() -> None:
        # SIGTERM (a service manager, a test) stops the server as Ctrl-C does: it closes,
        # and the worker processes decoding a large file end with it. Caught from before
        # the URL is printed: whoever read it may send SIGTERM at once.
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                url = with_focus(server.url, args.focus)
                print(f"trioxide view: {shown} at {url}  (Ctrl-C to stop)", flush=True)
                if note is not None:
                    print(f"trioxide view: {note}", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    with server_errors(args.host, args.port):
        run_command(serve)
    return 0


def _export(args: argparse.Namespace) -> int:
    from ._reader import TraceFile
    from .export import write_otlp, write_perfetto
    from .merge import write_trace

    if args.perfetto is None and args.otlp is None and args.jsonl is None:
        raise CommandError(
            "export needs an output: give --perfetto FILE and/or --otlp FILE "
            "(or --jsonl FILE: the trace as JSON Lines, merged if several)"
        )
    outputs = ((args.perfetto, "--perfetto"), (args.otlp, "--otlp"), (args.jsonl, "--jsonl"))
    for output, option in outputs:
        if output is not None:
            _output_file(output, option)
    paths: list[Path] = args.trace
    if len(paths) == 1:
        tf = _read(paths[0])
    else:
        merged = _merged(paths)
        print(_merge_note(merged))
        tf = TraceFile(merged.header, merged.events)
    if args.jsonl is not None:
        write_trace(args.jsonl, tf.header, tf.events)
        print(f"wrote {args.jsonl} (a trioxide trace: open it with trioxide view)")
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
    view = sub.add_parser(
        "view", help="replay a trace file (or the merged traces of a rack) in the viewer"
    )
    view.add_argument(
        "trace", type=Path, nargs="+", help="a JSON Lines trace file; several are merged"
    )
    view.add_argument(
        "--focus",
        metavar="VMM",
        help="open filtered to this VMM id (e.g. vmm-vcr) and zoomed to its events",
    )
    add_server_args(view)
    view.set_defaults(run=_view)
    export = sub.add_parser("export", help="convert a trace to Perfetto or OTLP JSON")
    export.add_argument(
        "trace", type=Path, nargs="+", help="a JSON Lines trace file; several are merged"
    )
    export.add_argument("--perfetto", type=Path, help="write Chrome/Perfetto trace JSON here")
    export.add_argument("--otlp", type=Path, help="write OTLP/JSON spans here")
    export.add_argument("--jsonl", type=Path, help="write the (merged) trace as JSON Lines here")
    export.set_defaults(run=_export)
