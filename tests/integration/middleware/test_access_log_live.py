"""The access log over real HTTP: one line per request, none forged, none doubled."""

from __future__ import annotations

import asyncio
import threading

from nessen import Config, Request, Response
from nessen.middleware import logging_middleware, request_id_middleware
from tests.conftest import ServeFactory
from tests.integration.middleware.apps import capture_logs, plain_runtime, stacked_runtime
from tests.rawhttp import RawClient, get


def test_a_decoded_line_break_in_the_path_cannot_forge_a_line(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with capture_logs(expect=1) as logs, RawClient(server.address) as client:
        response = client.request(get("/x%0aFAKE%20200%0d%0anessen.access%20GET%20/admin"))
    assert response.status == 404  # no route matches a path holding a line break
    json_lines = logs.json.getvalue().splitlines()
    console_lines = logs.console.getvalue().splitlines()
    assert len(json_lines) == 1
    assert len(console_lines) == 1
    (entry,) = logs.json_lines()
    assert entry["path"] == "/x\nFAKE 200\r\nnessen.access GET /admin"  # intact, escaped in JSON
    assert entry["level"] == "warning"
    assert 'path="/x\\\\x0aFAKE 200\\\\x0d\\\\x0anessen.access GET /admin"' in console_lines[0]
    assert "\\x0a" in console_lines[0].split(" nessen.access ", 1)[1]  # the message too


def test_one_line_per_request_on_a_keep_alive_connection(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with capture_logs(expect=3) as logs, RawClient(server.address) as client:
        for path in ("/a", "/b", "/c"):
            assert client.request(get(path)).status == 200
    assert [line["path"] for line in logs.json_lines()] == ["/a", "/b", "/c"]
    assert len({line["request_id"] for line in logs.json_lines()}) == 3


def test_requests_the_server_refuses_are_not_logged_here(serve: ServeFactory) -> None:
    server = serve(stacked_runtime(), max_target_bytes=64)
    with capture_logs(expect=1) as access, capture_logs("nessen.server", expect=1) as refusals:
        with RawClient(server.address) as client:
            assert client.request(get("/" + "a" * 100)).status == 414
        with RawClient(server.address) as client:
            assert client.request(get("/after")).status == 200
    assert [line["path"] for line in access.json_lines()] == ["/after"]
    assert [line["reason"] for line in refusals.json_lines()] == ["uri_too_long"]


def test_a_handler_timeout_gets_one_access_line_with_the_503_sent(serve: ServeFactory) -> None:
    cancelled = threading.Event()
    runtime = plain_runtime(Config())
    runtime.use(request_id_middleware())
    runtime.use(logging_middleware())

    @runtime.route.get("/slow")
    async def slow(ctx: Request) -> Response:
        try:
            await asyncio.sleep(30)
        finally:
            cancelled.set()
        return Response.text("late")

    @runtime.route.get("/fast")
    async def fast(ctx: Request) -> Response:
        return Response.text("ok")

    server = serve(runtime, request_timeout=0.2)
    with capture_logs(expect=2) as access, capture_logs("nessen.server", expect=1) as refusals:
        with RawClient(server.address) as client:
            slow_response = client.request(get("/slow"))
            assert slow_response.status == 503
        assert cancelled.wait(5.0)
        with RawClient(server.address) as client:  # the loop has moved on past the cancel
            assert client.request(get("/fast")).status == 200
    lines = access.json_lines()
    assert [(line["path"], line["status"], line.get("outcome")) for line in lines] == [
        ("/slow", 503, "request_timeout"),
        ("/fast", 200, None),
    ]
    assert lines[0]["request_id"] == slow_response.header("x-request-id")
    assert lines[0]["route"] == "/slow"
    assert lines[0]["bytes"] == len(slow_response.body)
    assert [line["status"] for line in refusals.json_lines()] == [503]
