"""Sled-agent errors, each with the HTTP status and error code the API layer maps it to
(spec/sled-agent.md §2: InstanceChannelFull 503 INSTANCE_CHANNEL_FULL; Terminating and
InstanceGone 410 NO_SUCH_INSTANCE; NoSuchVmm 404 NO_SUCH_INSTANCE; others 500)."""

from __future__ import annotations

__all__ = [
    "InstanceChannelFull",
    "InstanceGone",
    "NoSuchVmm",
    "PropolisAlreadyRegistered",
    "SledAgentError",
    "Terminating",
    "VmNotRunning",
    "VmmTearingDown",
]


class SledAgentError(Exception):
    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, propolis_id: str, detail: str = "") -> None:
        super().__init__(propolis_id, detail)
        self.propolis_id = propolis_id
        self.detail = detail

    def __str__(self) -> str:
        text = f"{type(self).__name__} ({self.status} {self.code}) for VMM {self.propolis_id}"
        return f"{text}: {self.detail}" if self.detail else text


class InstanceChannelFull(SledAgentError):
    """The VMM's runner has 32 requests queued already (try again)."""

    status = 503
    code = "INSTANCE_CHANNEL_FULL"


class InstanceGone(SledAgentError):
    """The VMM's runner is gone or was terminated while the request waited."""

    status = 410
    code = "NO_SUCH_INSTANCE"


class Terminating(SledAgentError):
    """The VMM is tearing down; the request will not be handled."""

    status = 410
    code = "NO_SUCH_INSTANCE"


class NoSuchVmm(SledAgentError):
    """No VMM with this id (and generation) is registered."""

    status = 404
    code = "NO_SUCH_INSTANCE"


class PropolisAlreadyRegistered(SledAgentError):
    """The propolis id is registered for another instance."""

    status = 409
    code = "PROPOLIS_ALREADY_REGISTERED"


class VmNotRunning(SledAgentError):
    """The request needs a running VM (a Propolis zone)."""


class VmmTearingDown(SledAgentError):
    """The VMM with this id is being torn down; registering it again must wait (retryable).

    Start-token design (#3325): a second runner for the same id is never created while the
    first still tears down - the saga retries instead."""

    status = 503
    code = "VMM_TEARING_DOWN"
