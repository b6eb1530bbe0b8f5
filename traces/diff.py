"""Where two traces part ways: ``trioxide trace diff A B``.

The tool for "one seed passes and another fails" and "this run stopped reproducing". The
events of both traces are compared in ``seq`` order, every field: traces of seeded
MockClock runs are byte-identical for the same seed, so any difference is news. Under a
real clock the times differ from run to run; ``ignore_time`` (``--ignore-time``) leaves
``t`` and ``t0`` out of the comparison.

The first event that differs is reported with both versions, the fields they differ in,
how many events follow it in each trace, and its causal chain in each trace, root first:
the message being handled when the step happened (``cause``; for a step *about* a message
- its receive, handle, drop, timeout or cancel - that message), that message's ``send``,
the message its sender was handling, and so on up to a send from outside any actor.
Chain lines the two traces share are marked ``=``.

These are pure functions over lists of :class:`TraceEvent`; :func:`register` adds the
``trace diff`` subcommand to the ``trioxide`` command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ._event import TraceEvent
from ._reader import TraceFile, read_trace

__all__ = ["Divergence", "causal_chain", "first_divergence", "format_divergence", "register"]

#: Kinds whose ``msg_id`` is the message the step is about (its chain starts at its send).
_ABOUT_A_MESSAGE = frozenset({"receive", "handle", "drop", "timeout", "cancel"})

#: The fields of an event in the order they are printed.
_FIELDS = tuple(f.name for f in msgspec.structs.fields(TraceEvent))

#: Payloads longer than this are cut in the report (the files hold them whole).
_PAYLOAD_CHARS = 160


@dataclass(frozen=True)
class Divergence:
    """The first place where trace A and trace B differ.

    ``index`` is the position in both event lists (in ``seq`` order); ``a``/``b`` the two
    versions (``None``: that trace ended before it); ``fields`` the fields they differ in
    (empty if one trace ended); ``chain_a``/``chain_b`` the causal chains leading to each,
    root first, ending with the event itself; ``shared`` how many leading chain entries the
    two have in common; ``after_a``/``after_b`` how many events follow in each trace.
    """

    index: int
    a: TraceEvent | None
    b: TraceEvent | None
    fields: tuple[str, ...]
    chain_a: tuple[TraceEvent, ...]
    chain_b: tuple[TraceEvent, ...]
    shared: int
    after_a: int
    after_b: int


def _comparable(event: TraceEvent, ignore_time: bool) -> TraceEvent:
    if not ignore_time:
        return event
    return msgspec.structs.replace(event, t=0.0, t0=None if event.t0 is None else 0.0)


def _differing(a: TraceEvent, b: TraceEvent, ignore_time: bool) -> tuple[str, ...]:
    skip = ("t", "t0") if ignore_time else ()
    return tuple(
        name for name in _FIELDS if name not in skip and getattr(a, name) != getattr(b, name)
    )


def causal_chain(events: Sequence[TraceEvent], event: TraceEvent) -> tuple[TraceEvent, ...]:
    """The chain of ``send`` events that led to *event* in *events*, root first, ending with
    *event* itself (see the module docstring). A link whose send is not in *events* (a
    bounded sink dropped it) ends the chain there."""
    sends = {e.msg_id: e for e in events if e.kind == "send" and e.msg_id is not None}
    chain = [event]
    seen: set[int] = set()
    current = event
    while True:
        link = current.msg_id if current.kind in _ABOUT_A_MESSAGE else None
        if link is None:
            link = current.cause
        if link is None or link in seen:
            break
        seen.add(link)
        send = sends.get(link)
        if send is None or send is current:
            break
        chain.append(send)
        current = send
    chain.reverse()
    return tuple(chain)


def first_divergence(
    a: Sequence[TraceEvent], b: Sequence[TraceEvent], *, ignore_time: bool = False
) -> Divergence | None:
    """The first event where *a* and *b* differ (both taken in ``seq`` order), or ``None``
    if they are the same. With *ignore_time*, ``t`` and ``t0`` are not compared."""
    evs_a = sorted(a, key=lambda e: e.seq)
    evs_b = sorted(b, key=lambda e: e.seq)
    index = 0
    for ea, eb in zip(evs_a, evs_b, strict=False):
        if _comparable(ea, ignore_time) != _comparable(eb, ignore_time):
            break
        index += 1
    else:
        if len(evs_a) == len(evs_b):
            return None
    ea_ = evs_a[index] if index < len(evs_a) else None
    eb_ = evs_b[index] if index < len(evs_b) else None
    chain_a = causal_chain(evs_a, ea_) if ea_ is not None else ()
    chain_b = causal_chain(evs_b, eb_) if eb_ is not None else ()
    shared = 0
    for ca, cb in zip(chain_a, chain_b, strict=False):
        if _comparable(ca, ignore_time) != _comparable(cb, ignore_time):
            break
        shared += 1
    return Divergence(
        index=index,
        a=ea_,
        b=eb_,
        fields=_differing(ea_, eb_, ignore_time) if ea_ is not None and eb_ is not None else (),
        chain_a=chain_a,
        chain_b=chain_b,
        shared=shared,
        after_a=max(len(evs_a) - index - 1, 0),
        after_b=max(len(evs_b) - index - 1, 0),
    )


def _value(event: TraceEvent, name: str) -> str | None:
    """One field for the report, or ``None`` if it is empty."""
    value = getattr(event, name)
    if name == "payload":
        if len(value) == 0:
            return None
        text = bytes(value).decode("utf-8", "replace")
        return text if len(text) <= _PAYLOAD_CHARS else text[:_PAYLOAD_CHARS] + "..."
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _describe_event(event: TraceEvent) -> str:
    """Every field of *event* that is set, as ``name=value`` (strings quoted)."""
    parts = []
    for name in _FIELDS:
        text = _value(event, name)
        if text is None:
            continue
        if isinstance(getattr(event, name), str):
            text = repr(text)
        parts.append(f"{name}={text}")
    return " ".join(parts)


def _brief(event: TraceEvent) -> str:
    """One chain line: what happened, to whom, from whom."""
    if event.kind == "send":
        sender = event.peer if event.peer is not None else "(outside)"
        what = f"send {event.msg_type} msg {event.msg_id}: {sender} -> {event.actor}"
    else:
        what = f"{event.kind} {event.actor}"
        if event.msg_type is not None:
            what += f" {event.msg_type}"
        if event.msg_id is not None:
            what += f" msg {event.msg_id}"
        if event.cause is not None:
            what += f" (while handling msg {event.cause})"
        if event.outcome is not None:
            what += f" -> {event.outcome}"
        if event.detail is not None:
            what += f": {event.detail}"
    return f"seq {event.seq} t={event.t:g} {what}"


def _chain_lines(label: str, chain: Sequence[TraceEvent], shared: int) -> list[str]:
    if not chain:
        return []
    lines = [f"causal chain in {label} (root first; '=' shared with the other trace):"]
    for i, event in enumerate(chain):
        mark = "=" if i < shared else label
        lines.append(f"  {mark} {_brief(event)}")
    return lines


def format_divergence(
    d: Divergence | None,
    *,
    name_a: str = "A",
    name_b: str = "B",
    count_a: int | None = None,
    count_b: int | None = None,
) -> str:
    """A report of *d* for a terminal (*name_a*/*name_b*: how to call the traces)."""
    legend = f"A = {name_a}, B = {name_b}"
    if d is None:
        count = f"{count_a} events, " if count_a is not None else ""
        return f"the traces are the same ({count}{legend})"
    e = d.a if d.a is not None else d.b
    assert e is not None
    if d.a is not None and d.b is not None and d.a.seq != d.b.seq:
        where = f"event {d.index + 1}: seq {d.a.seq} in A, seq {d.b.seq} in B"
    else:
        where = f"seq {e.seq} (event {d.index + 1})"
    actors = [x.actor for x in (d.a, d.b) if x is not None]
    who = actors[0] if len(set(actors)) == 1 else " / ".join(actors)
    lines = [f"the traces diverge at {where}, actor {who} ({legend})"]
    for label, event, n in (("A", d.a, count_a), ("B", d.b, count_b)):
        if event is None:
            total = f" after {n} events" if n is not None else ""
            lines.append(f"  {label}: (the trace ends here{total})")
        else:
            lines.append(f"  {label}: {_describe_event(event)}")
    if d.fields:
        lines.append(f"  they differ in: {', '.join(d.fields)}")
    lines += _chain_lines("A", d.chain_a, d.shared)
    lines += _chain_lines("B", d.chain_b, d.shared)
    lines.append(f"after it: {d.after_a} more events in A, {d.after_b} in B")
    return "\n".join(lines)


# -- the subcommand -----------------------------------------------------------------------


class _UsageError(Exception):
    """A trace file that cannot be read: one line for the user."""


def _read(path: Path) -> TraceFile:
    if not path.exists():
        raise _UsageError(f"no such trace file: {path}; give two trace files trioxide wrote")
    if path.is_dir():
        raise _UsageError(f"{path} is a folder, not a trace file")
    try:
        tf = read_trace(path)
    except OSError as exc:
        raise _UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise _UsageError(f"{path} is not a trioxide trace: {exc}") from None
    for err in tf.errors:
        print(f"{path}:{err.line}: skipped a corrupted line: {err.error}", file=sys.stderr)
    return tf


def _diff(args: argparse.Namespace) -> int:
    try:
        ta, tb = _read(args.a), _read(args.b)
    except _UsageError as exc:
        print(f"trioxide: trace diff: {exc}", file=sys.stderr)
        return 2
    d = first_divergence(ta.events, tb.events, ignore_time=args.ignore_time)

    def name(path: Path, tf: TraceFile) -> str:
        return f"{path} (seed {tf.header.seed})" if tf.header.seed is not None else str(path)

    print(
        format_divergence(
            d,
            name_a=name(args.a, ta),
            name_b=name(args.b, tb),
            count_a=len(ta.events),
            count_b=len(tb.events),
        )
    )
    return 0 if d is None else 1


def register(sub: Any) -> None:
    """Add the ``trace`` group (``trace diff``) to the ``trioxide`` command's subparsers."""
    trace = sub.add_parser("trace", help="work with trace files (trace diff)")
    group = trace.add_subparsers(dest="trace_command", required=True, metavar="{diff}")
    diff = group.add_parser(
        "diff",
        help="the first event where two traces diverge, with its causal chains",
        description="Compare two traces event by event in seq order and report the first "
        "difference: both versions, the causal chain leading to it in each, and how many "
        "events follow. Exit status 0: the same; 1: they differ; 2: a file is unusable.",
    )
    diff.add_argument("a", type=Path, help="trace A (a JSON Lines trace file)")
    diff.add_argument("b", type=Path, help="trace B")
    diff.add_argument(
        "--ignore-time",
        action="store_true",
        help="do not compare the times t and t0 (for traces of real-clock runs)",
    )
    diff.set_defaults(run=_diff)
