"""A cause from outside any actor (``trioxide.caused_by``): what a task that is no actor's
sends on behalf of a traced event (an HTTP server's request handler) names that event as
its ``cause``; inside an actor the actor's own message stays the cause; nothing changes
with tracing off. ``trace_site`` tells such code where it stands.
"""

from __future__ import annotations

import trio
import trio.testing

from trioxide import Actor, caused_by, open_runtime, trace_site, traces

from ._msgs import Counter, Get, Incr


class Forward(Actor):
    """Tells its counter from its handler inside ``caused_by`` (which must not matter)."""

    def __init__(self, counter: object) -> None:
        self.counter = counter

    async def handle(self, msg: Incr) -> None:
        with caused_by(12345):
            await self.counter.tell(msg)  # type: ignore[attr-defined]


async def test_sends_outside_any_actor_name_the_outside_cause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = traces.MemorySink()
    async with open_runtime(tracer=traces.Tracer(sink), name="rt") as rt:
        counter = await rt.spawn(Counter, name="counter")
        await counter.tell(Incr(1))  # no cause
        with caused_by(7):
            site = trace_site()
            assert site is not None and (site.actor, site.cause, site.runtime) == (None, 7, "rt")
            await counter.tell(Incr(1))  # the traced tell's fast path
            assert await counter.ask(Get()) == 2  # the ask's path
        await counter.tell(Incr(1))  # the block is over: no cause again
        forward = await rt.spawn(Forward, counter, name="forward")
        await forward.ask(Incr(1))  # returns once its tell to the counter is queued
        assert await counter.ask(Get()) == 4
    sends = [e for e in sink.events if e.kind == "send" and e.actor == "counter"]
    assert [(e.msg_type, e.peer, e.cause) for e in sends] == [
        ("Incr", None, None),
        ("Incr", None, 7),
        ("Get", None, 7),
        ("Incr", None, None),
        ("Incr", "forward", sends[4].cause),
        ("Get", None, None),
    ]
    # Inside an actor, the message it handles is the cause, caused_by or not.
    handled = [e for e in sink.events if e.kind == "send" and e.actor == "forward"]
    assert sends[4].cause == handled[0].msg_id


async def test_caused_by_without_tracing_records_nothing_and_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_runtime(name="plain") as rt:
        counter = await rt.spawn(Counter, name="counter")
        with caused_by(3):
            site = trace_site()
            assert site is not None and site.tracer is None and site.cause == 3
            await counter.tell(Incr(2))
        assert await counter.ask(Get()) == 2
    assert trace_site() is None  # outside any runtime


async def test_tasks_started_inside_the_block_inherit_the_cause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = traces.MemorySink()
    async with open_runtime(tracer=traces.Tracer(sink)) as rt:
        counter = await rt.spawn(Counter, name="counter")
        async with trio.open_nursery() as nursery:
            with caused_by(41):
                nursery.start_soon(counter.tell, Incr(1))
        assert await counter.ask(Get()) == 1
    (first,) = [e for e in sink.events if e.kind == "send" and e.msg_type == "Incr"]
    assert first.cause == 41
