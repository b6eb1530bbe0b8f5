"""The VMM reservoir manager, as an actor (spec/sled-agent.md section 3, scenario 11).

**Upstream** (omicron ``sled-agent/src/vmm_reservoir.rs``): the reservoir ioctl blocks for
up to about two minutes, so it runs on a dedicated OS thread fed by a rendezvous channel
(capacity 0). A mode is ``Size(MiB)`` or ``Percentage(p)`` of the usable physical RAM;
the requested bytes are rounded down to the 2 MiB reservoir alignment. A size larger than
usable RAM, or a percentage out of range, is a ``ReservoirConfig`` error; a request while
the thread is resizing gets ``Busy`` at once (the rendezvous send fails). Only on success
is the new size stored (an atomic) and a doorbell rung (a broadcast of ``()``). A failure
keeps the old size (0 at boot) and is only **logged** - issue #11123: sleds silently stuck
with a 0-byte reservoir. ``Size(0)`` at boot means "no reservoir". Instance start does not
wait for the reservoir (a wait was only proposed in review of #5124).

**Ours:**

* An actor, not a thread: the resize runs as a child task in the actor's nursery, in
  steps of at most 1 GiB on the Trio clock (``SimHypervisor``), so it is cancelled with
  the actor and runs in virtual time under ``MockClock``. The actor keeps serving
  ``GetReservoir`` while it runs, and ``SetReservoirSize`` gets ``ReservoirBusy``.
* The outcome is **published**, not just logged: ``watch: Watch[ReservoirState]`` holds
  ``Pending(target_bytes)`` while resizing, then ``Ready(bytes)`` or
  ``Failed(error, actual_bytes)`` with the size actually reached (kept: the manager never
  rolls back), so the notifier can tell Nexus the real size and the failure.
* The desired size (from config or Nexus) is kept apart from the actual size.
* ``wait_for_reservoir`` is the instance start path's gate: it waits while ``Pending``
  (with a timeout on the clock) and fails fast with ``ReservoirUnavailable`` otherwise.

Guarantees:

* Exactly one resize runs at a time; every accepted resize ends by publishing ``Ready``
  or ``Failed`` - including when the actor stops or is cancelled mid-resize (``Failed``,
  "stopped during resize", with the size reached), so no waiter is left on ``Pending``.
* A rejected request (``ReservoirConfigError``, ``ReservoirBusy``) changes nothing: not
  the state, not the desired size, not the reservoir.
* ``Ready(n)`` means the hypervisor's reservoir is exactly ``n`` bytes (``n`` is a
  multiple of 2 MiB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeAlias

import msgspec
import trio

from trioxide.runtime import Actor, Watch

from .sim.hypervisor import GiB, MiB, ReservoirAllocationError, SimHypervisor

__all__ = [
    "RESERVOIR_ALIGN_BYTES",
    "RESIZE_STEP_BYTES",
    "Failed",
    "GetReservoir",
    "NotConfigured",
    "Pending",
    "Percentage",
    "Ready",
    "ReservoirBusy",
    "ReservoirConfigError",
    "ReservoirMode",
    "ReservoirState",
    "ReservoirStatistics",
    "ReservoirStatus",
    "ReservoirUnavailable",
    "SetReservoirSize",
    "SizeMiB",
    "VmmReservoirManager",
    "reservoir_bytes_for",
    "wait_for_reservoir",
]

#: The reservoir size is a multiple of this (upstream ``RESERVOIR_SZ_ALIGN``).
RESERVOIR_ALIGN_BYTES = 2 * MiB
#: One resize step (upstream resizes in 1 GiB chunks); the last step may be smaller.
RESIZE_STEP_BYTES = GiB
#: Valid percentages: ``PERCENT_MIN <= p < PERCENT_MAX``.
PERCENT_MIN = 0.1
PERCENT_MAX = 100.0

# -- modes -------------------------------------------------------------------------------


class ReservoirMode(msgspec.Struct, frozen=True):
    """How big the reservoir should be: ``ReservoirMode.size_mib(n)`` or
    ``ReservoirMode.percentage(p)`` (of the hypervisor's eligible RAM)."""

    @staticmethod
    def size_mib(mib: int) -> SizeMiB:
        return SizeMiB(mib)

    @staticmethod
    def percentage(percent: float) -> Percentage:
        return Percentage(percent)


class SizeMiB(ReservoirMode, frozen=True, tag=True):
    """An exact size in MiB (rounded down to 2 MiB)."""

    mib: int


class Percentage(ReservoirMode, frozen=True, tag=True):
    """A percentage of eligible RAM, ``0.1 <= percent < 100``."""

    percent: float


# -- published state ---------------------------------------------------------------------


class Pending(msgspec.Struct, frozen=True, tag=True):
    """A resize towards ``target_bytes`` is running."""

    target_bytes: int


class Ready(msgspec.Struct, frozen=True, tag=True):
    """The reservoir is exactly ``bytes`` bytes (the last resize succeeded)."""

    bytes: int


class Failed(msgspec.Struct, frozen=True, tag=True):
    """The last resize (or the boot configuration) failed; the reservoir holds
    ``actual_bytes`` (the size reached, kept)."""

    error: str
    actual_bytes: int


class NotConfigured(msgspec.Struct, frozen=True, tag=True):
    """No reservoir was configured (no mode, or ``Size(0)`` at boot)."""


ReservoirState: TypeAlias = Pending | Ready | Failed | NotConfigured

# -- messages ----------------------------------------------------------------------------


class SetReservoirSize(msgspec.Struct, frozen=True):
    """Ask: start resizing to *mode*. Replies at once with the new state: ``Pending(target)``
    (completion is published on ``watch``) or ``Ready(target)`` if already that size.
    Raises ``ReservoirBusy`` while a resize runs, ``ReservoirConfigError`` if invalid."""

    mode: SizeMiB | Percentage


class GetReservoir(msgspec.Struct, frozen=True):
    """Ask: a ``ReservoirStatus`` snapshot."""


class ReservoirStatus(msgspec.Struct, frozen=True):
    """``state`` as published; ``desired_bytes`` = target of the last accepted request;
    ``actual_bytes`` = the size stored at the end of the last resize; ``reservoir_bytes`` =
    the hypervisor's live size (moves during a resize)."""

    state: ReservoirState
    mode: SizeMiB | Percentage | None
    desired_bytes: int
    actual_bytes: int
    reservoir_bytes: int
    eligible_bytes: int
    resizing: bool


@dataclass(frozen=True)
class ReservoirStatistics:
    resizes_started: int
    resizes_completed: int
    resizes_failed: int  # allocation errors (and unexpected errors)
    resizes_cancelled: int  # the actor stopped mid-resize
    busy_rejections: int
    config_errors: int  # rejected requests plus an invalid boot mode
    current_bytes: int  # actual_bytes
    desired_bytes: int
    resizing: bool


# -- errors ------------------------------------------------------------------------------


class ReservoirConfigError(ValueError):
    """An invalid reservoir mode (upstream ``Error::ReservoirConfig``). Nothing changed."""

    status = 400


class ReservoirBusy(Exception):
    """A resize is already running (upstream ``Error::Busy``). Nothing changed."""

    status = 503

    def __init__(self, target_bytes: int, reservoir_bytes: int) -> None:
        super().__init__(
            f"VmmReservoirManager is busy: resizing to {target_bytes} bytes "
            f"(at {reservoir_bytes} bytes now)"
        )
        self.target_bytes = target_bytes
        self.reservoir_bytes = reservoir_bytes


class ReservoirUnavailable(Exception):
    """The reservoir cannot back a VMM now: failed, not configured, too small, or still
    resizing after the caller's timeout. ``state`` is the state that decided it."""

    def __init__(self, reason: str, state: ReservoirState) -> None:
        super().__init__(f"VMM reservoir unavailable: {reason}")
        self.reason = reason
        self.state = state


# -- sizing ------------------------------------------------------------------------------


def _align_down(nbytes: int) -> int:
    return nbytes - nbytes % RESERVOIR_ALIGN_BYTES


def reservoir_bytes_for(mode: ReservoirMode, eligible_bytes: int) -> int:
    """The reservoir size *mode* asks for, aligned down to 2 MiB; raises
    ``ReservoirConfigError`` (naming the value) for an invalid mode.

    ``Percentage(p)``: ``0.1 <= p < 100``, bytes = floor(eligible * p / 100), computed
    exactly from the decimal value of *p* (``86.3`` means 863/10, not the nearest float).
    ``SizeMiB(n)``: ``0 <= n`` and ``n`` MiB must not exceed *eligible_bytes*.
    """
    match mode:
        case Percentage(percent=p):
            if isinstance(p, bool) or not isinstance(p, int | float):
                raise ReservoirConfigError(f"VMM reservoir percentage must be a number, got {p!r}")
            if not PERCENT_MIN <= p < PERCENT_MAX:  # also rejects NaN
                raise ReservoirConfigError(
                    f"VMM reservoir percentage of {p} must be >= {PERCENT_MIN} and < {PERCENT_MAX}"
                )
            return _align_down(math.floor(eligible_bytes * Fraction(str(p)) / 100))
        case SizeMiB(mib=n):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ReservoirConfigError(
                    f"VMM reservoir size must be a whole number of MiB >= 0, got {n!r}"
                )
            if n * MiB > eligible_bytes:
                raise ReservoirConfigError(
                    f"cannot specify a VMM reservoir of {n} MiB ({n * MiB} bytes) when "
                    f"only {eligible_bytes} bytes are eligible"
                )
            return _align_down(n * MiB)
    raise ReservoirConfigError(f"unknown VMM reservoir mode {mode!r}")


# -- waiting (the instance runner's start path) -----------------------------------------


def _settled(state: ReservoirState) -> bool:
    return not isinstance(state, Pending)


async def wait_for_reservoir(
    watch: Watch[ReservoirState], needed_bytes: int, *, timeout: float
) -> int:
    """Wait until the reservoir is not ``Pending`` (at most *timeout* seconds on the Trio
    clock) and return its size if it is ``Ready`` with at least *needed_bytes*.

    Raises ``ReservoirUnavailable`` - never hangs - when the state is (or becomes)
    ``Failed`` (even if the size reached would suffice: the spec's fail-fast rule),
    ``NotConfigured``, ``Ready`` but smaller than *needed_bytes*, or still ``Pending``
    when *timeout* expires (raised at exactly start + *timeout*). Returns at the moment
    the watch is set to a sufficient ``Ready``. Always a checkpoint.
    """
    if needed_bytes < 0:
        raise ValueError(f"needed_bytes must be >= 0, got {needed_bytes}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be >= 0, got {timeout!r}")
    state = watch.value
    if isinstance(state, Pending):
        with trio.move_on_after(timeout):
            state = await watch.wait_for(_settled)
    else:
        await trio.lowlevel.checkpoint()
    match state:
        case Ready(bytes=n) if n >= needed_bytes:
            return n
        case Ready(bytes=n):
            raise ReservoirUnavailable(
                f"the reservoir holds {n} bytes, {needed_bytes} bytes are needed", state
            )
        case Failed(error=error, actual_bytes=actual):
            raise ReservoirUnavailable(
                f"reservoir allocation failed at {actual} bytes: {error}", state
            )
        case NotConfigured():
            raise ReservoirUnavailable("no VMM reservoir is configured on this sled", state)
        case Pending(target_bytes=target):
            raise ReservoirUnavailable(
                f"timed out after {timeout} s waiting for the reservoir to reach {target} bytes",
                state,
            )
    raise AssertionError(f"unknown reservoir state {state!r}")  # pragma: no cover


# -- the actor ---------------------------------------------------------------------------


class VmmReservoirManager(Actor):
    """Owns the sled's VMM reservoir: sizes it from a mode and publishes the outcome.

    ``VmmReservoirManager(hypervisor, initial_mode, watch=None)``:

    * ``initial_mode`` given (and not ``Size(0)``): ``on_start`` publishes
      ``Pending(target)`` and starts the resize, so ``spawn`` returns at once. An invalid
      boot mode does not fail ``spawn``: it publishes ``Failed(error, actual)`` (the
      sled can still report it), and ``desired_bytes`` stays 0.
    * ``None`` or ``Size(0)``: ``NotConfigured`` (upstream: "not using VMM reservoir").
    * ``watch``: pass one to keep the same ``Watch`` across restarts (spawn arguments are
      reused); by default a new one, named ``"reservoir"``. A restarted incarnation
      starts from the hypervisor's current size and re-applies ``initial_mode``.
    """

    def __init__(
        self,
        hypervisor: SimHypervisor,
        initial_mode: ReservoirMode | None = None,
        watch: Watch[ReservoirState] | None = None,
    ) -> None:
        self.hypervisor = hypervisor
        self.initial_mode = initial_mode
        self.watch: Watch[ReservoirState] = (
            watch if watch is not None else Watch(NotConfigured(), name="reservoir")
        )
        self.mode: SizeMiB | Percentage | None = None
        self.desired_bytes = 0
        self.actual_bytes = hypervisor.reservoir_bytes
        self._target: int | None = None  # the running resize's target
        self._started = 0
        self._completed = 0
        self._failed = 0
        self._cancelled = 0
        self._busy = 0
        self._config_errors = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def on_start(self) -> None:
        mode = self.initial_mode
        if mode is None or mode == SizeMiB(0):
            self._publish(NotConfigured())
            return
        try:
            target = reservoir_bytes_for(mode, self.hypervisor.eligible_bytes)
        except ReservoirConfigError as exc:
            self._config_errors += 1
            self._publish(Failed(f"invalid reservoir configuration: {exc}", self.actual_bytes))
            return
        if target == 0:  # below the alignment: upstream warns and leaves the reservoir alone
            self._publish(NotConfigured())
            return
        assert isinstance(mode, SizeMiB | Percentage)
        self._begin(mode, target)

    async def on_stop(self, reason: object) -> None:
        # Safety net: the resize task publishes its own end, even when cancelled; this
        # covers a task cancelled before it ever ran.
        self._abandon(reason)

    # -- messages ----------------------------------------------------------------------

    async def handle(
        self, msg: SetReservoirSize | GetReservoir
    ) -> ReservoirState | ReservoirStatus:
        match msg:
            case SetReservoirSize(mode=mode):
                if self._target is not None:
                    self._busy += 1
                    raise ReservoirBusy(self._target, self.hypervisor.reservoir_bytes)
                try:
                    target = reservoir_bytes_for(mode, self.hypervisor.eligible_bytes)
                except ReservoirConfigError:
                    self._config_errors += 1
                    raise
                return self._begin(mode, target)
            case GetReservoir():
                return self.status()
        raise TypeError(f"unexpected message {msg!r}")  # pragma: no cover

    def status(self) -> ReservoirStatus:
        hv = self.hypervisor
        return ReservoirStatus(
            state=self.watch.value,
            mode=self.mode,
            desired_bytes=self.desired_bytes,
            actual_bytes=self.actual_bytes,
            reservoir_bytes=hv.reservoir_bytes,
            eligible_bytes=hv.eligible_bytes,
            resizing=self._target is not None,
        )

    def statistics(self) -> ReservoirStatistics:
        return ReservoirStatistics(
            resizes_started=self._started,
            resizes_completed=self._completed,
            resizes_failed=self._failed,
            resizes_cancelled=self._cancelled,
            busy_rejections=self._busy,
            config_errors=self._config_errors,
            current_bytes=self.actual_bytes,
            desired_bytes=self.desired_bytes,
            resizing=self._target is not None,
        )

    # -- resizing ----------------------------------------------------------------------

    def _publish(self, state: ReservoirState) -> None:
        if self.watch.value != state:
            self.watch.set(state)

    def _begin(self, mode: SizeMiB | Percentage, target: int) -> ReservoirState:
        """Accept *mode*: record the desired size and start the resize (or, if the
        reservoir already has that size, publish ``Ready`` at once)."""
        self.mode = mode
        self.desired_bytes = target
        if self.hypervisor.reservoir_bytes == target:
            self.actual_bytes = target
            self._publish(Ready(target))
            return Ready(target)
        self._target = target
        self._started += 1
        self._publish(Pending(target))
        self.start_soon(self._resize, target, name="resize")
        return Pending(target)

    async def _resize(self, target: int) -> None:
        """Grow or shrink in steps of at most ``RESIZE_STEP_BYTES`` until the reservoir is
        *target* bytes; publish ``Ready``, or ``Failed`` with the size reached."""
        hv = self.hypervisor
        try:
            while (current := hv.reservoir_bytes) != target:
                step = min(RESIZE_STEP_BYTES, abs(target - current))
                if current < target:
                    await hv.grow_reservoir(step)
                else:
                    await hv.shrink_reservoir(step)
        except ReservoirAllocationError as exc:
            self._failed += 1
            self._end(
                Failed(
                    f"failed to resize the reservoir to {target} bytes: {exc}", hv.reservoir_bytes
                )
            )
            return
        except Exception as exc:  # a bug: publish, then fail the actor
            self._failed += 1
            self._end(
                Failed(f"unexpected error resizing the reservoir: {exc!r}", hv.reservoir_bytes)
            )
            raise
        except BaseException:  # cancelled (the actor is stopping): still publish the end
            self._abandon("resize cancelled")
            raise
        self._completed += 1
        self._end(Ready(target))

    def _end(self, state: Ready | Failed) -> None:
        self._target = None
        self.actual_bytes = state.bytes if isinstance(state, Ready) else state.actual_bytes
        self._publish(state)

    def _abandon(self, reason: object) -> None:
        """End a resize that is still running because it was cancelled."""
        if self._target is None:
            return
        self._cancelled += 1
        target = self._target
        self._end(
            Failed(
                f"reservoir manager stopped during resize to {target} bytes ({reason})",
                self.hypervisor.reservoir_bytes,
            )
        )
