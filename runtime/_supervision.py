"""Supervision: how a child actor is run and restarted, declared once.

:class:`ChildSpec` holds the spawn options (mailbox size, restart policy, intensity and
backoff) and validates them when it is built; :class:`SpawnOptions` is the same set as
keyword arguments of ``spawn`` (a test keeps the two in step). :class:`RestartIntensity`
is the sliding window that decides whether one more restart is allowed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal, TypedDict

__all__ = ["Backoff", "ChildSpec", "RestartIntensity", "RestartPolicy", "SpawnOptions"]

RestartPolicy = Literal["permanent", "transient", "temporary"]
#: Seconds to wait before a restart, or ``fn(n) -> seconds`` for the n-th restart.
Backoff = float | Callable[[int], float] | None

_POLICIES = (None, "permanent", "transient", "temporary")


class SpawnOptions(TypedDict, total=False):
    """The keyword arguments ``spawn`` accepts besides ``name`` (see :class:`ChildSpec`)."""

    mailbox_size: int
    restart: RestartPolicy | None
    max_restarts: int
    within: float
    backoff: Backoff


def _finite_seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How one actor runs under its supervisor (validated on construction).

    * ``mailbox_size``: queued messages allowed (the one being handled not counted).
    * ``restart``: ``None`` (never restarted; a failure escalates to the parent),
      ``"permanent"``/``"transient"`` (restarted after an exception, up to
      ``max_restarts`` within ``within`` seconds, then the failure escalates),
      ``"temporary"`` (never restarted; a failure only reaches monitors).
    * ``backoff``: seconds to wait before a restart, or ``fn(n) -> seconds``.
    """

    mailbox_size: int = 1024
    restart: RestartPolicy | None = None
    max_restarts: int = 3
    within: float = 5.0
    backoff: Backoff = None

    def __post_init__(self) -> None:
        size = self.mailbox_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"mailbox_size must be a positive int, got {size!r}")
        if self.restart not in _POLICIES:
            raise ValueError(f"restart must be one of {_POLICIES}, got {self.restart!r}")
        n = self.max_restarts
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"max_restarts must be an int >= 0, got {n!r}")
        if not (_finite_seconds(self.within) and self.within > 0):
            raise ValueError(f"within must be a finite number of seconds > 0, got {self.within!r}")
        b = self.backoff
        if not (b is None or callable(b) or _finite_seconds(b)):
            raise ValueError(
                f"backoff must be None, seconds >= 0 or a function of the restart count, got {b!r}"
            )

    def backoff_delay(self, n: int) -> float:
        """Seconds to wait before the *n*-th restart (a callable's answer is checked)."""
        b = self.backoff
        if b is None:
            return 0.0
        if not callable(b):
            return float(b)
        delay = b(n)
        if not _finite_seconds(delay):
            raise ValueError(f"backoff({n}) must return seconds >= 0, got {delay!r}")
        return float(delay)


#: The option names, for ``spawn``'s error message on an unknown keyword.
SPAWN_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(ChildSpec))


class RestartIntensity:
    """At most ``max_restarts`` restarts within any ``within`` seconds (Trio clock)."""

    __slots__ = ("_times", "max_restarts", "within")

    def __init__(self, max_restarts: int, within: float) -> None:
        self.max_restarts = max_restarts
        self.within = within
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Record a restart at *now* and return True, or False if that would exceed it."""
        times = self._times
        while times and times[0] <= now - self.within:
            times.popleft()
        if len(times) >= self.max_restarts:
            return False
        times.append(now)
        return True
