"""trioxide runtime: actors on Trio.

Small core, explicit API. See ``docs/semantics.md`` for the guarantees.
"""

from ._actor import Actor, RestartPolicy, TimerHandle
from ._errors import (
    ActorGone,
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
from ._ref import TELL_YIELD_EVERY, ActorRef, ActorStatistics
from ._runtime import ActorInfo, Runtime, open_runtime
from ._watch import Watch, WatchStatistics

__all__ = [
    "TELL_YIELD_EVERY",
    "Actor",
    "ActorGone",
    "ActorInfo",
    "ActorRef",
    "ActorStatistics",
    "Admit",
    "AskTimeout",
    "Completed",
    "Interrupted",
    "InvalidActor",
    "MailboxFull",
    "MailboxStatistics",
    "ReceiveTimeout",
    "Rejected",
    "RestartPolicy",
    "Runtime",
    "Terminated",
    "TimerHandle",
    "TrioxideError",
    "UnhandledMessage",
    "Watch",
    "WatchStatistics",
    "open_runtime",
]
