"""Who the client is, over real sockets: one answer for ctx, the log, the limiter and ASGI.

The test client connects from 127.0.0.1, so it plays the proxy: trusted by default
(``TRUST_PROXY`` is loopback), untrusted when the config names other networks.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from nessen import Config, Request, Response, Runtime
from nessen.asgi import ASGIHost
from nessen.testing import LiveServer
from tests.conftest import ServeFactory
from tests.integration.middleware.apps import capture_logs
from tests.rawhttp import RawClient

PROXIED = {
    "X-Forwarded-For": "6.6.6.6, 198.51.100.7",  # the left entry is the client's own
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "shop.example",
}


def who_runtime(config: Config | None = None) -> Runtime:
    runtime = Runtime(config=config or Config())

    @runtime.route.get("/who")
    async def who(ctx: Request) -> Response:
        return Response.json(
            {
                "client_ip": ctx.client_ip,
                "client": list(ctx.client or ()),
                "peer_ip": ctx.peer_ip,
                "scheme": ctx.scheme,
                "host": ctx.host,
            }
        )

    return runtime


def who(server: LiveServer, headers: dict[str, str], host: str = "origin.internal") -> Any:
    response = httpx.get(server.url + "/who", headers={"Host": host, **headers})
    assert response.status_code == 200
    return response.json()


def test_a_loopback_proxy_is_trusted_by_default(serve: ServeFactory) -> None:
    server = serve(who_runtime())
    seen = who(server, PROXIED)
    assert seen == {
        "client_ip": "198.51.100.7",
        "client": ["198.51.100.7", 0],
        "peer_ip": "127.0.0.1",
        "scheme": "https",
        "host": "shop.example",
    }


def test_without_forwarding_fields_the_peer_is_the_client(serve: ServeFactory) -> None:
    server = serve(who_runtime())
    seen = who(server, {})
    assert seen["client_ip"] == seen["peer_ip"] == "127.0.0.1"
    assert seen["client"][0] == "127.0.0.1"
    assert seen["client"][1] > 0  # the peer's real port
    assert (seen["scheme"], seen["host"]) == ("http", "origin.internal")


def test_an_untrusted_peer_cannot_forward_anything(serve: ServeFactory) -> None:
    server = serve(who_runtime(), trust_proxy=("10.0.0.0/8",))
    seen = who(server, {**PROXIED, "Forwarded": "for=198.51.100.9;proto=https"})
    assert (seen["client_ip"], seen["scheme"], seen["host"]) == (
        "127.0.0.1",
        "http",
        "origin.internal",
    )


def test_trust_proxy_false_ignores_even_loopback(serve: ServeFactory) -> None:
    server = serve(who_runtime(), trust_proxy=False)
    seen = who(server, PROXIED)
    assert (seen["client_ip"], seen["scheme"], seen["host"]) == (
        "127.0.0.1",
        "http",
        "origin.internal",
    )


def test_rfc_7239_forwarded_when_chosen_and_x_forwarded_is_then_ignored(
    serve: ServeFactory,
) -> None:
    server = serve(who_runtime(), proxy_headers="forwarded")
    forwarded = (
        'for=6.6.6.6;proto=http, for="[2001:db8::7]:4711";proto=https;host=shop.example, '
        "for=127.0.0.2;proto=http;host=internal"  # a second trusted hop, skipped
    )
    seen = who(server, {"Forwarded": forwarded, "X-Forwarded-For": "203.0.113.66"})
    assert (seen["client_ip"], seen["scheme"], seen["host"]) == (
        "2001:db8::7",
        "https",
        "shop.example",
    )


def test_x_forwarded_by_default_ignores_a_forwarded_field(serve: ServeFactory) -> None:
    # A proxy that writes X-Forwarded-For passes the client's own Forwarded through.
    server = serve(who_runtime())
    headers = {"X-Forwarded-For": "198.51.100.7", "Forwarded": "for=6.6.6.6;proto=https"}
    seen = who(server, headers)
    assert (seen["client_ip"], seen["scheme"]) == ("198.51.100.7", "http")


def test_a_forwarded_host_outside_allowed_hosts_is_not_believed(serve: ServeFactory) -> None:
    server = serve(who_runtime(), allowed_hosts=frozenset({"shop.example", "origin.internal"}))
    assert who(server, {"X-Forwarded-Host": "shop.example"})["host"] == "shop.example"
    assert who(server, {"X-Forwarded-Host": "evil.example"})["host"] == "origin.internal"
    assert who(server, {"X-Forwarded-Host": "bad host/"})["host"] == "origin.internal"


@pytest.mark.parametrize("proto", ["ftp", "HTTPS , javascript"])
def test_a_scheme_other_than_http_or_https_is_ignored(serve: ServeFactory, proto: str) -> None:
    server = serve(who_runtime())
    assert who(server, {"X-Forwarded-Proto": proto})["scheme"] == "http"


def test_the_access_log_and_the_rate_limit_key_use_the_forwarded_client(
    serve: ServeFactory,
) -> None:
    server = serve(who_runtime(Config(rate_limit_max=1)), rate_limit_max=1)
    with capture_logs(expect=3) as logs, httpx.Client(base_url=server.url) as client:
        first = client.get("/who", headers={"X-Forwarded-For": "198.51.100.1"})
        again = client.get("/who", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.1"})
        other = client.get("/who", headers={"X-Forwarded-For": "198.51.100.2"})
    assert [first.status_code, again.status_code, other.status_code] == [200, 429, 200]
    logged = [line["client_ip"] for line in logs.json_lines()]
    assert logged == ["198.51.100.1", "198.51.100.1", "198.51.100.2"]


async def scope_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what an ASGI app is told about the client, and a Starlette-style URL."""
    host = dict(scope["headers"]).get(b"host", b"").decode()
    body = json.dumps(
        {
            "client": list(scope["client"]),
            "scheme": scope["scheme"],
            "host": host,
            "url": f"{scope['scheme']}://{host}{scope['path']}",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def test_an_asgi_app_sees_the_forwarded_client_scheme_and_host() -> None:
    with LiveServer(ASGIHost(scope_app, Config())) as server:
        seen = httpx.get(server.url + "/page", headers={"Host": "origin.internal", **PROXIED})
        direct = httpx.get(server.url + "/page", headers={"Host": "origin.internal"})
    assert seen.json() == {
        "client": ["198.51.100.7", 0],
        "scheme": "https",
        "host": "shop.example",
        "url": "https://shop.example/page",
    }
    assert direct.json()["client"][0] == "127.0.0.1"
    assert direct.json()["scheme"] == "http"
    assert direct.json()["host"] == "origin.internal"


def test_starlette_url_for_builds_https_links_behind_a_tls_proxy() -> None:
    starlette = pytest.importorskip("starlette.applications")
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def home(request: Any) -> Any:
        return PlainTextResponse(str(request.url_for("home")) + " " + request.client.host)

    app = starlette.Starlette(routes=[Route("/", home, name="home")])
    with LiveServer(ASGIHost(app, Config())) as server:
        answer = httpx.get(server.url + "/", headers=PROXIED).text
    assert answer == "https://shop.example/ 198.51.100.7"


def test_http_1_0_without_host_gets_the_forwarded_host_in_the_asgi_scope() -> None:
    with LiveServer(ASGIHost(scope_app, Config())) as server, RawClient(server.address) as raw:
        response = raw.request(
            b"GET /p HTTP/1.0\r\nX-Forwarded-Host: shop.example\r\nX-Forwarded-Proto: https\r\n\r\n"
        )
    assert response.status == 200
    assert b'"url": "https://shop.example/p"' in response.body


@pytest.mark.parametrize(
    ("trust", "headers", "sent"),
    [
        (("127.0.0.0/8",), {}, False),  # plain HTTP: never (RFC 6797 §7.2)
        (("127.0.0.0/8",), {"X-Forwarded-Proto": "https"}, True),  # TLS ended at our proxy
        (("10.0.0.0/8",), {"X-Forwarded-Proto": "https"}, False),  # not our proxy: a claim
    ],
)
def test_hsts_goes_out_only_when_the_effective_scheme_is_https(
    serve: ServeFactory, trust: tuple[str, ...], headers: dict[str, str], sent: bool
) -> None:
    server = serve(who_runtime(), trust_proxy=trust)
    response = httpx.get(server.url + "/who", headers=headers)
    assert response.status_code == 200
    assert response.headers.get("strict-transport-security") == (
        "max-age=31536000; includeSubDomains" if sent else None
    )
    assert response.headers["x-frame-options"] == "DENY"  # the others always
