"""Explorer speed: seeds/s on the lost-update toy, and the cost of invariant checking.

Usage: ``python bench/bench_explorer.py [--seeds N]`` (also run by ``run_all.py``).

* ``explore`` with the invariant checked after every handled message;
* the same seeded runs without invariants (``replay`` per seed, tracing on): the baseline;
* the same scenario as plain seeded ``trio.run``s with no tracer at all (for reference).

Target (issue 3): explorer / baseline <= 1.5x.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.lost_update import Client, Go, Read, Store, fixed_scenario, no_lost_update  # noqa: E402
from trioxide.runtime import open_runtime  # noqa: E402
from trioxide.runtime.testing import explore, replay, run_seeded  # noqa: E402


def explorer_rate(seeds: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    result = explore(
        fixed_scenario, seeds=range(seeds), invariants=[no_lost_update], progress=False
    )
    wall = time.perf_counter() - t0
    assert result.ok, result.summary()
    return seeds / wall, result.events / wall, result.checks


def baseline_rate(seeds: int) -> float:
    """Same seeded, traced runs with no invariants."""
    t0 = time.perf_counter()
    for seed in range(seeds):
        replay(fixed_scenario, seed)
    return seeds / (time.perf_counter() - t0)


def untraced_rate(seeds: int) -> float:
    """The scenario as bare seeded trio.runs: no tracer, no checks."""
    import trio

    async def main() -> None:
        async with open_runtime(name="bare") as rt:
            store = await rt.spawn(Store, name="store")
            clients = [await rt.spawn(Client, store, True, name=f"c{i}") for i in range(2)]
            async with trio.open_nursery() as nursery:
                for i, ref in enumerate(clients):
                    nursery.start_soon(ref.ask, Go(1, work=2 * i))
            await store.ask(Read())

    t0 = time.perf_counter()
    for seed in range(seeds):
        run_seeded(main, seed=seed)
    return seeds / (time.perf_counter() - t0)


def measure(seeds: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(3):
        explorer, events, checks = explorer_rate(seeds)
        base = baseline_rate(seeds)
        bare = untraced_rate(seeds)
        for key, value in (
            ("explore_seeds_per_s", explorer),
            ("explore_events_per_s", events),
            ("replay_seeds_per_s", base),
            ("bare_seeds_per_s", bare),
        ):
            best[key] = max(best.get(key, 0.0), value)
        best["explore_checks"] = checks
    best["explore_overhead"] = best["replay_seeds_per_s"] / best["explore_seeds_per_s"]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=500)
    args = parser.parse_args()
    r = measure(args.seeds)
    print(f"explorer, lost-update toy (fixed), {args.seeds} seeds, best of 3")
    rows = [
        ("explore (invariant after every handled message)", r["explore_seeds_per_s"]),
        ("same runs without invariants (replay)", r["replay_seeds_per_s"]),
        ("same scenario, bare seeded trio.run, no tracer", r["bare_seeds_per_s"]),
    ]
    for label, rate in rows:
        print(f"  {label:<50} {rate:8,.0f} seeds/s")
    print(f"  explorer events/s: {r['explore_events_per_s']:,.0f}")
    bare_ratio = r["bare_seeds_per_s"] / r["explore_seeds_per_s"]
    print(f"  explorer vs bare untraced runs: {bare_ratio:.2f}x")
    ok = "PASS" if r["explore_overhead"] <= 1.5 else "MISS"
    print(f"  explorer overhead vs no checks: {r['explore_overhead']:.2f}x (target <= 1.5x) {ok}")


if __name__ == "__main__":
    main()
