"""``Watch[T]``: a value that tasks can wait on, with latest-value semantics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from trio.lowlevel import ParkingLot, checkpoint

from ._context import current_cell, current_runtime

__all__ = ["Watch", "WatchStatistics"]

T = TypeVar("T")


@dataclass(frozen=True)
class WatchStatistics:
    version: int
    tasks_waiting: int


class Watch(Generic[T]):
    """A single value plus change notification.

    * ``value`` is the current value; ``version`` counts ``set`` calls (starts at 0).
    * ``set(v)`` is synchronous and wakes every waiter; it never blocks and never lags.
    * ``await wait_for(pred)`` returns the first value (current, or a later one) for which
      ``pred(value)`` is true - the value that satisfied it, even if it changed since.
    * ``async for v in changes()`` yields the current value at once, then the latest value
      after each change; a slow consumer skips intermediate values (it never lags).

    A named watch records a ``watch_set`` trace event when set inside a runtime.
    """

    __slots__ = ("_lot", "_value", "_version", "name")

    def __init__(self, initial: T, *, name: str | None = None) -> None:
        self._value = initial
        self._version = 0
        self._lot = ParkingLot()
        self.name = name

    def __repr__(self) -> str:
        label = f" {self.name}" if self.name else ""
        return f"<Watch{label} v{self._version} {self._value!r}>"

    @property
    def value(self) -> T:
        return self._value

    @property
    def version(self) -> int:
        return self._version

    def set(self, value: T) -> None:
        self._value = value
        self._version += 1
        if self._lot:
            self._lot.unpark_all()
        if self.name is not None:
            rt = current_runtime.get()
            if rt is not None and rt.tracer is not None:
                cell = current_cell.get()
                rt.tracer.watch_set(
                    cell.path if cell else rt.name,
                    cell.cause_id() if cell else None,
                    f"{self.name} = {value!r:.200}",
                )

    async def wait_for(self, pred: Callable[[T], bool]) -> T:
        await checkpoint()
        while True:
            value = self._value
            if pred(value):
                return value
            await self._lot.park()

    async def wait_changed(self, since_version: int) -> T:
        """Wait until ``version > since_version``; returns the value then."""
        await checkpoint()
        while self._version <= since_version:
            await self._lot.park()
        return self._value

    def changes(self) -> _Changes[T]:
        return _Changes(self)

    def statistics(self) -> WatchStatistics:
        return WatchStatistics(self._version, len(self._lot))


class _Changes(Generic[T]):
    __slots__ = ("_seen", "_watch")

    def __init__(self, watch: Watch[T]) -> None:
        self._watch = watch
        self._seen = -1

    def __aiter__(self) -> _Changes[T]:
        return self

    async def __anext__(self) -> T:
        w = self._watch
        if self._seen == w._version:
            await w.wait_changed(self._seen)
        else:
            await checkpoint()
        self._seen = w._version
        return w._value
