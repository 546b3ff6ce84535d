"""Where ``nessen serve`` listens besides HOST:PORT: a Unix socket, an inherited socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.serving import (
    ServeFactory,
    ServeProcess,
    base_env,
    nessen_command,
    run_nessen,
)

SAMPLE = "tests.e2e.apps.sample:runtime"
WHO = "tests.e2e.apps.asgi_runtime:runtime"


def over_unix(path: Path) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=str(path))
    return httpx.Client(transport=transport, base_url="http://nessen", timeout=10.0)


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    # AF_UNIX paths are limited to about 107 bytes: pytest's tmp_path can be longer
    short = Path("/tmp") / f"nessen-{os.getpid()}-{tmp_path.name[-20:]}.sock"
    yield short
    short.unlink(missing_ok=True)
    Path(str(short) + ".lock").unlink(missing_ok=True)


def test_uds_serves_on_a_unix_socket_and_removes_it_at_exit(
    nessen_serve: ServeFactory, sock_path: Path
) -> None:
    served = nessen_serve(SAMPLE, "--uds", str(sock_path))
    assert served.host == str(sock_path)  # "Nessen running on unix:PATH"
    assert stat.S_ISSOCK(sock_path.stat().st_mode)
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o666  # uvicorn's default: nginx can connect
    with over_unix(sock_path) as client:
        assert client.get("/health").status_code == 200
    assert served.stop() == 0
    assert not sock_path.exists()


def test_the_socket_mode_is_settable(nessen_serve: ServeFactory, sock_path: Path) -> None:
    nessen_serve(SAMPLE, "--uds", str(sock_path), "--unix-socket-mode", "600")
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600


def test_a_stale_socket_file_is_replaced_and_a_live_one_is_refused(
    nessen_serve: ServeFactory, sock_path: Path
) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_path))
    stale.close()  # the file stays, nobody listens: left by a process that was killed
    served = nessen_serve(SAMPLE, "--uds", str(sock_path))
    with over_unix(sock_path) as client:
        assert client.get("/health").status_code == 200
    second = run_nessen("serve", SAMPLE, "--uds", str(sock_path))
    assert second.returncode == 3
    assert "another server holds it" in second.stderr
    with over_unix(sock_path) as client:  # the first one was not disturbed
        assert client.get("/health").status_code == 200
    assert served.stop() == 0


def test_a_proxy_on_the_unix_socket_is_trusted_like_one_on_loopback(
    nessen_serve: ServeFactory, sock_path: Path
) -> None:
    nessen_serve(WHO, "--uds", str(sock_path))  # TRUST_PROXY default: loopback
    with over_unix(sock_path) as client:
        who = client.get("/who", headers={"X-Forwarded-For": "203.0.113.9"}).json()
    assert who["client_ip"] == "203.0.113.9"
    assert who["peer_ip"] == "unix"
    distrustful = nessen_serve(
        WHO, "--uds", str(sock_path) + ".2", env=base_env(TRUST_PROXY="false")
    )
    try:
        with over_unix(Path(str(sock_path) + ".2")) as client:
            who = client.get("/who", headers={"X-Forwarded-For": "203.0.113.9"}).json()
        assert who["client_ip"] == "unix"
    finally:
        distrustful.close()


def test_uds_with_workers(nessen_serve: ServeFactory, sock_path: Path) -> None:
    served = nessen_serve(SAMPLE, "--uds", str(sock_path), env=base_env(WORKERS="2"))
    with over_unix(sock_path) as client:
        for _ in range(5):
            assert client.get("/health").status_code == 200
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert not sock_path.exists()


def test_fd_serves_on_an_inherited_listening_socket(nessen_serve: ServeFactory) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        served = nessen_serve(SAMPLE, "--fd", str(listener.fileno()), pass_fds=[listener.fileno()])
        assert served.port == port  # the inherited socket's address, not PORT
        ready = json.loads(served.wait_for("Nessen running on"))
        assert ready["message"] == (
            f"Nessen running on http://127.0.0.1:{port} from fd {listener.fileno()} "
            "(Press CTRL+C to quit)"
        )
        assert ready["address"] == f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            assert client.get("/health").status_code == 200
        assert served.stop() == 0
        # the socket is its parent's too: still listening, queueing for the next start
        socket.create_connection(("127.0.0.1", port), timeout=5.0).close()
    finally:
        listener.close()


def test_an_inherited_unix_socket_is_left_to_its_parent(
    nessen_serve: ServeFactory, sock_path: Path
) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    listener.listen()
    try:
        served = nessen_serve(SAMPLE, "--fd", str(listener.fileno()), pass_fds=[listener.fileno()])
        with over_unix(sock_path) as client:
            assert client.get("/health").status_code == 200
        assert served.stop() == 0
        assert sock_path.exists()  # not removed: nessen did not make it
    finally:
        listener.close()


def test_a_second_server_is_kept_off_the_path_by_its_lock(
    nessen_serve: ServeFactory, sock_path: Path
) -> None:
    first = nessen_serve(SAMPLE, "--uds", str(sock_path))
    inode = sock_path.stat().st_ino
    second = run_nessen("serve", SAMPLE, "--uds", str(sock_path))
    assert second.returncode == 3
    assert "another server holds it" in second.stderr
    assert sock_path.stat().st_ino == inode  # the first one's file, untouched
    assert first.stop() == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--fd", "97"], "LISTEN_FD=97: not an open socket"),
        (["--uds", "/tmp/a.sock", "--fd", "3"], "at most one of"),
        (["--unix-socket-mode", "999"], "--unix-socket-mode='999': not an octal file mode"),
    ],
)
def test_binding_settings_that_cannot_work_exit_2(args: list[str], expected: str) -> None:
    result = run_nessen("serve", SAMPLE, *args)
    assert result.returncode in (2, 3), result.stderr
    assert expected in result.stderr


def test_the_ready_line_names_the_unix_socket(nessen_serve: ServeFactory, sock_path: Path) -> None:
    served = nessen_serve(SAMPLE, "--uds", str(sock_path), env=base_env(LOG_FORMAT="json"))
    line = served.wait_for("Nessen running on unix:")
    assert json.loads(line)["address"] == f"unix:{sock_path}"
    assert isinstance(served, ServeProcess)


def test_a_non_integer_fd_names_the_flag_the_variable_and_the_range() -> None:
    result = run_nessen("serve", SAMPLE, "--fd", "abc")
    assert result.returncode == 2, result.stderr
    assert "--fd='abc' (LISTEN_FD): not a non-negative whole number" in result.stderr
    assert "must be an integer 0..1048576" in result.stderr
    env_result = run_nessen("serve", SAMPLE, env=base_env(LISTEN_FD="abc"))
    assert env_result.returncode == 2, env_result.stderr
    assert "LISTEN_FD='abc': not a non-negative whole number" in env_result.stderr


# systemd sets LISTEN_PID to the pid of the process it executes: exec keeps the pid, so
# this stand-in moves the socket to fd 3, sets the variables and becomes nessen.
ACTIVATE = """
import os, sys
os.dup2(int(os.environ.pop("FD")), 3)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="web")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_systemd_socket_activation_serves_on_fd_3_without_flags(workers: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    fd = listener.fileno()
    port = listener.getsockname()[1]
    env = base_env(FD=str(fd), WORKERS=workers, PORT="1")  # PORT=1 is not ours to bind
    command = [sys.executable, "-c", ACTIVATE, *nessen_command("serve", SAMPLE)[1:]]
    served = ServeProcess((), env, command=command, pass_fds=[fd])
    try:
        assert served.port == port
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            assert client.get("/health").status_code == 200
            # cleared, so the app's own child processes do not take fd 3 for theirs
            assert client.get("/environ").json() == []
        assert served.stop() == 0
    finally:
        served.close()
        listener.close()
