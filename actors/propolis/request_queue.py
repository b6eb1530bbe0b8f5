"""The external request queue's dispositions (propolis PR #880), as pure logic.

The ``StateDriver`` consults a :class:`RequestQueue` from its mailbox admission: every
request is enqueued, ignored (idempotent success) or denied at *send* time, and the
decision derives from the queue's memory of requests it accepted and has not yet seen
completed - never from a table reset by "now running" (the #879 bug).

The rules follow propolis ``bin/propolis-server/src/lib/vm/request_queue.rs`` (master
since 7cd7c880, 2025-03-11; see ``docs/upstream/propolis.md``). Notes:

* ``Stop`` is never denied: ignored once the VM is terminal or while an earlier stop is
  still awaited, queued otherwise - also before ``Start`` and while a migration out is
  pending. (A stop queued behind a migration out halts this VM if the migration fails;
  if it succeeds the VM is gone and the stop is dropped with the queue: upstream leaves
  directing stops to the migration target to the client.) A work-in-progress commit of
  the #880 branch denied it ``InvalidForMigrationSource``; that was reverted (152287d)
  before the merge and never shipped.
* **Ours:** ``MigrateAsSource`` while a start is pending is denied ``StartInProgress``
  (upstream enqueues it; its startup loop panics if it dequeues it before the block
  backends have started).
* Completion reports are checked like upstream's assertions; a report that does not fit
  the queue's memory raises ``RuntimeError``.
* Dequeue order (state changes before component changes) is the mailbox's priority, and
  dropping the queue (answering pending VCR requests ``Gone``) is the driver's drain hook.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Disposition", "QueueState", "RequestDenied", "RequestKind", "RequestQueue"]


class RequestKind(enum.Enum):
    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    MIGRATE_AS_SOURCE = "migrate_as_source"
    REPLACE_VCR = "replace_vcr"  # the only component change


class QueueState(enum.Enum):
    NOT_STARTED = "not_started"
    START_PENDING = "start_pending"
    RUNNING = "running"
    MIGRATED_OUT = "migrated_out"  # terminal
    STOPPED = "stopped"  # terminal
    FAILED = "failed"  # terminal


class DenyReason(enum.Enum):
    """Why a request was denied, with the message clients see."""

    INSTANCE_NOT_ACTIVE = "Operation requires an active instance"
    START_IN_PROGRESS = "Instance is currently starting"
    ALREADY_MIGRATION_SOURCE = "Instance is already a migration source"
    INVALID_FOR_MIGRATION_SOURCE = "Operation cannot be performed on a migration source"
    HALT_PENDING = "Instance is preparing to stop"
    MIGRATED_OUT = "Instance has migrated out and is being torn down"
    HALTED = "Instance has already halted"
    INSTANCE_FAILED = "Instance failed to start or halted due to a failure"

    @property
    def code(self) -> str:
        """The reason's name as the API spells it (``HaltPending``)."""
        return "".join(part.capitalize() for part in self.name.split("_"))


class RequestDenied(Exception):
    """A request the queue will never fulfil (HTTP 400 at the API layer)."""

    def __init__(self, kind: RequestKind, reason: DenyReason) -> None:
        super().__init__(kind, reason)
        self.kind = kind
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.kind.value} denied: {self.reason.code}: {self.reason.value}"


@dataclass(frozen=True)
class Disposition:
    """``enqueue`` (True: queue it; False: ignore it) or a denial reason."""

    enqueue: bool
    denied: DenyReason | None = None

    @property
    def ignored(self) -> bool:
        return not self.enqueue and self.denied is None


ENQUEUE = Disposition(True)
IGNORE = Disposition(False)

_TERMINAL = {
    QueueState.MIGRATED_OUT: DenyReason.MIGRATED_OUT,
    QueueState.STOPPED: DenyReason.HALTED,
    QueueState.FAILED: DenyReason.INSTANCE_FAILED,
}


class RequestQueue:
    """The dispositions and their memory. ``offer`` decides and records; the
    ``*_completed``/``stopped`` reports come from the driver when work finishes."""

    def __init__(self, *, auto_start: bool = False) -> None:
        self.state = QueueState.START_PENDING if auto_start else QueueState.NOT_STARTED
        self.awaiting_reboot = False
        self.awaiting_migration_out = False
        self.awaiting_stop = False

    def __repr__(self) -> str:
        flags = [
            name
            for name in ("awaiting_reboot", "awaiting_migration_out", "awaiting_stop")
            if getattr(self, name)
        ]
        return f"<RequestQueue {self.state.value} {' '.join(flags)}>"

    @property
    def terminal(self) -> bool:
        return self.state in _TERMINAL

    def disposition(self, kind: RequestKind) -> Disposition:
        """What would happen to *kind* now (first matching rule wins). No side effects."""
        deny = _TERMINAL.get(self.state)
        if deny is not None:
            return IGNORE if kind is RequestKind.STOP else Disposition(False, deny)
        state = self.state
        if kind is RequestKind.START:
            if self.awaiting_stop:
                return Disposition(False, DenyReason.HALT_PENDING)
            return ENQUEUE if state is QueueState.NOT_STARTED else IGNORE
        if kind is RequestKind.MIGRATE_AS_SOURCE:
            if self.awaiting_migration_out:
                return Disposition(False, DenyReason.ALREADY_MIGRATION_SOURCE)
            if self.awaiting_stop:
                return Disposition(False, DenyReason.HALT_PENDING)
            if state is QueueState.NOT_STARTED:
                return Disposition(False, DenyReason.INSTANCE_NOT_ACTIVE)
            if state is QueueState.START_PENDING:  # ours: upstream enqueues, then panics
                return Disposition(False, DenyReason.START_IN_PROGRESS)
            return ENQUEUE
        if kind is RequestKind.REBOOT:
            if self.awaiting_migration_out:
                return Disposition(False, DenyReason.INVALID_FOR_MIGRATION_SOURCE)
            if self.awaiting_stop:
                return Disposition(False, DenyReason.HALT_PENDING)
            if state is QueueState.NOT_STARTED:
                return Disposition(False, DenyReason.INSTANCE_NOT_ACTIVE)
            if state is QueueState.START_PENDING:
                return Disposition(False, DenyReason.START_IN_PROGRESS)
            return IGNORE if self.awaiting_reboot else ENQUEUE
        if kind is RequestKind.STOP:  # never denied, whatever else is pending
            return IGNORE if self.awaiting_stop else ENQUEUE
        return ENQUEUE  # REPLACE_VCR: always while not terminal

    def offer(self, kind: RequestKind) -> Disposition:
        """Decide on *kind* and, if it is enqueued, remember it."""
        d = self.disposition(kind)
        if d.enqueue:
            if kind is RequestKind.START:
                self.state = QueueState.START_PENDING
            elif kind is RequestKind.MIGRATE_AS_SOURCE:
                self.awaiting_migration_out = True
            elif kind is RequestKind.REBOOT:
                self.awaiting_reboot = True
            elif kind is RequestKind.STOP:
                self.awaiting_stop = True
        return d

    # -- completion reports from the driver ----------------------------------------

    def start_completed(self, ok: bool) -> None:
        self._expect(self.state is QueueState.START_PENDING, "start completed")
        self.state = QueueState.RUNNING if ok else QueueState.FAILED

    def reboot_completed(self) -> None:
        self._expect(self.awaiting_reboot and self.state is QueueState.RUNNING, "reboot completed")
        self.awaiting_reboot = False

    def migration_out_completed(self, ok: bool) -> None:
        self._expect(
            self.awaiting_migration_out and self.state is QueueState.RUNNING,
            "migration out completed",
        )
        self.awaiting_migration_out = False
        if ok:
            self.state = QueueState.MIGRATED_OUT

    def stop_completed(self) -> None:
        self._expect(self.awaiting_stop, "stop completed")
        self.awaiting_stop = False
        self.state = QueueState.STOPPED

    def stopped(self) -> None:
        """The VM stopped for a reason other than a Stop request (guest halt, aborted
        startup)."""
        self.state = QueueState.STOPPED

    def _expect(self, condition: bool, what: str) -> None:
        if not condition:
            raise RuntimeError(f"request queue: {what} reported in state {self!r}")
