"""`nessen serve` with the demo app: /metrics after traffic, and the status page link."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.serving import base_env, serve_processes


def test_demo_metrics_count_the_traffic_and_the_home_page_links_the_status_page() -> None:
    with serve_processes() as start:
        demo = start(env=base_env(NESSEN_ENV="development"))  # the status page is on in dev
        with demo.client() as client:
            home = client.get("/")
            assert '<a href="/_nessen/status">/_nessen/status</a>' in home.text
            assert client.get("/_nessen/status").status_code == 200
            for _ in range(2):
                assert client.get("/").status_code == 200
            assert client.get("/badge/build/passing.svg").status_code == 200
            assert client.get("/no/such/page").status_code == 404
            text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in families["http_requests"].samples
        if s.name == "http_requests_total"
    }
    assert counts == {
        ("GET", "/", "200"): 3.0,
        ("GET", "/_nessen/status", "200"): 1.0,
        ("GET", "/badge/{label}/{value}.svg", "200"): 1.0,
        ("GET", "/{path:path}", "404"): 1.0,  # the demo's catch-all: its template, not the path
    }


def test_production_has_no_status_page_and_no_link_to_it() -> None:
    with serve_processes() as start:
        demo = start(env=base_env(NESSEN_ENV="production"))
        with demo.client() as client:
            assert "_nessen/status" not in client.get("/").text
            assert client.get("/_nessen/status").status_code == 404
            assert client.get("/metrics").status_code == 200
