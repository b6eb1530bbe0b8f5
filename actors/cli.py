"""The ``trioxide`` command: ``demo`` and ``explore``."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any


def _load(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"trioxide: expected MODULE:ATTRIBUTE, got {spec!r}")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"trioxide: cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"trioxide: {module_name!r} has no attribute {attr!r}") from None


def _explore(args: argparse.Namespace) -> int:
    from runtime.testing import Exploration, Perturb, explore, replay

    target = _load(args.scenario)
    if not isinstance(target, Exploration):
        target = Exploration(target)  # a bare scenario function: no invariants
    perturb = target.perturb
    if args.extra_yields is not None or args.pct is not None:
        perturb = Perturb(
            args.extra_yields if args.extra_yields is not None else perturb.extra_yields,
            args.pct if args.pct is not None else perturb.pct_depth,
        )
    name = target.name or args.scenario
    if args.replay is not None:
        trace = Path(args.trace_dir) / f"replay-seed{args.replay}.jsonl"
        result = replay(
            target.scenario,
            args.replay,
            invariants=target.invariants,
            at_end=target.at_end,
            perturb=perturb,
            trace_path=trace,
        )
        events = len(result.events)
        print(f"replay {name}, seed {args.replay} (perturbation: {perturb}): {events} events")
        if result.violation is not None:
            print(f"VIOLATION {result.violation}")
        elif result.error is not None:
            print(f"ERROR: the scenario raised {result.error!r}")
        else:
            print(f"no violation; trace: {trace}")
        return 0 if result.ok else 1
    seeds = range(args.start, args.start + args.seeds)
    print(f"explore {name}: seeds {seeds.start}..{seeds.stop - 1}, perturbation: {perturb}")
    out = explore(
        target.scenario,
        seeds=seeds,
        invariants=target.invariants,
        at_end=target.at_end,
        perturb=perturb,
        trace_dir=args.trace_dir,
        progress=True,
    )
    print(out.summary())
    if out.violation is not None:
        print(f"replay: trioxide explore {args.scenario} --replay {out.violation.seed}")
    return 0 if out.ok else 1


def _server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--token", default=None, help="required when binding beyond loopback")


def _server_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"host": args.host, "port": args.port, "token": args.token}


def _view(args: argparse.Namespace) -> int:
    import trio

    from traces.server import TraceServer

    if not args.trace.exists():
        raise SystemExit(f"trioxide: no such trace file: {args.trace}")
    server = TraceServer.from_file(args.trace, **_server_options(args))

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            print(f"trioxide view: {args.trace} at {server.url}  (Ctrl-C to stop)", flush=True)

    try:
        trio.run(serve)
    except KeyboardInterrupt:
        pass
    return 0


def _export(args: argparse.Namespace) -> int:
    from traces import read_trace
    from traces.export import write_otlp, write_perfetto

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trioxide", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="a whole simulated sled under load, in virtual time")
    demo.add_argument(
        "--trace", type=Path, default=Path("traces-out/demo.jsonl"), help="trace file to write"
    )
    demo.add_argument("--vmms", type=int, default=200, help="number of VMMs (default 200)")
    demo.add_argument("--seed", type=int, default=1, help="scheduler and scenario seed")
    demo.add_argument("--view", action="store_true", help="serve the live viewer while it runs")
    _server_args(demo)
    view = sub.add_parser("view", help="replay a trace file in the browser viewer")
    view.add_argument("trace", type=Path, help="a JSON Lines trace file")
    _server_args(view)
    export = sub.add_parser("export", help="convert a trace to Perfetto or OTLP JSON")
    export.add_argument("trace", type=Path, help="a JSON Lines trace file")
    export.add_argument("--perfetto", type=Path, help="write Chrome/Perfetto trace JSON here")
    export.add_argument("--otlp", type=Path, help="write OTLP/JSON spans here")
    small = sub.add_parser("runtime-demo", help="a small example of the runtime alone")
    small.add_argument(
        "--trace", type=Path, default=Path("traces-out/runtime-demo.jsonl"), help="trace file"
    )
    ex = sub.add_parser("explore", help="run a scenario under many seeds and check its invariants")
    ex.add_argument("scenario", help="MODULE:ATTR of an Exploration (or a scenario function)")
    ex.add_argument("--seeds", type=int, default=1000, help="how many seeds (default 1000)")
    ex.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    ex.add_argument("--extra-yields", type=float, default=None, help="extra-yield probability")
    ex.add_argument("--pct", type=int, default=None, metavar="DEPTH", help="PCT change points")
    ex.add_argument("--trace-dir", default="traces-out", help="where violating traces go")
    ex.add_argument("--replay", type=int, default=None, metavar="SEED", help="replay one seed")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import DemoOptions, run_demo

        opts = DemoOptions(vmms=args.vmms, seed=args.seed, trace=args.trace)
        if args.view:
            return run_demo(opts, view=_server_options(args))
        return run_demo(opts)
    if args.command == "view":
        return _view(args)
    if args.command == "export":
        return _export(args)
    if args.command == "runtime-demo":
        from ._runtime_demo import run

        return run(args.trace)
    if args.command == "explore":
        return _explore(args)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
