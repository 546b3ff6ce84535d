"""A server loads the libraries of optional features when a feature needs them, not at start.

Each check runs ``nessen serve`` in its own process, so what other tests imported does not
count; the app's ``GET /modules`` lists which of ``WATCHED`` the process has loaded.
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.serving import ServeFactory


@pytest.fixture(autouse=True)
def _unmeasured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve without coverage's subprocess measurement: coverage itself imports hashlib,
    pickle and html in the process it measures (``make test``)."""
    for name in list(os.environ):
        if name.startswith("COVERAGE_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("app", ["bare", "full"])
def test_serving_http_loads_no_optional_library(nessen_serve: ServeFactory, app: str) -> None:
    server = nessen_serve(f"tests.e2e.apps.modules:{app}")
    with server.client() as client:
        assert client.get("/health").status_code == 200
        # gzip (zlib) only: httpx offers br and zstd too
        assert client.get("/text", headers={"accept-encoding": "gzip"}).status_code == 200
        assert client.get("/modules").json() == []


@pytest.mark.parametrize(("coding", "library"), [("br", "brotli"), ("zstd", "zstandard")])
def test_the_first_response_compressed_with_a_coding_loads_its_library(
    nessen_serve: ServeFactory, coding: str, library: str
) -> None:
    server = nessen_serve("tests.e2e.apps.modules:full")
    with server.client() as client:
        assert (
            client.get("/text", headers={"accept-encoding": "gzip"}).headers["content-encoding"]
            == "gzip"
        )
        assert client.get("/modules").json() == []
        response = client.get("/text", headers={"accept-encoding": coding})
        assert response.headers["content-encoding"] == coding
        assert response.text == "compressible " * 200  # httpx decodes br and zstd
        assert client.get("/modules").json() == [library]


def test_the_first_scrape_loads_prometheus_client_and_shows_every_earlier_request(
    nessen_serve: ServeFactory,
) -> None:
    server = nessen_serve("tests.e2e.apps.modules:bare")
    with server.client() as client:
        for _ in range(3):
            assert client.get("/text", headers={"accept-encoding": "gzip"}).status_code == 200
        assert client.get("/nowhere").status_code == 404
        assert client.get("/modules").json() == []
        exposition = client.get("/metrics").text
        assert "prometheus_client" in client.get("/modules").json()
    assert 'http_requests_total{method="GET",route="/text",status="200"} 3.0' in exposition
    assert 'http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in exposition
    assert 'nessen_state{state="READY"} 1.0' in exposition


def test_a_websocket_route_loads_websockets_at_start(nessen_serve: ServeFactory) -> None:
    server = nessen_serve("tests.e2e.apps.modules_ws:with_websocket")
    with server.client() as client:
        assert "websockets" in client.get("/modules").json()


def test_an_asgi_app_loads_websockets_at_start(nessen_serve: ServeFactory) -> None:
    """Any route of an ASGI app may take WebSockets: the first upgrade does not wait."""
    server = nessen_serve("tests.e2e.apps.modules:asgi")
    with server.client() as client:
        assert "websockets" in client.get("/").json()
