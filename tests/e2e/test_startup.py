"""Startup tells the truth: a port in use closes nothing it never opened, a failing ASGI
lifespan is one message."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.e2e.serving import base_env, run_nessen

RESOURCES = "tests.e2e.apps.resources:runtime"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if '"level":"error"' in line]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_exits_3_leaving_nothing_open(taken_port: int, workers: str) -> None:
    result = run_nessen("serve", RESOURCES, env=base_env(PORT=str(taken_port), WORKERS=workers))
    assert result.returncode == 3, result.stderr
    assert f"cannot listen on 127.0.0.1:{taken_port}" in result.stderr
    # The address is bound before the startup hooks run: nothing was opened to be closed.
    opened = result.stderr.count("resources: pool opened")
    closed = result.stderr.count("resources: pool closed")
    assert (opened, closed) == (0, 0), result.stderr
    assert len(error_lines(result.stderr)) == 1, result.stderr


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        # answers lifespan.startup.failed
        ("tests.e2e.apps.asgi_apps:failing_startup", "cannot reach the database"),
        # raises after taking lifespan.startup
        (
            "tests.e2e.apps.asgi_apps:raising_startup",
            "ConnectionError: cannot reach the database",
        ),
        # FastAPI: answers failed with a traceback's text, then raises
        (
            "tests.e2e.apps.fastapi_failing:app",
            "ConnectionError: cannot reach the database",
        ),
    ],
    ids=["answers-failed", "raises", "fastapi"],
)
def test_a_failing_lifespan_startup_is_one_message_and_exit_3(app: str, expected: str) -> None:
    result = run_nessen("serve", app)
    assert result.returncode == 3, result.stderr
    (line,) = error_lines(result.stderr)
    assert f'"message":"ASGI lifespan startup failed: {expected}"' in line, line
    assert "unsupported" not in result.stderr
    assert "without answering" not in result.stderr
    assert "listening on" not in result.stderr
