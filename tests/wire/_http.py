"""A raw HTTP call for the wire tests' malformed-input cases: the body sent as given
(bytes as they are, anything else as JSON), the answer as ``(status, decoded JSON or
None)`` - no client-side typing in the way."""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = ["raw_call"]


async def raw_call(
    raw: httpx.AsyncClient, url: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await raw.request(method, url + path, content=None if body is None else content)
    return reply.status_code, (reply.json() if reply.content else None)
