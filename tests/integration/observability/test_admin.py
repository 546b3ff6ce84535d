"""Who may read /metrics, /api/health and the status page, and where: ADMIN_ALLOW, ADMIN_PORT."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nessen import Config, Request, Response, Runtime
from nessen.asgi import ASGIHost
from nessen.testing import LiveServer
from tests.conftest import ServeFactory
from tests.integration.observability.helpers import labels, values
from tests.rawhttp import RawClient, RawResponse, get

OPS = ("/metrics", "/api/health", "/_nessen/status", "/_nessen/status.js", "/_nessen/status.css")
PROBES = ("/health", "/ready")


def app() -> Runtime:
    runtime = Runtime(status_page=True)

    @runtime.route.get("/")
    async def index(ctx: Request) -> Response:
        return Response.text("home")

    return runtime


def fetch(address: tuple[str, int], paths: tuple[str, ...], extra: str = "") -> list[RawResponse]:
    with RawClient(address) as client:
        return [client.request(get(path, extra=extra)) for path in paths]


def statuses(address: tuple[str, int], paths: tuple[str, ...], extra: str = "") -> list[int]:
    return [response.status for response in fetch(address, paths, extra)]


def admin_address(runtime: Runtime) -> tuple[str, int]:
    admin = runtime.admin_server
    assert admin is not None
    return admin.address


# --- ADMIN_ALLOW ---------------------------------------------------------------------------------


def test_admin_allow_refuses_the_ops_endpoints_to_other_clients_with_403(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(app(), admin_allow=("10.0.0.0/8", "::1"))  # the client is 127.0.0.1
    with caplog.at_level(logging.WARNING, logger="nessen.admin"):
        refused = fetch(server.address, OPS)
        assert statuses(server.address, OPS) == [403] * len(OPS)
    assert [r.status for r in refused] == [403] * len(OPS)
    for response in refused:
        body = json.loads(response.body)
        assert body["error"] == "Forbidden"
        assert body["request_id"] == response.header("x-request-id")
        assert response.header("cache-control") == "no-store"
        assert b"http_requests_total" not in response.body
    # the probes answer every client, and the app is not concerned
    assert statuses(server.address, (*PROBES, "/")) == [200, 200, 200]
    # one warning for ten refusals: the access log has each of them
    warnings = [r.getMessage() for r in caplog.records if r.name == "nessen.admin"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("refused /metrics to 127.0.0.1: not in ADMIN_ALLOW")


def test_admin_allow_lets_the_listed_networks_in(serve: ServeFactory) -> None:
    server = serve(app(), admin_allow=("10.0.0.0/8", "127.0.0.0/8"))
    assert statuses(server.address, OPS) == [200] * len(OPS)


def test_admin_allow_judges_the_client_that_trusted_proxies_name(serve: ServeFactory) -> None:
    paths = ("/metrics",)
    behind = serve(app(), admin_allow=("10.0.0.0/8",), trust_proxy=("127.0.0.1",))
    assert statuses(behind.address, paths, "X-Forwarded-For: 10.1.2.3\r\n") == [200]
    # the right-most hop the proxy did not vouch for is the client; left of it is forgeable
    forged = "X-Forwarded-For: 10.1.2.3, 203.0.113.9\r\n"
    assert statuses(behind.address, paths, forged) == [403]
    assert statuses(behind.address, paths) == [403]  # the proxy itself is not let in
    # trusting no proxy, the peer is the client, whatever X-Forwarded-For says
    direct = serve(app(), admin_allow=("10.0.0.0/8",), trust_proxy=False)
    assert statuses(direct.address, paths, "X-Forwarded-For: 10.1.2.3\r\n") == [403]


# --- the admin listener --------------------------------------------------------------------------


def test_the_admin_listener_serves_the_ops_endpoints_and_the_main_port_no_longer_does(
    serve: ServeFactory,
) -> None:
    runtime = app()
    server = serve(runtime, admin_port=0)
    admin = admin_address(runtime)
    assert admin[1] not in (0, server.port)
    main_answers = fetch(server.address, OPS)
    assert [r.status for r in main_answers] == [404] * len(OPS)
    assert json.loads(main_answers[0].body)["error"] == "Not Found"  # as for any other path
    assert statuses(server.address, (*PROBES, "/")) == [200, 200, 200]

    assert statuses(admin, OPS) == [200] * len(OPS)
    assert statuses(admin, PROBES) == [200, 200]
    assert statuses(admin, ("/", "/nope")) == [404, 404]  # the app is not on it
    health = fetch(admin, ("/api/health",))[0]
    assert json.loads(health.body)["state"] == "READY"
    assert health.header("x-request-id") is not None  # the built-ins are in front of it

    # one registry: the admin listener's /metrics counts the main port's requests, and the
    # main port's 404s for the moved paths count as unmatched
    text = httpx.get(f"http://{admin[0]}:{admin[1]}/metrics", trust_env=False).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    counted = values(families["http_requests"], "http_requests_total")
    assert counted[labels(method="GET", route="/", status="200")] == 1.0
    assert counted[labels(method="GET", route="unmatched", status="404")] >= len(OPS)
    assert labels(method="GET", route="/metrics", status="404") not in counted


def test_admin_allow_applies_on_the_admin_listener_too(serve: ServeFactory) -> None:
    runtime = app()
    serve(runtime, admin_port=0, admin_allow=("10.0.0.0/8",))
    admin = admin_address(runtime)
    assert statuses(admin, OPS) == [403] * len(OPS)
    assert statuses(admin, PROBES) == [200, 200]


def test_the_admin_listener_closes_with_the_server(serve: ServeFactory) -> None:
    runtime = app()
    server = serve(runtime, admin_port=0)
    admin = admin_address(runtime)
    with RawClient(admin) as idle:  # an idle keep-alive connection must not hold the drain
        assert idle.request(get("/health")).status == 200
        result = server.stop()
    assert result is not None
    assert result.clean
    assert runtime.admin_server is None
    with pytest.raises(ConnectionRefusedError):
        RawClient(admin).close()


def test_an_asgi_app_gets_the_main_port_s_metrics_path_when_the_admin_listener_is_on() -> None:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app:" + scope["path"].encode()})

    runtime = ASGIHost(asgi, Config(host="127.0.0.1", port=0, admin_port=0), health_endpoints=True)
    with LiveServer(runtime) as server:
        main = fetch(server.address, ("/metrics", "/api/health", "/health"))
        assert [r.body for r in main[:2]] == [b"app:/metrics", b"app:/api/health"]
        assert main[2].body == b"OK"  # the probes stay the runtime's
        admin = fetch(admin_address(runtime), ("/metrics", "/api/health"))
        assert [r.status for r in admin] == [200, 200]
        assert b"http_requests_total" in admin[0].body
