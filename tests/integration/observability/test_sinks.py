"""Telemetry sinks fed by a running runtime: a recording sink and the StatsD sink over UDP."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from nessen import Request, Response, Runtime
from nessen.observability import StatsdSink, Tags
from tests.conftest import ServeFactory
from tests.rawhttp import RawClient, get


class RecordingSink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, str] | None]] = []
        self.gauged = threading.Event()

    def increment_counter(self, name: str, value: float = 1, tags: Tags | None = None) -> None:
        self.calls.append(("counter", name, value, dict(tags) if tags else None))

    def record_timing(self, name: str, seconds: float, tags: Tags | None = None) -> None:
        self.calls.append(("timing", name, round(seconds, 3) >= 0, dict(tags) if tags else None))

    def record_gauge(self, name: str, value: float, tags: Tags | None = None) -> None:
        self.calls.append(("gauge", name, value, dict(tags) if tags else None))
        self.gauged.set()


def app() -> Runtime:
    runtime = Runtime(access_log=False)

    @runtime.route.get("/users/{id}")
    async def user(ctx: Request) -> Response:
        runtime.telemetry.increment_counter("user_lookups_total", 1, {"kind": "by_id"})
        return Response.json({"id": ctx.params["id"]})

    return runtime


def test_a_sink_gets_every_response_refusal_and_gauge(serve: ServeFactory) -> None:
    runtime = app()
    sink = RecordingSink()
    assert runtime.add_sink(sink) is sink
    runtime.process.interval = 0.05
    server = serve(runtime, max_target_bytes=64)
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        assert client.get("/users/7").status_code == 200
        assert client.get("/nowhere").status_code == 404
    with RawClient(server.address) as raw:
        assert raw.request(get("/" + "a" * 100)).status == 414
    assert sink.gauged.wait(5.0)
    server.stop()
    events = [call for call in sink.calls if call[0] != "gauge"]
    user = {"method": "GET", "route": "/users/{id}", "status": "200"}
    missing = {"method": "GET", "route": "unmatched", "status": "404"}
    assert events == [
        ("counter", "user_lookups_total", 1, {"kind": "by_id"}),  # the handler's own
        ("counter", "http_requests_total", 1, user),
        ("timing", "http_request_duration_seconds", True, user),
        ("counter", "http_requests_total", 1, missing),
        ("timing", "http_request_duration_seconds", True, missing),
        ("counter", "nessen_rejected_requests_total", 1, {"reason": "uri_too_long"}),
        (
            "counter",
            "http_requests_total",
            1,
            {"method": "GET", "route": "unmatched", "status": "414"},
        ),
    ]
    gauges = {call[1] for call in sink.calls if call[0] == "gauge"}
    assert gauges == {
        "http_requests_active",
        "nessen_connections_active",
        "nessen_event_loop_lag_seconds",
    }


def test_the_handlers_own_metrics_reach_prometheus_too(serve: ServeFactory) -> None:
    server = serve(app())
    httpx.get(server.url + "/users/1", trust_env=False)
    text = httpx.get(server.url + "/metrics", trust_env=False).text
    assert 'user_lookups_total{kind="by_id"} 1.0' in text.splitlines()


def test_statsd_sink_receives_the_runtimes_measurements_over_udp(serve: ServeFactory) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5.0)
    runtime = app()
    with receiver, StatsdSink("127.0.0.1", receiver.getsockname()[1], prefix="shop.") as sink:
        runtime.add_sink(sink)
        runtime.process.interval = 3600.0  # no gauges in this test
        server = serve(runtime)
        assert httpx.get(server.url + "/users/42", trust_env=False).status_code == 200
        lines = [receiver.recv(65536).decode() for _ in range(3)]
    tags = "|#method:GET,route:/users/{id},status:200"
    assert lines[0] == "shop.user_lookups_total:1|c|#kind:by_id"
    assert lines[1] == "shop.http_requests_total:1|c" + tags
    name, _, rest = lines[2].partition(":")
    value, _, rest = rest.partition("|")
    assert (name, rest) == ("shop.http_request_duration_seconds", "ms" + tags)
    assert 0 < float(value) < 1000  # milliseconds


def test_adding_something_that_is_not_a_sink_fails_at_once() -> None:
    with pytest.raises(TypeError, match="is not a TelemetrySink"):
        Runtime().add_sink(object())  # type: ignore[arg-type]
