"""The status page in headless Chromium: it polls /api/health and its charts fill with data.

Runs Debian's ``chromium`` binary directly (``--dump-dom`` and ``--screenshot``), with
virtual time so a 6 s budget of 1 s polls takes about a second. The runtime sends
``Content-Security-Policy: default-src 'self'`` on every response, so the test also proves
the page needs no inline script or style. Screenshots go to ``artifacts/``.

Without chromium the test skips, except in CI (``CI=true``), where it fails: ``.ci/run``
installs chromium.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from nessen import Request, Response, Runtime
from nessen.app import Next
from nessen.websocket import WebSocket
from tests.conftest import ServeFactory, wait_for
from tests.e2e.serving import base_env, serve_processes
from tests.rawhttp import RawClient, get

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CSP = "default-src 'self'"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed, and CI must run the browser test")
        pytest.skip("chromium is not installed (apt-get install chromium); CI fails instead")
    return found


def browse(chromium: str, tmp_path: Path, url: str, *args: str, budget_ms: int = 6000) -> str:
    """Load ``url`` for ``budget_ms`` of virtual time; return stdout (the DOM for --dump-dom)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    result = subprocess.run(
        [
            chromium,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def out_text(dom: str) -> str:
    """The text of a page's ``<pre id="out">``, where the test pages write their result."""
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[-2000:]
    return html.unescape(found.group(1))


class Elements(HTMLParser):
    """Every element's attributes and text, by id; and every element, in order."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str]] = {}
        self.text: dict[str, str] = {}
        self.all: list[tuple[str, dict[str, str]]] = []
        self._open: list[str] = []
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.all.append((tag, attributes))
        if "id" in attributes:
            self.by_id[attributes["id"]] = attributes
            self.text[attributes["id"]] = ""
            self._open.append(attributes["id"])
        else:
            self._open.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element in self._open:
            if element:
                self.text[element] += data

    def inside(self, element_id: str, tag: str) -> list[dict[str, str]]:
        """Elements of ``tag`` that follow ``element_id`` up to the next element with an id."""
        out, seen = [], False
        for name, attributes in self.all:
            if seen and "id" in attributes:
                break
            if seen and name == tag:
                out.append(attributes)
            seen = seen or attributes.get("id") == element_id
        return out


def service() -> Runtime:
    runtime = Runtime(access_log=False)

    async def content_security_policy(ctx: Request, next: Next) -> Response:
        response = await next()
        response.headers["Content-Security-Policy"] = CSP
        return response

    runtime.use(content_security_policy)

    @runtime.route.get("/work/{n:int}")
    async def work(ctx: Request) -> Response:
        return Response.json({"n": ctx.params["n"]})

    @runtime.route.websocket("/ws")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    return runtime


@pytest.fixture
def traffic() -> Iterator[threading.Event]:
    """Set the event to stop; requests are sent by the test."""
    stop = threading.Event()
    yield stop
    stop.set()


def test_status_page_charts_fill_with_live_data(
    serve: ServeFactory, chromium: str, tmp_path: Path
) -> None:
    server = serve(service(), max_target_bytes=64, env="development")
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        for n in range(40):
            assert client.get(f"/work/{n}").status_code == 200
        for n in range(2):
            assert client.get(f"/missing/{n}").status_code == 404
        assert client.get("/_nessen/status").headers["content-security-policy"] == CSP
    for _ in range(3):
        with RawClient(server.address) as raw:
            assert raw.request(get("/" + "a" * 100)).status == 414
    # Two WebSockets, one message each way on each; one closed (its messages are counted
    # when it ends), one left open while the page is read.
    url = f"ws://{server.host}:{server.port}/ws"
    with connect(url) as kept:
        with connect(url) as closed:
            closed.send("a")
            assert closed.recv(timeout=20) == "a"
        kept.send("b")
        assert kept.recv(timeout=20) == "b"
        health_polls = []

        def counted() -> bool:
            health_polls.append(1)
            health = httpx.get(server.url + "/api/health").json()
            return bool(health["websockets"]["closed"] == 1)

        wait_for(counted, "the closed WebSocket to be counted")
        # the work, the 404s, the page, the 414s, the two 101s, and those /api/health polls
        answered_before = 40 + 2 + 1 + 3 + 2 + len(health_polls)
        page = Elements(browse(chromium, tmp_path, server.url + "/_nessen/status", "--dump-dom"))

    body = next(attributes for tag, attributes in page.all if tag == "body")
    polls = int(body["data-polls"])
    assert polls >= 3  # one at load, then one per virtual second
    assert body["data-failures"] == "0"
    assert body["data-state"] == "READY"
    assert page.text["state"] == "READY"
    assert page.by_id["state"]["class"] == "state state-READY"
    assert page.by_id["connection"]["data-live"] == "true"
    assert page.text["connection"] == "live \u00b7 HTTP 200"

    # The last poll saw: what came before, the page with its script and style sheet, the
    # earlier polls, and perhaps a favicon request.
    total = int(page.text["total"].replace(",", ""))
    assert total in (answered_before + 3 + polls - 1, answered_before + 3 + polls)
    assert page.text["rejected"] == "3"
    [row] = page.inside("reasons", "tr")
    assert (row["data-reason"], row["data-count"]) == ("uri_too_long", "3")

    latency = page.by_id["chart-latency"]
    assert latency["data-points"] == str(polls)
    lines = page.inside("chart-latency", "polyline")
    assert [line["data-series"] for line in lines] == ["p50", "p95", "p99"]
    assert all(len(line["points"].split()) == polls for line in lines)
    p50, p95, p99 = (float(page.text[name]) for name in ("p50", "p95", "p99"))
    assert 0 < p50 <= p95 <= p99
    assert float(latency["data-last"]) == pytest.approx(p99, abs=0.006)  # shown to 2 places

    rate = page.by_id["chart-rate"]
    assert rate["data-points"] == str(polls - 1)  # a rate needs two polls
    assert float(rate["data-last"]) > 0
    assert page.by_id["chart-active"]["data-points"] == str(polls)
    assert page.text["active"] == "0"  # the poll does not count itself
    assert page.by_id["chart-rejected"]["data-points"] == str(polls - 1)
    # the 404s and the 414s (a server refusal is an answer with a status too), and perhaps
    # the browser's own /favicon.ico (a 404 as well)
    assert page.text["errors-4xx"] in ("5", "6")
    assert page.text["errors-5xx"] == "0"
    assert page.by_id["chart-errors"]["data-points"] == str(polls - 1)
    series = page.inside("chart-errors", "polyline")
    assert [line["data-series"] for line in series] == ["errors4xx", "errors5xx"]
    states = page.inside("chart-state", "rect")
    assert [state["data-state"] for state in states] == ["READY"] * polls
    assert re.fullmatch(r"[0-9.]+ MiB", page.text["rss"])
    assert re.fullmatch(r"version \S+", page.text["version"])
    assert "hidden" in page.by_id["workers-card"]  # one process: no workers table
    assert page.text["pid"].startswith("pid ")
    assert page.text["websockets"] == "1"
    assert page.text["websocket-messages"] == "2"  # the closed one's, in and out


def test_status_page_with_two_workers_shows_each_and_their_sum(
    chromium: str, tmp_path: Path
) -> None:
    env = base_env(WORKERS="2", NESSEN_ENV="development")
    with serve_processes() as start:
        served = start("tests.e2e.apps.sample:runtime", env=env)
        deadline = time.monotonic() + 60.0
        with httpx.Client(base_url=served.url, trust_env=False, timeout=10.0) as client:
            while True:  # new connections until each worker has answered some
                for _ in range(10):
                    assert client.get("/health", headers={"Connection": "close"}).is_success
                body = client.get("/api/health", headers={"Connection": "close"}).json()
                workers = body.get("workers", [])
                if len(workers) == 2 and all(w["requests"]["total"] > 0 for w in workers):
                    break
                assert time.monotonic() < deadline, body
        pids = {str(worker["pid"]) for worker in workers}

        page = Elements(browse(chromium, tmp_path, served.url + "/_nessen/status", "--dump-dom"))

    assert "hidden" not in page.by_id["workers-card"]
    rows = page.inside("workers", "tr")
    assert {row["data-pid"] for row in rows} == pids
    assert sorted(row["data-worker"] for row in rows) == ["0", "1"]
    shown_total = int(page.text["total"].replace(",", ""))
    assert shown_total == sum(int(row["data-total"]) for row in rows)  # the headline: the sum
    assert all(int(row["data-total"]) > 0 for row in rows)
    assert page.text["pid"].startswith("2 workers (all added up), supervisor pid ")
    assert page.text["workers-note"].startswith("2 live")


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


@pytest.mark.parametrize(
    ("name", "size"),
    [("desktop", (1280, 900)), ("wall", (1920, 1080)), ("phone", (390, 844))],
)
def test_status_page_screenshots(
    serve: ServeFactory,
    chromium: str,
    tmp_path: Path,
    traffic: threading.Event,
    name: str,
    size: tuple[int, int],
) -> None:
    server = serve(service(), max_target_bytes=64, env="development")

    def load() -> None:  # varying traffic while the browser polls, and a few refusals
        with httpx.Client(base_url=server.url, trust_env=False) as client:
            n = 0
            while not traffic.is_set():
                n += 1
                client.get(f"/work/{n}")
                if n % 97 == 0:
                    with RawClient(server.address) as raw:
                        raw.request(get("/" + "a" * 100))
                if n % 400 < 200:
                    traffic.wait(0.002)

    worker = threading.Thread(target=load, name="traffic")
    worker.start()
    try:
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"status-page-{name}.png"
        shot.unlink(missing_ok=True)
        browse(
            chromium,
            tmp_path,
            server.url + "/_nessen/status",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={shot}",
            budget_ms=40_000,
        )
    finally:
        traffic.set()
        worker.join(10.0)
    assert png_size(shot) == size
    assert shot.stat().st_size > 20_000  # a drawn page, not a blank one
