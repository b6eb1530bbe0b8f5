"""``TestProbe``: an actor that records what it receives, with expectations on virtual time."""

from __future__ import annotations

from collections import deque
from typing import Any, TypeVar

import trio

from .._actor import Actor
from .._ref import ActorRef
from .._runtime import Runtime

__all__ = ["TestProbe", "spawn_probe"]

M = TypeVar("M")


class _ProbeActor(Actor):
    def __init__(self, probe: TestProbe) -> None:
        self.probe = probe

    async def handle(self, msg: Any) -> Any:  # any Struct (and Terminated)
        self.probe._deliver(msg)
        return self.probe.reply


class TestProbe:
    """Pass ``probe.ref`` to the actors under test, then assert on what arrives.

    * ``await probe.expect(Type, within=1.0)``: the **next** message not yet expected
      must be a ``Type`` and arrive within *within* seconds (Trio clock); returns it.
    * ``await probe.expect_no_message(within=1.0)``: nothing arrives for that long.
    * ``received``: every message ever received, in order. ``reply``: what asks get.
    """

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.reply: Any = None
        self._pending: deque[Any] = deque()
        self._arrived = trio.Event()
        self.ref: ActorRef = None  # type: ignore[assignment]  # set by spawn_probe

    def _deliver(self, msg: Any) -> None:
        self.received.append(msg)
        self._pending.append(msg)
        self._arrived.set()

    async def _next(self, within: float) -> Any | None:
        with trio.move_on_after(within):
            while not self._pending:
                self._arrived = trio.Event()
                await self._arrived.wait()
            return self._pending.popleft()
        return None

    async def expect(self, type_: type[M] = object, *, within: float = 1.0) -> M:  # type: ignore[assignment]
        start = trio.current_time()
        msg = await self._next(within)
        if msg is None:
            raise AssertionError(
                f"{self.ref.path}: expected {type_.__name__} within {within} s "
                f"(from t={start}), got nothing"
            )
        if not isinstance(msg, type_):
            now = trio.current_time()
            raise AssertionError(
                f"{self.ref.path}: expected {type_.__name__}, got {msg!r} at t={now}"
            )
        return msg

    async def expect_no_message(self, *, within: float = 1.0) -> None:
        msg = await self._next(within)
        if msg is not None:
            raise AssertionError(
                f"{self.ref.path}: expected no message for {within} s, got {msg!r} "
                f"at t={trio.current_time()}"
            )


async def spawn_probe(rt: Runtime, name: str = "probe", *, mailbox_size: int = 1024) -> TestProbe:
    """Spawn a probe actor in *rt* and return its ``TestProbe``."""
    probe = TestProbe()
    probe.ref = await rt.spawn(_ProbeActor, probe, name=name, mailbox_size=mailbox_size)
    return probe
