"""Compression over real HTTP: the bytes on the wire, negotiation, streaming flushes."""

from __future__ import annotations

import gzip
import zlib

import brotli
import httpx
import pytest
import zstandard

from tests.conftest import ServeFactory
from tests.integration.middleware.apps import PAYLOAD, stacked_runtime
from tests.rawhttp import RawClient, get


@pytest.mark.parametrize(
    ("accept_encoding", "coding"),
    [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "br"),
        ("gzip;q=1.0, br;q=0.1", "gzip"),
        ("br;q=0, zstd;q=0, *", "gzip"),
        ("identity", None),
        ("*;q=0", None),
        ("", None),
    ],
)
def test_negotiated_coding_on_the_wire(
    serve: ServeFactory, accept_encoding: str, coding: str | None
) -> None:
    server = serve(stacked_runtime())
    with RawClient(server.address) as client:
        response = client.request(get("/data", extra=f"Accept-Encoding: {accept_encoding}\r\n"))
    assert response.status == 200
    assert response.header("content-encoding") == coding
    assert response.header("content-length") == str(len(response.body))
    assert response.header("vary") == "Accept-Encoding"
    decoders = {
        "gzip": gzip.decompress,
        "br": brotli.decompress,
        "zstd": zstandard.ZstdDecompressor().decompress,
        None: bytes,
    }
    assert decoders[coding](response.body) == PAYLOAD


def test_httpx_reads_it_transparently(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with httpx.Client(base_url=server.url) as client:
        response = client.get("/data")  # httpx offers gzip, deflate, br, zstd
    assert response.headers["content-encoding"] == "br"
    assert response.content == PAYLOAD


def test_pre_encoded_content_is_not_compressed_again(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with RawClient(server.address) as client:
        response = client.request(get("/pre-encoded", extra="Accept-Encoding: br, gzip\r\n"))
    assert response.header("content-encoding") == "gzip"
    assert [n for n in response.header_names() if n == "content-encoding"] == ["content-encoding"]
    assert gzip.decompress(response.body) == PAYLOAD


def test_small_and_head_responses_are_not_compressed(serve: ServeFactory) -> None:
    server = serve(stacked_runtime())
    with RawClient(server.address) as client:
        small = client.request(get("/small", extra="Accept-Encoding: gzip\r\n"))
        client.send(b"HEAD /data HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        head = client.response(head_request=True)
        after = client.request(get("/small"))  # the connection is still in step
    assert small.header("content-encoding") is None
    assert small.body == b'{"ok":true}'
    assert small.header("vary") == "Accept-Encoding"
    assert head.header("content-encoding") is None
    assert head.header("content-length") == str(len(PAYLOAD))
    assert head.header("vary") == "Accept-Encoding"
    assert after.status == 200


def test_a_stream_arrives_compressed_chunk_by_chunk(serve: ServeFactory) -> None:
    runtime = stacked_runtime()
    server = serve(runtime)
    release = runtime.release  # type: ignore[attr-defined]
    decoder = zlib.decompressobj(31)
    with RawClient(server.address) as client:
        client.send(get("/events", extra="Accept-Encoding: gzip\r\n"))
        # the first event must be readable while the handler still waits to send the second
        seen = b""
        while b"\r\n\r\n" not in client.buffer:
            assert client._fill()
        head, _, client.buffer = client.buffer.partition(b"\r\n\r\n")
        assert b"\r\nContent-Encoding: gzip\r\n" in head
        assert b"\r\nTransfer-Encoding: chunked\r\n" in head
        while seen != b"data: first\n\n" * 20:
            while True:  # one whole chunk of the chunked framing
                size_line, sep, rest = client.buffer.partition(b"\r\n")
                if sep and len(rest) >= int(size_line, 16) + 2:
                    break
                assert client._fill()
            size = int(size_line, 16)
            seen += decoder.decompress(rest[:size])
            client.buffer = rest[size + 2 :]
        release.set()
        while not client.buffer.endswith(b"0\r\n\r\n"):
            assert client._fill()
    rest_chunks = client.buffer
    body = b""
    while rest_chunks:
        size_line, _, rest_chunks = rest_chunks.partition(b"\r\n")
        size = int(size_line, 16)
        body += rest_chunks[:size]
        rest_chunks = rest_chunks[size + 2 :]
    assert seen + decoder.decompress(body) + decoder.flush() == (
        b"data: first\n\n" * 20 + b"data: second\n\n" * 20
    )
