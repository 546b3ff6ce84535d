"""Ingress hardening: Host allowlist, unsupported versions, write flow control, rejection
accounting and logging."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator

import pytest

from nessen import Response
from tests.conftest import ServeFactory, echo_runtime
from tests.integration.wire import expect_rejection
from tests.rawhttp import RawClient, get

# --- ALLOWED_HOSTS -----------------------------------------------------------------------

HOSTS = frozenset({"api.example.com", "admin.example.com:8443", "*.apps.example.com"})


@pytest.mark.parametrize(
    "host",
    [
        "api.example.com",
        "API.Example.COM",
        "api.example.com:3000",
        "admin.example.com:8443",
        "a.apps.example.com",
        "a.b.apps.example.com:80",
        "api.example.com.",  # a fully qualified name: the root's trailing dot
        "API.example.com.:3000",
        "admin.example.com.:8443",
        "a.apps.example.com.",
    ],
)
def test_allowed_host_is_served(serve: ServeFactory, host: str) -> None:
    server = serve(allowed_hosts=HOSTS)
    with RawClient(server.address) as client:
        response = client.request(get("/", host=host))
    assert response.status == 200
    assert response.body == b"hello"


@pytest.mark.parametrize(
    "host",
    [
        "evil.example.com",
        "admin.example.com",  # listed with a port: other ports are not allowed
        "admin.example.com:8080",
        "apps.example.com",  # a wildcard does not cover its own apex
        "api.example.com.evil.net",
        "10.1.2.3:3000",
        "api.example.com..",  # one root label only
        "admin.example.com.:8080",
        "apps.example.com.",
    ],
)
def test_host_outside_the_allowlist_gets_400_and_close(serve: ServeFactory, host: str) -> None:
    server = serve(allowed_hosts=HOSTS)
    with RawClient(server.address) as client:
        client.send(get("/", host=host))
        expect_rejection(client, 400, "host_not_allowed")


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_probes_addressed_to_the_pod_ip_are_answered(serve: ServeFactory, path: str) -> None:
    # A kubelet probe sends Host: <pod IP>:<port>; the allowlist must not turn it away.
    server = serve(allowed_hosts=HOSTS)
    with RawClient(server.address) as client:
        response = client.request(get(path, host="10.1.2.3:3000"))
    assert response.status == 200


@pytest.mark.parametrize(
    ("target", "host", "status"),
    [
        ("http://evil.example.com/", "api.example.com", 400),
        ("http://user@evil.example.com/", "api.example.com", 400),
        ("http://api.example.com/", "evil.example.com", 200),
        ("HTTPS://API.example.com:3000/?x=1", "evil.example.com", 200),
        ("http://api.example.com?x=1", "evil.example.com", 200),
    ],
)
def test_an_absolute_form_target_s_authority_is_what_the_allowlist_judges(
    serve: ServeFactory, target: str, host: str, status: int
) -> None:
    # RFC 9112 §3.2.2: with an absolute-form target the server ignores Host.
    server = serve(allowed_hosts=HOSTS)
    with RawClient(server.address) as client:
        client.send(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        if status == 400:
            expect_rejection(client, 400, "host_not_allowed")
        else:
            assert client.response().status == status


def test_http10_without_host_is_refused_when_an_allowlist_is_set(serve: ServeFactory) -> None:
    server = serve(allowed_hosts=HOSTS)
    with RawClient(server.address) as client:
        client.send(b"GET / HTTP/1.0\r\n\r\n")
        expect_rejection(client, 400, "host_not_allowed")


def test_empty_allowlist_allows_any_host(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        assert client.request(get("/", host="anything.invalid")).status == 200


# --- versions ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [b"HTTP/1.2", b"HTTP/3.0", b"HTTP/9.9"])
def test_well_formed_unsupported_version_gets_505(serve: ServeFactory, version: bytes) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"GET / " + version + b"\r\nHost: t\r\n\r\n")
        expect_rejection(client, 505, "http_version")


# --- write flow control --------------------------------------------------------------------

CHUNK = 64 * 1024
PRODUCTION_BOUND = 16 * 1024 * 1024
"""Loopback socket buffers can hold a few MiB; an unbounded writer would go far past this."""


def test_stream_to_a_client_that_does_not_read_stops_producing(serve: ServeFactory) -> None:
    runtime = echo_runtime()
    produced = 0
    lock = threading.Lock()

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            with lock:
                produced += CHUNK
            yield b"x" * CHUNK

    @runtime.route.get("/endless")
    async def handler(ctx):  # type: ignore[no-untyped-def]
        return Response.streaming(endless())

    server = serve(runtime, send_timeout=60.0)
    with RawClient(server.address) as client:
        client.send(get("/endless"))
        stalled_at = _wait_until_production_stalls(lambda: produced)
        assert stalled_at < PRODUCTION_BOUND
        # Reading resumes production: the writer was waiting for the client, not stuck.
        client.sock.settimeout(5.0)
        drained = 0
        while drained < stalled_at + 4 * CHUNK:
            data = client.sock.recv(1 << 20)
            assert data, "server closed the stream"
            drained += len(data)
        assert produced > stalled_at


def _wait_until_production_stalls(read: object) -> int:
    """Poll the producer's counter until it stops moving for 0.5 s (fails after 10 s)."""
    assert callable(read)
    deadline = time.monotonic() + 10.0
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.5:
            return int(now)
    pytest.fail(f"the stream never stopped producing ({last} bytes)")


# --- rejections are counted and logged ----------------------------------------------------


def test_rejections_are_counted_by_reason_in_api_health(serve: ServeFactory) -> None:
    server = serve(max_target_bytes=64)
    for _ in range(2):
        with RawClient(server.address) as client:
            client.send(get("/" + "a" * 100))
            expect_rejection(client, 414, "uri_too_long")
    with RawClient(server.address) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        expect_rejection(client, 400, "malformed_request")
    with RawClient(server.address) as client:
        health = json.loads(client.request(get("/api/health")).body)
    assert health["requests"]["rejected"] == {"uri_too_long": 2, "malformed_request": 1}


def test_rejection_is_logged_once_with_reason_and_escaped_bytes(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(max_target_bytes=64)
    with caplog.at_level(logging.INFO, logger="nessen.server"), RawClient(server.address) as c:
        c.send(get("/%0a%0dinjected" + "a" * 100))
        expect_rejection(c, 414, "uri_too_long")
    records = [r for r in caplog.records if r.name == "nessen.server"]
    assert len(records) == 1
    record = records[0]
    assert record.__dict__["reason"] == "uri_too_long"
    assert record.__dict__["status"] == 414
    message = record.getMessage()
    assert "\n" not in message
    assert "\r" not in message
    assert len(message) < 300  # attacker bytes are cut, not logged whole


# --- memory held by request bodies ---------------------------------------------------------


def test_buffered_bodies_share_a_budget_and_the_excess_gets_503(serve: ServeFactory) -> None:
    server = serve(max_body_bytes=1000, max_body_buffer_bytes=2500)
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
    with RawClient(server.address) as first, RawClient(server.address) as second:
        first.send(head + b"a" * 999)
        second.send(head + b"b" * 999)  # 1998 bytes held, each waiting for its last byte
        deadline = time.monotonic() + 5
        while server.runtime.server.state.body_bytes < 1998:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with RawClient(server.address) as third:
            third.send(head)
            expect_rejection(third, 503, "body_buffer_full", retry_after="1")
        first.send(b"a")
        assert first.response().body == b"a" * 1000
        with RawClient(server.address) as fourth:  # the first body's bytes were released
            assert fourth.request(head + b"c" * 1000).status == 200
        second.send(b"b")
        assert second.response().status == 200
    deadline = time.monotonic() + 5
    while server.runtime.server.state.body_bytes != 0:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "budget not released"
        time.sleep(0.01)


def test_endless_chunk_extension_is_refused(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;")
        try:
            for _ in range(64):
                client.send(b"a" * 8192)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while we were still sending
        response = client.response()
    assert response.status == 400
    assert json.loads(response.body) == {"error": "Bad Request", "reason": "chunk_overhead"}


@pytest.mark.parametrize("host", [b"a b", b"a/b", b"user@host", b"[::1", b"h:8o"])
def test_malformed_host_value_gets_400(serve: ServeFactory, host: bytes) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        expect_rejection(client, 400, "bad_host")


def test_a_malformed_host_after_a_good_one_on_the_same_connection_gets_400(
    serve: ServeFactory,
) -> None:
    # The Host pattern is matched once while a connection repeats the same value: a
    # different value on a later request must still be matched.
    server = serve()
    with RawClient(server.address) as client:
        for _ in range(2):
            assert client.request(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n").status == 200
        client.send(b"GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n")
        expect_rejection(client, 400, "bad_host")


@pytest.mark.parametrize("host", [b"", b"example.com", b"[::1]:3000", b"10.0.0.1:80", b"a-b.c_d"])
def test_well_formed_host_values_are_served(serve: ServeFactory, host: bytes) -> None:
    server = serve()
    with RawClient(server.address) as client:
        assert client.request(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n").status == 200


def test_http10_requests_get_an_http11_status_line(serve: ServeFactory) -> None:
    # RFC 9110 §2.5: a server sends its own highest conformant version.
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(b"GET / HTTP/1.0\r\n\r\n")
    assert response.version == "HTTP/1.1"
    assert response.header("connection") == "close"
