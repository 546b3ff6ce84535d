"""How a Runtime installs the built-in middleware: default, options, explicit list, none."""

from __future__ import annotations

import pytest

from nessen import Response, Runtime
from nessen.middleware import request_id_middleware
from tests.conftest import ServeFactory
from tests.rawhttp import RawClient, get


def make(**kwargs: object) -> Runtime:
    runtime = Runtime(**kwargs)  # type: ignore[arg-type]

    @runtime.route.get("/")
    async def index(ctx):  # type: ignore[no-untyped-def]
        return Response.text("hi")

    return runtime


def test_default_stack_is_installed_and_probes_are_not_rate_limited(serve: ServeFactory) -> None:
    server = serve(make(status_page=True), rate_limit_max=2)
    with RawClient(server.address) as client:
        first = client.request(get("/"))
        assert first.header("x-request-id") is not None
        assert first.header("x-content-type-options") == "nosniff"
        assert first.header("ratelimit-limit") == "2"
        assert client.request(get("/")).status == 200
        assert client.request(get("/")).status == 429
        for path in ("/health", "/ready", "/api/health", "/metrics", "/_nessen/status.js"):
            for _ in range(3):
                assert client.request(get(path)).status == 200, path


def test_no_middleware_means_routing_only(serve: ServeFactory) -> None:
    server = serve(make(middleware=None), rate_limit_max=1)
    with RawClient(server.address) as client:
        for _ in range(3):
            response = client.request(get("/"))
            assert response.status == 200
            assert response.header("x-request-id") is None
            assert response.header("ratelimit-limit") is None


def test_options_switch_built_ins_off(serve: ServeFactory) -> None:
    server = serve(make(middleware={"rate_limit": False, "security_headers": False}))
    with RawClient(server.address) as client:
        response = client.request(get("/"))
    assert response.header("x-request-id") is not None
    assert response.header("ratelimit-limit") is None
    assert response.header("x-frame-options") is None


def test_an_explicit_list_replaces_the_defaults(serve: ServeFactory) -> None:
    server = serve(make(middleware=[request_id_middleware(header="X-Trace")]))
    with RawClient(server.address) as client:
        response = client.request(get("/", extra="X-Trace: abc-123\r\n"))
    assert response.header("x-trace") == "abc-123"
    assert response.header("x-content-type-options") is None


def test_a_bad_middleware_choice_is_refused() -> None:
    with pytest.raises(ValueError, match="middleware='all'"):
        Runtime(middleware="all")
