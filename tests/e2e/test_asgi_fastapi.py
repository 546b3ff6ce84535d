"""A real FastAPI app served by ``nessen serve module:app``, over real sockets."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.e2e.serving import ServeFactory, base_env, run_nessen
from tests.integration.wire import expect_rejection
from tests.rawhttp import RawClient

pytest.importorskip("fastapi")

APP = "tests.e2e.apps.fastapi_app:app"


def test_fastapi_app_answers_and_its_lifespan_runs(nessen_serve: ServeFactory) -> None:
    server = nessen_serve(APP, "--health-endpoints")
    # The lifespan ran before the socket accepted: its line precedes "Nessen running on".
    lines = server.stderr.splitlines()
    startup = next(i for i, line in enumerate(lines) if "lifespan startup, resource opened" in line)
    listening = next(i for i, line in enumerate(lines) if "Nessen running on" in line)
    assert startup < listening
    with server.client() as client:
        item = client.get("/items/42", params={"q": "x y"})
        assert item.status_code == 200
        assert item.json() == {"item_id": 42, "q": "x y"}
        assert client.get("/items/not-a-number").status_code == 422  # FastAPI's validation

        created = client.post("/items", json={"name": "pen", "price": 2.5, "quantity": 4})
        assert created.status_code == 200
        assert created.json() == {"name": "pen", "total": 2.5 * 4}

        streamed = client.get("/stream", params={"n": 4})
        assert streamed.status_code == 200
        assert streamed.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in streamed.headers
        assert streamed.text == "".join(f"part {i}\n" for i in range(4))

        # Lifespan state reaches requests: the resource opened at startup, used twice.
        assert client.get("/resource").json() == {"open": True, "uses": 1}
        assert client.get("/resource").json() == {"open": True, "uses": 2}

        payload = [bytes([i]) * 10_000 for i in range(20)]  # sent chunked by httpx
        uploaded = client.post("/upload", content=iter(payload))
        assert uploaded.json()["bytes"] == sum(map(len, payload))

        assert client.get("/health").text == "OK"
        ready = client.get("/ready")
        assert (ready.status_code, ready.json()["ready"]) == (200, True)
        metrics = client.get("/metrics").text
        assert 'route="/items/{item_id}",status="200"' in metrics
    assert server.stop() == 0
    shutdown = server.wait_for("lifespan shutdown")
    assert "resource closed after 2 uses" in shutdown


def test_limits_are_enforced_in_front_of_the_app(nessen_serve: ServeFactory) -> None:
    env = base_env(MAX_BODY_SIZE="1000", HEADERS_TIMEOUT="500")
    server = nessen_serve(APP, env=env)
    with RawClient(server.address) as client:  # declared too large: refused before the app
        client.send(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000
        )
        expect_rejection(client, 413, "body_too_large")
    with RawClient(server.address) as client:  # chunked, over the limit mid-stream
        client.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        client.send(b"3e8\r\n" + b"a" * 1000 + b"\r\n1\r\nb\r\n")
        expect_rejection(client, 413, "body_too_large")
    with RawClient(server.address) as client:  # a header section that never ends
        started = time.monotonic()
        client.send(b"GET /items/1 HTTP/1.1\r\nHost: t\r\n")
        expect_rejection(client, 408, "headers_timeout")
        assert time.monotonic() - started >= 0.5
    with server.client() as http:  # and the app still answers
        assert http.get("/items/7").json() == {"item_id": 7, "q": None}


def test_health_endpoints_are_off_unless_asked(nessen_serve: ServeFactory) -> None:
    plain = nessen_serve(APP)
    with plain.client() as client:
        missing = client.get("/health")
        assert missing.status_code == 404
        assert missing.json() == {"detail": "Not Found"}  # FastAPI's own 404
    enabled = nessen_serve(APP, env=base_env(HEALTH_ENDPOINTS="true"))
    with enabled.client() as client:
        assert client.get("/health").text == "OK"


def test_lifespan_startup_failure_exits_3() -> None:
    result = run_nessen("serve", "tests.e2e.apps.asgi_apps:failing_startup")
    assert result.returncode == 3, result.stderr
    assert "cannot reach the database" in result.stderr
    assert "Nessen running on" not in result.stderr


def test_a_callable_that_is_not_asgi3_exits_2() -> None:
    result = run_nessen("serve", "tests.e2e.apps.asgi_apps:not_asgi")
    assert result.returncode == 2
    assert "not a nessen Runtime" in result.stderr
    assert "or an ASGI 3 application" in result.stderr


def test_json_streams_close_cleanly_under_many_connections(nessen_serve: ServeFactory) -> None:
    server = nessen_serve(APP)
    clients = [RawClient(server.address) for _ in range(20)]
    try:
        for client in clients:
            client.send(b"GET /stream?n=50 HTTP/1.1\r\nHost: t\r\n\r\n")
        for client in clients:
            response = client.response()
            assert response.status == 200
            assert response.body.count(b"\n") == 50
    finally:
        for client in clients:
            client.close()
    with socket.create_connection(server.address) as sock:  # still accepting
        sock.sendall(b"GET /json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert json.loads(data.partition(b"\r\n\r\n")[2])["message"] == "hello"
