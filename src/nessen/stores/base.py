"""The store interface the rate limiter and the response cache talk to.

Each call is one operation a shared store can perform atomically in one round trip (a
Redis store will run :meth:`Store.take` as one Lua script and ``get``/``set``/``delete`` as
single commands), so limits and cached entries hold across workers and replicas exactly as
they do in one process. Middleware depends on this protocol only, never on a concrete store.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from nessen.errors import NessenError


class StoreError(NessenError):
    """A store call failed: the store is unreachable, too slow, or refused the command.

    Middleware catches it per request: the rate limiter fails open (or answers 503 when set
    to fail closed), the cache serves uncached.

    Attributes:
        operation: The store method that failed: ``"take"``, ``"get"``, ``"set"``,
            ``"delete"`` or ``"ping"``.
    """

    def __init__(self, message: str, *, operation: str) -> None:
        super().__init__(message)
        self.operation = operation


class StoreUnavailable(StoreError):
    """The store could not be reached within its timeout, or is known to be down."""


class TakeResult(NamedTuple):
    """The outcome of taking one token from a bucket.

    Attributes:
        allowed: Whether a token was taken (the request may proceed).
        remaining: Whole tokens left in the bucket after this call.
        retry_after: Seconds until one token is available; ``0.0`` when ``allowed``.
        reset_after: Seconds until the bucket is full again.
    """

    allowed: bool
    remaining: int
    retry_after: float
    reset_after: float


@runtime_checkable
class Store(Protocol):
    """Key/value state for rate limiting and caching, shaped for one round trip per call.

    Keys are ``str``; cached values are ``bytes`` (a shared store keeps bytes), so callers
    serialise what they store. Every method is ``async`` even when the implementation is
    in-process, so a networked store is a drop-in replacement.
    """

    async def take(
        self, key: str, capacity: float, refill_per_second: float, now: float
    ) -> TakeResult:
        """Take one token from the bucket ``key``, creating it full if unknown.

        A token bucket (continuous refill): the bucket holds at most ``capacity`` tokens
        and gains ``refill_per_second`` per second of ``now`` elapsed since its last use.

        Args:
            key: Bucket name, e.g. ``"rl:203.0.113.7"``.
            capacity: Burst size in requests (tokens when full), > 0.
            refill_per_second: Tokens added per second, > 0.
            now: The caller's clock in seconds (monotonic); buckets compare it with the
                ``now`` of their previous call, so one bucket needs one clock.

        Returns:
            Whether a token was taken, what is left and when to come back.
        """
        ...

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or ``None`` if absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` under ``key`` for ``ttl`` seconds (> 0).

        Returns:
            ``False`` when the store refused the value (larger than its per-entry cap);
            the previous value, if any, is removed in that case too.
        """
        ...

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was present."""
        ...
