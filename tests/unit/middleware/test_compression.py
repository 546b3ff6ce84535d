from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Iterator

import brotli
import pytest
import zstandard

from nessen.http import Request, Response
from nessen.middleware.compression import (
    compressible,
    compression_middleware,
    negotiate,
    parse_accept_encoding,
)
from tests.unit.middleware.helpers import make_request, run, text_of

BODY = text_of(4000)


def page(**kwargs: object) -> Response:
    return Response.text(BODY, **kwargs)  # type: ignore[arg-type]


async def send(
    accept_encoding: str | None,
    response: Response | None = None,
    *,
    method: str = "GET",
    level: int = 6,
    threshold: int = 1024,
) -> Response:
    headers = [] if accept_encoding is None else [("Accept-Encoding", accept_encoding)]

    async def handler(ctx: Request) -> Response:
        return response if response is not None else page()

    middleware = compression_middleware(level, threshold)
    return await run(middleware, make_request(method, "/", headers), handler)


def decode(response: Response) -> bytes:
    coding = response.headers.get("content-encoding")
    if coding == "gzip":
        return gzip.decompress(response.body)
    if coding == "br":
        return bytes(brotli.decompress(response.body))
    if coding == "zstd":
        return bytes(zstandard.ZstdDecompressor().decompress(response.body))
    assert coding is None
    return response.body


# --- negotiation (RFC 9110 §12.5.3) --------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_encoding", "chosen"),
    [
        (None, "identity"),  # no field: no preference; we send identity
        ("", "identity"),  # empty: identity only
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, br", "br"),  # a tie goes to the server's preference
        ("gzip, deflate, br, zstd", "br"),  # what browsers send
        ("gzip, zstd", "zstd"),
        ("gzip;q=1.0, br;q=0.1", "gzip"),  # q-values beat server preference
        ("br;q=0.5, gzip;q=0.8, zstd;q=0.7", "gzip"),
        ("br;q=0, gzip", "gzip"),
        ("br;q=0, gzip;q=0, zstd;q=0", "identity"),
        ("*", "br"),
        ("*;q=0.5, gzip", "gzip"),  # explicit gzip 1.0 beats * 0.5
        ("*, br;q=0", "zstd"),
        ("*;q=0", None),  # nothing acceptable, identity included
        ("*;q=0, identity", "identity"),
        ("identity;q=0", None),  # unlisted codings are not acceptable without "*"
        ("gzip, identity;q=0", "gzip"),
        ("br;q=0, gzip;q=0, zstd;q=0, identity;q=0", None),
        ("deflate", "identity"),  # nothing we produce: identity is acceptable
        ("compress, deflate;q=0.5", "identity"),
        ("identity, gzip;q=0.5", "identity"),  # identity explicitly preferred
        ("gzip;q=0.5, identity;q=0.5", "gzip"),  # a tie with identity: compress
        ("x-gzip", "gzip"),  # RFC 9110 §8.4.1.3
        ("GZIP", "gzip"),  # case-insensitive
        ("gzip;Q=0.3, br;q=0.2", "gzip"),
        ("gzip; q=0.3 , br ;q=0.9", "br"),  # whitespace
        ("br;q=2, gzip;q=0.1", "gzip"),  # invalid qvalue: element ignored
        ("br;q=abc, gzip;q=0.1", "gzip"),
        ("br;q=0.0001, gzip;q=0.1", "gzip"),  # four decimals: invalid
        ("br;q=1., gzip", "br"),
        (",, gzip ,", "gzip"),
        ("gzip;q=0, gzip", "identity"),  # the first element for a coding wins: q=0
    ],
)
def test_negotiation_table(accept_encoding: str | None, chosen: str | None) -> None:
    assert negotiate(accept_encoding) == chosen


def test_server_preference_order_is_configurable() -> None:
    assert negotiate("gzip, br", ["gzip", "br"]) == "gzip"
    assert negotiate("br", ["gzip"]) == "identity"


def test_parse_keeps_zero_weights() -> None:
    assert parse_accept_encoding("gzip;q=0.8, br;q=0, *") == {"gzip": 0.8, "br": 0.0, "*": 1.0}


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/html; charset=utf-8", True),
        ("text/plain", True),
        ("text/css", True),
        ("text/event-stream", True),
        ("application/json", True),
        ("application/problem+json", True),
        ("application/vnd.api+json; charset=utf-8", True),
        ("application/javascript", True),
        ("text/javascript", True),
        ("application/xml", True),
        ("application/atom+xml", True),
        ("image/svg+xml", True),
        ("APPLICATION/JSON", True),
        ("image/png", False),
        ("image/jpeg", False),
        ("application/octet-stream", False),
        ("application/zip", False),
        ("application/gzip", False),
        ("video/mp4", False),
        ("font/woff2", False),
    ],
)
def test_compressible_types(content_type: str, expected: bool) -> None:
    assert compressible(content_type) is expected


# --- what gets compressed ------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
async def test_each_coding_round_trips(coding: str) -> None:
    response = await send(coding)
    assert response.headers["content-encoding"] == coding
    assert len(response.body) < len(BODY) / 5
    assert decode(response) == BODY.encode()
    assert response.headers["vary"] == "Accept-Encoding"


async def test_the_level_is_used() -> None:
    fast = await send("br", level=1)
    small = await send("br", level=11)
    assert len(small.body) < len(fast.body)
    gzip_max = await send("gzip", level=11)  # gzip stops at 9
    assert gzip_max.body == zlib.compress(BODY.encode(), 9, wbits=31)


async def test_below_the_threshold_is_sent_as_is_but_still_varies() -> None:
    response = await send("gzip", Response.text("x" * 1023))
    assert "content-encoding" not in response.headers
    assert response.body == b"x" * 1023
    assert response.headers["vary"] == "Accept-Encoding"
    at_threshold = await send("gzip", Response.text("x" * 1024))
    assert at_threshold.headers["content-encoding"] == "gzip"


async def test_identity_when_the_client_sends_no_accept_encoding() -> None:
    response = await send(None)
    assert "content-encoding" not in response.headers
    assert response.body == BODY.encode()
    assert response.headers["vary"] == "Accept-Encoding"


async def test_nothing_acceptable_still_sends_identity() -> None:
    response = await send("*;q=0")
    assert response.status == 200
    assert "content-encoding" not in response.headers
    assert response.body == BODY.encode()


@pytest.mark.parametrize(
    "content_type", ["image/png", "application/octet-stream", "application/zip"]
)
async def test_incompressible_types_are_left_alone(content_type: str) -> None:
    original = Response(200, b"\x00" * 5000, content_type=content_type)
    response = await send("gzip", original)
    assert "content-encoding" not in response.headers
    assert "vary" not in response.headers  # not negotiable
    assert response.body == b"\x00" * 5000


async def test_a_content_type_in_the_header_fields_counts() -> None:
    original = Response(200, BODY, headers={"Content-Type": "text/csv"})
    response = await send("gzip", original)
    assert response.headers["content-encoding"] == "gzip"


async def test_no_content_type_is_left_alone() -> None:
    response = await send("gzip", Response(200, BODY))
    assert "content-encoding" not in response.headers


async def test_never_double_compressed() -> None:
    already = gzip.compress(BODY.encode())
    original = Response(
        200, already, headers={"Content-Encoding": "gzip"}, content_type="text/plain"
    )
    response = await send("br, gzip", original)
    assert response.headers.getall("content-encoding") == ["gzip"]
    assert response.body == already
    assert "vary" not in response.headers  # the handler negotiated: its business


async def test_two_layers_compress_once() -> None:
    inner, outer = compression_middleware(), compression_middleware()

    async def handler(ctx: Request) -> Response:
        return page()

    request = make_request(headers=[("Accept-Encoding", "gzip")])
    response = await run([outer, inner], request, handler)
    assert response.headers.getall("content-encoding") == ["gzip"]
    assert gzip.decompress(response.body) == BODY.encode()
    assert response.headers.getall("vary") == ["Accept-Encoding"]


async def test_head_is_not_compressed_but_varies() -> None:
    response = await send("gzip", method="HEAD")
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize("status", [204, 206, 304])
async def test_no_content_and_partial_statuses_are_left_alone(status: int) -> None:
    response = await send("gzip", Response(status, BODY, content_type="text/plain"))
    assert "content-encoding" not in response.headers
    assert "vary" not in response.headers


async def test_other_statuses_with_content_are_compressed() -> None:
    response = await send("gzip", Response.text(BODY, 404))
    assert response.headers["content-encoding"] == "gzip"


async def test_no_transform_is_respected() -> None:
    original = page(headers={"Cache-Control": "public, No-Transform"})
    response = await send("gzip", original)
    assert "content-encoding" not in response.headers
    assert response.body == BODY.encode()


async def test_a_range_response_is_left_alone() -> None:
    response = await send("gzip", page(headers={"Content-Range": "bytes 0-99/4000"}))
    assert "content-encoding" not in response.headers


async def test_incompressible_content_goes_out_as_is() -> None:
    noise = bytes(range(256)) * 2  # 512 bytes that do not shrink
    original = Response(200, zlib.compress(noise * 4, 9)[:1500], content_type="text/plain")
    response = await send("gzip", original)
    assert "content-encoding" not in response.headers
    assert response.body == original.body


# --- fields --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([], ["Accept-Encoding"]),
        (["Origin"], ["Origin, Accept-Encoding"]),
        (["Origin", "Cookie"], ["Origin, Cookie, Accept-Encoding"]),
        (["accept-encoding"], ["accept-encoding"]),
        (["Origin, Accept-Encoding"], ["Origin, Accept-Encoding"]),
        (["*"], ["*"]),
    ],
)
async def test_vary_is_merged(existing: list[str], expected: list[str]) -> None:
    original = page(headers=[("Vary", value) for value in existing])
    response = await send("gzip", original)
    assert response.headers.getall("vary") == expected


async def test_a_strong_etag_is_weakened_and_a_weak_one_kept() -> None:
    strong = await send("gzip", page(headers={"ETag": '"v1"'}))
    assert strong.headers.getall("etag") == ['W/"v1"']
    weak = await send("gzip", page(headers={"ETag": 'W/"v1"'}))
    assert weak.headers.getall("etag") == ['W/"v1"']
    identity = await send(None, page(headers={"ETag": '"v1"'}))
    assert identity.headers["etag"] == '"v1"'  # not transformed: still strong


async def test_a_stale_content_length_field_is_dropped() -> None:
    response = await send("gzip", page(headers={"Content-Length": str(len(BODY))}))
    assert "content-length" not in response.headers


async def test_large_bodies_are_compressed_off_the_event_loop() -> None:
    big = text_of(400_000)
    middleware = compression_middleware(6, 1024, offload_bytes=100_000)

    async def handler(ctx: Request) -> Response:
        return Response.text(big)

    for coding in ("gzip", "br", "zstd"):
        request = make_request(headers=[("Accept-Encoding", coding)])
        response = await run(middleware, request, handler)
        assert response.headers["content-encoding"] == coding
        assert decode(response) == big.encode()


# --- streams -------------------------------------------------------------------------------


def decompressor(coding: str) -> object:
    if coding == "gzip":
        return zlib.decompressobj(31)
    if coding == "br":
        return brotli.Decompressor()
    return zstandard.ZstdDecompressor().decompressobj()


def feed(state: object, coding: str, data: bytes) -> bytes:
    if coding == "br":
        return bytes(state.process(data))  # type: ignore[attr-defined]
    return bytes(state.decompress(data))  # type: ignore[attr-defined]


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
async def test_a_stream_is_compressed_chunk_by_chunk_with_a_flush_each(coding: str) -> None:
    produced: list[bytes] = []

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(3):
            piece = f"event {index}\n".encode() * 3
            produced.append(piece)
            yield piece

    async def handler(ctx: Request) -> Response:
        return Response.streaming(chunks(), content_type="text/event-stream")

    request = make_request(headers=[("Accept-Encoding", coding)])
    response = await run(compression_middleware(), request, handler)
    assert response.headers["content-encoding"] == coding
    assert response.headers["vary"] == "Accept-Encoding"
    stream = response.stream
    assert stream is not None
    state = decompressor(coding)
    seen = []
    async for out in stream:  # type: ignore[union-attr]
        # each compressed piece decodes to everything produced so far: nothing held back
        seen.append(feed(state, coding, out))
        assert b"".join(seen) == b"".join(produced)
    assert len(seen) >= 3  # one compressed piece per chunk, not one at the end
    assert b"".join(seen) == b"".join(produced)


async def test_a_sync_stream_is_compressed_too() -> None:
    closed = []

    def chunks() -> Iterator[bytes]:
        try:
            yield b"a" * 2000
            yield b"b" * 2000
        finally:
            closed.append(True)

    async def handler(ctx: Request) -> Response:
        return Response.streaming(chunks(), content_type="text/plain")

    response = await run(
        compression_middleware(), make_request(headers=[("Accept-Encoding", "gzip")]), handler
    )
    out = b"".join([piece async for piece in response.stream])  # type: ignore[union-attr]
    assert gzip.decompress(out) == b"a" * 2000 + b"b" * 2000
    assert closed == [True]


async def test_closing_a_compressed_stream_early_closes_the_source() -> None:
    closed = []

    async def chunks() -> AsyncIterator[bytes]:
        try:
            for _ in range(100):
                yield b"x" * 100
        finally:
            closed.append(True)

    async def handler(ctx: Request) -> Response:
        return Response.streaming(chunks(), content_type="text/plain")

    response = await run(
        compression_middleware(), make_request(headers=[("Accept-Encoding", "br")]), handler
    )
    stream = response.stream
    first = await stream.__anext__()  # type: ignore[union-attr]
    assert first
    await stream.aclose()  # type: ignore[union-attr]
    assert closed == [True]
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()  # type: ignore[union-attr]


async def test_a_stream_of_an_incompressible_type_is_left_alone() -> None:
    source = [b"\x89PNG"]

    async def handler(ctx: Request) -> Response:
        return Response.streaming(source, content_type="image/png")

    response = await run(
        compression_middleware(), make_request(headers=[("Accept-Encoding", "gzip")]), handler
    )
    assert response.stream is source


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"level": 0}, "level=0"),
        ({"level": 12}, "level=12"),
        ({"threshold": -1}, "threshold=-1"),
        ({"encodings": ["deflate"]}, "encodings="),
    ],
)
def test_invalid_settings_are_refused(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compression_middleware(**arguments)  # type: ignore[arg-type]
