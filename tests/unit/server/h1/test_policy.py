"""The request policy of the HTTP/1.1 core, from values: what is refused, with what status."""

from __future__ import annotations

import pytest

from nessen.errors import ProtocolError
from nessen.server.h1 import policy
from nessen.server.h1.framing import ResponseError, error_body

ALLOWED = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@pytest.mark.parametrize(
    ("version", "status", "reason"),
    [
        ("0.9", 400, "http_0_9"),
        ("1.2", 505, "http_version"),
        ("2.0", 505, "http_version"),
    ],
)
def test_versions_other_than_1_0_and_1_1_are_refused(
    version: str, status: int, reason: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        policy.check_version(version)
    assert (caught.value.status, caught.value.reason) == (status, reason)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_1_0_and_1_1_are_accepted(version: str) -> None:
    policy.check_version(version)


def test_a_method_outside_the_allowed_ones_is_501() -> None:
    assert policy.method_name(b"GET", ALLOWED) == "GET"
    with pytest.raises(ProtocolError) as caught:
        policy.method_name(b"TRACE", ALLOWED)
    assert (caught.value.status, caught.value.reason) == (501, "method_not_implemented")


@pytest.mark.parametrize(
    ("count", "value", "version", "reason"),
    [
        (0, b"", "1.1", "missing_host"),
        (2, b"a", "1.1", "duplicate_host"),
        (2, b"a", "1.0", "duplicate_host"),
        (1, b"a b", "1.1", "bad_host"),
        (1, b"a/b", "1.1", "bad_host"),
        (1, b"[::1", "1.1", "bad_host"),
    ],
)
def test_host_fields_rfc_9112_3_2(count: int, value: bytes, version: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        policy.check_host(count, value, version)
    assert (caught.value.status, caught.value.reason) == (400, reason)


@pytest.mark.parametrize(
    ("count", "value", "version"),
    [(1, b"example.com", "1.1"), (1, b"[::1]:8080", "1.1"), (0, b"", "1.0"), (1, b"", "1.1")],
)
def test_good_host_fields_pass(count: int, value: bytes, version: str) -> None:
    policy.check_host(count, value, version)


@pytest.mark.parametrize(
    ("count", "value", "version", "status", "reason"),
    [
        (1, b"chunked", "1.0", 400, "http10_transfer_encoding"),
        (2, b"chunked", "1.1", 501, "unsupported_transfer_coding"),
        (1, b"gzip, chunked", "1.1", 501, "unsupported_transfer_coding"),
        (1, b"identity", "1.1", 501, "unsupported_transfer_coding"),
    ],
)
def test_transfer_codings_other_than_one_chunked_are_refused(
    count: int, value: bytes, version: str, status: int, reason: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        policy.check_transfer_coding(count, value, version)
    assert (caught.value.status, caught.value.reason) == (status, reason)


def test_one_chunked_is_accepted_whatever_its_case_and_spaces() -> None:
    policy.check_transfer_coding(1, b" Chunked ", "1.1")


def test_expect() -> None:
    assert policy.expects_continue(None, "1.1") is False
    assert policy.expects_continue(b"100-Continue", "1.1") is True
    assert policy.expects_continue(b"100-continue", "1.0") is False  # ignored on 1.0
    with pytest.raises(ProtocolError) as caught:
        policy.expects_continue(b"something-else", "1.1")
    assert caught.value.status == 417


@pytest.mark.parametrize(
    ("target", "host", "authority"),
    [
        (b"/a", b"example.com", b"example.com"),
        (b"*", b"example.com", b"example.com"),
        (b"http://other.example/a?b", b"example.com", b"other.example"),
        (b"http://user@other.example:81/", b"example.com", b"other.example:81"),
    ],
)
def test_the_authority_of_absolute_form_wins_over_host(
    target: bytes, host: bytes, authority: bytes
) -> None:
    assert policy.request_authority(target, host) == authority


@pytest.mark.parametrize(
    ("start", "status"),
    [(b"FOO / HTTP/1.1", 501), (b"get / HTTP/1.1", 400), (b"\x16\x03\x01", 400), (None, 400)],
)
def test_a_method_llhttp_refuses_is_501_only_when_it_is_a_token(
    start: bytes | None, status: int
) -> None:
    assert policy.method_error(start).status == status


def test_llhttp_version_errors_are_505_and_others_400() -> None:
    assert policy.parse_error("Invalid HTTP version").status == 505
    assert policy.parse_error("Invalid header value char").status == 400


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (policy.uri_too_long(b"/aaaa", 3), 414, "uri_too_long"),
        (policy.header_too_large(9000, 8192), 431, "header_too_large"),
        (policy.too_many_headers(100), 431, "too_many_headers"),
        (policy.body_too_large(2, 1, declared=True), 413, "body_too_large"),
        (policy.body_buffer_full(5, 4), 503, "body_buffer_full"),
        (policy.too_many_connections(10), 503, "max_connections"),
        (policy.headers_late(10), 408, "headers_timeout"),
    ],
)
def test_limit_errors_carry_their_status(error: ProtocolError, status: int, reason: str) -> None:
    assert (error.status, error.reason) == (status, reason)


# --- the body deadline, from a clock given as values -------------------------------------


def test_a_stalled_body_is_late_body_timeout_after_its_last_piece() -> None:
    # 10 s timeout, no rate: the deadline is always last + 10
    assert policy.body_deadline(0.0, 0.0, 0, 10.0, 0) == 10.0
    assert policy.body_deadline(0.0, 25.0, 10**6, 10.0, 0) == 35.0
    assert policy.body_late(0.0, 25.0, 10**6, 35.0, 10.0, 0).reason == "body_timeout"


def test_a_steady_body_above_the_minimum_rate_is_never_late() -> None:
    # 1 MB/s for 100 s against 240 B/s: the rate deadline is far off, the stall one rules
    started = 0.0
    for second in range(1, 101):
        received = second * 10**6
        deadline = policy.body_deadline(started, float(second), received, 30.0, 240)
        assert deadline == second + 30.0


def test_a_trickle_below_the_minimum_rate_is_late_once_the_grace_is_over() -> None:
    # 100 bytes/s against 240: within the 30 s grace the stall deadline rules; after it,
    # the rate deadline (started + received / rate) comes before last + timeout
    assert policy.body_deadline(0.0, 10.0, 1000, 30.0, 240) == 30.0  # grace: max(30, 4.2)
    deadline = policy.body_deadline(0.0, 60.0, 6000, 30.0, 240)
    assert deadline == 30.0  # 6000 / 240 = 25 s of credit, less than the 30 s grace
    late = policy.body_late(0.0, 60.0, 6000, 60.5, 30.0, 240)
    assert (late.status, late.reason) == (408, "body_too_slow")
    assert "below body_min_rate 240 bytes/s" in str(late)


# --- the response --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [100, 101, 199, 600, 0])
def test_a_handler_status_outside_200_599_is_a_response_error(status: int) -> None:
    with pytest.raises(ResponseError):
        policy.check_response(status, 0, 100)


def test_content_over_max_response_bytes_is_a_response_error() -> None:
    policy.check_response(200, 100, 100)
    with pytest.raises(ResponseError):
        policy.check_response(200, 101, 100)


@pytest.mark.parametrize("value", ["12", " 12 "])
def test_a_declared_length_is_one_decimal_number(value: str) -> None:
    assert policy.declared_length(value) == 12


@pytest.mark.parametrize("value", ["-1", "1e3", "12, 12", "", "١٢"])
def test_a_declared_length_that_is_not_a_decimal_number_is_refused(value: str) -> None:
    with pytest.raises(ResponseError):
        policy.declared_length(value)


def test_the_error_body_names_status_and_reason_and_never_client_bytes() -> None:
    assert error_body(413, "body_too_large") == (
        b'{"error":"Content Too Large","reason":"body_too_large"}'
    )
    assert error_body(503, "request_timeout", "abc-1") == (
        b'{"error":"Service Unavailable","reason":"request_timeout","request_id":"abc-1"}'
    )


@pytest.mark.parametrize(("data", "ended"), [(b"\r\n", True), (b"\n", True), (b"\r\n", False)])
def test_a_newline_alone_ends_an_http_0_9_line_when_the_read_before_ended_at_the_target(
    data: bytes, ended: bool
) -> None:
    assert policy.bare_request_line(data, b"GET", b"/x", False, False, ended) is ended


@pytest.mark.parametrize(
    ("data", "target", "in_data", "began", "bare"),
    [
        (b"GET /x\r\n", b"/x", True, True, True),
        (b"GET /x?y\n", b"/x?y", True, True, True),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /second\r\n", b"/second", True, True, True),
        (b"bbbbGET /nine\r\n", b"/nine", True, True, True),  # after a body, no newline
        (b"b\nbbGET /nine\r\n", b"/nine", True, True, True),
        (b"cond\r\n", b"/second", True, False, True),  # the line began earlier: its tail
        (b"1.1\r\n", b"/v1.1", True, False, True),  # its target ends the line: no version
        (b"GET / HTTP/1.1\r\n", b"/", True, True, False),
        (b"GET /x HTTP/1.1\r\nX-A: GET /x\r\n", b"/x", True, True, False),  # a field line
        (b"GET / HTTP/1.1\r\nHost: test\r\n", b"/", True, True, False),
        (b"1.1 HTTP/1.1\r\n", b"/v1.1", True, False, False),
        (b" HTTP/1.1\r\n", b"/x", False, False, False),
        (b"\r\n", b"/x", False, False, False),  # the version may have come with the target
        (b"1\r\nHost: t\r\n", b"/x1", True, False, False),
    ],
)
def test_a_request_line_without_a_version_is_http_0_9(
    data: bytes, target: bytes, in_data: bool, began: bool, bare: bool
) -> None:
    assert policy.bare_request_line(data, b"GET", target, in_data, began) is bare


def test_client_bytes_in_messages_are_quoted_as_text() -> None:
    # The log shows 'evil.com', as an operator would type it, not Python's b'evil.com'.
    assert str(policy.host_not_allowed(b"evil.com")) == "Host 'evil.com' is not in allowed_hosts"
    assert "b'" not in str(policy.method_error(b"BREW / HTTP/1.1"))
