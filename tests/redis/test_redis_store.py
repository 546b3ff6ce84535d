"""RedisStore against a real redis-server: the script, key layout, expiry, failures."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio import Redis

from nessen.stores import StoreError, StoreUnavailable
from nessen.stores.redis import TAKE_SHA, RedisStore
from tests.redis.conftest import RedisFactory, RedisServer

DAY = 86_400.0


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client, to look at what the store wrote."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisStore]:
    # A generous timeout: these tests are about results, not the failure path.
    store = RedisStore(redis_server.url, prefix=prefix, timeout=2.0, pool_size=32)
    yield store
    await store.aclose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel completes the handshake but where nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


async def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- the token bucket script ----------------------------------------------------------------


async def test_concurrent_takes_admit_exactly_the_capacity(
    redis_server: RedisServer, prefix: str
) -> None:
    # 4 stores (4 pools, as 4 workers would have) x 100 concurrent takes on one bucket
    # of 50 that refills 50 per day: the script runs atomically, so 50 and not one more.
    stores = [
        RedisStore(redis_server.url, prefix=prefix, timeout=5.0, pool_size=16) for _ in range(4)
    ]
    started = time.monotonic()
    try:
        results = await asyncio.gather(
            *(s.take("rl:shared", 50, 50 / DAY, 0.0) for s in stores for _ in range(100))
        )
    finally:
        elapsed = time.monotonic() - started
        for s in stores:
            await s.aclose()
    assert sum(r.allowed for r in results) == 50
    assert sorted(r.remaining for r in results if r.allowed) == list(range(50))
    refused = [r for r in results if not r.allowed]
    assert len(refused) == 350
    # one token of 50 per day takes 1728 s to come back, less what has refilled since the
    # bucket emptied (at most the time the takes took: seconds on a busy machine)
    assert all(1728 - elapsed - 0.01 <= r.retry_after <= 1728 for r in refused)


async def test_a_bucket_is_a_namespaced_hash_that_expires_when_it_would_be_full(
    store: RedisStore, raw: Redis, prefix: str
) -> None:
    started = time.monotonic()
    for _ in range(3):
        await store.take("rl:203.0.113.7", 10, 1.0, 0.0)
    took = time.monotonic() - started  # refill at 1 token/s while the takes ran
    key = f"{prefix}rl:203.0.113.7"
    assert await raw.type(key) == b"hash"
    fields = await raw.hgetall(key)
    assert set(fields) == {b"tokens", b"stamp"}
    assert 7.0 <= float(fields[b"tokens"]) <= 7.0 + took  # 3 taken, plus what refilled
    seconds, micros = await raw.time()
    assert abs(float(fields[b"stamp"]) - (seconds * 1e6 + micros)) < 5e6  # server clock, us
    # about 3 tokens short at 1 token/s: full again, and gone, within 3 s of the last take
    pttl = await raw.pttl(key)
    assert 3000 - 1000 * (time.monotonic() - started) - 1 <= pttl <= 3000
    assert await raw.keys(f"{prefix}*") == [key.encode()]


async def test_an_expired_bucket_is_gone_and_starts_full_again(
    store: RedisStore, raw: Redis, prefix: str
) -> None:
    # capacity 2, refill 20/s: empty after 2 takes, full (and expired) 100 ms later
    started = time.monotonic()
    assert [(await store.take("rl:k", 2, 20.0, 0.0)).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    key = f"{prefix}rl:k"
    pttl = await raw.pttl(key)
    assert pttl <= 100
    if time.monotonic() - started < 0.09:  # a slow machine may already have let it expire
        assert pttl > 0
    deadline = time.monotonic() + 5.0
    while await raw.exists(key):
        assert time.monotonic() < deadline, "the bucket key never expired"
        await asyncio.sleep(0.01)
    first = await store.take("rl:k", 2, 20.0, 0.0)
    assert first.allowed
    assert first.remaining == 1


async def test_refill_follows_the_server_clock_not_the_callers(store: RedisStore) -> None:
    # The caller's `now` is ignored: passing a clock that runs backwards changes nothing.
    assert (await store.take("rl:c", 1, 10.0, 1e9)).allowed
    refused = await store.take("rl:c", 1, 10.0, -1e9)
    assert not refused.allowed
    assert 0 < refused.retry_after <= 0.1  # one token at 10/s
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not (await store.take("rl:c", 1, 10.0, 0.0)).allowed:
        assert loop.time() - start < 5.0
        await asyncio.sleep(0.01)


async def test_the_script_is_sent_again_after_noscript(store: RedisStore, raw: Redis) -> None:
    assert (await store.take("rl:n", 5, 1.0, 0.0)).remaining == 4
    await raw.script_flush()
    assert await raw.script_exists(TAKE_SHA) == [False]
    assert (await store.take("rl:n", 5, 1.0, 0.0)).remaining == 3  # EVAL after NOSCRIPT
    assert await raw.script_exists(TAKE_SHA) == [True]


async def test_a_key_of_another_type_is_a_store_error_not_an_outage(
    store: RedisStore, raw: Redis, prefix: str
) -> None:
    await raw.set(f"{prefix}rl:wrong", b"a string")
    with pytest.raises(StoreError) as caught:
        await store.take("rl:wrong", 5, 1.0, 0.0)
    assert not isinstance(caught.value, StoreUnavailable)
    assert caught.value.operation == "take"
    assert store.available


# --- cached values ------------------------------------------------------------------------------


async def test_values_live_for_their_ttl(store: RedisStore, raw: Redis, prefix: str) -> None:
    started = time.monotonic()
    assert await store.set("cache:/a?", b"page", 2.5)
    assert await store.get("cache:/a?") == b"page"
    pttl = await raw.pttl(f"{prefix}cache:/a?")
    assert 2500 - 1000 * (time.monotonic() - started) - 1 <= pttl <= 2500
    assert await store.delete("cache:/a?")
    assert not await store.delete("cache:/a?")
    assert await store.get("cache:/a?") is None


async def test_a_value_over_the_entry_cap_is_refused_and_the_old_one_removed(
    redis_server: RedisServer, prefix: str
) -> None:
    store = RedisStore(redis_server.url, prefix=prefix, timeout=2.0, max_entry_bytes=100)
    try:
        key = "cache:/b?"  # 9 bytes: a value of 91 fits, 92 does not
        assert await store.set(key, b"x" * 91, 60.0)
        assert not await store.set(key, b"x" * 92, 60.0)
        assert await store.get(key) is None
        assert not await store.set(key, b"small", 0.0)  # no lifetime: not stored either
    finally:
        await store.aclose()


# --- the pool ------------------------------------------------------------------------------------


async def test_a_store_opens_at_most_pool_size_connections(
    redis_server: RedisServer, prefix: str, raw: Redis
) -> None:
    before = (await raw.info("clients"))["connected_clients"]
    store = RedisStore(redis_server.url, prefix=prefix, timeout=2.0, pool_size=3)
    try:
        results = await asyncio.gather(*(store.take("rl:p", 1e6, 1.0, 0.0) for _ in range(60)))
        assert all(r.allowed for r in results)
        assert (await raw.info("clients"))["connected_clients"] - before <= 3
    finally:
        await store.aclose()
    assert (await raw.info("clients"))["connected_clients"] == before


# --- failures -----------------------------------------------------------------------------------


async def test_an_unanswering_redis_costs_a_call_its_timeout_not_a_hang(silent_port: int) -> None:
    store = RedisStore(f"redis://127.0.0.1:{silent_port}/0", timeout=0.05)
    failed: list[str] = []
    changes: list[tuple[bool, str]] = []
    store.on_error(failed.append)
    store.on_change(lambda available, reason: changes.append((available, reason)))
    try:
        with pytest.raises(StoreUnavailable, match="timed out after 50 ms"):
            # the outer bound only turns a hang into a failure; the store's own 50 ms fires
            await asyncio.wait_for(store.take("rl:x", 5, 1.0, 0.0), 5.0)
        assert not store.available
        assert changes == [(False, "timed out after 50 ms")]
        # while unavailable, calls fail at once, without the network: the reason is the
        # store's own "unavailable", not another timeout (the bound only stops a hang)
        for call in (store.get("k"), store.set("k", b"v", 1.0), store.delete("k")):
            with pytest.raises(StoreUnavailable, match="redis unavailable for"):
                await asyncio.wait_for(call, 5.0)
        assert failed == ["take", "get", "set", "delete"]
        assert store.errors == 4
    finally:
        await store.aclose()


async def test_a_stopped_redis_is_detected_and_the_probe_brings_it_back(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory()
    # a generous timeout: a stopped server refuses at once, and a busy machine must not
    # turn a slow answer into a failure
    store = RedisStore(server.url, timeout=2.0, probe_interval=0.05)
    changes: list[bool] = []
    store.on_change(lambda available, reason: changes.append(available))
    try:
        assert (await store.take("rl:r", 5, 1.0, 0.0)).allowed
        server.kill()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.take("rl:r", 5, 1.0, 0.0), 5.0)
        assert changes == [False]
        server.start()  # same port, empty: no call is made, the probe finds it
        await wait_until(lambda: store.available)
        assert changes == [False, True]
        assert (await store.take("rl:r", 5, 1.0, 0.0)).remaining == 4  # a fresh, full bucket
    finally:
        await store.aclose()


async def test_ping_reports_without_raising(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    store = RedisStore(server.url, timeout=2.0, probe_interval=60.0)  # a stopped one refuses
    try:
        assert await store.ping()
        assert await store.load_script()
        server.kill()
        assert not await store.ping()
        assert not store.available
        assert not await store.load_script()
        server.start()
        assert await store.ping()  # a PING goes out even while unavailable
        assert store.available
    finally:
        await store.aclose()


def test_bounds_are_checked() -> None:
    for arguments, message in (
        ({"timeout": 0.0}, "timeout=0.0"),
        ({"pool_size": 0}, "pool_size=0"),
        ({"max_entry_bytes": 0}, "max_entry_bytes=0"),
        ({"probe_interval": -1.0}, "probe_interval=-1.0"),
    ):
        with pytest.raises(ValueError, match=message):
            RedisStore("redis://127.0.0.1:1/0", **arguments)  # type: ignore[arg-type]
