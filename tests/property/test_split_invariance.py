"""The connection from bytes, no socket: splitting the input anywhere changes nothing.

In-process (``HttpProtocol`` with a recording transport), so thousands of examples run in
seconds. For any mix of valid, pipelined, chunked, large, malformed, Upgrade and HTTP/0.9 requests:

- the bytes written are the same whether the input came in one read or split at
  arbitrary points (``Date`` lines aside);
- there are never more responses than requests begun (plus one error answer);
- nothing is written after the connection was closed or aborted.

One difference is known and kept out of the inputs: a method llhttp refuses is answered
501 when it is a token (``BREW``) and 400 otherwise, which needs the request's first
bytes; when that request begins in the middle of a read, after another one, llhttp does
not say where, and the answer is 400. Such requests are generated only at the start of
the input, and garbage starts with a byte that is not a token character. And an HTTP/0.9
line is answered 400 ``http_0_9`` when its read ends with it, or 400 ``malformed_request``
when llhttp reads on into what follows (a second line it takes for a malformed field):
the comparison takes those two reasons for one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nessen import Config, Request, Response
from nessen.server.h1.connection import FEED_SLICE
from nessen.server.protocol import HttpProtocol
from nessen.server.state import ServerState
from tests.transport import RecordingTransport

DATE = re.compile(rb"Date: [^\r\n]*\r\n")
STATUS = re.compile(rb"HTTP/1\.1 \d{3} ")
HTTP_0_9_ANSWER = re.compile(
    rb"Content-Length: \d+\r\n((?:[^\r\n]+\r\n)*\r\n)"
    rb'\{"error":"Bad Request","reason":"(?:http_0_9|malformed_request)"\}'
)


class Events:
    """The server's outcome hooks, doing nothing."""

    def handler_error(self, request: Request, exc: BaseException) -> Response:
        return Response.text("error", 500)

    def error_fields(self, raw_headers: Any) -> str:
        return ""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


async def handler(request: Request) -> Response:
    return Response.text(f"{request.method} {request.path} {len(request.body)}")


def _same(out: bytearray) -> bytes:
    """What must not depend on where the input was split: ``Date`` lines out, the two
    reasons of a 400 to an HTTP/0.9 line as one."""
    return HTTP_0_9_ANSWER.sub(b"<400 to an HTTP/0.9 line>", DATE.sub(b"", bytes(out)))


CONFIG = Config(
    max_body_bytes=64 * 1024, max_header_bytes=2048, max_target_bytes=512, max_header_count=20
)


def run(pieces: list[bytes], *, shed: bool = False) -> RecordingTransport:
    """Feed ``pieces`` as successive reads; return the transport once all is answered.

    ``shed``: after each read is handled, do what the server's ticker does to a
    connection it finds idle (``H1Connection.shed``: its parser goes).
    """

    async def main() -> RecordingTransport:
        state = ServerState(CONFIG, handler, Events())  # type: ignore[arg-type]
        protocol = HttpProtocol(state)
        transport = RecordingTransport()
        protocol.connection_made(transport)
        for piece in pieces:
            if transport.closed:
                break
            protocol.data_received(piece)
            for _ in range(3):  # a handler that yields, and its bookkeeping
                await asyncio.sleep(0)
            if shed:
                protocol.core.shed()
        for _ in range(10):
            await asyncio.sleep(0)
        state.connections.discard(protocol)
        return transport

    return asyncio.run(main())


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def post(body: bytes) -> bytes:
    return b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


def chunked(parts: list[bytes]) -> bytes:
    coded = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts if p)
    return (
        b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + coded + b"0\r\n\r\n"
    )


requests = st.one_of(
    st.builds(get, st.sampled_from(["/", "/a", "/b?x=1", "/%41"])),
    st.builds(post, st.binary(max_size=64)),
    st.builds(post, st.integers(FEED_SLICE - 10, 3 * FEED_SLICE).map(lambda n: b"b" * n)),
    st.builds(chunked, st.lists(st.binary(min_size=1, max_size=40), max_size=4)),
    st.just(b"GET /nine\r\n"),  # HTTP/0.9
    st.just(b"GET / HTTP/1.1\r\n\r\n"),  # no Host
    st.just(b"GET /up HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n"),
    st.binary(max_size=30).map(lambda junk: b"(" + junk),  # garbage
)
first = st.one_of(st.just(b""), st.just(b"BREW / HTTP/1.1\r\nHost: t\r\n\r\n"))


streams = st.tuples(first, st.lists(requests, min_size=1, max_size=6)).map(
    lambda parts: parts[0] + b"".join(parts[1])
)
cut_fractions = st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=8)
examples = settings(
    max_examples=int(os.environ.get("NESSEN_SPLIT_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def cut(stream: bytes, cuts: list[float]) -> list[bytes]:
    """``stream`` in pieces, cut at ``cuts`` (fractions of its length, so short inputs are
    split as often as long)."""
    points = sorted({int(c * len(stream)) for c in cuts} - {0, len(stream)})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@examples
@given(stream=streams, cuts=cut_fractions)
def test_splitting_the_input_anywhere_gives_the_same_answers(
    stream: bytes, cuts: list[float]
) -> None:
    pieces = cut(stream, cuts)
    whole = run([stream])
    split = run(pieces)
    assert _same(split.out) == _same(whole.out)
    for transport in (whole, split):
        assert not transport.written_after_close
        begun = stream.count(b"HTTP/1.") + stream.count(b"\n")  # generous: every line
        assert len(STATUS.findall(bytes(transport.out))) <= begun + 1


@examples
@given(stream=streams, cuts=cut_fractions)
def test_letting_the_parser_go_whenever_idle_gives_the_same_answers(
    stream: bytes, cuts: list[float]
) -> None:
    """A connection the ticker finds idle parses its next request with a new parser."""
    pieces = cut(stream, cuts)
    assert _same(run(pieces, shed=True).out) == _same(run([stream]).out)
