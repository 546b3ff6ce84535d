"""/ready over the wire: checks run concurrently, each under its timeout, results cached."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from nessen import Runtime
from tests.conftest import ServeFactory
from tests.rawhttp import RawClient, get
from tests.unit.middleware.helpers import FakeClock


def test_failing_and_hanging_checks_make_ready_503_and_are_named(serve: ServeFactory) -> None:
    runtime = Runtime(access_log=False)

    async def database() -> bool:
        return False

    async def cache() -> None:
        await asyncio.sleep(60)

    async def queue() -> None:
        raise ConnectionRefusedError("queue down")

    async def config_store() -> str:
        return "fine"

    runtime.readiness_check("database", database, timeout=1.0)
    runtime.readiness_check("cache", cache, timeout=0.2)
    runtime.readiness_check("queue", queue, timeout=1.0)
    runtime.readiness_check("config", config_store, timeout=1.0)
    server = serve(runtime, env="development")  # production shows only each failure's kind
    with RawClient(server.address) as client:
        response = client.request(get("/ready"))
        live = client.request(get("/health"))
    assert response.status == 503
    body = json.loads(response.body)
    assert body["ready"] is False
    assert body["state"] == "READY"
    checks = body["checks"]
    assert checks["database"]["ok"] is False
    assert checks["database"]["error"] == "returned False"
    assert checks["cache"]["ok"] is False
    assert checks["cache"]["error"] == "timed out after 0.2 s"
    assert checks["queue"]["error"] == "ConnectionRefusedError: queue down"
    assert checks["config"] == {
        "ok": True,
        "duration_ms": checks["config"]["duration_ms"],
        "error": None,
    }
    # Liveness does not depend on readiness checks.
    assert live.status == 200


def test_probe_storm_runs_each_check_once_per_cache_interval(serve: ServeFactory) -> None:
    runtime = Runtime(access_log=False)
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1

    runtime.readiness_check("counted", counted)
    runtime.readiness.cache_seconds = 60.0
    server = serve(runtime)
    with RawClient(server.address) as client:
        for _ in range(50):
            assert client.request(get("/ready")).status == 200
    assert calls == 1


def test_degraded_stays_ready_unless_configured_otherwise(serve: ServeFactory) -> None:
    for ready_when_degraded, expected in ((True, 200), (False, 503)):
        runtime = Runtime(access_log=False)
        server = serve(runtime, ready_when_degraded=ready_when_degraded)
        server.call(runtime.set_degraded, "cache store down")
        with RawClient(server.address) as client:
            response = client.request(get("/ready"))
        assert response.status == expected
        body = json.loads(response.body)
        assert body["state"] == "DEGRADED"
        assert body["reason"] == "cache store down"
        server.call(runtime.set_ready)
        with RawClient(server.address) as client:
            assert client.request(get("/ready")).status == 200


def test_a_check_runs_again_once_the_cache_interval_has_passed(serve: ServeFactory) -> None:
    runtime = Runtime(access_log=False)
    clock = FakeClock(1000.0)
    runtime.readiness.clock = clock  # the cache's age only; checks still run in real time
    healthy = True
    calls = 0

    async def database() -> bool:
        nonlocal calls
        calls += 1
        return healthy

    runtime.readiness_check("database", database)
    assert runtime.readiness.cache_seconds == 1.0  # the default interval
    server = serve(runtime)
    with RawClient(server.address) as client:
        assert client.request(get("/ready")).status == 200
        assert calls == 1
        healthy = False  # the database goes down; /ready keeps the cached answer...
        clock.advance(0.9)
        assert client.request(get("/ready")).status == 200
        assert calls == 1
        clock.advance(0.2)  # ...until the interval has passed since the last round ended
        response = client.request(get("/ready"))
        assert calls == 2
        assert response.status == 503
        assert json.loads(response.body)["checks"]["database"]["error"] == "returned False"
        healthy = True
        clock.advance(0.5)
        assert client.request(get("/ready")).status == 503  # cached failure
        clock.advance(0.5)
        assert client.request(get("/ready")).status == 200
        assert calls == 3


def test_production_shows_a_failing_checks_kind_and_logs_its_text_once(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = Runtime(access_log=False)
    secret = "postgres://admin:hunter2@10.0.0.5/db"
    failing = True

    async def database() -> None:
        if failing:
            raise ConnectionError(f"could not connect to {secret}")

    async def cache() -> None:
        if failing:
            await asyncio.sleep(60)

    runtime.readiness_check("database", database, timeout=1.0)
    runtime.readiness_check("cache", cache, timeout=0.2)
    runtime.readiness.cache_seconds = 0.0  # every probe runs the checks
    server = serve(runtime, env="production")
    with caplog.at_level(logging.INFO, logger="nessen.lifecycle"):
        with RawClient(server.address) as client:
            ready = [client.request(get("/ready")) for _ in range(3)]
            api = client.request(get("/api/health"))
        failing = False  # both pass now
        with RawClient(server.address) as client:
            recovered = client.request(get("/ready"))
    for response in [*ready, api]:
        assert response.status == 503
        assert secret.encode() not in response.body
        assert b"hunter2" not in response.body
        checks = json.loads(response.body)["checks"]
        assert checks["database"]["error"] == "ConnectionError"
        assert checks["cache"]["error"] == "timeout"
    assert recovered.status == 200
    # The text is in the log, once per change, not once per probe.
    messages = [r.getMessage() for r in caplog.records if r.name == "nessen.lifecycle"]
    failures = [m for m in messages if "'database' fails" in m]
    assert len(failures) == 1
    assert secret in failures[0]
    assert sum("'cache' fails: timed out after 0.2 s" in m for m in messages) == 1
    assert sum("'database' passes again" in m for m in messages) == 1
