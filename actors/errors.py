"""Sled-agent errors: everything a caller of the sled agent's API (``SledAgentClient``) can
get, each with the HTTP status and error code an HTTP layer answers with.

Upstream (omicron ``sled-agent/src/sled_agent.rs``, ``impl From<Error> for HttpError``):
instance channel full -> 503 ``INSTANCE_CHANNEL_FULL``; ``Terminating`` -> 410
``NO_SUCH_INSTANCE``; ``NoSuchVmm`` -> 404 ``NO_SUCH_INSTANCE``; a Propolis client error
keeps its 4xx status (and 503); everything else -> 500. Nexus reads 404 +
``NO_SUCH_INSTANCE`` (only that pair) as "the VMM is gone" and marks it
``Failed(no_such_instance)`` (omicron ``nexus/src/app/instance.rs``, ``vmm_gone``), so a
404 with that code must mean exactly "not registered here".

Ours beyond upstream (docs/upstream/sled-agent.md has the table): bad input is an
``InvalidRequest`` (400) naming the field and the value, where upstream's typed path and
body parameters make Dropshot answer 400 before any handler runs;
``PropolisAlreadyRegistered`` is 409 (upstream: 500); a Propolis refusal is
``PropolisRefused`` (403, Propolis's own status for a forbidden state change); a VMM torn
down while a request waited is ``InstanceGone`` (410, upstream's ``Terminating``).
Reservoir errors are sled-agent errors *and* the reservoir module's own classes.
"""

from __future__ import annotations

from .reservoir import ReservoirBusy, ReservoirConfigError

__all__ = [
    "U64_MAX",
    "InstanceChannelFull",
    "InstanceGone",
    "InternalError",
    "InvalidRequest",
    "NoSuchBackend",
    "NoSuchVmm",
    "PropolisAlreadyRegistered",
    "PropolisRefused",
    "ReservoirBusyError",
    "ReservoirConfigInvalid",
    "ServiceUnavailable",
    "SledAgentError",
    "Terminating",
    "VcrReplacementInvalid",
    "VmNotRunning",
    "VmmTearingDown",
    "describe_value",
]

U64_MAX = 2**64 - 1
"""The largest generation (upstream generations are ``u64``)."""


class SledAgentError(Exception):
    """Base class: ``status`` (HTTP), ``code`` (the body's ``error_code``), the VMM it is
    about (``propolis_id``, ``""`` if none) and a human ``detail``."""

    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, propolis_id: str = "", detail: str = "") -> None:
        # Not super(): a subclass may also derive from an error with another signature
        # (ReservoirBusyError), whose __init__ must not run with these arguments.
        Exception.__init__(self, propolis_id, detail)
        self.propolis_id = propolis_id
        self.detail = detail

    def __str__(self) -> str:
        text = f"{type(self).__name__} ({self.status} {self.code})"
        if self.propolis_id:
            text += f" for VMM {self.propolis_id}"
        return f"{text}: {self.detail}" if self.detail else text

    def body(self) -> dict[str, str]:
        """The HTTP error body (upstream's Dropshot shape, without the request id)."""
        return {"error_code": self.code, "message": str(self)}


class InvalidRequest(SledAgentError):
    """Bad input at the API boundary: *field* holds *value*, which is not acceptable
    (*why*). Nothing was sent to any actor, so nothing changed."""

    status = 400
    code = "INVALID_REQUEST"

    def __init__(self, field: str, value: object, why: str, propolis_id: str = "") -> None:
        super().__init__(propolis_id, f"{field}={describe_value(value)} is invalid: {why}")
        self.args = (field, value, why)
        self.field = field
        self.value = value
        self.why = why


class InstanceChannelFull(SledAgentError):
    """The VMM's runner has 32 requests queued already (try again)."""

    status = 503
    code = "INSTANCE_CHANNEL_FULL"


class InstanceGone(SledAgentError):
    """The VMM's runner (or its Propolis) is gone, or the VMM was torn down while the
    request waited (upstream ``Terminating``)."""

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
    """The request needs a running VM (a Propolis zone). Upstream ``VmNotRunning`` has
    no specific mapping: 500."""


class VmmTearingDown(SledAgentError):
    """The VMM with this id is being torn down; registering it again must wait (retryable).

    Start-token design (#3325): a second runner for the same id is never created while the
    first still tears down - the saga retries instead."""

    status = 503
    code = "VMM_TEARING_DOWN"


class PropolisRefused(SledAgentError):
    """Propolis refused the requested change (e.g. a Reboot while the VM is still
    starting: ``StartInProgress``); the VMM is unaffected. Upstream's ``put_state`` returns
    such refusals to the caller and fails the VMM only on ``NoInstance``/``CreateFailed``.
    Status 403: Propolis answers a forbidden state change with 403 (propolis
    ``server.rs``, ``instance_state_put``) and the sled agent passes a Propolis 4xx through.
    ``reason`` is Propolis's code (``detail`` its message)."""

    status = 403
    code = "PROPOLIS_REQUEST_REFUSED"

    def __init__(self, propolis_id: str, reason: str, detail: str = "") -> None:
        super().__init__(propolis_id, detail or reason)
        self.reason = reason


class NoSuchBackend(SledAgentError):
    """The VMM's Propolis has no Crucible backend with this id (Propolis: 404). Not
    ``NO_SUCH_INSTANCE``: the VMM itself is fine."""

    status = 404
    code = "NO_SUCH_BACKEND"


class VcrReplacementInvalid(InvalidRequest):
    """Crucible refused a VCR replacement (it can never apply: same VCR, other region
    parameters, a generation not greater than the stored one, ...). Propolis: 400."""

    code = "VCR_REPLACEMENT_INVALID"


class ServiceUnavailable(SledAgentError):
    """A sled-agent service did not take or answer the request in time (try again)."""

    status = 503
    code = "SERVICE_UNAVAILABLE"


class InternalError(SledAgentError):
    """A failure inside the sled agent with no more specific meaning (e.g. one of its
    services is gone). The original exception is the ``__cause__``."""


class ReservoirBusyError(SledAgentError, ReservoirBusy):
    """A reservoir resize is already running (also a ``reservoir.ReservoirBusy``)."""

    status = 503
    code = "RESERVOIR_BUSY"

    def __init__(self, busy: ReservoirBusy) -> None:
        super().__init__("", str(busy))
        self.target_bytes = busy.target_bytes
        self.reservoir_bytes = busy.reservoir_bytes


class ReservoirConfigInvalid(InvalidRequest, ReservoirConfigError):
    """An invalid reservoir mode (also a ``reservoir.ReservoirConfigError``)."""

    code = "RESERVOIR_CONFIG_INVALID"


def describe_value(value: object, limit: int = 64) -> str:
    """``repr(value)``, shortened past *limit* characters (saying how long it was).
    Never raises (an int too long to print, a ``__repr__`` that fails)."""
    try:
        text = repr(value)
    except Exception:
        if isinstance(value, int):  # too many digits to print
            return f"<an int of {value.bit_length()} bits>"
        return f"<a {type(value).__name__} that cannot be shown>"
    if len(text) <= limit:
        return text
    if isinstance(value, str):
        size = f"{len(value)} characters"
    elif isinstance(value, bytes):
        size = f"{len(value)} bytes"
    else:
        size = f"repr of {len(text)} characters"
    return f"{text[:limit]}... ({size})"
