"""The writing side of a connection from values: a fake transport and a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from nessen.config import Config
from nessen.http.request import CLIENT_DISCONNECTED, SEND_TIMEOUT
from nessen.server.output import INF, Output


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now


class Transport:
    """Holds ``queued`` bytes; no socket (so the kernel's queue reads as 0)."""

    def __init__(self) -> None:
        self.queued = 0
        self.aborted = False

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        assert (high, low) == (0, 0)

    def get_write_buffer_size(self) -> int:
        return self.queued

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def abort(self) -> None:
        self.aborted = True


def output(**config: Any) -> tuple[Output, Transport, Clock]:
    clock, transport = Clock(), Transport()
    out = Output(clock, Config(**config))  # type: ignore[arg-type]
    out.attach(transport)
    return out, transport, clock


def test_pausing_starts_the_send_deadline_and_resuming_ends_it() -> None:
    out, transport, _ = output(send_timeout=30.0)
    transport.queued = 5000
    out.on_paused()
    assert out.paused
    assert out.deadline == 130.0
    assert out.unsent == 5000
    out.on_resumed()
    assert (out.paused, out.deadline, out.unsent) == (False, INF, 0)


def test_a_client_that_took_nothing_is_cut_for_send_timeout() -> None:
    out, transport, clock = output(send_timeout=30.0)
    transport.queued = 5000
    out.on_paused()
    clock.now = 130.0
    verdict = out.send_deadline_passed(lost=False)
    assert verdict is not None
    assert verdict[0] == "send_timeout"
    out.reset(lost=False)
    assert transport.aborted
    assert out.cut_reason == SEND_TIMEOUT


@pytest.mark.parametrize(
    ("left", "verdict"),
    [
        (0, None),  # took all 5000 bytes in 10 s: keeps up
        (5000 - 3000, None),  # 3000 bytes in 10 s at a minimum of 100 bytes/s: keeps up
        (5000 - 500, "send_too_slow"),  # 500 bytes in 10 s: below 100 bytes/s
        (5000, "send_timeout"),  # nothing taken
    ],
)
def test_a_client_that_takes_some_goes_on_only_at_send_min_rate(
    left: int, verdict: str | None
) -> None:
    out, transport, clock = output(send_timeout=10.0, send_min_rate=100)
    transport.queued = 5000
    out.on_paused()
    clock.now = 110.0
    transport.queued = left
    result = out.send_deadline_passed(lost=False)
    if verdict is None:
        assert result is None
        assert out.deadline == 120.0  # moved on by send_timeout
    else:
        assert result is not None
        assert result[0] == verdict
        assert out.deadline == INF


def test_unsent_content_is_at_most_the_last_writes_content_unless_the_kernel_lost_it() -> None:
    out, transport, _ = output()
    out.tail_content, out.tail_after = 1000, 2  # a chunk: 1000 bytes and its CRLF
    transport.queued = 1502  # more than the last write: older writes' framing, not content
    out.abort("shutdown_cut")
    assert out.unsent_content(10_000) == 1000
    transport.queued = 502
    out.cut_reason = None
    out.abort("shutdown_cut")
    assert out.unsent_content(10_000) == 500


def test_a_lost_connection_is_a_client_disconnect_unless_we_cut_it() -> None:
    out, _, _ = output()
    out.lost(ConnectionResetError())
    assert out.cut_reason == CLIENT_DISCONNECTED
    out, transport, _ = output()
    transport.queued = 10
    out.abort("send_timeout")
    out.lost(ConnectionResetError())
    assert out.cut_reason == "send_timeout"
    out, _, _ = output()
    out.unsent = 7
    out.lost(None)  # our own close flushed it
    assert (out.cut_reason, out.unsent) == (None, 0)
