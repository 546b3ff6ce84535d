from __future__ import annotations

import json
import logging

import pytest

from nessen.config import Config
from nessen.http import Request, Response
from nessen.middleware.rate_limit import rate_limit_middleware, whole_seconds
from nessen.stores import MemoryStore, TakeResult
from tests.unit.middleware.helpers import FakeClock, make_request, responding, run


async def test_requests_within_the_limit_pass_with_ratelimit_fields() -> None:
    clock = FakeClock()
    limiter = rate_limit_middleware(3, 60.0, clock=clock)
    remaining = []
    for _ in range(3):
        response = await run(limiter, make_request())
        assert response.status == 200
        remaining.append(response.headers["ratelimit-remaining"])
        assert response.headers["ratelimit-limit"] == "3"
        assert "ratelimit-policy" not in response.headers  # only on a 429
    assert remaining == ["2", "1", "0"]
    assert response.headers["ratelimit-reset"] == "60"  # 3 tokens at one per 20 s


async def test_the_429_says_when_the_next_token_comes_not_the_window() -> None:
    clock = FakeClock(1000.0)
    limiter = rate_limit_middleware(3, 60.0, clock=clock)  # one token every 20 s
    for _ in range(3):
        assert (await run(limiter, make_request())).status == 200
    handler = responding(lambda: Response.text("ok"))
    refused = await run(limiter, make_request(), handler)
    assert handler.calls == [0]  # type: ignore[attr-defined]
    assert refused.status == 429
    assert refused.headers["retry-after"] == "20"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-reset"] == "20"  # as Retry-After
    assert refused.headers["ratelimit-policy"] == "3;w=60"
    assert refused.content_type == "application/json"
    body = json.loads(refused.body)
    assert body["error"] == "Too Many Requests"
    assert body["retry_after"] == 20

    clock.advance(5.0)
    assert (await run(limiter, make_request())).headers["retry-after"] == "15"
    clock.advance(14.5)
    assert (await run(limiter, make_request())).headers["retry-after"] == "1"  # 0.5 s, rounded up
    clock.advance(0.5)
    allowed = await run(limiter, make_request())
    assert allowed.status == 200
    assert allowed.headers["ratelimit-remaining"] == "0"
    assert allowed.headers["ratelimit-reset"] == "60"


async def test_retry_after_with_a_fast_refill_is_at_least_one_second() -> None:
    clock = FakeClock()
    limiter = rate_limit_middleware(10, 1.0, clock=clock)  # a token every 0.1 s
    for _ in range(10):
        await run(limiter, make_request())
    refused = await run(limiter, make_request())
    assert refused.status == 429
    assert refused.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("seconds", "whole"),
    [(0.0, 0), (0.2, 1), (1.0, 1), (20.000000000000004, 20), (14.999999999999998, 15), (20.01, 21)],
)
def test_whole_seconds_rounds_up_but_ignores_float_noise(seconds: float, whole: int) -> None:
    assert whole_seconds(seconds) == whole


async def test_keys_are_per_client_address() -> None:
    clock = FakeClock()
    limiter = rate_limit_middleware(1, 60.0, clock=clock)
    assert (await run(limiter, make_request(client="192.0.2.1"))).status == 200
    assert (await run(limiter, make_request(client="192.0.2.1"))).status == 429
    assert (await run(limiter, make_request(client="192.0.2.2"))).status == 200


async def test_a_spoofed_forwarded_for_does_not_change_the_key() -> None:
    networks = Config(trust_proxy=("10.0.0.0/8",)).trusted_networks
    limiter = rate_limit_middleware(1, 60.0, trusted_networks=networks, clock=FakeClock())

    def via_proxy(forwarded: str) -> Request:
        return make_request(headers=[("X-Forwarded-For", forwarded)], client="10.0.0.2")

    assert (await run(limiter, via_proxy("198.51.100.7"))).status == 200
    # the same client invents a different left-most entry each time: still one key
    assert (await run(limiter, via_proxy("1.1.1.1, 198.51.100.7"))).status == 429
    assert (await run(limiter, via_proxy("2.2.2.2, 198.51.100.7"))).status == 429
    # a different real client behind the proxy has its own bucket
    assert (await run(limiter, via_proxy("198.51.100.8"))).status == 200


async def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    networks = Config(trust_proxy=("10.0.0.0/8",)).trusted_networks
    limiter = rate_limit_middleware(1, 60.0, trusted_networks=networks, clock=FakeClock())
    first = make_request(headers=[("X-Forwarded-For", "1.1.1.1")], client="203.0.113.5")
    second = make_request(headers=[("X-Forwarded-For", "2.2.2.2")], client="203.0.113.5")
    assert (await run(limiter, first)).status == 200
    assert (await run(limiter, second)).status == 429


async def test_a_custom_key_function() -> None:
    limiter = rate_limit_middleware(
        1, 60.0, key=lambda r: r.headers.get("x-api-key"), clock=FakeClock()
    )
    assert (await run(limiter, make_request(headers=[("X-Api-Key", "a")]))).status == 200
    assert (await run(limiter, make_request(headers=[("X-Api-Key", "a")]))).status == 429
    assert (await run(limiter, make_request(headers=[("X-Api-Key", "b")]))).status == 200
    # no key: not limited, no fields
    for _ in range(3):
        response = await run(limiter, make_request())
        assert response.status == 200
        assert "ratelimit-limit" not in response.headers


async def test_probe_and_metrics_paths_are_skipped_by_default() -> None:
    limiter = rate_limit_middleware(1, 60.0, clock=FakeClock())
    for path in ("/health", "/ready", "/api/health", "/metrics", "/health", "/ready"):
        response = await run(limiter, make_request(target=path))
        assert response.status == 200
        assert "ratelimit-limit" not in response.headers
    assert (await run(limiter, make_request(target="/x"))).status == 200
    assert (await run(limiter, make_request(target="/x"))).status == 429


async def test_a_skip_predicate() -> None:
    limiter = rate_limit_middleware(1, 60.0, skip=lambda r: r.method == "OPTIONS")
    for _ in range(3):
        assert (await run(limiter, make_request("OPTIONS"))).status == 200
    assert (await run(limiter, make_request())).status == 200
    assert (await run(limiter, make_request())).status == 429


async def test_the_default_store_keeps_at_most_max_keys_buckets() -> None:
    store = MemoryStore(max_entries=50)
    limiter = rate_limit_middleware(1, 60.0, store=store, clock=FakeClock())
    for index in range(2000):
        await run(limiter, make_request(client=f"198.51.{index // 256}.{index % 256}"))
    assert len(store) == 50
    assert store.keys()[-1] == "rl:198.51.7.207"


async def test_an_inner_limiter_s_fields_are_kept() -> None:
    outer = rate_limit_middleware(100, 60.0, clock=FakeClock())
    inner = rate_limit_middleware(5, 1.0, clock=FakeClock(), key_prefix="inner:")
    response = await run([outer, inner], make_request())
    assert response.headers.getall("ratelimit-limit") == ["5"]


async def test_fields_can_be_turned_off() -> None:
    response = await run(rate_limit_middleware(5, 1.0, headers=False), make_request())
    assert "ratelimit-limit" not in response.headers


class BrokenStore(MemoryStore):
    async def take(self, key: str, capacity: float, refill: float, now: float) -> TakeResult:
        raise ConnectionError("store down")


async def test_a_failing_store_fails_open_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limiter = rate_limit_middleware(1, 60.0, store=BrokenStore(), clock=clock)
    with caplog.at_level(logging.WARNING, logger="nessen.middleware.rate_limit"):
        for _ in range(5):
            assert (await run(limiter, make_request())).status == 200
        clock.advance(10.0)
        await run(limiter, make_request())
    assert [r.message for r in caplog.records] == [
        "rate limit store failed; letting requests through"
    ] * 2


async def test_a_failing_store_can_fail_closed_with_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = rate_limit_middleware(1, 60.0, store=BrokenStore(), fail_open=False)
    with caplog.at_level(logging.WARNING, logger="nessen.middleware.rate_limit"):
        first = await run(limiter, make_request())
        second = await run(limiter, make_request())
    for response in (first, second):
        assert response.status == 503
        assert response.headers["retry-after"] == "1"
        assert json.loads(response.body)["error"] == "Service Unavailable"
    assert [r.message for r in caplog.records] == ["rate limit store failed; answering 503"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"limit": 0}, "limit=0"),
        ({"limit": True}, "limit=True"),
        ({"window": 0.0}, "window=0.0"),
    ],
)
def test_invalid_settings_are_refused(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rate_limit_middleware(**arguments)  # type: ignore[arg-type]
