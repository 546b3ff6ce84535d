"""Response compression: brotli, zstd and gzip, negotiated with q-values (RFC 9110 §12.5.3).

Only representations worth it are compressed: compressible media types, content at or
above the threshold (streams always), not already content-coded, not ``no-transform``,
never for HEAD, 204, 206 or 304. Every response whose representation could depend on
Accept-Encoding gets ``Vary: Accept-Encoding`` (RFC 9110 §12.5.5), compressed or not, so
a cache never serves gzip to a client that cannot read it. A strong ``ETag`` is weakened
(RFC 9110 §8.8.1: the compressed bytes are a different representation). Streams are
compressed chunk by chunk with a flush after each, so server-sent events still arrive as
they are produced and the whole body is never held in memory.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import zlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from nessen.app.pipeline import Middleware, Next
from nessen.http import Request, Response
from nessen.http.response import BodyStream
from nessen.middleware.fields import add_vary, has_token
from nessen.middleware.streams import ChunkIterator, close_stream, next_chunk, open_stream

SERVER_PREFERENCE = ("br", "zstd", "gzip")
"""Codings we produce, most preferred first; breaks ties between equal q-values."""
AVAILABLE = tuple(
    c for c in SERVER_PREFERENCE if c != "zstd" or importlib.util.find_spec("zstandard")
)
"""The codings this process can produce (zstd only when ``zstandard`` is installed:
optional, ``pip install 'nessen-runtime[zstd]'``)."""

COMPRESSIBLE_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/xml",
        "application/xhtml+xml",
        "application/ndjson",
        "application/x-ndjson",
        "application/graphql-response+json",
        "image/svg+xml",
    }
)
"""Media types compressed besides ``text/*``, ``*/*+json`` and ``*/*+xml``."""

SKIP_STATUSES = frozenset({204, 206, 304})
VARY_FIELD = "Vary: Accept-Encoding\r\n"
VARY_KEYS = ("vary",)
"""No content (204, 304) or a byte range of the identity representation (206)."""

_IMPLICIT_IDENTITY = 0.0001  # identity is acceptable when unlisted, but below any listed coding
_CACHE_SIZE = 512  # distinct Accept-Encoding / Content-Type values remembered


@functools.cache
def _library(name: str) -> Any:
    """``brotli`` or ``zstandard``, imported when a response is first compressed with it."""
    return importlib.import_module(name)


def parse_accept_encoding(value: str) -> dict[str, float]:
    """Parse an Accept-Encoding field value into content-coding weights.

    RFC 9110 §12.5.3: coding names are case-insensitive, a missing ``q`` means 1.0 and
    ``q=0`` means "not acceptable"; ``x-gzip`` is ``gzip`` (§8.4.1.3). An element whose
    ``q`` is not a valid qvalue (0..1, at most three decimals) is ignored rather than
    failing the request; the first element for a coding wins.

    Args:
        value: The field value (repeated fields joined with ``", "``), e.g.
            ``"gzip;q=0.8, br"``.

    Returns:
        Lower-case coding name (``*`` and ``identity`` included) to weight in
        [0.0, 1.0], e.g. ``{"gzip": 0.8, "br": 1.0}``. Zero weights are kept: "refused"
        is not "not mentioned".
    """
    weights: dict[str, float] = {}
    for element in value.split(","):
        coding, _, params = element.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        weight: float | None = 1.0
        if params:
            for param in params.split(";"):
                name, _, argument = param.partition("=")
                if name.strip().lower() == "q":
                    weight = _qvalue(argument.strip())
        if weight is None:
            continue
        if coding == "x-gzip":
            coding = "gzip"
        weights.setdefault(coding, weight)
    return weights


def _qvalue(text: str) -> float | None:
    """RFC 9110 §12.4.2 ``qvalue``: ``0(.ddd)`` or ``1(.000)``; ``None`` when malformed."""
    whole, dot, fraction = text.partition(".")
    if whole not in ("0", "1") or len(fraction) > 3 or not (fraction.isdigit() or not fraction):
        return None
    if dot and not fraction:
        return float(whole)  # "1." is sloppy but unambiguous
    weight = float(text)
    return weight if weight <= 1.0 else None


def negotiate(accept_encoding: str | None, available: Iterable[str] = AVAILABLE) -> str | None:
    """Choose the content coding for a response (RFC 9110 §12.5.3).

    Args:
        accept_encoding: The request's Accept-Encoding value, ``None`` when absent.
        available: Codings we can produce, most preferred first (ties go to the first).

    Returns:
        A coding from ``available``, ``"identity"`` (send uncompressed), or ``None`` when
        nothing is acceptable, not even identity (``identity;q=0`` or ``*;q=0``). The
        rules: no field means no preference, and we send identity, since the RFC allows
        any coding but clients that send none rarely decode any; an empty field means
        identity only; ``*`` weighs every coding not listed, identity included; the
        highest weight wins, a listed coding beats an unlisted identity and wins a tie
        with a listed one; ``q=0`` is never chosen.
    """
    if accept_encoding is None:
        return "identity"
    weights = parse_accept_encoding(accept_encoding)
    star = weights.get("*")
    best: str | None = None
    best_weight = 0.0
    for coding in available:
        weight = weights.get(coding, star if star is not None else 0.0)
        if weight > best_weight:
            best, best_weight = coding, weight
    identity = weights.get("identity", star if star is not None else _IMPLICIT_IDENTITY)
    if best is not None and best_weight >= identity:
        return best
    return "identity" if identity > 0.0 else None


def compressible(content_type: str) -> bool:
    """Whether a media type is worth compressing (text, JSON, JavaScript, XML, SVG).

    Args:
        content_type: A Content-Type value, parameters allowed
            (``"text/html; charset=utf-8"``).
    """
    base = content_type.partition(";")[0].strip().lower()
    return (
        base.startswith("text/")
        or base in COMPRESSIBLE_TYPES
        or base.endswith("+json")
        or base.endswith("+xml")
    )


class _Encoder(Protocol):
    """One incremental compressor: ``chunk`` returns flushed output, ``finish`` the rest."""

    def chunk(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class _GzipEncoder:
    __slots__ = ("_compressor",)

    def __init__(self, level: int) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)

    def chunk(self, data: bytes) -> bytes:
        compressor = self._compressor
        return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._compressor.flush(zlib.Z_FINISH)


class _BrotliEncoder:
    __slots__ = ("_compressor",)

    def __init__(self, level: int) -> None:
        self._compressor = _library("brotli").Compressor(quality=level)

    def chunk(self, data: bytes) -> bytes:
        compressor = self._compressor
        return bytes(compressor.process(data)) + bytes(compressor.flush())

    def finish(self) -> bytes:
        return bytes(self._compressor.finish())


class _ZstdEncoder:
    __slots__ = ("_compressor", "_flush_block")

    def __init__(self, level: int) -> None:
        zstandard = _library("zstandard")
        self._compressor = zstandard.ZstdCompressor(level=level).compressobj()
        self._flush_block = zstandard.COMPRESSOBJ_FLUSH_BLOCK

    def chunk(self, data: bytes) -> bytes:
        compressor = self._compressor
        out: bytes = compressor.compress(data) + compressor.flush(self._flush_block)
        return out

    def finish(self) -> bytes:
        out: bytes = self._compressor.flush()
        return out


class _CompressedStream:
    """A response stream compressed chunk by chunk, each chunk flushed (no buffering)."""

    __slots__ = ("_encoder", "_finished", "_iterator", "_source")

    def __init__(self, source: BodyStream, encoder: _Encoder) -> None:
        self._source = source
        self._encoder = encoder
        self._iterator: ChunkIterator | None = None
        self._finished = False

    def __aiter__(self) -> _CompressedStream:
        return self

    async def __anext__(self) -> bytes:
        if self._finished:
            raise StopAsyncIteration
        iterator = self._iterator
        if iterator is None:
            iterator = self._iterator = open_stream(self._source)
        while True:
            try:
                piece = await next_chunk(iterator)
            except StopAsyncIteration:
                self._finished = True
                tail = self._encoder.finish()
                if tail:
                    return tail
                raise
            if piece:
                out = self._encoder.chunk(bytes(piece))
                if out:
                    return out

    async def aclose(self) -> None:
        """Close the wrapped stream."""
        self._finished = True
        source, self._source = self._source, ()
        await close_stream(source, self._iterator)


def compression_middleware(
    level: int = 6,
    threshold: int = 1024,
    *,
    encodings: Iterable[str] = AVAILABLE,
    offload_bytes: int = 256 * 1024,
) -> Middleware:
    """Build the compression middleware.

    Args:
        level: 1..11 (``COMPRESSION_LEVEL``): brotli quality as given, gzip
            ``min(level, 9)``, zstd level as given.
        threshold: Smallest buffered content compressed, in bytes
            (``COMPRESSION_THRESHOLD``); smaller goes out as is. Streams are always
            compressed (their size is unknown).
        encodings: Codings offered, in server preference order (ties between equal
            q-values go to the first); default ``br, zstd, gzip`` (zstd when
            ``zstandard`` is installed).
        offload_bytes: Buffered content at least this large is compressed in a worker
            thread (``asyncio.to_thread``), so one big response does not stall the event
            loop.

    Returns:
        The middleware. When nothing is acceptable, identity included, it still sends
        identity rather than 406: RFC 9110 §12.1 and §15.5.7 let a server disregard the
        preference, and answering a working request with an error because of one request
        field helps no client.

    Raises:
        ValueError: ``level`` outside 1..11, a negative threshold or an unknown coding.
    """
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 11:
        raise ValueError(f"level={level!r}: must be an integer 1..11")
    if threshold < 0:
        raise ValueError(f"threshold={threshold!r}: must be >= 0 bytes")
    offered = tuple(encodings)
    unknown = [c for c in offered if c not in AVAILABLE]
    if unknown:
        raise ValueError(f"encodings={offered!r}: can produce only {', '.join(AVAILABLE)}")
    gzip_level = min(level, 9)
    zstd_compressors: list[Any] = []  # the one reused on the event loop, once made

    def compress(coding: str, body: bytes, reuse: bool) -> bytes:
        if coding == "br":
            return bytes(_library("brotli").compress(body, quality=level))
        if coding == "gzip":
            return zlib.compress(body, gzip_level, wbits=31)
        if reuse and zstd_compressors:
            compressor = zstd_compressors[0]
        else:
            compressor = _library("zstandard").ZstdCompressor(level=level)
            if reuse:
                zstd_compressors.append(compressor)
        out: bytes = compressor.compress(body)
        return out

    encoder_of: dict[str, Callable[[], _Encoder]] = {
        "br": lambda: _BrotliEncoder(level),
        "gzip": lambda: _GzipEncoder(gzip_level),
        "zstd": lambda: _ZstdEncoder(level),
    }
    chosen: dict[str | None, str | None] = {}
    types: dict[str, bool] = {}

    def choose(accept_encoding: str | None) -> str | None:
        """Negotiate and remember the answer (bounded: forgets all past 512 values)."""
        coding = negotiate(accept_encoding, offered)
        if len(chosen) >= _CACHE_SIZE:
            chosen.clear()
        chosen[accept_encoding] = coding
        return coding

    def worth_compressing(content_type: str) -> bool:
        """Classify and remember the media type (bounded like ``choose``)."""
        verdict = compressible(content_type)
        if len(types) >= _CACHE_SIZE:
            types.clear()
        types[content_type] = verdict
        return verdict

    async def compression(request: Request, next: Next) -> Response:
        response = await next()
        if response.status in SKIP_STATUSES:
            return response
        content_type = response.content_type
        if response._headers is None and not response._encoded_keys and content_type is not None:
            # No field set by the handler: no Content-Encoding, Cache-Control, Vary, ETag.
            # When nothing will be compressed, only Vary is added, without building headers.
            verdict = types.get(content_type)
            if verdict is None:
                verdict = worth_compressing(content_type)
            if not verdict:
                return response
            if request.method == "HEAD":
                response.add_encoded_fields(VARY_FIELD, VARY_KEYS)
                return response
            accept_encoding = request.header("accept-encoding")
            coding = chosen.get(accept_encoding, "")
            if coding == "":
                coding = choose(accept_encoding)
            if (
                coding is None
                or coding == "identity"
                or (response.stream is None and len(response.body) < max(threshold, 1))
            ):
                response.add_encoded_fields(VARY_FIELD, VARY_KEYS)
                return response
        headers = response.headers
        if content_type is None:
            content_type = headers.get("content-type")
            if content_type is None:
                return response
        verdict = types.get(content_type)
        if verdict is None:
            verdict = worth_compressing(content_type)
        if not verdict or "content-encoding" in headers or "content-range" in headers:
            return response
        cache_control = headers.get("cache-control")
        if cache_control is not None and has_token(cache_control, "no-transform"):
            return response
        add_vary(headers, "Accept-Encoding")
        if request.method == "HEAD":
            return response
        accept_encoding = request.header("accept-encoding")
        coding = chosen.get(accept_encoding, "")
        if coding == "":
            coding = choose(accept_encoding)
        if coding is None or coding == "identity":
            return response
        stream = response.stream
        if stream is not None:
            response.stream = _CompressedStream(stream, encoder_of[coding]())
        else:
            body = response.body
            size = len(body)
            if size < threshold or size == 0:
                return response
            if size >= offload_bytes:
                compressed = await asyncio.to_thread(compress, coding, body, False)
            else:
                compressed = compress(coding, body, True)
            if len(compressed) >= size:
                return response
            response.body = compressed
        headers.add("Content-Encoding", coding)
        etag = headers.get("etag")
        if etag is not None and etag.startswith('"'):
            headers["ETag"] = "W/" + etag
        if "content-length" in headers:
            del headers["content-length"]
        return response

    return compression
