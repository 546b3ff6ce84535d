"""Serving without the CLI: ``Runtime.listen()`` in a script, ``Runtime.running()`` in a test."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import textwrap
from pathlib import Path

import pytest

from nessen import Request, Response, Runtime, State
from tests.e2e.serving import ServeProcess, base_env
from tests.rawhttp import RawClient, get

SCRIPT = """
import socket
import sys

from nessen import Response, Runtime

runtime = Runtime()


@runtime.on_startup
async def probe_own_port():
    port = int(sys.argv[1])
    if port:  # the socket must not take connections yet
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            verdict = "connected"
        except ConnectionRefusedError:
            verdict = "refused"
        print(f"startup hook: connect {verdict}", file=sys.stderr, flush=True)


@runtime.route.get("/hello")
async def hello(ctx):
    return Response.text("hello from listen")


sys.exit(runtime.listen(int(sys.argv[1])))
"""


class ScriptProcess(ServeProcess):
    """``python SCRIPT ARGS`` instead of ``nessen serve``, followed the same way."""

    def __init__(self, script: Path, args: list[str], env: dict[str, str]) -> None:
        super().__init__(args, env, command=[sys.executable, str(script), *args])


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "service.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_listen_0_serves_on_the_port_it_logs_and_stops_on_sigterm(script: Path) -> None:
    served = ScriptProcess(script, ["0"], base_env())
    try:
        assert served.port != 0
        with RawClient(served.address) as client:
            response = client.request(get("/hello"))
            assert response.status == 200
            assert response.body == b"hello from listen"
            assert client.request(get("/ready")).status == 200
        served.signal(signal.SIGTERM)
        assert served.wait() == 0
    finally:
        served.close()
    assert "DRAINING -> STOPPING (drained)" in served.stderr
    assert "startup hook" not in served.stderr  # port 0: the hook had nothing to probe


def test_startup_hooks_run_before_the_socket_accepts(script: Path) -> None:
    port = free_port()
    served = ScriptProcess(script, [str(port)], base_env())
    try:
        assert served.port == port
        with RawClient(served.address) as client:
            assert client.request(get("/hello")).status == 200
        assert served.stop() == 0
    finally:
        served.close()
    lines = served.stderr.splitlines()
    hook = next(i for i, line in enumerate(lines) if "startup hook: connect" in line)
    listening = next(i for i, line in enumerate(lines) if "Nessen running on" in line)
    assert lines[hook] == "startup hook: connect refused"
    assert hook < listening


async def test_running_serves_in_the_tests_own_event_loop() -> None:
    runtime = Runtime(access_log=False)
    entered = asyncio.Event()

    @runtime.route.get("/loop")
    async def same_loop(ctx: Request) -> Response:
        entered.set()  # an asyncio.Event of this test's loop: it works only on this loop
        return Response.text("same loop")

    async with runtime.running() as server:
        host, port = server.address
        assert host == "127.0.0.1"
        assert port != 0
        assert runtime.state == State.READY
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(get("/loop"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await reader.readexactly(9) == b"same loop"
        assert entered.is_set()
        writer.close()
        await writer.wait_closed()
    assert runtime.state == State.STOPPING
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(host, port)
