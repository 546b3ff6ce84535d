"""TLS on the server's own socket: ``nessen serve --ssl-certfile ... --ssl-keyfile ...``.

Real handshakes against a ``nessen serve`` subprocess, with certificates made in the test by
``trustme`` (a throwaway CA); clients are httpx, curl and the ``ssl`` module.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import warnings
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from tests.e2e.serving import ServeFactory, ServeProcess, base_env, run_nessen

NATIVE = "tests.e2e.apps.asgi_runtime:runtime"
ASGI = "tests.e2e.apps.tls_apps:scope_echo"


class Files:
    """A CA and a server certificate for ``localhost`` and 127.0.0.1, written as PEM files."""

    def __init__(self, folder: Path, ca: trustme.CA | None = None) -> None:
        self.folder = folder
        self.ca = ca or trustme.CA()
        self.server = self.ca.issue_cert("localhost", "127.0.0.1")
        self.cert = folder / "cert.pem"
        self.key = folder / "key.pem"
        self.ca_file = folder / "ca.pem"
        self.write()

    def write(self) -> None:
        with self.cert.open("wb") as out:
            for pem in self.server.cert_chain_pems:
                out.write(pem.bytes())
        self.server.private_key_pem.write_to_path(str(self.key))
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def flags(self) -> list[str]:
        return ["--ssl-certfile", str(self.cert), "--ssl-keyfile", str(self.key)]

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


def https(served: ServeProcess, context: ssl.SSLContext) -> httpx.Client:
    return httpx.Client(base_url=served.url, verify=context, timeout=10.0, trust_env=False)


def handshake(
    served: ServeProcess, context: ssl.SSLContext, hostname: str = "localhost"
) -> ssl.SSLSocket:
    raw = socket.create_connection(served.address, timeout=10.0)
    return context.wrap_socket(raw, server_hostname=hostname)


def test_https_serves_the_app_with_the_https_scheme_and_hsts(
    nessen_serve: ServeFactory, files: Files
) -> None:
    served = nessen_serve(NATIVE, *files.flags())
    assert served.scheme == "https"  # the ready line says so
    with https(served, files.client_context()) as client:
        who = client.get("/who")
        health = client.get("/health")
    assert who.status_code == 200
    assert who.json()["scheme"] == "https"
    # HSTS only over HTTPS (RFC 6797 §7.2): the default stack's security headers add it now
    assert health.headers["strict-transport-security"].startswith("max-age=")


def test_the_handshake_offers_tls_1_2_or_later_and_alpn_http_1_1(
    nessen_serve: ServeFactory, files: Files
) -> None:
    served = nessen_serve(NATIVE, *files.flags())
    context = files.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with handshake(served, context) as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"  # never h2: not spoken here
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_a_tls_1_1_client_is_refused_by_the_server(
    nessen_serve: ServeFactory, files: Files
) -> None:
    served = nessen_serve(NATIVE, *files.flags())
    context = files.client_context()
    with warnings.catch_warnings():  # deprecated, which is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client side would allow it
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(served, context).close()
    served.wait_for("tls_handshake_failed")  # the server refused it, and says so


def test_an_asgi_apps_scope_says_https(nessen_serve: ServeFactory, files: Files) -> None:
    served = nessen_serve(ASGI, *files.flags())
    with https(served, files.client_context()) as client:
        answer = client.get("/")
    assert answer.json()["scheme"] == "https"


def test_curl_verifies_the_chain_and_gets_an_answer(
    nessen_serve: ServeFactory, files: Files
) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    served = nessen_serve(NATIVE, *files.flags())
    result = subprocess.run(
        [curl, "-sS", "--cacert", str(files.ca_file), f"https://localhost:{served.port}/who"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["scheme"] == "https"


def test_a_client_that_never_completes_the_handshake_is_cut_at_headers_timeout(
    nessen_serve: ServeFactory, files: Files
) -> None:
    served = nessen_serve(NATIVE, *files.flags(), "--headers-timeout", "500")
    began = time.monotonic()
    with socket.create_connection(served.address, timeout=30.0) as raw:
        raw.sendall(b"\x16\x03\x01")  # the start of a ClientHello record, never finished
        assert raw.recv(1024) == b""  # closed by the server, not by our timeout
    assert time.monotonic() - began >= 0.45
    line = served.wait_for("tls_handshake_timeout")
    assert "0.5 s" in line


def test_plain_http_to_the_tls_port_is_closed_and_logged(
    nessen_serve: ServeFactory, files: Files
) -> None:
    served = nessen_serve(NATIVE, *files.flags())
    with socket.create_connection(served.address, timeout=10.0) as raw:
        raw.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert raw.recv(1024) == b""
    served.wait_for("tls_handshake_failed")


def test_an_encrypted_key_needs_its_password(nessen_serve: ServeFactory, files: Files) -> None:
    key = serialization.load_pem_private_key(files.server.private_key_pem.bytes(), None)
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    missing = run_nessen("serve", NATIVE, *files.flags())
    assert missing.returncode == 2
    assert "the private key is encrypted; set SSL_KEYFILE_PASSWORD" in missing.stderr
    wrong = run_nessen("serve", NATIVE, *files.flags(), "--ssl-keyfile-password", "nope")
    assert wrong.returncode == 2
    assert "SSL_KEYFILE_PASSWORD does not decrypt the private key" in wrong.stderr
    assert "nope" not in wrong.stderr  # a password is never echoed
    served = nessen_serve(NATIVE, *files.flags(), env=base_env(SSL_KEYFILE_PASSWORD="s3cret"))
    with https(served, files.client_context()) as client:
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--ssl-certfile", "/nonexistent/cert.pem"],
            "SSL_CERTFILE: '/nonexistent/cert.pem' does not exist",
        ),
        (["--ssl-keyfile", "KEY"], "SSL_CERTFILE=None: required with SSL_KEYFILE="),
        (["--ssl-cert-reqs", "required"], "SSL_CERTFILE=None: required with"),
        (["--ssl-cert-reqs", "sometimes"], "must be one of none, optional, required"),
    ],
)
def test_tls_settings_that_cannot_work_exit_2_naming_the_variable(
    files: Files, args: list[str], expected: str
) -> None:
    args = [str(files.key) if arg == "KEY" else arg for arg in args]
    result = run_nessen("serve", NATIVE, *args)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr


def test_a_key_that_does_not_belong_to_the_certificate_exits_2(files: Files) -> None:
    other = files.ca.issue_cert("other.example")
    other.private_key_pem.write_to_path(str(files.key))
    result = run_nessen("serve", NATIVE, *files.flags())
    assert result.returncode == 2
    assert "the private key does not belong to the certificate" in result.stderr


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    nessen_serve: ServeFactory, files: Files
) -> None:
    served = nessen_serve(
        NATIVE,
        *files.flags(),
        "--ssl-ca-certs",
        str(files.ca_file),
        "--ssl-cert-reqs",
        "2",  # uvicorn's number for "required"
    )
    # no certificate: no answer
    with pytest.raises(httpx.TransportError), https(served, files.client_context()) as client:
        client.get("/health")
    with_cert = files.client_context()
    files.ca.issue_cert("client@example.test").configure_cert(with_cert)
    with https(served, with_cert) as client:
        assert client.get("/who").json()["scheme"] == "https"
    stranger = files.client_context()
    trustme.CA().issue_cert("client@example.test").configure_cert(stranger)
    with pytest.raises(httpx.TransportError), https(served, stranger) as client:
        client.get("/health")  # signed by another CA


def test_sighup_takes_up_a_renewed_certificate_without_dropping_connections(
    nessen_serve: ServeFactory, files: Files
) -> None:
    served = nessen_serve(NATIVE, *files.flags())
    old = https(served, files.client_context())
    try:
        assert old.get("/health").status_code == 200  # a keep-alive connection, kept open
        renewed = Files(files.folder, trustme.CA())  # a new CA, written over the same files
        served.signal(signal.SIGHUP)
        served.wait_for("TLS certificate reloaded")
        with https(served, renewed.client_context()) as client:
            assert client.get("/health").status_code == 200  # new connections: the new one
        # ... which the old CA does not vouch for
        with pytest.raises(httpx.ConnectError), https(served, files.client_context()) as client:
            client.get("/health")
        assert old.get("/health").status_code == 200  # the open connection was not dropped
    finally:
        old.close()
    assert served.process.poll() is None  # SIGHUP did not end the process


def test_a_renewed_certificate_that_cannot_load_keeps_the_one_in_use(
    nessen_serve: ServeFactory, files: Files
) -> None:
    served = nessen_serve(NATIVE, *files.flags())
    files.key.write_text("not a key\n")
    served.signal(signal.SIGHUP)
    served.wait_for("TLS certificate not reloaded")
    with https(served, files.client_context()) as client:
        assert client.get("/health").status_code == 200


def test_with_workers_sighup_replaces_them_and_they_read_the_renewed_certificate(
    nessen_serve: ServeFactory, files: Files
) -> None:
    served = nessen_serve(NATIVE, *files.flags(), "--workers", "2")
    with https(served, files.client_context()) as client:
        assert client.get("/health").status_code == 200
    old = set(re.findall(r"worker \d+ started \(pid (\d+)\)", served.stderr))
    assert len(old) == 2
    renewed = Files(files.folder, trustme.CA())
    served.signal(signal.SIGHUP)
    for pid in old:  # the rolling restart is over when both old workers have left
        served.wait_for(f"(pid {pid}) exited with status 0", timeout=60)
    for _ in range(10):  # whichever worker takes a new connection, it shows the new one
        with https(served, renewed.client_context()) as client:
            assert client.get("/health").status_code == 200
    with pytest.raises(httpx.ConnectError), https(served, files.client_context()) as client:
        client.get("/health")
    assert served.stop() == 0


def test_a_streamed_response_keeps_flowing_over_tls(
    nessen_serve: ServeFactory, files: Files
) -> None:
    # A TLS transport pauses at ``size >= high``: write limits of (0, 0), right for plain
    # TCP, paused it after the first piece for good. /stream sends 4 KiB every 10 ms.
    served = nessen_serve(NATIVE, *files.flags())
    received = 0
    with handshake(served, files.client_context()) as tls:
        tls.settimeout(30.0)
        tls.sendall(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        while received < 64 * 4096:  # 64 pieces: far past any buffer's first fill
            piece = tls.recv(65536)
            assert piece, "closed early"
            received += len(piece)


BIG = "tests.e2e.apps.tls_apps:runtime"


def test_a_large_buffered_body_arrives_whole_over_tls(
    nessen_serve: ServeFactory, files: Files
) -> None:
    served = nessen_serve(BIG, *files.flags())
    with https(served, files.client_context()) as client:
        answer = client.get("/big")
    assert answer.status_code == 200
    assert int(answer.headers["content-length"]) == len(answer.content) == 8 * 1024 * 1024
    assert answer.content[:512] == bytes(range(256)) * 2  # in order, written in slices
    assert answer.content[-256:] == bytes(range(256))


def test_a_tls_client_that_never_reads_a_large_body_is_cut_at_send_timeout(
    nessen_serve: ServeFactory, files: Files
) -> None:
    # Written whole, the 8 MiB went under the TLS layer at once: reported as sent at
    # once, never cut, held in memory for as long as the client stayed.
    served = nessen_serve(BIG, *files.flags(), "--send-timeout", "1000")
    raw = socket.create_connection(served.address, timeout=30.0)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with files.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        line = served.wait_for("outcome", timeout=30.0)  # and never reads
    assert "send_timeout" in line
    entry = json.loads(line)
    assert entry["bytes"] < 8 * 1024 * 1024  # what went out, not all of it


def test_a_closed_tls_connection_frees_its_slot_within_the_linger_time(
    nessen_serve: ServeFactory, files: Files
) -> None:
    # asyncio's TLS close waits 30 s for the client's close_notify by default: after a 408
    # the connection held its MAX_CONNECTIONS slot that long.
    served = nessen_serve(
        ASGI, *files.flags(), "--max-connections", "2", "--headers-timeout", "500"
    )
    context = files.client_context()
    stalled = [handshake(served, context) for _ in range(2)]
    try:
        for tls in stalled:
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")  # never finished
        # both get their 408 (which these clients never read: they are gone quiet)
        served.wait_for_line(lambda _: served.stderr.count("rejected headers_timeout") >= 2)
        took = time.monotonic()
        deadline = took + 15.0  # 2 s of linger, the ticker, a busy machine; not 30 s
        while True:
            with https(served, context) as client:
                status = client.get("/").status_code  # not a probe: those pass a full server
            if status == 200:
                break
            assert status == 503, status  # max_connections, until the slots are free
            assert time.monotonic() < deadline, "the slots stayed taken"
            time.sleep(0.2)  # between attempts: the slot's release has no other sign
    finally:
        for tls in stalled:
            tls.close()
