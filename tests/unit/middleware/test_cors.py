from __future__ import annotations

import json

import pytest

from nessen.http import Request, Response
from nessen.middleware.cors import PREFLIGHT_VARY, cors_middleware
from tests.unit.middleware.helpers import make_request, responding, run

APP = "https://app.example"
EVIL = "https://evil.example"


def preflight(
    origin: str = APP, method: str = "PUT", headers: str | None = None, path: str = "/items"
) -> Request:
    fields = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if headers is not None:
        fields.append(("Access-Control-Request-Headers", headers))
    return make_request("OPTIONS", path, fields)


async def test_an_allowed_preflight_is_answered_before_the_inner_pipeline() -> None:
    middleware = cors_middleware([APP], allow_headers=["Content-Type", "X-Token"], max_age=300)
    handler = responding(lambda: Response.text("inner"))
    response = await run(middleware, preflight(headers="x-token, content-type"), handler)
    assert handler.calls == [0]  # type: ignore[attr-defined]
    assert response.status == 204
    assert response.body == b""
    headers = response.headers
    assert headers["access-control-allow-origin"] == APP
    assert headers["access-control-allow-methods"] == "GET, HEAD, POST, PUT, PATCH, DELETE"
    assert headers["access-control-allow-headers"] == "content-type, x-token"
    assert headers["access-control-max-age"] == "300"
    assert headers["vary"] == PREFLIGHT_VARY
    assert "access-control-allow-credentials" not in headers


async def test_a_preflight_from_a_disallowed_origin_gets_no_cors_fields() -> None:
    handler = responding(lambda: Response.text("inner"))
    response = await run(cors_middleware([APP]), preflight(origin=EVIL), handler)
    assert handler.calls == [0]  # type: ignore[attr-defined]
    assert response.status == 403
    assert not [n for n in response.headers if n.startswith("access-control-")]
    assert json.loads(response.body) == {
        "error": "CORS preflight refused",
        "reason": "origin not allowed",
    }
    assert response.headers["vary"] == PREFLIGHT_VARY


async def test_a_preflight_for_a_method_not_allowed_is_refused() -> None:
    response = await run(cors_middleware([APP], allow_methods=["GET"]), preflight(method="DELETE"))
    assert response.status == 403
    assert json.loads(response.body)["reason"] == "method DELETE not allowed"
    # safelisted methods are always fine
    ok = await run(cors_middleware([APP], allow_methods=["GET"]), preflight(method="POST"))
    assert ok.status == 204


async def test_a_preflight_for_a_header_not_allowed_is_refused() -> None:
    middleware = cors_middleware([APP], allow_headers=["X-Token"])
    refused = await run(middleware, preflight(headers="X-Token, Authorization"))
    assert refused.status == 403
    assert json.loads(refused.body)["reason"] == "header authorization not allowed"
    safelisted = await run(middleware, preflight(headers="content-type, accept"))
    assert safelisted.status == 204


async def test_wildcard_methods_and_headers_echo_the_request() -> None:
    middleware = cors_middleware([APP], allow_methods=["*"], allow_headers=["*"])
    response = await run(middleware, preflight(method="PROPFIND", headers="Authorization, X-A"))
    assert response.status == 204
    assert response.headers["access-control-allow-methods"] == "PROPFIND"
    assert response.headers["access-control-allow-headers"] == "authorization, x-a"
    assert response.headers["vary"] == (
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    )


async def test_options_without_request_method_is_not_a_preflight() -> None:
    handler = responding(lambda: Response(204, headers={"Allow": "GET"}))
    request = make_request("OPTIONS", "/items", [("Origin", APP)])
    response = await run(cors_middleware([APP]), request, handler)
    assert handler.calls == [1]  # type: ignore[attr-defined]
    assert response.headers["allow"] == "GET"
    assert response.headers["access-control-allow-origin"] == APP


async def test_an_allowed_origin_gets_the_fields_on_the_actual_response() -> None:
    middleware = cors_middleware([APP], expose_headers=["X-Request-ID", "RateLimit-Remaining"])
    response = await run(middleware, make_request(headers=[("Origin", APP)]))
    headers = response.headers
    assert headers["access-control-allow-origin"] == APP
    assert headers["access-control-expose-headers"] == "X-Request-ID, RateLimit-Remaining"
    assert headers["vary"] == "Origin"


async def test_a_disallowed_origin_gets_no_cors_fields_but_vary() -> None:
    response = await run(cors_middleware([APP]), make_request(headers=[("Origin", EVIL)]))
    assert response.status == 200
    assert not [n for n in response.headers if n.startswith("access-control-")]
    assert response.headers["vary"] == "Origin"


async def test_a_request_without_origin_still_varies_on_origin() -> None:
    response = await run(cors_middleware([APP]), make_request())
    assert response.headers["vary"] == "Origin"
    assert "access-control-allow-origin" not in response.headers


async def test_wildcard_without_credentials_sends_star_and_no_vary() -> None:
    response = await run(cors_middleware(["*"]), make_request(headers=[("Origin", EVIL)]))
    assert response.headers["access-control-allow-origin"] == "*"
    assert "vary" not in response.headers


async def test_wildcard_is_never_combined_with_credentials() -> None:
    middleware = cors_middleware(["*"], allow_credentials=True)
    response = await run(middleware, make_request(headers=[("Origin", EVIL)]))
    assert response.headers["access-control-allow-origin"] == EVIL  # echoed, not "*"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["vary"] == "Origin"
    pre = await run(middleware, preflight(origin=EVIL))
    assert pre.headers["access-control-allow-origin"] == EVIL
    assert pre.headers["access-control-allow-credentials"] == "true"
    # the opaque "null" origin (sandboxed frames, file:) is not echoed with credentials
    null = await run(middleware, make_request(headers=[("Origin", "null")]))
    assert "access-control-allow-origin" not in null.headers


async def test_credentials_with_listed_origins() -> None:
    middleware = cors_middleware([APP], allow_credentials=True)
    response = await run(middleware, make_request(headers=[("Origin", APP)]))
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"


async def test_origins_compare_case_insensitively() -> None:
    middleware = cors_middleware(["https://App.Example"])
    response = await run(middleware, make_request(headers=[("Origin", APP)]))
    assert response.headers["access-control-allow-origin"] == APP


async def test_vary_is_merged_with_the_handler_s() -> None:
    handler = responding(lambda: Response.text("x", headers={"Vary": "Accept-Encoding"}))
    response = await run(cors_middleware([APP]), make_request(), handler)
    assert response.headers.getall("vary") == ["Accept-Encoding, Origin"]


async def test_fields_the_handler_set_win() -> None:
    handler = responding(
        lambda: Response.text("x", headers={"Access-Control-Allow-Origin": "https://other"})
    )
    response = await run(cors_middleware([APP]), make_request(headers=[("Origin", APP)]), handler)
    assert response.headers.getall("access-control-allow-origin") == ["https://other"]


@pytest.mark.parametrize("origin", ["https://app.example/", "app.example", "https://a/b"])
def test_an_origin_with_a_path_is_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        cors_middleware([origin])


def test_a_negative_max_age_is_refused() -> None:
    with pytest.raises(ValueError, match="max_age=-1"):
        cors_middleware([APP], max_age=-1)
