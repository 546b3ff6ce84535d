"""A WebSocket from a page in headless Chromium: the browser's own client and Origin.

The page opens a WebSocket to the server that served it (same origin: allowed by
default), sends a text and a binary message and writes what came back; a page served from
another port (another origin) is refused by the ``Origin`` check unless that origin is in
``WS_ALLOWED_ORIGINS``.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from nessen import Request, Response, Runtime
from nessen.websocket import WebSocket
from tests.browser.test_status_page import browse, chromium  # noqa: F401 (fixture)
from tests.conftest import ServeFactory

PAGE = b"""<!doctype html><html><body><pre id="out">pending</pre>
<script src="/page.js"></script></body></html>"""
"""The page: its script is a file, as the runtime's default CSP (``default-src 'self'``)
allows no inline script."""

SCRIPT = b"""
const out = document.getElementById("out");
const log = [];
const target = new URLSearchParams(location.search).get("target")
  || "ws://" + location.host + "/ws";
const ws = new WebSocket(target, ["chat.v1"]);
ws.binaryType = "arraybuffer";
ws.onopen = () => { log.push("open " + ws.protocol); ws.send("h\\u00e9llo"); };
ws.onmessage = (event) => {
  if (typeof event.data === "string") {
    log.push("text " + event.data);
    ws.send(new Uint8Array([1, 2, 3]));
  } else {
    log.push("binary " + Array.from(new Uint8Array(event.data)).join(","));
    ws.close(1000, "done");
  }
};
ws.onclose = (event) => {
  log.push("close " + event.code);
  out.textContent = log.join("; ");
};
"""


def _app(*, page_only: bool = False) -> Runtime:
    """``/`` is the page (its WebSocket goes to ``?target=`` or to this server), ``/ws`` echoes.

    ``page_only``: no middleware, so no CSP: the page may open a WebSocket to another origin
    (the default CSP, ``default-src 'self'``, would stop the browser before the server's
    ``Origin`` check could be seen).
    """
    runtime = Runtime(middleware=None, access_log=False) if page_only else Runtime(access_log=False)

    @runtime.route.get("/")
    async def page(ctx: Request) -> Response:
        return Response(200, PAGE, content_type="text/html; charset=utf-8")

    @runtime.route.get("/page.js")
    async def script(ctx: Request) -> Response:
        return Response(200, SCRIPT, content_type="text/javascript; charset=utf-8")

    @runtime.route.websocket("/ws")
    async def echo(ws: WebSocket) -> None:
        await ws.accept(subprotocol="chat.v1" if "chat.v1" in ws.subprotocols else None)
        async for message in ws:
            await ws.send(message.upper() if isinstance(message, str) else message[::-1])

    return runtime


def _result(dom: str) -> str:
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[-2000:]
    return html.unescape(found.group(1))


def test_a_page_talks_to_its_own_server_over_a_websocket(
    serve: ServeFactory,
    chromium: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    server = serve(_app())
    dom = browse(chromium, tmp_path, server.url + "/", "--dump-dom", budget_ms=5000)
    assert _result(dom) == "open chat.v1; text H\u00c9LLO; binary 3,2,1; close 1000"


def test_a_page_from_another_origin_is_refused_unless_listed(
    serve: ServeFactory,
    chromium: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    page = serve(_app(page_only=True))
    default = serve(_app())  # another port: another origin, not listed
    listed = serve(_app(), ws_allowed_origins=frozenset({page.url}))
    refused = f"{page.url}/?target=ws://{default.host}:{default.port}/ws"
    dom = browse(chromium, tmp_path, refused, "--dump-dom", budget_ms=5000)
    assert _result(dom) == "close 1006"  # the browser sees the 403 as a failed handshake
    allowed = f"{page.url}/?target=ws://{listed.host}:{listed.port}/ws"
    dom = browse(chromium, tmp_path, allowed, "--dump-dom", budget_ms=5000)
    assert _result(dom) == "open chat.v1; text H\u00c9LLO; binary 3,2,1; close 1000"
