"""The bounded in-memory store: one LRU dict, lazy TTL, no timers.

Everything lives in one :class:`collections.OrderedDict`; every access moves its key to
the end and every insertion evicts from the front until the entry and byte bounds hold,
so memory stays bounded whatever the clients send (100 000 distinct keys leave at most
``max_entries``; see ``tests/unit/stores/test_memory.py``). Expired values are dropped
when read or evicted; nothing runs in the background.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from nessen.stores.base import TakeResult

BUCKET_BYTES = 48
"""Bytes a token bucket counts towards ``max_bytes`` besides its key (two floats and a list)."""

_EPSILON = 1e-9
"""Tolerance when comparing token counts, so float rounding in ``tokens + elapsed * rate``
cannot refuse a token that ``Retry-After`` promised; it never admits more than ``1e-9``
tokens beyond the bucket's bound in total (tokens never go below ``-1e-9``)."""


class _Value:
    """A stored value: bytes, absolute expiry on the store's clock, and counted size."""

    __slots__ = ("expires", "size", "value")

    def __init__(self, value: bytes, expires: float, size: int) -> None:
        self.value = value
        self.expires = expires
        self.size = size


class _Bucket:
    """A token bucket's state: tokens left (float) and the ``now`` of its last use."""

    __slots__ = ("size", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float, size: int) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.size = size


class MemoryStore:
    """A bounded, per-process :class:`~nessen.stores.base.Store`: LRU plus lazy TTL.

    Token buckets and cached values share one LRU order and the same bounds; give the rate
    limiter and the cache a store each (as :func:`nessen.middleware.default_stack` does)
    so that cached pages cannot evict buckets.

    Args:
        max_entries: Most keys held (buckets and values together), >= 1. Past it the least
            recently used key is evicted.
        max_bytes: Most bytes held, counted as ``len(key) + len(value)`` for values and
            ``len(key) + BUCKET_BYTES`` for buckets; past it the least recently used keys
            are evicted.
        max_entry_bytes: Largest single value accepted by :meth:`set`
            (``len(key) + len(value)``); ``None`` means ``max_bytes``.
        clock: Seconds on a monotonic clock, for TTLs (tests pass a fake one).

    Raises:
        ValueError: A bound is not positive.
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        *,
        max_entry_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries={max_entries}: must be >= 1")
        if max_bytes < 1:
            raise ValueError(f"max_bytes={max_bytes}: must be >= 1 byte")
        if max_entry_bytes is not None and max_entry_bytes < 1:
            raise ValueError(f"max_entry_bytes={max_entry_bytes}: must be >= 1 byte")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_bytes, max_entry_bytes or max_bytes)
        self._clock = clock
        self._data: OrderedDict[str, _Value | _Bucket] = OrderedDict()
        self._bytes = 0
        self.evictions = 0
        """Keys evicted to keep the bounds so far (expired values not included)."""

    def __len__(self) -> int:
        """Return the number of keys held (expired values not yet dropped included)."""
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        """Bytes held, counted as described in the class docstring."""
        return self._bytes

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is held (without touching its LRU position or checking expiry)."""
        return key in self._data

    def keys(self) -> list[str]:
        """Return the keys from least to most recently used (for tests and debugging)."""
        return list(self._data)

    def clear(self) -> None:
        """Drop everything."""
        self._data.clear()
        self._bytes = 0

    async def take(
        self, key: str, capacity: float, refill_per_second: float, now: float
    ) -> TakeResult:
        """Take one token from bucket ``key`` (see :meth:`Store.take` and :meth:`take_now`)."""
        return self.take_now(key, capacity, refill_per_second, now)

    def take_now(
        self, key: str, capacity: float, refill_per_second: float, now: float
    ) -> TakeResult:
        """Take one token from bucket ``key``, without a coroutine (it never waits).

        :meth:`take` for callers that know the store is in memory: the rate-limit
        middleware calls this directly, sparing a coroutine per request.

        Args:
            key: Bucket name.
            capacity: Burst size in tokens, > 0.
            refill_per_second: Tokens added per second, > 0.
            now: The caller's clock in seconds; a value earlier than the bucket's last use
                counts as no time elapsed.

        Returns:
            ``TakeResult(allowed, remaining, retry_after, reset_after)``, the last two in
            seconds (floats; callers round up for ``Retry-After``).
        """
        data = self._data
        bucket = data.get(key)
        if bucket is None or type(bucket) is not _Bucket:
            if bucket is not None:  # a value under the same key: buckets win
                self._drop(key)
            tokens = float(capacity)
            bucket = _Bucket(tokens, now, len(key) + BUCKET_BYTES)
            data[key] = bucket
            self._bytes += bucket.size
            if len(data) > self.max_entries or self._bytes > self.max_bytes:
                self._evict()
        else:
            data.move_to_end(key)
            elapsed = now - bucket.stamp
            tokens = bucket.tokens
            if elapsed > 0.0:
                tokens += elapsed * refill_per_second
                if tokens > capacity:
                    tokens = float(capacity)
        bucket.stamp = now if now > bucket.stamp else bucket.stamp
        if tokens + _EPSILON >= 1.0:
            tokens -= 1.0
            bucket.tokens = tokens
            remaining = math.floor(tokens + _EPSILON) if tokens > 0.0 else 0
            return TakeResult(True, remaining, 0.0, (capacity - tokens) / refill_per_second)
        bucket.tokens = tokens
        return TakeResult(
            False,
            0,
            (1.0 - tokens) / refill_per_second,
            (capacity - tokens) / refill_per_second,
        )

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key``, or ``None`` when absent, expired or a bucket.

        A hit becomes the most recently used key; an expired value is dropped here.
        """
        entry = self._data.get(key)
        if entry is None or type(entry) is not _Value:
            return None
        if entry.expires <= self._clock():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return entry.value

    async def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` under ``key`` for ``ttl`` seconds, evicting LRU keys to fit.

        Returns:
            ``False`` (and nothing stored, any old value removed) when ``ttl <= 0`` or
            ``len(key) + len(value)`` exceeds ``max_entry_bytes``.
        """
        size = len(key) + len(value)
        if key in self._data:
            self._drop(key)
        if ttl <= 0 or size > self.max_entry_bytes:
            return False
        self._data[key] = _Value(value, self._clock() + ttl, size)
        self._bytes += size
        if len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            self._evict()
        return True

    async def delete(self, key: str) -> bool:
        """Remove ``key`` (value or bucket); return whether it was present."""
        if key not in self._data:
            return False
        self._drop(key)
        return True

    def _drop(self, key: str) -> None:
        entry = self._data.pop(key)
        self._bytes -= entry.size

    def _evict(self) -> None:
        """Pop least recently used keys until both bounds hold again."""
        data = self._data
        while len(data) > self.max_entries or self._bytes > self.max_bytes:
            _, entry = data.popitem(last=False)
            self._bytes -= entry.size
            self.evictions += 1
