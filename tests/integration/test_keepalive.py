"""Persistent connections (RFC 9112 §9.3) over a real socket."""

from __future__ import annotations

import json
import socket

from nessen.testing import LiveServer
from tests.conftest import ServeFactory, wait_for
from tests.integration.wire import closed_cleanly
from tests.rawhttp import RawClient, get


def test_two_requests_share_one_http11_connection(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        first = client.request(get("/path?n=1"))
        second = client.request(get("/path?n=2"))
        assert not client.closed_by_peer(timeout=0.2)
    assert first.status == 200
    assert json.loads(first.body) == {"path": "/path", "query": "n=1"}
    assert first.header("connection") is None
    assert first.header("keep-alive") == "timeout=65"
    assert second.status == 200
    assert json.loads(second.body) == {"path": "/path", "query": "n=2"}
    assert second.header("connection") is None


def test_http10_closes_by_default(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        assert response.status == 200
        assert response.body == b"hello"
        assert response.header("content-length") == "5"
        assert response.header("connection") == "close"
        assert response.header("keep-alive") is None
        assert closed_cleanly(client)
        assert client.buffer == b""


def test_http10_keep_alive_is_honoured_and_announced(serve: ServeFactory) -> None:
    server = serve(idle_timeout=30.0)
    request = b"GET / HTTP/1.0\r\nHost: test\r\nConnection: keep-alive\r\n\r\n"
    with RawClient(server.address) as client:
        first = client.request(request)
        second = client.request(request)
        assert not client.closed_by_peer(timeout=0.2)
    for response in (first, second):
        assert response.status == 200
        assert response.body == b"hello"
        assert response.header("connection") == "keep-alive"
        assert response.header("keep-alive") == "timeout=30"


def test_http10_without_host_keeps_alive_only_when_asked(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        first = client.request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        second = client.request(b"GET / HTTP/1.0\r\n\r\n")
        assert closed_cleanly(client)
    assert (first.status, first.header("connection")) == (200, "keep-alive")
    assert (second.status, second.header("connection")) == (200, "close")


def test_connection_close_is_echoed_and_the_server_closes(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(get("/", extra="Connection: close\r\n"))
        assert response.status == 200
        assert response.body == b"hello"
        assert response.header("connection") == "close"
        assert response.header("keep-alive") is None
        assert closed_cleanly(client)
        assert client.buffer == b""


def test_connection_close_token_among_others_closes(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(get("/", extra="Connection: TE, Close\r\n"))
        assert response.header("connection") == "close"
        assert closed_cleanly(client)


def test_requests_after_connection_close_are_not_answered(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(get("/path?n=1", extra="Connection: close\r\n") + get("/path?n=2"))
        response = client.response()
        assert json.loads(response.body)["query"] == "n=1"
        assert closed_cleanly(client)
        assert client.buffer == b""


def test_keep_alive_timeout_is_advertised_in_whole_seconds(serve: ServeFactory) -> None:
    server = serve(idle_timeout=7.9)
    with RawClient(server.address) as client:
        response = client.request(get("/"))
    assert response.header("keep-alive") == "timeout=7"


def test_client_half_close_still_gets_its_response(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(get("/"))
        client.sock.shutdown(socket.SHUT_WR)
        response = client.response()
        assert response.status == 200
        assert response.body == b"hello"
        assert closed_cleanly(client)


def _parsers_held(server: LiveServer) -> int:
    """Connections holding an llhttp parser (read on the server's loop)."""
    found: list[int] = []

    def count() -> None:
        state = server.runtime.server.state  # type: ignore[union-attr]
        found.append(sum(hasattr(conn.core, "_parser") for conn in state.connections))

    server.call(count)
    return found[0]


def test_an_idle_connection_lets_its_parser_go_and_serves_the_next_request(
    serve: ServeFactory,
) -> None:
    """The ticker takes the parser of a connection it finds idle (memory: ~1 KiB each)."""
    server = serve()
    with RawClient(server.address) as client:
        assert client.request(get("/path?n=1")).status == 200
        wait_for(lambda: _parsers_held(server) == 0, "the idle connection's parser let go")
        second = client.request(get("/path?n=2"))
        assert json.loads(second.body) == {"path": "/path", "query": "n=2"}
        assert not client.closed_by_peer(timeout=0.2)
