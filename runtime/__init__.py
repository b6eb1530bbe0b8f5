"""trioxide runtime: actors on Trio.

Small core, explicit API. See ``docs/semantics.md`` for the guarantees.
"""

from ._actor import HELPERS, Actor, TimerHandle
from ._context import TraceSite, caused_by, trace_site
from ._errors import (
    ActorGone,
    AskDeadlock,
    AskTimeout,
    InvalidActor,
    MailboxFull,
    ReceiveTimeout,
    Rejected,
    TrioxideError,
    UnhandledMessage,
)
from ._mailbox import MailboxStatistics
from ._messages import Admit, Completed, Interrupted, Terminated
from ._pattern import pattern
from ._ref import TELL_YIELD_EVERY, ActorRef, ActorStatistics, Handles
from ._runtime import ActorInfo, Runtime, open_runtime
from ._supervision import Backoff, ChildSpec, RestartPolicy, SpawnOptions
from ._watch import Watch, WatchStatistics

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
