"""A nessen Runtime as an ASGI application under uvicorn, hypercorn and granian.

The demo app's routes must be answered as ``nessen serve`` answers them: each request is
sent to both servers and the two answers compared (status, the header fields that do not
belong to the server, content), so nothing here hard-codes what Nessen answers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import httpx
import pytest

from tests.e2e.serving import ROOT, ServeFactory, base_env
from tests.integration.wire import PHRASES

pytest.importorskip("uvicorn")

START_TIMEOUT = 20.0
SERVER_FIELDS = {"date", "server", "connection", "keep-alive", "transfer-encoding"}
"""Fields each server writes on its own (framing, connection management, Date, Server)."""
TIME_DEPENDENT = {"ratelimit-reset"}
"""Seconds until the rate-limit window refills: depends on when each request came."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HostProcess:
    """An ASGI server in a subprocess; a thread collects its output lines."""

    def __init__(self, command: Sequence[str], env: dict[str, str], ready: re.Pattern[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self.process = subprocess.Popen(
            list(command),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its workers too are ended in close()
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(self.wait_for(ready).group(1))
        self._wait_accepting()

    def _wait_accepting(self) -> None:
        """Some servers (granian) announce the address before their worker accepts."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "server never accepted:\n" + self.output
                time.sleep(0.02)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float = START_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if found := pattern.search(line):
                        return found
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    raise AssertionError(f"no line matching {pattern.pattern!r}:\n" + self.output)
                self._changed.wait(remaining)

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        """SIGTERM; the exit status (uvicorn re-raises the signal once shut down: -15)."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)

    def close(self) -> None:
        """End the server and every process of its session (granian's worker too)."""
        group = self.process.pid
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(group, signum)
            except ProcessLookupError:
                break
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                continue
            self._reader.join(5)
            if not self._reader.is_alive():
                break
        self.process.wait(10)
        self._reader.join(10)
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()


@pytest.fixture
def hosts() -> Iterator[Callable[..., HostProcess]]:
    started: list[HostProcess] = []

    def start(kind: str, app: str, env: dict[str, str] | None = None) -> HostProcess:
        env = env if env is not None else base_env()
        env = {**env, "PYTHONUNBUFFERED": "1"}
        port = free_port()
        python = sys.executable
        if kind == "uvicorn":
            command = [python, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "0"]
            ready = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
        elif kind == "hypercorn":
            command = [python, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{port}"]
            ready = re.compile(rf"Running on http://127\.0\.0\.1:({port})")
        else:
            module, _, attr = app.partition(":")
            command = [python, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"]
            command += ["--port", str(port), "--workers", "1", f"{module}:{attr}"]
            ready = re.compile(rf"Listening at: http://127\.0\.0\.1:({port})")
        process = HostProcess(command, env, ready)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


# The demo routes, and requests that exercise the middleware: conditional GET (304),
# 404 and 405 pages, OPTIONS, HEAD, compression, probes.
DEMO_REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/demo.css", {}),
    ("HEAD", "/demo.css", {}),
    ("GET", "/badge/build/passing.svg", {}),
    ("GET", "/badge/state/%3Cscript%3E.svg", {}),
    ("GET", "/no/such/page?x=1", {}),
    ("POST", "/demo.css", {}),
    ("OPTIONS", "/demo.css", {}),
    ("GET", "/health", {}),
    ("GET", "/ready", {}),
    ("GET", "/", {"accept-encoding": "identity"}),
    ("GET", "/", {"accept-encoding": "gzip"}),
]


def normalise(response: httpx.Response, port: int) -> tuple[int, dict[str, str], bytes]:
    """Status, the fields that are the app's, and the content with per-request values masked.

    Masked: the request id (in the body; only the field's presence is compared), the
    server's port (in the echoed Host field), uptime and the request count on the demo page.
    """
    fields = {
        name: value
        for name, value in response.headers.items()
        if name not in SERVER_FIELDS | TIME_DEPENDENT
    }
    request_id = fields.pop("x-request-id", None)
    assert request_id
    body = response.content.replace(request_id.encode(), b"<id>")
    body = body.replace(f":{port}".encode(), b":<port>")
    body = re.sub(rb"up \d+m \d+s", b"up <uptime>", body)
    body = re.sub(rb"\d+ requests served", b"<n> requests served", body)
    if "content-length" in fields and fields.get("content-encoding") is None:
        fields["content-length"] = str(len(body))  # the masked values differ in length
    if fields.get("content-encoding"):
        fields.pop("content-length", None)  # compressed length varies with masked values
    return response.status_code, fields, body


def exchange(url: str, port: int) -> list[tuple[int, dict[str, str], bytes]]:
    answers = []
    with httpx.Client(base_url=url, timeout=10.0, trust_env=False) as client:
        for method, path, headers in DEMO_REQUESTS:
            response = client.request(method, path, headers=headers)
            answers.append(normalise(response, port))
        etag = client.get("/badge/build/passing.svg").headers["etag"]
        answers.append(
            normalise(client.get("/badge/build/passing.svg", headers={"if-none-match": etag}), port)
        )
    return answers


def test_demo_under_uvicorn_answers_as_nessen_serve_does(
    nessen_serve: ServeFactory, hosts: Callable[..., HostProcess]
) -> None:
    native = nessen_serve()
    hosted = hosts("uvicorn", "nessen.demo:runtime")
    expected = exchange(native.url, native.port)
    got = exchange(hosted.url, hosted.port)
    assert [answer[0] for answer in expected] == [answer[0] for answer in got]
    for (method, path, _), want, have in zip(DEMO_REQUESTS, expected, got, strict=False):
        assert have == want, f"{method} {path}"
    assert got == expected
    assert expected[-1][0] == 304  # the conditional GET was exercised
    assert hosted.stop() in (0, -signal.SIGTERM)
    hosted.wait_for(re.compile("Application shutdown complete"))


@pytest.mark.parametrize("kind", ["hypercorn", "granian"])
def test_demo_under_other_asgi_servers(
    kind: str, nessen_serve: ServeFactory, hosts: Callable[..., HostProcess]
) -> None:
    pytest.importorskip(kind)
    native = nessen_serve()
    hosted = hosts(kind, "nessen.demo:runtime")
    expected = exchange(native.url, native.port)
    got = exchange(hosted.url, hosted.port)
    for (method, path, _), want, have in zip(DEMO_REQUESTS, expected, got, strict=False):
        assert have == want, f"{method} {path} under {kind}"
    assert got == expected


def test_runtime_under_uvicorn_runs_hooks_and_keeps_its_body_limit_and_deadline(
    hosts: Callable[..., HostProcess],
) -> None:
    env = base_env(MAX_BODY_SIZE="100", REQUEST_TIMEOUT="300")
    hosted = hosts("uvicorn", "tests.e2e.apps.asgi_runtime:runtime", env)
    hosted.wait_for(re.compile("startup hook ran"))
    with httpx.Client(base_url=hosted.url, timeout=10.0, trust_env=False) as client:
        assert client.post("/echo", content=b"x" * 100).content == b"x" * 100
        too_large = client.post("/echo", content=b"x" * 101)
        assert too_large.status_code == 413
        assert too_large.json() == {"error": PHRASES[413], "reason": "body_too_large"}
        chunked = client.post("/echo", content=iter([b"y" * 60, b"y" * 60]))
        assert chunked.status_code == 413
        started = time.monotonic()
        late = client.get("/hang", headers={"X-Request-ID": "trace-hang-1"})
        assert late.status_code == 503
        assert late.headers["retry-after"] == "1"
        assert late.headers["x-request-id"] == "trace-hang-1"
        assert late.json() == {
            "error": PHRASES[503],
            "reason": "request_timeout",
            "request_id": "trace-hang-1",
        }
        assert time.monotonic() - started < 10.0
        assert client.get("/health").text == "OK"
    assert hosted.stop() in (0, -signal.SIGTERM)
    hosted.wait_for(re.compile("shutdown hook ran"))


def test_a_runtime_under_hypercorn_applies_trust_proxy_to_the_scope_client(
    hosts: Callable[..., HostProcess],
) -> None:
    # hypercorn reads no proxy fields: the scope's client is the proxy (127.0.0.1), which
    # TRUST_PROXY's loopback default trusts.
    hosted = hosts("hypercorn", "tests.e2e.apps.asgi_runtime:runtime")
    proxied = {
        "Host": "origin.internal",
        "X-Forwarded-For": "6.6.6.6, 198.51.100.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "shop.example",
    }
    with httpx.Client(base_url=hosted.url, timeout=10.0, trust_env=False) as client:
        seen = client.get("/who", headers=proxied).json()
        direct = client.get("/who", headers={"Host": "origin.internal"}).json()
    assert seen == {
        "client_ip": "198.51.100.7",
        "peer_ip": "127.0.0.1",
        "scheme": "https",
        "host": "shop.example",
    }
    assert direct == {
        "client_ip": "127.0.0.1",
        "peer_ip": "127.0.0.1",
        "scheme": "http",
        "host": "origin.internal",
    }


def test_under_uvicorn_the_access_log_says_what_went_to_the_host(
    hosts: Callable[..., HostProcess],
) -> None:
    env = base_env(REQUEST_TIMEOUT="300", LOG_FORMAT="json")
    hosted = hosts("uvicorn", "tests.e2e.apps.asgi_runtime:runtime", env)
    with httpx.Client(base_url=hosted.url, timeout=10.0, trust_env=False) as client:
        late = client.get("/hang", headers={"X-Request-ID": "trace-hang-2"})
    assert late.status_code == 503
    line = json.loads(hosted.wait_for(re.compile(r'"logger":"nessen.access".*"/hang"')).string)
    assert (line["status"], line["outcome"]) == (503, "request_timeout")
    assert (line["request_id"], line["bytes"]) == ("trace-hang-2", len(late.content))
    # A client that leaves a stream: uvicorn's send does nothing once it has gone, so the
    # runtime learns it from receive() (http.disconnect), stops, and says so.
    with socket.create_connection(("127.0.0.1", hosted.port), timeout=10.0) as raw:
        raw.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        received = 0
        while received < 20_000:
            chunk = raw.recv(65536)
            assert chunk
            received += len(chunk)
    found = hosted.wait_for(re.compile(r'"logger":"nessen.access".*"/stream"'), timeout=10.0)
    line = json.loads(found.string)
    assert (line["status"], line["outcome"], line["level"]) == (200, "client_disconnected", "info")
    assert received - 1000 <= line["bytes"]
    assert "Traceback" not in hosted.output


def test_uvicorn_nessen_demo_runtime_is_importable() -> None:
    # ``uvicorn nessen.demo:runtime`` needs the attribute to be an ASGI 3 callable.
    code = (
        "import inspect, nessen.demo as d; assert inspect.iscoroutinefunction(d.runtime.__call__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PORT"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


def test_under_uvicorn_nessen_s_log_lines_are_formatted_and_escaped(
    hosts: Callable[..., HostProcess],
) -> None:
    host = hosts("uvicorn", "nessen.demo:runtime", base_env(LOG_FORMAT="console"))
    forged = "FORGED 127.0.0.1:1 - GET /admin 200 OK"
    target = "/a%0a" + forged.replace(" ", "%20")
    with socket.create_connection(("127.0.0.1", host.port), timeout=5.0) as client:
        client.sendall(f"GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
        assert client.recv(65536).startswith(b"HTTP/1.1 404")
    line = host.wait_for(re.compile(r"nessen\.access .*404")).string  # the 404 is a warning
    assert "\\x0a" in line  # the decoded newline is escaped within the one line
    assert not any(text.startswith("FORGED") for text in host.output.splitlines())
