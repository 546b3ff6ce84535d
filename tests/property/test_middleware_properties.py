"""Properties of the rate limiter's token bucket and of content-coding negotiation."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import given
from hypothesis import strategies as st

from nessen.middleware.compression import AVAILABLE, negotiate, parse_accept_encoding
from nessen.middleware.rate_limit import rate_limit_middleware
from nessen.stores import MemoryStore
from tests.unit.middleware.helpers import FakeClock, make_request, run

T = TypeVar("T")


def complete(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (MemoryStore calls) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise AssertionError("the coroutine suspended")


@given(
    capacity=st.integers(min_value=1, max_value=20),
    refill=st.floats(min_value=0.01, max_value=10.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), max_size=50),
)
def test_bucket_never_admits_more_than_burst_plus_refill(
    capacity: int, refill: float, gaps: list[float]
) -> None:
    store = MemoryStore()
    now = 0.0
    admitted = 0
    for gap in gaps:
        now += gap
        burst = 0
        while complete(store.take("k", capacity, refill, now)).allowed:
            burst += 1
            assert burst <= capacity  # capacity bounds any burst
        admitted += burst
    assert admitted <= capacity + refill * now + 1e-6  # the refill rate bounds the long run


@given(
    capacity=st.integers(min_value=1, max_value=20),
    refill=st.floats(min_value=0.01, max_value=10.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=30),
)
def test_a_refused_take_comes_good_after_retry_after(
    capacity: int, refill: float, gaps: list[float]
) -> None:
    store = MemoryStore()
    now = 0.0
    for index, gap in enumerate(gaps):
        now += gap
        while (result := complete(store.take("k", capacity, refill, now))).allowed:
            pass
        assert result.retry_after > 0.0
        assert result.retry_after <= 1.0 / refill + 1e-9
        assert complete(store.take(f"other-{index}", capacity, refill, now)).allowed
        # waiting exactly the announced time is enough
        assert complete(store.take("k", capacity, refill, now + result.retry_after)).allowed
        now += result.retry_after


@given(gaps=st.lists(st.integers(min_value=0, max_value=30), max_size=40))
def test_the_middleware_admits_within_the_bucket_bound(gaps: list[int]) -> None:
    clock = FakeClock()
    limiter = rate_limit_middleware(5, 10.0, clock=clock)  # 0.5 tokens per second
    admitted = 0

    async def scenario() -> None:
        nonlocal admitted
        for gap in gaps:
            clock.advance(gap)
            while (await run(limiter, make_request())).status == 200:
                admitted += 1

    asyncio.run(scenario())
    assert admitted <= 5 + 0.5 * clock.now + 1e-9


CODINGS = ["br", "gzip", "zstd", "identity", "*", "deflate", "x-gzip", "compress"]
QVALUES = st.sampled_from(["", ";q=0", ";q=0.0", ";q=0.5", ";q=1", ";q=0.001", ";q=1.0", ";Q=0"])


@given(
    st.lists(st.tuples(st.sampled_from(CODINGS), QVALUES), max_size=8),
    st.permutations(list(AVAILABLE)),
)
def test_a_q0_coding_is_never_chosen(elements: list[tuple[str, str]], offered: list[str]) -> None:
    field = ", ".join(coding + q for coding, q in elements)
    weights = parse_accept_encoding(field)
    star = weights.get("*")

    def weight(coding: str) -> float | None:
        if coding in weights:
            return weights[coding]
        return star

    chosen = negotiate(field, offered)
    if chosen is None:  # nothing acceptable: identity refused and every coding too
        assert weight("identity") == 0.0
        assert all(not weight(c) for c in offered)
    elif chosen == "identity":
        assert weight("identity") != 0.0
        best = max((weight(c) or 0.0) for c in offered)
        identity = weight("identity")
        assert best == 0.0 or (identity is not None and identity > best)
    else:
        chosen_weight = weight(chosen)
        assert chosen_weight is not None
        assert chosen_weight > 0.0  # q=0 means "not acceptable"
        assert all((weight(c) or 0.0) <= chosen_weight for c in offered)
