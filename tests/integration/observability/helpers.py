"""Reading /metrics in tests: parse with prometheus-client's own parser."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.rawhttp import RawClient, get

Labels = tuple[tuple[str, str], ...]


def labels(**pairs: str) -> Labels:
    return tuple(sorted(pairs.items()))


def scrape(url: str) -> dict[str, Metric]:
    """GET ``url``/metrics and parse it; families by name (counters without ``_total``)."""
    response = httpx.get(url + "/metrics", trust_env=False)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def values(family: Metric, sample_name: str | None = None) -> dict[Labels, float]:
    """The family's samples named ``sample_name`` (its own name by default), by labels."""
    name = sample_name or family.name
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for sample in family.samples
        if sample.name == name
    }


def pipelined(address: tuple[str, int], paths: Iterable[str], batch: int = 50) -> list[int]:
    """Send GETs for ``paths`` on one connection, ``batch`` at a time; return the statuses."""
    statuses: list[int] = []
    pending = list(paths)
    with RawClient(address, timeout=10.0) as client:
        for start in range(0, len(pending), batch):
            chunk = pending[start : start + batch]
            client.send(b"".join(get(path) for path in chunk))
            statuses.extend(client.response().status for _ in chunk)
    return statuses
