"""A WebSocket from a page in headless Chromium: the browser's own client and Origin.

The page opens a WebSocket to the server that served it (same origin: allowed by
default), sends a text and a binary message, and reports what happened to the server that
served it (``POST /report``); a page served from another port (another origin) is refused by
the ``Origin`` check unless that origin is in ``WS_ALLOWED_ORIGINS``. The test waits for
the report (an event), not for a time budget: Chromium's virtual time does not wait for a
WebSocket, so a busy machine would otherwise end the page before its exchange did.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from nessen import Request, Response, Runtime
from nessen.websocket import WebSocket
from tests.browser.test_status_page import FLAGS, chromium  # noqa: F401 (fixture)
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
  fetch("/report", {method: "POST", body: log.join("; ")});
};
"""


class Reports:
    """What pages POST to ``/report``; :meth:`wait` returns the first."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.arrived = threading.Event()

    def wait(self, timeout: float = 60.0) -> str:
        assert self.arrived.wait(timeout), "the page reported nothing"
        return self.texts[0]


def _app(*, page_only: bool = False, reports: Reports | None = None) -> Runtime:
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

    @runtime.route.post("/report")
    async def report(ctx: Request) -> Response:
        if reports is not None:
            reports.texts.append(ctx.body.decode())
            reports.arrived.set()
        return Response(204)

    @runtime.route.websocket("/ws")
    async def echo(ws: WebSocket) -> None:
        await ws.accept(subprotocol="chat.v1" if "chat.v1" in ws.subprotocols else None)
        async for message in ws:
            await ws.send(message.upper() if isinstance(message, str) else message[::-1])

    return runtime


def open_page(browser_path: str, tmp_path: Path, url: str, reports: Reports) -> str:
    """Load ``url`` in headless Chromium until the page reports; return its report."""
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    browser = subprocess.Popen(
        [browser_path, *FLAGS, f"--user-data-dir={profile}", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return reports.wait()
    finally:
        browser.terminate()
        browser.wait(30)


def test_a_page_talks_to_its_own_server_over_a_websocket(
    serve: ServeFactory,
    chromium: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    reports = Reports()
    server = serve(_app(reports=reports))
    report = open_page(chromium, tmp_path, server.url + "/", reports)
    assert report == "open chat.v1; text H\u00c9LLO; binary 3,2,1; close 1000"


def test_a_page_from_another_origin_is_refused_unless_listed(
    serve: ServeFactory,
    chromium: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    refused_reports, allowed_reports = Reports(), Reports()
    page = serve(_app(page_only=True, reports=refused_reports))
    default = serve(_app())  # another port: another origin, not listed
    refused = f"{page.url}/?target=ws://{default.host}:{default.port}/ws"
    # the browser sees the 403 as a failed handshake
    assert open_page(chromium, tmp_path, refused, refused_reports) == "close 1006"
    page_again = serve(_app(page_only=True, reports=allowed_reports))
    listed = serve(_app(), ws_allowed_origins=frozenset({page_again.url}))
    allowed = f"{page_again.url}/?target=ws://{listed.host}:{listed.port}/ws"
    report = open_page(chromium, tmp_path, allowed, allowed_reports)
    assert report == "open chat.v1; text H\u00c9LLO; binary 3,2,1; close 1000"
