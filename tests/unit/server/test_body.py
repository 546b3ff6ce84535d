"""RequestChannel: the streamed request content between the connection and its handler."""

from __future__ import annotations

import asyncio

import pytest

from nessen.server.body import ClientDisconnected, RequestChannel


async def test_reads_return_what_arrived_since_the_last_read_then_the_end() -> None:
    consumed: list[int] = []
    channel = RequestChannel(complete=False, on_consumed=lambda ch, n: consumed.append(n))
    channel.feed(b"ab")
    channel.feed(b"cd")
    assert await channel.read() == (b"abcd", True)
    assert consumed == [4]  # the connection learns what it may free and read on
    assert channel.buffered == 0
    reader = asyncio.ensure_future(channel.read())
    await asyncio.sleep(0)
    assert not reader.done()  # nothing new: the reader waits
    channel.feed(b"e")
    channel.finish()
    assert await reader == (b"e", False)
    assert await channel.read() == (b"", False)


def test_read_ready_gives_what_read_would_without_waiting_and_none_when_it_would_wait() -> None:
    consumed: list[int] = []
    wanted: list[bool] = []
    channel = RequestChannel(
        complete=False,
        on_consumed=lambda ch, n: consumed.append(n),
        on_wanted=lambda ch: wanted.append(True),
    )
    assert channel.read_ready() is None  # nothing yet: read() would wait
    channel.feed(b"ab")
    assert channel.read_ready() == (b"ab", True)
    assert consumed == [2]
    assert channel.read_ready() is None
    channel.feed(b"c")
    channel.finish()
    assert channel.read_ready() == (b"c", False)
    assert channel.read_ready() == (b"", False)
    assert wanted == []  # only a read that waits asks for content (100 Continue)
    gone = RequestChannel(complete=False)
    gone.close()
    with pytest.raises(ClientDisconnected):
        gone.read_ready()


async def test_a_closed_channel_raises_for_content_that_never_came() -> None:
    channel = RequestChannel(complete=False)
    channel.feed(b"part")
    channel.close()
    assert await channel.read() == (b"part", True)  # what arrived is still delivered
    with pytest.raises(ClientDisconnected):
        await channel.read()


async def test_complete_content_is_read_even_after_the_close() -> None:
    channel = RequestChannel(complete=False)
    channel.feed(b"all")
    channel.finish()
    channel.close()
    assert await channel.read() == (b"all", False)


async def test_wait_closed_wakes_every_waiter_and_survives_a_cancelled_one() -> None:
    channel = RequestChannel(complete=True)
    first = asyncio.ensure_future(channel.wait_closed())
    second = asyncio.ensure_future(channel.wait_closed())
    cancelled = asyncio.ensure_future(channel.wait_closed())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    channel.close()
    await asyncio.wait_for(asyncio.gather(first, second), 1.0)
    assert cancelled.cancelled()


async def test_the_first_wait_for_content_asks_for_100_continue_once() -> None:
    asked: list[bool] = []

    def wanted(ch: RequestChannel) -> None:
        asked.append(ch.expects_continue)
        ch.continue_sent()

    channel = RequestChannel(complete=False, on_wanted=wanted, expect_continue=True)
    reader = asyncio.ensure_future(channel.read())
    await asyncio.sleep(0)
    channel.feed(b"x")
    assert await reader == (b"x", True)
    second = asyncio.ensure_future(channel.read())
    await asyncio.sleep(0)
    channel.finish()
    await second
    assert asked == [True, False]


def test_respond_is_taken_once_and_only_when_the_server_accepts() -> None:
    offered: list[object] = []
    channel = RequestChannel(complete=True, on_respond=lambda ch, r: offered.append(r) or True)
    assert channel.respond("first") is True  # type: ignore[arg-type]
    assert channel.respond("second") is False  # type: ignore[arg-type]
    assert offered == ["first"]
    refused = RequestChannel(complete=True, on_respond=lambda ch, r: False)
    assert refused.respond("late") is False  # type: ignore[arg-type]
    assert refused.responded is False
