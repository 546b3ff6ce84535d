"""Apps for the TLS tests: what scheme and client certificate the app sees."""

from __future__ import annotations

import json
from typing import Any

from nessen import Response, Runtime


async def scope_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that answers with its scope's ``scheme`` and ``server``, as JSON."""
    if scope["type"] != "http":
        return
    body = json.dumps({"scheme": scope["scheme"], "server": scope.get("server")}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


BIG_BYTES = 8 * 1024 * 1024

runtime = Runtime()
"""A native runtime whose ``/big`` answers 8 MiB in one buffered ``Response``."""


@runtime.route.get("/big")
async def big(ctx: Any) -> Response:
    return Response(200, bytes(range(256)) * (BIG_BYTES // 256), content_type="application/x")
