"""The checker: an ``Observation`` against the runtime's guarantees (pure, no Trio).

Each failure names its guarantee (``G1``..``G6``, as in the fuzzer's brief and
``docs/semantics.md``), a short kind (what ``--scenarios`` groups by) and the detail:

* G1 no-hang: the run finished before ``world.HANG_AT`` (virtual) and within the
  wall-clock limit.
* G2 every-ask-ends: every ask ended, with an outcome that is allowed and consistent with
  what happened to its message (its own reply, its handler's exception, the drain answer,
  ``AskTimeout`` on time, ``ActorGone``, the admission's/priority hook's exception,
  ``UnhandledMessage``, ``AskDeadlock`` for a cycle, or its own cancellation).
* G3 nothing-lost-nothing-twice: every accepted message was handled, taken or drained
  exactly once, by its own actor (withdrawn asks: none of those); in traced runs the
  trace agrees.
* G4 nothing-left-behind: no runtime task, live ref, blocked sender, reserved slot or
  queued message is left after ``open_runtime`` exited; no driver task stays blocked.
* G5 supervision: restart policies and intensity, escalation, ``Terminated`` once per
  monitor with the exit reason, exit reason = the last incarnation's exception, handler /
  task / hook exceptions fail (or do not fail) the actor as documented.
* G6 stop-rules: nothing handled or taken after a stop request, no restart after it,
  ``receive`` cancelled at once, grace honoured (children within the parent's grace),
  a stop during backoff ends the actor at once.
* G7 flight-recorder (traced runs): every ``fail`` asked for a dump (written, or skipped
  while another was being written), none failed; each dump reads back whole, ends with
  its ``fail``, is named after its actor and seq and holds exactly the full trace's
  events for its seqs, contiguous; the recorder's records stay within its byte bound
  (counted here from the records themselves, not from its own bookkeeping).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
import trio

import trioxide
from trioxide.runtime import ActorGone, AskTimeout, MailboxFull, UnhandledMessage
from trioxide.traces import describe

from .records import CellRec, HandlerRec, MsgRec, Observation
from .scenario import NARROW_KINDS, Scenario
from .world import (
    HANG_AT,
    AskDeadlock,
    DrainedError,
    DrainedValue,
    HandlerError,
    IgnoredReply,
    Reply,
    TakenReply,
    contains,
    leaves,
)

G0 = "G0 harness"
G1 = "G1 no-hang"
G2 = "G2 every-ask-ends"
G3 = "G3 nothing-lost-nothing-twice"
G4 = "G4 nothing-left-behind"
G5 = "G5 supervision"
G6 = "G6 stop-rules"
G7 = "G7 flight-recorder"

#: Kinds of world exceptions that make an incarnation fail (and so may cancel others).
FAILING_KINDS = ("handler-tell", "task", "on_start", "on_stop", "body")


@dataclass(frozen=True)
class Failure:
    check: str
    kind: str
    detail: str

    @property
    def key(self) -> str:
        """What failures are grouped by."""
        return f"{self.check}/{self.kind}"

    def render(self, seed: int, traced: bool) -> str:
        mode = "traced" if traced else "untraced"
        return f"{self.key} [seed {seed}, {mode}]: {self.detail}"


def key_of(rendered: str) -> str:
    """The group key of a rendered failure (``Failure.render``)."""
    return rendered.split(" [seed ", 1)[0]


class _Out:
    def __init__(self) -> None:
        self.items: list[Failure] = []

    def add(self, check: str, kind: str, detail: str) -> None:
        self.items.append(Failure(check, kind, detail))


def check(sc: Scenario, obs: Observation) -> list[Failure]:
    """Every guarantee violated by the run *obs* of scenario *sc* (empty: all held)."""
    out = _Out()
    if obs.internal_error is not None:
        out.add(G0, "harness-error", f"the run itself failed: {obs.internal_error}")
        return out.items
    if obs.wall_timeout:
        out.add(G1, "wall-clock-hang", "the run made no progress in wall-clock time")
        return out.items
    if obs.hang:
        kind = "hang-ask-cycle" if obs.hang_cycles else "hang"
        what = "; ".join(obs.hang_snapshot[:10]) or "nothing recorded"
        out.add(G1, kind, f"not finished at t={HANG_AT:g} (virtual): {what}")
        return out.items
    _check_asks(sc, obs, out)
    _check_tells(sc, obs, out)
    _check_accounting(obs, out)
    if obs.traced:
        _check_trace(obs, out)
    if obs.flight is not None:
        _check_flight(obs, out)
    _check_left_behind(obs, out)
    _check_supervision(sc, obs, out)
    _check_stops(obs, out)
    return out.items


# -- helpers -------------------------------------------------------------------------------


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _d(obj: object) -> str:
    """An object for a failure text, without memory addresses (``describe``, and scrubbed:
    an exception may carry a ``Cancelled`` whose repr names a task by address), so that a
    seed's failures are the same text in every process."""
    text = describe(obj) if isinstance(obj, BaseException) else repr(obj)
    return _ADDRESS.sub("", text)


def _fate(rec: MsgRec) -> str | None:
    return rec.fates[0].kind if len(rec.fates) == 1 else None


def _hook_refused(rec: MsgRec) -> bool:
    """Admission or priority refused the message at send time (nothing may be queued)."""
    return rec.admit is not None or rec.priority is not None


def _hook_problem(rec: MsgRec) -> str | None:
    """If the admission/priority hook decided the send's fate: what went wrong, if anything."""
    e = rec.exc
    if rec.admit in ("reject", "reject-custom", "raise"):
        if e is not rec.admit_exc:
            return (
                f"admission raised/rejected with {_d(rec.admit_exc)}; "
                f"the sender got {_outcome(rec)}"
            )
    elif rec.admit == "bad":
        if not (isinstance(e, TypeError) and not isinstance(e, UnhandledMessage)):
            return f"admit() returned a non-Admit; the sender got {_outcome(rec)}, not TypeError"
    elif rec.admit == "ignore":
        want = "ok" if rec.op != "ask" else "value"
        if rec.result != want or (rec.op == "ask" and rec.value != IgnoredReply(rec.id)):
            return f"admission ignored it; the sender got {_outcome(rec)}"
    elif rec.priority == "raise":
        if e is not rec.priority_exc:
            return f"priority() raised {_d(rec.priority_exc)}; the sender got {_outcome(rec)}"
    elif rec.priority == "bad":
        if not (isinstance(e, TypeError) and not isinstance(e, UnhandledMessage)):
            return f"priority() returned a non-int; the sender got {_outcome(rec)}, not TypeError"
    return None


def _outcome(rec: MsgRec) -> str:
    if rec.result == "value":
        return f"the value {_d(rec.value)}"
    if rec.result == "error":
        return _d(rec.exc)
    if rec.result == "cancelled":
        return f"Cancelled ({rec.cancel_source})"
    return str(rec.result)


def _cycle_text(cycle: list[CellRec]) -> str:
    return " -> ".join(c.path for c in [*cycle, cycle[0]])


def _unhandled_expected(sc: Scenario, rec: MsgRec) -> bool:
    return rec.target.spec >= 0 and sc.actors[rec.target.spec].narrow and (
        rec.kind not in NARROW_KINDS
    )


# -- G2: every ask ends ----------------------------------------------------------------------


def _check_asks(sc: Scenario, obs: Observation, out: _Out) -> None:
    blocked = bool(obs.blocked_drivers)
    for rec in obs.msgs.values():
        if rec.op != "ask":
            continue
        label = rec.label()
        if rec.result is None:
            if not (blocked and rec.origin_cell is None):  # else reported as G4
                out.add(G2, "ask-never-ended", f"{label} never ended")
            continue
        end_t = rec.end_t if rec.end_t is not None else rec.start_t
        hook = _hook_problem(rec)
        if hook is not None:
            out.add(G2, "hook-outcome", f"{label}: {hook}")
            continue
        if _hook_refused(rec):
            continue
        # An ask that closes a cycle of waiting actors must fail at once with AskDeadlock
        # (unless it was refused at send time for another reason first).
        if rec.cycle is not None and not isinstance(rec.exc, AskDeadlock | UnhandledMessage):
            cyc = _cycle_text(rec.cycle)
            if rec.result == "error" and isinstance(rec.exc, AskTimeout):
                persisted = all(
                    link.end_t is None or link.end_t >= end_t for link in rec.cycle_links
                )
                if persisted and end_t > rec.start_t:
                    out.add(G2, "missed-deadlock",
                            f"{label} closed the wait cycle {cyc} at t={rec.start_t:g} and "
                            f"timed out at t={end_t:g} instead of failing at once with "
                            "AskDeadlock")  # fmt: skip
                    continue
            elif len(rec.cycle) == 1 and rec.result == "error" and not (
                isinstance(rec.exc, ActorGone) and not rec.fates
            ):
                out.add(G2, "self-ask-not-deadlock",
                        f"{label}: an actor asked itself from its own task and got "
                        f"{_d(rec.exc)}, not AskDeadlock")  # fmt: skip
                continue
        problem = _ask_problem(sc, rec, end_t)
        if problem is not None:
            kind, detail = problem
            out.add(G2, kind, f"{label}: {detail}")


def _ask_problem(sc: Scenario, rec: MsgRec, end_t: float) -> tuple[str, str] | None:
    fate = _fate(rec)
    taker = rec.fates[0].by if fate == "taken" else None
    v, e = rec.value, rec.exc
    if rec.timeout is not None and rec.result != "cancelled" and end_t > rec.start_t + rec.timeout:
        if not isinstance(e, AskTimeout):
            return "late-timeout", (
                f"timeout={rec.timeout:g} started at t={rec.start_t:g}, yet it ended at "
                f"t={end_t:g} with {_outcome(rec)}"
            )
    if rec.scoped is not None and rec.result != "cancelled" and end_t > rec.start_t + rec.scoped:
        return "cancel-ignored", (
            f"its scope was cancelled at t={rec.start_t + rec.scoped:g}, yet it ended at "
            f"t={end_t:g} with {_outcome(rec)}"
        )
    if rec.scoped == 0 and rec.result == "value":
        return "cancel-ignored", f"asked in a cancelled scope, yet it ended with {_outcome(rec)}"
    if rec.result == "cancelled":
        if rec.cancel_source in ("own", "handler", "teardown"):
            return None
        return "unexpected-outcome", f"Cancelled from {rec.cancel_source}"
    if rec.result == "value":
        if isinstance(v, Reply) and v.id == rec.id and fate == "handled":
            return None
        if isinstance(v, TakenReply) and v.id == rec.id and fate == "taken":
            return None
        if isinstance(v, DrainedValue) and v.id == rec.id and fate == "drained":
            return None
        if v is None and fate == "taken":
            return None
        return "wrong-reply", f"got {_d(v)} but its message was {fate or 'never handled'}"
    assert rec.result == "error" and e is not None
    if isinstance(e, AskDeadlock):
        if rec.cycle is None:
            return "spurious-deadlock", f"got {_d(e)} but no ask cycle existed"
        if end_t != rec.start_t:
            return "deadlock-not-at-once", (
                f"AskDeadlock came at t={end_t:g}, not at once (t={rec.start_t:g})"
            )
        if rec.fates:
            return "deadlock-but-queued", f"AskDeadlock, yet its message was {fate}"
        missing = [c.path for c in rec.cycle if c.path not in str(e)]
        if missing:
            return "deadlock-unnamed", f"{_d(e)} does not name {missing}"
        return None
    if isinstance(e, HandlerError):
        if e.msg_id == rec.id and fate == "handled":
            return None
        if fate == "taken" and e.msg_id == taker:
            return None
        return "foreign-exception", (
            f"got {_d(e)}, the exception of message #{e.msg_id}'s handler, but its own message "
            f"was {fate or 'never handled'}" + (f" (taken by #{taker})" if taker else "")
        )
    if isinstance(e, DrainedError):
        if e.msg_id == rec.id and fate == "drained":
            return None
        return "wrong-reply", f"got {_d(e)} but its message was {fate or 'never drained'}"
    if isinstance(e, AskTimeout):
        if rec.timeout is None:
            return "unexpected-outcome", f"AskTimeout without a timeout: {_d(e)}"
        if end_t < rec.start_t + rec.timeout:
            due = rec.start_t + rec.timeout
            return "early-timeout", f"timed out at t={end_t:g}, before t={due:g}"
        if end_t > rec.start_t + rec.timeout:
            due = rec.start_t + rec.timeout
            return "late-timeout", f"timed out at t={end_t:g}, after its deadline t={due:g}"
        if e.actor != rec.target.path:
            return "unexpected-outcome", f"{_d(e)} names another actor"
        return None
    if isinstance(e, ActorGone):
        if e.actor != rec.target.path:
            return "unexpected-outcome", f"{_d(e)} names another actor"
        return None
    if isinstance(e, UnhandledMessage):
        if _unhandled_expected(sc, rec):
            return None
        return "unexpected-outcome", f"{_d(e)}, but the actor accepts K{rec.kind}"
    return "unexpected-outcome", f"ended with {_d(e)}"


# -- G3: tells, accounting and the trace ------------------------------------------------------


def _check_tells(sc: Scenario, obs: Observation, out: _Out) -> None:
    blocked = bool(obs.blocked_drivers)
    for rec in obs.msgs.values():
        if rec.op == "ask":
            continue
        label = rec.label()
        if rec.result is None:
            if not (blocked and rec.origin_cell is None):
                out.add(G3, "tell-never-ended", f"{label} never returned")
            continue
        hook = _hook_problem(rec)
        if hook is not None:
            out.add(G3, "hook-outcome", f"{label}: {hook}")
            continue
        if rec.result != "error" or _hook_refused(rec):
            continue
        e = rec.exc
        if isinstance(e, MailboxFull) and rec.op == "tell_nowait":
            continue
        if isinstance(e, ActorGone) and e.actor == rec.target.path:
            continue
        if isinstance(e, UnhandledMessage) and _unhandled_expected(sc, rec):
            continue
        out.add(G3, "unexpected-send-outcome", f"{label} raised {_d(e)}")


def _accepted_tell(rec: MsgRec) -> bool:
    return rec.op != "ask" and rec.result == "ok" and rec.admit != "ignore"


def _check_accounting(obs: Observation, out: _Out) -> None:
    for rec in obs.msgs.values():
        label = rec.label()
        fates = rec.fates
        if len(fates) > 1:
            seen = ", ".join(f"{f.kind} by {f.cell.path} at t={f.t:g}" for f in fates)
            out.add(G3, "twice", f"{label}: {seen}")
        for f in fates:
            if f.cell is not rec.target:
                out.add(G3, "wrong-actor", f"{label} was {f.kind} by {f.cell!r}")
        if rec.op != "ask":
            if rec.result is None:
                continue
            if _accepted_tell(rec) and not fates:
                out.add(G3, "lost",
                        f"{label} was accepted at t={rec.start_t:g} but never handled, taken "
                        "or drained")  # fmt: skip
            elif not _accepted_tell(rec) and fates:
                out.add(G3, "refused-but-handled",
                        f"{label} ended with {_outcome(rec)} (not queued), yet it was "
                        f"{fates[0].kind}")  # fmt: skip
            continue
        # asks
        refused = (
            _hook_refused(rec)
            or isinstance(rec.exc, UnhandledMessage | AskDeadlock)
            or rec.scoped == 0
        )
        if refused and fates:
            out.add(G3, "refused-but-handled",
                    f"{label} ended with {_outcome(rec)} (nothing queued), yet it was "
                    f"{fates[0].kind}")  # fmt: skip
        withdrawn = (rec.result == "cancelled" and rec.cancel_source == "own") or isinstance(
            rec.exc, AskTimeout
        )
        if withdrawn and rec.end_step is not None:
            # Only handle/drain are recorded at the very moment (a take is seen when
            # receive/serve_until returns, after a yield).
            late = [f for f in fates if f.step > rec.end_step and f.kind != "taken"]
            if late:
                out.add(G3, "withdrawn-but-handled",
                        f"{label} was given up by its caller at t={rec.end_t:g}, then "
                        f"{late[0].kind} at t={late[0].t:g}")  # fmt: skip


def _check_trace(obs: Observation, out: _Out) -> None:
    events = obs.events
    if obs.trace_dropped:
        out.add(G3, "trace-dropped", f"the memory sink dropped {obs.trace_dropped} events")
    if [e.seq for e in events] != list(range(1, len(events) + 1)):
        out.add(G3, "trace-seq", "trace seq is not 1, 2, 3, ...")
    sends: dict[int, object] = {}
    world_id: dict[int, int] = {}  # trace msg_id -> world message id
    trace_id: dict[int, int] = {}  # world message id -> trace msg_id
    receives: dict[int, list[str | None]] = collections.defaultdict(list)
    handles: dict[int, int] = collections.Counter()
    drops: dict[int, int] = collections.Counter()
    withdrawals: dict[int, int] = collections.Counter()  # while queued
    abandoned: dict[int, int] = collections.Counter()  # while running
    replies: dict[int, int] = collections.Counter()
    system_sends: dict[str, int] = collections.Counter()
    restarts: dict[str, int] = collections.Counter()
    kinds_of_send: dict[int, tuple[str, str, bool]] = {}  # tid -> (actor, type, is ask)
    for e in events:
        if e.kind == "send":
            assert e.msg_id is not None
            if e.msg_id in sends:
                out.add(G3, "trace-send-twice", f"trace msg_id {e.msg_id} sent twice")
            sends[e.msg_id] = e
            kinds_of_send[e.msg_id] = (e.actor, e.msg_type or "?", e.corr is not None)
            if e.detail == "system":
                system_sends[e.actor] += 1
            elif len(e.payload):
                wid = msgspec.json.decode(e.payload)["id"]
                if wid in trace_id:
                    out.add(G3, "trace-send-twice", f"message #{wid} has two send events")
                trace_id[wid] = e.msg_id
                world_id[e.msg_id] = wid
        elif e.kind == "receive" and e.msg_id is not None:
            receives[e.msg_id].append(e.detail)
        elif e.kind == "handle" and e.msg_id is not None:
            handles[e.msg_id] += 1
        elif e.kind == "drop" and e.msg_id is not None:
            drops[e.msg_id] += 1
        elif e.kind in ("cancel", "timeout") and e.msg_id is not None:
            if e.detail is not None and e.detail.endswith("while running"):
                abandoned[e.msg_id] += 1
            else:
                withdrawals[e.msg_id] += 1
        elif e.kind == "reply" and e.corr is not None:
            replies[e.corr] += 1
        elif e.kind == "restart":
            restarts[e.actor] += 1
    for tid, (actor, mtype, is_ask) in kinds_of_send.items():
        what = f"trace msg_id {tid} ({mtype} to {actor}"
        what += f", message #{world_id[tid]})" if tid in world_id else ")"
        r = receives.get(tid, [])
        n = len(r) + drops[tid] + withdrawals[tid]
        if n != 1:
            out.add(G3, "trace-fate",
                    f"{what}: {len(r)} receive, {drops[tid]} drop, {withdrawals[tid]} "
                    "withdrawal events (want exactly one)")  # fmt: skip
        top = [d for d in r if d is None]
        if top and handles[tid] != len(top):
            out.add(G3, "trace-fate",
                    f"{what}: received {len(top)}x but {handles[tid]} handle events")  # fmt: skip
        if is_ask and replies[tid] + withdrawals[tid] + abandoned[tid] != 1:
            out.add(G3, "trace-reply",
                    f"{what}: {replies[tid]} replies, {withdrawals[tid] + abandoned[tid]} "
                    "withdrawals (want exactly one)")  # fmt: skip
    for rec in obs.msgs.values():
        fate = _fate(rec)
        if len(rec.fates) > 1:
            continue
        if rec.id not in trace_id:
            if fate is not None or _accepted_tell(rec):
                out.add(G3, "trace-disagrees",
                        f"{rec.label()} was {fate or 'accepted'}, but the trace has no send "
                        "for it")  # fmt: skip
            continue
        if rec.op != "ask" and rec.result is not None and not _accepted_tell(rec):
            out.add(G3, "trace-disagrees",
                    f"{rec.label()} ended with {_outcome(rec)}, but the trace shows it "
                    "sent")  # fmt: skip
        tid = trace_id[rec.id]
        r = receives.get(tid, [])
        traced_fate = None
        if r:
            traced_fate = "handled" if r[0] is None else "taken"
        elif drops[tid]:
            traced_fate = "drained"
        if (
            fate is None
            and traced_fate == "taken"
            and rec.op == "ask"
            and (
                isinstance(rec.exc, trioxide.ActorGone)
                or (
                    (rec.result == "cancelled" or isinstance(rec.exc, AskTimeout))
                    and abandoned[tid] == 1
                )
            )
        ):
            # serve_until takes an interrupting ask before fn has wound down; if the
            # handler is cancelled meanwhile it never sees it, and the runtime answers the
            # taken ask with ActorGone when the handler ends (semantics: taken asks) -
            # unless its asker gave it up first, while it ran (its timeout, or the asker
            # cancelled: the trace's "... while running"; the late answer is discarded).
            continue
        if traced_fate != fate:
            out.add(G3, "trace-disagrees",
                    f"{rec.label()}: the world saw {fate or 'no handler/take/drain'}, the trace "
                    f"{traced_fate or 'none'}")  # fmt: skip
    seen: dict[str, int] = collections.Counter(t.watcher.path for t in obs.terminated)
    for path in sorted(set(seen) | set(system_sends)):
        if seen[path] != system_sends[path]:
            out.add(G3, "trace-disagrees",
                    f"{path}: the trace sent it {system_sends[path]} Terminated, the world saw "
                    f"{seen[path]}")  # fmt: skip
    expected: dict[str, int] = collections.Counter()
    for cell in obs.cells:
        expected[cell.path] += len(cell.incarnations) - 1
    for path in sorted(set(expected) | set(restarts)):
        if expected[path] != restarts[path]:
            out.add(G3, "trace-disagrees",
                    f"{path}: {restarts[path]} restart events, {expected[path]} restarts "
                    "seen")  # fmt: skip


# -- G4: nothing left behind ------------------------------------------------------------------


def _check_left_behind(obs: Observation, out: _Out) -> None:
    leftover = obs.tasks_after_exit - obs.baseline_tasks - obs.own_tasks_at_exit
    if leftover:
        out.add(G4, "tasks-alive",
                f"{leftover} task(s) still alive after open_runtime exited")  # fmt: skip
    for label in obs.blocked_drivers:
        pending = [
            r.label() for r in obs.msgs.values()
            if r.origin == f"driver {label.split(' (')[0]}" and r.result is None
        ]  # fmt: skip
        extra = f": {pending[0]} pending" if pending else ""
        out.add(G4, "driver-blocked",
                f"driver {label} still blocked after the runtime exited{extra}")  # fmt: skip
    for cell in obs.cells:
        if cell.alive_after:
            out.add(G4, "ref-alive", f"{cell!r} is alive after open_runtime exited")
        st = cell.stats
        if st is None:
            continue
        if st.tasks_waiting_put:
            out.add(G4, "waiting-put", f"{cell!r}: {st.tasks_waiting_put} senders still waiting")
        if st.reserved:
            out.add(G4, "reserved-slot", f"{cell!r}: {st.reserved} reserved mailbox slot(s) leaked")
        if st.queued:
            out.add(G4, "queued-left", f"{cell!r}: {st.queued} message(s) still queued")


# -- G5: supervision --------------------------------------------------------------------------


def _window_full(cell: CellRec, max_restarts: int, within: float, at: float) -> bool:
    decisions = [inc.end_t for inc in cell.incarnations[:-1] if inc.end_t is not None]
    return sum(1 for d in decisions if d > at - within) >= max_restarts


def _excused(obs: Observation, cell: CellRec, horizon: float) -> bool:
    """Something else could have ended *cell* without a restart by *horizon*: a stop of it
    or an ancestor, the end of the block, or another actor's failure."""
    related = [cell, *cell.ancestors()]
    if any(s.cell in related and s.t <= horizon for s in obs.stops):
        return True
    if obs.body_done_t is not None and obs.body_done_t <= horizon:
        return True
    if any(
        r.t <= horizon and r.cell is not cell and r.kind in FAILING_KINDS
        for r in obs.raised.values()
    ):
        return True
    # Another actor's incarnation that ended with an exception the runtime raised (e.g.
    # AskDeadlock) and escalated: the root (or a common ancestor) cancels the others.
    return any(
        inc.end_t is not None
        and inc.end_t <= horizon
        and isinstance(inc.end_reason, BaseException)
        and not isinstance(inc.end_reason, trio.Cancelled)
        for other in obs.cells
        if other is not cell
        for inc in other.incarnations
    )


def _same_leaves(a: BaseException, b: BaseException) -> bool:
    """The same exceptions inside (Trio's ``start`` may re-raise a copy of a group)."""
    return [id(x) for x in leaves(a)] == [id(x) for x in leaves(b)]


def _spawn_failed(cell: CellRec) -> bool:
    incs = cell.incarnations
    return len(incs) == 1 and incs[0].started_t is None and incs[0].start_exc is not None


def _check_supervision(sc: Scenario, obs: Observation, out: _Out) -> None:
    top_trees = [t for c in obs.cells if c.parent is None for t in _last_tree(c)]
    for cell in obs.cells:
        if cell.spec < 0:
            continue
        spec = sc.actors[cell.spec]
        incs = cell.incarnations
        restarts = len(incs) - 1
        if cell.stats is not None and cell.stats.restarts != restarts:
            out.add(G5, "restart-count",
                    f"{cell!r}: statistics say {cell.stats.restarts} restarts, "
                    f"on_start ran {len(incs)} times")  # fmt: skip
        if restarts and spec.restart in (None, "temporary"):
            out.add(G5, "restarted-against-policy",
                    f"{cell!r} (restart={spec.restart}) was restarted {restarts} "
                    "times")  # fmt: skip
        decisions = [inc.end_t for inc in incs[:-1] if inc.end_t is not None]
        for i, d in enumerate(decisions):
            n = sum(1 for dj in decisions[: i + 1] if dj > d - spec.within)
            if n > spec.max_restarts:
                out.add(G5, "intensity-exceeded",
                        f"{cell!r}: restart {i + 1} (decided at t={d:g}) is restart {n} within "
                        f"{spec.within:g} s, max_restarts={spec.max_restarts}")  # fmt: skip
                break
        last = incs[-1]
        final = last.final_exception()
        if _spawn_failed(cell):
            # spawn raises the exception itself (on_start's, or on_stop's if that raised too)
            exc = last.start_exc
            raised = cell.spawn_error
            same = raised is not None and final is not None and _same_leaves(raised, final)
            if isinstance(exc, Exception) and raised not in (exc, final) and not same:
                out.add(G5, "spawn-error-changed",
                        f"{cell!r}: the first on_start raised {_d(exc)}, spawn raised "
                        f"{_d(cell.spawn_error)}")  # fmt: skip
        if final is None or not last.ended:
            continue
        if not cell.alive_after and cell.exit_reason is not final:
            out.add(G5, "exit-reason",
                    f"{cell!r}: exit_reason is {_d(cell.exit_reason)}, but its last incarnation "
                    f"ended with {_d(final)}")  # fmt: skip
        if _spawn_failed(cell):
            continue
        trees: list[BaseException] = []
        if cell.parent is not None:
            trees = cell.parent.end_tree()
        elif obs.escaped is not None:
            trees = [obs.escaped]
        escalated = any(contains(t, leaf) for leaf in leaves(final) for t in trees)
        # An actor whose spawner was cancelled by the time on_start completed stays in
        # nursery.start's scope (Trio's started() does not move a task out of a cancelled
        # caller): it is stopped there, and what it raises (on_stop's error) is raised by
        # spawn, to the spawner - not lost (semantics.md 1; seeds 4010508, 4019551).
        raised = cell.spawn_error
        to_spawner = (
            raised is not None
            and len(cell.incarnations) == 1
            and any(contains(raised, leaf) or raised is leaf for leaf in leaves(final))
        )
        into = cell.parent.cell.path if cell.parent is not None else "open_runtime"
        assert last.end_t is not None
        full = _window_full(cell, spec.max_restarts, spec.within, last.end_t)
        excused = _excused(obs, cell, last.end_t + (spec.backoff or 0.0))
        if spec.restart is None:
            if not escalated and not to_spawner:
                out.add(G5, "not-escalated",
                        f"{cell!r} (restart=None) failed with {_d(final)} at t={last.end_t:g}, "
                        f"but it did not reach {into}")  # fmt: skip
        elif spec.restart == "temporary":
            if escalated:
                out.add(G5, "temporary-escalated",
                        f"{cell!r} (temporary) failed with {_d(final)}, which reached "
                        f"{into}")  # fmt: skip
        elif escalated and not full and not excused:
            # (Excused: cancelled from outside - a stop, the block's end, another actor's
            # failure - a failure cannot be restarted from, so it escalates: never lost.)
            out.add(G5, "escalated-within-intensity",
                    f"{cell!r} ({spec.restart}) failed with {_d(final)} at t={last.end_t:g} "
                    f"with restarts to spare, yet it reached {into}")  # fmt: skip
        elif not escalated and not excused and not to_spawner:
            kind = "not-escalated" if full else "not-restarted"
            out.add(G5, kind,
                    f"{cell!r} ({spec.restart}, max_restarts={spec.max_restarts}) failed with "
                    f"{_d(final)} at t={last.end_t:g}, was neither restarted nor "
                    "escalated")  # fmt: skip
    for what in obs.spawn_failures:
        out.add(G5, "spawn-raised", _ADDRESS.sub("", what))
    _check_escape(obs, top_trees, out)
    _check_terminated(obs, out)
    _check_fatal(obs, out)


def _last_tree(cell: CellRec) -> list[BaseException]:
    return cell.incarnations[-1].end_tree() if cell.incarnations else []


def _check_escape(obs: Observation, top_trees: list[BaseException], out: _Out) -> None:
    if obs.body_exc is not None and not contains(obs.escaped, obs.body_exc):
        out.add(G5, "body-exception-lost",
                f"the block raised {_d(obs.body_exc)}; open_runtime raised "
                f"{_d(obs.escaped)}")  # fmt: skip
    if obs.escaped is None:
        return
    for leaf in leaves(obs.escaped):
        if isinstance(leaf, trio.Cancelled):
            out.add(G5, "cancelled-escaped", "a Cancelled came out of open_runtime")
        elif leaf is obs.body_exc:
            continue
        elif not any(contains(t, leaf) for t in top_trees):
            r = obs.raised.get(leaf)
            origin = f" (raised by {r.cell!r} as {r.kind})" if r is not None and r.cell else ""
            out.add(G5, "foreign-escape",
                    f"{_d(leaf)}{origin} came out of open_runtime, but no top-level actor ended "
                    "with it")  # fmt: skip


def _check_terminated(obs: Observation, out: _Out) -> None:
    observer = next((c for c in obs.cells if c.spec < 0), None)
    calls: dict[tuple[CellRec, CellRec], int] = collections.Counter(obs.monitors)
    if observer is not None:
        for cell in obs.cells:
            if cell.observed:
                calls[(observer, cell)] += 1
    got: dict[tuple[CellRec, CellRec], int] = collections.Counter()
    for t in obs.terminated:
        if t.target is None:
            out.add(G5, "terminated-unknown", f"{t.watcher!r} got Terminated for an unknown ref")
            continue
        got[(t.watcher, t.target)] += 1
        if t.target_alive:
            out.add(G5, "terminated-early",
                    f"{t.watcher!r} got Terminated({t.target!r}) at t={t.t:g} while it was "
                    "still alive")  # fmt: skip
        if not t.reason_is_exit:
            out.add(G5, "terminated-reason",
                    f"{t.watcher!r} got Terminated({t.target!r}, reason={_d(t.reason)}), which is "
                    f"not its exit_reason {_d(t.target.exit_reason)}")  # fmt: skip
    for (watcher, target), n in got.items():
        if n > calls[(watcher, target)]:
            out.add(G5, "terminated-twice",
                    f"{watcher!r} got Terminated({target!r}) {n}x for "
                    f"{calls[(watcher, target)]} monitor call(s)")  # fmt: skip
    if observer is None or obs.escaped is not None:
        return
    for cell in obs.cells:  # a clean run: the observer outlives everyone
        if cell.observed and got[(observer, cell)] == 0:
            out.add(G5, "terminated-missing",
                    f"the observer monitored {cell!r} but never got its Terminated")  # fmt: skip


def _wraps(wrapper: BaseException, exc: BaseException) -> bool:
    """*wrapper* carries *exc* as its cause/context (a wrapper that should not be seen)."""
    seen = 0
    cur: BaseException | None = wrapper
    while cur is not None and seen < 10:
        if cur is not wrapper and cur is exc:
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return any(a is exc for a in wrapper.args)


def _check_fatal(obs: Observation, out: _Out) -> None:
    trees = [t for c in obs.cells for inc in c.incarnations for t in inc.end_tree()]
    if obs.escaped is not None:
        trees.append(obs.escaped)
    for exc, r in obs.raised.items():
        if r.kind in ("handler-tell", "task") and r.inc is not None:
            if not any(contains(t, exc) for t in r.inc.end_tree()):
                what = "a tell's handler" if r.kind == "handler-tell" else "a child task"
                wrapper = next(
                    (w for t in r.inc.end_tree() for w in leaves(t) if _wraps(w, exc)), None
                )
                if wrapper is not None:
                    out.add(G5, "failure-wrapped",
                            f"{_d(exc)} from {what} of {r.cell!r} failed incarnation "
                            f"#{r.inc.n} only wrapped in {type(wrapper).__name__}: it ended "
                            f"with {_d(r.inc.end_reason)}")  # fmt: skip
                    continue
                kind = (
                    "tell-failure-not-fatal" if r.kind == "handler-tell" else "task-crash-not-fatal"
                )
                got = f"; it ended with {_d(r.inc.end_reason)}" if r.inc.ended else ""
                out.add(G5, kind,
                        f"{_d(exc)} from {what} of {r.cell!r} did not fail its incarnation "
                        f"#{r.inc.n}{got}")  # fmt: skip
        elif r.kind in ("handler-ask", "admit", "priority"):
            if any(contains(t, exc) for t in trees):
                kind = "ask-failure-fatal" if r.kind == "handler-ask" else "hook-error-fatal"
                out.add(G5, kind, f"{_d(exc)} ({r.kind} of {r.cell!r}) failed an actor")


# -- G6: stop rules ---------------------------------------------------------------------------


def _subtree(obs: Observation, cell: CellRec) -> list[CellRec]:
    return [c for c in obs.cells if c is cell or cell in c.ancestors()]


def _starting_during(cells: Iterable[CellRec], t0: float, t1: float) -> bool:
    """Some on_start of *cells* ran during [t0, t1] (a stop waits for on_start)."""
    for c in cells:
        for inc in c.incarnations:
            end = inc.started_t if inc.started_t is not None else inc.end_t
            if inc.start_t <= t1 and (end is None or end >= t0):
                return True
    return False


def _check_stops(obs: Observation, out: _Out) -> None:
    handlers_of: dict[CellRec, list[HandlerRec]] = collections.defaultdict(list)
    for h in obs.handlers:
        handlers_of[h.cell].append(h)
    stop_events: dict[str, list[int]] = collections.defaultdict(list)
    receive_events: dict[str, list[tuple[int, int | None, str | None]]]
    receive_events = collections.defaultdict(list)
    for e in obs.events:
        if e.kind == "stop":
            stop_events[e.actor].append(e.seq)
        elif e.kind == "receive":
            receive_events[e.actor].append((e.seq, e.msg_id, e.detail))
    for s in obs.stops:
        if not s.was_alive:
            continue
        cell = s.cell
        who = f"{cell!r}"
        asked = f"{s.source} stop at t={s.t:g}"
        late_h = [h for h in handlers_of[cell] if h.s0 > s.step]
        if late_h:
            h = late_h[0]
            how = "served" if h.served else "handled"
            out.add(G6, "handled-after-stop",
                    f"{who}: #{h.msg.id} {how} at t={h.t0:g} after the {asked}"
                    + (f" (+{len(late_h) - 1} more)" if len(late_h) > 1 else ""))  # fmt: skip
        # (handled only: a take is recorded when receive returns, after a yield)
        late_t = [t for t in obs.terminated
                  if t.watcher is cell and t.how == "handled" and t.step > s.step]  # fmt: skip
        if late_t:
            out.add(G6, "handled-after-stop",
                    f"{who}: Terminated({late_t[0].target!r}) {late_t[0].how} at "
                    f"t={late_t[0].t:g} after the {asked}")  # fmt: skip
        for r in obs.receives:
            if r.cell is not cell:
                continue
            if r.s0 > s.step and r.result == "taken" and r.taken is not None:
                out.add(G6, "taken-after-stop",
                        f"{who}: {r.what}() called at t={r.t0:g}, after the {asked}, took "
                        f"#{r.taken} instead of raising Cancelled")  # fmt: skip
            if (
                r.what == "receive" and r.result == "cancelled" and r.s1 is not None
                and r.s1 > s.step and r.t1 != max(s.t, r.t0)
            ):  # fmt: skip
                out.add(G6, "receive-not-cancelled-at-once",
                        f"{who}: receive() waiting at the {asked} was cancelled at "
                        f"t={r.t1:g}")  # fmt: skip
        restarted = [inc for inc in cell.incarnations if inc.start_step > s.step]
        if restarted:
            out.add(G6, "restarted-after-stop",
                    f"{who} started incarnation #{restarted[0].n} at t={restarted[0].start_t:g} "
                    f"after the {asked}")  # fmt: skip
        if s.trace_seq is not None:
            until = min((q for q in stop_events[cell.path] if q > s.trace_seq), default=None)
            for seq, mid, detail in receive_events[cell.path]:
                if seq > s.trace_seq and (until is None or seq < until):
                    out.add(G6, "handled-after-stop",
                            f"{who}: the trace shows msg_id {mid} received ({detail or 'handler'}) "
                            f"after the {asked}")  # fmt: skip
                    break
        if s.error is not None:
            out.add(G6, "stop-raised", f"{who}: the {asked} raised {_d(s.error)}")
        if s.source != "driver" or s.returned_t is None:
            continue
        if s.in_backoff:
            if s.returned_t != s.t:
                out.add(G6, "backoff-stop-late",
                        f"{who} was waiting to restart; stop() returned at t={s.returned_t:g}, "
                        f"not at once (t={s.t:g})")  # fmt: skip
            continue
        if s.grace is None:
            continue
        limit = s.t + s.grace
        for h in handlers_of[cell]:
            running = h.s0 < s.step and (h.s1 is None or h.s1 > s.step)
            if running and h.t1 is not None and h.t1 > limit:
                out.add(G6, "grace-exceeded",
                        f"{who}: the handler of #{h.msg.id}, running at the {asked} with "
                        f"grace={s.grace:g}, ended at t={h.t1:g}")  # fmt: skip
        subtree = _subtree(obs, cell)
        if s.returned_t > limit and not _starting_during(subtree, s.t, s.returned_t):
            busy = [
                h for c in subtree if c is not cell for h in handlers_of[c]
                if h.t1 is not None and h.t1 > limit and (h.s1 or 0) > s.step
            ]  # fmt: skip
            why = f" (the handler of #{busy[0].msg.id} in {busy[0].cell.path} ran until " \
                  f"t={busy[0].t1:g})" if busy else ""  # fmt: skip
            out.add(G6, "stop-late",
                    f"{who}: stop(grace={s.grace:g}) at t={s.t:g} returned at "
                    f"t={s.returned_t:g}{why}")  # fmt: skip


# -- G7 the flight recorder ---------------------------------------------------------------


def _check_flight(obs: Observation, out: _Out) -> None:
    flight = obs.flight
    assert flight is not None
    fails = [e for e in obs.events if e.kind == "fail"]
    asked = len(flight.dumps) + flight.skipped + flight.failed
    if asked != len(fails):
        out.add(G7, "flight-dumps", f"{len(fails)} fail events, {asked} dumps asked for")
    if flight.failed:
        out.add(G7, "flight-write", f"{flight.failed} dumps could not be written")
    by_seq = {e.seq: msgspec.json.encode(e) for e in obs.events}
    fail_seqs = {e.seq: e for e in fails}
    for name, events, errors in flight.dumps:
        if errors or not events:
            out.add(G7, "flight-file", f"{name}: {errors} unreadable lines, {len(events)} events")
            continue
        last = events[-1]
        if last.seq not in fail_seqs:
            out.add(G7, "flight-last", f"{name} ends with {last.kind} seq {last.seq}, not a fail")
        else:
            stem = f"trioxide-{last.actor.replace('/', '.')}-{last.seq}"
            if not (name == f"{stem}.jsonl" or name.startswith(f"{stem}-")):
                out.add(G7, "flight-name", f"{name} holds the fail of {last.actor} seq {last.seq}")
        seqs = [e.seq for e in events]
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            out.add(G7, "flight-gap", f"{name}: seqs are not contiguous")
        wrong = [e.seq for e in events if by_seq.get(e.seq) != msgspec.json.encode(e)]
        if wrong:
            out.add(G7, "flight-content", f"{name}: events {wrong[:3]} differ from the trace")
    held = flight.held
    size = len(held) * flight.record_bytes + sum(
        len(e.payload) + len(e.detail or "") for e in held
    )
    if size > flight.max_total_bytes:
        out.add(G7, "flight-bytes", f"holds ~{size} bytes, bound {flight.max_total_bytes}")
