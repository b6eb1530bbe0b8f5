"""Message patterns (``trioxide.runtime.pattern``): ``receive`` and ``serve_until`` select
by a predicate on the message as well as by its type (semantics.md §3). The mailbox side
(``take``/``first`` with patterns, against a model, traced and untraced) is in
test_mailbox.py (``SELECTORS``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from trioxide import traces
from trioxide.runtime import (
    Actor,
    ActorRef,
    Completed,
    Interrupted,
    ReceiveTimeout,
    open_runtime,
    pattern,
)


class Put(msgspec.Struct, frozen=True):
    target: str


class Begin(msgspec.Struct, frozen=True):
    pass


#: A stop request, and nothing else of its type.
STOP = pattern(Put, lambda m: m.target == "stop", name="StopPut")


class Starter(Actor):
    """``Begin`` starts a 100 s setup that only ``Put("stop")`` interrupts; other ``Put``s
    wait for it, and are then handled in their order."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def handle(self, msg: Begin | Put) -> object:
        if isinstance(msg, Begin):
            result = await self.serve_until(trio.sleep, 100, interrupt=(STOP,))
            if isinstance(result, Interrupted):
                self.log.append(f"interrupted by {result.msg.target} at {trio.current_time()}")
                self.reply(result.msg, "stopped the setup")
                return "setup aborted"
            assert isinstance(result, Completed)
            self.log.append(f"setup done at {trio.current_time()}")
            return "setup done"
        self.log.append(f"{msg.target} at {trio.current_time()}")
        return f"{msg.target} handled"


def _asking(ref: ActorRef, out: dict[str, object]) -> Callable[[str, object], Awaitable[None]]:
    """``ask(key, msg)``: ask *ref* *msg* and put the answer in ``out[key]``."""

    async def ask(key: str, msg: object) -> None:
        out[key] = await ref.ask(msg)

    return ask


@pytest.mark.parametrize("traced", [False, True])
async def test_serve_until_is_interrupted_only_by_a_message_its_pattern_matches(
    autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    sink = traces.MemorySink()
    async with open_runtime(tracer=traces.Tracer(sink) if traced else None) as rt:
        ref = await rt.spawn(Starter)
        out: dict[str, object] = {}
        ask = _asking(ref, out)
        async with trio.open_nursery() as n:
            n.start_soon(ask, "begin", Begin())
            await trio.sleep(1)
            await ref.tell(Put("reboot"))  # the same type, not matched: waits for the setup
            n.start_soon(ask, "run", Put("run"))
            await trio.sleep(1)
            n.start_soon(ask, "stop", Put("stop"))
        log = ref.instance.log if ref.instance is not None else []
        # The stop interrupted at t=2 although two Puts were queued before it; they stayed
        # queued, in order, and were handled after the setup's handler.
        assert log == ["interrupted by stop at 2.0", "reboot at 2.0", "run at 2.0"]
        assert out == {"begin": "setup aborted", "stop": "stopped the setup", "run": "run handled"}
    if traced:
        # The interrupt's receive names the stop's own send (not a Put queued before it).
        events = sink.events
        puts = [e.msg_id for e in events if e.kind == "send" and e.msg_type == "Put"]
        (interrupt,) = [e for e in events if e.kind == "receive" and e.detail == "interrupt"]
        assert interrupt.msg_id == puts[2]


async def test_without_a_matching_message_serve_until_completes(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Starter)
        out: dict[str, object] = {}
        ask = _asking(ref, out)
        async with trio.open_nursery() as n:
            n.start_soon(ask, "begin", Begin())
            await trio.sleep(1)
            n.start_soon(ask, "reboot", Put("reboot"))
        assert out == {"begin": "setup done", "reboot": "reboot handled"}
        assert ref.instance is not None
        assert ref.instance.log == ["setup done at 100.0", "reboot at 100.0"]


class Picker(Actor):
    """``Begin`` takes the first even ``Num`` with ``receive``, within 10 s."""

    def __init__(self) -> None:
        self.log: list[object] = []

    async def handle(self, msg: Begin | Num) -> None:
        if isinstance(msg, Begin):
            try:
                got = await self.receive(EVEN, timeout=10)
                self.log.append(("picked", got.n, trio.current_time()))
            except ReceiveTimeout as exc:
                self.log.append(("timeout", str(exc)))
        else:
            self.log.append(msg.n)


class Num(msgspec.Struct, frozen=True):
    n: int


EVEN = pattern(Num, lambda m: m.n % 2 == 0, name="EvenNum")


@pytest.mark.parametrize("traced", [False, True])
async def test_receive_takes_the_first_match_and_a_parked_receive_wakes_only_for_one(
    autojump_clock: trio.abc.Clock, traced: bool
) -> None:
    async with open_runtime(tracer=traces.Tracer(traces.MemorySink()) if traced else None) as rt:
        ref = await rt.spawn(Picker)
        await ref.tell(Begin())
        await wait_all_tasks_blocked()  # parked in receive(EVEN)
        for n in (1, 3, 5):
            await trio.sleep(1)
            await ref.tell(Num(n))  # odd: the receive stays parked
        await trio.sleep(1)
        await ref.tell(Num(4))
        await ref.tell(Num(6))
        await trio.sleep(1)
        assert ref.instance is not None
        assert ref.instance.log == [("picked", 4, 4.0), 1, 3, 5, 6]


async def test_a_receive_whose_pattern_never_matches_times_out_naming_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_runtime() as rt:
        ref = await rt.spawn(Picker)
        await ref.tell(Begin())
        await ref.tell(Num(1))
        await trio.sleep(20)
        assert ref.instance is not None
        (timeout, one) = ref.instance.log
        assert timeout[0] == "timeout" and "EvenNum" in timeout[1] and one == 1


def _not_13(m: Num) -> bool:
    if m.n == 13:
        raise ValueError("13 is unlucky")
    return m.n % 2 == 0


class Unlucky(Actor):
    handled: list[int] = []  # across incarnations

    async def handle(self, msg: Begin | Num) -> None:
        if isinstance(msg, Begin):
            await self.receive(pattern(Num, _not_13, name="Lucky"))
        else:
            Unlucky.handled.append(msg.n)


@pytest.mark.parametrize("parked", [True, False], ids=["parked", "searching"])
async def test_a_predicate_that_raises_fails_the_receiving_handler_never_the_sender(
    autojump_clock: trio.abc.Clock, parked: bool
) -> None:
    Unlucky.handled = []
    async with open_runtime() as rt:
        ref = await rt.spawn(Unlucky, restart="transient")
        await ref.tell(Begin())
        if parked:
            await wait_all_tasks_blocked()  # parked: the sender's put checks the pattern
        await ref.tell(Num(13))  # returns either way: the message is queued
        await wait_all_tasks_blocked()
        stats = ref.statistics()
        # The receive raised in the handler: the actor failed and was restarted, and the
        # message whose check raised was not lost - the next incarnation handled it.
        assert (stats.failures, stats.restarts, stats.state) == (1, 1, "running")
        assert Unlucky.handled == [13]
        await ref.stop()


def test_a_pattern_is_no_message_type_and_says_what_it_matches() -> None:
    assert isinstance(Num(2), EVEN) and not isinstance(Num(3), EVEN)
    assert not isinstance(Put("2"), EVEN)  # the predicate never sees another type
    assert isinstance(Num(3), (Put, EVEN, Num))  # inside a tuple, like any class
    assert not issubclass(Num, EVEN)  # matching depends on the value
    with pytest.raises(TypeError, match="EvenNum is a message pattern"):
        EVEN()
    assert repr(EVEN).startswith("<pattern EvenNum: Num if ")
    assert pattern(Num, bool).__name__ == "NumIf"
    with pytest.raises(TypeError, match="base must be a class, got 'Num'"):
        pattern("Num", bool)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="predicate must be callable, got 3"):
        pattern(Num, 3)  # type: ignore[arg-type]
