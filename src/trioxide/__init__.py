"""trioxide: an actor-model runtime on Trio.

``import trioxide`` gives the runtime's public API (``trioxide.Actor``,
``trioxide.open_runtime``, ``trioxide.ActorRef``, the errors, ...), the same objects as
``trioxide.runtime``. The other parts are subpackages:

* ``trioxide.testing`` - deterministic testing: seeded runs, the explorer, ``TestProbe``,
  the pytest plugin (like ``trio.testing``);
* ``trioxide.traces`` - the trace model, tracer, sinks, trace files, exporters, the viewer;
* ``trioxide.actors`` - the simulated sled agent built from these actors;
* ``trioxide.cli`` - the ``trioxide`` command.

``import trioxide`` itself loads nothing else: each name is imported from
``trioxide.runtime`` (and each subpackage) when first used, so the ``trioxide`` command
starts with only its own module loaded and can answer a Ctrl-C pressed while the rest
loads (see ``trioxide.cli``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import (
        HELPERS,
        TELL_YIELD_EVERY,
        Actor,
        ActorGone,
        ActorInfo,
        ActorRef,
        ActorStatistics,
        Admit,
        AskDeadlock,
        AskTimeout,
        Backoff,
        ChildSpec,
        Completed,
        Handles,
        Interrupted,
        InvalidActor,
        MailboxFull,
        MailboxStatistics,
        ReceiveTimeout,
        Rejected,
        RestartPolicy,
        Runtime,
        SpawnOptions,
        Terminated,
        TimerHandle,
        TraceSite,
        TrioxideError,
        UnhandledMessage,
        Watch,
        WatchStatistics,
        caused_by,
        open_runtime,
        pattern,
        trace_site,
    )

__all__ = [
    "HELPERS",
    "TELL_YIELD_EVERY",
    "Actor",
    "ActorGone",
    "ActorInfo",
    "ActorRef",
    "ActorStatistics",
    "Admit",
    "AskDeadlock",
    "AskTimeout",
    "Backoff",
    "ChildSpec",
    "Completed",
    "Handles",
    "Interrupted",
    "InvalidActor",
    "MailboxFull",
    "MailboxStatistics",
    "ReceiveTimeout",
    "Rejected",
    "RestartPolicy",
    "Runtime",
    "SpawnOptions",
    "Terminated",
    "TimerHandle",
    "TraceSite",
    "TrioxideError",
    "UnhandledMessage",
    "Watch",
    "WatchStatistics",
    "caused_by",
    "open_runtime",
    "pattern",
    "trace_site",
]

#: The subpackages, loaded on first use as ``trioxide.<name>`` (as by an import of it).
_SUBPACKAGES = frozenset({"actors", "cli", "runtime", "testing", "traces"})


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in __all__:
        value = getattr(importlib.import_module(f"{__name__}.runtime"), name)
        globals()[name] = value  # the next lookup finds it without this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBPACKAGES})
