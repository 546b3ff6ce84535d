"""``nessen`` on the command line: version, configuration and app errors, exit codes."""

from __future__ import annotations

import re
import socket

import pytest

import nessen
from tests.e2e.serving import base_env, run_nessen


def test_version() -> None:
    result = run_nessen("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"nessen {nessen.__version__}"


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"PORT": "80a"}, [], r"PORT='80a': .*\b0\.\.65535\b"),
        ({"PORT": "70000"}, [], r"PORT='70000': .*\b0\.\.65535\b"),
        ({"MAX_BODY_SIZE": "abc"}, [], r"MAX_BODY_SIZE='abc': .*\b0\.\.\d+ bytes"),
        ({"HEADERS_TIMEOUT": "-5"}, [], r"HEADERS_TIMEOUT='-5': .*\b1\.\.\d+ ms"),
        ({}, ["--port", "99999"], r"--port=99999: .*\b0\.\.65535\b"),
        ({}, ["--workers", "0"], r"--workers=0: .*\b1\.\.512\b"),
    ],
)
def test_invalid_configuration_exits_2_naming_the_setting_and_range(
    env: dict[str, str], args: list[str], expected: str
) -> None:
    result = run_nessen("serve", *args, env=base_env(**env))
    assert result.returncode == 2, result.stderr
    assert re.search(expected, result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("nessen: invalid configuration:\n")


def test_every_invalid_variable_is_reported_at_once() -> None:
    env = base_env(PORT="80a", MAX_BODY_SIZE="abc", HEADERS_TIMEOUT="-5", LOG_LEVEL="loud")
    result = run_nessen("serve", env=env)
    assert result.returncode == 2
    for name in ("PORT='80a'", "MAX_BODY_SIZE='abc'", "HEADERS_TIMEOUT='-5'", "LOG_LEVEL='loud'"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nosuchmodule:app", "nessen: cannot import module 'nosuchmodule': not found"),
        (
            "tests.e2e.apps.sample:missing",
            "nessen: module 'tests.e2e.apps.sample' has no attribute 'missing'",
        ),
        ("json:dumps", "nessen: json:dumps is a function, not a nessen Runtime"),
        (
            "tests.e2e.apps.sample:not_a_runtime",
            "nessen: tests.e2e.apps.sample:not_a_runtime is a dict, not a nessen Runtime",
        ),
        ("justamodule", "nessen: app 'justamodule' must look like MODULE:ATTR"),
    ],
)
def test_bad_app_spec_exits_2_with_one_line(spec: str, expected: str) -> None:
    result = run_nessen("serve", spec)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]
    assert result.stdout == ""


def test_an_address_in_use_exits_3_with_workers_too() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_nessen("serve", env=base_env(WORKERS="2", PORT=str(port)))
    assert result.returncode == 3
    assert "cannot listen on" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_failing_startup_hook_exits_3() -> None:
    result = run_nessen("serve", "tests.e2e.apps.sample:broken")
    assert result.returncode == 3, result.stderr
    assert "database unreachable" in result.stderr
    assert "listening on" not in result.stderr


def test_an_address_in_use_exits_3() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_nessen("serve", "--port", str(port))
    assert result.returncode == 3, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_a_redis_store_without_its_url_exits_2_before_listening() -> None:
    result = run_nessen("serve", env=base_env(RATE_LIMIT_STORE="redis"))
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr
    assert "listening on" not in result.stderr
