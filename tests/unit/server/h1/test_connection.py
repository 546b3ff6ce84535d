"""The connection core from bytes and a fake clock: no socket, no event loop, no real time.

Each test feeds :class:`H1Connection` bytes with an explicit ``now`` and checks the
requests it queues, the actions it returns, its phase and its read deadline.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nessen.config import Config
from nessen.errors import ProtocolError
from nessen.http import Request
from nessen.server.h1.connection import (
    BODY_PIECE,
    CLOSE,
    DRAIN_FRESH_GRACE,
    DRAIN_IDLE_GRACE,
    END,
    FAIL,
    FEED_SLICE,
    GRACE,
    HEAD_DONE,
    HEAD_FRAMING_SLACK,
    INF,
    KEEP,
    LINGER_SECONDS,
    OVER_LIMIT_HEADERS_TIMEOUT,
    PAUSE,
    PIPELINE_DEPTH,
    UPGRADE,
    H1Connection,
)
from nessen.server.h1.phase import BODY, HANDLING, HEAD, IDLE, LINGER

GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass
class Shared:
    body_bytes: int = 0
    allowed_hosts: Any = None
    proxy: Any = None
    active_requests: int = 0
    shutdown_pending: bool = False
    draining: bool = False
    drain_started: float = INF


def core(
    config: Config | None = None, *, streaming: bool = False, now: float = 100.0
) -> H1Connection:
    conn = H1Connection(config or Config(), Shared(), streaming=streaming)
    conn.open(now, draining=False, over_limit=False)
    return conn


def kinds(actions: list[tuple[int, Any]]) -> list[int]:
    return [kind for kind, _ in actions]


def error_of(actions: list[tuple[int, Any]]) -> ProtocolError:
    assert actions, "no action"
    assert actions[-1][0] == FAIL, actions
    error = actions[-1][1]
    assert isinstance(error, ProtocolError)
    return error


def post(size: int, *, extra: bytes = b"") -> bytes:
    return b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (size, extra)


# --- requests and the queue -------------------------------------------------------------


def test_a_simple_request_is_queued_with_no_action_and_no_read_deadline() -> None:
    conn = core()
    assert conn.phase is HEAD
    assert conn.read_deadline == 110.0
    actions = conn.receive(GET, 100.5, 7.0)
    assert actions == []
    (request, keep_alive, started), *rest = conn.queue
    assert rest == []
    assert (request.method, request.path, keep_alive, started) == ("GET", "/a", True, 7.0)
    assert conn.phase is HANDLING
    assert conn.read_deadline == INF


def test_a_request_in_pieces_is_queued_once_whole() -> None:
    conn = core()
    for piece in (b"GET /a HT", b"TP/1.1\r\nHo", b"st: x\r\n", b"\r\n"):
        assert conn.queue == type(conn.queue)()
        assert conn.receive(piece, 100.0, 1.0) == []
    assert [entry[0].path for entry in conn.queue] == ["/a"]


def test_buffered_content_is_attached_and_counted_against_the_shared_budget() -> None:
    conn = core()
    assert conn.receive(post(5), 100.0, 1.0) == []
    assert conn.phase is BODY
    assert conn.read_deadline == 130.0
    conn.receive(b"hel", 101.0, 1.0)
    conn.receive(b"lo", 102.0, 1.0)
    (request, _, _) = conn.queue[0]
    assert request.body == b"hello"
    assert conn.held == 5
    assert conn._shared.body_bytes == 5
    conn.release(5)
    assert conn.held == 0
    assert conn._shared.body_bytes == 0


@pytest.mark.parametrize("count", [2, PIPELINE_DEPTH, 100])
def test_pipelined_requests_stop_parsing_at_the_queue_depth_and_resume_in_order(
    count: int,
) -> None:
    conn = core()
    pad = b"X-Pad: " + b"p" * 400 + b"\r\n"  # about ten requests to a slice
    data = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n%s\r\n" % (i, pad) for i in range(count))
    actions = list(conn.receive(data, 100.0, 1.0))
    seen: list[str] = []
    while True:
        # Parsing stops between slices: at most one slice's requests past the depth.
        assert len(conn.queue) < PIPELINE_DEPTH + FEED_SLICE // len(pad)
        if len(conn.queue) > 1:
            assert PAUSE in kinds(actions)
        while conn.queue:
            seen.append(conn.queue.pop(0)[0].path)
        resumed = conn.resume(101.0, 2.0)
        if resumed is None:
            break
        actions = list(resumed)
    assert seen == [f"/{i}" for i in range(count)]


def test_a_request_completed_while_one_is_handled_pauses_reading() -> None:
    conn = core()
    conn.receive(GET, 100.0, 1.0)
    conn.queue.pop(0)
    conn.busy = True
    assert kinds(conn.receive(GET, 100.0, 1.0)) == [PAUSE]


# --- an idle connection holds no parser ------------------------------------------------


def test_an_idle_connection_lets_its_parser_go_and_parses_the_next_request_as_before() -> None:
    conn = core()
    assert not hasattr(conn, "_parser")  # made by the first read
    conn.receive(GET, 100.0, 1.0)
    conn.shed()  # a request in hand: kept
    assert hasattr(conn, "_parser")
    conn.queue.pop(0)
    conn.idle(101.0)
    assert conn.raw_headers == []  # the last request's fields are let go too
    conn.shed()
    assert not hasattr(conn, "_parser")
    conn.receive(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 102.0, 2.0)
    ((request, keep_alive, started),) = conn.queue
    assert (request.method, request.path, request.body) == ("POST", "/b", b"abc")
    assert (keep_alive, started, request.headers["host"]) == (True, 2.0, "x")


def test_a_connection_inside_a_request_keeps_its_parser() -> None:
    conn = core()
    conn.receive(GET, 100.0, 1.0)
    conn.queue.pop(0)
    conn.idle(101.0)
    conn.receive(b"GET /c HTTP/1.1\r\nHo", 102.0, 2.0)
    conn.shed()  # in its header section: kept, or the rest would not parse
    assert conn.receive(b"st: x\r\n\r\n", 102.5, 2.0) == []
    assert [entry[0].path for entry in conn.queue] == ["/c"]


def test_an_http_0_9_line_after_the_parser_went_is_refused_as_on_a_new_connection() -> None:
    conn = core()
    conn.receive(GET, 100.0, 1.0)
    conn.queue.pop(0)
    conn.idle(101.0)
    conn.shed()
    assert error_of(conn.receive(b"GET /nine\r\n", 102.0, 2.0)).reason == "http_0_9"


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400, "missing_host"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, "duplicate_host"),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "http_version"),
        (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501, "method_not_implemented"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n", 414, "uri_too_long"),
        (post(2_000_000), 413, "body_too_large"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, None),
        (b"GET /\r\n", 400, "http_0_9"),
        (b"\x16\x03\x01\x02\x00\x01\x00", 400, None),
    ],
)
def test_a_bad_request_ends_in_one_fail_action_and_parsing_stops(
    data: bytes, status: int, reason: str | None
) -> None:
    conn = core()
    error = error_of(conn.receive(data, 100.0, 1.0))
    assert error.status == status
    if reason is not None:
        assert error.reason == reason
    assert conn.stopped
    assert conn.phase is HANDLING
    assert conn.read_deadline == INF
    assert conn.receive(GET, 100.0, 1.0) == []  # discarded from now on
    assert not conn.queue


def test_an_http_0_9_line_behind_a_request_fails_after_it_is_queued() -> None:
    conn = core()
    error = error_of(conn.receive(GET + b"GET /b\r\n", 100.0, 1.0))
    assert error.reason == "http_0_9"
    assert [entry[0].path for entry in conn.queue] == ["/a"]


def test_an_endless_header_line_is_refused_one_slice_past_its_bound() -> None:
    config = Config()
    conn = core(config)
    sent = conn.receive(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ", 100.0, 1.0)
    total = 0
    while not sent:
        sent = conn.receive(b"a" * 1000, 100.0, 1.0)
        total += 1000
    assert error_of(sent).status == 431
    # Refused within one read of the bound on what it holds, and not before the limit.
    assert (
        config.max_header_bytes
        < total
        <= (config.max_header_bytes + HEAD_FRAMING_SLACK + FEED_SLICE + 1000)
    )


def test_too_much_chunk_framing_for_its_content_is_refused() -> None:
    conn = core()
    conn.receive(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 100.0, 1.0)
    actions: list[tuple[int, Any]] = []
    for _ in range(20_000):
        actions = conn.receive(b"1;" + b"e" * 30 + b"\r\na\r\n", 100.0, 1.0)
        if actions:
            break
    assert error_of(actions).reason == "chunk_overhead"


def test_the_shared_body_budget_refuses_content_that_would_pass_it() -> None:
    config = Config(max_body_bytes=1000, max_body_buffer_bytes=1500)
    shared = Shared(body_bytes=1000)
    conn = H1Connection(config, shared)
    conn.open(100.0, draining=False, over_limit=False)
    error = error_of(conn.receive(post(600), 100.0, 1.0))
    assert (error.status, error.reason) == (503, "body_buffer_full")


# --- deadlines (fake clock) ------------------------------------------------------------


@pytest.mark.parametrize("bad", [b"a b", b"a/b", b"[::1"])
def test_each_hosts_value_is_checked_on_a_reused_connection(bad: bytes) -> None:
    # The Host pattern runs once while a connection repeats a value; another value, good
    # or bad, is checked on its own.
    conn = core()
    for host in (b"x", b"x", b"y.example:80", b"x"):
        assert conn.receive(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", 100.0, 1.0) == []
        request = conn.queue.pop(0)[0]
        assert request.headers["host"] == host.decode()
        conn.idle(100.0)
    error = error_of(conn.receive(b"GET / HTTP/1.1\r\nHost: " + bad + b"\r\n\r\n", 101.0, 1.0))
    assert (error.status, error.reason) == (400, "bad_host")


def test_the_header_deadline_starts_at_a_requests_first_byte_on_a_reused_connection() -> None:
    conn = core()
    conn.receive(GET, 100.0, 1.0)
    conn.queue.pop(0)
    conn.idle(105.0)
    assert conn.phase is IDLE
    assert conn.read_deadline == 105.0 + Config().idle_timeout
    conn.receive(b"GET", 120.0, 1.0)
    assert conn.phase is HEAD
    assert conn.read_deadline == 130.0
    error = conn.read_deadline_passed(130.0)
    assert error is not None
    assert (error.status, error.reason) == (408, "headers_timeout")


def test_an_idle_or_fresh_connection_past_its_deadline_is_closed_without_an_answer() -> None:
    conn = core()
    assert conn.read_deadline_passed(110.0) is None  # not one byte: close
    conn = core()
    conn.receive(GET, 100.0, 1.0)
    conn.queue.pop(0)
    conn.idle(101.0)
    assert conn.read_deadline_passed(200.0) is None
    assert conn.phase is IDLE


def test_the_body_deadline_moves_with_each_piece_of_content() -> None:
    conn = core(Config(body_timeout=10.0, body_min_rate=0))
    conn.receive(post(100_000), 100.0, 1.0)
    assert conn.read_deadline == 110.0
    conn.receive(b"x" * 10, 105.0, 1.0)
    assert conn.read_deadline == 115.0  # body_timeout after the last piece
    conn.receive(b"x" * 10, 114.0, 1.0)
    assert conn.read_deadline == 124.0
    error = conn.read_deadline_passed(124.0)
    assert error is not None
    assert (error.status, error.reason) == (408, "body_timeout")


def test_past_the_grace_the_content_must_keep_body_min_rate() -> None:
    conn = core(Config(body_timeout=10.0, body_min_rate=100))
    conn.receive(post(100_000), 100.0, 1.0)
    conn.receive(b"x" * 2000, 105.0, 1.0)
    # 2000 bytes at 100 bytes/s last until 100 + 20 s; the next piece is due by 115.
    assert conn.read_deadline == 115.0
    conn.receive(b"x" * 10, 114.0, 1.0)
    # 2010 bytes keep the rate until 120.1, before the next piece is due (124).
    assert conn.read_deadline == pytest.approx(120.1)
    error = conn.read_deadline_passed(120.1)
    assert error is not None
    assert (error.status, error.reason) == (408, "body_too_slow")


def test_time_held_while_we_do_not_read_counts_for_neither_deadline_nor_rate() -> None:
    config = Config(body_timeout=10.0, body_min_rate=100)
    conn = core(config)
    conn.receive(post(100_000), 100.0, 1.0)
    conn.hold(104.0)
    assert conn.read_deadline == INF
    conn.release_hold(504.0)  # 400 s held
    assert conn.read_deadline == 510.0  # the 6 s that were left
    conn.receive(b"x" * 1000, 505.0, 1.0)  # 1000 bytes in 5 s of reading: fine
    assert conn.read_deadline > 505.0


def test_a_linger_has_its_own_deadline_and_input_is_discarded() -> None:
    conn = core()
    conn.linger(100.0)
    assert conn.phase is LINGER
    assert conn.read_deadline == 100.0 + LINGER_SECONDS
    assert conn.receive(GET, 101.0, 1.0) == []
    assert not conn.queue
    assert conn.read_deadline_passed(103.0) is None


def test_a_connection_past_the_connection_limit_is_kept_only_for_a_probe() -> None:
    config = Config()
    conn = H1Connection(config, Shared())
    conn.open(100.0, draining=False, over_limit=True)
    assert conn.read_deadline == 100.0 + OVER_LIMIT_HEADERS_TIMEOUT
    error = error_of(conn.receive(GET, 100.0, 1.0))
    assert error.status == 503
    conn = H1Connection(config, Shared())
    conn.open(100.0, draining=False, over_limit=True)
    probe = sorted(config.probe_paths)[0].encode()
    assert conn.receive(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % probe, 100.0, 1.0) == []
    assert len(conn.queue) == 1


# --- drain -------------------------------------------------------------------------------


def test_drain_gives_a_fresh_connection_and_an_idle_one_a_short_grace() -> None:
    fresh = core()
    assert fresh.drain(100.0, served=0) == GRACE
    assert fresh.read_deadline == 100.0 + DRAIN_FRESH_GRACE
    idle = core()
    idle.receive(GET, 100.0, 1.0)
    idle.queue.pop(0)
    idle.idle(100.0)
    assert idle.drain(101.0, served=1) == GRACE
    assert idle.read_deadline == 101.0 + DRAIN_IDLE_GRACE
    accepted_draining = H1Connection(Config(), Shared())
    accepted_draining.open(100.0, draining=True, over_limit=False)
    assert accepted_draining.read_deadline == 100.0 + DRAIN_FRESH_GRACE


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("busy", KEEP),
        ("queued", KEEP),
        ("in_head", KEEP),
        ("in_body", KEEP),
        ("lingering", KEEP),
        ("handling_done", CLOSE),
    ],
)
def test_drain_keeps_a_connection_with_a_request_in_flight(setup: str, expected: int) -> None:
    conn = core()
    if setup == "busy":
        conn.receive(GET, 100.0, 1.0)
        conn.queue.pop(0)
        conn.busy = True
    elif setup == "queued":
        conn.receive(GET + GET, 100.0, 1.0)
    elif setup == "in_head":
        conn.receive(b"GET / HTTP/1.1\r\n", 100.0, 1.0)
    elif setup == "in_body":
        conn.receive(post(10), 100.0, 1.0)
    elif setup == "lingering":
        conn.linger(100.0)
    else:  # answered, not yet moved to IDLE: nothing in flight
        conn.receive(GET, 100.0, 1.0)
        conn.queue.pop(0)
    deadline = conn.read_deadline
    assert conn.drain(101.0, served=1) == expected
    assert conn.read_deadline == deadline


# --- 100 Continue, streaming, upgrade -----------------------------------------------------


def test_only_an_http_1_1_request_with_content_and_the_expectation_is_deferred() -> None:
    expect = b"Expect: 100-continue\r\n"
    cases = [
        (post(3, extra=expect), [HEAD_DONE]),  # deferred: its 100 waits for a read
        (post(3), []),  # not asked: buffered whole
        (post(0, extra=expect), []),  # no content to wait for
        # HTTP/1.0 has no 100 (RFC 9110 §10.1.1): buffered whole
        (b"POST / HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n", []),
    ]
    for data, expected in cases:
        assert kinds(core().receive(data, 100.0, 1.0)) == expected, data
    conn = core()
    conn.busy = True  # a request ahead changes nothing: the 100 waits for the read anyway
    assert kinds(conn.receive(post(3, extra=expect), 100.0, 1.0)) == [HEAD_DONE]


def test_streaming_mode_queues_at_the_header_section_and_hands_content_out() -> None:
    conn = core(streaming=True)
    actions = list(conn.receive(post(5, extra=b"Expect: 100-continue\r\n") + b"he", 100.0, 1.0))
    assert kinds(actions) == [HEAD_DONE, BODY_PIECE]
    request, has_content, expects_continue = actions[0][1]
    assert (has_content, expects_continue) == (True, True)
    assert actions[1][1] == b"he"
    assert conn.queue[0][0] is request  # queued before its content is whole
    actions = list(conn.receive(b"llo", 101.0, 1.0))
    assert kinds(actions) == [BODY_PIECE, END]
    assert actions[1][1] is request
    assert conn.held == 5


def test_streaming_mode_without_content_queues_at_message_end() -> None:
    conn = core(streaming=True)
    actions = conn.receive(GET, 100.0, 1.0)
    assert kinds(actions) == [HEAD_DONE]
    assert actions[0][1][1:] == (False, False)
    assert len(conn.queue) == 1


def test_an_upgrade_request_stops_parsing_and_keeps_what_followed_it() -> None:
    conn = core()
    upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    actions = conn.receive(upgrade + b"\x81\x05hello", 100.0, 1.0)
    assert kinds(actions) == [UPGRADE]
    request, tail = actions[0][1]
    assert request is conn.queue[0][0]
    assert request.path == "/ws"
    assert b"".join(bytes(piece) for piece in tail) == b"\x81\x05hello"
    assert conn.stopped


def test_an_upgrade_in_a_large_read_keeps_every_slice_after_it() -> None:
    conn = core()
    upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n"
    after = bytes(range(256)) * 64  # 16 KiB: several slices
    actions = conn.receive(upgrade + after, 100.0, 1.0)
    _, tail = actions[0][1]
    assert b"".join(bytes(piece) for piece in tail) == after


# --- pairwise interactions -----------------------------------------------------------------


def test_an_error_behind_pipelined_requests_keeps_them_queued_ahead_of_it() -> None:
    conn = core()
    actions = conn.receive(GET + GET + b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 100.0, 1.0)
    assert kinds(actions)[-1] == FAIL
    assert error_of(actions).status == 505
    assert len(conn.queue) == 2


def test_a_streamed_body_over_its_limit_fails_after_the_pieces_before_it() -> None:
    conn = core(Config(max_body_bytes=10), streaming=True)
    conn.receive(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 100.0, 1.0)
    actions = conn.receive(b"8\r\n12345678\r\n8\r\n12345678\r\n", 100.0, 1.0)
    assert kinds(actions) == [BODY_PIECE, FAIL]
    assert error_of(actions).status == 413


def test_stop_discards_the_bytes_kept_unparsed() -> None:
    conn = core()
    conn.receive(b"".join([GET] * 2000), 100.0, 1.0)
    assert len(conn.queue) < 2000
    conn.stop()
    conn.queue.clear()
    assert conn.resume(101.0, 1.0) is None


def test_drain_during_a_pause_for_the_queue_keeps_the_connection() -> None:
    conn = core()
    assert PAUSE in kinds(conn.receive(b"".join([GET] * 2000), 100.0, 1.0))
    assert conn.drain(101.0, served=0) == KEEP


# --- split invariance (hypothesis, in-process) -------------------------------------------


def _run(pieces: list[bytes], streaming: bool) -> list[Any]:
    """Feed ``pieces``, taking requests as they are queued; what came out, as values.

    Requests in order with their content (streamed pieces joined), then the error or the
    upgrade that ended parsing, and how many ``END`` actions came.
    """
    conn = core(Config(max_header_bytes=2048, max_target_bytes=512), streaming=streaming)
    requests: list[Any] = []
    content: dict[int, bytes] = {}
    streamed: Any = None
    ended: list[Any] = []
    counts = {END: 0}
    for piece in pieces:
        actions = conn.receive(piece, 100.0, 1.0)
        while True:
            for kind, value in actions:
                if kind == HEAD_DONE:
                    streamed = value[0]
                elif kind == BODY_PIECE:
                    content[id(streamed)] = content.get(id(streamed), b"") + bytes(value)
                elif kind == FAIL:
                    ended.append(("fail", value.status))
                elif kind == UPGRADE:
                    ended.append(("upgrade",))
                elif kind in counts:
                    counts[kind] += 1
            while conn.queue:
                requests.append(conn.queue.pop(0)[0])
            resumed = conn.resume(100.0, 1.0)
            if resumed is None:
                break
            actions = resumed
    return [
        *[(r.method, r.target, r.body or content.get(id(r), b"")) for r in requests],
        *ended,
        counts,
    ]


REQUESTS = st.sampled_from(
    [
        GET,
        b"GET /q?a=1 HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\r\n",
        post(5) + b"hello",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HEAD / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x00\x01garbage\r\n\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    requests=st.lists(REQUESTS, min_size=1, max_size=6),
    cuts=st.lists(st.floats(min_value=0, max_value=1), max_size=8),
    streaming=st.booleans(),
)
def test_the_core_gives_the_same_requests_and_errors_however_the_bytes_are_split(
    requests: list[bytes], cuts: list[float], streaming: bool
) -> None:
    data = b"".join(requests)
    points = sorted({int(cut * len(data)) for cut in cuts} | {0, len(data)})
    pieces = [data[a:b] for a, b in itertools.pairwise(points) if b > a]
    whole = _run([data], streaming)
    split = _run(pieces, streaming)
    assert split == whole
    assert len(whole) - 1 <= len(requests) + 1  # never more requests than were sent


def test_a_header_section_whose_last_newlines_come_alone_after_a_split_target() -> None:
    """Found by the split test: the read after ``GET /a`` begins with an empty target
    piece from llhttp, which once made the lone ``\r\n`` of a later read look like the
    end of an HTTP/0.9 line (400)."""
    pieces = [b"GET /a", b" HTTP/1.1\r\nHost: x", b"\r\n", b"\r\n"]
    for streaming in (False, True):
        assert _run(pieces, streaming) == [("GET", b"/a", b""), {END: 0}]


def test_the_split_comparison_can_see_a_difference() -> None:
    assert _run([GET], False) != _run([GET[:-1]], False)
    assert _run([post(5) + b"hello"], True)[0] == ("POST", b"/up", b"hello")


def test_buffered_mode_defers_a_request_that_expects_100_continue() -> None:
    class Deferred(Request):
        __slots__ = ()

    conn = H1Connection(Config(), Shared(), make_deferred=Deferred)
    conn.open(100.0, draining=False, over_limit=False)
    actions = list(conn.receive(post(5, extra=b"Expect: 100-continue\r\n"), 100.0, 1.0))
    assert kinds(actions) == [HEAD_DONE]  # the glue sends the 100 when it is read
    request, has_content, expects_continue = actions[0][1]
    assert type(request) is Deferred
    assert (has_content, expects_continue) == (True, True)
    assert conn.queue[0][0] is request  # dispatched before its content arrives
    assert kinds(conn.receive(b"hello", 101.0, 1.0)) == [BODY_PIECE, END]
    # Without the expectation, the same connection buffers the next request whole (and,
    # with one queued ahead, pauses reading).
    assert kinds(conn.receive(post(2) + b"ok", 102.0, 1.0)) == [PAUSE]
    assert type(conn.queue[-1][0]) is Request
    assert conn.queue[-1][0].body == b"ok"


CHUNKED = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "pieces",
    [
        [CHUNKED + b"100000\r\n" + b"x" * 10],  # head, size and some data in one read
        [CHUNKED, b"100000;name=value\r\n"],  # the size line alone, with an extension
        [CHUNKED + b"3\r\nabc\r\n", b"3e8\r\nx"],  # 3 + 1000 bytes: one past the limit
    ],
)
def test_a_chunk_declared_past_the_content_limit_is_refused_at_its_header(
    pieces: list[bytes],
) -> None:
    conn = core(Config(max_body_bytes=1002))
    actions: list[tuple[int, Any]] = []
    for piece in pieces:
        actions = list(conn.receive(piece, 100.0, 1.0))
    error = error_of(actions)
    assert (error.status, error.reason) == (413, "body_too_large")
    assert conn.body_bytes < 20  # refused before its data came


def test_chunks_within_the_limit_and_a_split_size_line_are_not_refused() -> None:
    conn = core(Config(max_body_bytes=1003))
    for piece in (CHUNKED, b"3\r\nabc\r\n3", b"e8\r\n", b"x" * 1000, b"\r\n0\r\n\r\n"):
        assert conn.receive(piece, 100.0, 1.0) == []
    assert conn.queue[0][0].body == b"abc" + b"x" * 1000


# --- keep-alive and refusals against the drain (pairwise) --------------------------------


def _serving(
    shared: Shared, *, queued: int = 0, begun: bool = False, served: int = 1
) -> H1Connection:
    """A connection handling one request (clock 1.0), ``queued`` more behind it.

    With ``begun``, another request has begun to arrive (clock 2.0).
    """
    conn = H1Connection(Config(), shared)
    conn.open(100.0, draining=False, over_limit=False)
    conn.receive(GET * (1 + queued), 100.0, 1.0)
    conn.queue.pop(0)
    conn.busy = True
    conn.served = served
    if begun:
        conn.receive(b"GET /next HTTP/1.1\r\n", 100.0, 2.0)
    return conn


@pytest.mark.parametrize(
    ("flags", "queued", "begun", "drain_started", "keeps"),
    [
        ({}, 0, False, INF, True),
        ({"shutdown_pending": True}, 0, False, INF, False),  # SHUTDOWN_DELAY: say close
        ({"shutdown_pending": True}, 2, False, INF, True),  # not before the queue is done
        ({"draining": True}, 0, False, 5.0, False),
        ({"draining": True}, 1, False, 5.0, True),
        ({"draining": True}, 0, True, 5.0, True),  # a request begun before the drain
        ({"draining": True}, 0, True, 1.5, False),  # one begun after: dropped for a retry
    ],
)
def test_the_last_answer_before_a_drain_says_close_and_no_earlier_one(
    flags: dict[str, bool], queued: int, begun: bool, drain_started: float, keeps: bool
) -> None:
    shared = Shared(**flags, drain_started=drain_started)  # type: ignore[arg-type]
    conn = _serving(shared, queued=queued, begun=begun)
    assert conn.keeps_alive(True) is keeps


@pytest.mark.parametrize(
    ("case", "keeps"),
    [
        ("http/1.0 without keep-alive", False),
        ("close after the queue, more queued", True),
        ("close after the queue, last one", False),
        ("max_requests_per_connection reached", False),
        ("content unread", False),
    ],
)
def test_keep_alive_against_close_after_the_limit_and_unread_content(
    case: str, keeps: bool
) -> None:
    config = Config(max_requests_per_connection=3)
    conn = H1Connection(config, Shared())
    conn.receive(GET * 2, 100.0, 1.0)
    conn.queue.pop(0)
    allows = case != "http/1.0 without keep-alive"
    if case.startswith("close after"):
        conn.close_after = True
        if case.endswith("last one"):
            conn.queue.clear()
    conn.served = 2 if case.startswith("max_requests") else 0
    unread = case == "content unread"
    assert conn.keeps_alive(allows, unread=unread) is keeps


def test_after_the_drain_a_used_connection_gets_503_and_a_graced_or_fresh_one_is_served() -> None:
    shared = Shared(draining=True, drain_started=5.0)
    conn = _serving(shared, served=1)
    conn.receive(GET, 100.0, 6.0)  # pipelined after the drain began (clock 6 > 5)
    refusal = conn.refusal(conn.queue[-1][0], 6.0)
    assert refusal is not None
    assert (refusal.status, refusal.reason) == (503, "draining")
    assert conn.refusal(conn.queue[-1][0], 4.0) is None  # one that began before the drain
    fresh = H1Connection(Config(), shared)
    fresh.receive(GET, 100.0, 6.0)
    assert fresh.refusal(fresh.queue[0][0], 6.0) is None  # a connection's first request
    idle_shared = Shared()
    idle = H1Connection(Config(), idle_shared)
    idle.receive(GET, 100.0, 1.0)
    idle.queue.pop(0)
    idle.done()
    idle.idle(100.0)
    assert idle.drain(101.0, idle.served) == GRACE
    idle_shared.draining, idle_shared.drain_started = True, 5.0
    idle.receive(GET, 101.0, 6.0)
    assert idle.refusal(idle.queue[0][0], 6.0) is None  # within the idle grace: served
    idle.receive(GET, 101.0, 6.0)
    assert idle.refusal(idle.queue[1][0], 6.0) is not None  # the grace covers one request


def test_overload_refuses_all_but_probes() -> None:
    config = Config(max_concurrent_requests=2)
    conn = H1Connection(config, Shared(active_requests=2))
    probe = sorted(config.probe_paths)[0].encode()
    conn.receive(GET + b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % probe, 100.0, 1.0)
    refusal = conn.refusal(conn.queue[0][0], 1.0)
    assert refusal is not None
    assert (refusal.status, refusal.reason) == (503, "overloaded")
    assert conn.refusal(conn.queue[1][0], 1.0) is None


def test_an_expectation_with_content_over_the_limit_gets_413_and_no_continue() -> None:
    conn = core(Config(max_body_bytes=10))
    actions = conn.receive(post(11, extra=b"Expect: 100-continue\r\n"), 100.0, 1.0)
    assert kinds(actions) == [FAIL]  # refused at its header section: nothing deferred
    assert error_of(actions).status == 413


def test_drain_keeps_a_connection_whose_deferred_content_is_awaited() -> None:
    class Deferred(Request):
        __slots__ = ()

    conn = H1Connection(Config(), Shared(), make_deferred=Deferred)
    conn.open(100.0, draining=False, over_limit=False)
    conn.receive(post(5, extra=b"Expect: 100-continue\r\n"), 100.0, 1.0)
    conn.queue.pop(0)
    conn.busy = True  # its handler runs and has not read the content yet
    assert conn.phase is BODY
    assert conn.drain(101.0, served=0) == KEEP


def test_a_request_completed_behind_a_streamed_one_pauses_reading() -> None:
    conn = core(streaming=True)
    actions = conn.receive(post(5), 100.0, 1.0)
    assert kinds(actions) == [HEAD_DONE]
    conn.queue.pop(0)
    conn.busy = True  # dispatched at its header section; its content is still coming
    # Its content ends while its handler runs (reading pauses: nothing more is wanted
    # until it answers), and the GET behind it waits in the queue.
    assert kinds(conn.receive(b"hello" + GET, 100.0, 1.0)) == [
        BODY_PIECE,
        END,
        PAUSE,
        HEAD_DONE,
        PAUSE,
    ]
    assert len(conn.queue) == 1
