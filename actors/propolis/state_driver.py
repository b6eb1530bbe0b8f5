"""The Propolis VM state driver, as an actor whose mailbox admission is the request queue.

Requests (external API) are messages: ``Start``, ``Stop``, ``Reboot``, ``MigrateAsSource``
(fire-and-forget tells: queued *or ignored* means success) and ``ReplaceVcr`` (an ask that
returns the backend's ``ReplaceResult``). ``admit()`` runs the :class:`RequestQueue`
dispositions at send time: a denial raises ``RequestDenied`` in the sender, an ignore is a
silent success. Mailbox priority puts state changes before VCR replacements; the drain
hook answers VCR requests still queued when the driver exits with ``Gone`` (HTTP 410).
Guest events (``GuestHalted``, ``GuestRebooted``) and the internal migration-in step are
not external requests: they bypass the queue and go first.

Startup (``Start``): publish ``Starting``; start devices (an error -> final ``Failed``);
start the block backends one after another **under ``serve_until``**: while activation is
blocked (a black-holed downstairs) ``ReplaceVcr`` is still served, and a dequeued ``Stop``
aborts startup - the backend-startup task is cancelled (the backends' ``stop`` is *not*
called), ``Stopped`` then ``Destroyed`` are published. Other state changes cannot arrive
while a start is pending: the queue denies them (``StartInProgress``) or ignores them.

Published state: a ``StateMonitor`` (a ``Watch`` of ``PublishedState(state, gen)``, gen 1
initially and +1 per publication); ``wait_for_state(gen)`` long-polls, and raises
``NoInstance`` once the driver is gone without having reached that generation.

Decisions (beyond the spec): a ``Stop`` dequeued before any ``Start`` publishes
``Stopped`` then ``Destroyed`` (the VM never ran); a successful migration out publishes
``Destroyed`` (the VM now lives on the target); a migration target starts ``Migrating``
with the queue in ``StartPending`` and reaches ``Running`` after ``migrate_time``.

A ``Stop`` sent while a migration out is in progress is accepted (as upstream) and waits
behind it: if the migration fails the VM resumes and the Stop then halts it; if it
succeeds the driver exits and the queued Stop is dropped unhandled (the VM now runs on
the target, where a client must send its stop).
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec
import trio

from trioxide.runtime import Actor, ActorRef, Admit, Completed, Interrupted, Watch

from ..sim.network import DownstairsNetwork
from ..sim.vm import DeviceStartError, SimulatedVm
from .crucible import (
    Activate,
    BackendStartError,
    CrucibleBackend,
    Deactivate,
    Replace,
    ReplaceResult,
    Volume,
)
from .request_queue import RequestDenied, RequestKind, RequestQueue

__all__ = [
    "BackendNotFound",
    "Gone",
    "GuestHalted",
    "GuestRebooted",
    "MigrateAsSource",
    "NoInstance",
    "PublishedState",
    "Reboot",
    "ReplaceVcr",
    "Start",
    "StateDriver",
    "StateMonitor",
    "Stop",
    "VmState",
]

# -- messages ----------------------------------------------------------------------------


class Start(msgspec.Struct, frozen=True):
    pass


class Stop(msgspec.Struct, frozen=True):
    pass


class Reboot(msgspec.Struct, frozen=True):
    pass


class MigrateAsSource(msgspec.Struct, frozen=True):
    migration_id: str


class ReplaceVcr(msgspec.Struct, frozen=True):
    """Ask: replace the VCR of backend *backend_id*; returns a ``ReplaceResult``."""

    backend_id: str
    vcr: Volume


class GuestHalted(msgspec.Struct, frozen=True):
    """The guest shut the VM down (chipset halt)."""


class GuestRebooted(msgspec.Struct, frozen=True):
    """The guest reset the VM (a reboot the guest asked for)."""


class _MigrateIn(msgspec.Struct, frozen=True):
    """Internal: a migration target receives its state and starts."""


DriverMsg = (
    Start | Stop | Reboot | MigrateAsSource | ReplaceVcr | GuestHalted | GuestRebooted | _MigrateIn
)

_KIND: dict[type, RequestKind] = {
    Start: RequestKind.START,
    Stop: RequestKind.STOP,
    Reboot: RequestKind.REBOOT,
    MigrateAsSource: RequestKind.MIGRATE_AS_SOURCE,
    ReplaceVcr: RequestKind.REPLACE_VCR,
}

# -- published state ---------------------------------------------------------------------


class VmState(enum.Enum):
    CREATING = "Creating"
    STARTING = "Starting"
    RUNNING = "Running"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    REBOOTING = "Rebooting"
    MIGRATING = "Migrating"
    FAILED = "Failed"
    DESTROYED = "Destroyed"


class PublishedState(msgspec.Struct, frozen=True):
    state: VmState
    gen: int


class NoInstance(Exception):
    """The driver is gone: the requested generation will never be published."""

    def __init__(self, gen: int) -> None:
        super().__init__(gen)
        self.gen = gen

    def __str__(self) -> str:
        return f"NoInstance: the instance is gone and will never reach generation {self.gen}"


class Gone(Exception):
    """HTTP 410: the VM was destroyed before the request could be handled."""

    status = 410

    def __str__(self) -> str:
        return "VM destroyed before request could be handled"


class BackendNotFound(Exception):
    """HTTP 404: no backend with this id."""

    status = 404


class StateMonitor:
    """The driver's published state: ``current``, ``history``, ``wait_for_state(gen)``."""

    def __init__(self, initial: VmState, name: str = "propolis.state") -> None:
        self.watch: Watch[PublishedState] = Watch(PublishedState(initial, 1), name=name)
        self.history: list[PublishedState] = [self.watch.value]
        self.alive = True

    @property
    def current(self) -> PublishedState:
        return self.watch.value

    def states(self) -> list[VmState]:
        return [p.state for p in self.history]

    def publish(self, state: VmState) -> PublishedState:
        new = PublishedState(state, self.watch.value.gen + 1)
        self.history.append(new)
        self.watch.set(new)
        return new

    def close(self) -> None:
        self.alive = False
        self.watch.set(self.watch.value)  # wake long-polls: they re-check ``alive``

    async def wait_for_state(self, gen: int) -> PublishedState:
        """Return the published state once its generation is >= *gen*."""
        value = await self.watch.wait_for(lambda s: s.gen >= gen or not self.alive)
        if value.gen >= gen:
            return value
        raise NoInstance(gen)


# -- the actor ---------------------------------------------------------------------------


class StateDriver(Actor):
    def __init__(
        self,
        vm: SimulatedVm,
        disks: dict[str, Volume],
        net: DownstairsNetwork,
        state_monitor: StateMonitor,
        migration_target: bool = False,
        failing_backends: frozenset[str] = frozenset(),
    ) -> None:
        self.vm = vm
        self.disks = disks
        self.net = net
        self.state_monitor = state_monitor
        self.migration_target = migration_target
        self.failing_backends = failing_backends
        self.queue = RequestQueue(auto_start=migration_target)
        self.backends: dict[str, ActorRef] = {}

    async def on_start(self) -> None:
        for backend_id, vcr in self.disks.items():
            self.backends[backend_id] = await self.spawn(
                CrucibleBackend,
                backend_id,
                vcr,
                self.net,
                backend_id in self.failing_backends,
                name=f"crucible-{backend_id}",
            )
        if self.migration_target:
            self.ref.tell_nowait(_MigrateIn())

    # -- the request queue, as admission ---------------------------------------------

    def admit(self, msg: Any) -> Admit:
        kind = _KIND.get(type(msg))
        if kind is None:
            return Admit.ENQUEUE  # guest events and internal steps are not requests
        d = self.queue.offer(kind)
        if d.enqueue:
            return Admit.ENQUEUE
        if d.denied is not None:
            return Admit.reject(RequestDenied(kind, d.denied))
        return Admit.ignore()

    def priority(self, msg: Any) -> int:
        if isinstance(msg, ReplaceVcr):
            return 0  # component changes after state changes
        if type(msg) in _KIND:
            return 1
        return 2  # guest events, internal steps

    def drain(self, msg: Any) -> Any:
        if isinstance(msg, ReplaceVcr):
            return Gone()
        return None  # queued state changes are dropped (their senders already returned)

    async def on_stop(self, reason: object) -> None:
        self.state_monitor.close()

    # -- handlers ---------------------------------------------------------------------

    async def handle(self, msg: DriverMsg) -> Any:
        match msg:
            case Start():
                await self._start()
            case Stop():
                await self._stop()
            case Reboot():
                await self._reboot()
                self.queue.reboot_completed()
            case MigrateAsSource():
                await self._migrate_out()
            case ReplaceVcr(backend_id, vcr):
                return await self._replace_vcr(backend_id, vcr)
            case GuestHalted():
                if self.state_monitor.current.state is VmState.RUNNING:
                    self.vm.pause_vcpus()
                    self.state_monitor.publish(VmState.STOPPED)
                    self.queue.stopped()
                    self._finish(VmState.DESTROYED, "guest halted")
            case GuestRebooted():
                if self.state_monitor.current.state is VmState.RUNNING:
                    await self._reboot()
            case _MigrateIn():
                await trio.sleep(self.vm.migrate_time)
                self.vm.start_devices()
                self.vm.resume_vcpus()
                self.state_monitor.publish(VmState.RUNNING)
                self.queue.start_completed(True)
        return None

    async def _start(self) -> None:
        self.state_monitor.publish(VmState.STARTING)
        try:
            self.vm.start_devices()
        except DeviceStartError:
            self.queue.start_completed(False)
            self._finish(VmState.FAILED, "device start failed")
            return
        try:
            result = await self.serve_until(
                self._start_backends, serve=(ReplaceVcr,), interrupt=(Stop,)
            )
        except BackendStartError:
            self.queue.start_completed(False)
            self._finish(VmState.FAILED, "backend start failed")
            return
        match result:
            case Completed():
                self.vm.resume_vcpus()
                self.state_monitor.publish(VmState.RUNNING)
                self.queue.start_completed(True)
            case Interrupted():
                # Stop while starting: no Stopping, no halt of half-started parts; the
                # backend startup scope is already cancelled, and its stop() not called.
                self.state_monitor.publish(VmState.STOPPED)
                self.queue.stopped()
                self._finish(VmState.DESTROYED, "stopped during startup")

    async def _start_backends(self) -> None:
        """Activate each backend in turn; the first error stops startup."""
        for ref in self.backends.values():
            await ref.ask(Activate())

    async def _stop(self) -> None:
        if self.state_monitor.current.state is VmState.CREATING:  # stopped before it ever started
            self.state_monitor.publish(VmState.STOPPED)
            self.queue.stop_completed()
            self._finish(VmState.DESTROYED, "stopped before start")
            return
        self.state_monitor.publish(VmState.STOPPING)
        self.vm.pause_vcpus()
        await trio.sleep(self.vm.halt_time)
        for ref in self.backends.values():
            await ref.ask(Deactivate())
        self.state_monitor.publish(VmState.STOPPED)
        self.queue.stop_completed()
        self._finish(VmState.DESTROYED, "stopped")

    async def _reboot(self) -> None:
        self.state_monitor.publish(VmState.REBOOTING)
        self.vm.pause_vcpus()
        await trio.sleep(self.vm.reset_time)
        self.vm.resume_vcpus()
        self.state_monitor.publish(VmState.RUNNING)

    async def _migrate_out(self) -> None:
        self.state_monitor.publish(VmState.MIGRATING)
        await trio.sleep(self.vm.migrate_time)
        if self.vm.migrate_ok:
            self.vm.pause_vcpus()
            self.queue.migration_out_completed(True)
            self._finish(VmState.DESTROYED, "migrated out")
        else:
            self.queue.migration_out_completed(False)
            self.state_monitor.publish(VmState.RUNNING)

    async def _replace_vcr(self, backend_id: str, vcr: Volume) -> ReplaceResult:
        ref = self.backends.get(backend_id)
        if ref is None:
            raise BackendNotFound(f"no Crucible backend {backend_id!r}")
        result: ReplaceResult = await ref.ask(Replace(vcr))
        return result

    def _finish(self, final: VmState, reason: str) -> None:
        """Publish the final state and exit: queued VCR requests are answered ``Gone``."""
        self.state_monitor.publish(final)
        self.stop(reason)
