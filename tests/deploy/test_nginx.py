"""deploy/nginx/nessen.conf: valid for nginx, and its timeouts and limits agree with Nessen's."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from nessen import Request, Response, Runtime
from nessen.config import Config
from nessen.websocket import WebSocket
from tests.conftest import ServeFactory
from tests.deploy.manifests import NGINX_CONF, nginx_bytes, nginx_directives, nginx_seconds

DEFAULTS = Config()
"""The conf is written for Nessen's defaults (its header says which variables matter)."""


def one(name: str) -> str:
    (value,) = set(nginx_directives()[name])
    return value


def test_idle_upstream_connections_are_closed_by_nginx_first() -> None:
    # nginx must close an idle upstream connection before Nessen's IDLE_TIMEOUT does, or it
    # may send a request on a connection Nessen is closing (a 502); see the conf's comment.
    assert int(one("keepalive")) > 0
    assert nginx_seconds(one("keepalive_timeout")) < DEFAULTS.idle_timeout
    assert one("proxy_http_version") == "1.1"
    # ... which needs no "Connection: close" on requests that do not upgrade: the map sends
    # an empty Connection for them, "upgrade" only for a WebSocket handshake.
    assert "Connection $connection_upgrade" in nginx_directives()["proxy_set_header"]
    text = NGINX_CONF.read_text()
    mapping = re.search(r"map \$http_upgrade \$connection_upgrade \{(.*?)\}", text, re.S)
    assert mapping is not None
    assert re.findall(r"(\S+)\s+(\S+);", mapping.group(1)) == [("default", "upgrade"), ("''", "''")]


def test_websocket_pings_keep_the_proxy_tunnel_open() -> None:
    assert "Upgrade $http_upgrade" in nginx_directives()["proxy_set_header"]
    assert DEFAULTS.ws_ping_interval < nginx_seconds(one("proxy_read_timeout"))


def test_nginx_waits_longer_than_the_request_timeout() -> None:
    # Nessen's 503 + Retry-After at REQUEST_TIMEOUT reaches the client, not nginx's 504.
    assert nginx_seconds(one("proxy_read_timeout")) > DEFAULTS.request_timeout
    # A retry on another server happens only before a handler could have timed out.
    assert nginx_seconds(one("proxy_next_upstream_timeout")) < DEFAULTS.request_timeout


def test_edge_limits_match_nessens() -> None:
    assert nginx_bytes(one("client_max_body_size")) == DEFAULTS.max_body_bytes
    assert nginx_seconds(one("client_header_timeout")) == DEFAULTS.headers_timeout
    _count, size = one("large_client_header_buffers").split()
    assert nginx_bytes(size) >= DEFAULTS.max_header_bytes  # Nessen answers 431, not nginx 400


def main_config(folder: Path, name: str, site: Path, *, foreground: bool = False) -> Path:
    """A minimal main nginx config including ``site`` in http {}, as /etc/nginx/conf.d/ is,
    with its pid file, logs and temp paths in ``folder``; ``foreground``: ``daemon off``."""
    main = folder / f"{name}.conf"
    temp = "\n".join(
        f"  {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    daemon = "daemon off;\n" if foreground else ""
    main.write_text(
        f"pid {folder / f'{name}.pid'};\nerror_log stderr;\n{daemon}events {{}}\n"
        f"http {{\n  access_log off;\n{temp}\n  include {site};\n}}\n"
    )
    return main


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (Debian: nginx)")
def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    # The conf is an http {} include, as in /etc/nginx/conf.d/; wrap it in a minimal main
    # config whose pid file, logs and temp paths are in tmp_path.
    main = main_config(tmp_path, "nginx", NGINX_CONF)
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(main), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def nginx_in_front(tmp_path: Path) -> Iterator[Callable[[int, str], int]]:
    """Run nginx with deploy/nginx/nessen.conf in front of a port; give nginx's port.

    Only the addresses change (upstream and listen), and ``proxy_read_timeout`` when a
    test asks, so the tunnel's idle timeout can be seen in seconds.
    """
    if shutil.which("nginx") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed, and CI must run the proxy test")
        pytest.skip("nginx is not installed (Debian: nginx)")
    processes: list[subprocess.Popen[bytes]] = []

    def start(upstream: int, read_timeout: str = "35s") -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        conf = NGINX_CONF.read_text()
        conf = conf.replace("server 127.0.0.1:3000", f"server 127.0.0.1:{upstream}")
        conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
        conf = conf.replace("proxy_read_timeout 35s;", f"proxy_read_timeout {read_timeout};")
        site = tmp_path / f"site-{port}.conf"
        site.write_text(conf)
        main = main_config(tmp_path, f"nginx-{port}", site, foreground=True)
        process = subprocess.Popen(
            ["nginx", "-p", str(tmp_path), "-c", str(main), "-e", "stderr"],
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                assert process.poll() is None, "nginx exited"
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)

    yield start
    for process in processes:
        process.terminate()
        process.wait(30)


def echo_service() -> Runtime:
    runtime = Runtime(access_log=False)

    @runtime.route.get("/hello")
    async def hello(ctx: Request) -> Response:
        return Response.text(f"hello {ctx.client_ip}")

    @runtime.route.websocket("/ws")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    return runtime


def test_websockets_and_plain_requests_pass_through_nginx(
    serve: ServeFactory, nginx_in_front: Callable[..., int]
) -> None:
    server = serve(echo_service())
    port = nginx_in_front(server.port)
    assert httpx.get(f"http://127.0.0.1:{port}/hello").text == "hello 127.0.0.1"
    with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        ws.send("through the proxy")
        assert ws.recv(timeout=10) == "through the proxy"


def test_pings_keep_an_idle_websocket_open_past_the_proxys_read_timeout(
    serve: ServeFactory, nginx_in_front: Callable[..., int]
) -> None:
    pinging = serve(echo_service(), ws_ping_interval=0.5)
    silent = serve(echo_service(), ws_ping_interval=0)
    for upstream, survives in ((pinging.port, True), (silent.port, False)):
        port = nginx_in_front(upstream, "2s")
        with connect(f"ws://127.0.0.1:{port}/ws", ping_interval=None) as ws:
            idle_until = time.monotonic() + 4.0  # twice the proxy's read timeout
            closed = False
            while time.monotonic() < idle_until and not closed:
                try:
                    ws.recv(timeout=idle_until - time.monotonic())
                except TimeoutError:
                    break
                except ConnectionClosed:
                    closed = True
            if survives:
                assert not closed
                ws.send("still there")
                assert ws.recv(timeout=10) == "still there"
            else:
                assert closed, "nginx kept a silent tunnel past proxy_read_timeout"
