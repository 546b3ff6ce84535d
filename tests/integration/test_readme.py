"""The README's code samples run here, so the README shows only what exists."""

from __future__ import annotations

import io
import logging
import logging.config
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from nessen import Request, Response, Runtime
from tests.conftest import ServeFactory

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_the_two_quick_start_commands() -> None:
    text = README.read_text()
    quick_start = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick_start.strip().splitlines()]
    assert commands == ["make serve", "make test"]


def test_service_sample_behaves_as_described(serve: ServeFactory) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(python_blocks()[0], "README.md", "exec"), namespace)
    server = serve(namespace["runtime"])
    with httpx.Client(base_url=server.url) as client:
        user = client.get("/users/5?verbose=1")
        assert user.status_code == 200
        assert user.json() == {"id": 5, "verbose": True}
        assert user.headers["x-handled-by"] == "nessen"
        missing = client.get("/users/0")
        assert missing.status_code == 404
        assert missing.json()["error"] == "no such user"
        assert client.get("/users/abc").status_code == 404
        echoed = client.post("/echo", json={"a": [1, 2]})
        assert echoed.json() == {"received": {"a": [1, 2]}}
        bad = client.post("/echo", content=b"{not json")
        assert bad.status_code == 400
        assert bad.json()["error"] == "invalid JSON body"


def test_testing_sample_runs() -> None:
    namespace: dict[str, Any] = {}
    (block,) = [b for b in python_blocks() if "with LiveServer(" in b]
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["server"].result is not None  # the with-block stopped it cleanly
    assert namespace["server"].result.clean


def test_statsd_sample_sends_the_handlers_and_the_runtimes_counts(serve: ServeFactory) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5.0)
    (source,) = [b for b in python_blocks() if "8125" in b]
    assert '"127.0.0.1", 8125' in source
    port = str(receiver.getsockname()[1])
    namespace: dict[str, Any] = {}
    exec(compile(source.replace("8125", port), "README.md", "exec"), namespace)
    namespace["runtime"].process.interval = 3600.0  # no once-a-second gauges in the test
    with receiver, namespace["statsd"]:
        server = serve(namespace["runtime"])
        assert httpx.post(server.url + "/orders").status_code == 201
        assert [receiver.recv(65536).decode() for _ in range(2)] == [
            "shop.orders_total:1|c|#channel:web",
            "shop.http_requests_total:1|c|#method:POST,route:/orders,status:201",
        ]
        metrics = httpx.get(server.url + "/metrics").text.splitlines()
    assert 'orders_total{channel="web"} 1.0' in metrics
    assert 'http_requests_total{method="POST",route="/orders",status="201"} 1.0' in metrics


def test_middleware_sample_behaves_as_described(serve: ServeFactory) -> None:
    (block,) = [b for b in python_blocks() if "middleware={" in b]
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    server = serve(namespace["runtime"], rate_limit_max=1000)  # the sample's own limit
    origin = {"Origin": "https://app.example", "X-Request-ID": "readme-1"}
    with httpx.Client(base_url=server.url, headers=origin) as client:
        first = client.get("/catalog")
        second = client.get("/catalog", headers={"X-Api-Key": "k1"})
        preflight = client.options("/catalog", headers={"Access-Control-Request-Method": "DELETE"})
    assert first.status_code == 200
    assert first.json()[99] == {"sku": 99, "name": "item 99"}
    assert first.headers["content-encoding"] == "br"  # httpx offers br; COMPRESSION_LEVEL 4
    assert first.headers["x-request-id"] == "readme-1"
    assert first.headers["x-content-type-options"] == "nosniff"
    assert first.headers["access-control-allow-origin"] == "https://app.example"
    assert first.headers["access-control-expose-headers"] == "X-Request-ID"
    assert first.headers["ratelimit-limit"] == "1000"
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.headers["ratelimit-remaining"] == "999"  # keyed by API key: a new bucket
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-methods"].endswith("DELETE")


def test_logging_sample_gives_the_apps_own_lines_the_request_id(serve: ServeFactory) -> None:
    (block,) = [b for b in python_blocks() if "LOGGING = {" in b]
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    config = namespace["LOGGING"]
    stream = io.StringIO()
    config["handlers"]["console"]["stream"] = stream  # the sample's handler, into a buffer
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    logging.config.dictConfig({**config, "disable_existing_loggers": False})
    try:
        runtime = Runtime()

        @runtime.route.get("/pay")
        async def pay(ctx: Request) -> Response:
            logging.getLogger("shop").info("paid")
            return Response.text("ok")

        server = serve(runtime)
        with httpx.Client(base_url=server.url) as client:
            answer = client.get("/pay", headers={"X-Request-ID": "readme-log-1"})
        assert answer.status_code == 200
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)
    assert "readme-log-1 shop paid" in stream.getvalue().splitlines()


def test_websocket_sample_behaves_as_described(serve: ServeFactory) -> None:
    (block,) = [b for b in python_blocks() if "route.websocket" in b]
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    server = serve(namespace["runtime"])
    url = f"ws://{server.host}:{server.port}/ws/lobby"
    with connect(url + "?token=let-me-in", subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
        ws.send("hi")
        assert ws.recv(timeout=10) == "lobby: hi"
        ws.send(b"\x01")
        assert ws.recv(timeout=10) == "lobby: b'\\x01'"
    with pytest.raises(InvalidStatus) as refused:
        connect(url)
    assert refused.value.response.status_code == 403
