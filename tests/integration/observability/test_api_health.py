"""/api/health and runtime.metrics() over the wire."""

from __future__ import annotations

import asyncio
import os
import threading

import httpx

import nessen
from nessen import Request, Response, Runtime
from tests.conftest import ServeFactory
from tests.rawhttp import RawClient, get
from tests.unit.middleware.helpers import FakeClock


def timed() -> Runtime:
    runtime = Runtime(access_log=False)

    @runtime.route.get("/sleep/{ms:int}")
    async def sleep(ctx: Request) -> Response:
        await asyncio.sleep(ctx.params["ms"] / 1000)
        return Response.text("x" * 100)

    return runtime


def test_api_health_has_every_field(serve: ServeFactory) -> None:
    runtime = timed()
    server = serve(runtime, max_target_bytes=64)
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        for ms in (20, 20, 20, 60):
            assert client.get(f"/sleep/{ms}").status_code == 200
        with RawClient(server.address) as raw:
            assert raw.request(get("/" + "a" * 100)).status == 414
        response = client.get("/api/health")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert list(body) == [
        "ok", "state", "uptime_ms", "requests", "websockets", "memory", "cpu_percent",
        "event_loop_lag_ms", "logs", "pid", "version",
    ]  # fmt: skip
    assert body["websockets"] == {"open": 0, "closed": 0, "messages_in": 0, "messages_out": 0}
    assert body["ok"] is True
    assert body["state"] == "READY"
    assert isinstance(body["uptime_ms"], int)
    assert body["uptime_ms"] >= 140  # four requests that slept 120 ms in all
    requests = body["requests"]
    assert list(requests) == [
        "total", "active", "p50_ms", "p95_ms", "p99_ms", "max_ms", "avg_response_bytes",
        "rejected", "errors",
    ]  # fmt: skip
    assert requests["errors"] == {"4xx": 1, "5xx": 0}  # the 414
    assert requests["total"] == 5  # four answers and the 414
    assert requests["active"] == 0  # this request is not counted
    assert requests["p50_ms"] >= 20.0  # rank 2 of 4: a 20 ms sleep, plus scheduling
    assert requests["p99_ms"] >= 60.0  # rank 4 of 4: the 60 ms sleep
    assert requests["p50_ms"] < requests["p99_ms"]
    assert requests["p95_ms"] == requests["p99_ms"]
    assert requests["max_ms"] >= 60.0  # the 60 ms sleep, measured exactly
    assert requests["max_ms"] >= requests["p99_ms"] * 0.98  # p99 is its bucket's mean, ±2 %
    assert requests["rejected"] == {"uri_too_long": 1}
    assert requests["avg_response_bytes"] == 80.0  # 4 x 100 bytes over 5 answers
    assert body["memory"]["rss_bytes"] > 10 * 1024 * 1024
    assert isinstance(body["cpu_percent"], float)
    assert isinstance(body["event_loop_lag_ms"], float)
    assert list(body["logs"]) == ["lines_dropped", "dropping"]
    assert isinstance(body["logs"]["lines_dropped"], int)
    assert isinstance(body["logs"]["dropping"], bool)
    assert body["pid"] == os.getpid()
    assert body["version"] == nessen.__version__


def test_api_health_is_503_with_the_reason_when_not_ready(serve: ServeFactory) -> None:
    runtime = timed()
    server = serve(runtime, ready_when_degraded=False)
    server.call(runtime.set_degraded, "database unreachable")
    response = httpx.get(server.url + "/api/health", trust_env=False)
    assert response.status_code == 503
    body = response.json()
    assert (body["ok"], body["state"], body["reason"]) == (
        False,
        "DEGRADED",
        "database unreachable",
    )


def test_runtime_metrics_keeps_the_originals_shape(serve: ServeFactory) -> None:
    runtime = timed()
    server = serve(runtime)
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        for _ in range(3):
            client.get("/sleep/5")
    metrics = runtime.metrics()
    assert list(metrics) == ["total_requests", "active_requests", "p50", "p95", "p99"]
    assert metrics["total_requests"] == 3
    assert metrics["active_requests"] == 0
    assert 5.0 <= metrics["p50"] <= metrics["p95"] <= metrics["p99"] < 50.0


def test_cpu_and_event_loop_lag_are_the_samplers_which_runs_while_serving(
    serve: ServeFactory,
) -> None:
    runtime = Runtime(access_log=False)
    runtime.process.interval = 3600.0  # no tick during the test: the values stay as set
    assert not runtime.process.running
    server = serve(runtime)
    assert runtime.process.running

    def set_values() -> None:
        runtime.process.cpu_percent = 12.5
        runtime.process.event_loop_lag = 0.0421

    server.call(set_values)
    body = httpx.get(server.url + "/api/health", trust_env=False).json()
    assert (body["cpu_percent"], body["event_loop_lag_ms"]) == (12.5, 42.1)
    server.stop()
    assert not runtime.process.running


def test_api_health_is_503_naming_the_failing_check_when_ready_is(serve: ServeFactory) -> None:
    runtime = timed()
    clock = FakeClock(1000.0)
    runtime.readiness.clock = clock
    database_up = False
    calls = {"database": 0, "cache": 0}

    async def database() -> bool:
        calls["database"] += 1
        return database_up

    async def cache() -> None:
        calls["cache"] += 1

    runtime.readiness_check("database", database)
    runtime.readiness_check("cache", cache)
    server = serve(runtime)
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        ready = client.get("/ready")
        health = client.get("/api/health")
        assert ready.status_code == 503
        assert health.status_code == 503
        body = health.json()
        assert list(body)[:3] == ["ok", "state", "checks"]
        assert (body["ok"], body["state"]) == (False, "READY")
        assert body["checks"] == ready.json()["checks"]  # the same round of results
        assert body["checks"]["database"]["ok"] is False
        assert body["checks"]["database"]["error"] == "returned False"
        assert body["checks"]["cache"]["ok"] is True
        assert calls == {"database": 1, "cache": 1}  # /api/health read /ready's cache

        database_up = True
        clock.advance(1.0)  # the cache interval: the next call runs the checks again
        health = client.get("/api/health")
        assert calls == {"database": 2, "cache": 2}
        assert health.status_code == 200
        body = health.json()
        assert body["ok"] is True
        assert body["checks"]["database"] == {
            "ok": True,
            "duration_ms": body["checks"]["database"]["duration_ms"],
            "error": None,
        }
        assert client.get("/ready").status_code == 200
        assert calls == {"database": 2, "cache": 2}


def test_api_health_runs_no_check_while_the_state_refuses_traffic(serve: ServeFactory) -> None:
    runtime = timed()
    calls = 0

    async def database() -> None:
        nonlocal calls
        calls += 1

    runtime.readiness_check("database", database)
    server = serve(runtime, ready_when_degraded=False)
    server.call(runtime.set_degraded, "maintenance")
    response = httpx.get(server.url + "/api/health", trust_env=False)
    assert response.status_code == 503
    body = response.json()
    assert (body["ok"], body["state"], body["reason"]) == (False, "DEGRADED", "maintenance")
    assert "checks" not in body
    assert calls == 0


def test_with_no_sample_the_percentiles_max_and_average_are_null(serve: ServeFactory) -> None:
    server = serve(timed())
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        first = client.get("/api/health").json()["requests"]  # itself not finished yet
        assert client.get("/sleep/30").status_code == 200
        after = client.get("/api/health").json()["requests"]
    averages = ("p50_ms", "p95_ms", "p99_ms", "max_ms", "avg_response_bytes")
    assert {k: first[k] for k in averages} == dict.fromkeys(averages)
    assert after["max_ms"] >= 30.0
    assert after["p50_ms"] is not None


def test_active_counts_requests_in_flight_but_not_the_poll_itself(serve: ServeFactory) -> None:
    runtime = Runtime(access_log=False)
    entered = threading.Event()  # set by the handler, waited for by the test's thread
    release = asyncio.Event()  # bound to the server's loop by the handler's wait

    @runtime.route.get("/held")
    async def held(ctx: Request) -> Response:
        entered.set()
        await release.wait()
        return Response.text("done")

    server = serve(runtime)
    with RawClient(server.address) as slow:
        slow.send(get("/held"))
        assert entered.wait(10.0)  # the handler is running
        with httpx.Client(base_url=server.url, trust_env=False) as client:
            active = client.get("/api/health").json()["requests"]["active"]
        server.call(release.set)
        assert slow.response().status == 200
    assert active == 1  # the held request, and not the /api/health that asked
