"""The trace server's HTTP side (h11) and its real-time timeouts beside a virtual-time run.

Malformed, oversized, trickled and pipelined requests each get one complete response and
the connection closed, and the server serves on; a half-open connection is closed after
the request timeout while the actors run under a MockClock; a late live client's
counters add up. Real sockets, never a sleep: ``trio.fail_after`` only turns a hang into
a failure.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from trioxide import runtime, traces
from trioxide.traces.server import TraceServer

from .conftest import run_traced_scenario
from .test_trace_server import client, ev, recv, serving

GUARD = 30


async def exchange(port: int, *chunks: bytes, shut: bool = False) -> tuple[int, bytes]:
    """Send *chunks* one write each (then shut our side if *shut*); read until the server
    closes. Returns the status of the first response and every byte received."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        for chunk in chunks:
            await stream.send_all(chunk)
        if shut:
            await stream.send_eof()
        data = b""
        while piece := await stream.receive_some():
            data += piece
    return int(data.split(b" ", 2)[1]), data


async def still_serving(port: int) -> None:
    status, data = await exchange(
        port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    )
    assert status == 200 and b"<canvas" in data


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),  # no method, target, version
        (b"GET /\r\n\r\n", 400),  # HTTP/0.9-style request line
        (b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", 400),  # HTTP/1.x only
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
    ],
    ids=[
        "garbage",
        "no-version",
        "http2",
        "space-in-name",
        "no-host",
        "two-hosts",
        "20k-header",
        "101-headers",
    ],
)
async def test_malformed_request_gets_a_4xx_and_the_connection_closed(
    request_bytes: bytes, status: int
) -> None:
    async with serving(TraceServer()) as server:
        got, data = await exchange(server.port, request_bytes)
        assert got == status, data
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"\r\nconnection: close" in head.lower()
        assert int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]) == len(body)
        await still_serving(server.port)


async def test_a_head_at_the_size_limit_is_served_and_one_byte_more_is_not() -> None:
    async with serving(TraceServer()) as server:
        start = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX: ".encode()
        pad = 16 * 1024 - len(start) - len(b"\r\n\r\n")
        assert (await exchange(server.port, start + b"a" * pad + b"\r\n\r\n"))[0] == 200
        assert (await exchange(server.port, start + b"a" * (pad + 1) + b"\r\n\r\n"))[0] == 431


async def test_a_request_split_into_single_bytes_is_served() -> None:
    async with serving(TraceServer()) as server:
        request = f"GET /viewer.css HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
        status, data = await exchange(
            server.port, *(request[i : i + 1] for i in range(len(request)))
        )
        assert status == 200 and b"text/css" in data


async def test_a_head_trickled_past_the_limit_is_refused() -> None:
    async with serving(TraceServer()) as server:
        start = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode()
        trickle = [b"X-Pad: " + b"p" * 990 + b"\r\n"] * 20  # 20 kB, never a blank line
        assert (await exchange(server.port, start, *trickle))[0] == 431


async def test_pipelined_requests_get_one_response_and_connection_close() -> None:
    async with serving(TraceServer()) as server:
        one = f"GET /viewer.css HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
        status, data = await exchange(server.port, one + one.replace(b".css", b".js"))
        assert status == 200 and data.count(b"HTTP/1.1 ") == 1  # the second is never read
        assert b"text/css" in data and b"window.viewer" not in data


async def test_a_request_cut_short_by_the_peer_gets_400() -> None:
    async with serving(TraceServer()) as server:
        status, _ = await exchange(server.port, b"GET / HTTP/1.1\r\nHo", shut=True)
        assert status == 400
        await still_serving(server.port)


async def test_a_post_with_a_body_gets_405_and_head_gets_no_body() -> None:
    async with serving(TraceServer()) as server:
        host = f"Host: 127.0.0.1:{server.port}\r\n"
        post = f"POST / HTTP/1.1\r\n{host}Content-Length: 5\r\n\r\nhello".encode()
        status, data = await exchange(server.port, post)
        assert status == 405 and b"\r\nAllow: GET, HEAD\r\n" in data
        status, data = await exchange(server.port, f"HEAD / HTTP/1.1\r\n{host}\r\n".encode())
        assert status == 200 and data.endswith(b"\r\n\r\n")


async def test_a_silent_connection_gets_408_after_the_request_timeout() -> None:
    async with serving(TraceServer(request_timeout=0.2)) as server:
        assert (await exchange(server.port))[0] == 408
        half = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode()
        assert (await exchange(server.port, half))[0] == 408
        await still_serving(server.port)


# -- real-time timeouts while the actors run in virtual time ------------------------------


class Tick(msgspec.Struct):
    n: int


class Ticker(runtime.Actor):
    """Keeps the runtime busy in virtual time: a tick per virtual second, traced."""

    async def handle(self, msg: Tick) -> None:
        await trio.sleep(1.0)
        await self.ref.tell(Tick(msg.n + 1))


def test_half_open_connections_are_reaped_in_real_time_beside_virtual_time() -> None:
    server = TraceServer(request_timeout=0.2)
    tracer = traces.Tracer(server.sink)
    got: dict[str, Any] = {}

    async def actors_and_a_half_open_connection(port: int) -> None:
        async with runtime.open_runtime(tracer=tracer, name="sim") as rt:
            ticker = await rt.spawn(Ticker, name="ticker")
            await ticker.tell(Tick(0))
            # Sends nothing / half a request: closed by the server after 0.2 real seconds,
            # while virtual time races ahead (with the old same-run server: never; this
            # bound, in virtual seconds, is many times what 0.2 real seconds allow).
            with trio.fail_after(100_000):
                got["silent"] = await exchange(port)
                half = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Half".encode()
                got["half"] = await exchange(port, half)
            got["virtual"] = trio.current_time()
            await ticker.stop()

    with server.serve_in_thread():
        trio.run(
            actors_and_a_half_open_connection,
            server.port,
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
    assert got["silent"][0] == 408 and got["half"][0] == 408
    assert got["virtual"] > 10.0  # the actors ran on in virtual time meanwhile
    assert server.statistics().written > 10


def test_serve_in_thread_raises_why_it_cannot_listen() -> None:
    with TraceServer().serve_in_thread():
        taken = TraceServer(port=0)
        with taken.serve_in_thread():
            with pytest.raises(OSError), TraceServer(port=taken.port).serve_in_thread():
                pass  # pragma: no cover


# -- live counters ----------------------------------------------------------------------


async def test_a_late_client_counts_the_events_that_left_the_history_as_dropped() -> None:
    server = TraceServer(history=3)
    for seq in range(1, 11):
        server.sink.write(ev(seq))
    async with serving(server, GUARD), client(server, "/ws?format=columns") as ws:
        await recv(ws)
        seqs: list[int] = []
        frame = await recv(ws)
        seqs.extend(frame["seq"])
        assert seqs == [8, 9, 10]
        assert await recv(ws) == {"type": "dropped", "count": 7}  # events 1-7: gone
        server.sink.write(ev(11))
        assert (await recv(ws))["seq"] == [11]
        server.sink.close()
        assert await recv(ws) == {"type": "end", "events": 4, "dropped": 7}
        (only,) = server.statistics().per_client
        assert (only.sent, only.dropped, only.missed) == (4, 7, 7)
        assert only.sent + only.dropped == server.statistics().written == 11


def test_counters_agree_with_the_tracer_once_it_is_flushed() -> None:
    # A real runtime's trace (in virtual time; receives folded into their handles, one
    # held back by the tracer until flushed) through the live sink, to a late client:
    # events received + dropped = the tracer's seq = the last seq = written.
    server = TraceServer(history=10)  # most of the run has left the ring
    tracer = traces.Tracer(server.sink, payloads=True)
    trio.run(run_traced_scenario, tracer, clock=trio.testing.MockClock(autojump_threshold=0))
    tracer.flush()
    server.sink.close()

    async def late_client() -> tuple[list[int], int, dict[str, Any]]:
        async with client(server, "/ws?format=columns") as ws:
            await recv(ws)
            seqs: list[int] = []
            dropped = 0
            while (frame := await recv(ws))["type"] != "end":
                if frame["type"] == "columns":
                    seqs.extend(frame["seq"])
                elif frame["type"] == "dropped":
                    dropped = frame["count"]
            return seqs, dropped, frame

    with server.serve_in_thread():
        seqs, dropped, end = trio.run(late_client)
    assert tracer.seq > 20 and seqs == list(range(tracer.seq - 9, tracer.seq + 1))
    assert len(seqs) + dropped == tracer.seq == server.statistics().written
    assert end == {"type": "end", "events": 10, "dropped": dropped}
