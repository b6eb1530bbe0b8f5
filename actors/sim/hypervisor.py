"""A simulated hypervisor (bhyve's VMM memory reservoir), on the Trio clock.

The illumos VMM reservoir is memory set aside for guests: it is grown or shrunk by an
ioctl that can block for minutes on a large sled (upstream sled-agent runs it on an OS
thread for that reason), and guest memory for a VMM is then taken from it. This module
models exactly that, deterministically, so a whole sled runs in virtual time:

* ``physical_bytes`` of DRAM, of which ``eligible_bytes`` (physical minus a control-plane
  reserve) may go to the reservoir;
* ``await grow_reservoir(n)`` / ``await shrink_reservoir(n)`` take
  ``seconds_per_gib * n / GiB`` seconds on the Trio clock (default 1 s per GiB, so a
  120 GiB reservoir takes 120 s - the "~2 minutes" upstream mentions);
* failure injection: ``fail_after_bytes`` makes any growth beyond that size fail;
* VMM memory accounting: ``reserve_vmm_memory`` / ``release_vmm_memory`` take guest memory
  out of the reservoir and give it back, raising ``InsufficientMemory`` when it does not
  fit.

Guarantees: a resize step is **atomic**: it takes its whole duration and then either
applies entirely or (raising ``ReservoirAllocationError``) not at all; a step cancelled
while it waits changes nothing. The reservoir therefore always holds a whole number of
completed steps. Nothing here is an actor; the object must be used from one Trio run.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

__all__ = [
    "GiB",
    "HypervisorStatistics",
    "InsufficientMemory",
    "MiB",
    "ReservoirAllocationError",
    "SimHypervisor",
]

MiB = 1 << 20
GiB = 1 << 30


class ReservoirAllocationError(Exception):
    """A reservoir resize step failed (the kernel could not find or free the memory).

    The step that raised changed nothing: ``reservoir_bytes`` is the size reached before it.
    """

    def __init__(self, message: str, *, reservoir_bytes: int) -> None:
        super().__init__(message)
        self.reservoir_bytes = reservoir_bytes


class InsufficientMemory(Exception):
    """A VMM's guest memory does not fit in the reservoir's unreserved part."""

    def __init__(self, propolis_id: str, requested_bytes: int, available_bytes: int) -> None:
        super().__init__(
            f"VMM {propolis_id}: cannot reserve {requested_bytes} bytes of guest memory, "
            f"only {available_bytes} bytes of the reservoir are free"
        )
        self.propolis_id = propolis_id
        self.requested_bytes = requested_bytes
        self.available_bytes = available_bytes


@dataclass(frozen=True)
class HypervisorStatistics:
    """A snapshot of the simulated hypervisor's sizes and counters."""

    physical_bytes: int
    eligible_bytes: int
    reservoir_bytes: int
    vmm_reserved_bytes: int
    vmm_count: int
    grow_steps: int  # completed growth steps
    shrink_steps: int  # completed shrink steps
    failed_steps: int  # steps that raised ReservoirAllocationError
    cancelled_steps: int  # steps cancelled while waiting (nothing applied)
    bytes_grown: int
    bytes_shrunk: int
    vmm_reservations: int  # successful reserve_vmm_memory calls
    vmm_rejections: int  # InsufficientMemory raised


class SimHypervisor:
    """The sled's DRAM, its VMM reservoir, and guest memory taken from it.

    ``physical_bytes`` defaults to 128 GiB with an 8 GiB control-plane reserve, so
    ``eligible_bytes`` is 120 GiB. All sizes are bytes. ``fail_after_bytes`` may be changed
    at any time (a test can make the next step fail, or heal the hypervisor).
    """

    def __init__(
        self,
        physical_bytes: int = 128 * GiB,
        *,
        control_plane_reserve_bytes: int = 8 * GiB,
        seconds_per_gib: float = 1.0,
        fail_after_bytes: int | None = None,
    ) -> None:
        if physical_bytes < 0:
            raise ValueError(f"physical_bytes must be >= 0, got {physical_bytes}")
        if not 0 <= control_plane_reserve_bytes <= physical_bytes:
            raise ValueError(
                f"control_plane_reserve_bytes must be within 0..{physical_bytes}, "
                f"got {control_plane_reserve_bytes}"
            )
        if not seconds_per_gib >= 0:
            raise ValueError(f"seconds_per_gib must be >= 0, got {seconds_per_gib!r}")
        self.physical_bytes = physical_bytes
        self.control_plane_reserve_bytes = control_plane_reserve_bytes
        self.seconds_per_gib = seconds_per_gib
        self.fail_after_bytes = fail_after_bytes
        self._reservoir = 0
        self._vmm: dict[str, int] = {}
        self._grow_steps = 0
        self._shrink_steps = 0
        self._failed_steps = 0
        self._cancelled_steps = 0
        self._bytes_grown = 0
        self._bytes_shrunk = 0
        self._vmm_reservations = 0
        self._vmm_rejections = 0

    # -- sizes ----------------------------------------------------------------------------

    @property
    def eligible_bytes(self) -> int:
        """DRAM the reservoir may use: physical minus the control-plane reserve."""
        return self.physical_bytes - self.control_plane_reserve_bytes

    @property
    def reservoir_bytes(self) -> int:
        """The current reservoir size (completed steps only)."""
        return self._reservoir

    @property
    def vmm_reserved_bytes(self) -> int:
        """Guest memory currently taken from the reservoir by VMMs."""
        return sum(self._vmm.values())

    @property
    def free_reservoir_bytes(self) -> int:
        """Reservoir memory not taken by any VMM."""
        return self._reservoir - self.vmm_reserved_bytes

    def step_seconds(self, chunk_bytes: int) -> float:
        """How long a resize step of *chunk_bytes* takes on the Trio clock."""
        return self.seconds_per_gib * chunk_bytes / GiB

    # -- the reservoir ioctl ----------------------------------------------------------------

    async def grow_reservoir(self, chunk_bytes: int) -> int:
        """Add *chunk_bytes* to the reservoir; returns the new size.

        Takes ``step_seconds(chunk_bytes)`` on the clock, then raises
        ``ReservoirAllocationError`` (nothing added) if the new size would exceed
        ``eligible_bytes`` or ``fail_after_bytes``. Cancelled while waiting: nothing added.
        """
        self._check_chunk(chunk_bytes)
        await self._wait_step(chunk_bytes)
        new = self._reservoir + chunk_bytes
        if new > self.eligible_bytes:
            self._failed_steps += 1
            raise ReservoirAllocationError(
                f"cannot grow the reservoir to {new} bytes: only {self.eligible_bytes} "
                "bytes are eligible",
                reservoir_bytes=self._reservoir,
            )
        if self.fail_after_bytes is not None and new > self.fail_after_bytes:
            self._failed_steps += 1
            raise ReservoirAllocationError(
                f"failed to grow the reservoir from {self._reservoir} to {new} bytes: "
                "insufficient free memory (injected)",
                reservoir_bytes=self._reservoir,
            )
        self._reservoir = new
        self._grow_steps += 1
        self._bytes_grown += chunk_bytes
        return new

    async def shrink_reservoir(self, chunk_bytes: int) -> int:
        """Remove *chunk_bytes* from the reservoir; returns the new size.

        Takes ``step_seconds(chunk_bytes)`` on the clock, then raises
        ``ReservoirAllocationError`` (nothing removed) if that memory is not free (held by
        VMMs, or more than the reservoir holds). Cancelled while waiting: nothing removed.
        """
        self._check_chunk(chunk_bytes)
        await self._wait_step(chunk_bytes)
        if chunk_bytes > self.free_reservoir_bytes:
            self._failed_steps += 1
            raise ReservoirAllocationError(
                f"cannot shrink the reservoir by {chunk_bytes} bytes: only "
                f"{self.free_reservoir_bytes} of {self._reservoir} bytes are not used by VMMs",
                reservoir_bytes=self._reservoir,
            )
        self._reservoir -= chunk_bytes
        self._shrink_steps += 1
        self._bytes_shrunk += chunk_bytes
        return self._reservoir

    def _check_chunk(self, chunk_bytes: int) -> None:
        if chunk_bytes <= 0:
            raise ValueError(f"a resize step must be > 0 bytes, got {chunk_bytes}")

    async def _wait_step(self, chunk_bytes: int) -> None:
        try:
            await trio.sleep(self.step_seconds(chunk_bytes))
        except trio.Cancelled:
            self._cancelled_steps += 1
            raise

    # -- guest memory -------------------------------------------------------------------------

    def reserve_vmm_memory(self, propolis_id: str, nbytes: int) -> None:
        """Take *nbytes* of guest memory for VMM *propolis_id* out of the reservoir.

        Raises ``InsufficientMemory`` (nothing taken) if the reservoir's free part is
        smaller, and ``ValueError`` if this VMM already holds memory or *nbytes* < 0.
        """
        if nbytes < 0:
            raise ValueError(f"VMM {propolis_id}: cannot reserve {nbytes} bytes")
        if propolis_id in self._vmm:
            raise ValueError(
                f"VMM {propolis_id} already holds {self._vmm[propolis_id]} bytes of guest memory"
            )
        free = self.free_reservoir_bytes
        if nbytes > free:
            self._vmm_rejections += 1
            raise InsufficientMemory(propolis_id, nbytes, free)
        self._vmm[propolis_id] = nbytes
        self._vmm_reservations += 1

    def release_vmm_memory(self, propolis_id: str) -> int:
        """Give VMM *propolis_id*'s guest memory back; returns the bytes released
        (0 if it held none: releasing is idempotent)."""
        return self._vmm.pop(propolis_id, 0)

    def vmm_memory(self, propolis_id: str) -> int:
        """Guest memory held by VMM *propolis_id* (0 if none)."""
        return self._vmm.get(propolis_id, 0)

    def statistics(self) -> HypervisorStatistics:
        return HypervisorStatistics(
            physical_bytes=self.physical_bytes,
            eligible_bytes=self.eligible_bytes,
            reservoir_bytes=self._reservoir,
            vmm_reserved_bytes=self.vmm_reserved_bytes,
            vmm_count=len(self._vmm),
            grow_steps=self._grow_steps,
            shrink_steps=self._shrink_steps,
            failed_steps=self._failed_steps,
            cancelled_steps=self._cancelled_steps,
            bytes_grown=self._bytes_grown,
            bytes_shrunk=self._bytes_shrunk,
            vmm_reservations=self._vmm_reservations,
            vmm_rejections=self._vmm_rejections,
        )
