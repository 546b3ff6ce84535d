"""Key/value state for the rate limiter and the response cache.

:class:`Store` is the interface middleware uses; :class:`MemoryStore` is the bounded
per-process implementation (the default). A Redis store, shared across workers and
replicas, implements the same protocol.
"""

from nessen.stores.base import Store, TakeResult
from nessen.stores.memory import MemoryStore

__all__ = ["MemoryStore", "Store", "TakeResult"]
