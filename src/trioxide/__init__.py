"""trioxide: an actor-model runtime on Trio.

``import trioxide`` gives the runtime's public API (``trioxide.Actor``,
``trioxide.open_runtime``, ``trioxide.ActorRef``, the errors, ...), the same objects as
``trioxide.runtime``. The other parts are subpackages:

* ``trioxide.testing`` - deterministic testing: seeded runs, the explorer, ``TestProbe``,
  the pytest plugin (like ``trio.testing``);
* ``trioxide.traces`` - the trace model, tracer, sinks, trace files, exporters, the viewer;
* ``trioxide.actors`` - the simulated sled agent built from these actors;
* ``trioxide.cli`` - the ``trioxide`` command.
"""

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
    "trace_site",
]
