"""Startup tells the truth: a port in use closes nothing it never opened, a failing ASGI
lifespan is one message, an app that fails to import shows where."""

from __future__ import annotations

import os
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

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
    assert "Nessen running on" not in result.stderr


def test_an_app_whose_import_raises_shows_its_traceback_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "badservice.py").write_text(
        textwrap.dedent(
            """
            def read_settings():
                raise KeyError("DATABASE_URL")

            SETTINGS = read_settings()
            """
        )
    )
    env = base_env(PYTHONPATH=str(tmp_path))
    result = run_nessen("serve", "badservice:app", env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "nessen: importing 'badservice' failed: KeyError: 'DATABASE_URL'"
    assert lines[1] == "Traceback (most recent call last):"
    path = os.path.join(str(tmp_path), "badservice.py")
    assert f'  File "{path}", line 5, in <module>' in lines
    assert f'  File "{path}", line 3, in read_settings' in lines
    assert lines[-1] == "KeyError: 'DATABASE_URL'"
    assert "importlib" not in result.stderr  # the import machinery's frames are left out


def test_a_missing_dependency_of_the_app_shows_where_it_is_imported(tmp_path: Path) -> None:
    (tmp_path / "needsdep.py").write_text("import nessen_no_such_dependency\n")
    result = run_nessen("serve", "needsdep:app", env=base_env(PYTHONPATH=str(tmp_path)))
    assert result.returncode == 2, result.stderr
    assert "Traceback (most recent call last):" in result.stderr
    assert 'needsdep.py", line 1, in <module>' in result.stderr
    assert result.stderr.rstrip().endswith(
        "ModuleNotFoundError: No module named 'nessen_no_such_dependency'"
    )
