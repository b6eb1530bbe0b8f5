"""``DeadlineQueue`` on its own (no actors): the one timer task behind every ask timeout.

Each test runs the queue's ``run()`` task in a nursery under pytest-trio's
``autojump_clock`` (``MockClock(autojump_threshold=0)``): virtual time jumps to the next
deadline as soon as every task is blocked, so nothing waits on the wall clock and every
expiry happens at exactly its deadline.

An entry is an ``Envelope`` whose asker is a real task parked the way ``ActorRef.ask``
parks (``wait_task_rescheduled(env.abort)``): a reply is ``env.answer(...)`` (state DONE),
a cancelled asker withdraws it, and the ``expire`` callback answers it with a timeout.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import outcome
import pytest
import trio
import trio.lowlevel
from trio.testing import MockClock, wait_all_tasks_blocked

from trioxide.runtime._deadlines import DeadlineQueue
from trioxide.runtime._mailbox import Envelope, Mailbox

TIMED_OUT = "timed out"


@dataclass
class Harness:
    """A ``DeadlineQueue`` with its timer task running, and helpers to make timed asks."""

    nursery: trio.Nursery
    queue: DeadlineQueue = field(init=False)
    mailbox: Mailbox = field(default_factory=lambda: Mailbox(1000))
    expired: list[tuple[str, float]] = field(default_factory=list)  # (name, when)
    results: dict[str, Any] = field(default_factory=dict)  # what each asker got
    envelopes: dict[str, Envelope] = field(default_factory=dict)
    scopes: dict[str, trio.CancelScope] = field(default_factory=dict)  # one per asker

    def __post_init__(self) -> None:
        self.queue = DeadlineQueue(self.expire)

    def expire(self, env: Envelope) -> None:
        self.expired.append((env.msg, trio.current_time()))
        assert env.answer(outcome.Value(TIMED_OUT))

    async def ask(self, name: str, timeout: float, deadline: float | None = None) -> Envelope:
        """Start an asker task that puts *name* in the mailbox, registers it with *timeout*
        (deadline: now + timeout unless given) and parks; returns once it is registered."""

        async def asker(task_status: trio.TaskStatus[None]) -> None:
            with self.scopes.setdefault(name, trio.CancelScope()):
                task = trio.lowlevel.current_task()
                env = Envelope(name, asker=task, id=len(self.envelopes) + 1, mailbox=self.mailbox)
                self.mailbox.put(env)
                self.envelopes[name] = env
                due = trio.current_time() + timeout if deadline is None else deadline
                self.queue.add(env, timeout, due)
                task_status.started()
                self.results[name] = await trio.lowlevel.wait_task_rescheduled(env.abort)
            if name not in self.results:
                self.results[name] = "cancelled"

        await self.nursery.start(asker)
        return self.envelopes[name]

    def reply(self, name: str, value: object = "reply") -> None:
        assert self.envelopes[name].answer(outcome.Value(value))


@asynccontextmanager
async def running_queue() -> AsyncIterator[Harness]:
    async with trio.open_nursery() as nursery:
        harness = Harness(nursery)
        nursery.start_soon(harness.queue.run)
        await wait_all_tasks_blocked()
        yield harness
        await wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


def times(expired: list[tuple[str, float]], t0: float) -> list[tuple[str, float]]:
    return [(name, when - t0) for name, when in expired]


# -- tests ------------------------------------------------------------------------------


async def test_expiry_in_deadline_order_across_lanes(autojump_clock: MockClock) -> None:
    async with running_queue() as h:
        t0 = trio.current_time()
        await h.ask("a", 3.0)
        await h.ask("b", 1.0)
        await h.ask("c", 2.0)
        await h.ask("d", 1.0)
        await trio.sleep(0.5)
        await h.ask("e", 1.0)  # same lane as b/d: due at 1.5
        await h.ask("f", 0.25)  # due at 0.75, earlier than every lane head
        await trio.sleep(10)
    assert times(h.expired, t0) == [
        ("f", 0.75),
        ("b", 1.0),
        ("d", 1.0),
        ("e", 1.5),
        ("c", 2.0),
        ("a", 3.0),
    ]
    assert set(h.results.values()) == {TIMED_OUT}
    assert len(h.queue) == 0


async def test_done_entries_are_pruned_and_never_expired(autojump_clock: MockClock) -> None:
    async with running_queue() as h:
        t0 = trio.current_time()
        await h.ask("head", 1.0)
        await h.ask("inner", 1.0)  # behind "head" in the same lane
        await h.ask("tail", 1.0)
        await h.ask("other", 2.0)
        await h.ask("alone", 3.0)
        h.reply("head")  # a lane head that is DONE
        h.reply("inner")  # DONE in the middle of a lane
        h.reply("alone")  # a lane with nothing left to expire
        assert len(h.queue) == 5  # pruned lazily, not on reply
        await trio.sleep(10)
    assert times(h.expired, t0) == [("tail", 1.0), ("other", 2.0)]
    assert h.results == {
        "head": "reply",
        "inner": "reply",
        "alone": "reply",
        "tail": TIMED_OUT,
        "other": TIMED_OUT,
    }
    assert len(h.queue) == 0


async def test_withdrawn_entries_are_never_expired(autojump_clock: MockClock) -> None:
    async with running_queue() as h:
        t0 = trio.current_time()
        await h.ask("kept", 2.0)
        await h.ask("gone", 1.0)
        await h.ask("gone too", 2.0)  # behind "kept" in its lane
        assert len(h.mailbox) == 3
        h.scopes["gone"].cancel()  # the askers are cancelled: they withdraw their requests
        h.scopes["gone too"].cancel()
        await wait_all_tasks_blocked()
        assert len(h.mailbox) == 1
        await trio.sleep(10)
    assert times(h.expired, t0) == [("kept", 2.0)]
    assert h.results == {"kept": TIMED_OUT, "gone": "cancelled", "gone too": "cancelled"}
    assert len(h.queue) == 0


async def test_a_late_add_with_an_earlier_deadline_is_kept_sorted(
    autojump_clock: MockClock,
) -> None:
    # An ask computes its deadline, may wait for mailbox space, then registers: it can
    # arrive after a later deadline of its own lane (same timeout).
    async with running_queue() as h:
        t0 = trio.current_time()
        await h.ask("x", 5.0, deadline=t0 + 5.0)
        await h.ask("y", 5.0, deadline=t0 + 3.0)
        await h.ask("z", 5.0, deadline=t0 + 4.0)
        await h.ask("w", 5.0, deadline=t0 + 4.0)  # ties keep their order of arrival
        await h.ask("v", 5.0, deadline=t0 + 6.0)
        assert len(h.queue) == 5
        await trio.sleep(10)
    assert times(h.expired, t0) == [("y", 3.0), ("z", 4.0), ("w", 4.0), ("x", 5.0), ("v", 6.0)]


async def test_an_earlier_deadline_wakes_the_sleeping_timer(autojump_clock: MockClock) -> None:
    async with running_queue() as h:
        t0 = trio.current_time()
        await h.ask("long", 10.0)
        await trio.sleep(2.0)  # the timer task sleeps until t0 + 10
        await h.ask("short", 1.0)  # due at t0 + 3: must wake it earlier
        await h.ask("later", 20.0)  # a later one changes nothing
        await trio.sleep(30)
    assert times(h.expired, t0) == [("short", 3.0), ("long", 10.0), ("later", 22.0)]


async def test_an_already_passed_deadline_expires_at_once(autojump_clock: MockClock) -> None:
    async with running_queue() as h:
        t0 = trio.current_time()
        await h.ask("zero", 0.0)
        await h.ask("past", 1.0, deadline=t0 - 1.0)
        await wait_all_tasks_blocked()
        assert trio.current_time() == t0
        assert sorted(h.expired) == [("past", t0), ("zero", t0)]


async def test_len_counts_entries_until_they_are_pruned(autojump_clock: MockClock) -> None:
    async with running_queue() as h:
        assert len(h.queue) == 0
        await h.ask("a", 1.0)
        await h.ask("b", 2.0)
        await h.ask("c", 2.0)
        assert len(h.queue) == 3
        h.reply("b")
        assert len(h.queue) == 3  # finished entries are pruned lazily
        await trio.sleep(1.5)  # the timer woke for "a", pruning the finished "b" too
        assert len(h.queue) == 1
        await trio.sleep(1.0)  # "c" expired
        assert len(h.queue) == 0
    assert [name for name, _ in h.expired] == ["a", "c"]


async def test_a_long_lane_is_pruned_when_it_grows(autojump_clock: MockClock) -> None:
    n = DeadlineQueue.PRUNE_AT
    async with running_queue() as h:
        for i in range(n):
            await h.ask(f"fast{i}", 60.0)
            h.reply(f"fast{i}")
        assert len(h.queue) == n  # the timer has not woken: nothing pruned yet
        await h.ask("next", 60.0)  # the lane is full: its finished head entries go
        assert len(h.queue) == 1
        await trio.sleep(100)
    assert [name for name, _ in h.expired] == ["next"]


async def test_run_sleeps_forever_when_empty_and_stops_when_cancelled(
    autojump_clock: MockClock,
) -> None:
    expired: list[Envelope] = []
    queue = DeadlineQueue(expired.append)
    with trio.move_on_after(1e6) as scope:
        await queue.run()
    assert scope.cancelled_caught and expired == [] and len(queue) == 0


@pytest.mark.parametrize("timeouts", [[1.0, 1.0, 1.0], [3.0, 2.0, 1.0], [0.5, math.pi, 0.5]])
async def test_each_entry_expires_exactly_at_its_deadline(
    autojump_clock: MockClock, timeouts: list[float]
) -> None:
    async with running_queue() as h:
        t0 = trio.current_time()
        for i, timeout in enumerate(timeouts):
            await h.ask(f"e{i}", timeout)
        await trio.sleep(max(timeouts) + 1)
    expected = sorted(((f"e{i}", t) for i, t in enumerate(timeouts)), key=lambda e: e[1])
    assert times(h.expired, t0) == expected
