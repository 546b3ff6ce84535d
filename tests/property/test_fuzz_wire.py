"""Generated and mutated request bytes against a live server.

The invariants, for any input split anywhere: the server never crashes, never hangs, and
every byte it sends is a well-formed HTTP/1.1 response; after each input it still answers a
fresh client.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nessen import Response, Runtime
from nessen.testing import LiveServer
from tests.rawhttp import RawClient, get

EXAMPLES = int(os.environ.get("NESSEN_FUZZ_EXAMPLES", "300"))
STATUS_LINE = re.compile(rb"HTTP/1\.[01] [1-5][0-9]{2} [^\r\n]*\r\n")
HEADER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [^\r\n]*\r\n")


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[LiveServer]:
    runtime = Runtime(access_log=False)

    @runtime.route.get("/")
    async def index(ctx):  # type: ignore[no-untyped-def]
        return Response.text("ok")

    @runtime.route.route(["POST", "PUT"], "/echo")
    async def echo(ctx):  # type: ignore[no-untyped-def]
        return Response(200, ctx.body)

    @runtime.route.get("/items/{id:int}")
    async def item(ctx):  # type: ignore[no-untyped-def]
        return Response.json({"id": ctx.params["id"], "q": dict(ctx.query)})

    server = LiveServer(
        runtime,
        max_target_bytes=256,
        max_header_bytes=1024,
        max_header_count=12,
        max_body_bytes=512,
        headers_timeout=0.5,
        body_timeout=0.5,
        idle_timeout=0.5,
        rate_limit_max=1_000_000_000,
    ).start()
    yield server
    server.stop()


METHODS = [b"GET"] * 4 + [b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"get", b"G ET", b"FOO"]
TARGETS = [b"/", b"/echo", b"/items/7?x=1&y", b"/items/x", b"*", b"http://h/items/1", b"/%2e%2e/x"]
VERSIONS = [b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1 ", b"", b"HTTX"]
FIELD_NAMES = [b"Host", b"Content-Length", b"Transfer-Encoding", b"Expect", b"Connection", b"X-A"]
FIELD_VALUES = [b"h", b"5", b"chunked", b"gzip, chunked", b"100-continue", b"close", b"-1", b""]

field_lines = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(FIELD_NAMES), st.binary(max_size=12)),
        st.one_of(st.sampled_from(FIELD_VALUES), st.binary(max_size=24)),
    ),
    max_size=8,
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A request built from plausible parts, then mutated."""
    line = b" ".join(
        [
            draw(st.sampled_from(METHODS)),
            draw(st.one_of(st.sampled_from(TARGETS), st.binary(max_size=40))),
            draw(st.sampled_from(VERSIONS)),
        ]
    )
    sep = draw(st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r"]))
    host = draw(st.sampled_from([b"Host: h" + sep] * 3 + [b""]))
    fields = host + b"".join(name + b": " + value + sep for name, value in draw(field_lines))
    body = draw(
        st.one_of(st.just(b""), st.binary(max_size=64), st.just(b"5\r\nhello\r\n0\r\n\r\n"))
    )
    data = bytearray(line + sep + fields + sep + body)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 4]))):
        if not data:
            break
        index = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip":
            data[index] = draw(st.integers(0, 255))
        elif action == "insert":
            data[index:index] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[index]
        else:
            del data[index:]
    repeat = draw(st.integers(1, 3))  # pipelined copies
    return bytes(data) * repeat


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        if point > start:
            pieces.append(data[start:point])
            start = point
    return pieces


def assert_well_formed(received: bytes) -> None:
    """Every response starts with a status line and well-formed fields; the first is whole."""
    if not received:
        return
    first = STATUS_LINE.match(received)
    assert first is not None, f"not a status line: {received[:80]!r}"
    position = first.end()
    length = None
    while not received.startswith(b"\r\n", position):
        field = HEADER_LINE.match(received, position)
        assert field is not None, f"malformed field at {received[position : position + 80]!r}"
        name, _, value = field.group().partition(b": ")
        if name.lower() == b"content-length":
            length = int(value.strip())
        position = field.end()
    position += 2
    status = int(first.group()[9:12])
    rest = received[position:]
    if length is not None and status not in (204, 304) and rest:
        # A HEAD response carries a length but no content: then what follows (if anything)
        # is the next response, not content.
        if rest.startswith(b"HTTP/1.") and rest[length : length + 7] != b"HTTP/1.":
            assert_well_formed(rest)
            return
        assert len(rest) >= length, "response content cut short"
        assert_well_formed(rest[length:])
    elif rest:
        assert_well_formed(rest)


PIECE_GAP = 0.001
"""Seconds between the pieces of one input. With TCP_NODELAY each piece leaves as its own
segment, and the pause lets the server read it before the next arrives: without both,
loopback merges the pieces and the server sees one read, so the splits test nothing."""


def exchange(address: tuple[str, int], pieces: list[bytes], half_close: bool) -> bytes:
    with socket.create_connection(address, timeout=5.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for index, piece in enumerate(pieces):
                if index:
                    time.sleep(PIECE_GAP)  # the gap between writes is the input here
                sock.sendall(piece)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading all we send
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                pytest.fail(f"server neither answered nor closed within 5 s; got {received!r}")
            if not chunk:
                break
            received += chunk
    return received


def still_serving(server: LiveServer) -> None:
    with RawClient(server.address) as client:
        assert client.request(get("/")).status == 200


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=requests(), cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_any_bytes_get_a_well_formed_answer_or_a_close(
    fuzz_server: LiveServer, data: bytes, cuts: list[int]
) -> None:
    received = exchange(fuzz_server.address, split(data, cuts), half_close=True)
    assert_well_formed(received)
    still_serving(fuzz_server)


@settings(
    max_examples=max(10, EXAMPLES // 20),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=requests(), cuts=st.lists(st.integers(0, 10_000), max_size=3))
def test_without_eof_the_deadlines_still_end_every_connection(
    fuzz_server: LiveServer, data: bytes, cuts: list[int]
) -> None:
    # No half-close: only the server's own deadlines (0.5 s here) can end an incomplete
    # request or an idle keep-alive connection; exchange() fails after 5 s.
    received = exchange(fuzz_server.address, split(data, cuts), half_close=False)
    assert_well_formed(received)
    still_serving(fuzz_server)
