"""Key/value state for the rate limiter and the response cache.

:class:`Store` is the interface middleware uses; :class:`MemoryStore` is the bounded
per-process implementation (the default). :class:`nessen.stores.redis.RedisStore`, shared
across workers and replicas, implements the same protocol; it is imported from its own
module because it needs the optional ``redis`` package (``pip install nessen-runtime[redis]``).
"""

from nessen.stores.base import Store, StoreError, StoreUnavailable, TakeResult
from nessen.stores.memory import MemoryStore

__all__ = ["MemoryStore", "Store", "StoreError", "StoreUnavailable", "TakeResult"]
