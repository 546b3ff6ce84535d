"""Fuzzing the WebSocket connection: arbitrary frame sequences, split at arbitrary points.

The connection is driven through its asyncio.Protocol methods with a recording transport
(no socket): whatever the bytes, it never raises, never hands the app a message over the
limit, never buffers more than WS_RECEIVE_QUEUE messages once it asked the transport to
stop reading, and when it ends the connection it has sent a valid close frame first.
"""

from __future__ import annotations

import asyncio
import codecs
import struct
from collections.abc import Iterator
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import Side, State

from nessen.http import Request
from nessen.websocket.connection import WebSocketConnection, WebSocketSettings, _ServerProtocol
from nessen.websocket.handshake import Offer
from tests.transport import RecordingTransport
from tests.wsraw import frame

MAX_MESSAGE = 300
QUEUE = 4
VALID_SENT_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011}


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Parse what the server wrote: ``(opcode, payload)`` per frame (unmasked, RFC 6455)."""
    frames = []
    at = 0
    while at < len(data):
        b0, b1 = data[at], data[at + 1]
        assert not b1 & 0x80
        length, at = b1 & 0x7F, at + 2
        if length == 126:
            (length,), at = struct.unpack("!H", data[at : at + 2]), at + 2
        elif length == 127:
            (length,), at = struct.unpack("!Q", data[at : at + 8]), at + 8
        frames.append((b0 & 0x0F, bytes(data[at : at + length])))
        at += length
    return frames


frames_strategy = st.lists(
    st.builds(
        lambda opcode, payload, fin, mask, rsv: frame(opcode, payload, fin=fin, mask=mask, rsv=rsv),
        opcode=st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB]),
        payload=st.one_of(
            st.binary(max_size=400),
            st.text(max_size=100).map(str.encode),
            st.integers(0, 5000).map(lambda code: struct.pack("!H", code)),
        ),
        fin=st.booleans(),
        mask=st.sampled_from([True, True, True, True, False]),
        rsv=st.sampled_from([0, 0, 0, 1, 4]),
    ),
    max_size=12,
)


async def drive(
    stream: bytes, cuts: list[int], eof: bool
) -> tuple[list[Any], list[tuple[int, bytes]], RecordingTransport, WebSocketConnection]:
    """Feed ``stream`` in pieces of ``cuts`` bytes (then 64), reading messages whenever the
    connection stops reading, as a real transport and app would; what came out."""
    request = Request("GET", b"/ws", "/ws", raw_headers=[(b"host", b"t")])
    settings = WebSocketSettings(
        max_message_bytes=MAX_MESSAGE,
        max_frame_bytes=MAX_MESSAGE,
        receive_queue=QUEUE,
        ping_interval=0,
    )
    conn = WebSocketConnection(request, Offer("dGhlIHNhbXBsZSBub25jZQ=="), settings)
    transport = RecordingTransport()
    conn.connection_made(transport)
    received: list[Any] = []
    at = 0
    pieces = iter(cuts)
    while at < len(stream) and not transport.closed:
        if not transport.reading:  # as a real transport: nothing read while paused
            assert len(conn._inbox or ()) >= QUEUE
            received.append(await conn.receive())
            continue
        size = next(pieces, 64)
        conn.data_received(stream[at : at + size])
        at += size
    if eof and not transport.closed:
        conn.eof_received()
    while conn._inbox:
        received.append(await conn.receive())
    return received, server_frames(bytes(transport.out)), transport, conn


@settings(max_examples=300, deadline=None)
@given(frames=frames_strategy, cuts=st.lists(st.integers(1, 64), max_size=20), eof=st.booleans())
def test_any_frames_split_anywhere_end_in_a_valid_close_within_limits(
    frames: list[bytes], cuts: list[int], eof: bool
) -> None:
    async def scenario() -> None:
        received, written, transport, conn = await drive(b"".join(frames), cuts, eof)
        for message in received:
            size = len(message.encode() if isinstance(message, str) else message)
            assert size <= MAX_MESSAGE
        assert not transport.written_after_close
        closes = [payload for opcode, payload in written if opcode == 0x8]
        assert len(closes) <= 1, "one close frame at most"
        if closes:
            assert written[-1][0] == 0x8, "nothing after the close frame"
            payload = closes[0]
            if payload:
                (code,) = struct.unpack("!H", payload[:2])
                assert code in VALID_SENT_CODES or 3000 <= code <= 4999, code
                payload[2:].decode()  # a valid UTF-8 reason
        if transport.closed and not eof:  # no timer runs here, so nothing aborts
            assert closes, "the server closed the TCP connection without a close frame"
        conn.connection_lost(None)
        assert conn.close_code is not None

    asyncio.run(scenario())


def reference(stream: bytes) -> tuple[list[Any], list[tuple[int, bytes]]]:
    """What websockets' own parser makes of ``stream`` fed whole, with the messages put
    together as RFC 6455 says (fragments joined, text decoded): the oracle for the fast
    path that takes common frames without it."""
    proto = _ServerProtocol(Side.SERVER, state=State.OPEN, max_size=(MAX_MESSAGE, MAX_MESSAGE))
    messages: list[Any] = []
    parts: list[Any] = []
    decoder: Any = None
    for frame_ in _frames_as_parsed(proto, stream):
        if frame_.opcode in (Opcode.TEXT, Opcode.BINARY):
            parts = []
            text = frame_.opcode is Opcode.TEXT
            decoder = codecs.getincrementaldecoder("utf-8")() if text else None
        if frame_.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            try:
                data = frame_.data
                parts.append(decoder.decode(data, frame_.fin) if decoder else bytes(data))
            except UnicodeDecodeError:
                proto.fail(1007, "invalid UTF-8 in a text message")
                break
            if frame_.fin:
                messages.append("".join(parts) if decoder else b"".join(parts))
    return messages, server_frames(b"".join(proto.data_to_send()))


def _frames_as_parsed(proto: Any, stream: bytes) -> Iterator[Frame]:
    """Each frame as the parser completes it, the stream fed a byte at a time: a text
    frame's UTF-8 is then checked before later frames are parsed, in stream order."""
    for index in range(len(stream)):
        proto.receive_data(stream[index : index + 1])
        for event in proto.events_received():
            yield cast(Frame, event)


@settings(max_examples=500, deadline=None)
@given(frames=frames_strategy, cuts=st.lists(st.integers(1, 64), max_size=20))
def test_the_fast_path_agrees_with_websockets_parser(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frames)
    expected_messages, expected_frames = reference(stream)

    async def scenario() -> None:
        received, written, _, _ = await drive(stream, cuts, eof=False)
        assert received == expected_messages
        assert written == expected_frames  # pongs and the close frame, byte for byte

    asyncio.run(scenario())
