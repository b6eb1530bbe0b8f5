"""``Mailbox`` on its own (no actors, no runtime): ordering, capacity, selective take,
withdrawn envelopes, drain/close, the FIFO of blocked senders and the parked receiver.

Everything goes through the mailbox's methods (``put``, ``try_put``, ``pop``, ``take``,
``drain``, ``has_space``, ``wait_space``, ``release``, ``wait_put``, ``wake``, ``close``,
``statistics``, ``len``) and ``Envelope.abort`` (the Trio abort callback by which a
cancelled asker withdraws its queued request).

The async tests run under ``autojump_clock`` inside ``guarded_nursery``: a lost wakeup
fails at once (virtual time jumps to the guard) instead of hanging the run. Tasks that
Trio wakes in the same batch may run in either order, so only their sets are compared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
import trio.lowlevel
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock, wait_all_tasks_blocked

from trioxide.runtime import pattern
from trioxide.runtime._mailbox import Envelope, Mailbox, MailboxStatistics


class A(msgspec.Struct, frozen=True):
    n: int


class B(msgspec.Struct, frozen=True):
    n: int


def envelope(mb: Mailbox, msg: Any, id: int) -> Envelope:
    """An envelope without an asker (a traced tell), bound to *mb*."""
    return Envelope(msg, asker=None, id=id, mailbox=mb)


@asynccontextmanager
async def guarded_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery that fails instead of hanging if a task is never woken: the async tests
    run under ``autojump_clock``, so a deadlock jumps virtual time to this deadline."""
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            yield nursery


def withdraw(env: Envelope) -> None:
    """What Trio does when the asker of a queued request is cancelled."""
    env.abort(None)


def msgs(items: list[Any]) -> list[Any]:
    return [item.msg if isinstance(item, Envelope) else item for item in items]


def pop_all(mb: Mailbox) -> list[Any]:
    """Pop while ``len`` says an item is queued (never pops an empty mailbox)."""
    out = []
    while len(mb):
        out.append(mb.pop())
    return out


def pop_empty(mb: Mailbox) -> None:
    """Pop an empty mailbox: it says so (``None``, or ``IndexError``: the contract is being
    changed from the one to the other) and nothing else happens."""
    try:
        assert mb.pop() is None
    except IndexError:
        pass
    assert len(mb) == 0


# -- ordering ---------------------------------------------------------------------------


def test_fifo_within_a_priority() -> None:
    mb = Mailbox(10)
    pop_empty(mb)
    for i in range(5):
        mb.put(A(i))
    assert len(mb) == 5
    assert [mb.pop() for _ in range(5)] == [A(i) for i in range(5)]
    pop_empty(mb)
    mb.put(A(5))  # still works after popping an empty mailbox
    assert pop_all(mb) == [A(5)]


def test_higher_priority_first_then_fifo() -> None:
    mb = Mailbox(10)
    for msg, prio in [("a", 0), ("b", 1), ("c", 0), ("d", 5), ("e", 1), ("f", -1), ("g", 5)]:
        mb.put(msg, prio)
    assert pop_all(mb) == ["d", "g", "b", "e", "a", "c", "f"]


def test_a_new_priority_level_keeps_the_queued_default_level() -> None:
    mb = Mailbox(10)
    mb.put("a")
    mb.put("b")
    mb.put("urgent", 3)  # the first non-default level appears after priority-0 items
    mb.put("c")
    assert mb.pop() == "urgent"
    mb.put("later", 1)
    assert pop_all(mb) == ["later", "a", "b", "c"]


def test_envelopes_and_bare_messages_share_the_order() -> None:
    mb = Mailbox(10)
    e1, e2 = envelope(mb, A(1), 1), envelope(mb, A(2), 2)
    mb.put(e1)
    mb.put(A(0))
    mb.put(e2)
    assert pop_all(mb) == [e1, A(0), e2]


# -- capacity -------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, -1, True, 1.5, "3", None])
def test_capacity_must_be_a_positive_int(capacity: Any) -> None:
    with pytest.raises(ValueError, match="mailbox_size"):
        Mailbox(capacity)


def test_has_space_counts_queued_items() -> None:
    mb = Mailbox(2)
    assert mb.has_space()
    mb.put(A(1))
    assert mb.has_space()
    mb.put(A(2), 3)  # every priority level counts
    assert not mb.has_space() and len(mb) == 2
    mb.put(A(3))  # put itself never refuses (system messages may exceed the capacity)
    assert len(mb) == 3 and not mb.has_space()
    mb.pop()
    assert not mb.has_space()
    mb.pop()
    assert mb.has_space() and len(mb) == 1
    mb.take((A,))
    assert mb.has_space() and len(mb) == 0


# -- selective take ---------------------------------------------------------------------


def test_take_removes_the_first_match_and_leaves_the_rest_in_order() -> None:
    mb = Mailbox(10)
    for item in [A(1), B(2), A(3), B(4), A(5)]:
        mb.put(item)
    assert mb.take((B,)) == B(2)
    assert len(mb) == 4
    assert mb.take((str, int)) is None  # no match: nothing removed
    assert len(mb) == 4
    assert pop_all(mb) == [A(1), A(3), B(4), A(5)]
    assert mb.take((A,)) is None  # empty


def test_take_looks_at_higher_priorities_first_and_matches_envelope_messages() -> None:
    mb = Mailbox(10)
    low = envelope(mb, B(1), 1)
    high = envelope(mb, B(2), 2)
    mb.put(low)
    mb.put(A(0), 2)
    mb.put(high, 2)
    mb.put(A(9), 2)
    assert mb.take((B,)) is high
    assert mb.take((B,)) is low
    assert pop_all(mb) == [A(0), A(9)]


# -- withdrawn envelopes ----------------------------------------------------------------


def test_withdrawn_envelopes_stop_counting_and_are_skipped_by_pop() -> None:
    mb = Mailbox(2)
    e1, e2 = envelope(mb, A(1), 1), envelope(mb, A(2), 2)
    mb.put(e1)
    mb.put(e2)
    assert not mb.has_space()
    withdraw(e1)
    assert len(mb) == 1 and mb.has_space()
    assert mb.statistics().queued == 1
    mb.put(A(3))
    assert pop_all(mb) == [e2, A(3)]
    assert len(mb) == 0


def test_withdrawn_envelopes_are_skipped_at_every_priority() -> None:
    mb = Mailbox(10)
    hi = envelope(mb, A(1), 1)
    lo = envelope(mb, A(2), 2)
    mb.put(lo)
    mb.put(hi, 4)
    mb.put(A(3), 4)
    withdraw(hi)
    withdraw(lo)
    assert len(mb) == 1
    assert pop_all(mb) == [A(3)]


def test_withdrawn_envelopes_are_skipped_by_take() -> None:
    mb = Mailbox(10)
    e1, e2 = envelope(mb, B(1), 1), envelope(mb, B(2), 2)
    mb.put(A(0))
    mb.put(e1)
    mb.put(e2)
    withdraw(e1)
    assert mb.take((B,)) is e2
    assert mb.take((B,)) is None
    assert len(mb) == 1 and pop_all(mb) == [A(0)]


def test_drain_returns_live_items_in_delivery_order() -> None:
    mb = Mailbox(10)
    gone = envelope(mb, A(2), 2)
    kept = envelope(mb, A(4), 4)
    mb.put(A(1))
    mb.put(gone, 1)
    mb.put(A(3), 1)
    mb.put(kept)
    mb.put(A(5), -2)
    withdraw(gone)
    assert mb.drain() == [A(3), A(1), kept, A(5)]
    assert len(mb) == 0 and mb.drain() == []
    pop_empty(mb)
    assert mb.has_space()


# -- close --------------------------------------------------------------------------------


async def test_close_returns_the_blocked_senders_in_order(autojump_clock: MockClock) -> None:
    mb = Mailbox(1)
    mb.put(A(0))
    waiting: list[trio.lowlevel.Task] = []
    outcomes: list[str] = []

    async def sender(name: str) -> None:
        waiting.append(trio.lowlevel.current_task())
        await mb.wait_space()
        outcomes.append(f"{name} woke, closed={mb.closed}")

    async with guarded_nursery() as nursery:
        for name in ("s1", "s2"):
            nursery.start_soon(sender, name)
            await wait_all_tasks_blocked()
        assert mb.statistics().tasks_waiting_put == 2
        blocked = mb.close()
        assert blocked == waiting
        assert mb.closed and not mb.has_space()
        assert mb.statistics() == MailboxStatistics(
            queued=1,
            capacity=1,
            tasks_waiting_put=0,
            reserved=0,
            receiver_waiting=False,
            closed=True,
        )
        assert mb.close() == []  # nothing left to return
        for task in blocked:  # what the runtime does: they wake, see closed, give up
            trio.lowlevel.reschedule(task)
    # (Trio runs tasks woken together in either order.)
    assert sorted(outcomes) == ["s1 woke, closed=True", "s2 woke, closed=True"]
    assert mb.drain() == [A(0)]


# -- blocked senders: FIFO with a reserved slot -------------------------------------------


async def test_waiting_senders_are_served_fifo_and_a_newcomer_cannot_overtake(
    autojump_clock: MockClock,
) -> None:
    mb = Mailbox(1)
    mb.put("first")
    order: list[str] = []

    async def sender(name: str) -> None:
        if not mb.has_space():
            await mb.wait_space()
            mb.put(name, reserved=True)
        else:
            mb.put(name)
        order.append(name)

    async with guarded_nursery() as nursery:
        for name in ("s1", "s2"):
            nursery.start_soon(sender, name)
            await wait_all_tasks_blocked()
        assert mb.statistics().tasks_waiting_put == 2

        assert mb.pop() == "first"  # frees a slot: reserved for s1, which has not run yet
        assert len(mb) == 0
        assert not mb.has_space()  # so a newcomer must wait, behind s2
        nursery.start_soon(sender, "s3")
        await wait_all_tasks_blocked()
        assert order == ["s1"] and pop_all(mb) == ["s1"]
        await wait_all_tasks_blocked()
        assert order == ["s1", "s2"] and pop_all(mb) == ["s2"]
        await wait_all_tasks_blocked()
        assert order == ["s1", "s2", "s3"] and pop_all(mb) == ["s3"]
    assert mb.has_space() and mb.statistics().tasks_waiting_put == 0


async def test_the_reserved_slot_is_held_even_with_no_sender_left_waiting(
    autojump_clock: MockClock,
) -> None:
    mb = Mailbox(1)
    mb.put("x")
    done = trio.Event()

    async def sender() -> None:
        await mb.wait_space()
        await done.wait()  # holds its reservation without using it yet
        mb.put("s1", reserved=True)

    async with guarded_nursery() as nursery:
        nursery.start_soon(sender)
        await wait_all_tasks_blocked()
        mb.pop()
        await wait_all_tasks_blocked()
        assert mb.statistics().tasks_waiting_put == 0 and len(mb) == 0
        assert not mb.has_space()
        done.set()
    assert pop_all(mb) == ["s1"] and mb.has_space()


async def test_several_slots_wake_several_senders(autojump_clock: MockClock) -> None:
    mb = Mailbox(2)
    mb.put(1)
    mb.put(2)
    woke: list[str] = []

    async def sender(name: str) -> None:
        await mb.wait_space()
        woke.append(name)
        mb.put(name, reserved=True)

    async with guarded_nursery() as nursery:
        for name in ("s1", "s2", "s3"):
            nursery.start_soon(sender, name)
            await wait_all_tasks_blocked()
        mb.pop()
        mb.pop()  # two slots: two reservations, for the first two senders
        await wait_all_tasks_blocked()
        # (Trio runs tasks woken together in either order.)
        assert sorted(woke) == ["s1", "s2"] and not mb.has_space()
        assert sorted(pop_all(mb)) == ["s1", "s2"]
    assert woke[2:] == ["s3"] and pop_all(mb) == ["s3"]


async def test_release_passes_the_slot_to_the_next_sender(autojump_clock: MockClock) -> None:
    mb = Mailbox(1)
    mb.put("x")
    log: list[str] = []

    async def sender(name: str, use: bool) -> None:
        await mb.wait_space()
        if use:
            mb.put(name, reserved=True)
            log.append(f"{name} put")
        else:
            mb.release()  # e.g. its admission refused the message
            log.append(f"{name} released")

    async with guarded_nursery() as nursery:
        nursery.start_soon(sender, "s1", False)
        await wait_all_tasks_blocked()
        nursery.start_soon(sender, "s2", True)
        await wait_all_tasks_blocked()
        mb.pop()
    assert log == ["s1 released", "s2 put"]
    assert pop_all(mb) == ["s2"]


async def test_release_with_nobody_waiting_frees_the_slot(autojump_clock: MockClock) -> None:
    mb = Mailbox(1)
    mb.put("x")

    async def sender() -> None:
        await mb.wait_space()
        mb.release()

    async with guarded_nursery() as nursery:
        nursery.start_soon(sender)
        await wait_all_tasks_blocked()
        mb.pop()
        assert not mb.has_space()  # reserved for the sender
    assert mb.has_space()
    mb.put("y")
    assert not mb.has_space() and pop_all(mb) == ["y"]


async def test_withdrawing_a_queued_ask_wakes_a_blocked_sender(autojump_clock: MockClock) -> None:
    mb = Mailbox(1)
    env = envelope(mb, A(1), 1)
    mb.put(env)
    got: list[str] = []

    async def sender() -> None:
        await mb.wait_space()
        mb.put("s1", reserved=True)
        got.append("s1")

    async with guarded_nursery() as nursery:
        nursery.start_soon(sender)
        await wait_all_tasks_blocked()
        withdraw(env)
    assert got == ["s1"] and pop_all(mb) == ["s1"]


async def test_a_cancelled_sender_leaves_the_queue_without_a_slot(
    autojump_clock: MockClock,
) -> None:
    mb = Mailbox(1)
    mb.put("x")
    order: list[str] = []

    async def sender(name: str, scope: trio.CancelScope) -> None:
        with scope:
            await mb.wait_space()
            mb.put(name, reserved=True)
            order.append(name)
        if scope.cancelled_caught:
            order.append(f"{name} cancelled")

    s1, s2 = trio.CancelScope(), trio.CancelScope()
    async with guarded_nursery() as nursery:
        nursery.start_soon(sender, "s1", s1)
        await wait_all_tasks_blocked()
        nursery.start_soon(sender, "s2", s2)
        await wait_all_tasks_blocked()
        assert mb.statistics().tasks_waiting_put == 2
        s1.cancel()
        await wait_all_tasks_blocked()
        assert order == ["s1 cancelled"] and mb.statistics().tasks_waiting_put == 1
        mb.pop()  # the slot goes to the sender still waiting
    assert order == ["s1 cancelled", "s2"]
    assert pop_all(mb) == ["s2"] and mb.has_space()


def test_try_put_puts_when_a_slot_is_free() -> None:
    # Its contract: put at priority 0 if a slot is free and no sender waits for one,
    # otherwise change nothing and return False.
    mb = Mailbox(2)
    assert mb.try_put(A(1), A(1))  # also into a mailbox that never held anything
    assert mb.try_put(A(2), A(2))
    assert not mb.try_put(A(3), A(3))  # full: nothing changed
    assert pop_all(mb) == [A(1), A(2)]
    mb.put(A(4), 5)
    assert mb.try_put(A(5), A(5))
    assert pop_all(mb) == [A(4), A(5)]


async def test_try_put_takes_no_slot_that_a_waiting_sender_is_owed(
    autojump_clock: MockClock,
) -> None:
    mb = Mailbox(1)
    mb.put("a")
    assert not mb.try_put("b", "b") and len(mb) == 1  # full: nothing changed

    async def sender() -> None:
        await mb.wait_space()
        mb.put("s1", reserved=True)

    async with guarded_nursery() as nursery:
        nursery.start_soon(sender)
        await wait_all_tasks_blocked()
        assert not mb.try_put("c", "c")  # a sender is waiting
        assert mb.pop() == "a"
        assert not mb.try_put("d", "d")  # the freed slot is reserved for it
        assert len(mb) == 0
    assert pop_all(mb) == ["s1"]
    assert mb.try_put("e", "e") and pop_all(mb) == ["e"]


# -- the receiver: wait_put / wake ------------------------------------------------------


async def test_put_wakes_the_parked_receiver(autojump_clock: MockClock) -> None:
    mb = Mailbox(10)
    got: list[Any] = []

    async def receiver() -> None:
        while len(got) < 2:
            if len(mb):
                got.append(mb.pop())
            else:
                await mb.wait_put()

    async with guarded_nursery() as nursery:
        nursery.start_soon(receiver)
        await wait_all_tasks_blocked()
        assert mb.statistics().receiver_waiting
        mb.put(A(1))
        assert not mb.statistics().receiver_waiting  # woken at once, by put
        await wait_all_tasks_blocked()
        assert got == [A(1)] and mb.statistics().receiver_waiting
        mb.put(envelope(mb, A(2), 2), 7)
    assert msgs(got) == [A(1), A(2)]
    assert not mb.statistics().receiver_waiting


async def test_wake_without_a_message(autojump_clock: MockClock) -> None:
    mb = Mailbox(10)
    mb.wake()  # nobody parked: nothing happens
    woke = trio.Event()

    async def receiver() -> None:
        await mb.wait_put()
        woke.set()

    async with guarded_nursery() as nursery:
        nursery.start_soon(receiver)
        await wait_all_tasks_blocked()
        mb.wake()
        assert not mb.statistics().receiver_waiting
    assert woke.is_set() and len(mb) == 0


async def test_a_non_matching_put_does_not_wake_a_selective_receiver(
    autojump_clock: MockClock,
) -> None:
    mb = Mailbox(10)
    got: list[Any] = []

    async def receiver() -> None:
        while (item := mb.take((B,))) is None:
            got.append("parked")
            await mb.wait_put((B,))
        got.append(item)

    async with guarded_nursery() as nursery:
        nursery.start_soon(receiver)
        await wait_all_tasks_blocked()
        mb.put(A(1))
        mb.put(envelope(mb, A(2), 2), 1)
        await wait_all_tasks_blocked()
        assert got == ["parked"] and mb.statistics().receiver_waiting
        mb.put(envelope(mb, B(3), 3))  # an envelope's message counts
    assert msgs(got) == ["parked", B(3)]
    assert msgs(pop_all(mb)) == [A(2), A(1)]


async def test_a_cancelled_receiver_is_no_longer_waiting(autojump_clock: MockClock) -> None:
    mb = Mailbox(10)
    async with guarded_nursery() as nursery:
        nursery.start_soon(mb.wait_put)
        await wait_all_tasks_blocked()
        assert mb.statistics().receiver_waiting
        nursery.cancel_scope.cancel()
    assert not mb.statistics().receiver_waiting
    mb.put(A(1))  # wakes nobody
    assert pop_all(mb) == [A(1)]


def test_statistics() -> None:
    mb = Mailbox(3)
    assert mb.statistics() == MailboxStatistics(
        queued=0, capacity=3, tasks_waiting_put=0, reserved=0, receiver_waiting=False, closed=False
    )
    mb.put(A(1))
    mb.put(A(2), 1)
    assert mb.statistics().queued == 2
    mb.close()
    # capacity is the configured size, also once closed.
    assert mb.statistics() == MailboxStatistics(
        queued=2, capacity=3, tasks_waiting_put=0, reserved=0, receiver_waiting=False, closed=True
    )


# -- against a model ----------------------------------------------------------------------

#: What ``take`` selects by: the types (or patterns) given, and the same choice written
#: for the model without ``isinstance`` (which is what a pattern hooks into).
SELECTORS: list[tuple[tuple[type, ...], Callable[[Any], bool]]] = [
    ((A,), lambda m: type(m) is A),
    ((B,), lambda m: type(m) is B),
    ((A, B), lambda m: type(m) in (A, B)),
    ((pattern(A, lambda m: m.n % 2 == 0),), lambda m: type(m) is A and m.n % 2 == 0),
    ((B, pattern(A, lambda m: m.n % 3 == 1)), lambda m: type(m) is B or m.n % 3 == 1),
    ((pattern(B, lambda m: False),), lambda m: False),
]

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from([-1, 0, 0, 0, 2]), st.booleans(), st.booleans()),
        st.tuples(st.just("pop")),
        st.tuples(st.just("take"), st.sampled_from(SELECTORS)),
        st.tuples(st.just("withdraw"), st.integers(0, 50)),
        st.tuples(st.just("drain")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_matches_a_simple_model(ops: list[tuple[Any, ...]]) -> None:
    """Random put/pop/take/withdraw/drain sequences against a list kept in delivery order:
    the mailbox yields the same items, and ``len``/``has_space`` agree with it."""
    capacity = 8
    mb = Mailbox(capacity)
    model: list[tuple[int, int, Any]] = []  # (-priority, arrival, item): live items only
    arrival = 0

    def expect_next(selects: Callable[[Any], bool] | None) -> Any:
        for entry in sorted(model, key=lambda e: (e[0], e[1])):
            if selects is None or selects(msgs([entry[2]])[0]):
                model.remove(entry)
                return entry[2]
        return None

    for op in ops:
        if op[0] == "put":
            _, prio, is_b, as_envelope = op
            arrival += 1
            msg = B(arrival) if is_b else A(arrival)
            item = envelope(mb, msg, arrival) if as_envelope else msg
            mb.put(item, prio)
            model.append((-prio, arrival, item))
        elif op[0] == "pop":
            if model:
                assert mb.pop() is expect_next(None)
        elif op[0] == "take":
            types, selects = op[1]
            assert mb.take(types) is expect_next(selects)
        elif op[0] == "withdraw":
            queued = [e for e in model if isinstance(e[2], Envelope)]
            if queued:
                entry = queued[op[1] % len(queued)]
                model.remove(entry)
                withdraw(entry[2])
        else:
            ordered = [e[2] for e in sorted(model, key=lambda e: (e[0], e[1]))]
            assert mb.drain() == ordered
            model.clear()
        assert len(mb) == len(model)
        assert mb.has_space() == (len(model) < capacity)
        assert mb.statistics().queued == len(model)
    assert pop_all(mb) == [e[2] for e in sorted(model, key=lambda e: (e[0], e[1]))]


# -- a traced mailbox: bare tells and their ids -------------------------------------------


def traced_out(mb: Mailbox, item: Any) -> tuple[Any, int]:
    """What the actor gets for *item*, taken from traced *mb*: the message and its trace id.
    A bare item can only come from the common state's pop (``deque.popleft``): its id is
    the next in ``ids``, which the actor loop takes with it; every other way out hands a
    bare tell out in an envelope with its id."""
    if type(item) is Envelope:
        return item.msg, item.id
    assert mb.ids is not None
    return item, mb.ids.popleft()


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_a_traced_mailbox_hands_every_bare_tell_out_with_its_id(ops: list[tuple[Any, ...]]) -> None:
    """The model test above on a traced mailbox whose priority-0 puts of bare messages are
    traced tells on the fast path (``try_put``, then the id into ``ids``, as
    ``ActorRef.tell`` does): whichever way a message leaves - ``pop`` in the common state or
    outside it (levels, withdrawn envelopes), ``first``, ``take`` out of order, ``drain`` -
    it leaves with the id it was queued with, and ``ids`` holds exactly one id per bare
    message still queued. (A misaligned id would put every later handle on the wrong
    message in the trace.)"""
    mb = Mailbox(8, traced=True)
    model: list[tuple[int, int, Any]] = []  # (-priority, arrival, msg), live only
    arrival = 0

    def expect_next(selects: Callable[[Any], bool] | None) -> tuple[Any, int] | None:
        for entry in sorted(model, key=lambda e: (e[0], e[1])):
            if selects is None or selects(entry[2]):
                model.remove(entry)
                return entry[2], entry[1]
        return None

    envelopes: list[Envelope] = []
    for op in ops:
        if op[0] == "put":
            _, prio, is_b, as_envelope = op
            arrival += 1
            msg = B(arrival) if is_b else A(arrival)
            if prio == 0 and not as_envelope and mb.has_space():
                assert mb.try_put(msg, msg)
                assert mb.ids is not None
                mb.ids.append(arrival)
            else:
                env = envelope(mb, msg, arrival)
                envelopes.append(env)
                mb.put(env, prio)
            model.append((-prio, arrival, msg))
        elif op[0] == "pop":
            if model:
                assert traced_out(mb, mb.pop()) == expect_next(None)
        elif op[0] == "take":
            types, selects = op[1]
            peeked = mb.first(types)
            expected = expect_next(selects)
            if peeked is not None:
                assert (peeked.msg, peeked.id) == expected
            taken = mb.take(types)
            assert (None if taken is None else traced_out(mb, taken)) == expected
        elif op[0] == "withdraw":
            queued = [e for e in envelopes if any(m[2] is e.msg for m in model)]
            if queued:
                env = queued[op[1] % len(queued)]
                model[:] = [m for m in model if m[2] is not env.msg]
                withdraw(env)
        else:
            ordered = [(e[2], e[1]) for e in sorted(model, key=lambda e: (e[0], e[1]))]
            assert [traced_out(mb, item) for item in mb.drain()] == ordered
            model.clear()
        assert len(mb) == len(model)
        bare_queued = [item for item in (mb._q0 or ()) if type(item) is not Envelope]
        assert len(mb.ids or ()) == len(bare_queued)
    rest = [traced_out(mb, mb.pop()) for _ in range(len(mb))]
    assert rest == [(e[2], e[1]) for e in sorted(model, key=lambda e: (e[0], e[1]))]


def test_unput_takes_back_the_item_just_put() -> None:
    """A traced tell whose ``send`` raised takes its message back (``ActorRef.tell``)."""
    mb = Mailbox(2, traced=True)
    assert mb.try_put(A(1), A(1))
    mb.unput()
    assert len(mb) == 0 and mb.has_space()
    assert mb.try_put(A(2), A(2)) and mb.try_put(A(3), A(3))
    mb.unput()
    assert len(mb) == 1
