"""One shared timer task for every ask timeout in a runtime.

A cancel scope per ask costs about as much as the ask itself. Instead every timed ask
is appended to a *lane* keyed by its timeout value: within a lane deadlines almost
always arrive in non-decreasing order (the clock never goes back), so the lane head is
the earliest and append/expire are O(1). (An ask that first waited for mailbox space
registers late; it is inserted in order, walking back from the tail.) The timer task
sleeps until the earliest head among the lanes (a handful: programs use few distinct
timeouts). Finished asks are pruned lazily from the lane heads: when the timer wakes,
and when a lane reaches ``PRUNE_AT`` entries (so a steady stream of fast asks keeps each
lane short without paying a pop per ask).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import trio

from ._mailbox import DONE, Envelope

__all__ = ["DeadlineQueue"]


class DeadlineQueue:
    __slots__ = ("_expire", "_lanes", "_next", "_scope")

    #: Finished asks are pruned from a lane's head once it holds this many entries.
    PRUNE_AT = 32

    def __init__(self, expire: Callable[[Envelope], None]) -> None:
        self._expire = expire
        self._lanes: dict[float, deque[Envelope]] = {}
        self._next = math.inf
        self._scope: trio.CancelScope | None = None

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    def add(self, env: Envelope, timeout: float, deadline: float) -> None:
        env.timeout = timeout
        env.deadline = deadline
        lane = self._lanes.get(timeout)
        if lane is None:
            lane = self._lanes[timeout] = deque()
        elif len(lane) >= self.PRUNE_AT:
            while lane and lane[0].state >= DONE:
                lane.popleft()
        if lane and lane[-1].deadline > deadline:
            # An ask computes its deadline before waiting for mailbox space, so it can
            # arrive after a later deadline of the same lane: keep the lane sorted.
            i = len(lane)
            while i > 0 and lane[i - 1].deadline > deadline:
                i -= 1
            lane.insert(i, env)
        else:
            lane.append(env)
        if deadline < self._next:
            self._next = deadline
            if self._scope is not None:
                self._scope.deadline = deadline

    async def run(self) -> None:
        """The timer task; runs until cancelled."""
        while True:
            with trio.CancelScope(deadline=self._next) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            nxt = math.inf
            for key in list(self._lanes):
                lane = self._lanes[key]
                while lane:
                    env = lane[0]
                    if env.state >= DONE:
                        lane.popleft()
                    elif env.deadline <= now:
                        lane.popleft()
                        self._expire(env)
                    else:
                        break
                if lane:
                    nxt = min(nxt, lane[0].deadline)
                else:
                    del self._lanes[key]
            self._next = nxt
