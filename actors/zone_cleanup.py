"""ZoneCleanup: bundle, halt and remove the zones of dead VMMs, off the runner (issue #5237).

**Upstream** (omicron ``sled-agent/src/instance.rs`` after #7928, per spec/sled-agent.md §2):
when a VMM halts, the ``InstanceRunner`` *itself* collects a zone bundle (expensive, and
serialized sled-wide), then halts and removes the zone (300 s timeout; on expiry it panics),
and only then publishes the terminal state, deregisters and drains its queue. While the
bundle runs the runner answers nothing: queued calls time out and Nexus marks the instance
``Failed`` (issue #5235: 25 minutes in teardown).

**Ours**: the runner publishes the terminal state, deregisters, hands the zone over with a
``CleanupZone`` tell and exits at once. This actor does the slow part, every zone as a
scoped child task (``start_soon``, traced as ``cleanup:<zone>``) that runs

1. (before the task exists) wait for one of ``max_concurrent`` slots: *pending*;
2. collect the zone bundle while holding the sled-wide bundle limiter (capacity 1): at most
   one bundle at a time; other cleanups halt and remove meanwhile. Optionally bounded by
   ``bundle_timeout`` (upstream has none; default ``None``);
3. halt the zone, bounded by ``halt_timeout`` (300 s as upstream): on expiry the step is
   recorded as ``"timeout"`` - never a panic;
4. remove the zone.

Both bounds are ``trio.CapacityLimiter``s, but the actor acquires them *on the job's
behalf*, synchronously, in queue order (a slot when one is free; the bundle turn when
the previous bundle ends). So slots and bundles are granted **strictly in queue order**,
independent of how the scheduler orders the tasks (tasks racing for a limiter would get
it in scheduling order). The queues are FIFO in hand-over order, except that **a cleanup
someone waits for goes first** (ours): a ``WaitCleaned`` moves its zone's cleanup ahead
of every one nobody waits for, in the slot queue and, once it has a slot, in the bundle
queue (waited-for ones keep the order they were first waited for). A new VMM's start
waits for its old zone's cleanup (``InstanceRunner``): behind a backlog of 30-minute
bundles in hand-over order that was hours; now it is at most the bundles already granted
a slot ahead of it.

Guarantees:

* **Every step is attempted**, whatever the previous one did: a failed bundle does not skip
  the halt, a timed-out halt does not skip the remove (which then fails, recorded, if the
  zone is still running). A step raising any ``Exception`` is recorded in the
  ``CleanupResult`` (``"failed"``) and counted; it never fails the actor. ``ZoneMissing``
  is recorded as ``"gone"``: the zone no longer exists, which is what cleanup wants.
* **Idempotent hand-over**: a ``CleanupZone`` for a name whose cleanup is pending or running
  is ignored (counted as a duplicate). Once it finished, a new one starts a new cleanup.
* **Never reported cleaned early**: the cleanup of a name ends - leaves the pending/running
  set, gets its result recorded, wakes its waiters - in the same step in which its remove
  step returned (or failed). ``WaitCleaned(zone)`` answers at once when nothing of that
  name is pending or running, otherwise exactly then; its reply is the ``CleanupResult``
  (check ``removed``) or ``None`` if no cleanup of the name is remembered.
* **The actor keeps serving while asks wait**: ``WaitCleaned`` waits inside
  ``serve_until``, handling ``CleanupZone`` and ``CleanupStatus`` meanwhile and taking
  further ``WaitCleaned`` asks as they come, so each waiter is answered at its own time.
  Messages are handled in mailbox order, so ``tell(CleanupZone(z))`` followed by
  ``ask(WaitCleaned(z))`` from one task waits for that cleanup.
* **Stop** cancels the in-flight cleanups (child tasks): they record no result (counted as
  ``cancelled``) and leave their zones as they are; waiting asks get ``ActorGone``.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from trioxide.runtime import Actor, Admit, Interrupted, Watch

from .sim.zones import SimZones, ZoneMissing

__all__ = [
    "RESULTS_KEPT",
    "CleanupResult",
    "CleanupSnapshot",
    "CleanupStatus",
    "CleanupZone",
    "StepResult",
    "WaitCleaned",
    "ZoneCleanup",
    "ZoneCleanupStatistics",
]

RESULTS_KEPT = 1024
"""How many finished cleanups (the latest per zone name) are remembered for ``WaitCleaned``
and ``CleanupStatus``; older ones are forgotten (``WaitCleaned`` then answers ``None``)."""

# -- messages ----------------------------------------------------------------------------


class CleanupZone(msgspec.Struct, frozen=True):
    """Tell: take over the defunct zone *zone* of VMM *propolis_id* (bundle, halt, remove).
    Ignored if a cleanup of that name is already pending or running."""

    zone: str
    propolis_id: str


class WaitCleaned(msgspec.Struct, frozen=True):
    """Ask: returns once no cleanup of *zone* is pending or running (at once if none);
    the reply is the latest ``CleanupResult`` of that name, or ``None``."""

    zone: str


class CleanupStatus(msgspec.Struct, frozen=True):
    """Ask: a ``CleanupSnapshot``."""


# -- replies -----------------------------------------------------------------------------


class StepResult(msgspec.Struct, frozen=True):
    """One step of a cleanup. ``outcome``: ``"ok"``, ``"gone"`` (the zone did not exist),
    ``"timeout"`` (abandoned after the step's timeout) or ``"failed"`` (``error`` says why)."""

    step: str
    outcome: str
    started: float
    finished: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "gone")


class CleanupResult(msgspec.Struct, frozen=True):
    """A finished cleanup. Times are on the Trio clock."""

    zone: str
    propolis_id: str
    handed_over: float
    started: float  # got its concurrency slot
    finished: float  # the remove step ended
    bundle: StepResult
    halt: StepResult
    remove: StepResult
    bundle_path: str | None = None

    @property
    def removed(self) -> bool:
        """The zone no longer exists (removed by us, or already gone)."""
        return self.remove.ok

    @property
    def failures(self) -> tuple[StepResult, ...]:
        return tuple(s for s in (self.bundle, self.halt, self.remove) if not s.ok)


class CleanupSnapshot(msgspec.Struct, frozen=True):
    """``CleanupStatus``'s reply. Names are in hand-over order; ``done`` holds the names of
    the latest remembered finished cleanups (oldest first), ``n_done`` counts all of them."""

    pending: tuple[str, ...]
    running: tuple[str, ...]
    done: tuple[str, ...]
    n_pending: int
    n_running: int
    n_done: int
    n_failed: int  # finished cleanups with at least one failed or timed-out step
    bundling: str | None


@dataclass(frozen=True)
class ZoneCleanupStatistics:
    received: int  # CleanupZone messages handled
    duplicates: int  # ... of them ignored (name already pending or running)
    pending: int
    running: int
    completed: int
    removed: int  # completed with the zone gone at the end
    failed: int  # completed with at least one failed or timed-out step
    cancelled: int  # in flight when the actor stopped
    halt_timeouts: int
    bundle_timeouts: int
    max_running: int  # the most cleanups holding a slot at once
    bundling: str | None
    waiters: int  # WaitCleaned asks waiting now


# -- the actor ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    zone: str
    propolis_id: str
    handed_over: float
    phase: str = "pending"  # pending | bundle-wait | bundling | halting | removing | done
    started: float = math.nan
    result: CleanupResult | None = None
    holds_bundle: bool = False
    waited: bool = False  # a WaitCleaned came for it: it goes first (``_expedite``)
    bundle_turn: trio.Event = field(default_factory=trio.Event)
    waiters: list[WaitCleaned] = field(default_factory=list)


_Op = Callable[[str], Awaitable[Any]]


def _queue_first(queue: deque[_Job], job: _Job) -> None:
    """Put *job* (waited for) behind the waited-for jobs at the front of *queue*, ahead of
    the others."""
    ahead = 0
    while ahead < len(queue) and queue[ahead].waited:
        ahead += 1
    queue.insert(ahead, job)


class ZoneCleanup(Actor):
    """Bundles, halts and removes handed-over zones with bounded concurrency (see module)."""

    def __init__(
        self,
        zones: SimZones,
        max_concurrent: int = 4,
        halt_timeout: float = 300.0,
        bundle_timeout: float | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent!r}")
        if not halt_timeout > 0:
            raise ValueError(f"halt_timeout must be > 0, got {halt_timeout!r}")
        if bundle_timeout is not None and not bundle_timeout > 0:
            raise ValueError(f"bundle_timeout must be > 0 or None, got {bundle_timeout!r}")
        self.zones = zones
        self.max_concurrent = max_concurrent
        self.halt_timeout = halt_timeout
        self.bundle_timeout = bundle_timeout
        self._slots = trio.CapacityLimiter(max_concurrent)
        self._bundle_lock = trio.CapacityLimiter(1)
        self._jobs: dict[str, _Job] = {}  # pending or running, in hand-over order
        # Zones handed over but not yet taken from the mailbox (admission counts them):
        # the zone is ours from the moment the hand-over is queued (see ``owns``).
        self._incoming: dict[str, int] = {}
        self._pending: deque[_Job] = deque()  # waiting for a slot
        self._bundle_queue: deque[_Job] = deque()  # have a slot, waiting for the bundle turn
        self._results: OrderedDict[str, CleanupResult] = OrderedDict()
        self._finished: Watch[int] = Watch(0)  # bumped when a cleanup finishes
        self._bundling: str | None = None
        self._waiting = 0
        self._received = 0
        self._duplicates = 0
        self._max_running = 0
        self._completed = 0
        self._removed = 0
        self._failed = 0
        self._cancelled = 0
        self._halt_timeouts = 0
        self._bundle_timeouts = 0

    def admit(self, msg: Any) -> Admit:
        if isinstance(msg, CleanupZone):
            self._incoming[msg.zone] = self._incoming.get(msg.zone, 0) + 1
        return Admit.ENQUEUE

    def owns(self, zone: str) -> bool:
        """Whether *zone* is this actor's to clean up: handed over (even if the hand-over
        is still queued) and not finished. The runner that hands a zone over stops owning
        it in the same step, so a zone always has exactly one owner."""
        return zone in self._jobs or zone in self._incoming

    async def handle(
        self, msg: CleanupZone | WaitCleaned | CleanupStatus
    ) -> CleanupResult | CleanupSnapshot | None:
        match msg:
            case CleanupZone(zone, propolis_id):
                self._hand_over(zone, propolis_id)
            case WaitCleaned():
                await self._wait_cleaned(msg)
            case CleanupStatus():
                return self._snapshot()
        return None

    # -- hand-over and waiting -------------------------------------------------------------

    def _hand_over(self, zone: str, propolis_id: str) -> None:
        left = self._incoming.pop(zone, 1) - 1
        if left:
            self._incoming[zone] = left
        self._received += 1
        if zone in self._jobs:
            self._duplicates += 1
            return
        job = _Job(zone, propolis_id, trio.current_time())
        self._jobs[zone] = job
        self._pending.append(job)
        self._dispatch()

    async def _wait_cleaned(self, first: WaitCleaned) -> None:
        """Answer *first* and every ``WaitCleaned`` arriving meanwhile (all with
        ``self.reply``) when the cleanup each refers to finished, serving the other
        messages in between."""
        waiting: list[_Job] = []

        def admit_waiter(w: WaitCleaned) -> None:
            job = self._jobs.get(w.zone)
            if job is None:
                self.reply(w, self._results.get(w.zone))
                return
            job.waiters.append(w)
            self._expedite(job)
            if job not in waiting:
                waiting.append(job)
            self._waiting += 1

        admit_waiter(first)
        try:
            while waiting:
                outcome = await self.serve_until(
                    self._until_finished,
                    tuple(waiting),
                    serve=(CleanupZone, CleanupStatus),
                    interrupt=(WaitCleaned,),
                )
                if isinstance(outcome, Interrupted):
                    admit_waiter(outcome.msg)
                for job in [j for j in waiting if j.result is not None]:
                    waiting.remove(job)
                    for w in job.waiters:
                        self.reply(w, job.result)
                    self._waiting -= len(job.waiters)
                    job.waiters.clear()
        finally:  # cancelled by stop: the runtime answers the taken asks with ActorGone
            self._waiting -= sum(len(j.waiters) for j in waiting)

    async def _until_finished(self, jobs: tuple[_Job, ...]) -> None:
        await self._finished.wait_for(lambda _: any(j.result is not None for j in jobs))

    # -- slots, the bundle turn, one cleanup ------------------------------------------------

    def _dispatch(self) -> None:
        """Start pending cleanups while slots are free, in hand-over order. Synchronous: the
        slot and the place in the bundle queue are taken on the job's behalf *here*, so the
        order never depends on how the scheduler orders the new tasks."""
        while self._pending and self._slots.available_tokens > 0:
            job = self._pending.popleft()
            self._slots.acquire_on_behalf_of_nowait(job)
            job.started = trio.current_time()
            job.phase = "bundle-wait"
            self._max_running = max(self._max_running, int(self._slots.borrowed_tokens))
            if job.waited:
                _queue_first(self._bundle_queue, job)
            else:
                self._bundle_queue.append(job)
            self._next_bundle()
            self.start_soon(self._cleanup, job, name=f"cleanup:{job.zone}")

    def _expedite(self, job: _Job) -> None:
        """*job* is waited for: ahead of every job nobody waits for in the queue it is in
        (the slot queue, or the bundle queue; later it keeps its place)."""
        if job.waited:
            return
        job.waited = True
        for queue in (self._pending, self._bundle_queue):
            if job in queue:
                queue.remove(job)
                _queue_first(queue, job)

    def _next_bundle(self) -> None:
        if self._bundle_queue and self._bundle_lock.available_tokens > 0:
            job = self._bundle_queue.popleft()
            self._bundle_lock.acquire_on_behalf_of_nowait(job)
            job.holds_bundle = True
            job.bundle_turn.set()

    def _release_bundle(self, job: _Job) -> None:
        if job.holds_bundle:
            job.holds_bundle = False
            self._bundle_lock.release_on_behalf_of(job)
            if self._bundling == job.zone:
                self._bundling = None
            self._next_bundle()

    async def _cleanup(self, job: _Job) -> None:
        zone = job.zone
        try:
            await job.bundle_turn.wait()
            job.phase = "bundling"
            self._bundling = zone
            try:
                bundle, path = await self._step(
                    zone, "bundle", self.zones.collect_bundle, self.bundle_timeout
                )
            finally:
                self._release_bundle(job)
            job.phase = "halting"
            halt, _ = await self._step(zone, "halt", self.zones.halt, self.halt_timeout)
            job.phase = "removing"
            remove, _ = await self._step(zone, "remove", self.zones.remove, None)
            # No checkpoint from here on: the remove step's end *is* the cleanup's end.
            self._finish(
                job,
                CleanupResult(
                    zone,
                    job.propolis_id,
                    job.handed_over,
                    job.started,
                    remove.finished,
                    bundle,
                    halt,
                    remove,
                    path if isinstance(path, str) else None,
                ),
            )
        finally:
            if job.result is None:  # cancelled: the actor is stopping
                self._cancelled += 1
                if job in self._bundle_queue:
                    self._bundle_queue.remove(job)
                self._release_bundle(job)
                self._slots.release_on_behalf_of(job)
                if self._jobs.get(zone) is job:
                    del self._jobs[zone]

    async def _step(
        self, zone: str, step: str, op: _Op, timeout: float | None
    ) -> tuple[StepResult, Any]:
        """Run one step; every ``Exception`` is recorded, never raised."""
        started = trio.current_time()
        value: Any = None
        error: str | None = None
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
                value = await op(zone)
        except ZoneMissing as exc:
            outcome, error = "gone", str(exc)
        except Exception as exc:
            outcome, error = "failed", f"{type(exc).__name__}: {exc}"
        else:
            if scope.cancelled_caught:
                outcome, error = "timeout", f"abandoned after {timeout} s"
                if step == "halt":
                    self._halt_timeouts += 1
                elif step == "bundle":
                    self._bundle_timeouts += 1
            else:
                outcome = "ok"
        return StepResult(step, outcome, started, trio.current_time(), error), value

    def _finish(self, job: _Job, result: CleanupResult) -> None:
        job.result = result
        job.phase = "done"
        if self._jobs.get(job.zone) is job:
            del self._jobs[job.zone]
        self._results.pop(job.zone, None)
        self._results[job.zone] = result
        while len(self._results) > RESULTS_KEPT:
            self._results.popitem(last=False)
        self._completed += 1
        self._removed += result.removed
        self._failed += bool(result.failures)
        self._finished.set(self._finished.value + 1)
        self._slots.release_on_behalf_of(job)
        self._dispatch()

    async def on_stop(self, reason: object) -> None:
        # Cleanups still waiting for a slot never started: they end with the actor.
        self._cancelled += len(self._pending)
        for job in self._pending:
            if self._jobs.get(job.zone) is job:
                del self._jobs[job.zone]
        self._pending.clear()

    # -- introspection ---------------------------------------------------------------------

    def _snapshot(self) -> CleanupSnapshot:
        pending = tuple(z for z, j in self._jobs.items() if j.phase == "pending")
        running = tuple(z for z, j in self._jobs.items() if j.phase != "pending")
        return CleanupSnapshot(
            pending=pending,
            running=running,
            done=tuple(self._results),
            n_pending=len(pending),
            n_running=len(running),
            n_done=self._completed,
            n_failed=self._failed,
            bundling=self._bundling,
        )

    def statistics(self) -> ZoneCleanupStatistics:
        """Counters (read from tests through ``ref.instance``)."""
        pending = sum(1 for j in self._jobs.values() if j.phase == "pending")
        return ZoneCleanupStatistics(
            received=self._received,
            duplicates=self._duplicates,
            pending=pending,
            running=len(self._jobs) - pending,
            completed=self._completed,
            removed=self._removed,
            failed=self._failed,
            cancelled=self._cancelled,
            halt_timeouts=self._halt_timeouts,
            bundle_timeouts=self._bundle_timeouts,
            max_running=self._max_running,
            bundling=self._bundling,
            waiters=self._waiting,
        )
