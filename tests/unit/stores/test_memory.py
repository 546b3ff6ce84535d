from __future__ import annotations

import gc
import tracemalloc

import pytest

from nessen.stores import MemoryStore, Store, TakeResult
from nessen.stores.memory import BUCKET_BYTES
from tests.unit.middleware.helpers import FakeClock


def test_memory_store_implements_the_store_protocol() -> None:
    assert isinstance(MemoryStore(), Store)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_entries": 0}, "max_entries=0"),
        ({"max_bytes": 0}, "max_bytes=0"),
        ({"max_entry_bytes": 0}, "max_entry_bytes=0"),
    ],
)
def test_bounds_must_be_positive(arguments: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MemoryStore(**arguments)


# --- token buckets -------------------------------------------------------------------------


async def test_a_new_bucket_starts_full_and_gives_a_token() -> None:
    store = MemoryStore()
    result = await store.take("k", 5, 2.0, 100.0)
    assert result == TakeResult(True, 4, 0.0, 0.5)


async def test_an_empty_bucket_says_when_the_next_token_comes() -> None:
    store = MemoryStore()
    for _ in range(3):
        assert (await store.take("k", 3, 0.05, 0.0)).allowed
    refused = await store.take("k", 3, 0.05, 0.0)
    assert refused.allowed is False
    assert refused.remaining == 0
    assert refused.retry_after == pytest.approx(20.0)
    assert refused.reset_after == pytest.approx(60.0)
    later = await store.take("k", 3, 0.05, 5.0)
    assert later.allowed is False
    assert later.retry_after == pytest.approx(15.0)
    assert (await store.take("k", 3, 0.05, 20.0)).allowed is True


async def test_refill_stops_at_capacity() -> None:
    store = MemoryStore()
    await store.take("k", 2, 1.0, 0.0)
    await store.take("k", 2, 1.0, 0.0)
    result = await store.take("k", 2, 1.0, 1000.0)  # 1000 tokens earned, 2 kept
    assert result == TakeResult(True, 1, 0.0, 1.0)
    assert (await store.take("k", 2, 1.0, 1000.0)).allowed
    assert not (await store.take("k", 2, 1.0, 1000.0)).allowed


async def test_a_clock_going_backwards_refills_nothing() -> None:
    store = MemoryStore()
    await store.take("k", 1, 1.0, 50.0)
    result = await store.take("k", 1, 1.0, 10.0)
    assert result.allowed is False
    assert result.retry_after == pytest.approx(1.0)


async def test_buckets_are_independent_per_key() -> None:
    store = MemoryStore()
    assert (await store.take("a", 1, 1.0, 0.0)).allowed
    assert not (await store.take("a", 1, 1.0, 0.0)).allowed
    assert (await store.take("b", 1, 1.0, 0.0)).allowed


# --- LRU bound -----------------------------------------------------------------------------


async def test_the_least_recently_used_key_is_evicted() -> None:
    store = MemoryStore(max_entries=3)
    for key in ("a", "b", "c"):
        await store.take(key, 1, 1.0, 0.0)
    await store.take("a", 1, 1.0, 0.0)  # a is now the most recently used
    await store.take("d", 1, 1.0, 0.0)
    assert store.keys() == ["c", "a", "d"]
    assert store.evictions == 1


async def test_100_000_distinct_keys_keep_the_store_bounded() -> None:
    store = MemoryStore(max_entries=1000)
    gc.collect()
    tracemalloc.start()
    try:
        for index in range(1000):
            await store.take(f"client-{index}", 100, 1.0, 0.0)
        filled, _ = tracemalloc.get_traced_memory()
        for index in range(1000, 100_000):
            await store.take(f"client-{index}", 100, 1.0, float(index))
            assert len(store) <= 1000
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(store) == 1000
    assert store.evictions == 99_000
    assert store.keys()[0] == "client-99000"  # only the most recent 1000 remain
    assert "client-0" not in store
    # 99 000 more keys went through; memory held did not grow with them (a leak of even
    # 50 bytes per evicted key would add ~5 MB)
    assert after - filled < 200_000


async def test_byte_bound_evicts_until_it_holds() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=100, max_bytes=100, clock=clock)
    assert await store.set("a", b"x" * 39, 10.0)  # 40 bytes
    assert await store.set("b", b"x" * 39, 10.0)  # 80 bytes
    assert await store.set("c", b"x" * 39, 10.0)  # 120 > 100: "a" goes
    assert store.keys() == ["b", "c"]
    assert store.size_bytes == 80


async def test_buckets_count_towards_the_byte_bound() -> None:
    store = MemoryStore(max_bytes=1000)
    await store.take("key", 1, 1.0, 0.0)
    assert store.size_bytes == 3 + BUCKET_BYTES


# --- values with a TTL ---------------------------------------------------------------------


async def test_values_expire_lazily_after_their_ttl() -> None:
    clock = FakeClock(1000.0)
    store = MemoryStore(clock=clock)
    assert await store.set("k", b"value", 30.0)
    clock.advance(29.9)
    assert await store.get("k") == b"value"
    clock.advance(0.1)
    assert "k" in store  # nothing runs in the background...
    assert await store.get("k") is None  # ...the read drops it
    assert "k" not in store
    assert store.size_bytes == 0


async def test_a_value_over_the_entry_cap_is_refused_and_replaces_nothing() -> None:
    store = MemoryStore(max_entry_bytes=10)
    assert await store.set("k", b"12345", 60.0)
    assert await store.set("k", b"1234567890", 60.0) is False  # 1 + 10 bytes > 10
    assert await store.get("k") is None
    assert len(store) == 0


async def test_a_zero_ttl_stores_nothing() -> None:
    store = MemoryStore()
    assert await store.set("k", b"v", 0.0) is False
    assert await store.get("k") is None


async def test_reading_a_value_makes_it_recently_used() -> None:
    store = MemoryStore(max_entries=2)
    await store.set("a", b"1", 60.0)
    await store.set("b", b"2", 60.0)
    assert await store.get("a") == b"1"
    await store.set("c", b"3", 60.0)
    assert store.keys() == ["a", "c"]


async def test_delete_reports_whether_the_key_was_there() -> None:
    store = MemoryStore()
    await store.set("k", b"v", 60.0)
    assert await store.delete("k") is True
    assert await store.delete("k") is False
    assert store.size_bytes == 0


async def test_a_bucket_and_a_value_under_one_key_do_not_mix() -> None:
    store = MemoryStore()
    await store.set("k", b"v", 60.0)
    assert (await store.take("k", 1, 1.0, 0.0)).allowed  # the value gives way
    assert await store.get("k") is None  # a bucket is not a value
    store.clear()
    assert len(store) == 0
    assert store.size_bytes == 0
