"""Shared pieces of the trace tests: a traced runtime scenario and its actors.

``run_traced_scenario`` drives a small runtime through every kind of trace event (used by
``test_traces``, and run live by ``test_trace_server``); ``test_export`` builds its own
scenario (every shape of handler) from the same messages and ``Boss``.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio

from trioxide import runtime, traces


class Ask2(msgspec.Struct, frozen=True):
    n: int


class Kick(msgspec.Struct, frozen=True):
    pass


class Slow(msgspec.Struct, frozen=True):
    seconds: float


class Refuse(msgspec.Struct, frozen=True):
    pass


class Crash(msgspec.Struct, frozen=True):
    pass


class Stranger(msgspec.Struct, frozen=True):
    pass


class Worker(runtime.Actor):
    def __init__(self, watch: runtime.Watch[int]) -> None:
        self.watch = watch

    async def on_start(self) -> None:
        self.start_soon(self.helper, name="helper")

    async def helper(self) -> None:
        await trio.sleep(0.5)

    def admit(self, msg: Any) -> runtime.Admit:
        if isinstance(msg, Refuse):
            return runtime.Admit.reject(runtime.Rejected("NoThanks"))
        return runtime.Admit.ENQUEUE

    async def handle(self, msg: Ask2 | Slow | Refuse) -> Any:
        match msg:
            case Ask2(n):
                self.watch.set(n)
                return n * 2
            case Slow(seconds):
                await trio.sleep(seconds)
        return None


class Boss(runtime.Actor):
    def __init__(self, worker: runtime.ActorRef) -> None:
        self.worker = worker

    async def handle(self, msg: Kick) -> int:
        await self.worker.tell(Ask2(1))
        return int(await self.worker.ask(Ask2(2)))


class Phoenix(runtime.Actor):
    async def handle(self, msg: Crash) -> None:
        raise RuntimeError("phoenix burns")


async def run_traced_scenario(tracer: traces.Tracer) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    watch = runtime.Watch(0, name="pings")
    async with runtime.open_runtime(tracer=tracer, name="root") as rt:
        worker = await rt.spawn(Worker, watch, name="worker")
        boss = await rt.spawn(Boss, worker, name="boss")
        phoenix = await rt.spawn(Phoenix, name="phoenix", restart="permanent")

        facts["kick"] = await boss.ask(Kick())  # send/receive/handle/reply, cause, corr
        with pytest.raises(runtime.Rejected):
            await worker.tell(Refuse())  # admit
        with pytest.raises(runtime.UnhandledMessage):
            await worker.tell(Stranger())  # type: ignore[arg-type]  # unhandled
        t0 = trio.current_time()
        with pytest.raises(runtime.AskTimeout):
            await worker.ask(Slow(10.0), timeout=1.0)  # timeout (handler runs on)
        facts["timeout_at"] = trio.current_time() - t0
        with trio.move_on_after(1.0):
            await worker.ask(Slow(0.0))  # queued behind Slow(10): cancel (withdrawn)
        await worker.tell(Slow(0.0))
        await worker.tell(Slow(0.0))
        await worker.stop("enough", grace=0)  # running handler cancelled, queue drained
        await phoenix.tell(Crash())  # fail + restart
        await trio.sleep(1.0)
        facts["phoenix_restarts"] = phoenix.statistics().restarts
    return facts
