from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from nessen.observability.sinks import StatsdSink, Tags, Telemetry, TelemetrySink


class RecordingSink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, str] | None]] = []

    def increment_counter(self, name: str, value: float = 1, tags: Tags | None = None) -> None:
        self.calls.append(("counter", name, value, dict(tags) if tags else None))

    def record_timing(self, name: str, seconds: float, tags: Tags | None = None) -> None:
        self.calls.append(("timing", name, seconds, dict(tags) if tags else None))

    def record_gauge(self, name: str, value: float, tags: Tags | None = None) -> None:
        self.calls.append(("gauge", name, value, dict(tags) if tags else None))


class BrokenSink(RecordingSink):
    def increment_counter(self, name: str, value: float = 1, tags: Tags | None = None) -> None:
        raise OSError("collector down")

    def record_timing(self, name: str, seconds: float, tags: Tags | None = None) -> None:
        raise OSError("collector down")

    def record_gauge(self, name: str, value: float, tags: Tags | None = None) -> None:
        raise OSError("collector down")


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    yield sock
    sock.close()


def received(sock: socket.socket, count: int) -> list[str]:
    return [sock.recv(65536).decode() for _ in range(count)]


def test_statsd_lines_for_counters_timings_and_gauges(receiver: socket.socket) -> None:
    port = receiver.getsockname()[1]
    tags = {"method": "GET", "route": "/users/{id}", "status": "200"}
    with StatsdSink("127.0.0.1", port, prefix="shop.") as sink:
        sink.increment_counter("http_requests_total", 1, tags)
        sink.record_timing("http_request_duration_seconds", 0.0125, tags)
        sink.record_gauge("http_requests_active", 3)
        sink.increment_counter("bytes_total", 2.5)
    assert received(receiver, 4) == [
        "shop.http_requests_total:1|c|#method:GET,route:/users/{id},status:200",
        "shop.http_request_duration_seconds:12.5|ms|#method:GET,route:/users/{id},status:200",
        "shop.http_requests_active:3|g",
        "shop.bytes_total:2.5|c",
    ]
    assert sink.dropped == 0


def test_statsd_negative_gauge_is_reset_first_and_separators_are_replaced(
    receiver: socket.socket,
) -> None:
    port = receiver.getsockname()[1]
    with StatsdSink("127.0.0.1", port, tag_format=None) as sink:
        sink.record_gauge("temperature", -4)
        sink.increment_counter("a:b|c#d", 1, {"ignored": "when tag_format is None"})
    assert received(receiver, 3) == ["temperature:0|g", "temperature:-4|g", "a_b_c_d:1|c"]


def test_statsd_tag_values_cannot_inject_lines(receiver: socket.socket) -> None:
    port = receiver.getsockname()[1]
    with StatsdSink("127.0.0.1", port) as sink:
        sink.increment_counter("x", 1, {"route": "/a\nevil:1|c", "k,v": "1|#2"})
    assert received(receiver, 1) == ["x:1|c|#route:/a_evil_1_c,k_v:1__2"]


def test_statsd_refuses_non_finite_values_and_unknown_tag_formats() -> None:
    with pytest.raises(ValueError, match="tag_format"):
        StatsdSink(tag_format="influx")
    with StatsdSink() as sink, pytest.raises(ValueError, match="not a finite number"):
        sink.record_gauge("g", float("nan"))


def test_statsd_sink_is_a_telemetry_sink() -> None:
    with StatsdSink() as sink:
        assert isinstance(sink, TelemetrySink)


def test_telemetry_fans_out_to_every_sink() -> None:
    first, second = RecordingSink(), RecordingSink()
    telemetry = Telemetry([first])
    telemetry.add(second)
    telemetry.increment_counter("orders_total", 2, {"kind": "book"})
    telemetry.record_timing("checkout_seconds", 0.25)
    telemetry.record_gauge("queue_depth", 7)
    expected = [
        ("counter", "orders_total", 2, {"kind": "book"}),
        ("timing", "checkout_seconds", 0.25, None),
        ("gauge", "queue_depth", 7, None),
    ]
    assert first.calls == expected
    assert second.calls == expected
    telemetry.remove(first)
    telemetry.record_gauge("queue_depth", 8)
    assert len(first.calls) == 3
    assert second.calls[-1] == ("gauge", "queue_depth", 8, None)


def test_a_failing_sink_is_logged_once_and_the_others_still_get_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, healthy = BrokenSink(), RecordingSink()
    telemetry = Telemetry([broken, healthy])
    telemetry.increment_counter("a")
    telemetry.increment_counter("b")
    telemetry.record_timing("c", 0.1)
    telemetry.record_gauge("d", 1)
    telemetry.record_gauge("e", 2)
    assert [call[1] for call in healthy.calls] == ["a", "b", "c", "d", "e"]
    assert caplog.text.count("telemetry sink BrokenSink.increment_counter failed") == 1
    assert caplog.text.count("telemetry sink BrokenSink.record_timing failed") == 1
    assert caplog.text.count("telemetry sink BrokenSink.record_gauge failed") == 1


def test_something_without_the_three_methods_is_not_a_sink() -> None:
    with pytest.raises(TypeError, match="needs increment_counter, record_timing and record_gauge"):
        Telemetry().add(object())  # type: ignore[arg-type]
    assert not Telemetry()
    assert Telemetry([RecordingSink()])
