"""Response framing of the HTTP/1.1 core, from values: heads, the 101, the server's answer."""

from __future__ import annotations

import json
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nessen.http import Response
from nessen.server.h1.framing import (
    ASKS_CLOSE,
    OWN_DATE,
    OWN_SERVER,
    PreparedResponse,
    ResponseError,
    claims_of,
    encode_fields,
    error_answer,
    http_date,
    response_head,
    switching_head,
)

FIXED = "Date: Thu, 03 Dec 2026 12:00:00 GMT\r\nServer: nessen\r\n"


def test_a_head_lists_status_fixed_type_handler_framing_and_connection_fields_in_order() -> None:
    response = Response(201, b"{}", content_type="application/json")
    response.headers["X-Trace"] = "abc"
    head = response_head(response, FIXED, "Content-Length: 2\r\n", "Connection: close\r\n")
    assert head == (
        b"HTTP/1.1 201 Created\r\n"
        b"Date: Thu, 03 Dec 2026 12:00:00 GMT\r\nServer: nessen\r\n"
        b"Content-Type: application/json\r\n"
        b"X-Trace: abc\r\n"
        b"Content-Length: 2\r\n"
        b"Connection: close\r\n"
        b"\r\n"
    )


def test_a_prepared_response_writes_its_serialised_fields_as_they_are() -> None:
    response = PreparedResponse(200, b"", fields="X-A: 1\r\nX-B: 2\r\n")
    head = response_head(response, "", "Content-Length: 0\r\n", "")
    assert head == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 0\r\n\r\n"


def test_a_prepared_response_sets_every_attribute_a_response_has() -> None:
    # PreparedResponse sets Response's attributes itself (no Response.__init__ call): a
    # slot added to Response must be set there too.
    for name in Response.__slots__:
        assert hasattr(PreparedResponse(200, fields=""), name), name


def test_a_prepared_response_with_fields_added_or_a_type_goes_out_whole() -> None:
    # The one-piece head of a PreparedResponse is only for its fields alone; a Content-Type,
    # encoded fields added after it was made, or an odd status take the general path.
    response = PreparedResponse(299, b"", fields="X-A: 1\r\n")
    response.content_type = "text/plain"
    response.add_encoded_fields("X-B: 2\r\n", ("x-b",))
    head = response_head(response, FIXED, "Content-Length: 0\r\n", "")
    assert head == (
        b"HTTP/1.1 299 \r\n" + FIXED.encode() + b"Content-Type: text/plain\r\n"
        b"X-A: 1\r\nX-B: 2\r\nContent-Length: 0\r\n\r\n"
    )


def test_a_prepared_response_whose_fields_are_not_latin_1_is_refused() -> None:
    response = PreparedResponse(200, b"", fields="X-A: \u20ac\r\n")
    with pytest.raises(ResponseError, match="not latin-1"):
        response_head(response, FIXED, "Content-Length: 0\r\n", "")


@pytest.mark.parametrize("status", [100, 101, 199, 600, 0])
def test_a_status_outside_200_to_599_is_not_serialised(status: int) -> None:
    with pytest.raises(ResponseError, match=r"must be 200\.\.599"):
        response_head(Response(status), FIXED, "", "")


def test_a_handler_field_that_would_split_the_response_is_refused() -> None:
    response = Response(200)
    response.headers["X-Bad"] = "a\r\nSet-Cookie: stolen=1"
    with pytest.raises(ResponseError, match="CR, LF or NUL"):
        response_head(response, FIXED, "Content-Length: 0\r\n", "")


def test_a_field_value_past_latin_1_is_refused_rfc_9110_5_5() -> None:
    response = Response(200)
    response.headers["X-Name"] = "caf\u00e9 \u2603"  # é is latin-1, the snowman is not
    with pytest.raises(ResponseError, match="not latin-1"):
        response_head(response, FIXED, "Content-Length: 0\r\n", "")


def test_the_framing_fields_a_handler_sets_are_skipped() -> None:
    response = Response(200)
    response.headers["Content-Length"] = "999"
    response.headers["Connection"] = "keep-alive"
    head = response_head(response, "", "Content-Length: 0\r\n", "Connection: close\r\n")
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def test_a_handlers_server_and_date_are_claimed_and_sent() -> None:
    response = Response(200)
    response.headers["Server"] = "shop"
    response.headers["Date"] = "Tue, 01 Dec 2026 10:00:00 GMT"
    response.headers["Connection"] = "Close"
    assert claims_of(response) == OWN_SERVER | OWN_DATE | ASKS_CLOSE
    head = response_head(response, "", "Content-Length: 0\r\n", "")
    assert b"Server: shop\r\n" in head
    assert b"Date: Tue, 01 Dec 2026 10:00:00 GMT\r\n" in head
    assert b"Connection" not in head  # the server writes its own
    assert claims_of(Response(200)) == 0
    assert claims_of(PreparedResponse(200, fields="", claims=OWN_SERVER)) == OWN_SERVER


def test_encode_fields_still_skips_server_and_date_by_default() -> None:
    # (the 101's head and other callers: the cache of valid names must not let them through)
    response_head(Response(200, headers={"Server": "a"}), "", "", "")
    assert encode_fields([("Server", "a"), ("Date", "b"), ("X-A", "1")]) == "X-A: 1\r\n"


def test_a_101_says_connection_upgrade_and_the_protocol() -> None:
    response = Response(101)
    response.headers["Sec-WebSocket-Accept"] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    head = switching_head(FIXED, response, "websocket")
    assert head == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Date: Thu, 03 Dec 2026 12:00:00 GMT\r\nServer: nessen\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )


def test_a_101_whose_protocol_holds_a_line_break_is_refused() -> None:
    with pytest.raises(ResponseError, match="CR or LF"):
        switching_head(FIXED, Response(101), "websocket\r\nX-Injected: 1")


def split(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    line, *fields = head.decode("latin-1").split("\r\n")
    return line, dict(field.split(": ", 1) for field in fields), body


def test_the_servers_answer_is_json_with_its_length_and_close() -> None:
    data, sent = error_answer(413, "body_too_large", fixed_fields=FIXED)
    line, fields, body = split(data)
    assert line == "HTTP/1.1 413 Content Too Large"
    assert fields["Content-Type"] == "application/json"
    assert fields["Connection"] == "close"
    assert int(fields["Content-Length"]) == len(body) == sent
    assert json.loads(body) == {"error": "Content Too Large", "reason": "body_too_large"}
    assert "Retry-After" not in fields
    assert "X-Request-ID" not in fields


def test_a_503_in_the_handlers_place_carries_retry_after_the_request_id_and_cors() -> None:
    data, sent = error_answer(
        503,
        "request_timeout",
        fixed_fields=FIXED,
        cors="Access-Control-Allow-Origin: https://app.example\r\nVary: Origin\r\n",
        request_id="req-42",
        retry_after=True,
    )
    line, fields, body = split(data)
    assert line == "HTTP/1.1 503 Service Unavailable"
    assert fields["Retry-After"] == "1"
    assert fields["X-Request-ID"] == "req-42"
    assert fields["Access-Control-Allow-Origin"] == "https://app.example"
    assert json.loads(body)["request_id"] == "req-42"
    assert sent == len(body)


def test_an_answer_to_head_has_the_length_of_the_content_it_does_not_send() -> None:
    data, sent = error_answer(503, "draining", fixed_fields="", close=False, head=True)
    _, fields, body = split(data)
    assert body == b""
    assert sent == 0
    assert int(fields["Content-Length"]) > 0  # RFC 9110 §9.3.2: the length a GET would get
    assert "Connection" not in fields


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (784111777, "Sun, 06 Nov 1994 08:49:37 GMT"),  # RFC 9110 §5.6.7's example
        (951782400, "Tue, 29 Feb 2000 00:00:00 GMT"),
        (4107542399.75, "Sun, 28 Feb 2100 23:59:59 GMT"),  # whole seconds
        (4107542400, "Mon, 01 Mar 2100 00:00:00 GMT"),  # 2100 is no leap year
    ],
)
def test_http_date_is_an_imf_fixdate(timestamp: float, expected: str) -> None:
    assert http_date(timestamp) == expected


@given(st.integers(min_value=0, max_value=253402300799))  # to 9999-12-31T23:59:59
def test_http_date_writes_what_email_utils_formatdate_writes(timestamp: int) -> None:
    assert http_date(timestamp) == formatdate(timestamp, usegmt=True)
