"""The compiled run recorders (``traces/_cruns.c``) against their pure-Python reference
(``traces._runs.PyHandleRun``/``PySendRun``), call for call: random sequences of every
operation - the ones the loop and ``tell`` make and the ones they never make (out of order,
on a full or a written run, with a clock or an ``encode`` that raises) - give the same
results, the same errors and the same runs (items, times, payloads, records, counts).
"""

from __future__ import annotations

import gc
import itertools
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioxide.traces import RUN_MAX_MESSAGES, _runs

from ._msgs import Get, Incr, Note

pytestmark = pytest.mark.skipif(_runs._cruns is None, reason="traces._cruns was not built")

_MSGS = [Incr(1), Incr(2), Note("n"), Get()]


class Clock:
    """Times 0.5, 1.0, 1.5, ...; raises on the reads listed in *fail_at*."""

    def __init__(self, fail_at: frozenset[int]) -> None:
        self.reads = itertools.count()
        self.fail_at = fail_at

    def __call__(self) -> float:
        n = next(self.reads)
        if n in self.fail_at:
            raise OSError(f"clock read {n}")
        return 0.5 * (n + 1)


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as exc:  # compared: the same type and message
        return type(exc).__name__, str(exc)


#: Mostly what the loop does (``msg``: begin, then end), sometimes anything else.
_handle_ops = st.lists(
    st.tuples(
        st.sampled_from(["msg"] * 6 + ["begin", "end", "take_open", "freeze", "read"]),
        st.integers(0, 200),
        st.integers(0, 3),
        st.booleans(),
    ),
    max_size=RUN_MAX_MESSAGES + 10,
)


def _handle_state(run: Any) -> tuple[Any, ...]:
    return (list(run.items), run.count, run.last_seq, run.frozen, run.records(),
            run.lone_record(), repr(run), run.columns() if run.count else None)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_handle_ops, st.frozensets(st.integers(0, 100), max_size=3), st.integers(0, 10**6))
def test_a_compiled_handle_run_does_what_the_python_one_does(
    ops: list[tuple[Any, ...]], fail_at: frozenset[int], seq: int
) -> None:
    assert _runs._cruns is not None
    runs = [
        cls("/a", seq, Clock(fail_at), 0.25) for cls in (_runs._cruns.HandleRun, _runs.PyHandleRun)
    ]
    last_mid = 0  # the last message begun: what take_open asks for when *fresh*
    for kind, mid, m, fresh in ops:
        if kind in ("msg", "begin"):
            last_mid = mid
        results = []
        for run in runs:
            match kind:
                case "msg":
                    results.append(outcome(run.begin, mid, _MSGS[m], fresh))
                    results.append(outcome(run.end))
                case "begin":
                    results.append(outcome(run.begin, mid, _MSGS[m], fresh))
                case "end":
                    results.append(outcome(run.end))
                case "take_open":
                    results.append(outcome(run.take_open, last_mid if fresh else mid))
                case "freeze":
                    results.append(outcome(run.freeze))
                case "read":
                    results.append(("ok", _handle_state(run)))
        half = len(results) // 2
        assert results[:half] == results[half:], kind
    assert _handle_state(runs[0]) == _handle_state(runs[1])


#: ``add`` with the run's own send mostly (index 0 of each choice), in bursts of up to
#: ``k``: enough to fill a run.
_send_ops = st.lists(
    st.tuples(
        st.sampled_from(["add"] * 8 + ["freeze", "read"]),
        st.sampled_from([0] * 5 + [1, 2, 3]),  # the message (0, 1: of the run's class)
        *[st.sampled_from([0] * 6 + [1])] * 3,  # target, sender, cause
        st.integers(1, 40),  # k
    ),
    max_size=12,
)


def _send_state(run: Any) -> tuple[Any, ...]:
    # (the times as records carry them: a written Python run packs its own)
    times = [e.t for e in run.records()]
    return (times, [bytes(p) for p in run.payloads], run.count, run.last_seq,
            run.frozen, run.records(), run.lone_record(), repr(run))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    _send_ops,
    st.frozensets(st.integers(0, 100), max_size=3),
    st.booleans(),
    st.frozensets(st.integers(0, 3), max_size=1),
)
def test_a_compiled_send_run_does_what_the_python_one_does(
    ops: list[tuple[Any, ...]],
    fail_at: frozenset[int],
    payloads: bool,
    unencodable: frozenset[int],
) -> None:
    """``add`` with the run's own send or another (target, class, sender, cause), with or
    without payloads (an ``encode`` that raises for some messages), past the run's room
    and after it was written."""
    assert _runs._cruns is not None
    a, other, b = "/a", "".join(["/", "a"]), "/b"

    def encode(msg: Any) -> msgspec.Raw:
        if _MSGS.index(msg) in unencodable:
            raise ValueError(f"cannot encode {msg!r}")
        return msgspec.Raw(msgspec.json.encode(msg))

    kw: dict[str, Any] = (
        {"encode": encode, "payloads": [msgspec.Raw(b'{"by":1}')]} if payloads else {}
    )
    runs = [
        cls(a, b, 4, Incr, 10, Clock(fail_at), 0.25, [0.125], **kw)
        for cls in (_runs._cruns.SendRun, _runs.PySendRun)
    ]
    for kind, m, to, sender, cause, k in ops:
        results = []
        for run in runs:
            match kind:
                case "add":
                    args = ((a, other)[to], _MSGS[m], (b, None)[sender], (4, 5)[cause])
                    for _ in range(k):
                        results.append(outcome(run.add, *args))
                case "freeze":
                    results.append(outcome(run.freeze))
                case "read":
                    results.append(("ok", _send_state(run)))
        half = len(results) // 2
        assert results[:half] == results[half:], kind
    assert _send_state(runs[0]) == _send_state(runs[1])


@pytest.mark.parametrize(
    "make",
    [
        lambda cls: cls(a="/a"),
        lambda cls: cls(7, 1, lambda: 0.0),
        lambda cls: cls("/a", 1, "not a clock"),
    ],
    ids=["missing", "actor-not-str", "clock-not-callable"],
)
def test_a_handle_run_made_wrong_says_so(make: Callable[[type], Any]) -> None:
    assert _runs._cruns is not None
    with pytest.raises(TypeError):
        make(_runs._cruns.HandleRun)


def test_a_send_run_made_wrong_says_so() -> None:
    assert _runs._cruns is not None
    cls = _runs._cruns.SendRun
    with pytest.raises(TypeError, match="clock must be callable"):
        cls("/a", None, None, Incr, 1, 5, 0.0, [1.0])
    with pytest.raises(TypeError, match="encode must be callable"):
        cls("/a", None, None, Incr, 1, lambda: 0.0, 0.0, [1.0], encode=3)
    with pytest.raises(ValueError, match="1 times but 0 payloads"):
        cls("/a", None, None, Incr, 1, lambda: 0.0, 0.0, [1.0], encode=repr, payloads=[])
    with pytest.raises(ValueError, match="payloads without encode"):
        cls("/a", None, None, Incr, 1, lambda: 0.0, 0.0, [1.0], payloads=[b"x"])
    with pytest.raises(TypeError):
        cls("/a", None, None, Incr, 1, lambda: 0.0, 0.0, ["not a float"])


def test_the_compiled_runs_leak_nothing() -> None:
    """Every path that takes or gives a reference (payloads, names, records, take_open,
    refusals, freeze), 2,000 times over: traced memory does not grow."""
    assert _runs._cruns is not None
    cruns = _runs._cruns

    def encode(msg: Any) -> msgspec.Raw:
        return msgspec.Raw(msgspec.json.encode(msg))

    def cycle() -> None:
        clock = itertools.count().__next__
        send = cruns.SendRun("/a", "/b", 4, Incr, 1, clock, 0.0, [1.0], encode=encode,
                             payloads=[encode(Incr(0))])  # fmt: skip
        for i in range(RUN_MAX_MESSAGES + 5):
            send.add("/a", Incr(i), "/b", 4)
        send.add("/a", Note("x"), "/b", 4)
        send.records(), send.lone_record(), send.times, send.payloads
        send.freeze()
        send.records()
        handle = cruns.HandleRun("/a", 1, clock)
        for i in range(RUN_MAX_MESSAGES):
            handle.begin(i, Note("x"), i % 3 == 0)
            handle.end()
        outcome(handle.begin, 99, Incr(), True)
        handle.records(), handle.items, handle.lone_record()
        handle.freeze()
        handle.records()
        other = cruns.HandleRun("/a", 1, clock)
        other.begin(5, Incr(), True)
        other.take_open(5)
        other.begin(6, Incr(), True)
        other.records(), other.lone_record()

    for _ in range(100):
        cycle()
    gc.collect()
    # Long-lived objects the runs refer to: a reference kept would not allocate.
    kept = [Incr.__name__, Note.__name__, "/a", "/b", encode, Incr, Note]
    refs = [sys.getrefcount(x) for x in kept]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            cycle()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 2000, grown  # (a leaked object per cycle would be >= 2000 x 16 bytes)
    assert [sys.getrefcount(x) for x in kept] == refs
