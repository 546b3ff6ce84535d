"""Helpers for middleware that wrap a streamed response body (``Response.stream``)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator

from nessen.http.response import BodyStream

ChunkIterator = AsyncIterator[bytes] | Iterator[bytes]


def open_stream(source: BodyStream) -> ChunkIterator:
    """Return an iterator over ``source`` (async when it is an async iterable)."""
    return aiter(source) if isinstance(source, AsyncIterable) else iter(source)


async def next_chunk(iterator: ChunkIterator) -> bytes:
    """Return the next chunk of ``iterator``, sync or async.

    Raises:
        StopAsyncIteration: The stream is exhausted (also for a sync iterator).
    """
    if isinstance(iterator, AsyncIterator):
        return await anext(iterator)
    try:
        return next(iterator)
    except StopIteration:
        raise StopAsyncIteration from None


async def close_stream(source: BodyStream, iterator: ChunkIterator | None) -> None:
    """Close ``iterator`` and ``source`` as the server would close an unwrapped stream.

    Each is closed once with ``aclose()`` (awaited) or ``close()`` when it has one, so a
    generator's ``finally`` block runs even when the wrapper is closed early.
    """
    for target in (iterator, source) if iterator is not source else (source,):
        if target is None:
            continue
        closer = getattr(target, "aclose", None)
        if closer is not None:
            await closer()
            continue
        closer = getattr(target, "close", None)
        if closer is not None:
            closer()
