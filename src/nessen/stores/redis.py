"""The Redis store: token buckets and cached values shared by every worker and replica.

Built on redis-py's asyncio client (the optional ``redis`` extra). Each :class:`Store` call
is one round trip: :meth:`RedisStore.take` runs :data:`TAKE_SCRIPT` with ``EVALSHA`` (the
script is sent once per server, with ``EVAL``, when Redis answers ``NOSCRIPT``), and
``get``/``set``/``delete`` are one ``GET``, ``SET ... PX`` or ``DEL``. Redis runs a script
atomically, so concurrent takes from any number of processes on one bucket are serialised
and the limit holds exactly as in one process (``tests/redis/test_redis_store.py``).

**Clock.** The script reads the Redis server's ``TIME``; the ``now`` the rate limiter passes
is ignored. Each process's ``time.monotonic()`` has its own origin, so clocks from two
replicas cannot be compared at all, and even wall clocks differ by the hosts' NTP skew
(a replica 50 ms ahead would refill every bucket it touches early; one behind, late).
One clock, the server's, makes every process see the same bucket. Redis 5 and later
replicate scripts by their effects, which is what allows ``TIME`` in a script that writes.

**Keys.** ``<prefix><key>``: with the defaults ``nessen:rl:<client address>`` for a bucket
(a hash of ``tokens`` and ``stamp``, the server time of its last use in microseconds) and
``nessen:cache:<path>?<sorted query>`` (plus NUL-separated Vary values) for a cached
response (a string).
Every key expires on its own: a bucket when it would be full again (``PEXPIRE``; a missing
bucket is a full one, so nothing is lost), a cached value after its TTL (``SET ... PX``).
Bound Redis's memory as a whole with its ``maxmemory`` and a ``volatile-lru`` policy.

**Failures.** Every call is bounded by ``timeout`` seconds, connecting and waiting for a
pooled connection included, and raises :class:`~nessen.stores.StoreUnavailable` past it
or when Redis is unreachable; it never retries. The first such failure marks the store
unavailable: further calls fail at once without touching the network (so an outage costs
no request more than one ``timeout``), and a background probe sends ``PING`` every
``probe_interval`` seconds until one succeeds, which marks it available again. Listeners
registered with :meth:`RedisStore.on_change` hear both transitions (the runtime turns them
into DEGRADED and back to READY); those registered with :meth:`RedisStore.on_error` hear
every failed call (the runtime counts ``nessen_store_errors_total``).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nessen.stores.base import StoreError, StoreUnavailable, TakeResult

if TYPE_CHECKING:
    from nessen.config import Config

logger = logging.getLogger("nessen.stores.redis")

TAKE_SCRIPT = """
-- Take one token from the bucket KEYS[1]; ARGV: capacity (tokens), refill rate (tokens/s).
-- The bucket is a hash {tokens, stamp}; stamp is the server time of its last use in us.
local capacity = tonumber(ARGV[1])
local per_us = tonumber(ARGV[2]) / 1000000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens = capacity
  stamp = now
elseif now > stamp then
  tokens = math.min(capacity, tokens + (now - stamp) * per_us)
  stamp = now
end
local allowed = 0
if tokens + 1e-9 >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'stamp', string.format('%.17g', stamp))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((capacity - tokens) / per_us / 1000)))
return {allowed, string.format('%.17g', tokens)}
"""
"""The token bucket, as one atomic script: refill by the server time elapsed, take a
token if one is whole (``1e-9`` tolerates float noise, as ``MemoryStore`` does), store the
state, expire the key when the bucket would be full, return ``{allowed, tokens left}``."""

TAKE_SHA = hashlib.sha1(TAKE_SCRIPT.encode()).hexdigest()
"""The script's SHA1, as ``EVALSHA`` names it (Redis computes the same)."""

_EPSILON = 1e-9
_LOG_INTERVAL = 10.0  # seconds between "unavailable" warnings during a flapping outage

ChangeListener = Callable[[bool, str], None]
"""``(available, reason)``: called when the store becomes unavailable or available again."""
ErrorListener = Callable[[str], None]
"""``(operation)``: called for every failed call (``"take"``, ``"get"``, ``"set"``...)."""


class RedisStore:
    """A :class:`~nessen.stores.Store` on Redis, shared by every process that uses the URL.

    Creating one does no I/O: the connection pool is created on first use, in the process
    that uses it (a runtime creates its store when serving starts, after the fork, so every
    worker has its own pool of at most ``pool_size`` connections). :meth:`aclose` closes it.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS) or
            ``unix:///path.sock``.
        prefix: Prepended to every key (``REDIS_KEY_PREFIX``).
        timeout: Seconds each call may take, > 0 (``REDIS_TIMEOUT``).
        pool_size: Connections this process may open, >= 1 (``REDIS_POOL_SIZE``).
        max_entry_bytes: Largest value :meth:`set` stores, ``len(key) + len(value)``
            bytes, >= 1 (1 MiB, the cache's default ``max_entry_bytes``).
        probe_interval: Seconds between ``PING`` probes while unavailable, > 0.

    Raises:
        ValueError: A bound is not positive.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "nessen:",
        timeout: float = 0.05,
        pool_size: int = 16,
        max_entry_bytes: int = 1024 * 1024,
        probe_interval: float = 1.0,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout={timeout!r}: must be > 0 seconds")
        if pool_size < 1:
            raise ValueError(f"pool_size={pool_size!r}: must be >= 1")
        if max_entry_bytes < 1:
            raise ValueError(f"max_entry_bytes={max_entry_bytes!r}: must be >= 1 byte")
        if not probe_interval > 0:
            raise ValueError(f"probe_interval={probe_interval!r}: must be > 0 seconds")
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.pool_size = pool_size
        self.max_entry_bytes = max_entry_bytes
        self.probe_interval = probe_interval
        self._client: Redis | None = None
        self._available = True
        self._down_since = 0.0
        self._last_log = -math.inf
        self._probe: asyncio.Task[None] | None = None
        self._change_listeners: list[ChangeListener] = []
        self._error_listeners: list[ErrorListener] = []
        self.errors = 0
        """Calls that failed so far (as counted by ``nessen_store_errors_total``)."""

    @classmethod
    def from_config(cls, config: Config) -> RedisStore:
        """Build the store a :class:`~nessen.config.Config` describes.

        Uses ``redis_url``, ``redis_key_prefix``, ``redis_timeout`` and ``redis_pool_size``.

        Raises:
            ValueError: ``config.redis_url`` is not set.
        """
        if not config.redis_url:
            raise ValueError("redis_url is not set: set REDIS_URL")
        return cls(
            config.redis_url,
            prefix=config.redis_key_prefix,
            timeout=config.redis_timeout,
            pool_size=config.redis_pool_size,
        )

    # --- state ------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """``False`` from a failed call until a call or probe succeeds again."""
        return self._available

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener(available, reason)`` when availability changes."""
        self._change_listeners.append(listener)

    def on_error(self, listener: ErrorListener) -> None:
        """Call ``listener(operation)`` for every failed call."""
        self._error_listeners.append(listener)

    def _connection(self) -> Redis:
        client = self._client
        if client is None:
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.pool_size,
                timeout=self.timeout,  # waiting for a free pooled connection
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # a retry could only exceed the timeout
            )
            client = self._client = Redis(connection_pool=pool)
        return client

    async def _call(self, operation: str, make: Callable[[Redis], Awaitable[Any]]) -> Any:
        """Run one command under the timeout; count and classify its failure.

        Raises:
            StoreUnavailable: Known to be down, unreachable, or slower than ``timeout``.
            StoreError: Redis refused the command (e.g. ``WRONGTYPE``).
        """
        if not self._available:
            self._count(operation)
            raise StoreUnavailable(
                f"redis unavailable for {time.monotonic() - self._down_since:.1f} s; "
                "waiting for a probe to succeed",
                operation=operation,
            )
        try:
            async with asyncio.timeout(self.timeout):
                return await make(self._connection())
        except ResponseError as exc:
            self._count(operation)
            raise StoreError(f"redis refused {operation}: {exc}", operation=operation) from exc
        except (RedisError, OSError, TimeoutError) as exc:
            self._count(operation)
            reason = _describe(exc, self.timeout)
            self._went_down(reason)
            raise StoreUnavailable(
                f"redis {operation} failed: {reason}", operation=operation
            ) from exc

    def _count(self, operation: str) -> None:
        self.errors += 1
        for listener in self._error_listeners:
            listener(operation)

    def _went_down(self, reason: str) -> None:
        if not self._available:
            return
        self._available = False
        now = time.monotonic()
        self._down_since = now
        if now - self._last_log >= _LOG_INTERVAL:
            self._last_log = now
            logger.warning(
                "redis unavailable (%s): calls fail at once until a PING every %g s succeeds",
                reason,
                self.probe_interval,
                extra={"reason": reason},
            )
        if self._probe is None or self._probe.done():
            # A context of its own: not the request's that saw the outage (its request id
            # would be on every line the probe logs).
            self._probe = asyncio.get_running_loop().create_task(
                self._probe_until_up(), context=contextvars.Context()
            )
        for listener in self._change_listeners:
            listener(False, reason)

    def _came_up(self) -> None:
        if self._available:
            return
        self._available = True
        down_for = time.monotonic() - self._down_since
        logger.info(
            "redis available again after %.1f s", down_for, extra={"down_ms": down_for * 1000}
        )
        for listener in self._change_listeners:
            listener(True, "")

    async def _probe_until_up(self) -> None:
        while not self._available:
            await asyncio.sleep(self.probe_interval)
            await self.ping()

    # --- the Store protocol -------------------------------------------------------------

    async def take(
        self, key: str, capacity: float, refill_per_second: float, now: float
    ) -> TakeResult:
        """Take one token from bucket ``key`` with one ``EVALSHA`` (see :data:`TAKE_SCRIPT`).

        Args:
            key: Bucket name (the prefix is added here).
            capacity: Burst size in tokens, > 0.
            refill_per_second: Tokens added per second, > 0.
            now: Ignored: the script uses the Redis server's clock, shared by all replicas.

        Returns:
            ``TakeResult(allowed, remaining, retry_after, reset_after)``, delays in seconds.

        Raises:
            StoreUnavailable: Redis is down or slower than ``timeout``; nothing was taken
                unless the script ran and only its answer was late.
            StoreError: Redis refused the script (e.g. the key holds another type).
        """
        name = self.prefix + key
        arguments = (repr(float(capacity)), repr(float(refill_per_second)))

        async def run(client: Redis) -> Any:
            try:
                return await client.evalsha(TAKE_SHA, 1, name, *arguments)
            except NoScriptError:  # first use on this server, or after SCRIPT FLUSH
                return await client.eval(TAKE_SCRIPT, 1, name, *arguments)

        allowed, left = await self._call("take", run)
        tokens = float(left)
        reset_after = (capacity - tokens) / refill_per_second
        if allowed:
            remaining = math.floor(tokens + _EPSILON) if tokens > 0.0 else 0
            return TakeResult(True, remaining, 0.0, reset_after)
        return TakeResult(False, 0, (1.0 - tokens) / refill_per_second, reset_after)

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key`` (one ``GET``), or ``None`` when absent or expired.

        Raises:
            StoreUnavailable: Redis is down or slower than ``timeout``.
            StoreError: ``key`` holds a bucket rather than a value.
        """
        name = self.prefix + key
        value: bytes | None = await self._call("get", lambda client: client.get(name))
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` for ``ttl`` seconds (one ``SET ... PX``, rounded up to 1 ms).

        Returns:
            ``False`` when ``ttl <= 0`` or ``len(key) + len(value)`` exceeds
            ``max_entry_bytes``; any old value is then deleted instead.

        Raises:
            StoreUnavailable: Redis is down or slower than ``timeout``.
        """
        name = self.prefix + key
        if ttl <= 0 or len(key) + len(value) > self.max_entry_bytes:
            await self._call("set", lambda client: client.delete(name))
            return False
        milliseconds = max(1, math.ceil(ttl * 1000))
        await self._call("set", lambda client: client.set(name, value, px=milliseconds))
        return True

    async def delete(self, key: str) -> bool:
        """Remove ``key`` (one ``DEL``); return whether it was present.

        Raises:
            StoreUnavailable: Redis is down or slower than ``timeout``.
        """
        name = self.prefix + key
        removed: int = await self._call("delete", lambda client: client.delete(name))
        return removed > 0

    # --- health and lifecycle -----------------------------------------------------------

    async def ping(self) -> bool:
        """Send ``PING`` within ``timeout``, even while unavailable; never raises.

        A success marks the store available (and tells the listeners), a failure marks it
        unavailable. Used as the background probe, and as the runtime's readiness check
        when the rate limiter fails closed.

        Returns:
            Whether Redis answered in time.
        """
        try:
            async with asyncio.timeout(self.timeout):
                await self._connection().ping()
        except (RedisError, OSError, TimeoutError) as exc:
            self._count("ping")
            self._went_down(_describe(exc, self.timeout))
            return False
        self._came_up()
        return True

    async def load_script(self) -> bool:
        """Connect and load :data:`TAKE_SCRIPT` (``SCRIPT LOAD``); never raises.

        So the first request needs no ``EVAL``; a runtime calls it once serving starts.

        Returns:
            Whether Redis answered in time (a failure marks the store unavailable).
        """
        try:
            async with asyncio.timeout(self.timeout):
                await self._connection().script_load(TAKE_SCRIPT)
        except (RedisError, OSError, TimeoutError) as exc:
            self._count("ping")
            self._went_down(_describe(exc, self.timeout))
            return False
        self._came_up()
        return True

    async def aclose(self) -> None:
        """Stop the probe and close every pooled connection; the store may be used again."""
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose(close_connection_pool=True)


def _describe(exc: BaseException, timeout: float) -> str:
    """One line naming the failure, e.g. ``timed out after 50 ms``."""
    if isinstance(exc, TimeoutError | RedisTimeoutError):  # ours, or redis-py's socket timeout
        return f"timed out after {timeout * 1000:g} ms"
    return f"{type(exc).__name__}: {exc}"[:200]
