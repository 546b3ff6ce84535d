"""``nessen serve`` processes sharing one real redis-server: limits, cache, outages."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

import redis
from tests.e2e.serving import ServeProcess, base_env, run_nessen, serve_processes
from tests.rawhttp import RawClient, RawResponse, get
from tests.redis.conftest import RedisFactory, RedisServer

LIMITED = "tests.redis.apps:limited"
CACHED = "tests.redis.apps:cached"
NO_HANG = 5.0
"""Seconds a request may take while Redis is down: REDIS_TIMEOUT plus a wide margin for a
loaded CI machine. A request that hung on Redis (no timeout) would run into it."""


def redis_env(server: RedisServer, prefix: str, **extra: str) -> dict[str, str]:
    return base_env(REDIS_URL=server.url, REDIS_KEY_PREFIX=prefix, **extra)


def health(process: ServeProcess) -> dict[str, object]:
    with process.client() as client:
        body: dict[str, object] = client.get("/api/health").json()
    return body


def wait_for_state(process: ServeProcess, state: str, timeout: float = 15.0) -> dict[str, object]:
    """Poll /api/health until its ``state`` is ``state``; return that body."""
    deadline = time.monotonic() + timeout
    while True:
        body = health(process)
        if body["state"] == state:
            return body
        assert time.monotonic() < deadline, f"state stayed {body['state']}, not {state}"
        time.sleep(0.02)


def wait_for_status(
    process: ServeProcess, path: str, status: int, timeout: float = 15.0
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    with process.client() as client:
        while True:
            response = client.get(path)
            if response.status_code == status:
                return response
            assert time.monotonic() < deadline, f"{path} stayed {response.status_code}"
            time.sleep(0.02)


def store_errors(process: ServeProcess) -> dict[str, float]:
    with process.client() as client:
        text = client.get("/metrics").text
    return {
        sample.labels["operation"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "nessen_store_errors"
        for sample in family.samples
        if sample.name == "nessen_store_errors_total" and sample.labels["store"] == "redis"
    }


def timed_hits(client: httpx.Client, count: int) -> tuple[list[httpx.Response], float]:
    """Send ``count`` GET /hit; return the responses and the slowest one's seconds."""
    responses, slowest = [], 0.0
    for _ in range(count):
        started = time.perf_counter()
        responses.append(client.get("/hit"))  # the client's timeout is the NO_HANG bound
        slowest = max(slowest, time.perf_counter() - started)
    return responses, slowest


# --- one limit across processes -----------------------------------------------------------------


def test_three_processes_sharing_redis_allow_exactly_the_limit(
    redis_server: RedisServer, prefix: str
) -> None:
    # 50 per minute per key (every request comes from 127.0.0.1: one key). A token comes
    # back every 60 / 50 = 1.2 s, so a burst sent faster than that admits exactly 50.
    # REDIS_TIMEOUT is raised here because a call that times out fails open by design,
    # and this test is about the count when Redis answers, not about slow answers.
    env = redis_env(
        redis_server,
        prefix,
        RATE_LIMIT_STORE="redis",
        RATE_LIMIT_MAX="50",
        RATE_LIMIT_WINDOW="60000",
        REDIS_TIMEOUT="2000",
    )
    with serve_processes() as start:
        servers = [start(LIMITED, env=env) for _ in range(3)]
        # 4 keep-alive connections per process, 25 pipelined requests on each: 300 in all,
        # racing on one bucket from 3 processes and 4 connections in each.
        connections = [RawClient(s.address) for s in servers for _ in range(4)]
        results: dict[int, list[RawResponse]] = {}

        def burst(index: int) -> None:
            connection = connections[index]
            connection.send(get("/hit") * 25)
            results[index] = [connection.response() for _ in range(25)]

        threads = [threading.Thread(target=burst, args=(i,)) for i in range(12)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        elapsed = time.monotonic() - started
        responses = [r for i in range(12) for r in results[i]]
        assert len(responses) == 300
        statuses = Counter(r.status for r in responses)
        assert statuses == {200: 50, 429: 250}, f"{statuses} in {elapsed:.2f} s"
        per_process = [
            Counter(r.status for i in range(4 * n, 4 * n + 4) for r in results[i]) for n in range(3)
        ]
        assert [sum(c.values()) for c in per_process] == [100, 100, 100]
        # every admitted request took its own token: remaining counts 49 down to 0
        remaining = sorted(
            int(r.header("ratelimit-remaining") or "-1") for r in responses if r.status == 200
        )
        assert remaining == list(range(50))
        # Retry-After: the whole seconds until one token is back, at most ceil(1.2) = 2
        # (never the 60 s window), and the JSON body says the same
        refused = [r for r in responses if r.status == 429]
        assert {r.header("retry-after") for r in refused} <= {"1", "2"}
        for r in refused:
            assert json.loads(r.body)["retry_after"] == int(r.header("retry-after") or 0)
            assert r.header("ratelimit-policy") == "50;w=60"
        # and it is honest: a client that waits it out gets one request through, not two
        last = connections[0].request(get("/hit"))
        assert last.status == 429
        time.sleep(int(last.header("retry-after") or 0))  # the wait the client was told
        assert connections[1].request(get("/hit")).status == 200
        assert connections[5].request(get("/hit")).status == 429  # another process
        for connection in connections:
            connection.close()
        print(f"\n3 processes, 300 requests in {elapsed:.3f} s: {dict(statuses)}")
        for server in servers:
            assert server.stop() == 0


# --- the cache across processes -----------------------------------------------------------------


def test_a_page_cached_by_one_process_is_a_hit_in_another(
    redis_server: RedisServer, prefix: str
) -> None:
    env = redis_env(redis_server, prefix, CACHE_STORE="redis")
    with serve_processes() as start:
        first, second = start(CACHED, env=env), start(CACHED, env=env)
        site = {"Host": "shop.example"}  # replicas behind one name, as a load balancer sends
        with first.client() as a, second.client() as b:
            filled = a.get("/page", headers=site)
            assert filled.headers["x-cache"] == "MISS"
            assert filled.text == f"rendered by {first.process.pid}"
            hit = b.get("/page", headers=site)
        assert hit.headers["x-cache"] == "HIT"
        assert hit.text == f"rendered by {first.process.pid}"  # rendered by the other one
        assert hit.headers["etag"] == filled.headers["etag"]
        client = redis.Redis.from_url(redis_server.url)
        try:
            keys = client.keys(f"{prefix}cache:http://shop.example/page?*")
            assert keys  # namespaced under the prefix
            for key in keys:
                assert 0 < client.pttl(key) <= 30_000  # the cache's ttl=30 s
        finally:
            client.close()


def test_a_page_built_from_a_forged_host_never_reaches_another_replica(
    redis_server: RedisServer, prefix: str
) -> None:
    env = redis_env(redis_server, prefix, CACHE_STORE="redis")  # ALLOWED_HOSTS empty
    with serve_processes() as start:
        first, second = start(CACHED, env=env), start(CACHED, env=env)
        with RawClient(first.address) as attacker, RawClient(second.address) as victim:
            forged = attacker.request(get("/reset", host="evil.example"))
            assert forged.body == b"reset at http://evil.example/reset?token="
            poisoned = victim.request(get("/reset", host="evil.example"))
            assert poisoned.header("x-cache") == "HIT"  # shared: the store works
            page = victim.request(get("/reset", host="shop.example"))
            again = attacker.request(get("/reset", host="shop.example"))
        assert page.body == b"reset at http://shop.example/reset?token="
        assert page.header("x-cache") == "MISS"
        assert (again.header("x-cache"), again.body) == ("HIT", page.body)
        client = redis.Redis.from_url(redis_server.url)
        try:
            keys = sorted(key.decode() for key in client.keys(f"{prefix}cache:*/reset?*"))
        finally:
            client.close()
        # one entry per host (each with its Vary: Accept-Encoding variant after a NUL)
        assert [key for key in keys if "\x00" not in key] == [
            f"{prefix}cache:http://evil.example/reset?",
            f"{prefix}cache:http://shop.example/reset?",
        ]


# --- outages ------------------------------------------------------------------------------------


def test_fail_open_keeps_serving_degraded_and_recovers(
    redis_factory: RedisFactory, prefix: str
) -> None:
    server = redis_factory()
    # REDIS_TIMEOUT well above a healthy call on a loaded machine (a call past it fails
    # open and turns the state DEGRADED, which the healthy phases below must not see).
    env = redis_env(
        server, prefix, RATE_LIMIT_STORE="redis", RATE_LIMIT_MAX="1000000", REDIS_TIMEOUT="250"
    )
    with serve_processes() as start:
        app = start(LIMITED, env=env)
        with httpx.Client(base_url=app.url, timeout=NO_HANG, trust_env=False) as client:
            assert health(app)["state"] == "READY"
            assert "ratelimit-limit" in client.get("/hit").headers  # the store answered

            # Redis hangs (SIGSTOP): each call may cost REDIS_TIMEOUT, never more
            server.pause()
            hung, slowest_hung = timed_hits(client, 20)
            assert [r.status_code for r in hung] == [200] * 20
            assert all("ratelimit-limit" not in r.headers for r in hung)  # let through
            degraded = wait_for_state(app, "DEGRADED")
            assert str(degraded["reason"]).startswith("redis unavailable: timed out after 250 ms")
            assert client.get("/ready").status_code == 200  # still in rotation
            app.wait_for("rate limit store failed")  # stderr is read by another thread
            warnings = [line for line in app.lines if "rate limit store failed" in line]
            assert len(warnings) == 1  # once per 10 s, not once per request
            server.resume()
            wait_for_state(app, "READY")
            assert "ratelimit-limit" in client.get("/hit").headers

            # Redis dies (SIGKILL): connections refused
            server.kill()
            killed, slowest_killed = timed_hits(client, 20)
            assert [r.status_code for r in killed] == [200] * 20
            wait_for_state(app, "DEGRADED")
            assert client.get("/ready").status_code == 200
            assert client.get("/health").status_code == 200
            assert store_errors(app)["take"] == 40  # every request Redis could not decide
            deadline = time.monotonic() + 10.0
            while store_errors(app).get("ping", 0) == 0:  # the probe, once a second
                assert time.monotonic() < deadline, "no probe PING was counted"
                time.sleep(0.05)

            server.start()  # same port, empty
            back = wait_for_state(app, "READY")
            assert "reason" not in back or not str(back["reason"]).startswith("redis")
            again = client.get("/hit")
            assert again.headers["ratelimit-remaining"] == "999999"  # a fresh bucket
        assert app.stop() == 0  # stderr has been read to its end after this
    unavailable = [line for line in app.lines if "redis unavailable (" in line]
    assert 1 <= len(unavailable) <= 2  # one per outage at most
    assert any("redis available again" in line for line in app.lines)
    print(
        f"\nslowest request: Redis hung {slowest_hung * 1000:.1f} ms, "
        f"Redis killed {slowest_killed * 1000:.1f} ms; DEGRADED reason: {degraded['reason']}"
    )


def test_fail_closed_answers_503_and_leaves_rotation_until_redis_is_back(
    redis_factory: RedisFactory, prefix: str
) -> None:
    server = redis_factory()
    env = redis_env(server, prefix, RATE_LIMIT_STORE="redis", RATE_LIMIT_FAIL="closed")
    with serve_processes() as start:
        app = start(LIMITED, env=env)
        with httpx.Client(base_url=app.url, timeout=NO_HANG, trust_env=False) as client:
            assert client.get("/hit").status_code == 200
            assert wait_for_status(app, "/ready", 200).json()["checks"]["redis"]["ok"]
            server.kill()
            refused = client.get("/hit")
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"] == "Service Unavailable"
            not_ready = wait_for_status(app, "/ready", 503)
            assert not not_ready.json()["checks"]["redis"]["ok"]
            assert health(app)["state"] == "DEGRADED"
            assert client.get("/health").status_code == 200  # alive: not restarted
            server.start()
            wait_for_status(app, "/ready", 200)
            assert client.get("/hit").status_code == 200
            wait_for_state(app, "READY")
        assert app.stop() == 0


def test_redis_down_at_startup_starts_degraded(redis_factory: RedisFactory, prefix: str) -> None:
    server = redis_factory()
    server.kill()
    env = redis_env(server, prefix, RATE_LIMIT_STORE="redis")
    with serve_processes() as start:
        app = start(LIMITED, env=env)
        assert wait_for_state(app, "DEGRADED")["reason"] is not None
        with app.client() as client:
            assert client.get("/hit").status_code == 200
        server.start()
        wait_for_state(app, "READY")
        assert app.stop() == 0


def test_in_production_the_endpoints_name_no_redis_address_and_the_log_does(
    redis_factory: RedisFactory, prefix: str
) -> None:
    server = redis_factory()
    server.kill()  # connections refused: redis-py's message names host and port
    address = f"127.0.0.1:{server.port}"
    url = f"redis://:hunter2@{address}/0"
    with serve_processes() as start:
        app = start(LIMITED, env=base_env(REDIS_URL=url, RATE_LIMIT_STORE="redis"))
        dev = start(
            LIMITED,
            env=base_env(REDIS_URL=url, RATE_LIMIT_STORE="redis", NESSEN_ENV="development"),
        )
        degraded = wait_for_state(app, "DEGRADED")
        reason = str(degraded["reason"])
        assert reason.startswith("redis unavailable: ConnectionError: Error 111 connecting to ")
        with app.client() as client:
            # the status page has no text of its own: it shows /api/health's reason
            bodies = [client.get(path).text for path in ("/api/health", "/ready", "/metrics")]
        for body in bodies:
            assert "127.0.0.1" not in body  # nor, so, the address with its port
            assert "hunter2" not in body
        assert "<redacted>" in bodies[0]
        assert "<redacted>" in bodies[1]
        # the operator's log keeps the detail, once for the change of state
        detail = app.wait_for("state READY -> DEGRADED")
        assert address in detail
        # outside production the client sees it too
        assert address in str(wait_for_state(dev, "DEGRADED")["reason"])
        assert app.stop() == 0
    assert len([line for line in app.lines if "-> DEGRADED" in line]) == 1


# --- configuration ------------------------------------------------------------------------------


def test_store_settings_are_checked_before_serving() -> None:
    cases: list[tuple[dict[str, str], Callable[[str], bool]]] = [
        ({"RATE_LIMIT_STORE": "redis"}, lambda e: "REDIS_URL=None: required when" in e),
        ({"CACHE_STORE": "disk"}, lambda e: "CACHE_STORE='disk'" in e and "memory, redis" in e),
        ({"RATE_LIMIT_FAIL": "maybe"}, lambda e: "RATE_LIMIT_FAIL='maybe'" in e),
        ({"REDIS_TIMEOUT": "0"}, lambda e: "REDIS_TIMEOUT='0'" in e and "1..60000 ms" in e),
    ]
    for variables, names_it in cases:
        result = run_nessen("serve", env=base_env(**variables))
        assert result.returncode == 2, result.stderr
        assert names_it(result.stderr), result.stderr
