from __future__ import annotations

import random

from nessen.observability.stats import WINDOW, RequestStats


def test_nothing_recorded() -> None:
    stats = RequestStats()
    assert stats.total == 0
    assert stats.percentiles_ms(0.5, 0.95, 0.99) == [0.0, 0.0, 0.0]
    assert stats.average_bytes == 0.0
    assert stats.rejected == {}


def test_nearest_rank_percentiles_of_1_to_100_ms() -> None:
    stats = RequestStats()
    durations = [ms / 1000 for ms in range(1, 101)]
    random.Random(7).shuffle(durations)  # order of arrival must not matter
    for duration in durations:
        stats.record(duration, 0)
    assert stats.percentiles_ms(0.5, 0.95, 0.99) == [50.0, 95.0, 99.0]
    assert stats.percentiles_ms(1.0) == [100.0]
    assert stats.percentiles_ms(0.001) == [1.0]
    assert stats.total == 100


def test_nearest_rank_rounds_the_rank_up() -> None:
    stats = RequestStats()
    for ms in (10, 20, 30, 40):
        stats.record(ms / 1000, 0)
    # rank = ceil(q * n): 0.5*4 = 2 -> 20 ms; 0.51*4 = 2.04 -> 3 -> 30 ms; 0.95*4 = 3.8 -> 40 ms
    assert stats.percentiles_ms(0.5, 0.51, 0.95) == [20.0, 30.0, 40.0]


def test_single_request() -> None:
    stats = RequestStats()
    stats.record(0.0123456, 10)
    assert stats.percentiles_ms(0.5, 0.99) == [12.346, 12.346]


def test_window_keeps_only_the_last_1024() -> None:
    assert WINDOW == 1024
    stats = RequestStats()
    for ms in range(1, 2049):  # 1..2048 ms; the window holds 1025..2048
        stats.record(ms / 1000, 1)
    assert stats.total == 2048
    assert stats.percentiles_ms(1 / 1024, 0.5, 1.0) == [1025.0, 1536.0, 2048.0]


def test_window_after_one_wrap_plus_a_few() -> None:
    stats = RequestStats()
    for _ in range(WINDOW):
        stats.record(1.0, 0)  # 1000 ms, all to be pushed out but 1021
    for _ in range(3):
        stats.record(0.002, 0)  # 2 ms
    # 1021 requests of 1000 ms and 3 of 2 ms: ranks 1..3 are 2 ms.
    assert stats.percentiles_ms(3 / 1024, 4 / 1024) == [2.0, 1000.0]


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
    assert stats.total == 0  # a rejection alone is not an answered request
