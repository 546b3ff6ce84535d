"""Rate limiting over real HTTP: exact Retry-After, trusted proxies, spoofing, probes."""

from __future__ import annotations

import httpx

from nessen import Config, Request, Response, Runtime
from nessen.middleware import rate_limit_middleware
from tests.conftest import ServeFactory
from tests.integration.middleware.apps import plain_runtime, stacked_runtime
from tests.unit.middleware.helpers import FakeClock


def limited_runtime(clock: FakeClock, config: Config) -> Runtime:
    runtime = plain_runtime(config)
    runtime.use(
        rate_limit_middleware(
            config.rate_limit_max,
            config.rate_limit_window,
            clock=clock,
        )
    )

    @runtime.route.get("/api")
    async def api(ctx: Request) -> Response:
        return Response.json({"ok": True})

    return runtime


def test_retry_after_is_the_time_to_the_next_token(serve: ServeFactory) -> None:
    clock = FakeClock(500.0)
    config = Config(rate_limit_max=6, rate_limit_window=60.0)  # a token every 10 s
    server = serve(limited_runtime(clock, config))
    with httpx.Client(base_url=server.url) as client:
        remaining = [client.get("/api").headers["ratelimit-remaining"] for _ in range(6)]
        assert remaining == ["5", "4", "3", "2", "1", "0"]
        refused = client.get("/api")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "10"  # not the 60 s window
        assert refused.headers["ratelimit-reset"] == "10"  # agrees with Retry-After
        assert refused.json()["retry_after"] == 10
        clock.advance(3.0)
        later = client.get("/api")
        assert later.headers["retry-after"] == later.headers["ratelimit-reset"] == "7"
        clock.advance(6.2)
        assert client.get("/api").headers["retry-after"] == "1"
        clock.advance(0.8)
        allowed = client.get("/api")
        assert allowed.status_code == 200
        assert allowed.headers["ratelimit-remaining"] == "0"
        clock.advance(60.0)
        assert client.get("/api").headers["ratelimit-remaining"] == "5"  # full again


def test_a_client_cannot_spoof_its_key_through_a_trusted_proxy(serve: ServeFactory) -> None:
    # 127.0.0.1 (the test client) plays the trusted proxy
    config = Config(rate_limit_max=2, trust_proxy=("127.0.0.0/8",))
    server = serve(limited_runtime(FakeClock(), config))
    with httpx.Client(base_url=server.url) as client:

        def send(forwarded: str) -> int:
            return client.get("/api", headers={"X-Forwarded-For": forwarded}).status_code

        statuses = [send(f"10.9.9.{n}, 198.51.100.1") for n in range(5)]
        assert statuses == [200, 200, 429, 429, 429]
        assert send("198.51.100.2") == 200  # another client behind the proxy
        assert send("198.51.100.3, 127.0.0.5") == 200  # a second trusted hop is skipped


def test_forwarded_for_is_ignored_without_trust_proxy(serve: ServeFactory) -> None:
    config = Config(rate_limit_max=2, trust_proxy=False)
    server = serve(limited_runtime(FakeClock(), config))
    with httpx.Client(base_url=server.url) as client:
        statuses = [
            client.get("/api", headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code
            for n in range(3)
        ]
    assert statuses == [200, 200, 429]  # one key: the socket peer


def test_every_limited_response_carries_the_fields(serve: ServeFactory) -> None:
    server = serve(stacked_runtime(Config(rate_limit_max=3)))
    with httpx.Client(base_url=server.url) as client:
        not_found = client.get("/no/such/thing/here", headers={"Accept": "x"})
        small = client.get("/small")
        health = client.get("/health")
    assert not_found.headers["ratelimit-remaining"] == "2"
    assert small.headers["ratelimit-remaining"] == "1"
    assert small.headers["ratelimit-reset"] == "40"  # 2 tokens used, one back per 20 s
    assert "ratelimit-limit" not in health.headers
