"""The external request queue's dispositions (spec/propolis.md §1, §4 scenarios 1-2)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioxide.actors.propolis.request_queue import (
    DenyReason,
    Disposition,
    QueueState,
    RequestKind,
    RequestQueue,
)

K = RequestKind
D = DenyReason
E, IGN = "enqueue", "ignore"


def outcome(d: Disposition) -> str | DenyReason:
    return E if d.enqueue else (IGN if d.denied is None else d.denied)


def queue(
    state: QueueState = QueueState.NOT_STARTED,
    *,
    reboot: bool = False,
    migrate: bool = False,
    stop: bool = False,
) -> RequestQueue:
    q = RequestQueue()
    q.state = state
    q.awaiting_reboot, q.awaiting_migration_out, q.awaiting_stop = reboot, migrate, stop
    return q


S = QueueState
TABLE = [
    # terminal states: Stop ignored, everything else denied with the state's reason
    *[(queue(S.MIGRATED_OUT), k, IGN if k is K.STOP else D.MIGRATED_OUT) for k in K],
    *[(queue(S.STOPPED), k, IGN if k is K.STOP else D.HALTED) for k in K],
    *[(queue(S.FAILED), k, IGN if k is K.STOP else D.INSTANCE_FAILED) for k in K],
    # Start
    (queue(S.NOT_STARTED, stop=True), K.START, D.HALT_PENDING),
    (queue(S.RUNNING, stop=True), K.START, D.HALT_PENDING),
    (queue(S.START_PENDING), K.START, IGN),
    (queue(S.RUNNING), K.START, IGN),
    (queue(S.NOT_STARTED), K.START, E),
    # MigrateAsSource
    (queue(S.RUNNING, migrate=True), K.MIGRATE_AS_SOURCE, D.ALREADY_MIGRATION_SOURCE),
    (queue(S.RUNNING, stop=True), K.MIGRATE_AS_SOURCE, D.HALT_PENDING),
    (queue(S.NOT_STARTED), K.MIGRATE_AS_SOURCE, D.INSTANCE_NOT_ACTIVE),
    (queue(S.START_PENDING), K.MIGRATE_AS_SOURCE, D.START_IN_PROGRESS),  # ours
    (queue(S.RUNNING), K.MIGRATE_AS_SOURCE, E),
    (queue(S.RUNNING, reboot=True), K.MIGRATE_AS_SOURCE, E),
    # Reboot
    (queue(S.RUNNING, migrate=True), K.REBOOT, D.INVALID_FOR_MIGRATION_SOURCE),
    (queue(S.RUNNING, stop=True), K.REBOOT, D.HALT_PENDING),
    (queue(S.NOT_STARTED), K.REBOOT, D.INSTANCE_NOT_ACTIVE),
    (queue(S.START_PENDING), K.REBOOT, D.START_IN_PROGRESS),
    (queue(S.RUNNING, reboot=True), K.REBOOT, IGN),
    (queue(S.RUNNING), K.REBOOT, E),
    # Stop: never denied (ignored while a stop is awaited), also with a migration out
    # pending - upstream request_queue.rs (see tests/sled/test_upstream_propolis.py)
    (queue(S.RUNNING, stop=True), K.STOP, IGN),
    (queue(S.RUNNING, migrate=True), K.STOP, E),
    (queue(S.RUNNING, migrate=True, reboot=True), K.STOP, E),
    (queue(S.NOT_STARTED), K.STOP, E),  # a Stop before Start is queued
    (queue(S.START_PENDING), K.STOP, E),
    (queue(S.RUNNING), K.STOP, E),
    # ReplaceVcr: always while not terminal
    (queue(S.NOT_STARTED), K.REPLACE_VCR, E),
    (queue(S.START_PENDING), K.REPLACE_VCR, E),
    (queue(S.RUNNING, stop=True), K.REPLACE_VCR, E),
    (queue(S.RUNNING, migrate=True, reboot=True), K.REPLACE_VCR, E),
]


@pytest.mark.parametrize(("q", "kind", "expected"), TABLE, ids=lambda v: repr(v))
def test_disposition_table(q: RequestQueue, kind: RequestKind, expected: object) -> None:
    assert outcome(q.disposition(kind)) == expected


def test_deny_messages_and_codes() -> None:
    assert D.HALT_PENDING.value == "Instance is preparing to stop"
    assert D.HALT_PENDING.code == "HaltPending"
    assert D.INSTANCE_FAILED.value == "Instance failed to start or halted due to a failure"
    assert D.START_IN_PROGRESS.code == "StartInProgress"


def enqueued(q: RequestQueue, kinds: list[RequestKind]) -> list[RequestKind]:
    return [k for k in kinds if q.offer(k).enqueue]


def test_start_twice_enqueues_one_and_stays_idempotent() -> None:
    q = RequestQueue()
    assert enqueued(q, [K.START, K.START]) == [K.START]
    q.start_completed(True)
    assert outcome(q.offer(K.START)) == IGN


def test_five_reboots_enqueue_one_then_another_after_completion() -> None:
    q = RequestQueue(auto_start=True)
    q.start_completed(True)
    assert enqueued(q, [K.REBOOT] * 5) == [K.REBOOT]
    q.reboot_completed()
    assert enqueued(q, [K.REBOOT]) == [K.REBOOT]


def test_stop_twice_enqueues_one() -> None:
    q = RequestQueue(auto_start=True)
    q.start_completed(True)
    assert enqueued(q, [K.STOP, K.STOP]) == [K.STOP]


def test_stop_after_failure_is_ignored() -> None:
    q = RequestQueue(auto_start=True)
    q.start_completed(False)
    assert outcome(q.offer(K.STOP)) == IGN


def test_vcr_after_stopped_is_halted() -> None:
    q = RequestQueue(auto_start=True)
    q.start_completed(True)
    q.offer(K.STOP)
    q.stop_completed()
    assert outcome(q.offer(K.REPLACE_VCR)) == D.HALTED


def test_migrate_is_not_idempotent() -> None:
    q = RequestQueue(auto_start=True)
    q.start_completed(True)
    assert outcome(q.offer(K.MIGRATE_AS_SOURCE)) == E
    assert outcome(q.offer(K.MIGRATE_AS_SOURCE)) == D.ALREADY_MIGRATION_SOURCE
    q.migration_out_completed(False)
    assert outcome(q.offer(K.MIGRATE_AS_SOURCE)) == E
    q.migration_out_completed(True)
    assert outcome(q.offer(K.MIGRATE_AS_SOURCE)) == D.MIGRATED_OUT


def test_issue_879_start_stop_then_start_completes_keeps_halt_pending() -> None:
    q = RequestQueue()
    assert enqueued(q, [K.START, K.STOP]) == [K.START, K.STOP]
    q.start_completed(True)  # "now running" must not forget the queued Stop
    assert outcome(q.offer(K.REBOOT)) == D.HALT_PENDING
    assert outcome(q.offer(K.MIGRATE_AS_SOURCE)) == D.HALT_PENDING
    assert outcome(q.offer(K.START)) == D.HALT_PENDING


def test_reboot_then_stop_denies_later_reboots_even_after_reboot_completes() -> None:
    q = RequestQueue(auto_start=True)
    q.start_completed(True)
    assert enqueued(q, [K.REBOOT, K.STOP, K.REBOOT]) == [K.REBOOT, K.STOP]
    q.reboot_completed()
    assert outcome(q.offer(K.REBOOT)) == D.HALT_PENDING


def test_completion_reports_out_of_order_are_loud() -> None:
    q = RequestQueue()
    with pytest.raises(RuntimeError, match="start completed"):
        q.start_completed(True)
    with pytest.raises(RuntimeError, match="stop completed"):
        q.stop_completed()


# -- a property test against a reference model -------------------------------------------


@dataclass
class Model:
    """The queue re-derived from history: which accepted requests are still unfinished.

    Written from the spec's prose, not from RequestQueue: flags are "an accepted request
    of that kind is queued or being processed".
    """

    state: QueueState = QueueState.NOT_STARTED
    unfinished: list[RequestKind] = field(default_factory=list)  # queued + in progress

    def has(self, kind: RequestKind) -> bool:
        return kind in self.unfinished

    def decide(self, kind: RequestKind) -> str | DenyReason:
        terminal = {
            QueueState.MIGRATED_OUT: D.MIGRATED_OUT,
            QueueState.STOPPED: D.HALTED,
            QueueState.FAILED: D.INSTANCE_FAILED,
        }
        if self.state in terminal:
            return IGN if kind is K.STOP else terminal[self.state]
        not_active = self.state is QueueState.NOT_STARTED
        starting = self.state is QueueState.START_PENDING
        rules: dict[RequestKind, list[tuple[bool, str | DenyReason]]] = {
            K.START: [(self.has(K.STOP), D.HALT_PENDING), (not not_active, IGN)],
            K.MIGRATE_AS_SOURCE: [
                (self.has(K.MIGRATE_AS_SOURCE), D.ALREADY_MIGRATION_SOURCE),
                (self.has(K.STOP), D.HALT_PENDING),
                (not_active, D.INSTANCE_NOT_ACTIVE),
                (starting, D.START_IN_PROGRESS),
            ],
            K.REBOOT: [
                (self.has(K.MIGRATE_AS_SOURCE), D.INVALID_FOR_MIGRATION_SOURCE),
                (self.has(K.STOP), D.HALT_PENDING),
                (not_active, D.INSTANCE_NOT_ACTIVE),
                (starting, D.START_IN_PROGRESS),
                (self.has(K.REBOOT), IGN),
            ],
            K.STOP: [(self.has(K.STOP), IGN)],
            K.REPLACE_VCR: [],
        }
        for condition, result in rules[kind]:
            if condition:
                return result
        return E


ops = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.sampled_from(list(K))),
        st.tuples(st.just("complete"), st.booleans()),
        st.tuples(st.just("guest_stop"), st.just(False)),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(ops)
def test_queue_matches_reference_model(program: list[tuple[str, object]]) -> None:
    q = RequestQueue()
    m = Model()
    queued: list[RequestKind] = []  # what the real queue would dequeue, state changes first
    for op, arg in program:
        if op == "offer":
            assert isinstance(arg, RequestKind)
            got = outcome(q.offer(arg))
            assert got == m.decide(arg), (program, op, arg)
            if got == E:
                m.unfinished.append(arg)
                if arg is K.START:
                    m.state = QueueState.START_PENDING
                queued.append(arg)
        elif op == "complete":
            if q.terminal:
                continue
            state_changes = [k for k in queued if k is not K.REPLACE_VCR]
            nxt = state_changes[0] if state_changes else (queued[0] if queued else None)
            if nxt is None:
                continue
            queued.remove(nxt)
            m.unfinished.remove(nxt)
            ok = bool(arg)
            if nxt is K.START:
                q.start_completed(ok)
                m.state = QueueState.RUNNING if ok else QueueState.FAILED
            elif nxt is K.REBOOT:
                q.reboot_completed()
            elif nxt is K.MIGRATE_AS_SOURCE:
                q.migration_out_completed(ok)
                if ok:
                    m.state = QueueState.MIGRATED_OUT
            elif nxt is K.STOP:
                if m.state is QueueState.START_PENDING:
                    # a Stop dequeued while starting aborts the start (driver: stopped())
                    q.stopped()
                else:
                    q.stop_completed()
                m.state = QueueState.STOPPED
        else:  # the guest halts a running VM
            if q.state is QueueState.RUNNING:
                q.stopped()
                m.state = QueueState.STOPPED
        assert q.state is m.state
