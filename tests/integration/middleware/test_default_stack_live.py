"""The default stack end to end over real HTTP: order and what each layer adds."""

from __future__ import annotations

import gzip

import brotli
import httpx

from nessen import Config
from tests.conftest import ServeFactory
from tests.integration.middleware.apps import PAYLOAD, capture_logs, stacked_runtime
from tests.rawhttp import RawClient, get


def test_one_request_shows_every_layer(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with capture_logs(expect=1) as logs, RawClient(server.address) as client:
        response = client.request(
            get("/data", extra="Accept-Encoding: gzip, br\r\nX-Request-ID: e2e-42\r\n")
        )
    assert response.status == 200
    assert response.header("x-request-id") == "e2e-42"
    assert response.header("x-content-type-options") == "nosniff"
    assert response.header("x-frame-options") == "DENY"
    assert response.header("content-security-policy") == (
        "default-src 'self'; object-src 'none'; frame-ancestors 'none'"
    )
    assert response.header("ratelimit-limit") == "100"
    assert response.header("ratelimit-remaining") == "99"
    assert response.header("content-encoding") == "br"
    assert response.header("vary") == "Accept-Encoding"
    assert response.header("content-length") == str(len(response.body))
    assert brotli.decompress(response.body) == PAYLOAD
    (line,) = logs.json_lines()
    assert line["request_id"] == "e2e-42"
    assert line["path"] == "/data"
    assert line["route"] == "/data"
    assert line["status"] == 200
    assert line["bytes"] == len(response.body)
    assert line["client_ip"] == "127.0.0.1"


def test_the_order_is_visible_in_the_header_section(serve: ServeFactory) -> None:
    # outer layers add their fields after inner ones: compression, rate limit, security,
    # request id; the order of the fields on the wire shows the order of the layers
    server = serve(stacked_runtime())
    with RawClient(server.address) as client:
        response = client.request(get("/data", extra="Accept-Encoding: gzip\r\n"))
    names = response.header_names()
    order = [
        names.index("content-encoding"),
        names.index("ratelimit-limit"),
        names.index("x-content-type-options"),
        names.index("x-request-id"),
    ]
    assert order == sorted(order)
    assert gzip.decompress(response.body) == PAYLOAD


def test_a_429_still_carries_the_outer_layers(serve: ServeFactory) -> None:
    server = serve(stacked_runtime(Config(rate_limit_max=1)))
    with capture_logs(expect=2) as logs, httpx.Client(base_url=server.url) as client:
        assert client.get("/small").status_code == 200
        refused = client.get("/small", headers={"X-Request-ID": "limited-1"})
    assert refused.status_code == 429
    assert refused.headers["x-request-id"] == "limited-1"
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert refused.json()["request_id"] == "limited-1"
    assert [(line["status"], line["level"]) for line in logs.json_lines()] == [
        (200, "info"),
        (429, "warning"),
    ]


def test_probes_pass_the_stack_unlimited(serve: ServeFactory) -> None:
    server = serve(stacked_runtime(Config(rate_limit_max=1)))
    with httpx.Client(base_url=server.url) as client:
        statuses = [client.get(path).status_code for path in ("/health", "/ready") * 3]
    assert statuses == [200] * 6


def test_handler_errors_pass_back_through_every_layer(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with capture_logs(expect=2) as logs, httpx.Client(base_url=server.url) as client:
        response = client.get("/boom", headers={"X-Request-ID": "err-1"})
        teapot = client.get("/teapot")
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "err-1"
    assert response.json()["request_id"] == "err-1"
    assert response.headers["ratelimit-remaining"] == "99"
    assert teapot.status_code == 418
    assert teapot.headers["x-request-id"] == teapot.json()["request_id"]
    levels = [(line["status"], line["level"]) for line in logs.json_lines()]
    assert levels == [(500, "error"), (418, "warning")]
