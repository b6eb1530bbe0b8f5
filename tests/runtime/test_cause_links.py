"""Cause links of failures and cancellations (semantics.md 11): a ``fail`` names the message
whose handler raised; a cancelled ``handle``, ``task_end`` or ``cancel`` names the message
that led to the cancellation - the interrupting message of ``serve_until``, or the message
the stopper was handling when it asked for the stop. What a viewer draws as "why".
"""

from __future__ import annotations

import math

import msgspec
import pytest
import trio
import trio.testing

from trioxide import Actor, ActorRef, open_runtime, traces

from ._msgs import Boom, Counter, Incr, Sleep


class Work(msgspec.Struct, frozen=True):
    pass


class Abort(msgspec.Struct, frozen=True):
    pass


class Activate(msgspec.Struct, frozen=True):
    pass


class Backend(Actor):
    """Activation never finishes (a black-holed target)."""

    async def handle(self, msg: Activate) -> None:
        await trio.sleep_forever()


class Driver(Actor):
    """Works (an ask to its backend, in a child scope) until an ``Abort`` interrupts."""

    def __init__(self, backend: ActorRef[Backend]) -> None:
        self.backend = backend

    async def handle(self, msg: Work | Abort | Boom) -> None:
        match msg:
            case Work():
                await self.serve_until(
                    self.backend.ask, Activate(), serve=(Boom,), interrupt=(Abort,)
                )
            case Boom(why):
                raise ValueError(why)


class Stopper(Actor):
    def __init__(self, target: ActorRef[Counter]) -> None:
        self.target = target

    async def handle(self, msg: Work) -> None:
        await self.target.stop(grace=0)


def by_seq(sink: traces.MemorySink) -> dict[int, traces.TraceEvent]:
    return {e.seq: e for e in sink.events}


@pytest.mark.parametrize("lone", [True, False], ids=["runs", "per-event"])
async def test_a_fail_names_the_message_whose_handler_raised(
    lone: bool, autojump_clock: trio.testing.MockClock
) -> None:
    sink = traces.MemorySink()
    tracer = traces.Tracer(sink) if lone else traces.Tracer(sink, traces.MemorySink())
    async with open_runtime(tracer=tracer) as rt:
        ref = await rt.spawn(Counter, name="c", restart="permanent")
        await ref.tell(Incr())
        await ref.tell(Boom("kaput"))
        await ref.tell(Incr())
        await trio.testing.wait_all_tasks_blocked()
        await ref.stop()
    events = by_seq(sink)
    (fail,) = sink.of_kind("fail")
    boom = events[fail.cause]  # type: ignore[index]
    assert (boom.kind, boom.msg_type, boom.actor) == ("send", "Boom", "c")


async def test_a_served_tell_that_raises_is_the_fails_cause_not_the_serving_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = traces.MemorySink()
    async with open_runtime(tracer=traces.Tracer(sink)) as rt:
        backend = await rt.spawn(Backend, name="backend")
        driver = await rt.spawn(Driver, backend, name="driver", restart="temporary")
        await driver.tell(Work())
        await trio.testing.wait_all_tasks_blocked()
        await driver.tell(Boom("served"))
        await trio.testing.wait_all_tasks_blocked()
        await backend.stop(grace=0)
    (fail,) = sink.of_kind("fail")
    assert by_seq(sink)[fail.cause].msg_type == "Boom"  # type: ignore[index]


async def test_an_interrupt_is_the_cause_of_the_cancellations_it_makes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stop-during-activation, in small: the ``Abort`` that interrupts ``serve_until`` is
    the cause of the cancelled ask (``cancel``) and of the cancelled task (``task_end``)."""
    sink = traces.MemorySink()
    async with open_runtime(tracer=traces.Tracer(sink)) as rt:
        backend = await rt.spawn(Backend, name="backend")
        driver = await rt.spawn(Driver, backend, name="driver")
        await driver.tell(Work())
        await trio.sleep(480)
        await driver.tell(Abort())
        await trio.testing.wait_all_tasks_blocked()
        (abort,) = [e for e in sink.of_kind("send") if e.msg_type == "Abort"]
        (cancel,) = sink.of_kind("cancel")
        (task_end,) = [e for e in sink.of_kind("task_end") if e.actor == "driver"]
        assert cancel.cause == abort.seq and cancel.outcome == "cancelled"
        assert task_end.cause == abort.seq and task_end.outcome == "cancelled"
        await driver.stop()
        await backend.stop(grace=0)


async def test_a_stop_asked_by_a_handler_is_the_cause_of_the_cancelled_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = traces.MemorySink()
    async with open_runtime(tracer=traces.Tracer(sink)) as rt:
        target = await rt.spawn(Counter, name="target")
        stopper = await rt.spawn(Stopper, target, name="stopper")
        await target.tell(Sleep(math.inf, "stuck"))
        await trio.testing.wait_all_tasks_blocked()
        await stopper.tell(Work())
        await trio.testing.wait_all_tasks_blocked()
        (work,) = [e for e in sink.of_kind("send") if e.msg_type == "Work"]
        (cancelled,) = [
            e for e in sink.of_kind("handle") if e.actor == "target" and e.outcome == "cancelled"
        ]
        assert cancelled.cause == work.seq
        await stopper.stop()
    # Without a cause (nothing was being handled: a stop from outside), none is claimed.
    ok = [e for e in sink.of_kind("handle") if e.outcome == "ok"]
    assert all(e.cause is None for e in ok)


class Host(Actor):
    """Spawns a backend whose activation hangs (as Propolis's state driver does)."""

    async def on_start(self) -> None:
        self.backend = await self.spawn(Backend, name="backend")
        await self.backend.tell(Activate())

    async def handle(self, msg: Work) -> None:
        return None


async def test_children_stopped_by_an_exiting_parent_name_what_stopped_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An actor handling ``Work`` stops the host (as the Propolis host kills a Propolis
    on a ``Kill``); on its way out the host stops its children: the child's cancelled
    handler names that ``Work`` - it named nothing, the host handling no message when it
    stopped them."""
    sink = traces.MemorySink()
    async with open_runtime(tracer=traces.Tracer(sink)) as rt:
        host = await rt.spawn(Host, name="host")
        stopper = await rt.spawn(Stopper, host, name="stopper")
        await trio.testing.wait_all_tasks_blocked()
        await stopper.tell(Work())
        await trio.sleep(1)
        assert not host.alive
    events = by_seq(sink)
    (work,) = [e for e in events.values() if e.kind == "send" and e.msg_type == "Work"]
    (cancelled,) = [
        e
        for e in events.values()
        if e.kind == "handle" and e.actor.endswith("/backend") and e.outcome == "cancelled"
    ]
    assert cancelled.cause == work.msg_id
