"""docs/OBSERVABILITY.md's Python samples run here, so the page shows only what exists."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ServeFactory

DOC = Path(__file__).resolve().parents[3] / "docs" / "OBSERVABILITY.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_statsd_sample_sends_what_the_page_shows(serve: ServeFactory) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5.0)
    source = blocks("python")[0]
    assert '"127.0.0.1", 8125' in source
    namespace: dict[str, Any] = {}
    port = receiver.getsockname()[1]
    exec(compile(source.replace("8125", str(port)), "OBSERVABILITY.md", "exec"), namespace)
    runtime, statsd = namespace["runtime"], namespace["statsd"]
    runtime.process.interval = 3600.0  # no once-a-second gauges during the test
    with receiver, statsd:
        server = serve(runtime)
        assert httpx.post(server.url + "/orders", trust_env=False).status_code == 201
        got = [receiver.recv(65536).decode() for _ in range(3)]
        metrics = httpx.get(server.url + "/metrics", trust_env=False).text
    shown = blocks("text")[1].splitlines()  # the datagrams the page lists
    assert got[:2] == shown[:2]
    assert re.sub(r":[0-9.]+\|ms", ":X|ms", got[2]) == re.sub(r":[0-9.]+\|ms", ":X|ms", shown[2])
    assert 'orders_total{channel="web"} 1.0' in metrics.splitlines()


def test_the_custom_sink_sample_sees_every_timing(serve: ServeFactory) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(blocks("python")[1], "OBSERVABILITY.md", "exec"), namespace)
    server = serve(namespace["runtime"])
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        client.get("/health")
        client.get("/nowhere")
    server.stop()
    assert set(namespace["slowest"].slowest) == {"/health", "unmatched"}
    assert all(seconds > 0 for seconds in namespace["slowest"].slowest.values())
