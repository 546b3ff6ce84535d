"""Apps for the TLS tests: what scheme and client certificate the app sees."""

from __future__ import annotations

import json
from typing import Any


async def scope_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that answers with its scope's ``scheme`` and ``server``, as JSON."""
    if scope["type"] != "http":
        return
    body = json.dumps({"scheme": scope["scheme"], "server": scope.get("server")}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
