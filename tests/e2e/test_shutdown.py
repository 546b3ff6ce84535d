"""Signals and the drain of a real ``nessen serve`` process."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest

from nessen.server.h1.connection import DRAIN_IDLE_GRACE
from tests.e2e.apps.draining import PIECE, SLOW_HOOK_SECONDS, STREAM_PIECES
from tests.e2e.serving import ServeFactory, base_env
from tests.integration.wire import closed_cleanly
from tests.rawhttp import RawClient, get

SAMPLE = "tests.e2e.apps.sample:runtime"
DRAINING = "tests.e2e.apps.draining:runtime"
SLOW_HOOK = "tests.e2e.apps.draining:slow_hook"


TRANSITION = re.compile(r"nessen\.lifecycle state (\w+ -> \w+(?: \([^)]*\))?)")


def transitions(stderr: str) -> list[str]:
    """The logged state transitions, e.g. ``READY -> DRAINING (shutdown requested)``."""
    return [found.group(1) for found in TRANSITION.finditer(stderr)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_idle_server_stops_with_exit_0(nessen_serve: ServeFactory, signum: int) -> None:
    served = nessen_serve(SAMPLE, env=base_env(LOG_FORMAT="console"))
    with served.client() as client:
        assert client.get("/ready").status_code == 200
    served.signal(signum)
    assert served.wait() == 0
    assert transitions(served.stderr) == [
        "STARTING -> READY",
        "READY -> DRAINING (shutdown requested)",
        "DRAINING -> STOPPING (drained)",
    ]
    assert f"{signal.Signals(signum).name} received: draining" in served.stderr


def test_sigterm_lets_the_in_flight_request_finish(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(SAMPLE)
    with RawClient(served.address, timeout=15.0) as client:
        client.send(get("/slow"))
        served.wait_for("slow handler entered")
        served.signal(signal.SIGTERM)
        response = client.response()
        assert client.closed_by_peer(timeout=10.0)
    assert response.status == 200
    assert response.body == b"finished after the drain began"
    assert response.header("connection") == "close"
    assert served.wait() == 0
    stderr = served.stderr
    assert "READY -> DRAINING" in stderr
    assert "DRAINING -> STOPPING (drained)" in stderr
    assert "drained: every in-flight request completed" in stderr
    assert "Traceback" not in stderr


def refused(address: tuple[str, int]) -> bool:
    try:
        RawClient(address, timeout=5.0).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:  # taken into the backlog as the listener closed: try again
        return False
    return False


def test_new_connections_are_refused_while_draining(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(SAMPLE)
    with RawClient(served.address, timeout=15.0) as client:
        client.send(get("/hang"))  # keeps the drain going until the second signal
        served.wait_for("hang handler entered")
        served.signal(signal.SIGTERM)
        served.wait_for("READY -> DRAINING")
        deadline = time.monotonic() + 5.0
        while not refused(served.address):
            assert time.monotonic() < deadline, "still accepting 5 s into the drain"
        assert served.process.poll() is None  # refused by a draining server, not a dead one
        served.signal(signal.SIGTERM)
        assert served.wait() == 1
        assert client.closed_by_peer(timeout=5.0)


def test_drain_deadline_cuts_a_hung_request_with_a_503_and_exits_1(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(SAMPLE, env=base_env(SHUTDOWN_TIMEOUT="1000", LOG_FORMAT="console"))
    with RawClient(served.address, timeout=15.0) as client:
        client.send(get("/hang", extra="X-Request-ID: cut-me-1\r\n"))
        served.wait_for("hang handler entered")
        served.signal(signal.SIGTERM)
        # Its response had not begun: a 503 the client can retry elsewhere, not a bare
        # close it cannot tell from a crash.
        response = client.response()
        assert client.closed_by_peer(timeout=10.0)
    assert response.status == 503
    assert response.header("retry-after") == "1"
    assert response.header("connection") == "close"
    assert response.header("x-request-id") == "cut-me-1"
    assert json.loads(response.body)["reason"] == "shutdown_cut"
    assert served.wait() == 1
    assert "drain deadline passed: cut 1 in-flight request(s)" in served.stderr
    # The cut request itself is on record: a refusal line with its id and path.
    cut_lines = [line for line in served.stderr.splitlines() if "rejected shutdown_cut" in line]
    assert len(cut_lines) == 1
    assert "request_id=cut-me-1" in cut_lines[0]
    assert "path=/hang" in cut_lines[0]
    assert "DRAINING -> STOPPING (drain cut short)" in served.stderr


def test_a_second_sigterm_cuts_the_drain_short(nessen_serve: ServeFactory) -> None:
    # SHUTDOWN_TIMEOUT is far longer than the wait below: only the second signal can end it.
    served = nessen_serve(SAMPLE, env=base_env(SHUTDOWN_TIMEOUT="60000"))
    with RawClient(served.address, timeout=15.0) as client:
        client.send(get("/hang"))
        served.wait_for("hang handler entered")
        served.signal(signal.SIGTERM)
        served.wait_for("READY -> DRAINING")
        served.signal(signal.SIGTERM)
        served.wait_for("SIGTERM again: cutting the drain short")
        assert served.wait(timeout=10.0) == 1
        assert client.closed_by_peer(timeout=5.0)
    assert "DRAINING -> STOPPING (drain cut short)" in served.stderr


def _read_until(client: RawClient, marker: bytes, timeout: float = 10.0) -> None:
    """Receive into ``client.buffer`` until it holds ``marker`` (each read ``timeout`` s)."""
    client.sock.settimeout(timeout)
    try:
        while marker not in client.buffer:
            chunk = client.sock.recv(65536)
            assert chunk, f"closed before {marker!r} arrived; got {client.buffer!r}"
            client.buffer += chunk
    finally:
        client.sock.settimeout(15.0)


def test_a_stream_in_flight_at_sigterm_is_sent_whole_and_ends_the_drain(
    nessen_serve: ServeFactory,
) -> None:
    # The stream's head goes out before the drain, so it cannot say "Connection: close";
    # the drain must close the connection when the stream ends, not wait for
    # SHUTDOWN_TIMEOUT and report it aborted.
    served = nessen_serve(DRAINING, env=base_env(SHUTDOWN_TIMEOUT="30000"))
    with RawClient(served.address, timeout=15.0) as client:
        client.send(get("/stream"))
        _read_until(client, PIECE)  # the head and the first piece are out: mid-stream
        served.signal(signal.SIGTERM)
        signalled = time.monotonic()
        response = client.response()
        assert closed_cleanly(client)
        assert client.buffer == b""
    status = served.wait()
    took = time.monotonic() - signalled
    assert response.status == 200
    assert response.header("transfer-encoding") == "chunked"
    assert response.header("connection") is None  # written before the drain began
    assert response.body == PIECE * STREAM_PIECES
    assert status == 0
    assert took < 10.0, f"exit {took:.1f} s after SIGTERM; the stream lasts about 1 s"
    log = served.stderr
    assert log.index("SIGTERM received") < log.index("GET /stream")  # access line: at its end
    assert "drained: every in-flight request completed" in log
    assert "DRAINING -> STOPPING (drained)" in log


def test_an_idle_keep_alive_connection_gets_fin_soon_after_sigterm(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(DRAINING, env=base_env(SHUTDOWN_TIMEOUT="60000"))
    with (
        RawClient(served.address, timeout=15.0) as idle,
        RawClient(served.address, timeout=15.0) as busy,
    ):
        first = idle.request(get("/pid"))
        assert (first.status, first.header("connection")) == (200, None)  # kept alive
        busy.send(get("/hang"))  # keeps the process draining: a FIN must come from the drain
        served.wait_for("hang handler entered")
        served.signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert closed_cleanly(idle, timeout=10.0)  # FIN, not a reset
        took = time.monotonic() - signalled
        assert idle.buffer == b""
        assert served.process.poll() is None  # still draining: closed by the drain, not exit
        # Far below SHUTDOWN_TIMEOUT (60 s): an idle one is closed once DRAIN_IDLE_GRACE
        # (0.5 s, for a request already on its way) has passed, not waited for.
        assert took < DRAIN_IDLE_GRACE + 1.5, f"the idle connection closed {took:.2f} s after"
        served.signal(signal.SIGTERM)  # cut the hung request short
        assert served.wait() == 1


def test_shutdown_hooks_run_after_the_drain_and_are_cut_at_shutdown_timeout(
    nessen_serve: ServeFactory,
) -> None:
    # runtime.py decides the exit status from the drain alone: a shutdown hook that
    # overruns SHUTDOWN_TIMEOUT is cancelled and logged, but the process still exits 0
    # when every request completed. Exit 1 means requests were cut.
    served = nessen_serve(SLOW_HOOK, env=base_env(SHUTDOWN_TIMEOUT="3000"))
    with RawClient(served.address, timeout=15.0) as client:
        client.send(get("/stream"))
        _read_until(client, PIECE)  # a request in flight: the drain takes about 1 s
        served.signal(signal.SIGTERM)
        signalled = time.monotonic()
        response = client.response()
        assert closed_cleanly(client)
    status = served.wait()
    took = time.monotonic() - signalled
    assert response.body == PIECE * STREAM_PIECES
    assert status == 0
    # The hook (30 s) runs until SHUTDOWN_TIMEOUT, counted from the signal, and no longer.
    assert 2.9 <= took < SLOW_HOOK_SECONDS / 2, f"exit {took:.1f} s after SIGTERM"
    log = served.stderr
    assert log.index("drained: every in-flight request completed") < log.index(
        "shutdown hook started"
    )
    assert "shutdown hook shutdown_hook overran the shutdown timeout" in log
    assert log.index("shutdown hook cancelled") < log.index("DRAINING -> STOPPING (drained)")
    assert "shutdown hook finished" not in log


def test_a_request_pipelined_behind_the_in_flight_one_is_answered(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(DRAINING)
    with RawClient(served.address, timeout=15.0) as client:
        client.send(get("/until-drain") + get("/pid"))  # the second waits its turn
        served.wait_for("until-drain handler entered")
        served.signal(signal.SIGTERM)
        first, second = client.response(), client.response()
        assert closed_cleanly(client)
        assert client.buffer == b""
    assert served.wait() == 0
    assert (first.status, first.body) == (200, b"finished during the drain")
    # Not "close": nothing may be answered after a close (RFC 9112 §9.6), and the second
    # request was sent before the drain. The last response on the connection closes it.
    assert first.header("connection") is None
    assert (second.status, second.header("connection")) == (200, "close")
    assert second.body == str(served.process.pid).encode()
    assert "drained: every in-flight request completed" in served.stderr
