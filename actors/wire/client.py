"""The rack's HTTP client: httpx on Trio (through anyio), msgspec bodies, typed failures.

``HttpClient(base_url)`` wraps one ``httpx.AsyncClient`` (one connection pool). Every
call sends a ``traceparent`` header (``tracecontext.calling``), has a timeout, and ends
in exactly one of: the decoded 2xx body; ``HttpStatusError`` (the server answered an
error: its status and Dropshot ``error_code``); ``TransportError`` (no answer: the
connection was refused or dropped, or the timeout passed). Cancellation is honoured: a
cancelled call abandons its request (httpx closes the connection).

Every call is traced (``tracecontext.calling``): in a traced runtime, ``http_send`` (by
the calling actor, while handling which message, with which ``traceparent``) and
``http_end`` (the status, the failure, the timeout or the cancellation).
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import msgspec

from . import tracecontext

__all__ = ["HttpClient", "HttpStatusError", "TransportError"]

T = TypeVar("T")


class HttpStatusError(Exception):
    """The server answered *status* (not 2xx) with Dropshot's error body."""

    def __init__(self, status: int, error_code: str | None, message: str) -> None:
        super().__init__(f"{status} {error_code or ''}: {message}".replace(" :", ":"))
        self.status = status
        self.error_code = error_code
        self.message = message


class TransportError(Exception):
    """No answer: *kind* is ``connect`` (refused: nothing listens), ``timeout`` or
    ``protocol`` (the connection broke mid-request)."""

    def __init__(self, kind: str, url: str, detail: str) -> None:
        super().__init__(f"{kind} error on {url}: {detail}")
        self.kind = kind
        self.url = url


class _Error(msgspec.Struct):
    message: str = ""
    error_code: str | None = None


class HttpClient:
    """Calls to one service at *base_url* (``http://127.0.0.1:port[/prefix]``)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, max_connections: int = 64) -> None:
        self.base_url = base_url.rstrip("/")
        self.service = urlsplit(self.base_url).netloc or self.base_url
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=32),
            trust_env=False,
        )
        self.sent = 0
        self.answered = 0
        self.failed = 0

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        response: type[T] | None = None,
        timeout: float | None = None,
    ) -> T | None:
        """*method* *path* with *body* (msgspec-encoded); the 2xx body decoded as
        *response* (``None`` for an empty answer)."""
        with tracecontext.calling(self.service, method, path) as call:
            return await self._call(call, method, path, body, response, timeout)

    async def _call(
        self,
        call: tracecontext.Call,
        method: str,
        path: str,
        body: Any,
        response: type[T] | None,
        timeout: float | None,
    ) -> T | None:
        url = self.base_url + path
        headers = {"traceparent": call.ctx.header()}
        content = None
        if body is not None:
            content = msgspec.json.encode(body)
            headers["content-type"] = "application/json"
        self.sent += 1
        try:
            reply = await self._client.request(
                method,
                url,
                content=content,
                headers=headers,
                timeout=self.timeout if timeout is None else timeout,
            )
        except httpx.ConnectError as exc:
            self.failed += 1
            raise TransportError("connect", url, str(exc) or type(exc).__name__) from None
        except httpx.TimeoutException as exc:
            self.failed += 1
            call.timed_out = True
            raise TransportError("timeout", url, str(exc) or type(exc).__name__) from None
        except httpx.TransportError as exc:
            self.failed += 1
            raise TransportError("protocol", url, str(exc) or type(exc).__name__) from None
        self.answered += 1
        call.status = reply.status_code
        if reply.status_code >= 300:
            try:
                err = msgspec.json.decode(reply.content, type=_Error)
            except msgspec.MsgspecError:
                err = _Error(reply.text[:200])
            raise HttpStatusError(reply.status_code, err.error_code, err.message)
        if response is None or not reply.content:
            return None
        try:
            return msgspec.json.decode(reply.content, type=response)
        except msgspec.MsgspecError as exc:
            raise TransportError("protocol", url, f"unexpected body: {exc}") from None
