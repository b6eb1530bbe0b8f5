"""TestProbe, the pytest fixtures, and the plugin's failure report (issue 3)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest
import trio

from trioxide import traces
from trioxide.runtime import Actor, ActorRef, Runtime, Terminated
from trioxide.runtime.testing import TestProbe

pytest_plugins = ["pytester"]


class Ping(msgspec.Struct, frozen=True):
    n: int


class Pong(msgspec.Struct, frozen=True):
    n: int


class Start(msgspec.Struct, frozen=True):
    to: ActorRef
    count: int
    every: float


class Pinger(Actor):
    async def handle(self, msg: Start) -> None:
        for i in range(msg.count):
            await trio.sleep(msg.every)
            await msg.to.tell(Pong(i))


async def test_probe_expect_on_virtual_time(
    actor_runtime: Runtime, probe: Callable[..., Awaitable[TestProbe]]
) -> None:
    p = await probe("p")
    pinger = await actor_runtime.spawn(Pinger, name="pinger")
    await pinger.tell(Start(p.ref, 3, 2.0))
    assert (await p.expect(Pong, within=2.5)).n == 0
    assert trio.current_time() == 2.0
    assert (await p.expect(Pong, within=5.0)).n == 1
    assert trio.current_time() == 4.0
    await p.expect(Pong, within=3.0)
    assert trio.current_time() == 6.0
    await p.expect_no_message(within=100.0)
    assert trio.current_time() == 106.0
    assert [m.n for m in p.received] == [0, 1, 2]


async def test_probe_failures_say_what_happened(
    actor_runtime: Runtime, probe: Callable[..., Awaitable[TestProbe]]
) -> None:
    p = await probe()
    with pytest.raises(AssertionError, match=r"expected Pong within 1.5 s .* got nothing"):
        await p.expect(Pong, within=1.5)
    assert trio.current_time() == 1.5
    await p.ref.tell(Ping(1))
    with pytest.raises(AssertionError, match=r"expected Pong, got Ping\(n=1\)"):
        await p.expect(Pong)
    await p.ref.tell(Ping(2))
    with pytest.raises(AssertionError, match="expected no message"):
        await p.expect_no_message(within=1.0)


async def test_probe_receives_terminated_and_answers_asks(
    actor_runtime: Runtime, probe: Callable[..., Awaitable[TestProbe]]
) -> None:
    p = await probe("watcher")
    p.reply = "ack"
    assert await p.ref.ask(Ping(0)) == "ack"
    pinger = await actor_runtime.spawn(Pinger)
    inst = p.ref.instance
    assert inst is not None
    inst.monitor(pinger)
    await pinger.stop("done")
    await p.expect(Ping)
    term = await p.expect(Terminated)
    assert term.reason == "done"


async def test_fixture_runtime_is_traced_and_seeded(
    actor_runtime: Runtime, trace_sink: traces.MemorySink, trioxide_seed: int
) -> None:
    assert actor_runtime.seed == trioxide_seed
    await actor_runtime.spawn(Pinger, name="x")
    assert [e.kind for e in trace_sink.events][:2] == ["spawn", "start"]


FAILING_TEST = """
import msgspec, trio
from trioxide.runtime import Actor

class Hello(msgspec.Struct, frozen=True):
    pass

class Greeter(Actor):
    async def handle(self, msg: Hello) -> str:
        await trio.sleep(1)
        return "hi"

async def test_fails(actor_runtime):
    ref = await actor_runtime.spawn(Greeter, name="greeter")
    assert await ref.ask(Hello()) == "hello"

async def test_passes(actor_runtime):
    ref = await actor_runtime.spawn(Greeter, name="greeter")
    assert await ref.ask(Hello()) == "hi"
"""


def test_failing_test_saves_trace_and_prints_replay(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_greeter=FAILING_TEST)
    trace_dir = tmp_path / "traces"
    result = pytester.runpytest_subprocess(
        f"--trace-dir={trace_dir}", "--trioxide-seed=1234", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*seed: 1234*",
            "*replay: pytest 'test_greeter.py::test_fails' --trioxide-seed=1234*",
            "*trace: *test_greeter.py_test_fails.jsonl*",
        ]
    )
    files = list(trace_dir.iterdir())
    assert [f.name for f in files] == ["test_greeter.py_test_fails.jsonl"]
    tf = traces.read_trace(files[0])
    assert tf.header.seed == 1234
    assert {"spawn", "send", "receive", "reply"} <= {e.kind for e in tf.events}
