"""WebSocketConnection from values: a transport that takes every write, no socket."""

from __future__ import annotations

import asyncio

import pytest

from nessen.http import Request
from nessen.websocket.connection import (
    YIELD_BYTES,
    WebSocketConnection,
    WebSocketDisconnect,
    WebSocketSettings,
)
from nessen.websocket.handshake import Offer
from tests.transport import RecordingTransport
from tests.wsraw import PONG, TEXT, frame


async def opened(
    settings: WebSocketSettings | None = None,
) -> tuple[WebSocketConnection, RecordingTransport]:
    request = Request("GET", b"/ws", "/ws", raw_headers=[(b"host", b"t")])
    conn = WebSocketConnection(
        request, Offer("dGhlIHNhbXBsZSBub25jZQ=="), settings or WebSocketSettings(ping_interval=0)
    )
    accepting = asyncio.ensure_future(conn.accept())
    await asyncio.sleep(0)  # accept() has decided and waits for the switch
    transport = RecordingTransport()
    conn.connection_made(transport)
    await accepting
    return conn, transport


def test_sending_to_a_reader_that_keeps_up_still_lets_the_loop_run() -> None:
    """A transport that takes every write never pauses the sender: send() must yield now
    and then, or the loop (other connections, signals, a broken socket's close) starves."""

    async def scenario() -> int:
        conn, _ = await opened()
        ticks = 0
        flooding = True

        async def ticker() -> None:
            nonlocal ticks
            while flooding:
                ticks += 1
                await asyncio.sleep(0)

        other = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        ticks = 0
        for _ in range(128):  # 512 KiB in 4 KiB messages: 8 x YIELD_BYTES
            await conn.send(b"x" * 4096)
        flooding = False
        await other
        return ticks

    assert YIELD_BYTES == 64 * 1024
    assert asyncio.run(scenario()) >= 7  # the other task ran during the flood


def test_sending_on_a_socket_that_broke_raises_at_once() -> None:
    async def scenario() -> None:
        conn, transport = await opened()
        await conn.send("fine")
        transport.closed = True  # the socket broke; connection_lost is still to come
        with pytest.raises(WebSocketDisconnect) as gone:
            await conn.send("lost")
        assert gone.value.code == 1006
        assert transport.out.endswith(b"fine")  # nothing written after the break

    asyncio.run(scenario())


def test_the_tickers_calls_send_pings_and_cut_a_peer_whose_pong_is_late() -> None:
    """Keep-alive deadlines are values the server's ticker checks (``tick(now)``)."""

    async def scenario() -> None:
        conn, transport = await opened(WebSocketSettings(ping_interval=10.0, ping_timeout=5.0))
        start = conn.opened_at
        conn.tick(start + 9.9)
        assert transport.out == b""
        conn.tick(start + 10.0)
        ping = bytes(transport.out)
        assert ping[:2] == b"\x89\x04"  # a ping with a 4-byte payload
        conn.data_received(frame(PONG, ping[2:6]))
        conn.tick(start + 15.1)  # answered: nothing to cut
        assert not transport.closed
        del transport.out[:]
        conn.tick(start + 20.0)
        assert bytes(transport.out[:2]) == b"\x89\x04"  # the next ping, never answered
        conn.tick(start + 24.9)
        assert not transport.closed
        conn.tick(start + 25.0)
        assert transport.closed
        assert conn.cut_reason == "ping_timeout"

    asyncio.run(scenario())


def test_an_emptied_inbox_is_let_go_at_the_next_tick_and_made_again_by_a_message() -> None:
    async def scenario() -> None:
        conn, _ = await opened()
        assert conn._inbox is None  # nothing received yet: no deque (760 bytes)
        conn.data_received(frame(TEXT, b"one") + frame(TEXT, b"two"))
        assert await conn.receive() == "one"
        conn.tick(conn.opened_at)
        assert conn._inbox is not None  # "two" still waits
        assert await conn.receive() == "two"
        conn.tick(conn.opened_at)
        assert conn._inbox is None
        waiting = asyncio.ensure_future(conn.receive())
        await asyncio.sleep(0)
        conn.data_received(frame(TEXT, b"three"))
        assert await waiting == "three"

    asyncio.run(scenario())


def test_once_switched_the_websocket_keeps_that_it_was_decided_not_the_101() -> None:
    """The 101's fields (and the middleware's) would stay for as long as it is open."""

    async def scenario() -> None:
        conn, _ = await opened()
        assert conn.decision.done()
        assert conn.decision.result() is None

    asyncio.run(scenario())
