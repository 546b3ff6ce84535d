"""WebSockets through ``nessen serve``: a FastAPI endpoint unchanged, SIGTERM, SIGHUP."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import wait_for
from tests.e2e.serving import ServeFactory, base_env
from tests.e2e.test_tls import Files
from tests.e2e.test_workers import started_pids, worker_pids

pytestmark = pytest.mark.slow

NATIVE = "tests.e2e.apps.ws_apps:runtime"
FASTAPI = "tests.e2e.apps.ws_apps:app"
DEADLINE = 30.0


def ws_url(address: tuple[str, int], path: str) -> str:
    return f"ws://{address[0]}:{address[1]}{path}"


def test_a_fastapi_websocket_endpoint_runs_under_nessen_serve(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(FASTAPI, env=base_env(LOG_FORMAT="console"))
    with connect(ws_url(served.address, "/chat/green")) as ws:
        ws.send(json.dumps({"n": 1}))
        got = json.loads(ws.recv(timeout=DEADLINE))
    assert (got["room"], got["got"]) == ({"n": 1}, "green")[::-1]
    line = served.wait_for("WEBSOCKET /chat/green closed 1000 by client")
    assert "messages_in=1" in line
    assert "messages_out=1" in line
    assert served.stop() == 0


def test_sigterm_closes_open_websockets_with_1001_and_exits_0(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(NATIVE, env=base_env(LOG_FORMAT="console", SHUTDOWN_TIMEOUT="20000"))
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(ws_url(served.address, "/ack"))) for _ in range(3)]
        for index, ws in enumerate(clients):
            ws.send(str(index))
            assert ws.recv(timeout=DEADLINE).endswith(f":{index}")
        started = time.monotonic()
        served.signal(signal.SIGTERM)
        codes = []
        for ws in clients:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=DEADLINE)
            assert closed.value.rcvd is not None
            codes.append(closed.value.rcvd.code)
        assert served.wait() == 0
        elapsed = time.monotonic() - started
    assert codes == [1001, 1001, 1001]
    assert elapsed < 20.0, "the drain waited for SHUTDOWN_TIMEOUT instead of the closes"
    assert served.stderr.count("closed 1001 by server") == 3


class AckingClient(threading.Thread):
    """Sends 0, 1, 2, ... one at a time; each must be acknowledged (``PID:N``) before the
    next. On a close it reconnects and sends the unacknowledged number again."""

    def __init__(self, address: tuple[str, int], total: int) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.total = total
        self.acked: list[int] = []
        self.pids: list[int] = []
        self.closes: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        number = 0
        end = time.monotonic() + 3 * DEADLINE
        while number < self.total and time.monotonic() < end:
            with connect(ws_url(self.address, "/ack"), open_timeout=DEADLINE) as ws:
                number = self._converse(ws, number)

    def _converse(self, ws: ClientConnection, number: int) -> int:
        """Send and check acknowledgements until the WebSocket closes; the next number."""
        while number < self.total:
            try:
                ws.send(str(number))
                pid, _, got = ws.recv(timeout=DEADLINE).partition(":")
            except ConnectionClosed as closed:
                self.closes.append(closed.rcvd.code if closed.rcvd else 1006)
                return number
            assert got == str(number)
            self.acked.append(number)
            self.pids.append(int(pid))
            number += 1
            time.sleep(0.01)  # pacing: about 100 messages a second per client
        return number


def test_sighup_moves_websocket_clients_to_new_workers_without_losing_a_message(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(NATIVE, env=base_env(WORKERS="2", LOG_FORMAT="console"))
    old = worker_pids(served, 2)
    clients = [AckingClient(served.address, 100_000) for _ in range(4)]
    for client in clients:
        client.start()
    wait_for(lambda: all(len(c.acked) >= 20 for c in clients), "the clients to get going", DEADLINE)
    served.signal(signal.SIGHUP)
    for pid in old:
        served.wait_for(f"(pid {pid}) exited with status 0", timeout=DEADLINE)
    new = set(started_pids(served)) - old
    wait_for(
        lambda: all(set(c.pids[-5:]) and set(c.pids[-5:]) <= new for c in clients),
        "the clients to reach the new workers",
        DEADLINE,
    )
    for client in clients:
        client.total = 0  # stop after the message in flight
    for client in clients:
        client.join(DEADLINE)
        assert client.error is None, repr(client.error)
        assert client.acked == list(range(len(client.acked))), "a message lost or repeated"
        assert client.closes, "never moved"
        assert set(client.closes) == {1001}, client.closes
    assert served.stop() == 0
    assert not re.search(r"ERROR|Traceback", served.stderr), served.stderr[-3000:]


def test_websockets_over_tls_native_and_fastapi(nessen_serve: ServeFactory, tmp_path: Path) -> None:
    """wss:// on the server's own TLS socket: a large message both ways, then a clean close."""
    files = Files(tmp_path)
    context = files.client_context()
    for app, path in ((NATIVE, "/ack"), (FASTAPI, "/chat/tls")):
        served = nessen_serve(app, *files.flags(), env=base_env(LOG_FORMAT="console"))
        url = f"wss://localhost:{served.address[1]}{path}"
        with connect(url, ssl=context) as ws:
            if path == "/ack":
                ws.send("x" * 300_000)
                pid, _, echoed = ws.recv(timeout=DEADLINE).partition(":")
                assert (int(pid) > 0, echoed) == (True, "x" * 300_000)
            else:
                ws.send(json.dumps({"big": "y" * 300_000}))
                assert json.loads(ws.recv(timeout=DEADLINE))["got"] == {"big": "y" * 300_000}
        served.wait_for(f"WEBSOCKET {path} closed 1000 by client")
        assert served.stop() == 0
