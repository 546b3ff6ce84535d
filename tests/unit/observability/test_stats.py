from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nessen.observability.stats import (
    BUCKETS,
    GROWTH,
    INTERVALS,
    WINDOW_SECONDS,
    LatencyWindow,
    RequestStats,
    bucket_index,
    merged_percentiles,
)

RELATIVE = 0.02  # a bucket's width (GROWTH - 1): the most a reported percentile is off


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def nearest_rank(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def stats_at(clock: FakeClock) -> RequestStats:
    return RequestStats(LatencyWindow(clock=clock))


def test_nothing_recorded() -> None:
    stats = RequestStats()
    assert stats.total == 0
    assert stats.percentiles_ms(0.5, 0.95, 0.99) == [0.0, 0.0, 0.0]
    assert stats.average_bytes == 0.0
    assert stats.rejected == {}


def test_the_defaults_are_a_minute_in_six_intervals_of_2_percent_buckets() -> None:
    assert (WINDOW_SECONDS, INTERVALS, GROWTH) == (60.0, 6, 1.02)
    assert BUCKETS == 1047  # 1 µs .. 1000 s


def test_bucket_bounds_are_powers_of_the_growth_factor_in_microseconds() -> None:
    assert bucket_index(0.0) == 0
    assert bucket_index(0.000_000_5) == 0  # under 1 µs
    assert bucket_index(0.000_001_01) == 0  # [1, 1.02) µs
    assert bucket_index(0.000_001_03) == 1  # [1.02, 1.0404) µs
    assert bucket_index(0.001) == int(math.log(1000) / math.log(1.02))  # 348
    assert bucket_index(5000.0) == BUCKETS - 1  # beyond 1000 s: the last bucket


def test_nearest_rank_percentiles_of_1_to_100_ms_are_within_2_percent() -> None:
    stats = RequestStats()
    durations = [ms / 1000 for ms in range(1, 101)]
    random.Random(7).shuffle(durations)  # order of arrival must not matter
    for duration in durations:
        stats.record(duration, 0)
    p50, p95, p99, p100, p0 = stats.percentiles_ms(0.5, 0.95, 0.99, 1.0, 0.001)
    assert p50 == pytest.approx(50.0, rel=RELATIVE)
    assert p95 == pytest.approx(95.0, rel=RELATIVE)
    assert p99 == pytest.approx(99.0, rel=RELATIVE)
    assert p100 == pytest.approx(100.0, rel=RELATIVE)
    assert p0 == 1.0  # alone in its bucket: exact
    assert stats.total == 100


def test_nearest_rank_rounds_the_rank_up() -> None:
    stats = RequestStats()
    for ms in (10, 20, 30, 40):
        stats.record(ms / 1000, 0)
    # rank = ceil(q * n): 0.5*4 = 2 -> 20 ms; 0.51*4 = 2.04 -> 3 -> 30 ms; 0.95*4 = 3.8 -> 40 ms.
    # Each sample is alone in its bucket, so the bucket mean is the sample itself.
    assert stats.percentiles_ms(0.5, 0.51, 0.95) == [20.0, 30.0, 40.0]


def test_single_request_is_exact() -> None:
    stats = RequestStats()
    stats.record(0.0123456, 10)
    assert stats.percentiles_ms(0.5, 0.99) == [12.346, 12.346]


def test_equal_durations_are_exact() -> None:
    stats = RequestStats()
    for _ in range(500):
        stats.record(0.0042, 0)
    stats.record(2.5, 0)
    assert stats.percentiles_ms(0.5, 0.99, 1.0) == [4.2, 4.2, 2500.0]


def test_percentiles_of_10000_log_normal_samples_are_within_2_percent_of_nearest_rank() -> None:
    rng = random.Random(20261129)
    samples = [rng.lognormvariate(math.log(0.020), 1.0) for _ in range(10_000)]  # median 20 ms
    stats = RequestStats()
    for duration in samples:
        stats.record(duration, 0)
    quantiles = (0.5, 0.9, 0.95, 0.99, 0.999)
    for q, got in zip(quantiles, stats.latency.percentiles(*quantiles), strict=True):
        exact = nearest_rank(samples, q)
        assert abs(got - exact) <= RELATIVE * exact, (q, got, exact)


@given(
    samples=st.lists(
        st.floats(min_value=1e-6, max_value=1000.0, allow_nan=False), min_size=1, max_size=300
    ),
    q=st.floats(min_value=0.001, max_value=1.0),
)
def test_any_percentile_is_within_2_percent_of_nearest_rank(samples: list[float], q: float) -> None:
    window = LatencyWindow(clock=FakeClock())
    for duration in samples:
        window.record(duration)
    [got] = window.percentiles(q)
    exact = nearest_rank(samples, q)
    assert abs(got - exact) <= RELATIVE * exact * (1 + 1e-9), (got, exact)


def test_a_sample_stays_at_least_60_s_and_leaves_before_70_s() -> None:
    clock = FakeClock(5.0)  # in the interval [0, 10)
    stats = stats_at(clock)
    stats.record(0.100, 0)
    clock.now = 69.999  # the interval [60, 70): six intervals later, still in the window
    assert stats.percentiles_ms(0.5) == [100.0]
    assert stats.latency.count() == 1
    clock.now = 70.0  # seven intervals later: gone
    assert stats.percentiles_ms(0.5) == [0.0]
    assert stats.latency.count() == 0
    assert stats.total == 1  # counts are for the whole life of the process


def test_percentiles_merge_the_intervals_in_the_window() -> None:
    clock = FakeClock(0.0)
    stats = stats_at(clock)
    for ms, at in ((10, 0.0), (20, 15.0), (30, 25.0), (40, 35.0)):
        clock.now = at
        stats.record(ms / 1000, 0)
    clock.now = 65.0  # [60, 70): the interval [0, 10) with 10 ms has left
    assert stats.percentiles_ms(1 / 3, 2 / 3, 1.0) == [20.0, 30.0, 40.0]


def test_a_slot_reused_after_a_full_turn_starts_empty() -> None:
    clock = FakeClock(1.0)
    stats = stats_at(clock)
    stats.record(1.0, 0)  # interval 0, slot 0
    clock.now = 71.0  # interval 7 reuses slot 0 (seven slots)
    stats.record(0.002, 0)
    assert stats.latency.count() == 1
    assert stats.percentiles_ms(0.5, 1.0) == [2.0, 2.0]


def test_a_long_idle_gap_empties_the_window() -> None:
    clock = FakeClock(0.0)
    stats = stats_at(clock)
    for _ in range(10):
        stats.record(0.5, 0)
    clock.now = 3600.0
    stats.record(0.001, 0)
    assert stats.percentiles_ms(0.0001, 1.0) == [1.0, 1.0]


def test_window_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        LatencyWindow(window=0)
    with pytest.raises(ValueError, match="must be positive"):
        LatencyWindow(intervals=0)


def test_average_bytes() -> None:
    stats = RequestStats()
    stats.record(0.001, 100)
    stats.record(0.001, 300)
    stats.record(0.001, 0)
    assert stats.content_bytes == 400
    assert stats.average_bytes == 400 / 3


def test_rejected_counts_by_reason() -> None:
    stats = RequestStats()
    stats.reject("header_too_large")
    stats.reject("header_too_large")
    stats.reject("request_timeout")
    assert stats.rejected == {"header_too_large": 2, "request_timeout": 1}
    assert stats.total == 0  # a refusal that sent nothing is not an answered request


def test_a_refusal_that_sent_a_status_counts_as_answered_but_has_no_latency() -> None:
    stats = RequestStats()
    stats.reject("uri_too_long", answered=True)
    assert stats.total == 1
    assert stats.rejected == {"uri_too_long": 1}
    assert stats.latency.count() == 0
    assert stats.percentiles_ms(0.5) == [0.0]


def test_a_refresh_interval_reuses_an_answer_until_it_has_passed() -> None:
    window_clock = FakeClock()
    memo_clock = FakeClock()
    stats = RequestStats(LatencyWindow(clock=window_clock), refresh=0.25, clock=memo_clock)
    stats.record(0.010, 1)
    assert stats.percentiles_ms(0.5) == [10.0]
    stats.record(0.040, 1)
    stats.record(0.040, 1)
    memo_clock.now = 0.2
    assert stats.percentiles_ms(0.5) == [10.0]  # reused: asked again within 250 ms
    memo_clock.now = 0.3
    assert stats.percentiles_ms(0.5) == [40.0]  # 250 ms passed: recomputed
    assert stats.percentiles_ms(0.99) == [40.0]  # other quantiles: computed at once


@given(
    st.lists(st.tuples(st.floats(0.0, 99.9), st.floats(0.0001, 5.0)), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.9, 0.99, 1.0]),
)
def test_percentiles_across_intervals_match_the_samples_still_in_the_window(
    samples: list[tuple[float, float]], q: float
) -> None:
    clock = FakeClock()
    window = LatencyWindow(window=60.0, intervals=6, clock=clock)
    for at, duration in sorted(samples):
        clock.now = at
        window.record(duration)
        window.percentiles(q)  # queried between records too: the merged cache must keep up
    clock.now = 100.0  # epoch 10: epochs 4..10 are in the window, i.e. samples at t >= 40
    kept = [duration for at, duration in samples if at >= 40.0]
    [got] = window.percentiles(q)
    if not kept:
        assert got == 0.0
    else:
        expected = nearest_rank(kept, q)
        assert math.isclose(got, expected, rel_tol=0.021)


def test_the_summary_is_none_when_empty_and_the_max_is_exact() -> None:
    clock = FakeClock(0.0)
    stats = RequestStats(LatencyWindow(clock=clock))
    assert stats.latency_summary_ms(0.5, 0.99) == ([None, None], None)
    for seconds in (0.010, 0.020, 0.1234567):
        stats.record(seconds, 0)
    (p50, p99), longest = stats.latency_summary_ms(0.5, 0.99)
    assert longest == 123.457  # exact, not a bucket's mean
    assert p50 is not None
    assert abs(p50 - 20.0) <= 0.4
    assert p99 is not None
    assert abs(p99 - 123.457) <= 2.5  # its bucket's mean, within 2 %
    clock.now += 75.0  # the whole window later
    assert stats.latency_summary_ms(0.5) == ([None], None)
    stats.record(0.005, 0)
    assert stats.latency_summary_ms(0.5)[1] == 5.0


def test_the_summary_is_reused_for_the_refresh_interval() -> None:
    clock = FakeClock(0.0)
    stats = RequestStats(LatencyWindow(clock=clock), refresh=0.25, clock=clock)
    stats.record(0.010, 0)
    assert stats.latency_summary_ms(0.5)[1] == 10.0
    stats.record(0.050, 0)
    assert stats.latency_summary_ms(0.5)[1] == 10.0  # within 0.25 s: the same answer
    clock.now += 0.3
    assert stats.latency_summary_ms(0.5)[1] == 50.0


def test_errors_are_counted_by_class_handler_answers_and_refusals_alike() -> None:
    stats = RequestStats()
    for status in (200, 201, 304, 404, 429, 500, 503):
        stats.record(0.001, 0, status)
    stats.reject("uri_too_long", answered=True, status=414)
    stats.reject("request_timeout", answered=True, status=503)
    stats.reject("headers_timeout")  # closed without a status: not an answer
    assert (stats.client_errors, stats.server_errors) == (3, 3)
    assert stats.total == 9


@given(
    first=st.lists(st.floats(min_value=1e-6, max_value=100.0), max_size=200),
    second=st.lists(st.floats(min_value=1e-6, max_value=100.0), max_size=200),
    q=st.floats(min_value=0.001, max_value=1.0),
)
def test_merged_histograms_give_the_nearest_rank_of_all_samples_within_2_percent(
    first: list[float], second: list[float], q: float
) -> None:
    windows = [LatencyWindow(clock=FakeClock()), LatencyWindow(clock=FakeClock())]
    for window, samples in zip(windows, (first, second), strict=True):
        for duration in samples:
            window.record(duration)
    merged = merged_percentiles([window.buckets() for window in windows], q)
    if not first + second:
        assert merged is None
        return
    assert merged is not None
    exact = nearest_rank(first + second, q)  # as if one process had served them all
    assert abs(merged[0] - exact) <= RELATIVE * exact * (1 + 1e-9), (merged, exact)


def test_buckets_hold_only_the_window() -> None:
    clock = FakeClock(5.0)
    window = LatencyWindow(clock=clock)
    window.record(0.010)
    window.record(0.010)
    [(index, count, seconds)] = window.buckets()
    assert (index, count) == (bucket_index(0.010), 2)
    assert seconds == pytest.approx(0.020)
    clock.now = 70.0  # the interval has left the window
    assert window.buckets() == []
    assert merged_percentiles([window.buckets(), []], 0.5) is None
