"""Signals and the drain of a real ``nessen serve`` process."""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.e2e.serving import ServeFactory, base_env
from tests.rawhttp import RawClient, get

SAMPLE = "tests.e2e.apps.sample:runtime"


TRANSITION = re.compile(r"nessen\.lifecycle state (\w+ -> \w+(?: \([^)]*\))?)")


def transitions(stderr: str) -> list[str]:
    """The logged state transitions, e.g. ``READY -> DRAINING (shutdown requested)``."""
    return [found.group(1) for found in TRANSITION.finditer(stderr)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_idle_server_stops_with_exit_0(nessen_serve: ServeFactory, signum: int) -> None:
    served = nessen_serve(SAMPLE)
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


def test_drain_deadline_cuts_a_hung_request_and_exits_1(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(SAMPLE, env=base_env(SHUTDOWN_TIMEOUT="1000"))
    with RawClient(served.address, timeout=15.0) as client:
        client.send(get("/hang"))
        served.wait_for("hang handler entered")
        served.signal(signal.SIGTERM)
        assert client.closed_by_peer(timeout=10.0)
        assert client.buffer == b""  # cut: no response at all
    assert served.wait() == 1
    assert "drain deadline passed: cut 1 in-flight request(s)" in served.stderr
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
