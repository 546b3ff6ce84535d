from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from nessen.observability.metrics import PrometheusMetrics


def test_store_errors_are_counted_by_store_and_operation() -> None:
    metrics = PrometheusMetrics()
    assert b"nessen_store_errors_total" not in metrics.exposition()[0]  # none yet
    for operation in ("take", "take", "ping"):
        metrics.store_error("redis", operation)
    text = metrics.exposition()[0].decode()
    found = {
        (s.labels["store"], s.labels["operation"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "nessen_store_errors_total"
    }
    assert found == {("redis", "take"): 2.0, ("redis", "ping"): 1.0}
