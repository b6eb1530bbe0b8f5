"""W3C trace context across HTTP calls, and the trace events of both sides.

Two ``App`` s (a "front" and a "back" service) served by hypercorn in this test's Trio
run, on real loopback sockets in real time, called through ``HttpClient``: from the
test (outside any actor), from a front request's handler (outside any actor, inside the
request), and from an actor handling an ask the front handler made - and from the task
of an actor spawned meanwhile (as the runner's monitor is). Every call must continue the
trace of the request that led to it (traceparent continuity), and the trace must say
who caused what: the handler's ask names the request (``caused_by``), the actor's
request names the message it was handling. Every wait is bounded (``trio.fail_after``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
import trio

from trioxide import traces
from trioxide.actors.wire.asgi import App, Request, Route
from trioxide.actors.wire.client import HttpClient, HttpStatusError, TransportError
from trioxide.actors.wire.server import serve_app
from trioxide.runtime import Actor, ActorRef, Runtime, open_runtime

from ._procs import rack_process

WAIT = 10.0


class Seen(msgspec.Struct, frozen=True):
    """What the back service saw: the traceparent the request carried."""

    traceparent: str


class CallBack(msgspec.Struct, frozen=True):
    pass


class SpawnPoller(msgspec.Struct, frozen=True):
    pass


class Poller(Actor):
    """Calls the back service once from its own task (like the runner's monitor)."""

    def __init__(self, client: HttpClient, done: trio.Event) -> None:
        self.client = client
        self.done = done

    async def on_start(self) -> None:
        self.start_soon(self._poll, name="poll")

    async def handle(self, msg: CallBack) -> None:
        return None

    async def _poll(self) -> None:
        await self.client.call("GET", "/back/poll", response=Seen)
        self.done.set()


class Relay(Actor):
    """Calls the back service from its handler (like the runner handling PutState)."""

    def __init__(self, client: HttpClient, polled: trio.Event) -> None:
        self.client = client
        self.polled = polled

    async def handle(self, msg: CallBack | SpawnPoller) -> Seen | None:
        if isinstance(msg, CallBack):
            return await self.client.call("GET", "/back/x", response=Seen)
        await self.spawn(Poller, self.client, self.polled, name="poller")
        return None


@dataclass
class Rack:
    rt: Runtime
    sink: traces.MemorySink
    front: HttpClient
    back: HttpClient
    polled: trio.Event

    def events(self, kind: str) -> list[traces.TraceEvent]:
        return [e for e in self.sink.events if e.kind == kind]

    def by_seq(self, seq: int | None) -> traces.TraceEvent:
        (e,) = [e for e in self.sink.events if e.seq == seq]
        return e


async def _seen(request: Request) -> Seen:
    return Seen(request.headers.get("traceparent", ""))


async def _slow(request: Request) -> Seen:
    await trio.sleep(WAIT)
    return Seen("")


@asynccontextmanager
async def rack() -> AsyncIterator[Rack]:
    sink = traces.MemorySink()
    polled = trio.Event()
    async with open_runtime(tracer=traces.Tracer(sink), name="test") as rt:
        async with trio.open_nursery() as nursery:
            back_app = App(
                "Oxide Back API (test)",
                "1.0",
                [
                    Route("GET", "/back/x", "back_x", _seen, response=Seen),
                    Route("GET", "/back/poll", "back_poll", _seen, response=Seen),
                    Route("GET", "/back/slow", "back_slow", _slow, response=Seen),
                ],
            )
            back_addr = await nursery.start(serve_app, back_app, "127.0.0.1", 0)
            back = HttpClient(f"http://{back_addr}", timeout=WAIT)
            relay: ActorRef[Relay] = await rt.spawn(Relay, back, polled, name="relay")

            async def via_actor(request: Request) -> Seen | None:
                return await relay.ask(CallBack())

            async def direct(request: Request) -> Seen | None:
                return await back.call("GET", "/back/x", response=Seen)

            async def spawn_poller(request: Request) -> None:
                await relay.ask(SpawnPoller())

            front_app = App(
                "Front",
                "1.0",
                [
                    Route("GET", "/front/actor", "front_actor", via_actor, response=Seen),
                    Route("GET", "/front/direct", "front_direct", direct, response=Seen),
                    Route("POST", "/front/spawn", "front_spawn", spawn_poller),
                ],
            )
            front_addr = await nursery.start(serve_app, front_app, "127.0.0.1", 0)
            front = HttpClient(f"http://{front_addr}", timeout=WAIT)
            try:
                yield Rack(rt, sink, front, back, polled)
            finally:
                await front.aclose()
                await back.aclose()
                nursery.cancel_scope.cancel()


async def test_a_request_through_an_actor_is_one_trace_with_cause_links() -> None:
    with trio.fail_after(WAIT):
        async with rack() as r:
            seen = await r.front.call("GET", "/front/actor", response=Seen)
    assert seen is not None
    # The test's call (outside any actor and any request): a new trace.
    t_send, a_send = r.events("http_send")
    assert (t_send.actor, t_send.cause, t_send.parent_span) == ("http:client", None, None)
    assert t_send.detail == "GET /front/actor"
    f_serve, b_serve = r.events("http_serve")
    assert f_serve.actor == "http:front" and b_serve.actor == "http:back"
    # The front server continues the test's trace as a child of the test's span...
    assert (f_serve.trace_id, f_serve.parent_span) == (t_send.trace_id, t_send.span_id)
    # ... its handler's ask names the request as its cause ...
    (ask,) = [e for e in r.events("send") if e.actor == "test/relay" or e.actor.endswith("relay")]
    assert ask.cause == f_serve.msg_id == f_serve.seq and ask.peer is None
    # ... the actor's request names the message it handled and continues the trace ...
    assert (a_send.actor, a_send.cause) == (ask.actor, ask.msg_id)
    assert (a_send.trace_id, a_send.parent_span) == (t_send.trace_id, f_serve.span_id)
    # ... and the back server saw exactly that traceparent.
    assert seen.traceparent == f"00-{a_send.trace_id}-{a_send.span_id}-01"
    assert (b_serve.trace_id, b_serve.parent_span) == (a_send.trace_id, a_send.span_id)
    assert len({t_send.span_id, f_serve.span_id, a_send.span_id, b_serve.span_id}) == 4
    # Every request ended once, ok, in order: back served before the actor's end, etc.
    ends = {e.corr: e for e in r.events("http_end") + r.events("http_served")}
    for start in (t_send, a_send, f_serve, b_serve):
        assert ends[start.msg_id].outcome == "ok"
        assert ends[start.msg_id].seq > start.seq
    assert ends[b_serve.msg_id].seq < ends[a_send.msg_id].seq < ends[f_serve.msg_id].seq
    assert ends[f_serve.msg_id].detail == "200"


async def test_a_handler_calling_directly_continues_the_request_trace() -> None:
    with trio.fail_after(WAIT):
        async with rack() as r:
            seen = await r.front.call("GET", "/front/direct", response=Seen)
    assert seen is not None
    t_send, h_send = r.events("http_send")
    f_serve, _b_serve = r.events("http_serve")
    # Outside any actor but inside the served request: the request's lane and cause.
    assert (h_send.actor, h_send.cause) == ("http:front", f_serve.msg_id)
    assert (h_send.trace_id, h_send.parent_span) == (t_send.trace_id, f_serve.span_id)
    assert seen.traceparent == f"00-{h_send.trace_id}-{h_send.span_id}-01"


async def test_an_actor_spawned_in_a_request_polls_in_its_trace() -> None:
    with trio.fail_after(WAIT):
        async with rack() as r:
            await r.front.call("POST", "/front/spawn")
            await r.polled.wait()
    t_send, p_send = r.events("http_send")
    f_serve = r.events("http_serve")[0]
    (spawn,) = [e for e in r.events("spawn") if e.actor.endswith("poller")]
    # Spawned while the relay handled the ask the request's handler made.
    ask = r.by_seq(spawn.cause)
    assert (ask.kind, ask.msg_type, ask.cause) == ("send", "SpawnPoller", f_serve.msg_id)
    # The poller's task handles no message, yet its call continues the request's trace.
    assert p_send.actor == spawn.actor and p_send.cause is None
    assert (p_send.trace_id, p_send.parent_span) == (t_send.trace_id, f_serve.span_id)


async def test_failed_requests_end_with_their_outcome() -> None:
    with trio.fail_after(WAIT):
        async with rack() as r:
            with pytest.raises(HttpStatusError):
                await r.back.call("GET", "/back/missing")
            with pytest.raises(TransportError, match="timeout"):
                await r.back.call("GET", "/back/slow", timeout=0.05)
            with trio.move_on_after(0.05):
                await r.back.call("GET", "/back/slow")
            async with HttpClient("http://127.0.0.1:1", timeout=1.0) as nowhere:
                with pytest.raises(TransportError, match="connect"):
                    await nowhere.call("GET", "/x")
            await trio.sleep(0.05)  # the slow handlers' cancellations are traced by now
    ends = [(e.outcome, (e.detail or "").split(":")[0]) for e in r.events("http_end")]
    assert ends == [
        ("error", "404 NOT_FOUND"),
        ("timeout", "timeout error on http"),
        ("cancelled", "Cancelled()"),
        ("error", "connect error on http"),
    ]
    served = [(e.outcome, e.detail) for e in r.events("http_served")]
    assert served[0] == ("error", "404 NOT_FOUND")
    # The two slow requests' clients went away: the server's handlers were cancelled,
    # or are still waiting (hypercorn cancels them when it notices the disconnect).
    assert all(outcome == "cancelled" for outcome, _ in served[1:])


# -- end to end: three rack processes, three trace files, one merged trace ---------------

T_ENSURE = "0af7651916cd43dd8448eb211c80319c"
T_START = "4bf92f3577b34da6a3ce929d0e0e4736"
OUR_SPAN = "b7ad6b7169203331"


async def test_a_vmm_start_across_three_processes_merges_into_one_trace(tmp_path: Path) -> None:
    """Nexus, a hypervisor and a sled agent as processes (each writing its trace file);
    the test asks the agent to start a VMM, carrying its own traceparents. The merged
    trace has the agent's runner calling Propolis in the trace of the request that
    started the VMM, with the hypervisor's request linked to the runner's (the arrow the
    viewer draws), and the monitor's long polls continuing that trace."""
    pid = "vmm-t"
    async with (
        rack_process("nexus", trace_dir=tmp_path) as nexus,
        rack_process("hypervisor", "--time-scale", "0.02", trace_dir=tmp_path) as hv,
    ):
        async with (
            rack_process(
                "agent", "--sled-id", "sled-1", "--nexus", nexus.url, "--hypervisor", hv.url,
                trace_dir=tmp_path, name="sled-1",
            ) as agent,
            httpx.AsyncClient(timeout=WAIT, trust_env=False) as http,
        ):  # fmt: skip
            ensure = {
                "instance_id": "inst-t",
                "vmm_spec": {"ncpus": 1, "memory_bytes": 1 << 30},
                "vmm_runtime": {
                    "gen": 1, "state": "starting", "time_updated": "2026-01-01T00:00:00Z",
                },
            }  # fmt: skip
            with trio.fail_after(WAIT):
                reply = await http.put(
                    f"{agent.url}/vmms/{pid}", json=ensure,
                    headers={"traceparent": f"00-{T_ENSURE}-{OUR_SPAN}-01"},
                )  # fmt: skip
                assert reply.status_code == 200, reply.text
                reply = await http.put(
                    f"{agent.url}/vmms/{pid}/state", json={"state": {"type": "running"}},
                    headers={"traceparent": f"00-{T_START}-{OUR_SPAN}-01"},
                )  # fmt: skip
                assert reply.status_code == 200, reply.text
                while True:
                    got = (await http.get(f"{agent.url}/vmms/{pid}/state")).json()
                    if got["vmm_state"]["state"] == "running":
                        break
                    await trio.sleep(0.005)
                assert await agent.stop() == 0
    paths = [tmp_path / f"{name}.jsonl" for name in ("nexus", "hypervisor", "sled-1")]
    for path in paths:
        header = traces.read_trace(path).header
        assert header.process and header.started_at and header.clock_at_start is not None
    merged = traces.merge_files(paths)
    events = merged.events
    st = merged.statistics
    # Unmatched: the test's own two requests (its traceparents name no span of these files).
    assert (st.files, st.unanchored, st.dangling, st.unmatched) == (3, 0, 0, 2)
    assert [e.t for e in events] == sorted(e.t for e in events)
    agent_name = merged.processes[2]

    def find(kind: str, where: str, what: str = "") -> list[traces.TraceEvent]:
        return [
            e for e in events if e.kind == kind and where in e.actor and what in (e.detail or "")
        ]

    (start,) = find("http_serve", f"{agent_name}/http:", f"PUT /vmms/{pid}/state")
    assert (start.trace_id, start.parent_span, start.cause) == (T_START, OUR_SPAN, None)
    # The runner's calls to Propolis while it handled PutState(Running): in that trace.
    runner_calls = find("http_send", f"runner-{pid}-g1")
    assert runner_calls, sorted({e.actor for e in events})
    started = [e for e in runner_calls if e.trace_id == T_START]
    assert started, [(e.detail, e.trace_id) for e in runner_calls]
    for call in started:
        assert call.parent_span == start.span_id
        # The arrow across processes: the hypervisor's request names the runner's.
        (served,) = [e for e in find("http_serve", "hypervisor/") if e.parent_span == call.span_id]
        assert served.cause == call.msg_id and served.trace_id == T_START
        assert served.peer == call.actor and call.peer == served.actor
        assert served.seq > call.seq
    # The monitor (spawned while the runner handled it) long-polls in the same trace.
    polls = find("http_send", f"runner-{pid}-g1/monitor")
    assert polls and all(p.trace_id == T_START for p in polls), [p.trace_id for p in polls]
    assert st.links >= len(started) + len(polls) - 1  # the last poll may be unanswered
