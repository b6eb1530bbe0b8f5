"""``App``'s document says what its decoding accepts: a tagged struct decoded on its own
(not as a member of a union) is accepted without its tag, so the document does not require
the tag there (schemathesis found a hypervisor launch accepted without it while the
document required it: "schema-violating request accepted")."""

from __future__ import annotations

import msgspec
import trio

from trioxide.actors.wire.asgi import App, Request, Route
from trioxide.actors.wire.client import HttpClient
from trioxide.actors.wire.server import serve_app


class Leaf(msgspec.Struct, frozen=True, tag_field="type", tag="leaf"):
    name: str


class Body(msgspec.Struct, frozen=True):
    items: dict[str, Leaf]


async def _echo(request: Request) -> Body:
    body: Body = request.body
    return body


APP = App("t", "1", [Route("PUT", "/things", "things_put", _echo, body=Body, response=Body)])


def test_a_lone_tagged_struct_does_not_require_its_tag_in_the_document() -> None:
    leaf = APP.openapi()["components"]["schemas"]["Leaf"]
    assert leaf["properties"]["type"] == {"enum": ["leaf"]}
    assert leaf["required"] == ["name"]


async def test_the_app_accepts_it_without_the_tag_as_documented() -> None:
    async with trio.open_nursery() as nursery:
        addr = await nursery.start(serve_app, APP, "127.0.0.1", 0)
        async with HttpClient(f"http://{addr}") as http:
            with trio.fail_after(10):
                got = await http.call(
                    "PUT", "/things", {"items": {"a": {"name": "x"}}}, response=Body
                )
        nursery.cancel_scope.cancel()
    assert got == Body({"a": Leaf("x")})


async def test_an_escaped_slash_in_an_id_reaches_the_handler_unescaped() -> None:
    """Routes match the path as sent: ``a%2Fb`` is one segment, unescaped for the handler,
    whose check refuses it by name (it was a 404 "no route": the path was matched
    decoded, as two segments; the agent's case is in test_agent_api.py)."""
    seen: list[str] = []

    async def get(request: Request) -> None:
        seen.append(request.params["id"])

    app = App("t", "1", [Route("GET", "/things/{id}", "thing_get", get)])
    async with trio.open_nursery() as nursery:
        addr = await nursery.start(serve_app, app, "127.0.0.1", 0)
        async with HttpClient(f"http://{addr}") as http:
            with trio.fail_after(10):
                await http.call("GET", "/things/a%2Fb")
                await http.call("GET", "/things/caf%C3%A9")
        nursery.cancel_scope.cancel()
    assert seen == ["a/b", "café"]
