"""Tells Nexus about this sled, with generations (spec §4; upstream ``sled-agent/src/nexus.rs``,
``NexusNotifierTask``).

**Upstream facts.** One task with an inbox (256) of ``NotifyNexusAboutSelf`` and ``Status``.
State: ``known: None | NotFound | Found(info)`` (the last info read from or written to
Nexus), ``pending`` (starts true: the sled always learns the stored generation before it
upserts itself) and at most one outstanding request, run in a spawned task whose
completion is noticed by the main loop. A 2 s interval ticks only while pending; each tick
runs ``contact_nexus``:

* an outstanding request -> nothing (try again on the next tick);
* known ``None`` -> GET the sled;
* ``NotFound`` -> PUT the fresh info with generation 1;
* ``Found(k)``: ``k.decommissioned`` -> nothing, ever again (the "pumpkin"); fresh info
  (built with ``k.generation``) equal to ``k`` -> clear pending, ``cancelled += 1``;
  else PUT the fresh info with ``k.generation + 1``.

Replies: GET ok -> ``Found(info)``; PUT ok -> ``Found(sent)`` (pending is cleared on the
next tick, by the equality); GET 404 -> ``NotFound``; any other error -> known ``None``
(re-GET on the next tick). ``completed`` counters count errors too. Nexus accepts a PUT
only with a newer generation on a sled that is not decommissioned, so a conflict leads to a
re-GET, which shows a decommissioned sled, which stops the notifier. Triggers: startup and
a change of the VMM reservoir size. The fresh info reads the reservoir size when it is
built (upstream's ``get_sled_agent_info`` closure).

**Ours / decisions.**

* The request runs as a child task (``start_soon``); its outcome comes back as a
  ``NexusReply`` message, so every state change happens in ``handle``, one message at a
  time. A reply carries the incarnation and serial of its request; one that does not
  match the outstanding request is ignored (the mailbox survives a restart, so a queued
  reply - or tick - of the previous incarnation may reach the new one).
* The tick is ``send_every(tick, NotifierTick(incarnation, epoch))``, started when
  pending becomes true and cancelled when it is cleared (or the sled is decommissioned);
  ticks of a cancelled timer still queued are recognised by their epoch and dropped.
  When pending becomes true (startup, or a notification while idle) ``contact_nexus``
  runs **at once**, then on each tick. Upstream's ``tokio::time::interval`` (missed-tick
  behaviour ``Delay``) also ticks at once on startup and when re-enabled after more than
  2 s; re-enabled sooner, it waits for the rest of the period - we do not. So on an empty
  Nexus (zero latency): GET at t=0, PUT gen 1 at t=2, pending cleared at t=4.
* Decommissioned: the tick is cancelled, ``pending`` cleared, and every later
  ``NotifyNexusAboutSelf`` is ignored (counted in ``ignored``): no request is ever sent
  again by this incarnation (upstream keeps ticking and doing nothing). A restarted
  incarnation starts over, so it GETs once more, sees the record and stops again.
* ``errors`` counts requests that ended in an error other than a GET's 404. Only
  ``NexusError`` answers are errors; any other exception from the client is a bug and fails
  the actor (its child task raises).
* A reservoir ``Watch`` (any value type) is followed by a child task: every change after
  the first value sends ``NotifyNexusAboutSelf`` to this actor.
* ``status`` is a ``Watch[NotifierStatistics]`` updated after every handled message, so
  tests and other actors can wait for a state (``wait_for``) at an exact virtual time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from trioxide.runtime import Actor, ActorGone, TimerHandle, Watch

from .ports import NexusPort
from .sim.nexus import NexusError, NexusNotFound, SledInfo

__all__ = [
    "NexusNotifier",
    "NexusReply",
    "NotifierStatistics",
    "NotifierStatus",
    "NotifierTick",
    "NotifyNexusAboutSelf",
]

GET = "get"
PUT = "put"

# -- messages ----------------------------------------------------------------------------


class NotifyNexusAboutSelf(msgspec.Struct, frozen=True):
    """Tell: something Nexus should know may have changed; (re)start notifying."""


class NotifierStatus(msgspec.Struct, frozen=True):
    """Ask: a ``NotifierStatistics`` snapshot."""


class NotifierTick(msgspec.Struct, frozen=True):
    """Internal: the tick of the timer started by *incarnation* with this *epoch*."""

    incarnation: int
    epoch: int


class NexusReply(msgspec.Struct, frozen=True):
    """Internal: the outcome of request *serial* of *incarnation*. ``status`` 200 with
    ``info`` (the GET's answer or the PUT's sent info) on success, else the error's HTTP
    status and text."""

    incarnation: int
    serial: int
    op: str  # "get" | "put"
    status: int
    info: SledInfo | None = None
    detail: str = ""


class NotifierStatistics(msgspec.Struct, frozen=True):
    """The notifier's state and counters (upstream ``NexusNotifierTaskStatus``).

    ``known`` is ``"unknown"`` (None), ``"not_found"``, ``"found"`` or ``"decommissioned"``
    (found, and decommissioned: the notifier has stopped for good once it noticed it);
    ``known_info`` is the info of ``Found``; ``outstanding`` the op in flight, if any.
    """

    known: str
    known_info: SledInfo | None
    pending: bool
    outstanding: str | None
    stopped: bool
    get_started: int
    get_completed: int
    put_started: int
    put_completed: int
    cancelled: int
    errors: int
    ignored: int


# Known states: None (unknown), _NOT_FOUND, or the SledInfo Nexus holds.
class _NotFound:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NotFound"


_NOT_FOUND = _NotFound()
Known = SledInfo | _NotFound | None


# -- the actor ---------------------------------------------------------------------------


class NexusNotifier(Actor):
    """Keeps Nexus's record of this sled up to date (see the module docstring).

    Guarantees: at most one request to Nexus is outstanding; requests are only started on
    startup, on a notification while idle, or on a tick while pending; every PUT carries a
    generation greater than the one last known to be stored (1 when Nexus had none); once
    Nexus is seen to hold a decommissioned record, no request is ever sent again.
    """

    def __init__(
        self,
        nexus: NexusPort,
        base_info: SledInfo,
        reservoir_bytes: Callable[[], int] | None = None,
        reservoir_watch: Watch[Any] | None = None,
        tick: float = 2.0,
    ) -> None:
        if not tick > 0:
            raise ValueError(f"tick must be > 0, got {tick!r}")
        self.nexus = nexus
        self.base_info = base_info
        self.sled_id = base_info.sled_id
        self.reservoir_bytes = reservoir_bytes
        self.reservoir_watch = reservoir_watch
        self.tick = tick
        self.known: Known = None
        self.pending = True
        self.stopped = False
        self._incarnation = 0  # set in on_start: the restart count
        self._outstanding: tuple[int, int, str] | None = None  # (incarnation, serial, op)
        self._serial = 0
        self._timer: TimerHandle | None = None
        self._epoch = 0
        self.get_started = 0
        self.get_completed = 0
        self.put_started = 0
        self.put_completed = 0
        self.cancelled = 0
        self.errors = 0
        self.ignored = 0
        self.status: Watch[NotifierStatistics] = Watch(self.statistics())

    # -- lifecycle and messages -------------------------------------------------------

    async def on_start(self) -> None:
        self._incarnation = self.ref.statistics().restarts
        if self.reservoir_watch is not None:
            self.start_soon(self._follow_reservoir, self.reservoir_watch, name="reservoir")
        self._set_pending()  # startup triggers a notification
        self._publish()

    async def handle(
        self, msg: NotifyNexusAboutSelf | NotifierTick | NexusReply | NotifierStatus
    ) -> NotifierStatistics | None:
        match msg:
            case NotifyNexusAboutSelf():
                if self.stopped:
                    self.ignored += 1
                elif not self.pending:
                    self._set_pending()
            case NotifierTick(incarnation, epoch):
                current = incarnation == self._incarnation and epoch == self._epoch
                if current and self.pending and not self.stopped:
                    self._contact_nexus()
            case NexusReply():
                self._on_reply(msg)
            case NotifierStatus():
                return self.statistics()
        self._publish()
        return None

    # -- the state machine ------------------------------------------------------------

    def fresh_info(self, generation: int) -> SledInfo:
        """The info this sled would send now, with *generation*."""
        info = self.base_info
        reservoir = (
            self.reservoir_bytes()
            if self.reservoir_bytes is not None
            else info.reservoir_size_bytes
        )
        return msgspec.structs.replace(
            info, reservoir_size_bytes=reservoir, generation=generation, decommissioned=False
        )

    def _set_pending(self) -> None:
        """Pending becomes true: contact Nexus at once, then on every tick."""
        self.pending = True
        self._start_timer()
        self._contact_nexus()

    def _start_timer(self) -> None:
        if self._timer is None:
            self._epoch += 1
            self._timer = self.send_every(self.tick, NotifierTick(self._incarnation, self._epoch))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._epoch += 1  # a queued tick of the old timer is now stale

    def _contact_nexus(self) -> None:
        if self._outstanding is not None or self.stopped:
            return
        known = self.known
        if known is None:
            self._request(GET, None)
            return
        if isinstance(known, _NotFound):
            self._request(PUT, self.fresh_info(1))
            return
        if known.decommissioned:
            self.stopped = True  # the pumpkin: never contact Nexus again
            self.pending = False
            self._stop_timer()
            return
        info = self.fresh_info(known.generation)
        if info == known:
            self.pending = False
            self.cancelled += 1
            self._stop_timer()
            return
        self._request(PUT, self.fresh_info(known.generation + 1))

    def _request(self, op: str, info: SledInfo | None) -> None:
        self._serial += 1
        self._outstanding = (self._incarnation, self._serial, op)
        if op == GET:
            self.get_started += 1
        else:
            self.put_started += 1
        self.start_soon(self._call_nexus, self._outstanding, info, name=f"nexus-{op}")

    async def _call_nexus(self, request: tuple[int, int, str], info: SledInfo | None) -> None:
        incarnation, serial, op = request
        try:
            if info is None:
                got = await self.nexus.get_sled(self.sled_id)
            else:
                await self.nexus.put_sled(info)
                got = info
        except NexusError as exc:
            reply = NexusReply(incarnation, serial, op, exc.status, None, str(exc))
        else:
            reply = NexusReply(incarnation, serial, op, 200, got)
        await self._tell_self(reply)

    def _on_reply(self, reply: NexusReply) -> None:
        if self._outstanding != (reply.incarnation, reply.serial, reply.op):
            return  # not ours (a queued reply of a previous incarnation)
        self._outstanding = None
        if reply.op == GET:
            self.get_completed += 1
        else:
            self.put_completed += 1
        if reply.status == 200:
            self.known = reply.info
        elif reply.op == GET and reply.status == NexusNotFound.status:
            self.known = _NOT_FOUND
        else:
            self.errors += 1
            self.known = None

    async def _follow_reservoir(self, watch: Watch[Any]) -> None:
        first = True
        async for _ in watch.changes():
            if first:
                first = False
                continue
            await self._tell_self(NotifyNexusAboutSelf())

    async def _tell_self(self, msg: NotifyNexusAboutSelf | NexusReply) -> None:
        """From a child task; the mailbox closes before child tasks are cancelled on stop,
        so a send in that window is dropped rather than failing the stopping actor."""
        try:
            await self.ref.tell(msg)
        except ActorGone:
            return

    # -- observability ----------------------------------------------------------------

    def _publish(self) -> None:
        stats = self.statistics()
        if stats != self.status.value:
            self.status.set(stats)

    def statistics(self) -> NotifierStatistics:
        known = self.known
        if known is None:
            label, info = "unknown", None
        elif isinstance(known, _NotFound):
            label, info = "not_found", None
        else:
            label, info = ("decommissioned" if known.decommissioned else "found"), known
        outstanding = self._outstanding[2] if self._outstanding is not None else None
        return NotifierStatistics(
            known=label,
            known_info=info,
            pending=self.pending,
            outstanding=outstanding,
            stopped=self.stopped,
            get_started=self.get_started,
            get_completed=self.get_completed,
            put_started=self.put_started,
            put_completed=self.put_completed,
            cancelled=self.cancelled,
            errors=self.errors,
            ignored=self.ignored,
        )
