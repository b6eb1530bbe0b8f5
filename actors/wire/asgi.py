"""A small ASGI application: typed routes, msgspec bodies, Dropshot-shaped errors, and the
OpenAPI document generated from the same types.

Every process of the rack (sled agent, hypervisor, Nexus) serves one ``App``. A route
declares its method, path template, body type and response type once; the app decodes
and validates the body with msgspec (a mismatch is a 400 naming the field), calls the
handler, encodes its result, and maps exceptions to error bodies shaped as upstream's
Dropshot answers them: ``{"request_id": str, "error_code": str, "message": str}``.

Guarantees: every request gets exactly one response, unless its client went away first
(then its handler is cancelled and nothing is sent) (a handler's exception becomes 500
``INTERNAL_ERROR`` unless ``error_map`` types it); a body larger than ``max_body`` is
refused with 413 before it is read whole; cancellation (the server shutting down, the
client going away) is never turned into a response.

Every request is traced (``tracecontext.serving``): in a process with a traced runtime
its ``http_serve``/``http_served`` events are recorded in the lane ``http:<service>``, the
handler runs in the trace its ``traceparent`` names, and the asks it makes carry the
request's event as their cause.
"""

from __future__ import annotations

import itertools
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import msgspec.inspect
import trio

from . import tracecontext

__all__ = ["App", "Headers", "HttpError", "Request", "Route", "error_body"]

_JSON = [(b"content-type", b"application/json")]


class HttpError(Exception):
    """An error answer: *status*, Dropshot's ``error_code`` and a message for humans."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


class ErrorBody(msgspec.Struct, frozen=True):
    """Dropshot's error body."""

    request_id: str
    message: str
    error_code: str | None = None


def error_body(request_id: str, error: HttpError) -> bytes:
    return msgspec.json.encode(ErrorBody(request_id, error.message, error.error_code))


class Headers:
    """A request's headers: case-insensitive look-up in the ASGI scope's raw headers, each
    decoded only when asked for."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower().encode("latin-1")
        for k, v in self._raw:
            if k.lower() == key:
                return v.decode("latin-1")
        return default


@dataclass(frozen=True)
class Request:
    """What a handler sees of one request."""

    method: str
    path: str
    params: dict[str, str]
    headers: Headers
    body: Any
    request_id: str


Handler = Callable[[Request], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    """One operation. *body*/*response*: msgspec types (``None``: no body / 204-style
    empty answer). *errors*: the statuses it documents besides 4xx/5xx defaults."""

    method: str
    path: str
    operation_id: str
    handler: Handler
    body: Any = None
    response: Any = None
    status: int = 200
    summary: str = ""
    body_required: bool = True
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(re.findall(r"\{(\w+)\}", self.path))
        regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$"
        object.__setattr__(self, "_pattern", re.compile(regex))
        object.__setattr__(self, "_names", names)

    def match(self, path: str) -> dict[str, str] | None:
        m = self._pattern.match(path)
        return None if m is None else m.groupdict()


ErrorMap = Callable[[Exception], HttpError | None]


_error_decoder = msgspec.json.Decoder(ErrorBody)


def _error_code(payload: bytes) -> str | None:
    try:
        return _error_decoder.decode(payload).error_code
    except msgspec.MsgspecError:
        return None


def _raw_path(scope: dict[str, Any]) -> str:
    """The request's path as sent (percent-escapes kept), without the query."""
    raw = scope.get("raw_path")
    if not raw:
        return str(scope["path"])
    return bytes(raw).split(b"?", 1)[0].decode("latin-1")


def _tagged_structs(types: Sequence[Any]) -> list[msgspec.inspect.StructType]:
    """Every tagged struct type reachable from *types*."""
    seen: dict[type, msgspec.inspect.StructType] = {}

    def walk(t: msgspec.inspect.Type) -> None:
        match t:
            case msgspec.inspect.StructType(cls=cls) if cls not in seen:
                seen[cls] = t
                for f in t.fields:
                    walk(f.type)
            case msgspec.inspect.UnionType(types=members):
                for member in members:
                    walk(member)
            case msgspec.inspect.DictType(key_type=key, value_type=value):
                walk(key)
                walk(value)
            case (
                msgspec.inspect.ListType(item_type=item)
                | msgspec.inspect.VarTupleType(item_type=item)
                | msgspec.inspect.SetType(item_type=item)
                | msgspec.inspect.FrozenSetType(item_type=item)
            ):
                walk(item)
            case msgspec.inspect.TupleType(item_types=items):
                for item in items:
                    walk(item)
            case _:
                pass

    for info in msgspec.inspect.multi_type_info(types):
        walk(info)
    return [t for t in seen.values() if t.tag_field is not None]


class App:
    """An ASGI application over *routes*, serving ``GET /openapi.json`` as well.

    *error_map* turns a handler's exception into an ``HttpError`` (``None``: not one of
    ours, answered 500). Every request is traced (``tracecontext.serving``).
    *service*: the lane its requests are traced in
    (``http:<service>``; default: from the title, ``tracecontext.service_lane``).
    *on_abandon*: called for each request whose client went away before its answer
    (the handler is cancelled, nothing is sent; counted in ``abandoned``)."""

    def __init__(
        self,
        title: str,
        version: str,
        routes: Sequence[Route],
        *,
        error_map: ErrorMap | None = None,
        max_body: int = 1 << 20,
        service: str | None = None,
        on_abandon: Callable[[], None] | None = None,
    ) -> None:
        self.title = title
        self.lane = f"http:{service}" if service else tracecontext.service_lane(title)
        self.version = version
        self.routes = tuple(routes)
        self.error_map = error_map
        self.max_body = max_body
        self._ids = itertools.count(1)
        self._decoders = {
            id(r): msgspec.json.Decoder(r.body) for r in self.routes if r.body is not None
        }
        self.requests = 0
        self.answered: dict[int, int] = {}  # status -> count
        #: Requests whose client went away before the answer (their handler was cancelled).
        self.abandoned = 0
        self.on_abandon = on_abandon
        self._openapi = msgspec.json.encode(self.openapi())

    # -- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        self.requests += 1
        request_id = f"req-{next(self._ids)}"
        headers = Headers(scope["headers"])
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else None
        # hypercorn tells the app a client went away (``http.disconnect``) but lets the
        # handler run on: once the body is read, a watcher waits for that message and
        # cancels the request (a long poll, a launch) - nobody would get its answer.
        body_read = trio.Event()
        abandoned = False

        async def receive_body() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal abandoned
                await body_read.wait()
                if (await receive())["type"] == "http.disconnect":
                    abandoned = True
                    self.abandoned += 1
                    if self.on_abandon is not None:
                        self.on_abandon()
                    nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            with tracecontext.serving(
                self.lane, scope["method"], scope["path"], headers, peer
            ) as served:
                status, payload = await self._respond(scope, headers, receive_body, request_id)
                served.status = status
                if status >= 400:
                    served.error_code = _error_code(payload)
            nursery.cancel_scope.cancel()
        if abandoned:
            return
        self.answered[status] = self.answered.get(status, 0) + 1
        answer = list(_JSON) if payload else []
        answer.append((b"content-length", str(len(payload)).encode()))
        if status == 405:  # RFC 9110: the methods the path has
            allow = sorted({r.method for r in self.routes if r.match(_raw_path(scope))})
            answer.append((b"allow", ", ".join(allow).encode()))
        await send({"type": "http.response.start", "status": status, "headers": answer})
        await send({"type": "http.response.body", "body": payload})

    async def _respond(
        self, scope: dict[str, Any], headers: Headers, receive: Any, request_id: str
    ) -> tuple[int, bytes]:
        method: str = scope["method"]
        path: str = scope["path"]
        if method == "GET" and path == "/openapi.json":
            return 200, self._openapi
        route, params, allowed = None, None, False
        # Routes match the path as sent (an escaped "/" stays inside its segment), then
        # each parameter is unescaped: an id "a%2Fb" reaches the handler as "a/b" (which
        # the handler refuses by name) instead of matching no route.
        sent = _raw_path(scope)
        for r in self.routes:
            got = r.match(sent)
            if got is None:
                continue
            allowed = True
            if r.method == method:
                route, params = r, {k: urllib.parse.unquote(v) for k, v in got.items()}
                break
        if route is None or params is None:
            if allowed:
                return 405, error_body(
                    request_id, HttpError(405, "METHOD_NOT_ALLOWED", f"{method} {path}")
                )
            return 404, error_body(
                request_id, HttpError(404, "NOT_FOUND", f"no route for {method} {path}")
            )
        try:
            raw = await self._read_body(receive)
            body = self._decode(route, raw)
        except HttpError as err:
            return err.status, error_body(request_id, err)
        request = Request(method, path, params, headers, body, request_id)
        try:
            result = await route.handler(request)
        except HttpError as err:
            return err.status, error_body(request_id, err)
        except Exception as exc:
            typed = self.error_map(exc) if self.error_map is not None else None
            if typed is None:
                typed = HttpError(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
            return typed.status, error_body(request_id, typed)
        if route.response is None or result is None:
            return (204 if route.response is None else route.status), b""
        return route.status, msgspec.json.encode(result)

    async def _read_body(self, receive: Any) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise HttpError(413, "PAYLOAD_TOO_LARGE", f"the body exceeds {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _decode(self, route: Route, raw: bytes) -> Any:
        if route.body is None:
            return None
        if not raw.strip():
            if route.body_required:
                raise HttpError(400, "INVALID_REQUEST", "a JSON body is required")
            return None
        try:
            return self._decoders[id(route)].decode(raw)
        except msgspec.ValidationError as exc:
            raise HttpError(400, "INVALID_REQUEST", f"invalid body: {exc}") from None
        except msgspec.DecodeError as exc:
            raise HttpError(400, "INVALID_REQUEST", f"the body is not valid JSON: {exc}") from None

    # -- OpenAPI ----------------------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the routes, built from their msgspec types (msgspec
        writes JSON Schema 2020-12, the dialect OpenAPI 3.1 uses: `anyOf` with null,
        `prefixItems`)."""
        types = [ErrorBody]
        for r in self.routes:
            types += [t for t in (r.body, r.response) if t is not None]
        schemas, components = msgspec.json.schema_components(
            types, ref_template="#/components/schemas/{name}"
        )
        # A tagged struct decoded on its own (not as a member of a union) does not need
        # its tag: msgspec accepts it without, so the document must not require it.
        for struct in _tagged_structs(types):
            schema = components.get(struct.cls.__name__)
            if schema is not None and struct.tag_field in schema.get("required", ()):
                schema["required"] = [f for f in schema["required"] if f != struct.tag_field]
        refs = dict(zip(map(id, types), schemas, strict=True))
        error = {
            "description": "Error",
            "content": {"application/json": {"schema": refs[id(ErrorBody)]}},
        }
        paths: dict[str, dict[str, Any]] = {}
        for r in self.routes:
            op: dict[str, Any] = {"operationId": r.operation_id, "summary": r.summary}
            if r._names:
                op["parameters"] = [
                    {"in": "path", "name": n, "required": True, "schema": {"type": "string"}}
                    for n in r._names
                ]
            if r.body is not None:
                op["requestBody"] = {
                    "required": r.body_required,
                    "content": {"application/json": {"schema": refs[id(r.body)]}},
                }
            responses: dict[str, Any] = {}
            if r.response is None:
                responses["204"] = {"description": "no content"}
            else:
                responses[str(r.status)] = {
                    "description": "successful operation",
                    "content": {"application/json": {"schema": refs[id(r.response)]}},
                }
            responses["4XX"] = error
            responses["5XX"] = error
            op["responses"] = responses
            paths.setdefault(r.path, {})[r.method.lower()] = op
        return {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version},
            "paths": paths,
            "components": {"schemas": components},
        }
