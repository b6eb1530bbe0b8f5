"""Wall time for N full VMM lifecycles on one simulated sled, tracing on (issue 5).

Usage: ``python bench/bench_sled.py [--vmms 1000]`` (also run by ``make bench``).

Each lifecycle: register -> ensure Running -> Running observed -> ensure Stopped ->
Destroyed published -> deregistered -> zone bundled, halted, removed by ZoneCleanup.
Virtual time (MockClock); the wall time is what the runtime and actors cost.
Target: 1,000 lifecycles <= 10 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from trioxide import traces  # noqa: E402
from trioxide.actors.instance_manager import InstanceManager  # noqa: E402
from trioxide.actors.instance_runner import Target, VmmSpec  # noqa: E402
from trioxide.actors.sim.zones import SimZones  # noqa: E402
from trioxide.actors.sled_agent import SledAgent, SledAgentClient, SledConfig, SledWorld  # noqa: E402
from trioxide.actors.vmm_state import SledVmmState  # noqa: E402
from trioxide.runtime import open_runtime  # noqa: E402
from trioxide.runtime.testing import run_seeded  # noqa: E402


async def lifecycles(n: int, sink: traces.MemorySink) -> tuple[float, int]:
    world = SledWorld(zones=SimZones(install_time=4.0, boot_time=2.0, bundle_time=1800.0))
    async with open_runtime(tracer=traces.Tracer(sink), name="bench", seed=1) as rt:
        sled = await rt.spawn(SledAgent, world, SledConfig(), name="sled")
        api = SledAgentClient(sled)
        manager = api.manager.instance
        assert isinstance(manager, InstanceManager)
        done = 0

        async def one(i: int) -> None:
            nonlocal done
            pid = f"vmm-{i:04d}"
            await api.register(pid, f"inst-{i:04d}", VmmSpec())
            await api.ensure_state(pid, Target.RUNNING)
            while (await api.get_state(pid)).state is not SledVmmState.RUNNING:  # noqa: ASYNC110
                await trio.sleep(1.0)
            await api.ensure_state(pid, Target.STOPPED)
            while manager.find(pid) is not None:  # noqa: ASYNC110
                await trio.sleep(1.0)
            done += 1

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
        while world.zones.names():  # noqa: ASYNC110 - wait for every cleanup (virtual time)
            await trio.sleep(600)
        assert done == n and world.zones.statistics().bundles_collected == n
        return trio.current_time(), done


def measure(n: int) -> dict[str, float]:
    sink = traces.MemorySink(maxlen=10_000_000)
    t0 = time.perf_counter()
    virtual, done = run_seeded(lifecycles, n, sink, seed=1)
    wall = time.perf_counter() - t0
    return {
        "vmms": float(done),
        "wall_s": wall,
        "virtual_s": virtual,
        "events": float(sink.written),
        "events_per_s": sink.written / wall,
        "lifecycles_per_s": done / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vmms", type=int, default=1000)
    args = parser.parse_args()
    r = measure(args.vmms)
    ok = "PASS" if r["wall_s"] <= 10.0 or args.vmms != 1000 else "MISS"
    print(f"sled lifecycles, tracing on (MemorySink): {int(r['vmms'])} VMMs")
    print(
        f"  wall time {r['wall_s']:.2f} s ({r['lifecycles_per_s']:.0f} lifecycles/s)  "
        f"target <= 10 s for 1,000: {ok}"
    )
    print(
        f"  {int(r['events']):,} trace events, {r['events_per_s']:,.0f} events/s; "
        f"{r['virtual_s']:,.0f} s of virtual time (zone bundles are serialized, 30 min each)"
    )


if __name__ == "__main__":
    main()
