"""``open_runtime`` and ``Runtime``: the root of an actor tree inside one Trio run."""

from __future__ import annotations

import math
import os
import random
import re
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import outcome
import trio
from trio.lowlevel import reschedule

from trioxide.traces import FlightRecorder, JsonlFileSink, Tracer, unwrap

from ._actor import Actor
from ._cell import START, ActorCell
from ._context import current_cell, current_runtime
from ._deadlines import DeadlineQueue
from ._errors import AskTimeout, InvalidActor
from ._fairness import TurnShare
from ._loop import HANDLER_BATCH
from ._mailbox import ABANDONED, QUEUED, RUNNING, WITHDRAWN, Envelope
from ._ref import TELL_YIELD_EVERY, ActorRef
from ._supervision import SPAWN_OPTIONS, ChildSpec, SpawnOptions
from ._trio_private import clock_reader, schedule_hooks

if TYPE_CHECKING:
    from typing import Unpack

    from trioxide.traces import Recorder

__all__ = ["ActorInfo", "Runtime", "open_runtime"]

_NAME_RE = re.compile(r"[^/\s]+")
_A = TypeVar("_A", bound=Actor)
_DEFAULT_SPEC = ChildSpec()  # shared by every actor spawned without options (it is frozen)


@dataclass(frozen=True)
class ActorInfo:
    """One node of ``Runtime.actors()`` (the supervision tree)."""

    name: str
    path: str
    cls: str
    state: str
    queued: int
    restarts: int
    children: tuple[ActorInfo, ...]


class Runtime:
    """An actor system. Create it with ``open_runtime``; do not instantiate directly."""

    def __init__(
        self,
        tracer: Recorder | None,
        name: str,
        seed: int | None = None,
        extra_yields: float = 0.0,
        flight_recorder: FlightRecorder | None = None,
    ) -> None:
        self.name = name
        self.tracer = tracer
        #: Whether the tracer is a ``Tracer`` recording runs (``Tracer.runs``): the actor
        #: loops append to its pending ``HandleRun``, ``ActorRef.tell`` to its ``SendRun``.
        self.runs = isinstance(tracer, Tracer) and tracer.runs
        #: The recorder dumped on failures, SIGUSR1 and ``dump_trace`` (a sink of ``tracer``).
        self.flight_recorder = flight_recorder
        #: The thread the runtime runs in (``tell_nowait`` refuses other threads).
        self.thread = threading.get_ident()
        self.seed = seed
        # Seeded scheduling noise (exploration): extra yields at send and receive points.
        if extra_yields and seed is None:
            raise ValueError("extra_yields needs a seed (the noise must be reproducible)")
        if not 0.0 <= extra_yields <= 1.0:
            raise ValueError(f"extra_yields must be a probability, got {extra_yields!r}")
        self._noise = random.Random(seed * 7919 + 1) if extra_yields and seed is not None else None
        self._log1m_p = math.log1p(-extra_yields) if 0 < extra_yields < 1 else 0.0
        self.top_level: dict[str, ActorCell] = {}  # top-level actors, spawn order
        #: The block was left and its top-level actors are being stopped: they supervise
        #: no more (``ActorCell.supervisor_stopping``).
        self.exiting = False
        self._nursery: trio.Nursery | None = None
        self._auto_names: dict[str, int] = {}
        self.tell_budget = TELL_YIELD_EVERY
        self._turn = TurnShare()
        self.deadlines = DeadlineQueue(self._expire)
        #: The run's clock, bound once (``trio.current_time`` costs three calls more).
        self.now: Callable[[], float] = trio.current_time

    def __repr__(self) -> str:
        return f"<Runtime {self.name} actors={len(self.top_level)}>"

    def next_tell_budget(self) -> int:
        """Tells until the next yield: up to ``TELL_YIELD_EVERY`` (less when many tasks are
        runnable: ``TurnShare``), or a seeded geometric draw."""
        return self._turn.share(TELL_YIELD_EVERY) if self._noise is None else self._draw()

    def next_handler_batch(self) -> int:
        """Messages an actor handles before it yields: up to ``HANDLER_BATCH`` (less when
        many tasks are runnable), or a seeded draw."""
        return self._turn.share(HANDLER_BATCH) if self._noise is None else self._draw()

    def _draw(self) -> int:
        assert self._noise is not None
        if self._log1m_p == 0.0:
            return 1
        u = 1.0 - self._noise.random()  # (0, 1]
        return 1 + int(math.log(u) / self._log1m_p)

    async def spawn(
        self,
        cls: type[_A],
        *args: Any,
        name: str | None = None,
        **options: Unpack[SpawnOptions],
    ) -> ActorRef[_A]:
        """Create a top-level actor ``cls(*args)`` and return its ref after ``on_start``.

        * ``name``: unique among live siblings (default ``<class>-<n>``); the path is
          ``parent-path/name``.
        * ``options`` (``mailbox_size``, ``restart``, ``max_restarts``, ``within``,
          ``backoff``): see ``ChildSpec``; all are validated here, before anything runs.

        An exception from ``on_start`` is raised here.
        """
        return await self.spawn_child(None, cls, args, name, options)

    async def spawn_child(
        self,
        parent: ActorCell | None,
        cls: type[_A],
        args: tuple[Any, ...],
        name: str | None,
        options: SpawnOptions,
    ) -> ActorRef[_A]:
        """``spawn`` under *parent* (``None``: top level). Used by ``Actor.spawn`` too."""
        if not (isinstance(cls, type) and issubclass(cls, Actor)):
            raise InvalidActor(f"spawn needs an Actor subclass, got {cls!r}")
        unknown = set(options) - set(SPAWN_OPTIONS)
        if unknown:
            raise TypeError(
                f"spawn got unknown option(s) {sorted(unknown)}; options are {list(SPAWN_OPTIONS)}"
            )
        spec = ChildSpec(**options) if options else _DEFAULT_SPEC
        if parent is None:
            nursery, siblings, prefix = self._nursery, self.top_level, ""
            if nursery is None:
                raise RuntimeError("the runtime is not open")
        else:
            nursery, prefix = parent.require_nursery(), parent.path + "/"
            if parent.children is None:
                parent.children = {}
            siblings = parent.children
        if name is None:
            base = cls.__name__.lower()
            n = self._auto_names.get(base, 0) + 1
            self._auto_names[base] = n
            name = f"{base}-{n}"
        elif not (isinstance(name, str) and _NAME_RE.fullmatch(name)):
            raise ValueError(
                f"actor name must be a non-empty string without '/' or whitespace, got {name!r}"
            )
        if name in siblings:
            raise ValueError(f"an actor named {prefix + name!r} is already running")
        cell = ActorCell(self, parent, cls, args, name, prefix + name, spec)
        siblings[name] = cell
        tr = self.tracer
        if tr is not None:
            tr.spawn(
                cell.path,
                parent.path if parent else None,
                parent.cause_id() if parent else None,
                cls.__qualname__,
            )
        # A spawning actor's own task waits for the child's on_start: a wait-for edge, so
        # that the child asking its spawner from on_start is an AskDeadlock, not a hang.
        spawner = current_cell.get()
        if spawner is not None and spawner.task is trio.lowlevel.current_task():
            spawner.waiting_on, spawner.waiting_for = cell, START
        else:
            spawner = None
        try:
            await nursery.start(cell.main, name=cell.path)
        except BaseExceptionGroup as group:
            # The first on_start failed while the spawner was being cancelled: Trio
            # groups the error with the spawner's own Cancelled. The spawner gets the
            # error itself, as always; the cancellation is level-triggered (its scope
            # stays cancelled), so it reaches the spawner at its next checkpoint.
            _, errors = group.split(trio.Cancelled)
            error = unwrap(errors) if errors is not None else None
            if isinstance(error, Exception) and not isinstance(error, BaseExceptionGroup):
                raise error from None
            raise
        finally:
            if spawner is not None:
                spawner.waiting_on = spawner.waiting_for = None
        return cell.ref

    def _expire(self, env: Envelope) -> None:
        """An ask's timeout passed (called by the deadline task)."""
        owner = env.mailbox.owner
        if env.state == QUEUED:
            env.state = WITHDRAWN
            env.mailbox.withdrawn()
        elif env.state == RUNNING:
            env.state = ABANDONED
        else:
            return
        if owner is not None:
            owner.on_withdraw(env, "timeout")
        path = owner.path if owner is not None else "?"
        reschedule(env.asker, outcome.Error(AskTimeout(path, env.msg, env.timeout)))  # type: ignore[arg-type]

    def actors(self) -> list[ActorInfo]:
        """The live supervision tree (top-level actors in spawn order)."""

        def info(cell: ActorCell) -> ActorInfo:
            return ActorInfo(
                name=cell.name,
                path=cell.path,
                cls=cell.cls.__qualname__,
                state=cell.state,
                queued=cell.mailbox.count,
                restarts=cell.restarts,
                children=tuple(info(c) for c in cell.child_list()),
            )

        return [info(c) for c in self.top_level.values()]

    # -- the flight recorder ------------------------------------------------------------

    def on_failure(self, cell: ActorCell, failure: BaseException) -> None:
        """An incarnation of *cell* failed (called where its ``fail`` is traced): with a
        flight recorder, dump it to ``trioxide-<actor path>-<seq>.jsonl`` in the
        recorder's directory - a snapshot now, written by the recorder's thread, rate
        limited (``FlightRecorder.dump_soon``). Without one, nothing."""
        recorder = self.flight_recorder
        if recorder is not None:
            recorder.dump_soon(cell.path.replace("/", "."), now=self.now())

    async def dump_trace(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the flight recorder's records to *path* (default: the recorder's
        directory, ``trioxide-<runtime name>-<seq>.jsonl``) and return it once written.

        The tracer is flushed first (``Tracer.flush``: a receive it holds to fold into
        its handle is written; file sinks wait for their writer, at most their
        ``flush_timeout``). The snapshot is taken at once, on this thread; the file is
        written by a worker thread while this task waits. Raises ``RuntimeError`` without
        a flight recorder."""
        recorder = self.flight_recorder
        if recorder is None or self.tracer is None:
            raise RuntimeError(
                "this runtime has no flight recorder (open_runtime(flight_recorder=...))"
            )
        self.tracer.flush()
        target = Path(path) if path is not None else recorder.path_for(self.name)
        records = recorder.records
        return await trio.to_thread.run_sync(recorder.write_snapshot, target, records)

    async def _dump_on_signal(
        self, recorder: FlightRecorder, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Dump the flight recorder on every SIGUSR1 (a system task; main thread only)."""
        with trio.open_signal_receiver(signal.SIGUSR1) as signals:
            task_status.started()
            async for _ in signals:
                if self.tracer is not None:
                    self.tracer.flush()
                recorder.dump_soon(f"{self.name}.sigusr1", limited=False)

    async def _stop_all(self, reason: object) -> None:
        self.exiting = True
        while self.top_level:
            last = next(reversed(self.top_level.values()))
            await last.ref.stop(reason)


@asynccontextmanager
async def open_runtime(
    *,
    tracer: Recorder | None = None,
    name: str = "root",
    seed: int | None = None,
    extra_yields: float = 0.0,
    flight_recorder: FlightRecorder | None = None,
) -> AsyncIterator[Runtime]:
    """Open an actor runtime that lives as long as the ``async with`` block.

    ``seed``: make Trio's scheduling a function of the seed for the block's duration (unless
    an outer ``trioxide.testing.seeded_scheduler`` already did), so that the same seed gives
    the same interleaving and a byte-identical trace; a ``JsonlFileSink`` among the tracer's
    sinks writes the seed into its header (unless the header names one). ``extra_yields``
    (needs ``seed``): the probability of an extra scheduling point at each send and after
    each handled message, to widen the interleavings a seed explores.

    Leaving the block normally stops every top-level actor gracefully, in reverse spawn
    order (each after its own children). An exception in the block cancels them all and
    propagates. An actor failure that escalates to the root cancels the block and is
    raised from it (inside an ``ExceptionGroup``, as Trio nurseries do).

    ``flight_recorder`` (``traces.FlightRecorder``): keep the newest trace records in a
    ring bounded by bytes and dump them to a trace file when an actor fails (every
    ``fail``, rate limited), on ``SIGUSR1`` (if the runtime runs in the main thread and
    the recorder's ``signal_dumps`` is on), and on ``Runtime.dump_trace``. Without a
    ``tracer`` the runtime traces into the recorder alone (``Tracer(flight_recorder)``, no
    payloads). With a ``tracer``, the recorder must be one of its sinks
    (``Tracer(file_sink, recorder)``); a recorder among the tracer's sinks is found
    without naming it here. When the block exits, the tracer is flushed: dumps asked for
    are written by then.
    """
    recorder = _find_recorder(tracer, flight_recorder)
    if tracer is None and recorder is not None:
        tracer = Tracer(recorder)
    if seed is not None:  # a trace file's header names the seed that replays it
        for sink in getattr(tracer, "sinks", ()):
            if isinstance(sink, JsonlFileSink | FlightRecorder):
                sink.use_seed(seed)
    rt = Runtime(tracer, name, seed, extra_yields, recorder)
    rt.now = trio.lowlevel.current_clock().current_time
    saved_schedule = None
    if seed is not None and not schedule_hooks.active:
        saved_schedule = schedule_hooks.install(random.Random(seed))
    if tracer is not None:
        tracer.use_clock(*clock_reader(trio.lowlevel.current_clock()))
    token = current_runtime.set(rt)
    body_exc: BaseException | None = None
    try:
        async with trio.open_nursery() as system:
            system.start_soon(rt.deadlines.run, name=f"{name}:ask-deadlines")
            if (
                recorder is not None
                and recorder.signal_dumps
                and hasattr(signal, "SIGUSR1")
                and threading.current_thread() is threading.main_thread()
            ):
                await system.start(rt._dump_on_signal, recorder, name=f"{name}:sigusr1")
            try:
                async with trio.open_nursery() as root:
                    rt._nursery = root
                    try:
                        yield rt
                    except BaseException as exc:
                        body_exc = exc
                        root.cancel_scope.cancel()
                    else:
                        await rt._stop_all("runtime exit")
                    rt._nursery = None
            except BaseException as failed:
                if body_exc is None or isinstance(body_exc, trio.Cancelled):
                    raise  # (a Cancelled body: the failure itself cancelled the block)
                # Actors failed while being cancelled by the block's exception: raise
                # both, so that neither is lost (Trio's nurseries would do the same).
                raise BaseExceptionGroup(
                    "the runtime block raised, and actors failed while cancelled",
                    [body_exc, failed],
                ) from None
            system.cancel_scope.cancel()
        if body_exc is not None:
            raise body_exc
    finally:
        current_runtime.reset(token)
        if saved_schedule is not None:
            schedule_hooks.restore(saved_schedule)
        if tracer is not None:
            tracer.flush()


def _find_recorder(
    tracer: Recorder | None, recorder: FlightRecorder | None
) -> FlightRecorder | None:
    """The runtime's flight recorder: *recorder*, which must be a sink of *tracer* if one
    is given, or the one ``FlightRecorder`` among *tracer*'s sinks."""
    sinks = tuple(getattr(tracer, "sinks", ()))
    found = [s for s in sinks if isinstance(s, FlightRecorder)]
    if recorder is not None:
        if tracer is not None and not any(s is recorder for s in sinks):
            raise ValueError(
                "flight_recorder must be one of the tracer's sinks: "
                "Tracer(..., recorder) (or pass no tracer: the runtime traces into it)"
            )
        return recorder
    if len(found) > 1:
        raise ValueError("the tracer has more than one FlightRecorder among its sinks")
    return found[0] if found else None
