"""Size limits enforced as bytes arrive: 414, 431, 413 (ARCHITECTURE.md, Rejections)."""

from __future__ import annotations

import json
import socket

import pytest

from nessen import Config
from nessen.server.h1.connection import FEED_SLICE, HEAD_FRAMING_SLACK
from tests.conftest import ServeFactory
from tests.integration.wire import expect_rejection, no_data_within
from tests.rawhttp import RawClient, get


def _target_of(length: int) -> str:
    return "/path?" + "q" * (length - len("/path?"))


# --- 414: request target ---------------------------------------------------------------


def test_target_at_the_limit_is_served(serve: ServeFactory) -> None:
    server = serve(max_target_bytes=64)
    with RawClient(server.address) as client:
        response = client.request(get(_target_of(64)))
    assert response.status == 200
    assert json.loads(response.body)["query"] == "q" * 58


def test_target_one_byte_over_the_limit_gets_414(serve: ServeFactory) -> None:
    server = serve(max_target_bytes=64)
    with RawClient(server.address) as client:
        client.send(get(_target_of(65)))
        expect_rejection(client, 414, "uri_too_long")


def test_414_is_sent_before_the_request_line_ends(serve: ServeFactory) -> None:
    server = serve(max_target_bytes=64)
    with RawClient(server.address) as client:
        client.send(b"GET /" + b"a" * 200)  # no SP, no CRLF: the target is still going
        expect_rejection(client, 414, "uri_too_long")


# --- 431: header section -------------------------------------------------------------------


def test_header_section_over_max_header_bytes_gets_431(serve: ServeFactory) -> None:
    server = serve(max_header_bytes=512, max_target_bytes=256)
    with RawClient(server.address) as client:
        client.send(get("/", extra="X-Big: " + "a" * 600 + "\r\n"))
        expect_rejection(client, 431, "header_too_large")


def test_header_section_split_over_many_fields_gets_431(serve: ServeFactory) -> None:
    server = serve(max_header_bytes=512, max_target_bytes=256)
    fields = "".join(f"X-Field-{i}: {'v' * 40}\r\n" for i in range(12))
    with RawClient(server.address) as client:
        client.send(get("/", extra=fields))
        expect_rejection(client, 431, "header_too_large")


def test_header_section_under_max_header_bytes_is_served(serve: ServeFactory) -> None:
    server = serve(max_header_bytes=512, max_target_bytes=256)
    with RawClient(server.address) as client:
        response = client.request(get("/", extra="X-Big: " + "a" * 300 + "\r\n"))
    assert response.status == 200


@pytest.mark.parametrize("pieces", [1, 16], ids=["one-write", "sixteen-writes"])
def test_431_does_not_wait_for_an_endless_field_line(serve: ServeFactory, pieces: int) -> None:
    # The parser reports a field only once its line ends, so an unterminated line is
    # bounded by its raw bytes: max_header_bytes plus the request line's framing plus one
    # slice of input (protocol.py: HEAD_FRAMING_SLACK, FEED_SLICE). One byte past that,
    # in one write or trickled, with the default 16 KiB limit: refused at once, not after
    # the header deadline (an hour here).
    server = serve(headers_timeout=3600.0)
    limit = Config().max_header_bytes + HEAD_FRAMING_SLACK + FEED_SLICE
    line = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (limit + 1)
    with RawClient(server.address) as client:
        step = -(-len(line) // pieces)
        for start in range(0, len(line), step):
            client.send(line[start : start + step])
        expect_rejection(client, 431, "header_too_large")


def test_header_count_at_the_limit_is_served(serve: ServeFactory) -> None:
    server = serve(max_header_count=5)
    fields = "".join(f"X-{i}: v\r\n" for i in range(4))  # plus Host: 5 fields
    with RawClient(server.address) as client:
        response = client.request(get("/", extra=fields))
    assert response.status == 200


def test_one_field_over_max_header_count_gets_431(serve: ServeFactory) -> None:
    server = serve(max_header_count=5)
    fields = "".join(f"X-{i}: v\r\n" for i in range(5))  # plus Host: 6 fields
    with RawClient(server.address) as client:
        client.send(get("/", extra=fields))
        expect_rejection(client, 431, "too_many_headers")


# --- 413: content --------------------------------------------------------------------------


def _post_head(length: int) -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % length


def test_body_at_the_limit_is_served(serve: ServeFactory) -> None:
    server = serve(max_body_bytes=10)
    with RawClient(server.address) as client:
        response = client.request(_post_head(10) + b"0123456789")
    assert (response.status, response.body) == (200, b"0123456789")


def test_declared_content_length_over_limit_gets_413_before_the_body(
    serve: ServeFactory,
) -> None:
    server = serve(max_body_bytes=10)
    with RawClient(server.address) as client:
        client.send(_post_head(11))  # the body is never sent: 413 must not wait for it
        expect_rejection(client, 413, "body_too_large")


def test_huge_declared_content_length_gets_413(serve: ServeFactory) -> None:
    server = serve(max_body_bytes=10)
    with RawClient(server.address) as client:
        client.send(_post_head(10**15))
        expect_rejection(client, 413, "body_too_large")


def test_413_is_readable_while_the_client_keeps_sending(serve: ServeFactory) -> None:
    server = serve(max_body_bytes=1000)
    with RawClient(server.address) as client:
        client.send(_post_head(200_000))
        client.send(b"x" * 200_000)  # the lingering close drains this without a reset
        expect_rejection(client, 413, "body_too_large")


def test_413_with_the_body_already_sent_ends_in_fin_not_reset(serve: ServeFactory) -> None:
    server = serve(max_body_bytes=1000)
    with RawClient(server.address) as client:
        client.send(_post_head(50_000) + b"x" * 50_000)  # unread by the server when it answers
        expect_rejection(client, 413, "body_too_large")  # checks for a clean FIN


CHUNKED_HEAD = b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_chunked_body_at_the_limit_is_served(serve: ServeFactory) -> None:
    server = serve(max_body_bytes=10)
    with RawClient(server.address) as client:
        response = client.request(CHUNKED_HEAD + b"5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n")
    assert (response.status, response.body) == (200, b"abcdefghij")


def test_chunked_body_whose_running_total_passes_the_limit_gets_413(
    serve: ServeFactory,
) -> None:
    server = serve(max_body_bytes=10)
    with RawClient(server.address) as client:
        client.send(CHUNKED_HEAD + b"6\r\nabcdef\r\n")
        client.send(b"5\r\nghijk\r\n")  # total 11; the last chunk never comes
        expect_rejection(client, 413, "body_too_large")


def test_oversized_chunk_gets_413_without_waiting_for_its_end(serve: ServeFactory) -> None:
    server = serve(max_body_bytes=10)
    with RawClient(server.address) as client:
        client.send(CHUNKED_HEAD + b"FFFFFF\r\n" + b"a" * 11)
        expect_rejection(client, 413, "body_too_large")


@pytest.mark.parametrize(
    "pieces",
    [
        [CHUNKED_HEAD + b"FFFFFF\r\n"],  # the header section and the size line together
        [CHUNKED_HEAD, b"401;ext=1\r\n"],  # the size line in its own write: 1025
        [CHUNKED_HEAD + b"5\r\nhello\r\n", b"3FC\r\n"],  # 5 + 1020 bytes: past 1024
    ],
)
def test_a_chunk_declared_past_the_limit_gets_413_before_any_of_its_data(
    serve: ServeFactory, pieces: list[bytes]
) -> None:
    server = serve(max_body_bytes=1024)
    with RawClient(server.address) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            client.send(piece)
            if piece is not pieces[-1]:
                assert no_data_within(client, 0.2)  # nothing refused yet
        # Not one byte of the chunk's data is sent: the answer comes from its header.
        expect_rejection(client, 413, "body_too_large")
