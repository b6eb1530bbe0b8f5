"""Scenarios: a seed becomes a small, bounded, random actor program (pure data).

``generate(seed)`` draws everything from ``random.Random(seed)``:

* an actor tree (1-8 actors, depth <= 3) with random spawn options, admission and
  priority rules, drain answers, monitors, and ``on_start``/``on_stop`` crashes;
* a table of handler *plans* in three levels: a plan of level k may send messages whose
  plans have a level < k, so every chain of messages is finite;
* the outside driver's operations over virtual time, and how the block ends.

Times are multiples of 1/4 s, so virtual times stay exact in binary floating point.
Nothing here touches Trio: a ``Scenario`` is what ``world.run_world`` executes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Literal

#: How many message kinds exist (``world.KINDS``); "narrow" actors do not accept the last.
N_KINDS = 4
NARROW_KINDS = (0, 1, 2)
#: An untimed ask from an actor task to an actor that may park (``receive`` without a
#: timeout) gets this timeout instead, see ``ActorSpec.may_park``; so does an untimed ask
#: from ``on_start`` to an actor that restarts (``World._ask``).
PARK_SAFE_TIMEOUT = 3.0
#: ``AskStep.target``: ask back the actor that sent the message being handled (A -> B -> A).
ASK_BACK = -1
MAX_DEPTH = 3

RestartPolicy = Literal["permanent", "transient", "temporary"]
AdmitAction = Literal["reject", "reject-custom", "reject-if-busy", "ignore", "raise", "bad"]
DrainMode = Literal["default", "value", "error"]


# -- handler plans -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Raise:
    """Raise ``HandlerError`` for the message being handled (always a plan's last step)."""


@dataclass(frozen=True)
class EarlyReply:
    """``self.reply(msg, Reply(id))`` for the current message, then go on."""


@dataclass(frozen=True)
class Receive:
    """``receive(*kinds, timeout=)``; ``kinds == ()`` takes any message (Terminated too).
    ``timeout=None`` only in actors that may park; elsewhere it becomes 2 s."""

    kinds: tuple[int, ...]
    timeout: float | None
    reply: bool


@dataclass(frozen=True)
class Serve:
    """``serve_until(trio.sleep, seconds, serve=..., interrupt=...)``."""

    seconds: float
    serve: tuple[int, ...]
    interrupt: tuple[int, ...]
    reply: bool


@dataclass(frozen=True)
class AskStep:
    """Ask actor ``target`` (spec index, or ``ASK_BACK``: the sender of the message being
    handled) a ``kind`` message that carries ``plan``."""

    target: int
    kind: int
    plan: int
    timeout: float | None


@dataclass(frozen=True)
class TellStep:
    """``tell_nowait``, or ``tell`` inside ``move_on_after(limit)`` (never blocks for long)."""

    target: int
    kind: int
    plan: int
    nowait: bool
    limit: float


@dataclass(frozen=True)
class SpawnTask:
    """``start_soon`` a child task that sleeps ``delay`` and then raises (if ``crash``)."""

    delay: float
    crash: bool


@dataclass(frozen=True)
class StopSelf:
    """``self.stop()``."""


Step = Sleep | Raise | EarlyReply | Receive | Serve | AskStep | TellStep | SpawnTask | StopSelf


@dataclass(frozen=True)
class Plan:
    level: int
    steps: tuple[Step, ...]


# -- actors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorSpec:
    idx: int
    name: str
    parent: int | None
    depth: int
    children: tuple[int, ...]
    # spawn options
    restart: RestartPolicy | None
    max_restarts: int
    within: float
    backoff: float | None
    mailbox_size: int
    # behaviour
    narrow: bool  # handle() accepts only NARROW_KINDS (others: UnhandledMessage)
    admit: tuple[tuple[int, AdmitAction], ...] | None  # None: no admit() override
    priority: tuple[tuple[int, int | str], ...] | None  # level, or "raise" / "bad"
    terminated_priority: int
    drain_mode: DrainMode
    may_park: bool  # its handlers may wait in receive() without a timeout
    start_sleep: float
    start_ask: AskStep | None
    start_crash_on: int | None  # crash in the n-th on_start call of this spec (any cell)
    start_crash_late: bool  # ... after spawning the children (else before)
    stop_crash_on: int | None  # crash in the n-th on_stop call of this spec
    monitors: tuple[int, ...]  # spec indices to monitor at each on_start


# -- the driver ----------------------------------------------------------------------------

OpAction = Literal["tell", "tell_nowait", "ask", "ask_scoped", "stop"]


@dataclass(frozen=True)
class Op:
    n: int
    at: float
    action: OpAction
    target: int
    kind: int = 0
    plan: int = 0
    timeout: float | None = None  # ask
    cancel_after: float | None = None  # ask_scoped
    grace: float | None = None  # stop


@dataclass(frozen=True)
class Scenario:
    seed: int
    actors: tuple[ActorSpec, ...]
    plans: tuple[Plan, ...]
    ops: tuple[Op, ...]
    end_at: float
    raise_out: bool  # raise out of the open_runtime block at end_at (else leave it)

    def exit_order(self) -> list[int]:
        """Spec indices in the order leaving the block stops them (pre-order: top-level
        actors in reverse spawn order, each before its children in reverse order)."""
        order: list[int] = []

        def visit(i: int) -> None:
            order.append(i)
            for c in reversed(self.actors[i].children):
                visit(c)

        for a in reversed(self.actors):
            if a.parent is None:
                visit(a.idx)
        return order

    def describe(self) -> str:
        """A human summary (for ``--replay``)."""
        lines = [f"scenario {self.seed}: {len(self.actors)} actors, {len(self.ops)} ops, "
                 f"block ends at t={self.end_at} by {'raising' if self.raise_out else 'leaving'}"]
        for a in self.actors:
            path = a.name
            p = a.parent
            while p is not None:
                path = f"{self.actors[p].name}/{path}"
                p = self.actors[p].parent
            extras = []
            if a.narrow:
                extras.append("narrow")
            if a.admit:
                extras.append(f"admit={dict(a.admit)}")
            if a.priority:
                extras.append(f"priority={dict(a.priority)}")
            if a.may_park:
                extras.append("may_park")
            if a.start_crash_on:
                extras.append(f"on_start crash #{a.start_crash_on}")
            if a.stop_crash_on:
                extras.append(f"on_stop crash #{a.stop_crash_on}")
            if a.monitors:
                extras.append(f"monitors={list(a.monitors)}")
            if a.start_ask:
                extras.append(f"on_start asks {a.start_ask}")
            lines.append(
                f"  [{a.idx}] {path}: restart={a.restart} max={a.max_restarts} "
                f"within={a.within} backoff={a.backoff} mailbox={a.mailbox_size} "
                f"drain={a.drain_mode} {' '.join(extras)}"
            )
        for i, plan in enumerate(self.plans):
            lines.append(f"  plan {i} (level {plan.level}): {list(plan.steps)}")
        for op in self.ops:
            lines.append(f"  op {op}")
        return "\n".join(lines)


# -- generation --------------------------------------------------------------------------


def _quarter(rng: random.Random, lo: float, hi: float) -> float:
    """A multiple of 0.25 in [lo, hi]."""
    return rng.randint(int(lo * 4), int(hi * 4)) / 4


def _pick_kinds(rng: random.Random, k: int) -> tuple[int, ...]:
    return tuple(sorted(rng.sample(range(N_KINDS), k)))


def _tree(rng: random.Random, n: int) -> list[tuple[int | None, int]]:
    """(parent, depth) per actor; parents come before their children."""
    out: list[tuple[int | None, int]] = []
    for i in range(n):
        candidates = [j for j in range(i) if out[j][1] < MAX_DEPTH]
        if i == 0 or not candidates or rng.random() < 0.45:
            out.append((None, 1))
        else:
            j = rng.choice(candidates)
            out.append((j, out[j][1] + 1))
    return out


def _actor(
    rng: random.Random, idx: int, parent: int | None, depth: int, children: tuple[int, ...],
    n: int,
) -> ActorSpec:
    policies: list[RestartPolicy | None] = [None, "permanent", "transient", "temporary"]
    restart = rng.choices(policies, weights=[2, 3, 3, 2])[0]
    admit: tuple[tuple[int, AdmitAction], ...] | None = None
    if rng.random() < 0.35:
        actions: list[AdmitAction] = ["reject", "reject-custom", "reject-if-busy", "ignore"]
        if rng.random() < 0.35:
            actions += ["raise", "bad"]
        kinds = rng.sample(range(N_KINDS), rng.randint(1, 2))
        admit = tuple((k, rng.choice(actions)) for k in sorted(kinds))
    priority: tuple[tuple[int, int | str], ...] | None = None
    if rng.random() < 0.35:
        rules: list[tuple[int, int | str]] = [(rng.randrange(N_KINDS), 5)]
        if rng.random() < 0.5:
            rules.append((rng.randrange(N_KINDS), rng.choice([1, 2, -1])))
        if rng.random() < 0.25:
            rules.append((rng.randrange(N_KINDS), rng.choice(["raise", "bad"])))
        priority = tuple(dict(rules).items())
    start_crash_on = rng.choice([1, 2, 2, 3]) if rng.random() < 0.15 else None
    stop_crash_on = rng.choice([1, 2, 2]) if rng.random() < 0.12 else None
    others = [j for j in range(n) if j != idx]
    monitors = tuple(sorted(rng.sample(others, min(len(others), rng.randint(1, 2)))))
    return ActorSpec(
        idx=idx,
        name=f"a{idx}",
        parent=parent,
        depth=depth,
        children=children,
        restart=restart,
        max_restarts=rng.randint(0, 3),
        within=float(rng.randint(1, 10)),
        backoff=rng.choice([None, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 2.0]),
        mailbox_size=rng.randint(1, 8),
        narrow=rng.random() < 0.2,
        admit=admit,
        priority=priority,
        terminated_priority=rng.choice([0, 0, 5]),
        drain_mode=rng.choice(["default", "default", "value", "error"]),
        may_park=rng.random() < 0.25,
        start_sleep=rng.choice([0.0, 0.0, 0.0, 0.25, 1.0]),
        start_ask=None,  # filled in once plans exist
        start_crash_on=start_crash_on,
        start_crash_late=rng.random() < 0.5,
        stop_crash_on=stop_crash_on,
        monitors=monitors if rng.random() < 0.3 else (),
    )


def _timeout(rng: random.Random) -> float | None:
    return rng.choice([None, None, 0.0, 0.5, 1.0, 2.5, 5.0])


def _plan(
    rng: random.Random, level: int, n_actors: int, lower: list[int], ping: int | None = None
) -> Plan:
    """A random plan; its asks may use ``ping`` (a plan that asks back its sender)."""
    steps: list[Step] = []
    for _ in range(rng.randint(1, 3)):
        r = rng.random()
        if level > 0 and r < 0.45:
            target = rng.randrange(n_actors)
            kind = rng.randrange(N_KINDS)
            plan = rng.choice(lower)
            if ping is not None and rng.random() < 0.35:
                steps.append(AskStep(target, kind, ping, rng.choice([None, None, 2.5])))
                continue
            if rng.random() < 0.15:
                steps.append(AskStep(ASK_BACK, kind, plan, rng.choice([None, None, 1.0])))
            elif rng.random() < 0.55:
                steps.append(AskStep(target, kind, plan, _timeout(rng)))
            else:
                steps.append(
                    TellStep(target, kind, plan, rng.random() < 0.4, _quarter(rng, 0.25, 2))
                )
        elif r < 0.62:
            steps.append(Sleep(_quarter(rng, 0, 2.5)))
        elif r < 0.72:
            kinds = () if rng.random() < 0.2 else _pick_kinds(rng, rng.randint(1, 2))
            timeout = rng.choice([None, 0.0, 0.0, 0.5, 2.0])
            steps.append(Receive(kinds, timeout, rng.random() < 0.5))
        elif r < 0.80:
            serve = _pick_kinds(rng, rng.randint(0, 2))
            interrupt = tuple(k for k in _pick_kinds(rng, rng.randint(0, 1)) if k not in serve)
            steps.append(Serve(_quarter(rng, 0.5, 3), serve, interrupt, rng.random() < 0.5))
        elif r < 0.87:
            steps.append(SpawnTask(_quarter(rng, 0, 2), rng.random() < 0.6))
        elif r < 0.92:
            steps.append(EarlyReply())
        elif r < 0.95:
            steps.append(StopSelf())
        else:
            steps.append(Sleep(0.25))
    if rng.random() < 0.18:
        steps.append(Raise())
    return Plan(level, tuple(steps))


def generate(seed: int) -> Scenario:
    """The scenario of *seed* (a pure function of it)."""
    rng = random.Random(seed)
    n = rng.randint(1, 8)
    tree = _tree(rng, n)
    children = {i: tuple(j for j in range(n) if tree[j][0] == i) for i in range(n)}
    actors = [_actor(rng, i, tree[i][0], tree[i][1], children[i], n) for i in range(n)]

    plans: list[Plan] = []
    by_level: dict[int, list[int]] = {}
    ping: int | None = None
    for level in range(3):
        lower = by_level.get(level - 1, []) + by_level.get(level - 2, [])
        for _ in range(rng.randint(2, 4)):
            by_level.setdefault(level, []).append(len(plans))
            plans.append(_plan(rng, level, n, lower, ping if level == 2 else None))
        if level == 1 and rng.random() < 0.6:
            # ping-pong: asks back whoever asked (A -> B -> A, an ask cycle if A waits)
            back = AskStep(ASK_BACK, rng.randrange(N_KINDS), rng.choice(by_level[0]), None)
            ping = len(plans)
            by_level[1].append(ping)
            plans.append(Plan(1, (Sleep(_quarter(rng, 0, 1)), back)))

    # on_start asks go to earlier top-level actors that are not ancestors (a parent in
    # on_start is blocked in spawn: asking it would be an application deadlock).
    for i, spec in enumerate(actors):
        ancestors = set()
        p = spec.parent
        while p is not None:
            ancestors.add(p)
            p = actors[p].parent
        top_before = [
            j for j in range(i) if actors[j].parent is None and j not in ancestors
        ]
        if top_before and rng.random() < 0.2:
            ask = AskStep(
                rng.choice(top_before),
                rng.randrange(N_KINDS),
                rng.choice(by_level[0] + by_level[1]),
                rng.choice([None, None, 1.0, 3.0]),
            )
            actors[i] = replace(spec, start_ask=ask)

    ops: list[Op] = []
    end_at = _quarter(rng, 8, 16)
    for k in range(rng.randint(8, 26)):
        at = _quarter(rng, 0, end_at + (2 if rng.random() < 0.1 else 0))
        actions: list[OpAction] = ["tell", "tell_nowait", "ask", "ask_scoped", "stop"]
        action = rng.choices(actions, weights=[25, 10, 28, 15, 7])[0]
        target = rng.randrange(n)
        kind = rng.randrange(N_KINDS)
        plan = rng.randrange(len(plans))
        if action == "stop":
            grace = rng.choice([None, 0.0, 0.5, 1.0, 2.0])
            ops.append(Op(k, at, action, target, grace=grace))
        elif action == "ask":
            ops.append(Op(k, at, action, target, kind, plan, timeout=_timeout(rng)))
        elif action == "ask_scoped":
            cancel_after = rng.choice([0.0, 0.0, 0.25, 0.5, 1.0, 3.0])
            ops.append(Op(k, at, action, target, kind, plan, cancel_after=cancel_after))
        else:
            ops.append(Op(k, at, action, target, kind, plan))
    ops.sort(key=lambda o: (o.at, o.n))
    return Scenario(seed, tuple(actors), tuple(plans), tuple(ops), end_at, rng.random() < 0.15)

