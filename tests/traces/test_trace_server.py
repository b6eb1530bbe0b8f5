"""``traces.server.TraceServer``: static viewer, WebSocket protocol, live history + fan-out
with per-client drops, malformed frames, tokens, and replay of damaged files.

These tests use real sockets (and so the real clock), but never sleep and never assert on
wall-clock durations; ``trio.fail_after`` only turns a hang into a failure.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
import trio_websocket

from trioxide import traces
from trioxide.traces.server import TraceServer

from .conftest import run_traced_scenario

GUARD = 30  # seconds before a hung test fails (never reached by a passing test)


def ev(seq: int, kind: str = "send", actor: str = "sled/a", **kw: Any) -> traces.TraceEvent:
    return traces.TraceEvent(seq, seq / 4, kind, actor, **kw)


def as_json(event: traces.TraceEvent) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(msgspec.json.encode(event))
    return result


@asynccontextmanager
async def serving(server: TraceServer, guard: float = GUARD) -> AsyncIterator[TraceServer]:
    with trio.fail_after(guard):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            yield server
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def client(
    server: TraceServer, resource: str = "/ws", **kw: Any
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    async with trio_websocket.open_websocket(
        "127.0.0.1", server.port, resource, use_ssl=False, max_message_size=1 << 24, **kw
    ) as ws:
        yield ws


async def recv(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    message = await ws.get_message()
    assert isinstance(message, str)
    frame: dict[str, Any] = json.loads(message)
    return frame


async def recv_events(ws: trio_websocket.WebSocketConnection, n: int) -> list[dict[str, Any]]:
    """Receive until *n* events have arrived (any other frame is a failure)."""
    got: list[dict[str, Any]] = []
    while len(got) < n:
        frame = await recv(ws)
        assert frame["type"] == "events", frame
        got.extend(frame["events"])
    assert len(got) == n
    return got


async def http_get(
    port: int, target: str, host: str | None = None, method: str = "GET", delay: float = 0
) -> tuple[int, dict[str, str], bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await trio.sleep(delay)  # a client slow to send its request
        head = f"{method} {target} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n\r\n"
        await stream.send_all(head.encode())
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


# -- static files --------------------------------------------------------------------------


async def test_get_serves_the_viewer_page_script_and_style() -> None:
    async with serving(TraceServer()) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/"
        status, headers, body = await http_get(server.port, "/")
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert headers["connection"] == "close"
        assert int(headers["content-length"]) == len(body)
        assert b"<canvas" in body and b"viewer.js" in body and b'id="details"' in body

        status, headers, body = await http_get(server.port, "/viewer.js")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        assert b"window.viewer" in body and int(headers["content-length"]) == len(body)

        status, headers, body = await http_get(server.port, "/viewer.css")
        assert status == 200 and headers["content-type"].startswith("text/css")
        for name, kind in (("/panels.js", "text/javascript"), ("/panels.css", "text/css")):
            status, headers, body = await http_get(server.port, name)
            assert status == 200 and headers["content-type"].startswith(kind) and body

        status, headers, body = await http_get(server.port, "/viewer.js", method="HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        assert (await http_get(server.port, "/secrets.txt"))[0] == 404
        assert (await http_get(server.port, "/", method="POST"))[0] == 405


async def test_loopback_server_refuses_foreign_host_header() -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the trace.
    async with serving(TraceServer()) as server:
        assert (await http_get(server.port, "/", host="evil.example"))[0] == 403
        assert (await http_get(server.port, "/", host=f"localhost:{server.port}"))[0] == 200


# -- live: history, fan-out, drops -----------------------------------------------------------


async def test_late_client_gets_history_then_live_events() -> None:
    server = TraceServer(header=traces.TraceHeader(seed=7, command=["x"]))
    sink = server.sink
    for seq in range(1, 6):
        sink.write(ev(seq, msg_id=seq, payload=msgspec.Raw(b'{"propolis_id":"vmm-1"}')))
    async with serving(server), client(server) as early:
        hello = await recv(early)
        assert hello == {
            "type": "hello",
            "header": msgspec.to_builtins(server.header),
            "mode": "live",
        }
        first = await recv_events(early, 5)
        assert [e["seq"] for e in first] == [1, 2, 3, 4, 5]
        assert first[0]["payload"] == {"propolis_id": "vmm-1"}  # embedded, not a string
        assert first[0] == as_json(ev(1, msg_id=1, payload=msgspec.Raw(b'{"propolis_id":"vmm-1"}')))

        for seq in range(6, 9):
            sink.write(ev(seq, "receive"))
        assert [e["seq"] for e in await recv_events(early, 3)] == [6, 7, 8]

        async with client(server) as late:
            assert (await recv(late))["type"] == "hello"
            assert [e["seq"] for e in await recv_events(late, 8)] == list(range(1, 9))
            sink.write(ev(9, "handle", detail="ok"))
            assert [e["seq"] for e in await recv_events(late, 1)] == [9]
            assert [e["seq"] for e in await recv_events(early, 1)] == [9]
            stats = server.statistics()
            assert stats.clients == 2 and stats.history == 9 and stats.written == 9
            assert sorted(c.sent for c in stats.per_client) == [9, 9]

        sink.close()  # the live run is over: clients get "end"
        assert await recv(early) == {"type": "end"}


async def test_history_ring_keeps_the_newest_events() -> None:
    server = TraceServer(history=3)
    for seq in range(1, 11):
        server.sink.write(ev(seq))
    async with serving(server), client(server) as ws:
        await recv(ws)
        assert [e["seq"] for e in await recv_events(ws, 3)] == [8, 9, 10]
        stats = server.statistics()
        assert (stats.history, stats.history_dropped) == (3, 7)


async def test_full_client_queue_drops_for_that_client_and_reports_the_count() -> None:
    server = TraceServer(client_queue=5)
    async with serving(server), client(server) as ws:
        assert (await recv(ws))["type"] == "hello"
        while not server.statistics().per_client:  # registered once hello has been sent
            await trio.testing.wait_all_tasks_blocked()
        # write() is synchronous: the server cannot drain the queue during this loop.
        for seq in range(1, 101):
            server.sink.write(ev(seq))
        assert [e["seq"] for e in await recv_events(ws, 5)] == [1, 2, 3, 4, 5]
        assert await recv(ws) == {"type": "dropped", "count": 95}
        server.sink.write(ev(101))
        assert [e["seq"] for e in await recv_events(ws, 1)] == [101]
        (only,) = server.statistics().per_client
        assert (only.sent, only.dropped) == (6, 95)


async def test_stalled_client_drops_while_fast_client_gets_everything() -> None:
    server = TraceServer(client_queue=200, batch=50)
    big = msgspec.Raw(msgspec.json.encode({"blob": "x" * 16_000}))
    total = 0
    async with serving(server), client(server) as fast:
        assert (await recv(fast))["type"] == "hello"
        # The stalled client completes the handshake and then never reads a byte.
        stalled = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stalled:
            await stalled.send_all(
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            while server.statistics().clients < 2:
                await trio.testing.wait_all_tasks_blocked()
            received = 0
            for _ in range(1000):  # until the stalled client's socket buffers are full
                for _ in range(100):
                    total += 1
                    server.sink.write(ev(total, payload=big))  # never awaits
                got = await recv_events(fast, total - received)
                assert [e["seq"] for e in got] == list(range(received + 1, total + 1))
                received = total
                stats = server.statistics()
                if any(c.dropped for c in stats.per_client):
                    break
            stats = server.statistics()
            fast_stats = next(c for c in stats.per_client if c.sent == total)
            slow_stats = next(c for c in stats.per_client if c is not fast_stats)
            assert fast_stats.dropped == 0
            assert slow_stats.dropped > 0 and slow_stats.queued <= 200
            assert slow_stats.sent + slow_stats.queued + slow_stats.dropped <= total
            assert stats.written == total and stats.dropped == slow_stats.dropped
        # Once the stalled client hangs up, the server forgets it; the fast one carries on.
        while server.statistics().clients > 1:
            await trio.testing.wait_all_tasks_blocked()
        server.sink.write(ev(total + 1))
        assert [e["seq"] for e in await recv_events(fast, 1)] == [total + 1]


async def test_sink_written_from_another_thread() -> None:
    server = TraceServer()

    def produce() -> None:
        for seq in range(1, 2001):
            server.sink.write(ev(seq))
        server.sink.close()

    async with serving(server), client(server) as ws:
        await recv(ws)
        while not server.statistics().per_client:
            await trio.testing.wait_all_tasks_blocked()
        await trio.to_thread.run_sync(produce)
        assert [e["seq"] for e in await recv_events(ws, 2000)] == list(range(1, 2001))
        assert await recv(ws) == {"type": "end"}


async def test_live_runtime_in_its_own_thread_and_virtual_clock() -> None:
    # The way a CLI shows a running simulation: the runtime runs under MockClock in a worker
    # thread; the server (real clock) streams what its tracer writes.
    server = TraceServer()
    mem = traces.MemorySink()
    tracer = traces.Tracer(server.sink, mem, payloads=True)

    def run() -> None:
        trio.run(run_traced_scenario, tracer, clock=trio.testing.MockClock(autojump_threshold=0))
        tracer.close()

    async with serving(server), client(server) as ws:
        await recv(ws)
        thread = threading.Thread(target=run)
        thread.start()
        got: list[dict[str, Any]] = []
        while (frame := await recv(ws))["type"] != "end":
            assert frame["type"] == "events"
            got.extend(frame["events"])
        await trio.to_thread.run_sync(thread.join)
    assert got == [as_json(e) for e in mem.events]
    assert {"send", "receive", "handle", "reply", "fail", "restart"} <= {e["kind"] for e in got}


async def test_serve_refuses_a_virtual_clock(autojump_clock: trio.testing.MockClock) -> None:
    # Its request timeouts would expire at once (or never, with the clock held): real time only.
    with pytest.raises(RuntimeError, match="serve_in_thread"):
        await TraceServer().serve()


def test_serve_in_thread_beside_a_virtual_time_run() -> None:
    # As in `trioxide demo --view`: the simulation runs in virtual time in this thread while
    # the server serves from a thread of its own, in real time; a browser connects during
    # the run (its HTTP request sent slowly, in real time) and after it.
    server = TraceServer(request_timeout=5.0)
    seen: dict[str, Any] = {}

    async def browser(port: int) -> None:
        status, _, _ = await http_get(port, "/", delay=0.05)  # real time
        async with trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=False) as ws:
            seen["hello"] = await recv(ws)
            seen["first"] = (await recv(ws))["events"][0]["seq"]
        seen["status"] = status

    async def simulation(port: int) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, trio.run, browser, port)
            seq = 0
            while "status" not in seen and seq < 10**7:
                seq += 1
                if seq <= 50:
                    server.sink.write(ev(seq))
                await trio.sleep(1.0)  # a virtual second: passes instantly
        seen["virtual"] = trio.current_time()
        server.sink.close()

    with server.serve_in_thread() as serving:
        assert server.trio_token is not None
        trio.run(simulation, server.port, clock=trio.testing.MockClock(autojump_threshold=0))
        assert seen["status"] == 200 and seen["hello"]["mode"] == "live" and seen["first"] == 1
        assert seen["virtual"] > 10.0  # the clock did run ahead while the browser connected

        async def late() -> list[int]:  # after the run: the whole of it, then end
            async with client(server) as ws:
                await recv(ws)
                got = [e["seq"] for e in await recv_events(ws, 50)]
                assert await recv(ws) == {"type": "end"}
                return got

        assert trio.run(late) == list(range(1, 51))
        serving.stop()
        serving.wait()  # returns once the server has stopped
        assert server.trio_token is None


# -- the client side of the protocol ----------------------------------------------------------


@pytest.mark.parametrize("bad", ["not json", '{"type": "subscribe"}', "[1, 2]", b"\x00binary"])
async def test_malformed_frame_closes_only_that_client(bad: str | bytes) -> None:
    server = TraceServer()
    async with serving(server), client(server) as good, client(server) as rude:
        await recv(good)
        await recv(rude)
        await rude.send_message(bad)
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            while True:
                await rude.get_message()
        assert info.value.reason is not None and info.value.reason.code == 1003
        await good.send_message('{"type": "ping"}')
        assert await recv(good) == {"type": "pong"}
        server.sink.write(ev(1))
        assert [e["seq"] for e in await recv_events(good, 1)] == [1]
        while server.statistics().clients != 1:
            await trio.testing.wait_all_tasks_blocked()


# -- tokens and origins -----------------------------------------------------------------------


def test_non_loopback_bind_requires_a_token() -> None:
    for host in ("0.0.0.0", "", "::", "192.168.1.20", "example.com"):
        with pytest.raises(ValueError, match="token"):
            TraceServer(host=host)
    TraceServer(host="0.0.0.0", token="s3cret")  # allowed with a token
    TraceServer(host="::1")
    TraceServer(host="localhost")
    with pytest.raises(ValueError):
        TraceServer(token="")


async def test_token_is_checked_on_the_handshake_and_the_page() -> None:
    server = TraceServer(token="s3cr/t")
    async with serving(server):
        assert server.url == f"http://127.0.0.1:{server.port}/?token=s3cr%2Ft"
        for resource in ("/ws", "/ws?token=wrong"):
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with client(server, resource):
                    pass
            assert info.value.status_code == 403
        async with client(server, "/ws?token=s3cr%2Ft") as ws:
            assert (await recv(ws))["type"] == "hello"
        assert (await http_get(server.port, "/"))[0] == 403
        assert (await http_get(server.port, "/?token=nope"))[0] == 403
        assert (await http_get(server.port, "/?token=s3cr%2Ft"))[0] == 200
        assert (await http_get(server.port, "/viewer.js"))[0] == 200  # code, not data


async def test_cross_origin_websocket_is_refused() -> None:
    async with serving(TraceServer()) as server:
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with client(server, extra_headers=[(b"Origin", b"http://evil.example")]):
                pass
        assert info.value.status_code == 403
        own = f"http://127.0.0.1:{server.port}".encode()
        async with client(server, extra_headers=[(b"Origin", own)]) as ws:
            assert (await recv(ws))["type"] == "hello"


# -- replay ------------------------------------------------------------------------------------


def write_trace(path: Path, lines: list[bytes]) -> None:
    header = msgspec.json.encode(traces.TraceHeader(seed=3, command=["trioxide", "demo"]))
    path.write_bytes(b"\n".join([header, *lines]) + b"\n")


async def test_replay_reports_corrupted_lines_and_sends_the_rest_then_end(tmp_path: Path) -> None:
    path = tmp_path / "damaged.jsonl"
    good = [msgspec.json.encode(ev(seq)) for seq in range(1, 7)]
    # line 1 = header, lines 2-4 = events 1-3, line 5 = garbage, lines 6-8 = events 4-6
    write_trace(path, [*good[:3], b'{"seq": 4, "t": oops', *good[3:]])
    server = TraceServer.from_file(path, batch=2)
    assert server.mode == "replay"
    with pytest.raises(RuntimeError):
        server.sink  # noqa: B018 - a replay server has no live sink
    async with serving(server), client(server) as ws:
        hello = await recv(ws)
        assert hello["mode"] == "replay" and hello["total"] == 6
        assert hello["header"]["seed"] == 3
        frames: list[dict[str, Any]] = []
        while (frame := await recv(ws))["type"] != "end":
            frames.append(frame)
        # the error is reported in place: after events 1-3, before events 4-6
        kinds = [f["type"] for f in frames]
        at = kinds.index("line_error")
        assert frames[at]["line"] == 5 and frames[at]["error"]
        before = [e["seq"] for f in frames[:at] for e in f["events"]]
        after = [e["seq"] for f in frames[at + 1 :] for e in f["events"]]
        assert (before, after) == ([1, 2, 3], [4, 5, 6])
        assert max(len(f["events"]) for f in frames if f["type"] == "events") == 2  # batch
        await ws.send_message('{"type": "ping"}')  # the connection stays open after "end"
        assert await recv(ws) == {"type": "pong"}
        stats = server.statistics()
        assert (stats.mode, stats.history, stats.line_errors, stats.sent) == ("replay", 6, 1, 6)


async def test_replay_skips_bad_utf8_and_deep_nesting_as_damaged_lines(tmp_path: Path) -> None:
    """The server decodes lines as the reader does: a payload that is not UTF-8 and one
    nested 100,000 deep are reported in place, the other events are sent, and nothing
    crashes (issue 13: invalid UTF-8 crashed ``view``)."""
    path = tmp_path / "hostile.jsonl"
    good = [msgspec.json.encode(ev(seq)) for seq in range(1, 4)]
    bad_utf8 = good[1][:-1] + b',"payload":"caf' + bytes([0xE9]) + b'"}'
    deep = good[1][:-1] + b',"payload":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    write_trace(path, [good[0], bad_utf8, deep, good[2]])
    server = TraceServer.from_file(path)
    async with serving(server), client(server) as ws:
        await recv(ws)
        seqs: list[int] = []
        errors: list[int] = []
        while (frame := await recv(ws))["type"] != "end":
            if frame["type"] == "line_error":
                errors.append(frame["line"])
            else:
                seqs.extend(e["seq"] for e in frame["events"])
        assert (seqs, errors) == ([1, 3], [3, 4])


async def test_replay_frames_respect_the_byte_budget(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    payload = msgspec.Raw(msgspec.json.encode({"blob": "y" * 3000}))
    write_trace(path, [msgspec.json.encode(ev(seq, payload=payload)) for seq in range(1, 51)])
    server = TraceServer.from_file(path, max_frame_bytes=10_000)
    async with serving(server), client(server) as ws:
        await recv(ws)
        sizes: list[int] = []
        seqs: list[int] = []
        while (frame := await recv(ws))["type"] != "end":
            sizes.append(len(frame["events"]))
            seqs.extend(e["seq"] for e in frame["events"])
        assert seqs == list(range(1, 51)) and max(sizes) <= 4


def test_from_file_refuses_a_file_that_is_not_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(ValueError, match="not a trioxide trace"):
        TraceServer.from_file(path)
    with pytest.raises(FileNotFoundError):
        TraceServer.from_file(tmp_path / "missing.jsonl")


# -- the columns format (what the browser viewer asks for) -------------------------------

_STRING_FIELDS = ("kind", "actor", "peer", "msg_type", "detail", "outcome")
_NUMBER_FIELDS = ("seq", "t", "msg_id", "cause", "corr")


def decode_columns(frame: dict[str, Any]) -> list[traces.TraceEvent]:
    """A ``columns`` frame back into events, with its own string table only."""
    assert frame["type"] == "columns"
    n = frame["n"]
    strings = [None, *frame["strings"]]
    out = []
    for i in range(n):
        fields: dict[str, Any] = {k: frame[k][i] for k in _NUMBER_FIELDS}
        fields.update({k: strings[frame[k][i]] for k in _STRING_FIELDS})
        payload = frame["payload"][i]
        if payload is not None:
            fields["payload"] = msgspec.Raw(payload.encode())
        out.append(msgspec.convert(fields, traces.TraceEvent))
    return out


async def replay_columns(server: TraceServer) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    """hello, the events and line errors in order, and end."""
    async with serving(server), client(server, "/ws?format=columns") as ws:
        hello = await recv(ws)
        items: list[Any] = []
        while (frame := await recv(ws))["type"] != "end":
            if frame["type"] == "line_error":
                items.append(frame["line"])
            else:
                items.extend(decode_columns(frame))
        return hello, items, frame


def comparable(e: traces.TraceEvent) -> bytes:
    return msgspec.json.encode(e)


@pytest.mark.parametrize("pool", [False, True], ids=["thread", "process-pool"])
async def test_columns_replay_gives_back_every_event_of_a_real_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: bool
) -> None:
    # A real runtime's trace (folded receives, payloads, failures, tasks), one damaged line.
    from trioxide.traces import server as server_module

    path = tmp_path / "run.jsonl"
    sink = traces.JsonlFileSink(path, traces.TraceHeader(seed=5))
    tracer = traces.Tracer(sink, payloads=True)
    await run_traced_scenario(tracer)
    tracer.close()
    lines = path.read_bytes().splitlines()
    damaged_at = len(lines) // 2
    lines.insert(damaged_at, b'{"seq": oops')
    path.write_bytes(b"\n".join(lines) + b"\n")
    expected = traces.read_trace(path)
    assert expected.errors and expected.errors[0].line == damaged_at + 1
    if pool:  # small chunks, so that even this file is decoded by the worker processes
        monkeypatch.setattr(server_module, "_CHUNK_LINES", 7)
        monkeypatch.setattr(server_module, "_POOL_MIN_CHUNKS", 2)
    server = TraceServer.from_file(path)
    hello, items, end = await replay_columns(server)
    assert hello["format"] == "columns" and hello["total"] == len(expected.events)
    got = [x for x in items if isinstance(x, traces.TraceEvent)]
    assert [comparable(e) for e in got] == [comparable(e) for e in expected.events]
    # the damaged line is reported in its place, between the events around it
    at = next(i for i, x in enumerate(items) if isinstance(x, int))
    assert items[at] == damaged_at + 1
    assert end["events"] == len(expected.events)


async def test_columns_frames_stay_within_the_byte_budget_and_decode_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.jsonl"
    payload = msgspec.Raw(msgspec.json.encode({"blob": "y" * 3000}))
    write_trace(
        path,
        [msgspec.json.encode(ev(s, actor=f"sled/a{s % 7}", payload=payload)) for s in range(1, 51)],
    )
    server = TraceServer.from_file(path, max_frame_bytes=10_000)
    async with serving(server), client(server, "/ws?format=columns") as ws:
        await recv(ws)
        seqs: list[int] = []
        while (message := await ws.get_message()) and '"type":"end"' not in str(message):
            assert len(message) <= 10_000
            frame = json.loads(message)
            seqs.extend(e.seq for e in decode_columns(frame))  # each frame decodes alone
        assert seqs == list(range(1, 51))


async def test_live_columns_clients_get_history_then_live_events() -> None:
    server = TraceServer(history=100)
    sink = server.sink
    for seq in range(1, 4):
        sink.write(ev(seq, detail=f"d{seq}"))
    async with serving(server), client(server, "/ws?format=columns") as ws:
        hello = await recv(ws)
        assert hello["mode"] == "live" and hello["format"] == "columns"
        got: list[traces.TraceEvent] = []
        while len(got) < 3:
            got.extend(decode_columns(await recv(ws)))
        sink.write(ev(4, kind="receive", peer="sled/b", msg_type="Ping"))
        while len(got) < 4:
            got.extend(decode_columns(await recv(ws)))
        want = [ev(s, detail=f"d{s}") for s in (1, 2, 3)]
        want.append(ev(4, kind="receive", peer="sled/b", msg_type="Ping"))
        assert [comparable(e) for e in got] == [comparable(e) for e in want]


async def test_an_unknown_format_is_refused_at_the_handshake() -> None:
    server = TraceServer()
    async with serving(server):
        with pytest.raises(trio_websocket.ConnectionRejected) as refused:
            async with client(server, "/ws?format=xml"):
                pass  # pragma: no cover
        assert refused.value.status_code == 400
        async with client(server, "/ws?format=columns") as ws:  # the server serves on
            assert (await recv(ws))["format"] == "columns"
