from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from nessen.observability import metrics as metrics_module
from nessen.observability.logs import BufferedStreamHandler
from nessen.observability.metrics import (
    DURATION_BUCKETS,
    OVERFLOW_ROUTE,
    SIZE_BUCKETS,
    PrometheusMetrics,
)
from nessen.observability.sinks import TelemetrySink

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: PrometheusMetrics, *, prefix: str = "") -> Samples:
    """Every sample of the exposition, keyed by (name, sorted labels)."""
    text = metrics.exposition()[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(prefix)
    }


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


def test_responses_are_counted_by_method_route_and_status() -> None:
    metrics = PrometheusMetrics()
    for _ in range(3):
        metrics.request_finished("GET", "/users/{id}", 200, 0.004, 120)
    metrics.request_finished("GET", "/users/{id}", 500, 0.2, 40)
    metrics.request_finished("GET", None, 404, 0.0001, 20)
    found = samples(metrics, prefix="http_requests_total")
    assert found == {
        ("http_requests_total", labels(method="GET", route="/users/{id}", status="200")): 3.0,
        ("http_requests_total", labels(method="GET", route="/users/{id}", status="500")): 1.0,
        ("http_requests_total", labels(method="GET", route="unmatched", status="404")): 1.0,
    }


def test_batched_histograms_equal_prometheus_clients_own_observe() -> None:
    """The flush writes buckets and sums through prometheus-client internals: check them."""
    rng = random.Random(5)
    durations = [
        rng.choice((0.0, 0.001, 0.01, 10.0, 11.0)) or rng.expovariate(20) for _ in range(500)
    ]
    sizes = [rng.choice((0, 128, 129, 10**7)) or rng.randrange(1, 10**6) for _ in range(500)]
    metrics = PrometheusMetrics()
    reference = CollectorRegistry()
    duration_ref = Histogram("d", "d", buckets=DURATION_BUCKETS, registry=reference)
    size_ref = Histogram("s", "s", buckets=SIZE_BUCKETS, registry=reference)
    for index, (duration, size) in enumerate(zip(durations, sizes, strict=True)):
        metrics.request_finished("POST", "/upload", 201, duration, size)
        duration_ref.observe(duration)
        size_ref.observe(size)
        if index == 250:
            metrics.flush()  # two flushes must add up, not overwrite
    got = samples(metrics)
    for sample in next(iter(reference.collect())).samples + list(reference.collect())[1].samples:
        if sample.name.endswith("_created"):
            continue
        name = sample.name.replace("d_", "http_request_duration_seconds_", 1)
        if sample.name.startswith("s_"):
            name = sample.name.replace("s_", "http_response_size_bytes_", 1)
        key = (name, labels(method="POST", route="/upload", **sample.labels))
        assert got[key] == pytest.approx(sample.value, rel=1e-12), key


def test_methods_outside_the_allowed_set_share_one_label() -> None:
    metrics = PrometheusMetrics(allowed_methods=("GET", "POST"))
    for method in ("PROPFIND", "BREW", "get", "X" * 100):
        metrics.request_finished(method, "/a", 200, 0.001, 0)
    metrics.request_rejected("method_not_allowed", 501, "MKCOL", None)
    found = samples(metrics, prefix="http_requests_total")
    assert found == {
        ("http_requests_total", labels(method="OTHER", route="/a", status="200")): 4.0,
        ("http_requests_total", labels(method="OTHER", route="unmatched", status="501")): 1.0,
    }


def test_refusals_count_by_reason_and_as_responses_when_a_status_was_sent() -> None:
    metrics = PrometheusMetrics()
    metrics.request_rejected("uri_too_long", 414, "GET", None)
    metrics.request_rejected("uri_too_long", 414, None, None)
    metrics.request_rejected("headers_timeout", 0, None, None)  # closed, nothing sent
    found = samples(metrics)
    assert found[("nessen_rejected_requests_total", labels(reason="uri_too_long"))] == 2.0
    assert found[("nessen_rejected_requests_total", labels(reason="headers_timeout"))] == 1.0
    statuses = {k: v for k, v in found.items() if k[0] == "http_requests_total"}
    assert statuses == {
        ("http_requests_total", labels(method="GET", route="unmatched", status="414")): 1.0,
        ("http_requests_total", labels(method="OTHER", route="unmatched", status="414")): 1.0,
    }


def test_state_is_one_hot() -> None:
    metrics = PrometheusMetrics()
    metrics.set_state("DRAINING")
    found = samples(metrics, prefix="nessen_state")
    assert found == {
        ("nessen_state", labels(state="STARTING")): 0.0,
        ("nessen_state", labels(state="READY")): 0.0,
        ("nessen_state", labels(state="DEGRADED")): 0.0,
        ("nessen_state", labels(state="DRAINING")): 1.0,
        ("nessen_state", labels(state="STOPPING")): 0.0,
    }


def test_gauges() -> None:
    metrics = PrometheusMetrics()
    metrics.set_active(7, 12)
    metrics.set_event_loop_lag(0.125)
    found = samples(metrics)
    assert found[("http_requests_active", ())] == 7.0
    assert found[("nessen_connections_active", ())] == 12.0
    assert found[("nessen_event_loop_lag_seconds", ())] == 0.125


def test_process_metrics_are_exposed() -> None:
    names = {name for name, _ in samples(PrometheusMetrics())}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names


def test_routes_past_max_routes_share_the_overflow_label() -> None:
    metrics = PrometheusMetrics(max_routes=2)
    for route in ("/a", "/b", "/c", "/d", "/a"):
        metrics.request_finished("GET", route, 200, 0.001, 0)
    found = samples(metrics, prefix="http_requests_total")
    assert {dict(k[1])["route"]: v for k, v in found.items()} == {
        "/a": 2.0,
        "/b": 1.0,
        OVERFLOW_ROUTE: 2.0,
    }


def test_two_instances_do_not_share_a_registry() -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()
    first.request_finished("GET", "/", 200, 0.001, 1)
    assert ("http_requests_total", labels(method="GET", route="/", status="200")) in samples(first)
    assert samples(second, prefix="http_requests_total") == {}


def test_openmetrics_is_negotiated() -> None:
    metrics = PrometheusMetrics()
    content, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert content.endswith(b"# EOF\n")
    content, content_type = metrics.exposition("text/html")
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert b"# EOF" not in content


def test_the_sink_api_creates_user_metrics_in_the_same_registry() -> None:
    metrics = PrometheusMetrics()
    assert isinstance(metrics, TelemetrySink)
    metrics.increment_counter("orders_total", 2, {"kind": "book"})
    metrics.increment_counter("orders_total", 1, {"kind": "book"})
    metrics.record_timing("checkout_seconds", 0.3)
    metrics.record_gauge("queue_depth", 5, {"queue": "mail"})
    found = samples(metrics)
    assert found[("orders_total", labels(kind="book"))] == 3.0
    assert found[("checkout_seconds_bucket", labels(le="0.5"))] == 1.0
    assert found[("checkout_seconds_bucket", labels(le="0.25"))] == 0.0
    assert found[("queue_depth", labels(queue="mail"))] == 5.0


def test_the_sink_api_refuses_the_runtimes_names_and_changed_tags() -> None:
    metrics = PrometheusMetrics()
    with pytest.raises(ValueError, match="one of the runtime's own metrics"):
        metrics.increment_counter("http_requests_total")
    metrics.increment_counter("jobs_total", 1, {"queue": "a"})
    with pytest.raises(ValueError, match=r"has tags \['queue'\], not \['kind'\]"):
        metrics.increment_counter("jobs_total", 1, {"kind": "x"})
    with pytest.raises(ValueError, match="'jobs_total' is a counter, not a gauge"):
        metrics.record_gauge("jobs_total", 1, {"queue": "a"})
    with pytest.raises(ValueError, match="cannot create histogram 'jobs': Duplicated"):
        metrics.record_timing("jobs", 1.0)  # the counter's own series are jobs_total, ...


def test_multiprocess_is_refused_when_prometheus_client_was_imported_without_it() -> None:
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        PrometheusMetrics(multiprocess=True)


def test_dropped_log_lines_are_counted_from_the_log_handlers() -> None:
    metrics = PrometheusMetrics()
    before = samples(metrics, prefix="nessen_log")[("nessen_log_lines_dropped_total", ())]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away: EPIPE
    with open(write_end, "w") as stream:
        handler = BufferedStreamHandler(stream, interval=3600.0)
        for index in range(7):
            handler.write_line(f"line {index}", logging.ERROR)
        handler.close()
    assert handler.lines_dropped == 7
    after = samples(metrics, prefix="nessen_log")[("nessen_log_lines_dropped_total", ())]
    assert after - before == 7.0
    assert samples(metrics, prefix="nessen_log")[("nessen_log_lines_dropped_total", ())] == after


def record_everything(metrics: PrometheusMetrics) -> None:
    """One of each thing the runtime records."""
    metrics.request_finished("GET", "/users/{id}", 200, 0.004, 120)
    metrics.request_finished("POST", "/users/{id}", 201, 0.02, 3000)
    metrics.request_finished("MKCOL", None, 501, 0.0001, 20)
    metrics.request_rejected("uri_too_long", 414, "GET", None)
    metrics.request_rejected("headers_timeout", 0, None, None)
    metrics.store_error("redis", "take")
    metrics.accept_failed("EMFILE")
    metrics.websocket_traffic(3, 30, 2, 20)
    metrics.websocket_closed(1000, "client")
    metrics.set_active(4, 9, 1)
    metrics.set_event_loop_lag(0.25)
    metrics.set_state("DEGRADED")


def without_created(found: Samples) -> Samples:
    return {key: value for key, value in found.items() if not key[0].endswith("_created")}


OWN_PREFIXES = ("http_", "nessen_")


def own_samples(metrics: PrometheusMetrics) -> Samples:
    return {k: v for k, v in samples(metrics).items() if k[0].startswith(OWN_PREFIXES)}


def test_what_is_recorded_before_the_first_scrape_is_what_is_recorded_after() -> None:
    """The metrics are made by the first scrape: counts and gauges from before it show
    exactly as those recorded once they exist (the runtime's own series, ``_created``
    aside: they are compared in the next test)."""
    before, after = PrometheusMetrics(), PrometheusMetrics()
    record_everything(before)
    samples(after)  # the first scrape: the metrics exist from here on
    record_everything(after)
    expected = without_created(own_samples(after))
    assert (
        expected[("http_requests_total", labels(method="GET", route="/users/{id}", status="200"))]
        == 1.0
    )
    assert expected[("nessen_websocket_bytes_total", labels(direction="in"))] == 30.0
    assert expected[("nessen_state", labels(state="DEGRADED"))] == 1.0
    assert without_created(own_samples(before)) == expected


class FakeTime:
    """``time`` for the metrics module: ``time()`` as set, ``monotonic()`` the real one."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.monotonic: Callable[[], float] = time.monotonic

    def time(self) -> float:
        return self.now


def test_a_series_counted_before_the_first_scrape_is_created_when_it_was_first_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeTime(1000.0)
    monkeypatch.setattr(metrics_module, "time", clock)
    metrics = PrometheusMetrics()
    clock.now = 1005.0
    metrics.request_finished("GET", "/a", 200, 0.001, 10)
    metrics.request_rejected("uri_too_long", 414, "GET", None)
    clock.now = 2000.0
    found = samples(metrics)
    ok = labels(method="GET", route="/a", status="200")
    assert found[("http_requests_created", ok)] == 1005.0
    assert (
        found[("http_request_duration_seconds_created", labels(method="GET", route="/a"))] == 1005.0
    )
    assert found[("nessen_rejected_requests_created", labels(reason="uri_too_long"))] == 1005.0
    assert found[("nessen_log_lines_dropped_created", ())] == 1000.0  # made with the metrics
    assert found[("nessen_websocket_messages_created", labels(direction="in"))] == 1000.0


IMPORTS = """
import sys
from nessen.observability.metrics import PrometheusMetrics
metrics = PrometheusMetrics()
metrics.request_finished("GET", "/a", 200, 0.001, 10)
metrics.set_state("READY")
metrics.flush()
assert "prometheus_client" not in sys.modules, "imported before the first scrape"
content, _ = metrics.exposition()
assert "prometheus_client" in sys.modules
assert b'http_requests_total{method="GET",route="/a",status="200"} 1.0' in content, content
print("ok")
"""


def test_prometheus_client_is_imported_by_the_first_scrape() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
