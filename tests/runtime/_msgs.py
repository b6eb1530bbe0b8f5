"""Message types and small actors shared by the runtime tests."""

from __future__ import annotations

import msgspec
import trio

from trioxide.runtime import Actor


class Incr(msgspec.Struct, frozen=True):
    by: int = 1


class Get(msgspec.Struct, frozen=True):
    pass


class Boom(msgspec.Struct, frozen=True):
    why: str = "boom"


class Sleep(msgspec.Struct, frozen=True):
    seconds: float
    tag: str = ""


class Note(msgspec.Struct, frozen=True):
    text: str


class Counter(Actor):
    """Counts; ``Sleep`` blocks the handler; ``Boom`` raises."""

    def __init__(self, start: int = 0, log: list[str] | None = None) -> None:
        self.n = start
        self.log = log if log is not None else []

    async def handle(self, msg: Incr | Get | Boom | Sleep) -> int | None:
        match msg:
            case Incr(by):
                self.n += by
                self.log.append(f"incr {by}")
            case Get():
                return self.n
            case Boom(why):
                raise ValueError(why)
            case Sleep(seconds, tag):
                self.log.append(f"sleep {tag} start")
                await trio.sleep(seconds)
                self.log.append(f"sleep {tag} end")
                return self.n
        return None
