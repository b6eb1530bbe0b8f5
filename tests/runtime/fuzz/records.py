"""What one run observed: plain records filled in by ``world.World``, read by ``checker``.

Every record carries the virtual time ``t`` and a global ``step`` (a counter the world
bumps at each recorded event; Trio is single-threaded, so steps order events exactly).
Cells and incarnations are compared by identity (``eq=False``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from trioxide.runtime import ActorRef
from trioxide.traces import TraceEvent

SendOp = Literal["tell", "tell_nowait", "ask"]
FateKind = Literal["handled", "taken", "drained"]


@dataclass(eq=False)
class IncRec:
    """One incarnation (instance) of a cell."""

    cell: CellRec
    n: int  # 1 = first
    start_t: float
    start_step: int
    started_t: float | None = None  # on_start completed
    start_exc: BaseException | None = None  # what on_start raised (if it did)
    end_reason: object = None  # the reason on_stop was called with
    stop_raised: BaseException | None = None  # what on_stop raised
    end_t: float | None = None  # on_stop finished (= the supervisor's decision time)
    end_step: int | None = None

    @property
    def ended(self) -> bool:
        return self.end_t is not None

    def end_tree(self) -> list[BaseException]:
        """The exceptions this incarnation ended with (on_stop's reason and its own)."""
        out: list[BaseException] = []
        if isinstance(self.end_reason, BaseException):
            out.append(self.end_reason)
        if self.stop_raised is not None:
            out.append(self.stop_raised)
        return out

    def final_exception(self) -> Exception | None:
        """The exception this incarnation ended with, if it ended with an ``Exception``."""
        if self.stop_raised is not None and isinstance(self.stop_raised, Exception):
            return self.stop_raised
        if isinstance(self.end_reason, Exception):
            return self.end_reason
        return None


@dataclass(eq=False)
class CellRec:
    """One actor (``ActorCell``): created by a spawn, survives restarts."""

    key: int  # creation order
    spec: int  # spec index; -1 for the observer
    ref: ActorRef[Any]
    path: str
    parent: IncRec | None  # the parent incarnation that spawned it (None: top level)
    incarnations: list[IncRec] = field(default_factory=list)
    spawn_error: BaseException | None = None  # what spawn raised in the spawner
    observed: bool = False  # the observer monitors it (first on_start completed)
    # filled in after the runtime exited
    alive_after: bool | None = None
    exit_reason: object = None
    stats: Any = None  # ActorStatistics

    def __repr__(self) -> str:
        return f"<cell {self.path}#{self.key}>"

    def ancestors(self) -> list[CellRec]:
        out: list[CellRec] = []
        inc = self.parent
        while inc is not None:
            out.append(inc.cell)
            inc = inc.cell.parent
        return out


@dataclass(eq=False)
class Fate:
    kind: FateKind
    cell: CellRec
    t: float
    step: int
    by: int | None = None  # taken: the id of the message whose handler took it


@dataclass(eq=False)
class MsgRec:
    """One message the world sent (or tried to send), by id."""

    id: int
    kind: int
    plan: int
    op: SendOp
    target: CellRec
    origin: str  # for humans: "driver op 3", "a1 handling #5", "a2 on_start"
    origin_cell: CellRec | None  # the actor whose task sent it (None: driver or a task)
    timeout: float | None = None
    scoped: float | None = None  # ask inside a CancelScope cancelled after this delay
    start_t: float = 0.0
    start_step: int = 0
    end_t: float | None = None
    end_step: int | None = None
    # how the send/ask ended: "ok" (tell returned), "value", "error", "cancelled"
    result: str | None = None
    value: object = None
    exc: BaseException | None = None
    cancel_source: str | None = None  # cancelled: "own" scope, "handler", "teardown"
    admit: str | None = None  # the admission hook's decision, if not ENQUEUE
    admit_exc: BaseException | None = None
    priority: str | None = None  # "raise" / "bad" if the priority hook misbehaved
    priority_exc: BaseException | None = None
    fates: list[Fate] = field(default_factory=list)
    # ask cycle per the world's bookkeeping when the ask started (AskDeadlock expected)
    cycle: list[CellRec] | None = None
    cycle_links: list[MsgRec | SpawnWait] = field(default_factory=list)

    def label(self) -> str:
        return f"#{self.id} ({self.op} K{self.kind} to {self.target.path} from {self.origin})"


@dataclass(eq=False)
class SpawnWait:
    """An actor's own task waiting in ``spawn`` for a child's ``on_start`` (a wait-for
    edge, like an ask: the child asking back closes a cycle)."""

    parent: CellRec
    child_spec: int
    start_t: float
    end_t: float | None = None


@dataclass(eq=False)
class HandlerRec:
    """One run of ``handle`` for a world message (top level or served by serve_until)."""

    msg: MsgRec
    cell: CellRec
    inc: IncRec
    served: bool
    t0: float
    s0: int
    t1: float | None = None
    s1: int | None = None
    exc: BaseException | None = None


@dataclass(eq=False)
class ReceiveRec:
    """One ``receive()`` or ``serve_until()`` call inside a handler."""

    cell: CellRec
    what: Literal["receive", "serve"]
    t0: float
    s0: int
    t1: float | None = None
    s1: int | None = None
    # "taken" (a message), "completed", "timeout", "cancelled", "error"
    result: str | None = None
    taken: int | None = None  # the id of the world message taken (None: Terminated)


@dataclass(eq=False)
class TermRec:
    """One ``Terminated`` the world saw (handled, taken by receive, or drained)."""

    watcher: CellRec
    target: CellRec | None
    how: FateKind
    t: float
    step: int
    target_alive: bool
    reason_is_exit: bool
    reason: object


@dataclass(eq=False)
class StopRec:
    """A stop requested by the world: the driver's ``ref.stop`` or a handler's ``self.stop``."""

    cell: CellRec
    source: Literal["driver", "self"]
    grace: float | None
    reason: str
    t: float
    step: int
    trace_seq: int | None
    was_alive: bool
    in_backoff: bool
    returned_t: float | None = None
    error: BaseException | None = None  # what stop() raised (it should not raise)


@dataclass(eq=False)
class RaiseRec:
    """An exception the world raised on purpose."""

    kind: str  # handler-tell | handler-ask | task | on_start | on_stop | admit | priority | body
    cell: CellRec | None
    inc: IncRec | None
    t: float
    step: int
    msg: MsgRec | None = None


@dataclass
class Observation:
    traced: bool
    cells: list[CellRec] = field(default_factory=list)
    msgs: dict[int, MsgRec] = field(default_factory=dict)
    handlers: list[HandlerRec] = field(default_factory=list)
    receives: list[ReceiveRec] = field(default_factory=list)
    terminated: list[TermRec] = field(default_factory=list)
    monitors: list[tuple[CellRec, CellRec]] = field(default_factory=list)  # (watcher, target)
    stops: list[StopRec] = field(default_factory=list)
    raised: dict[BaseException, RaiseRec] = field(default_factory=dict)
    skipped_ops: int = 0
    spawn_failures: list[str] = field(default_factory=list)  # spawn raised, no on_start failed
    # the end of the run
    body_done_t: float | None = None  # the block's body finished (leave or raise)
    body_exc: BaseException | None = None  # what the body raised on purpose
    escaped: BaseException | None = None  # what came out of open_runtime
    exit_t: float | None = None
    baseline_tasks: int = 0
    tasks_after_exit: int = 0
    own_tasks_at_exit: int = 0  # the driver's tasks (and the watchdog) alive at exit
    blocked_drivers: list[str] = field(default_factory=list)
    hang: bool = False
    hang_snapshot: list[str] = field(default_factory=list)
    hang_cycles: list[str] = field(default_factory=list)  # ask cycles pending at the hang
    wall_timeout: bool = False
    internal_error: str | None = None  # the harness itself broke (reported, never hidden)
    events: list[TraceEvent] = field(default_factory=list)
    trace_dropped: int = 0
    trace_seq_at_exit: int | None = None
    # the flight recorder of a traced run (G7)
    flight: FlightObs | None = None


@dataclass
class FlightObs:
    """What the flight recorder of a traced run did: each dump read back (its file name,
    its events, how many lines could not be read), the dumps skipped and failed, and the
    records it held at the end with its byte bound."""

    dumps: list[tuple[str, list[TraceEvent], int]]
    skipped: int
    failed: int
    held: list[TraceEvent]
    record_bytes: int
    max_total_bytes: int
