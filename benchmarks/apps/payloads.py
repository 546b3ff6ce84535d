"""The data every benchmark app serves, built the same way for each."""

from __future__ import annotations

import time
from typing import Any

ITEMS: list[dict[str, Any]] = [
    {
        "id": i,
        "name": f"user {i}",
        "email": f"user{i}@example.com",
        "active": i % 2 == 0,
        "roles": ["reader", "writer"] if i % 3 else ["reader"],
        "score": i * 1.5,
    }
    for i in range(148)
]
"""About 16 KB as JSON (checked by ``benchmarks/run.py`` at start)."""

_counter = [0]


def data() -> dict[str, Any]:
    """A fresh ~200-byte document per call: a counter and a timestamp make it differ."""
    _counter[0] += 1
    return {
        "id": _counter[0],
        "service": "inventory",
        "status": "ok",
        "items": [{"sku": "A-100", "qty": 3}, {"sku": "B-200", "qty": 1}],
        "region": "eu-west-1",
        "cached": False,
        "generated_at": time.time(),
        "tags": ["bench", "json", "api"],
    }


def user(user_id: str) -> dict[str, str]:
    """The ``/users/{id}`` document."""
    return {"id": user_id, "name": f"user {user_id}"}
