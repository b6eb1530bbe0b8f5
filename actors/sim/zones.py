"""Simulated illumos zones (``zonecfg`` / ``zoneadm`` and zone bundles), on the Trio clock.

A zone is known by name (the Propolis zone of a VMM is ``oxz_propolis-server_<propolis_id>``,
see :func:`propolis_zone_name`) and moves through

    configured --install--> installed --boot--> running --halt--> halted --remove--> (gone)

Every operation takes a configurable time on the Trio clock (so a 30-minute zone bundle runs
in microseconds under ``MockClock``) and is a cancel point. What is guaranteed:

* **Preconditions are checked when the call starts**, against the state at that moment, and
  the existence of the zone again when its work is done (a zone that vanished meanwhile
  gives ``ZoneMissing``). A failed or cancelled call changes no state, except ``create``,
  which claims the name at once (so a concurrent second ``create`` of the name fails).
* Errors are typed (all :class:`ZoneError`): creating a name that still exists ->
  ``ZoneAlreadyExists``; booting a zone that is only configured -> ``ZoneNotInstalled``
  ("zone must be installed before boot", the symptom of the upstream create/cleanup race);
  any operation on a zone that does not exist -> ``ZoneMissing``; an operation the state
  does not allow (install twice, boot a running zone, remove a running zone) ->
  ``ZoneStateError``; an injected failure -> ``ZoneOpFailed``.
* ``halt`` of a zone that is not running is an idempotent no-op (it takes no time).
* Failure injection: ``fail_next(op)`` (the next call fails at once), ``hang_next(op)``
  (the next call blocks until cancelled, state unchanged), ``vanish(name)`` (the zone
  disappears under everyone's feet - what the instance monitor reports as ``ZoneGone``).
* Every call is recorded, with its start and end time and result, in ``history(name)``;
  ``statistics()`` counts calls and failures per operation and how many bundles ran at the
  same time (``max_bundles_running``) - the sim does **not** serialize bundles itself, that
  is the caller's job (``actors.zone_cleanup``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import msgspec
import trio

__all__ = [
    "OPS",
    "STATES",
    "SimZones",
    "ZoneAlreadyExists",
    "ZoneError",
    "ZoneMissing",
    "ZoneNotInstalled",
    "ZoneOpFailed",
    "ZoneOpRecord",
    "ZoneStateError",
    "ZonesStatistics",
    "propolis_zone_name",
]

OPS: tuple[str, ...] = ("create", "install", "boot", "halt", "remove", "bundle")
"""Operation names, as used by ``fail_next``/``hang_next``, ``history`` and ``statistics``."""

STATES: tuple[str, ...] = ("configured", "installed", "running", "halted")
"""States of an existing zone (a removed or vanished zone has no state: ``state() is None``)."""


def propolis_zone_name(propolis_id: str) -> str:
    """The zone name of a VMM's Propolis server (upstream: ``oxz_propolis-server_<id>``)."""
    return f"oxz_propolis-server_{propolis_id}"


# -- errors ------------------------------------------------------------------------------


class ZoneError(Exception):
    """A zone operation failed. ``zone`` is the zone name, ``op`` the operation."""

    #: Set on an error raised by an injection (``fail_next``), not by the zone's state.
    injected = False

    def __init__(self, name: str, op: str = "", detail: str | None = None) -> None:
        self.zone = name
        self.op = op
        self.detail = detail or self.default_detail
        where = f"{op} " if op else ""
        super().__init__(f"{where}zone {name!r}: {self.detail}")

    default_detail = "zone operation failed"


class ZoneAlreadyExists(ZoneError):
    """``create`` of a name that is still configured (not yet removed)."""

    default_detail = "zone already exists"


class ZoneMissing(ZoneError):
    """The zone does not exist (never created, removed, or vanished)."""

    default_detail = "no such zone configured"


class ZoneStateError(ZoneError):
    """The operation is not allowed in the zone's current state (``state``)."""

    default_detail = "operation not allowed in this state"

    def __init__(
        self, name: str, op: str = "", detail: str | None = None, state: str | None = None
    ) -> None:
        self.state = state
        if state is not None:
            detail = f"{detail or self.default_detail} (state {state})"
        super().__init__(name, op, detail)


class ZoneNotInstalled(ZoneStateError):
    """``boot`` of a zone that is only configured: "zone must be installed before boot"."""

    default_detail = "zone must be installed before boot"


class ZoneOpFailed(ZoneError):
    """A failure injected with ``SimZones.fail_next``."""

    default_detail = "injected failure"


# -- records -----------------------------------------------------------------------------


class ZoneOpRecord(msgspec.Struct, frozen=True, gc=False):
    """One call: ``result`` is ``"ok"``, the exception class name, or ``"cancelled"``.
    (Not tracked by the cyclic GC: thousands are kept for a run's history, and holding
    only strings and floats it can be part of no cycle.)"""

    op: str
    started: float
    finished: float
    result: str


@dataclass(frozen=True)
class ZonesStatistics:
    zones: int
    by_state: Mapping[str, int]
    calls: Mapping[str, int]
    failures: Mapping[str, int]
    in_progress: int
    bundles_running: int
    max_bundles_running: int
    bundles_collected: int
    injections_pending: int
    #: Failures that were not injected, by ``"op:ErrorClass"`` (e.g.
    #: ``"create:ZoneAlreadyExists"``); ``SimZones.collisions()`` sums the ones that mean
    #: two parties used one zone name.
    errors: Mapping[str, int]
    #: Names an injection (``fail_next``/``hang_next``/``vanish``) has hit.
    injected: frozenset[str]


@dataclass
class _Injection:
    op: str
    name: str | None
    hang: bool
    error: ZoneError | None


# -- the simulation ----------------------------------------------------------------------


class SimZones:
    """The zones of one sled. A plain object (not an actor); safe to share between tasks."""

    def __init__(
        self,
        *,
        create_time: float = 0.1,
        install_time: float = 5.0,
        boot_time: float = 2.0,
        halt_time: float = 1.0,
        remove_time: float = 1.0,
        bundle_time: float = 1800.0,
    ) -> None:
        self.durations: dict[str, float] = {
            "create": create_time,
            "install": install_time,
            "boot": boot_time,
            "halt": halt_time,
            "remove": remove_time,
            "bundle": bundle_time,
        }
        self._zones: dict[str, str] = {}
        self._history: dict[str, list[ZoneOpRecord]] = {}
        self._injections: list[_Injection] = []
        self._calls = dict.fromkeys(OPS, 0)
        self._failures = dict.fromkeys(OPS, 0)
        self._in_progress = 0
        self._bundles_running = 0
        self._max_bundles_running = 0
        self._bundles_collected = 0
        self._errors: dict[str, int] = {}  # "op:ErrorClass" -> count (not injected)
        self._injected_names: set[str] = set()
        self._on_change: Callable[[str], None] | None = None

    def on_change(self, callback: Callable[[str], None] | None) -> None:
        """Call ``callback(name)`` right after every change of a zone: created (the name
        claimed), moved to another state, removed or vanished. One observer (``None``
        removes it), e.g. the sled invariants' incremental checks; it must not raise."""
        self._on_change = callback

    def _changed(self, name: str) -> None:
        if self._on_change is not None:
            self._on_change(name)

    # -- queries ---------------------------------------------------------------------------

    def state(self, name: str) -> str | None:
        """The zone's state (one of ``STATES``), or ``None`` if it does not exist."""
        return self._zones.get(name)

    def exists(self, name: str) -> bool:
        return name in self._zones

    def is_running(self, name: str) -> bool:
        return self._zones.get(name) == "running"

    def count(self) -> int:
        """How many zones exist (O(1); ``names()`` sorts them)."""
        return len(self._zones)

    def names(self) -> list[str]:
        """Existing zones, sorted (O(n log n): ``count()`` and ``exists()`` are O(1))."""
        return sorted(self._zones)

    def existing(self) -> Iterator[str]:
        """Existing zones in the order they were created (O(1) per zone, no sort)."""
        return iter(self._zones)

    def history(self, name: str) -> list[ZoneOpRecord]:
        """Every call made for *name* (across re-creations), in completion order."""
        return list(self._history.get(name, ()))

    def statistics(self) -> ZonesStatistics:
        by_state = {s: 0 for s in STATES}
        for s in self._zones.values():
            by_state[s] += 1
        return ZonesStatistics(
            zones=len(self._zones),
            by_state=MappingProxyType(by_state),
            calls=MappingProxyType(dict(self._calls)),
            failures=MappingProxyType(dict(self._failures)),
            in_progress=self._in_progress,
            bundles_running=self._bundles_running,
            max_bundles_running=self._max_bundles_running,
            bundles_collected=self._bundles_collected,
            injections_pending=len(self._injections),
            errors=MappingProxyType(dict(self._errors)),
            injected=frozenset(self._injected_names),
        )

    def collisions(self) -> int:
        """Non-injected failures caused by another party's zone: setting a zone up
        (create/install/boot) failed in any way, or removing or halting one failed because
        of its state (still in use). A ``ZoneMissing`` from halt/remove/bundle is not one:
        cleanup finding its zone gone is what it wants. (Cheap: checked after every
        handled message by the sled invariants.)"""
        n = 0
        for key, count in self._errors.items():
            op, _, err = key.partition(":")
            if op in ("create", "install", "boot") or err in ("ZoneStateError", "ZoneNotInstalled"):
                n += count
        return n

    def was_injected(self, name: str) -> bool:
        """Whether a failure injection has hit zone *name*."""
        return name in self._injected_names

    # -- test controls ---------------------------------------------------------------------

    def add(self, name: str, state: str = "running") -> None:
        """Set-up shortcut: make *name* exist in *state* now, taking no time."""
        if state not in STATES:
            raise ValueError(f"unknown zone state {state!r}; expected one of {STATES}")
        if name in self._zones:
            raise ZoneAlreadyExists(name, "add")
        self._zones[name] = state
        self._changed(name)
        now = trio.current_time()
        self._history.setdefault(name, []).append(ZoneOpRecord("add", now, now, "ok"))

    def vanish(self, name: str) -> None:
        """The zone disappears at once (e.g. removed behind our back): ``ZoneGone``."""
        if name not in self._zones:
            raise ZoneMissing(name, "vanish")
        self._injected_names.add(name)
        del self._zones[name]
        self._changed(name)
        now = trio.current_time()
        self._history.setdefault(name, []).append(ZoneOpRecord("vanish", now, now, "ok"))

    def fail_next(self, op: str, name: str | None = None, error: ZoneError | None = None) -> None:
        """The next *op* call (on *name*, or on any zone) raises *error* at once
        (default ``ZoneOpFailed``), after its precondition checks passed."""
        self._inject(op, name, hang=False, error=error)

    def hang_next(self, op: str, name: str | None = None) -> None:
        """The next *op* call (on *name*, or on any zone) blocks until cancelled and changes
        nothing (a wedged ``zoneadm``)."""
        self._inject(op, name, hang=True, error=None)

    def _inject(self, op: str, name: str | None, *, hang: bool, error: ZoneError | None) -> None:
        if op not in OPS:
            raise ValueError(f"unknown zone operation {op!r}; expected one of {OPS}")
        self._injections.append(_Injection(op, name, hang, error))

    # -- operations ------------------------------------------------------------------------

    async def create(self, name: str) -> None:
        """``zonecfg create``: claims *name* at once (state ``configured``)."""
        with self._record("create", name):
            if name in self._zones:
                raise ZoneAlreadyExists(name, "create")
            await self._injected("create", name)
            self._zones[name] = "configured"
            self._changed(name)
            await self._work("create", name)

    async def install(self, name: str) -> None:
        """``zoneadm install``: configured -> installed."""
        with self._record("install", name):
            self._require(name, "install", ("configured",), "zone is already installed")
            await self._injected("install", name)
            await self._work("install", name)
            self._zones[name] = "installed"
            self._changed(name)

    async def boot(self, name: str) -> None:
        """``zoneadm boot``: installed or halted -> running."""
        with self._record("boot", name):
            state = self._require(name, "boot", ("installed", "halted", "configured"), "")
            if state == "configured":
                raise ZoneNotInstalled(name, "boot")
            await self._injected("boot", name)
            await self._work("boot", name)
            self._zones[name] = "running"
            self._changed(name)

    async def provision(self, name: str) -> None:
        """create + install + boot (what the runner's ``propolis_ensure`` does)."""
        await self.create(name)
        await self.install(name)
        await self.boot(name)

    async def halt(self, name: str) -> None:
        """``zoneadm halt``: running -> halted; a no-op on a zone that is not running."""
        with self._record("halt", name):
            state = self._require(name, "halt", STATES, "")
            await self._injected("halt", name)
            if state != "running":
                return
            await self._work("halt", name)
            self._zones[name] = "halted"
            self._changed(name)

    async def remove(self, name: str) -> None:
        """``zoneadm uninstall`` + ``zonecfg delete``: the zone no longer exists. Refused
        (``ZoneStateError``) while it is running."""
        with self._record("remove", name):
            self._require(
                name, "remove", ("configured", "installed", "halted"), "zone must be halted first"
            )
            await self._injected("remove", name)
            await self._work("remove", name)
            del self._zones[name]
            self._changed(name)

    async def collect_bundle(self, name: str) -> str:
        """Collect a zone bundle (logs, core files) of an existing zone in any state;
        takes ``durations["bundle"]`` (default 30 minutes). Returns the bundle's path."""
        with self._record("bundle", name):
            self._require(name, "bundle", STATES, "")
            await self._injected("bundle", name)
            self._bundles_running += 1
            self._max_bundles_running = max(self._max_bundles_running, self._bundles_running)
            try:
                await self._work("bundle", name)
            finally:
                self._bundles_running -= 1
            self._bundles_collected += 1
            return f"/pool/int/debug/bundle/zone/{name}/{self._bundles_collected}.tar.gz"

    # -- internals -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _record(self, op: str, name: str) -> Iterator[None]:
        started = trio.current_time()
        self._calls[op] += 1
        self._in_progress += 1
        result = "ok"
        try:
            yield
        except BaseException as exc:
            result = "cancelled" if isinstance(exc, trio.Cancelled) else type(exc).__name__
            if not isinstance(exc, trio.Cancelled):
                self._failures[op] += 1
                if not getattr(exc, "injected", False) and name not in self._injected_names:
                    key = f"{op}:{type(exc).__name__}"
                    self._errors[key] = self._errors.get(key, 0) + 1
            raise
        finally:
            self._in_progress -= 1
            record = ZoneOpRecord(op, started, trio.current_time(), result)
            self._history.setdefault(name, []).append(record)

    def _require(self, name: str, op: str, allowed: tuple[str, ...], detail: str) -> str:
        state = self._zones.get(name)
        if state is None:
            raise ZoneMissing(name, op)
        if state not in allowed:
            raise ZoneStateError(name, op, detail or None, state=state)
        return state

    async def _injected(self, op: str, name: str) -> None:
        for i, inj in enumerate(self._injections):
            if inj.op == op and inj.name in (None, name):
                del self._injections[i]
                self._injected_names.add(name)
                if inj.hang:
                    await trio.sleep_forever()
                error = inj.error if inj.error is not None else ZoneOpFailed(name, op)
                error.injected = True
                raise error

    async def _work(self, op: str, name: str) -> None:
        await trio.sleep(self.durations[op])
        if name not in self._zones:
            raise ZoneMissing(name, op, "zone vanished during the operation")
