"""The built-in demo app, served by ``nessen serve`` with no app given."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

import nessen
from tests.e2e.serving import ServeFactory, ServeProcess, serve_processes
from tests.rawhttp import RawClient, get


@pytest.fixture(scope="module")
def demo() -> Iterator[ServeProcess]:
    with serve_processes() as start:
        yield start()


@pytest.fixture
def client(demo: ServeProcess) -> Iterator[httpx.Client]:
    with demo.client() as client:
        yield client


def test_home_page_is_html(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text.startswith("<!doctype html>")
    assert "Nessen runtime" in response.text
    assert response.headers["server"] == "nessen"


def test_home_page_escapes_header_values_and_query(demo: ServeProcess) -> None:
    evil = "<script>alert(1)</script>"
    with RawClient(demo.address) as raw:
        response = raw.request(get("/?q=%3Cscript%3E", extra=f"X-Evil: {evil}\r\n"))
    assert response.status == 200
    body = response.body.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert" not in body


def test_unknown_path_is_escaped_in_the_404_page(demo: ServeProcess) -> None:
    with RawClient(demo.address) as raw:
        response = raw.request(get("/%3Cscript%3Ealert(1)%3C/script%3E"))
    assert response.status == 404
    assert response.header("content-type") == "text/html; charset=utf-8"
    body = response.body.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert" not in body


def test_badge_is_svg(client: httpx.Client) -> None:
    response = client.get("/badge/build/passing.svg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.text.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert ">build</text>" in response.text
    assert ">passing</text>" in response.text
    assert response.headers["cache-control"] == "public, max-age=300"


def test_badge_answers_304_to_its_etag(client: httpx.Client) -> None:
    etag = client.get("/badge/build/passing.svg").headers["etag"]
    response = client.get("/badge/build/passing.svg", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert response.headers["cache-control"] == "public, max-age=300"  # RFC 9110 §15.4.5


def test_badge_escapes_its_label(demo: ServeProcess) -> None:
    with RawClient(demo.address) as raw:
        response = raw.request(get("/badge/%3Cscript%3E/x%22%20onload%3D%22alert(1).svg"))
    assert response.status == 200
    assert response.header("content-type") == "image/svg+xml"
    body = response.body.decode()
    assert ">&lt;script&gt;</text>" in body
    assert "<script>" not in body
    assert 'x" onload="' not in body
    assert "x&quot; onload=&quot;alert(1)" in body


def test_health(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.text == "OK"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_ready(client: httpx.Client) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"ready": True, "state": "READY", "checks": {}}


def test_api_health_shape(client: httpx.Client) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["state"] == "READY"
    assert isinstance(body["uptime_ms"], int)
    assert body["uptime_ms"] >= 0
    requests = body["requests"]
    assert requests["active"] == 0  # this request is not counted
    assert isinstance(requests["total"], int)
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        assert isinstance(requests[key], float), key
    assert 0.0 <= requests["p50_ms"] <= requests["p95_ms"] <= requests["p99_ms"]


def test_api_health_counts_requests(nessen_serve: ServeFactory) -> None:
    served = nessen_serve()
    with served.client() as client:
        for _ in range(3):
            assert client.get("/health").status_code == 200
        assert client.get("/nope").status_code == 404
        first = client.get("/api/health").json()
        second = client.get("/api/health").json()
    assert first["requests"]["total"] == 4
    assert second["requests"]["total"] == 5
    assert first["requests"]["active"] == 0  # the poll itself is not counted
    assert first["requests"]["p99_ms"] > 0.0
    assert first["version"] == nessen.__version__
    assert served.stop() == 0
