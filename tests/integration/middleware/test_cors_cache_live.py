"""CORS preflights and the response cache over real HTTP."""

from __future__ import annotations

import asyncio

import httpx

from nessen import Config, Request, Response, Runtime
from nessen.middleware import cache_middleware, default_stack
from tests.conftest import ServeFactory
from tests.integration.middleware.apps import PAYLOAD, plain_runtime, stacked_runtime
from tests.rawhttp import RawClient, get

APP = "https://app.example"
CORS = {"allow_origins": [APP], "allow_headers": ["Authorization"], "allow_credentials": True}


def preflight(origin: str, method: str = "DELETE", headers: str = "authorization") -> bytes:
    return (
        f"OPTIONS /data HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n"
        f"Access-Control-Request-Method: {method}\r\n"
        f"Access-Control-Request-Headers: {headers}\r\n\r\n"
    ).encode()


def test_an_allowed_preflight(serve: ServeFactory) -> None:
    server = serve(stacked_runtime(cors=CORS))
    with RawClient(server.address) as client:
        response = client.request(preflight(APP))
    assert response.status == 204
    assert response.body == b""
    assert response.header("access-control-allow-origin") == APP
    assert response.header("access-control-allow-credentials") == "true"
    assert response.header("access-control-allow-methods") == "GET, HEAD, POST, PUT, PATCH, DELETE"
    assert response.header("access-control-allow-headers") == "authorization"
    assert response.header("access-control-max-age") == "600"
    # each of the three request fields changed the answer (RFC 9110 §12.5.5)
    assert response.header("vary") == (
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    )
    assert response.header("x-request-id") is not None  # outer layers still apply


def test_a_denied_preflight(serve: ServeFactory) -> None:
    server = serve(stacked_runtime(cors=CORS))
    with RawClient(server.address) as client:
        wrong_origin = client.request(preflight("https://evil.example"))
        wrong_header = client.request(preflight(APP, headers="x-secret"))
    for response in (wrong_origin, wrong_header):
        assert response.status == 403
        assert [n for n in response.header_names() if n.startswith("access-control-")] == []


def test_preflights_are_answered_before_the_rate_limit(serve: ServeFactory) -> None:
    server = serve(stacked_runtime(Config(rate_limit_max=1), cors=CORS))
    with RawClient(server.address) as client:
        statuses = [client.request(preflight(APP)).status for _ in range(4)]
        actual = client.request(get("/small", extra=f"Origin: {APP}\r\n"))
    assert statuses == [204, 204, 204, 204]
    assert actual.status == 200
    assert actual.header("access-control-allow-origin") == APP
    assert actual.header("vary") == "Accept-Encoding, Origin"


def test_an_actual_request_from_a_disallowed_origin(serve: ServeFactory) -> None:
    server = serve(stacked_runtime(cors=CORS))
    with httpx.Client(base_url=server.url) as client:
        response = client.get("/small", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding, Origin"


def counting_runtime() -> Runtime:
    config = Config()
    runtime = plain_runtime(config)
    for middleware in default_stack(config, access_log=False, cache={"ttl": 30.0}):
        runtime.use(middleware)
    runtime.calls = 0  # type: ignore[attr-defined]

    @runtime.route.get("/data")
    async def data(ctx: Request) -> Response:
        runtime.calls += 1  # type: ignore[attr-defined]
        return Response(200, PAYLOAD, content_type="application/json")

    return runtime


def test_a_cached_response_and_a_304_without_content(serve: ServeFactory) -> None:
    runtime = counting_runtime()
    server = serve(runtime)
    with RawClient(server.address) as client:
        first = client.request(get("/data", extra="Accept-Encoding: gzip\r\n"))
        second = client.request(get("/data", extra="Accept-Encoding: gzip\r\n"))
        etag = second.header("etag")
        assert etag is not None
        client.send(get("/data", extra=f"Accept-Encoding: gzip\r\nIf-None-Match: {etag}\r\n"))
        client.send(get("/data", extra="Accept-Encoding: gzip\r\n"))  # pipelined right behind
        not_modified = client.response()
        after = client.response()  # parses: the 304 carried no content
    assert (first.header("x-cache"), second.header("x-cache")) == ("MISS", "HIT")
    assert second.body == first.body
    assert runtime.calls == 1  # type: ignore[attr-defined]
    assert not_modified.status == 304
    assert not_modified.body == b""
    assert not_modified.header("content-length") is None
    assert not_modified.header("content-encoding") is None
    assert not_modified.header("etag") == etag
    assert not_modified.header("vary") == "Accept-Encoding"
    assert (after.status, after.body) == (200, first.body)


def test_each_accept_encoding_has_its_own_entry(serve: ServeFactory) -> None:
    runtime = counting_runtime()
    server = serve(runtime)
    with httpx.Client(base_url=server.url) as client:
        br = client.get("/data", headers={"Accept-Encoding": "br"})
        plain = client.get("/data", headers={"Accept-Encoding": "identity"})
        br_again = client.get("/data", headers={"Accept-Encoding": "br"})
    assert br.headers["content-encoding"] == "br"
    assert "content-encoding" not in plain.headers
    assert plain.headers["x-cache"] == "MISS"
    assert br_again.headers["x-cache"] == "HIT"
    assert br_again.headers["content-encoding"] == "br"
    assert br.content == plain.content == br_again.content == PAYLOAD
    assert br.headers["etag"] != plain.headers["etag"]  # different representations
    assert runtime.calls == 2  # type: ignore[attr-defined]


def test_the_cache_alone_with_a_bounded_store(serve: ServeFactory) -> None:
    runtime = plain_runtime(Config())
    runtime.use(cache_middleware(max_entries=2))

    @runtime.route.get("/p/{n:int}")
    async def page(ctx: Request) -> Response:
        return Response.text(f"page {ctx.params['n']}")

    server = serve(runtime)
    with httpx.Client(base_url=server.url) as client:
        for n in range(5):
            client.get(f"/p/{n}")
        recent = client.get("/p/4").headers["x-cache"]
        evicted = client.get("/p/0").headers["x-cache"]
    assert (recent, evicted) == ("HIT", "MISS")


def test_a_refused_preflight_varies_on_every_field_that_refused_it(serve: ServeFactory) -> None:
    server = serve(stacked_runtime(cors=CORS))
    with RawClient(server.address) as client:
        bad_header = client.request(preflight(APP, headers="x-secret"))
    assert bad_header.status == 403
    assert bad_header.header("vary") == (
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    )


def cors_runtime() -> Runtime:
    runtime = stacked_runtime(cors=CORS)

    @runtime.route.get("/hang")
    async def hang(ctx: Request) -> Response:
        await asyncio.sleep(30)  # cut by request_timeout
        return Response.text("late")

    return runtime


def host_echo_runtime() -> Runtime:
    """The cache on, ALLOWED_HOSTS empty, and a page built from the Host field."""
    runtime = Runtime(middleware={"cache": {"ttl": 30.0}}, access_log=False)

    @runtime.route.get("/reset")
    async def reset(ctx: Request) -> Response:
        host = ctx.headers.get("host")
        return Response.text(f"reset your password at http://{host}/reset?token=")

    return runtime


def upload(origin: str, length: int = 100, sent: bytes = b"") -> bytes:
    return (
        f"POST /data HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nContent-Length: {length}\r\n\r\n"
    ).encode() + sent


def test_the_server_s_own_answers_carry_the_cors_fields(serve: ServeFactory) -> None:
    server = serve(cors_runtime(), max_body_bytes=10, body_timeout=0.3, request_timeout=0.3)
    with RawClient(server.address) as client:
        too_large = client.request(upload(APP))  # 413 from the declared length
    with RawClient(server.address) as client:
        stalled = client.request(upload(APP, length=5, sent=b"ab"))  # 408
    with RawClient(server.address) as client:
        late = client.request(get("/hang", extra=f"Origin: {APP}\r\n"))  # 503
    for response, status in ((too_large, 413), (stalled, 408), (late, 503)):
        assert response.status == status
        assert response.header("access-control-allow-origin") == APP
        assert response.header("access-control-allow-credentials") == "true"
        assert response.header("vary") == "Origin"


def test_a_server_made_answer_to_an_origin_not_allowed_has_no_cors_fields(
    serve: ServeFactory,
) -> None:
    server = serve(cors_runtime(), max_body_bytes=10)
    with RawClient(server.address) as client:
        refused = client.request(upload("https://evil.example"))
    with RawClient(server.address) as client:
        no_origin = client.request(b"POST /data HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
    assert refused.status == no_origin.status == 413
    assert refused.header("access-control-allow-origin") is None
    assert refused.header("vary") == "Origin"  # the answer depended on it
    assert no_origin.header("access-control-allow-origin") is None
    assert no_origin.header("vary") is None


def test_without_cors_the_server_s_answers_are_unchanged(serve: ServeFactory) -> None:
    server = serve(stacked_runtime(), max_body_bytes=10)
    with RawClient(server.address) as client:
        response = client.request(upload(APP))
    assert response.status == 413
    assert response.header("access-control-allow-origin") is None
    assert response.header("vary") is None


def test_a_page_built_from_a_forged_host_is_never_served_to_another_host(
    serve: ServeFactory,
) -> None:
    server = serve(host_echo_runtime())
    with RawClient(server.address) as attacker, RawClient(server.address) as victim:
        forged = attacker.request(get("/reset", host="evil.example"))
        assert forged.body == b"reset your password at http://evil.example/reset?token="
        assert attacker.request(get("/reset", host="evil.example")).header("x-cache") == "HIT"
        page = victim.request(get("/reset", host="shop.example"))
        again = victim.request(get("/reset", host="SHOP.example:80"))  # the same origin
    assert page.status == 200
    assert page.body == b"reset your password at http://shop.example/reset?token="
    assert page.header("x-cache") == "MISS"
    assert (again.header("x-cache"), again.body) == ("HIT", page.body)
