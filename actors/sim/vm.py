"""Simulated VM devices and vCPUs for the Propolis state driver.

What a test can do: make device start fail, make a backend fail to start, inject a
guest-initiated halt or reboot (delivered to the driver as messages), and choose how long
reset, halt and migration take on the Trio clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DeviceStartError", "SimulatedVm"]


class DeviceStartError(Exception):
    """A device failed to start (the VM ends Failed)."""


@dataclass
class SimulatedVm:
    fail_device_start: bool = False
    reset_time: float = 0.5
    halt_time: float = 0.1
    migrate_time: float = 2.0
    migrate_ok: bool = True
    vcpus_running: bool = False
    log: list[str] = field(default_factory=list)

    def start_devices(self) -> None:
        if self.fail_device_start:
            self.log.append("devices: start failed")
            raise DeviceStartError("device 'virtio-net0' failed to start")
        self.log.append("devices: started")

    def resume_vcpus(self) -> None:
        self.vcpus_running = True
        self.log.append("vcpus: running")

    def pause_vcpus(self) -> None:
        self.vcpus_running = False
        self.log.append("vcpus: paused")
