"""GET /metrics over the wire: the series the seed's Grafana queries need, and bounded labels."""

from __future__ import annotations

import time

import httpx

from nessen import HTTPError, Request, Response, Runtime
from tests.conftest import ServeFactory
from tests.integration.observability.helpers import labels, pipelined, scrape, values
from tests.rawhttp import RawClient, get


def shop() -> Runtime:
    runtime = Runtime(access_log=False)

    @runtime.route.get("/items/{id:int}")
    async def item(ctx: Request) -> Response:
        if ctx.params["id"] == 0:
            raise HTTPError(404, "no such item")
        return Response.json({"id": ctx.params["id"]})

    @runtime.route.post("/items")
    async def create(ctx: Request) -> Response:
        return Response.json({"created": True}, 201)

    @runtime.route.get("/boom")
    async def boom(ctx: Request) -> Response:
        raise RuntimeError("the database is on fire")

    return runtime


def test_the_seed_dashboard_queries_have_their_series(serve: ServeFactory) -> None:
    """Every series the seed's PromQL needs, with the right type, labels and counts.

    rate(http_requests_total[5m]); rate(http_requests_total{status=~"5.."}[5m]);
    histogram_quantile(0.95, rate(http_request_duration_seconds_bucket[5m]));
    http_requests_active.
    """
    server = serve(shop())
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        for n in range(1, 8):
            assert client.get(f"/items/{n}").status_code == 200
        assert client.get("/items/0").status_code == 404
        for _ in range(2):
            assert client.post("/items").status_code == 201
        for _ in range(3):
            assert client.get("/boom").status_code == 500
        for n in range(4):
            assert client.get(f"/no/such/{n}").status_code == 404
    families = scrape(server.url)

    requests = families["http_requests"]
    assert requests.type == "counter"
    assert values(requests, "http_requests_total") == {
        labels(method="GET", route="/items/{id:int}", status="200"): 7.0,
        labels(method="GET", route="/items/{id:int}", status="404"): 1.0,
        labels(method="POST", route="/items", status="201"): 2.0,
        labels(method="GET", route="/boom", status="500"): 3.0,  # {status=~"5.."} finds it
        labels(method="GET", route="unmatched", status="404"): 4.0,
    }

    duration = families["http_request_duration_seconds"]
    assert duration.type == "histogram"
    items = {"method": "GET", "route": "/items/{id:int}"}
    buckets = values(duration, "http_request_duration_seconds_bucket")
    bounds = [dict(key)["le"] for key in buckets if dict(key)["route"] == "/items/{id:int}"]
    assert bounds == [
        "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
        "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf",
    ]  # fmt: skip
    assert buckets[labels(le="+Inf", **items)] == 8.0
    assert values(duration, "http_request_duration_seconds_count")[labels(**items)] == 8.0
    cumulative = [buckets[labels(le=le, **items)] for le in bounds]
    assert cumulative == sorted(cumulative)
    assert values(duration, "http_request_duration_seconds_sum")[labels(**items)] > 0

    size = families["http_response_size_bytes"]
    assert size.type == "histogram"
    post = labels(method="POST", route="/items")
    assert values(size, "http_response_size_bytes_sum")[post] == 2 * len(b'{"created":true}')

    active = families["http_requests_active"]
    assert active.type == "gauge"
    assert values(active) == {(): 1.0}  # the scrape itself is in its handler

    assert families["nessen_connections_active"].type == "gauge"
    assert values(families["nessen_connections_active"]) == {(): 1.0}
    assert values(families["nessen_state"]) == {
        labels(state="STARTING"): 0.0,
        labels(state="READY"): 1.0,
        labels(state="DEGRADED"): 0.0,
        labels(state="DRAINING"): 0.0,
        labels(state="STOPPING"): 0.0,
    }
    assert families["process_resident_memory_bytes"].type == "gauge"
    assert families["process_cpu_seconds"].type == "counter"


def test_ten_thousand_unmatched_urls_make_one_series(serve: ServeFactory) -> None:
    server = serve(shop())
    statuses = pipelined(server.address, (f"/probe/{n}?x={n}" for n in range(10_000)))
    assert statuses == [404] * 10_000
    families = scrape(server.url)
    assert values(families["http_requests"], "http_requests_total") == {
        labels(method="GET", route="unmatched", status="404"): 10_000.0,
    }
    series = sum(len(family.samples) for family in families.values())
    assert series < 300  # independent of the 10 000 paths
    routes = {
        sample.labels.get("route")
        for family in families.values()
        for sample in family.samples
        if "route" in sample.labels
    }
    assert routes == {"unmatched"}


def test_refusals_are_counted_by_reason_and_unknown_methods_share_one_label(
    serve: ServeFactory,
) -> None:
    server = serve(shop(), max_target_bytes=64)
    for method in ("BREW", "PROPFIND", "X-CUSTOM"):
        with RawClient(server.address) as client:
            response = client.request(f"{method} /items/1 HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            assert response.status == 501
    for _ in range(2):
        with RawClient(server.address) as client:
            assert client.request(get("/" + "a" * 100)).status == 414
    families = scrape(server.url)
    assert values(families["nessen_rejected_requests"], "nessen_rejected_requests_total") == {
        labels(reason="method_not_implemented"): 3.0,
        labels(reason="uri_too_long"): 2.0,
    }
    assert values(families["http_requests"], "http_requests_total") == {
        labels(method="OTHER", route="unmatched", status="501"): 3.0,
        # refused while its request target was still arriving: its method is known
        labels(method="GET", route="unmatched", status="414"): 2.0,
    }


def test_openmetrics_is_served_when_asked_for(serve: ServeFactory) -> None:
    server = serve(shop())
    response = httpx.get(
        server.url + "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        trust_env=False,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=")
    assert response.headers["cache-control"] == "no-store"
    assert response.text.endswith("# EOF\n")


def test_metrics_and_api_health_answer_any_host(serve: ServeFactory) -> None:
    server = serve(shop(), allowed_hosts=frozenset({"shop.example"}))
    with RawClient(server.address) as client:
        assert client.request(get("/items/1", host="10.0.0.7")).status == 400
    for path in ("/metrics", "/api/health", "/health", "/ready"):
        with RawClient(server.address) as client:
            assert client.request(get(path, host="10.0.0.7:3000")).status == 200, path


def test_metrics_can_be_switched_off(serve: ServeFactory) -> None:
    runtime = Runtime(access_log=False, metrics=False)
    server = serve(runtime)
    assert httpx.get(server.url + "/metrics", trust_env=False).status_code == 404
    assert runtime.prometheus is None
    assert httpx.get(server.url + "/api/health", trust_env=False).status_code == 200


def test_two_runtimes_in_one_process_keep_their_own_counts(serve: ServeFactory) -> None:
    first, second = serve(shop()), serve(shop())
    httpx.get(first.url + "/items/1", trust_env=False)
    assert values(scrape(first.url)["http_requests"], "http_requests_total") == {
        labels(method="GET", route="/items/{id:int}", status="200"): 1.0,
    }
    assert values(scrape(second.url)["http_requests"], "http_requests_total") == {}


def items_served(families: dict[str, object]) -> float:
    requests = families["http_requests"]
    found = values(requests, "http_requests_total")  # type: ignore[arg-type]
    return found.get(labels(method="GET", route="/items/{id:int}", status="200"), 0.0)


def test_a_rendered_exposition_is_reused_for_a_short_interval(serve: ServeFactory) -> None:
    runtime = shop()
    server = serve(runtime)
    prometheus = runtime.prometheus
    assert prometheus is not None
    default = getattr(prometheus, "reuse_seconds", None)
    prometheus.reuse_seconds = 3600.0  # long enough for any machine, however busy
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        first = client.get("/metrics")
        for n in range(1, 4):
            assert client.get(f"/items/{n}").status_code == 200
        hammered = [client.get("/metrics") for _ in range(20)]
        # each format has its own rendering
        openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert all(r.content == first.content for r in hammered)  # the registry was not read
    assert items_served(scrape(server.url)) == 0.0
    assert "application/openmetrics-text" in openmetrics.headers["content-type"]
    assert b'route="/items/{id:int}",status="200"} 3.0' in openmetrics.content
    prometheus.reuse_seconds = 0.0
    assert items_served(scrape(server.url)) == 3.0
    assert default == 0.25  # the runtime's (EXPOSITION_REUSE), as /api/health's figures


def test_a_scrape_catches_up_once_the_interval_has_passed(serve: ServeFactory) -> None:
    server = serve(shop())
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        assert items_served(scrape(server.url)) == 0.0
        assert client.get("/items/1").status_code == 200
        deadline = time.monotonic() + 10.0  # the interval is 0.25 s; a generous bound
        while items_served(scrape(server.url)) != 1.0:
            assert time.monotonic() < deadline, "the exposition was never rendered again"
            time.sleep(0.05)


def test_a_cache_hit_is_counted_under_its_route(serve: ServeFactory) -> None:
    # The cache answers a hit before the router runs; the route the miss was built by is
    # kept with the entry, so per-route dashboards see the traffic the cache serves.
    runtime = Runtime(middleware={"cache": True}, access_log=False)

    @runtime.route.get("/pages/{name}")
    async def page(ctx: Request) -> Response:
        return Response.text(f"page {ctx.params['name']}")

    server = serve(runtime)
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        cached = [client.get("/pages/a").headers["x-cache"] for _ in range(3)]
    assert cached == ["MISS", "HIT", "HIT"]
    counted = values(scrape(server.url)["http_requests"], "http_requests_total")
    assert counted == {labels(method="GET", route="/pages/{name}", status="200"): 3.0}
