"""The world: executes a ``Scenario`` against the runtime and records what happened.

* Messages are msgspec Structs ``K0``..``K3`` with a unique ``id`` (and the ``plan`` their
  handler runs), so that every message can be accounted for.
* Every actor is a ``FuzzActor`` variant (narrow annotation or not, with or without
  ``admit``/``priority`` overrides, so the untraced bare-message fast path is exercised
  too). Its hooks forward to ``World``, which runs the scenario's behaviour and records
  each step into an ``Observation`` (``records.py``).
* An ``Observer`` actor (spawned first, so stopped last) monitors every cell once its first
  ``on_start`` completed: in a run that ends cleanly it must get exactly one
  ``Terminated`` per cell.
* The driver's operations run as plain tasks in a nursery *around* the runtime block, so
  an operation still waiting when the block is left must be ended by the runtime's exit
  (a task still blocked afterwards is reported).
* The whole run sits under ``trio.move_on_at(HANG_AT)`` in virtual time (a hang), and a
  wall-clock alarm catches a run that stops making progress altogether.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import trio
import trio.lowlevel

import trioxide
from trioxide.runtime import (
    Actor,
    ActorRef,
    Admit,
    Interrupted,
    ReceiveTimeout,
    Rejected,
    Runtime,
    SpawnOptions,
    Terminated,
    open_runtime,
)
from trioxide.testing import run_seeded
from trioxide.traces import (
    FlightRecorder,
    JsonlFileSink,
    MemorySink,
    Sink,
    TraceHeader,
    Tracer,
    read_trace,
)

from .records import (
    CellRec,
    Fate,
    FlightObs,
    HandlerRec,
    IncRec,
    MsgRec,
    Observation,
    RaiseRec,
    ReceiveRec,
    SendOp,
    SpawnWait,
    StopRec,
    TermRec,
)
from .scenario import (
    ASK_BACK,
    PARK_SAFE_TIMEOUT,
    ActorSpec,
    AskStep,
    EarlyReply,
    Op,
    Plan,
    Raise,
    Receive,
    Scenario,
    Serve,
    Sleep,
    SpawnTask,
    StopSelf,
    TellStep,
)

#: Virtual time at which a run that has not finished counts as hung.
HANG_AT = 3600.0
#: Wall-clock seconds after which a run that stopped making progress is abandoned.
WALL_LIMIT = 30.0
#: receive(timeout=None) in an actor that may not park becomes this timeout.
UNPARKED_RECEIVE_TIMEOUT = 2.0

# -- AskDeadlock (being added to the runtime) ----------------------------------------------

_ask_deadlock = getattr(trioxide, "AskDeadlock", None)
ASK_DEADLOCK_AVAILABLE = isinstance(_ask_deadlock, type) and issubclass(
    _ask_deadlock, BaseException
)


class AskDeadlockPlaceholder(Exception):
    """Stands in for ``trioxide.AskDeadlock`` until the runtime has it (never raised)."""


AskDeadlock: type[BaseException] = (
    _ask_deadlock if ASK_DEADLOCK_AVAILABLE else AskDeadlockPlaceholder  # type: ignore[assignment]
)

# -- messages ------------------------------------------------------------------------------


class Msg(msgspec.Struct, frozen=True):
    id: int
    plan: int


class K0(Msg, frozen=True):
    pass


class K1(Msg, frozen=True):
    pass


class K2(Msg, frozen=True):
    pass


class K3(Msg, frozen=True):
    pass


KINDS: tuple[type[Msg], ...] = (K0, K1, K2, K3)
KIND_OF: dict[type, int] = {k: i for i, k in enumerate(KINDS)}


def make_msg(kind: int, msg_id: int, plan: int) -> Msg:
    return KINDS[kind](msg_id, plan)


# -- replies and exceptions ----------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A handler's return value (or ``EarlyReply``) for message ``id``."""

    id: int


@dataclass(frozen=True)
class TakenReply:
    """``self.reply(m, ...)`` by the handler that took ``m`` with receive/Interrupted."""

    id: int


@dataclass(frozen=True)
class IgnoredReply:
    """``Admit.ignore(reply=...)``."""

    id: int


@dataclass(frozen=True)
class DrainedValue:
    """``drain(msg)`` answered with a value."""

    id: int


class FuzzError(Exception):
    """Base of every exception the world raises on purpose."""


class HandlerError(FuzzError):
    def __init__(self, msg_id: int, path: str) -> None:
        super().__init__(msg_id, path)
        self.msg_id = msg_id


class TaskCrash(FuzzError):
    pass


class StartError(FuzzError):
    pass


class StopError(FuzzError):
    pass


class AdmitHookError(FuzzError):
    pass


class PriorityHookError(FuzzError):
    pass


class AdmitRejected(FuzzError):
    """A custom exception given to ``Admit.reject``."""


class DrainedError(FuzzError):
    """``drain(msg)`` answered with an exception instance."""

    def __init__(self, msg_id: int) -> None:
        super().__init__(msg_id)
        self.msg_id = msg_id


class BodyError(FuzzError):
    """Raised out of the ``open_runtime`` block on purpose."""


class WallClockTimeout(BaseException):
    """The run made no progress for ``WALL_LIMIT`` real seconds."""


# -- actors --------------------------------------------------------------------------------


class FuzzActor(Actor):
    """Every hook forwards to the world (args survive restarts: the world is shared)."""

    def __init__(self, world: World, idx: int) -> None:
        self.world = world
        self.idx = idx
        self.inc: IncRec | None = None
        self.cell: CellRec | None = None

    async def on_start(self) -> None:
        await self.world.on_start(self)

    async def handle(self, msg: K0 | K1 | K2 | K3) -> object:
        return await self.world.handle(self, msg)

    async def on_stop(self, reason: object) -> None:
        self.world.on_stop(self, reason)

    def drain(self, msg: Any) -> Any:
        return self.world.drain(self, msg)


async def _handle_narrow(self: FuzzActor, msg: K0 | K1 | K2) -> object:
    return await self.world.handle(self, msg)


def _admit(self: FuzzActor, msg: Any) -> Admit:
    return self.world.admit(self, msg)


def _priority(self: FuzzActor, msg: Any) -> int:
    return self.world.priority(self, msg)


def _variant(narrow: bool, admit: bool, priority: bool) -> type[FuzzActor]:
    ns: dict[str, Any] = {"__module__": __name__}
    name = "Fuzz"
    if narrow:
        ns["handle"] = _handle_narrow
        name += "Narrow"
    if admit:
        ns["admit"] = _admit
        name += "Admit"
    if priority:
        ns["priority"] = _priority
        name += "Priority"
    return type(name + "Actor", (FuzzActor,), ns)


_BOOLS = (False, True)
VARIANTS: dict[tuple[bool, bool, bool], type[FuzzActor]] = {
    (n, a, p): _variant(n, a, p) for n in _BOOLS for a in _BOOLS for p in _BOOLS
}


def actor_class(spec: ActorSpec) -> type[FuzzActor]:
    return VARIANTS[(spec.narrow, spec.admit is not None, spec.priority is not None)]


def spawn_options(spec: ActorSpec) -> SpawnOptions:
    opts: SpawnOptions = {
        "restart": spec.restart,
        "max_restarts": spec.max_restarts,
        "within": spec.within,
        "mailbox_size": spec.mailbox_size,
    }
    if spec.backoff is not None:
        opts["backoff"] = spec.backoff
    return opts


class Observer(Actor):
    """Monitors every cell (the world calls ``monitor`` on it); records ``Terminated``."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def on_start(self) -> None:
        self.world.observer_started(self)

    async def handle(self, msg: Terminated) -> None:
        self.world.terminated(self.world.observer_cell(), msg, "handled")

    def drain(self, msg: Any) -> Any:
        if isinstance(msg, Terminated):
            self.world.terminated(self.world.observer_cell(), msg, "drained")
            return None
        return super().drain(msg)


# -- the world -----------------------------------------------------------------------------


def contains(tree: object, exc: BaseException) -> bool:
    """Whether *exc* is *tree* or inside it (nested exception groups), by identity."""
    if tree is exc:
        return True
    if isinstance(tree, BaseExceptionGroup):
        return any(contains(e, exc) for e in tree.exceptions)
    return False


def leaves(tree: BaseException) -> list[BaseException]:
    if isinstance(tree, BaseExceptionGroup):
        return [leaf for e in tree.exceptions for leaf in leaves(e)]
    return [tree]


def _has_type(tree: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    return any(isinstance(e, types) for e in leaves(tree))


class World:
    def __init__(self, scenario: Scenario, tracer: Tracer | None) -> None:
        self.sc = scenario
        self.tracer = tracer
        self.obs = Observation(traced=tracer is not None)
        self._step = 0
        self._ids = 0
        self.current: dict[int, CellRec] = {}  # spec index -> its newest cell
        self.by_ref: dict[ActorRef[Any], CellRec] = {}
        self.start_calls = [0] * len(scenario.actors)
        self.stop_calls = [0] * len(scenario.actors)
        # actor task -> what it waits on: an ask, or a spawn (the runtime's wait-for edges)
        self.waiting: dict[CellRec, MsgRec | SpawnWait] = {}
        self.stacks: dict[CellRec, list[MsgRec]] = {}  # handlers in progress, per cell
        self.observer: Observer | None = None
        self._observer_cell: CellRec | None = None
        self.live: dict[int, str] = {}  # driver operations still running
        self.idle: trio.Event | None = None  # set when the last one ends (after the exit)
        self.admit_rules = [dict(a.admit or ()) for a in scenario.actors]
        self.priority_rules = [dict(a.priority or ()) for a in scenario.actors]
        self.rt: Runtime | None = None

    # -- bookkeeping ---------------------------------------------------------------------

    def tick(self) -> tuple[float, int]:
        self._step += 1
        return trio.current_time(), self._step

    def register(
        self,
        exc: BaseException,
        kind: str,
        cell: CellRec | None,
        inc: IncRec | None,
        msg: MsgRec | None = None,
    ) -> BaseException:
        t, s = self.tick()
        self.obs.raised[exc] = RaiseRec(kind, cell, inc, t, s, msg)
        return exc

    def new_msg(
        self,
        kind: int,
        plan: int,
        op: SendOp,
        target: CellRec,
        origin: str,
        origin_cell: CellRec | None,
        *,
        timeout: float | None = None,
        scoped: float | None = None,
    ) -> MsgRec:
        self._ids += 1
        t, s = self.tick()
        rec = MsgRec(
            self._ids, kind, plan, op, target, origin, origin_cell, timeout, scoped, t, s
        )
        self.obs.msgs[rec.id] = rec
        return rec

    def ended(
        self,
        rec: MsgRec,
        result: str,
        *,
        value: object = None,
        exc: BaseException | None = None,
        source: str | None = None,
    ) -> None:
        rec.end_t, rec.end_step = self.tick()
        rec.result = result
        rec.value = value
        rec.exc = exc
        rec.cancel_source = source

    def cell_of(self, inst: FuzzActor) -> CellRec:
        ref = inst.ref
        cell = self.by_ref.get(ref)
        if cell is None:
            parent: IncRec | None = None
            p = self.sc.actors[inst.idx].parent
            if p is not None:
                parent = self.current[p].incarnations[-1]
            cell = CellRec(len(self.obs.cells), inst.idx, ref, ref.path, parent)
            self.obs.cells.append(cell)
            self.by_ref[ref] = cell
            self.current[inst.idx] = cell
            self.stacks[cell] = []
        return cell

    def observer_started(self, inst: Observer) -> None:
        self.observer = inst
        cell = CellRec(len(self.obs.cells), -1, inst.ref, inst.ref.path, None)
        cell.incarnations.append(IncRec(cell, 1, *self.tick()))
        self.obs.cells.append(cell)
        self.by_ref[inst.ref] = cell
        self._observer_cell = cell

    def observer_cell(self) -> CellRec:
        assert self._observer_cell is not None
        return self._observer_cell

    def terminated(self, watcher: CellRec, msg: Terminated, how: Any) -> None:
        t, s = self.tick()
        ref = msg.ref
        self.obs.terminated.append(
            TermRec(
                watcher,
                self.by_ref.get(ref),
                how,
                t,
                s,
                ref.alive,
                msg.reason is ref.exit_reason,
                msg.reason,
            )
        )

    def in_backoff(self, cell: CellRec) -> bool:
        """Alive, its last incarnation over and no new one begun: waiting to restart."""
        return bool(cell.ref.alive and cell.incarnations and cell.incarnations[-1].ended)

    def record_stop(
        self, cell: CellRec, source: Any, grace: float | None, reason: str
    ) -> StopRec:
        t, s = self.tick()
        rec = StopRec(
            cell,
            source,
            grace,
            reason,
            t,
            s,
            self.tracer.seq if self.tracer is not None else None,
            cell.ref.alive,
            self.in_backoff(cell),
        )
        self.obs.stops.append(rec)
        return rec

    def cycle(
        self, asker: CellRec, target: CellRec
    ) -> tuple[list[CellRec] | None, list[MsgRec | SpawnWait]]:
        """The cycle of waiting actors that an ask from *asker* to *target* would close
        (each waits on the next in an ask or a spawn), if any."""
        chain = [asker]
        links: list[MsgRec | SpawnWait] = []
        cur: CellRec | None = target
        while cur is not None:
            if cur is asker:
                return chain, links
            if cur in chain:
                return None, []
            chain.append(cur)
            link = self.waiting.get(cur)
            if link is None:
                return None, []
            links.append(link)
            cur = link.target if isinstance(link, MsgRec) else self.current.get(link.child_spec)
        return None, []

    # -- actor hooks ---------------------------------------------------------------------

    async def on_start(self, inst: FuzzActor) -> None:
        spec = self.sc.actors[inst.idx]
        cell = self.cell_of(inst)
        inc = IncRec(cell, len(cell.incarnations) + 1, *self.tick())
        cell.incarnations.append(inc)
        inst.inc = inc
        inst.cell = cell
        self.start_calls[inst.idx] += 1
        crash = spec.start_crash_on == self.start_calls[inst.idx]
        try:
            if spec.start_sleep:
                await trio.sleep(spec.start_sleep)
            if crash and not spec.start_crash_late:
                raise self._start_error(cell, inc)
            for child in spec.children:
                await self._spawn_child(inst, child)
            for m in spec.monitors:
                target = self.current.get(m)
                if target is not None and target is not cell:
                    inst.monitor(target.ref)
                    self.obs.monitors.append((cell, target))
            if spec.start_ask is not None:
                await self._ask(inst, cell, spec.start_ask, f"{cell.path} on_start")
            if crash:
                raise self._start_error(cell, inc)
        except BaseException as exc:
            inc.start_exc = exc
            raise
        inc.started_t = trio.current_time()
        if not cell.observed and self.observer is not None:
            self.observer.monitor(cell.ref)
            cell.observed = True

    def _start_error(self, cell: CellRec, inc: IncRec) -> BaseException:
        exc = StartError(f"{cell.path} on_start #{self.start_calls[cell.spec]}")
        return self.register(exc, "on_start", cell, inc)

    async def _spawn_child(self, inst: FuzzActor, idx: int) -> None:
        spec = self.sc.actors[idx]
        before = self.current.get(idx)
        cell = inst.cell
        assert cell is not None
        wait = SpawnWait(cell, idx, trio.current_time())
        self.waiting[cell] = wait
        try:
            await inst.spawn(actor_class(spec), self, idx, name=spec.name, **spawn_options(spec))
        except BaseException as exc:
            after = self.current.get(idx)
            if after is not None and after is not before:
                after.spawn_error = exc
            elif isinstance(exc, Exception):
                self.obs.spawn_failures.append(f"{cell.path} spawning a{idx} got {exc!r}")
            raise
        finally:
            wait.end_t = trio.current_time()
            del self.waiting[cell]

    def on_stop(self, inst: FuzzActor, reason: object) -> None:
        inc = inst.inc
        assert inc is not None
        spec = self.sc.actors[inst.idx]
        self.stop_calls[inst.idx] += 1
        inc.end_reason = reason
        try:
            if spec.stop_crash_on == self.stop_calls[inst.idx]:
                exc = StopError(f"{inc.cell.path} on_stop #{self.stop_calls[inst.idx]}")
                inc.stop_raised = self.register(exc, "on_stop", inc.cell, inc)
                raise exc
        finally:
            inc.end_t, inc.end_step = self.tick()

    def drain(self, inst: FuzzActor, msg: Any) -> Any:
        cell = inst.cell
        assert cell is not None
        if isinstance(msg, Terminated):
            self.terminated(cell, msg, "drained")
            return None
        rec = self.obs.msgs[msg.id]
        t, s = self.tick()
        rec.fates.append(Fate("drained", cell, t, s))
        mode = self.sc.actors[inst.idx].drain_mode
        if mode == "value":
            return DrainedValue(msg.id)
        if mode == "error":
            return DrainedError(msg.id)
        return Actor.drain(inst, msg)

    def admit(self, inst: FuzzActor, msg: Any) -> Admit:
        rule = self.admit_rules[inst.idx].get(KIND_OF.get(type(msg), -1))
        if rule is None:
            return Admit.ENQUEUE
        rec = self.obs.msgs[msg.id]
        if rule == "reject-if-busy":
            if inst.queued < 2:
                return Admit.ENQUEUE
            rule = "reject"
        rec.admit = rule
        if rule == "ignore":
            return Admit.ignore(reply=IgnoredReply(msg.id))
        if rule == "reject":
            rec.admit_exc = Rejected("fuzz", f"#{msg.id}")
            return Admit.reject(rec.admit_exc)
        if rule == "reject-custom":
            rec.admit_exc = self.register(AdmitRejected(msg.id), "admit", inst.cell, inst.inc, rec)
            return Admit.reject(rec.admit_exc)
        if rule == "raise":
            rec.admit_exc = self.register(AdmitHookError(msg.id), "admit", inst.cell, inst.inc, rec)
            raise rec.admit_exc
        return "not an Admit"  # type: ignore[return-value]  # rule == "bad"

    def priority(self, inst: FuzzActor, msg: Any) -> int:
        spec = self.sc.actors[inst.idx]
        if isinstance(msg, Terminated):
            return spec.terminated_priority
        rule = self.priority_rules[inst.idx].get(KIND_OF.get(type(msg), -1), 0)
        if isinstance(rule, int):
            return rule
        rec = self.obs.msgs[msg.id]
        rec.priority = rule
        if rule == "raise":
            exc = PriorityHookError(msg.id)
            rec.priority_exc = self.register(exc, "priority", inst.cell, inst.inc, rec)
            raise exc
        return "urgent"  # type: ignore[return-value]  # rule == "bad"

    async def handle(self, inst: FuzzActor, msg: Any) -> object:
        cell = inst.cell
        inc = inst.inc
        assert cell is not None and inc is not None
        if isinstance(msg, Terminated):
            self.terminated(cell, msg, "handled")
            return None
        rec = self.obs.msgs[msg.id]
        stack = self.stacks[cell]
        t, s = self.tick()
        rec.fates.append(Fate("handled", cell, t, s))
        h = HandlerRec(rec, cell, inc, bool(stack), t, s)
        self.obs.handlers.append(h)
        stack.append(rec)
        try:
            await self._run_plan(inst, cell, inc, rec, msg, self.sc.plans[msg.plan])
        except BaseException as exc:
            h.exc = exc
            raise
        finally:
            stack.pop()
            h.t1, h.s1 = self.tick()
        return Reply(msg.id)

    async def _run_plan(
        self, inst: FuzzActor, cell: CellRec, inc: IncRec, rec: MsgRec, msg: Msg, plan: Plan
    ) -> None:
        origin = f"{cell.path} handling #{rec.id}"
        for step in plan.steps:
            if isinstance(step, Sleep):
                await trio.sleep(step.seconds)
            elif isinstance(step, Raise):
                kind = "handler-ask" if rec.op == "ask" else "handler-tell"
                raise self.register(HandlerError(rec.id, cell.path), kind, cell, inc, rec)
            elif isinstance(step, EarlyReply):
                inst.reply(msg, Reply(rec.id))
            elif isinstance(step, Receive):
                await self._receive(inst, cell, rec, step)
            elif isinstance(step, Serve):
                await self._serve(inst, cell, rec, step)
            elif isinstance(step, AskStep):
                await self._ask(inst, cell, step, origin, rec.origin_cell)
            elif isinstance(step, TellStep):
                await self._tell(cell, step, origin)
            elif isinstance(step, SpawnTask):
                inst.start_soon(self._task, cell, inc, step, rec.id, name=f"task-{rec.id}")
            elif isinstance(step, StopSelf):
                stop = self.record_stop(cell, "self", None, f"self-stop #{rec.id}")
                inst.stop(stop.reason)

    async def _task(self, cell: CellRec, inc: IncRec, step: SpawnTask, origin: int) -> None:
        await trio.sleep(step.delay)
        if step.crash:
            raise self.register(TaskCrash(f"{cell.path} task of #{origin}"), "task", cell, inc)

    async def _receive(self, inst: FuzzActor, cell: CellRec, taker: MsgRec, step: Receive) -> None:
        timeout = step.timeout
        if timeout is None and not self.sc.actors[cell.spec].may_park:
            timeout = UNPARKED_RECEIVE_TIMEOUT
        types = tuple(KINDS[k] for k in step.kinds)
        r = ReceiveRec(cell, "receive", *self.tick())
        self.obs.receives.append(r)
        try:
            got = await inst.receive(*types, timeout=timeout)
        except ReceiveTimeout:
            r.result = "timeout"
            return
        except trio.Cancelled:
            r.result = "cancelled"
            raise
        except BaseException:
            r.result = "error"
            raise
        finally:
            r.t1, r.s1 = self.tick()
        self._took(inst, cell, taker, got, r, step.reply)

    async def _serve(self, inst: FuzzActor, cell: CellRec, taker: MsgRec, step: Serve) -> None:
        r = ReceiveRec(cell, "serve", *self.tick())
        self.obs.receives.append(r)
        try:
            res = await inst.serve_until(
                trio.sleep,
                step.seconds,
                serve=tuple(KINDS[k] for k in step.serve),
                interrupt=tuple(KINDS[k] for k in step.interrupt),
            )
        except trio.Cancelled:
            r.result = "cancelled"
            raise
        except BaseException:
            r.result = "error"
            raise
        finally:
            r.t1, r.s1 = self.tick()
        if isinstance(res, Interrupted):
            self._took(inst, cell, taker, res.msg, r, step.reply)
        else:
            r.result = "completed"

    def _took(
        self, inst: FuzzActor, cell: CellRec, taker: MsgRec, got: Any, r: ReceiveRec, reply: bool
    ) -> None:
        r.result = "taken"
        if isinstance(got, Terminated):
            self.terminated(cell, got, "taken")
            return
        rec = self.obs.msgs[got.id]
        r.taken = got.id
        t, s = self.tick()
        rec.fates.append(Fate("taken", cell, t, s, by=taker.id))
        if reply:
            inst.reply(got, TakenReply(got.id))

    def _restarts(self, cell: CellRec) -> bool:
        return self.sc.actors[cell.spec].restart in ("permanent", "transient")

    async def _ask(
        self,
        inst: FuzzActor,
        cell: CellRec,
        step: AskStep,
        origin: str,
        sender: CellRec | None = None,
    ) -> None:
        """An ask from an actor's own task (handler or on_start)."""
        target = sender if step.target == ASK_BACK else self.current.get(step.target)
        if target is None or target.spec < 0:
            self.obs.skipped_ops += 1
            return
        timeout = step.timeout
        if timeout is None and self.sc.actors[target.spec].may_park:
            timeout = PARK_SAFE_TIMEOUT
        if timeout is None and origin.endswith(" on_start") and self._restarts(target):
            # An actor that is restarted may fail again before it reaches the ask, forever
            # (its own urgent message first each time, failures further apart than its
            # intensity window: seed 5517744), and an on_start ask holds up its spawner -
            # here the block's body, which then never ends. A program that never ends is
            # the scenario's, not the runtime's (priorities starve by design, §3).
            timeout = PARK_SAFE_TIMEOUT
        rec = self.new_msg(step.kind, step.plan, "ask", target, origin, cell, timeout=timeout)
        rec.cycle, rec.cycle_links = self.cycle(cell, target)
        self.waiting[cell] = rec
        try:
            value = await target.ref.ask(make_msg(step.kind, rec.id, step.plan), timeout=timeout)
        except trio.Cancelled as exc:
            self.ended(rec, "cancelled", exc=exc, source="handler")
            raise
        except Exception as exc:
            self.ended(rec, "error", exc=exc)
        else:
            self.ended(rec, "value", value=value)
        finally:
            del self.waiting[cell]

    async def _tell(self, cell: CellRec, step: TellStep, origin: str) -> None:
        target = self.current.get(step.target)
        if target is None:
            self.obs.skipped_ops += 1
            return
        op: SendOp = "tell_nowait" if step.nowait else "tell"
        rec = self.new_msg(step.kind, step.plan, op, target, origin, cell)
        msg = make_msg(step.kind, rec.id, step.plan)
        try:
            if step.nowait:
                target.ref.tell_nowait(msg)
            else:
                with trio.move_on_after(step.limit) as scope:
                    await target.ref.tell(msg)
                if scope.cancelled_caught:
                    self.ended(rec, "cancelled", source="own")
                    return
        except trio.Cancelled as exc:
            self.ended(rec, "cancelled", exc=exc, source="handler")
            raise
        except Exception as exc:
            self.ended(rec, "error", exc=exc)
        else:
            self.ended(rec, "ok")

    # -- the driver ----------------------------------------------------------------------

    async def main(self) -> None:
        obs = self.obs
        obs.baseline_tasks = trio.lowlevel.current_statistics().tasks_living
        with trio.move_on_at(HANG_AT) as guard:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._watchdog, name="fuzz watchdog")
                try:
                    async with open_runtime(tracer=self.tracer, name="fuzz") as rt:
                        await self._body(rt, outer)
                except BaseException as exc:
                    if _has_type(exc, (WallClockTimeout, KeyboardInterrupt)):
                        raise
                    obs.escaped = exc
                obs.exit_t = trio.current_time()
                obs.tasks_after_exit = trio.lowlevel.current_statistics().tasks_living
                obs.own_tasks_at_exit = 1 + len(self.live)  # the watchdog and the drivers
                if self.tracer is not None:
                    obs.trace_seq_at_exit = self.tracer.seq
                await self._let_drivers_finish()
                obs.blocked_drivers = [self.live[n] for n in sorted(self.live)]
                for cell in obs.cells:
                    cell.alive_after = cell.ref.alive
                    cell.exit_reason = cell.ref.exit_reason
                    cell.stats = cell.ref.statistics()
                outer.cancel_scope.cancel()
        # cancel_called, not cancelled_caught: what open_runtime raised was caught above
        obs.hang = guard.cancel_called

    async def _body(self, rt: Runtime, outer: trio.Nursery) -> None:
        self.rt = rt
        await rt.spawn(Observer, self, name="observer")
        for spec in self.sc.actors:
            if spec.parent is not None:
                continue
            before = self.current.get(spec.idx)
            try:
                await rt.spawn(
                    actor_class(spec), self, spec.idx, name=spec.name, **spawn_options(spec)
                )
            except Exception as exc:  # its first on_start failed: spawn raises it
                after = self.current.get(spec.idx)
                if after is not None and after is not before:
                    after.spawn_error = exc
                else:
                    self.obs.spawn_failures.append(f"spawning {spec.name} got {exc!r}")
        for op in self.sc.ops:
            outer.start_soon(self._run_op, op, name=f"driver op {op.n}")
        await trio.sleep_until(self.sc.end_at)
        self.obs.body_done_t = trio.current_time()
        if self.sc.raise_out:
            body_exc = BodyError("raised out of the open_runtime block")
            self.obs.body_exc = self.register(body_exc, "body", None, None)
            raise body_exc

    async def _let_drivers_finish(self) -> None:
        """Operations still running when the runtime exited must end promptly."""
        if not self.live:
            return
        last_op = max((op.at for op in self.sc.ops), default=0.0)
        self.idle = trio.Event()
        with trio.move_on_at(max(trio.current_time(), last_op) + 5.0):
            await self.idle.wait()

    async def _watchdog(self) -> None:
        await trio.sleep_until(HANG_AT - 1.0)
        self.obs.hang_snapshot = self.snapshot()
        self.obs.hang_cycles = [
            _cycle_text(rec.cycle)
            for rec in self.obs.msgs.values()
            if rec.op == "ask" and rec.result is None and rec.cycle is not None
        ]

    def snapshot(self) -> list[str]:
        """What was still going on (for a HANG report)."""
        out: list[str] = []
        for rec in self.obs.msgs.values():
            if rec.op == "ask" and rec.result is None:
                line = f"ask {rec.label()} pending since t={rec.start_t}"
                if rec.cycle is not None:
                    line += f"; it closed the ask cycle {_cycle_text(rec.cycle)}"
                out.append(line)
        for h in self.obs.handlers:
            if h.t1 is None:
                out.append(f"handler of #{h.msg.id} in {h.cell.path} running since t={h.t0}")
        for cell in self.obs.cells:
            if cell.ref.alive:
                out.append(f"actor {cell.path} is {cell.ref.statistics().state}")
        out.extend(f"driver {label} still running" for label in self.live.values())
        return out

    async def _run_op(self, op: Op) -> None:
        self.live[op.n] = f"op {op.n} ({op.action} a{op.target} at t={op.at})"
        try:
            await trio.sleep_until(op.at)
            await self._perform(op)
        finally:
            del self.live[op.n]
            if not self.live and self.idle is not None:
                self.idle.set()

    async def _perform(self, op: Op) -> None:
        target = self.current.get(op.target)
        if target is None:
            self.obs.skipped_ops += 1
            return
        ref = target.ref
        if op.action == "stop":
            stop = self.record_stop(target, "driver", op.grace, f"stop-op{op.n}")
            try:
                await ref.stop(stop.reason, grace=op.grace)
            except Exception as exc:
                stop.error = exc
            stop.returned_t = trio.current_time()
            return
        origin = f"driver op {op.n}"
        rec = self.new_msg(
            op.kind, op.plan, _SEND_OPS[op.action], target, origin, None,
            timeout=op.timeout, scoped=op.cancel_after,
        )  # fmt: skip
        msg = make_msg(op.kind, rec.id, op.plan)
        try:
            if op.action == "tell":
                await ref.tell(msg)
                self.ended(rec, "ok")
            elif op.action == "tell_nowait":
                ref.tell_nowait(msg)
                self.ended(rec, "ok")
            elif op.action == "ask":
                value = await ref.ask(msg, timeout=op.timeout)
                self.ended(rec, "value", value=value)
            else:
                assert op.cancel_after is not None
                with trio.CancelScope(deadline=trio.current_time() + op.cancel_after) as scope:
                    value = await ref.ask(msg)
                    self.ended(rec, "value", value=value)
                if scope.cancelled_caught:
                    self.ended(rec, "cancelled", source="own")
        except trio.Cancelled as exc:
            self.ended(rec, "cancelled", exc=exc, source="teardown")
            raise
        except Exception as exc:
            self.ended(rec, "error", exc=exc)


_SEND_OPS: dict[str, SendOp] = {
    "tell": "tell", "tell_nowait": "tell_nowait", "ask": "ask", "ask_scoped": "ask"
}  # fmt: skip


def _cycle_text(cycle: list[CellRec]) -> str:
    return " -> ".join(c.path for c in [*cycle, cycle[0]])


# -- running one scenario ------------------------------------------------------------------


@contextlib.contextmanager
def wall_limit(seconds: float) -> Iterator[None]:
    """Raise ``WallClockTimeout`` in the main thread after *seconds* of real time."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise WallClockTimeout(f"no progress within {seconds} s of wall-clock time")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


#: The flight recorder of traced runs: a small ring (records and payload bytes both
#: overflow in many scenarios), dumping on every failure (no rate limit but one dump at a
#: time). (records, payload + detail bytes)
FLIGHT_RECORDS, FLIGHT_EXTRA_BYTES = 48, 1024


def run_world(
    scenario: Scenario,
    traced: bool,
    trace_out: Path | None = None,
    extra_sinks: Sequence[Sink] = (),
    *,
    runs: bool | str = False,
    payloads: bool = True,
) -> Observation:
    """Run *scenario* once (traced or not) and return what was observed. A traced run
    also has a flight recorder among its sinks, its dumps read back (``obs.flight``), and
    *extra_sinks* (the caller's to close) - or, with *runs*, a lone ``MemorySink``: the
    configuration in which the actor loops record ``HandleRun`` records (and, without
    *payloads*, tells are recorded into ``SendRun`` records); with ``runs="jsonl"``, a lone
    ``JsonlFileSink`` (runs of handled tells, and of sends with their payloads, encoded
    when written), its file read back as ``obs.events``."""
    if not traced:
        return _run_world(scenario, None, trace_out)
    if runs == "jsonl":
        with tempfile.TemporaryDirectory(prefix="fuzz-jsonl-") as tmp:
            path = Path(tmp) / "trace.jsonl"
            obs = _run_world(scenario, None, path, lone_file=True, payloads=payloads)
            obs.events = read_trace(path).events
            return obs
    if runs:
        return _run_world(scenario, None, None, lone_memory=True, payloads=payloads)
    with tempfile.TemporaryDirectory(prefix="fuzz-flight-") as tmp:
        recorder = FlightRecorder(
            FLIGHT_RECORDS * FlightRecorder.RECORD_BYTES + FLIGHT_EXTRA_BYTES,
            tmp,
            max_records=FLIGHT_RECORDS,
            min_interval=0.0,
            max_dumps=10**9,
            signal_dumps=False,
        )
        obs = _run_world(scenario, recorder, trace_out, extra_sinks)
        recorder.close()
        dumps = []
        for path in recorder.dumps:
            got = read_trace(path)
            dumps.append((path.name, got.events, len(got.errors)))
        held = recorder.records
        obs.flight = FlightObs(
            dumps=dumps,
            skipped=recorder.dumps_skipped,
            failed=recorder.dumps_failed,
            held=held,
            record_bytes=FlightRecorder.RECORD_BYTES,
            max_total_bytes=recorder.max_total_bytes,
        )
        return obs


def _run_world(
    scenario: Scenario,
    recorder: FlightRecorder | None,
    trace_out: Path | None,
    extra_sinks: Sequence[Sink] = (),
    *,
    lone_memory: bool = False,
    lone_file: bool = False,
    payloads: bool = True,
) -> Observation:
    tracer: Tracer | None = None
    memory: MemorySink | None = None
    file_sink: JsonlFileSink | None = None
    if lone_memory:
        memory = MemorySink()
        tracer = Tracer(memory, payloads=payloads)
        assert tracer.runs
    elif lone_file:
        assert trace_out is not None
        file_sink = JsonlFileSink(trace_out, TraceHeader(seed=scenario.seed))
        tracer = Tracer(file_sink, payloads=payloads)
        assert tracer.runs
    elif recorder is not None:
        memory = MemorySink()
        sinks: list[Any] = [memory, recorder, *extra_sinks]
        if trace_out is not None:
            header = TraceHeader(
                seed=scenario.seed,
                trio_version=trio.__version__,
                command=["python", "-m", "tests.runtime.fuzz", "--replay", str(scenario.seed)],
            )
            file_sink = JsonlFileSink(trace_out, header)
            sinks.append(file_sink)
        tracer = Tracer(*sinks, payloads=True)
    world = World(scenario, tracer)
    try:
        with wall_limit(WALL_LIMIT):
            run_seeded(world.main, seed=scenario.seed)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, WallClockTimeout) or (
            isinstance(exc, BaseExceptionGroup) and _has_type(exc, (WallClockTimeout,))
        ):
            world.obs.wall_timeout = True
        elif isinstance(exc, trio.TrioInternalError) and isinstance(
            exc.__cause__, WallClockTimeout
        ):
            world.obs.wall_timeout = True
        else:
            world.obs.internal_error = f"{type(exc).__name__}: {exc!r}"
    finally:
        if file_sink is not None:
            file_sink.close()
    if memory is not None:
        world.obs.events = memory.events
        world.obs.trace_dropped = memory.dropped
    return world.obs
