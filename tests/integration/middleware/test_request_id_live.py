"""Request ids over real HTTP."""

from __future__ import annotations

import httpx

from tests.conftest import ServeFactory
from tests.integration.middleware.apps import capture_logs, stacked_runtime
from tests.rawhttp import RawClient, get


def test_a_valid_incoming_id_is_echoed_and_logged(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with capture_logs() as logs, httpx.Client(base_url=server.url) as client:
        response = client.get("/small", headers={"X-Request-ID": "req-abc_123.~!"})
    assert response.headers["x-request-id"] == "req-abc_123.~!"
    assert logs.json_lines()[0]["request_id"] == "req-abc_123.~!"


def test_an_invalid_incoming_id_is_replaced(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with capture_logs() as logs, RawClient(server.address) as client:
        too_long = client.request(get("/small", extra=f"X-Request-ID: {'x' * 129}\r\n"))
        spaced = client.request(get("/small", extra="X-Request-ID: two words\r\n"))
        repeated = client.request(get("/small", extra="X-Request-ID: a\r\nX-Request-ID: b\r\n"))
        fine = client.request(get("/small", extra="X-Request-ID: " + "x" * 128 + "\r\n"))
    ids = [r.header("x-request-id") for r in (too_long, spaced, repeated, fine)]
    assert ids[3] == "x" * 128
    assert all(i is not None and len(i) == 21 for i in ids[:3])  # generated ones
    assert len(set(ids)) == 4
    assert [line["request_id"] for line in logs.json_lines()] == ids


def test_every_response_echoes_it(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with httpx.Client(base_url=server.url) as client:
        responses = [
            client.get("/health"),
            client.get("/boom"),
            client.post("/small"),  # 405
            client.options("/small"),  # 204 from the router
        ]
    assert [r.status_code for r in responses] == [200, 500, 405, 204]
    assert all(len(r.headers.get("x-request-id", "")) == 21 for r in responses)
