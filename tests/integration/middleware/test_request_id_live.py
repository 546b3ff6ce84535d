"""Request ids over real HTTP."""

from __future__ import annotations

import httpx

from tests.conftest import ServeFactory
from tests.integration.middleware.apps import capture_logs, stacked_runtime
from tests.rawhttp import RawClient, get


def test_a_valid_incoming_id_is_echoed_and_logged(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with capture_logs(expect=1) as logs, httpx.Client(base_url=server.url) as client:
        response = client.get("/small", headers={"X-Request-ID": "req-abc_123.9:Z"})
    assert response.headers["x-request-id"] == "req-abc_123.9:Z"
    assert logs.json_lines()[0]["request_id"] == "req-abc_123.9:Z"


def test_an_invalid_incoming_id_is_replaced(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with capture_logs(expect=4) as logs, RawClient(server.address) as client:
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


UNSAFE_IDS = ["<script>alert(1)</script>", 'id"quoted', "a;b=c", "%0d%0aSet-Cookie:x", "a/b", "~!"]


def test_an_id_with_unsafe_characters_is_replaced_never_echoed(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with capture_logs(expect=len(UNSAFE_IDS)) as logs, httpx.Client(base_url=server.url) as client:
        responses = [client.get("/small", headers={"X-Request-ID": rid}) for rid in UNSAFE_IDS]
    for rid, response in zip(UNSAFE_IDS, responses, strict=True):
        echoed = response.headers["x-request-id"]
        assert echoed != rid
        assert len(echoed) == 21  # a generated one
        assert rid not in response.text
    logged = [line["request_id"] for line in logs.json_lines()]
    assert logged == [r.headers["x-request-id"] for r in responses]


def test_the_asgi_host_applies_the_same_rule() -> None:
    from nessen import Config
    from nessen.asgi import ASGIHost
    from nessen.testing import LiveServer

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with LiveServer(ASGIHost(app, Config())) as server, httpx.Client(base_url=server.url) as c:
        kept = c.get("/", headers={"X-Request-ID": "svc-a:42.x_y"})
        replaced = [c.get("/", headers={"X-Request-ID": rid}) for rid in UNSAFE_IDS]
    assert kept.headers["x-request-id"] == "svc-a:42.x_y"
    for rid, response in zip(UNSAFE_IDS, replaced, strict=True):
        assert response.headers["x-request-id"] != rid
        assert len(response.headers["x-request-id"]) == 21
