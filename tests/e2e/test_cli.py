"""``nessen`` on the command line: version, configuration and app errors, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import nessen
from nessen.config import ENV_VARS
from tests.e2e.serving import (
    EXIT_TIMEOUT,
    ROOT,
    START_TIMEOUT,
    ServeFactory,
    ServeProcess,
    base_env,
    nessen_command,
    run_nessen,
)
from tests.rawhttp import RawClient, get


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
        ({"HEALTH_ENDPOINTS": "maybe"}, [], r"HEALTH_ENDPOINTS='maybe': .*must be true or false"),
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
    assert "Nessen running on" not in result.stderr


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
    assert "Nessen running on" not in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_host_and_log_level_flags_win_over_the_environment() -> None:
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(
        nessen_command("serve", "tests.e2e.apps.sample:runtime", *args),
        env=base_env(HOST="0.0.0.0", LOG_LEVEL="debug", LOG_FORMAT="console"),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # At warning level not even the "Nessen running on" line is written: poll the port.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                client = RawClient(("127.0.0.1", port))
                break
            except ConnectionRefusedError:
                assert process.poll() is None, "nessen serve exited"
                assert time.monotonic() < deadline, "nothing listens"
                time.sleep(0.02)
        with client:
            assert client.request(get("/ready")).status == 200
            assert client.request(get("/nowhere")).status == 404
        # Bound to 127.0.0.1 only: another loopback address (which HOST=0.0.0.0 would
        # answer on) is refused.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=5.0).close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=EXIT_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    # The 404's access line is a warning; the 200's, the startup line and the state
    # transitions are info lines, left out.
    (line,) = stderr.splitlines()
    assert " WARNING nessen.access GET /nowhere 404 " in line


# --- every setting as a flag -------------------------------------------------------------


def test_help_lists_every_setting_with_its_variable_unit_and_default() -> None:
    result = run_nessen("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for name in ENV_VARS:
        flag = "--" + name.lower().replace("_", "-")
        assert flag in text or name in ("HOST", "PORT", "LOG_LEVEL", "WORKERS"), name
        assert name in text, name
    # The README's table gives these defaults and units (values written out, not derived).
    for expected in (
        "--max-body-size BYTES MAX_BODY_SIZE, bytes (default 1048576)",
        "--headers-timeout MS HEADERS_TIMEOUT, ms (default 10000)",
        "--shutdown-timeout MS SHUTDOWN_TIMEOUT, ms (default 30000)",
        "--body-min-rate BYTES_PER_S BODY_MIN_RATE, bytes/s (default 240)",
    ):
        assert expected in text, expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--max-body-size", "abc"], r"--max-body-size='abc': .*\b0\.\.\d+ bytes"),
        (["--headers-timeout", "-5"], r"--headers-timeout='-5': .*\b1\.\.\d+ ms"),
        (["--ready-when-degraded", "maybe"], r"--ready-when-degraded='maybe'"),
    ],
)
def test_an_invalid_setting_flag_exits_2_naming_the_flag(args: list[str], expected: str) -> None:
    result = run_nessen("serve", *args, env=base_env(MAX_BODY_SIZE="1000"))
    assert result.returncode == 2, result.stderr
    assert re.search(expected, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_a_setting_flag_wins_over_its_variable(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(
        "tests.e2e.apps.sample:runtime",
        "--max-body-size",
        "10",
        env=base_env(MAX_BODY_SIZE="1000000"),
    )
    head = b"POST /submit HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
    with RawClient(served.address) as client:
        assert client.request(head % 10 + b"x" * 10).status == 200
    with RawClient(served.address) as client:
        client.send(head % 11)
        refused = client.response()
    assert refused.status == 413  # the flag's 10 bytes, not the variable's million


def test_a_setting_flag_wins_over_the_apps_own_config(
    nessen_serve: ServeFactory, tmp_path: Path
) -> None:
    (tmp_path / "own_config.py").write_text(
        "from nessen import Config, Response, Runtime\n"
        "runtime = Runtime(Config(max_body_bytes=5, port=0, host='127.0.0.1'))\n"
        "@runtime.route.post('/up')\n"
        "async def up(ctx):\n"
        "    return Response.text(str(len(ctx.body)))\n"
    )
    env = base_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    served = nessen_serve(
        "own_config:runtime",
        "--max-body-size",
        "8",
        env=env,
    )
    head = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
    with RawClient(served.address) as client:
        response = client.request(head % 8 + b"x" * 8)
    assert (response.status, response.body) == (200, b"8")  # past the app's own 5


FACTORY_APP = """
from nessen import Response, Runtime

def create():
    runtime = Runtime()

    @runtime.route.get("/settings")
    async def settings(ctx):
        config = runtime.config
        return Response.json({
            "idle_timeout": config.idle_timeout,
            "max_concurrent_requests": config.max_concurrent_requests,
            "shutdown_timeout": config.shutdown_timeout,
            "ws": [config.ws_ping_interval, config.ws_ping_timeout, config.ws_max_message_bytes,
                   config.ws_receive_queue, config.ws_compression],
            "client": ctx.client_ip,
        })

    return runtime
"""


def get_settings(served: ServeProcess) -> Any:
    """``GET /settings`` of FACTORY_APP, through a proxy that says the client is 203.0.113.9."""
    with RawClient(served.address) as client:
        return client.request(
            b"GET /settings HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"
        )


def test_uvicorns_flags_carry_over(nessen_serve: ServeFactory, tmp_path: Path) -> None:
    (tmp_path / "made.py").write_text(FACTORY_APP)
    served = nessen_serve(
        "made:create",
        "--factory",
        "--app-dir",
        str(tmp_path),
        "--timeout-keep-alive",
        "7",
        "--limit-concurrency",
        "40",
        "--timeout-graceful-shutdown",
        "12.5",
        "--forwarded-allow-ips",
        "*",
        "--no-access-log",
        "--ws-ping-interval",
        "15",
        "--ws-ping-timeout",
        "2.5",
        "--ws-max-size",
        "16777216",
        "--ws-max-queue",
        "32",
        "--ws-per-message-deflate",
        "false",
        env=base_env(LOG_FORMAT="console"),
    )
    response = get_settings(served)
    assert response.status == 200
    assert json.loads(response.body) == {
        "idle_timeout": 7.0,  # seconds in uvicorn's flag, seconds in the Config field
        "max_concurrent_requests": 40,
        "shutdown_timeout": 12.5,
        "ws": [15.0, 2.5, 16777216, 32, False],  # uvicorn's seconds, not milliseconds
        "client": "203.0.113.9",  # every peer trusted, as --forwarded-allow-ips '*' says
    }
    assert served.stop() == 0
    assert "nessen.access" not in served.stderr  # --no-access-log


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--limit-concurrency", "0"],
            r"--limit-concurrency='0' \(MAX_CONCURRENT_REQUESTS\): must be an integer 1\.\.",
        ),
        (["--timeout-keep-alive", "-1"], r"--timeout-keep-alive=-1: .* seconds"),
        (["--limit-concurrency", "ten"], r"--limit-concurrency: invalid int value"),
        (["--factory", "tests.e2e.apps.sample:runtime"], r"an app already, not a factory"),
        (["--factory", "tests.e2e.apps.sample:not_a_runtime"], r"not callable, so it cannot"),
        (["--factory", "tests.e2e.apps.asgi_apps:no_lifespan"], r"an app already, not a factory"),
        (["--header", "no colon"], r"--header='no colon': must be NAME:VALUE"),
        (["--header", "Content-Length: 3"], r"--header=.*Content-Length is written by the server"),
        (["--header", "Bad Name: x"], r"--header=.*'Bad Name' is not a token"),
        (["--backlog", "0"], r"--backlog='0': must be an integer 1\.\.65535"),
        (["--ws-ping-timeout", "0"], r"--ws-ping-timeout=0: .* seconds"),
        (
            ["--ws-max-queue", "0"],
            r"--ws-max-queue='0' \(WS_RECEIVE_QUEUE\): must be an integer 1\.\.10000",
        ),
    ],
)
def test_a_bad_uvicorn_flag_exits_2_naming_it(args: list[str], expected: str) -> None:
    result = run_nessen("serve", *args)
    assert result.returncode == 2, result.stderr
    assert re.search(expected, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_no_proxy_headers_ignores_x_forwarded_for_even_from_loopback(
    nessen_serve: ServeFactory, tmp_path: Path
) -> None:
    (tmp_path / "made.py").write_text(FACTORY_APP)
    served = nessen_serve(
        "made:create", "--factory", "--app-dir", str(tmp_path), "--no-proxy-headers"
    )
    response = get_settings(served)
    assert json.loads(response.body)["client"] == "127.0.0.1"


def test_a_bare_proxy_headers_and_access_log_keep_the_defaults(
    nessen_serve: ServeFactory, tmp_path: Path
) -> None:
    (tmp_path / "made.py").write_text(FACTORY_APP)
    served = nessen_serve(
        "made:create",
        "--factory",
        "--app-dir",
        str(tmp_path),
        "--proxy-headers",
        "--access-log",
        env=base_env(LOG_FORMAT="console"),
    )
    response = get_settings(served)
    assert json.loads(response.body)["client"] == "203.0.113.9"  # a loopback peer: trusted
    served.wait_for("nessen.access")


def test_header_and_no_server_header_shape_every_answer(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(
        "tests.e2e.apps.sample:runtime",
        "--header",
        "X-Served-By: edge-1",
        "--header",
        "X-Region:eu",
        "--no-server-header",
        "--backlog",
        "16",
    )
    with RawClient(served.address) as client:
        answered = client.request(get("/ready"))
    with RawClient(served.address) as client:
        refused = client.request(b"GET / HTTP/1.1\r\n\r\n")  # no Host: the server's own 400
    for response in (answered, refused):
        assert response.header("x-served-by") == "edge-1"
        assert response.header("x-region") == "eu"
        assert response.header("server") is None
    assert (answered.status, refused.status) == (200, 400)


def test_lifespan_on_refuses_an_app_without_lifespan_support() -> None:
    result = run_nessen("serve", "tests.e2e.apps.asgi_apps:no_lifespan", "--lifespan", "on")
    assert result.returncode == 3, result.stderr
    assert "--lifespan on" in result.stderr


@pytest.mark.parametrize(
    ("app", "mode"),
    [
        ("tests.e2e.apps.asgi_apps:startup_fails_but_serves", "off"),  # never asked
        ("tests.e2e.apps.asgi_apps:no_lifespan", "auto"),  # served without it
    ],
)
def test_lifespan_off_and_auto_serve(nessen_serve: ServeFactory, app: str, mode: str) -> None:
    served = nessen_serve(app, "--lifespan", mode)
    with RawClient(served.address) as client:
        response = client.request(get("/"))
    assert (response.status, response.body) == (200, b"ok")
    assert served.stop() == 0


ENV_APP = """
import os
from nessen import Response, Runtime

GREETING = os.environ["APP_GREETING"]  # read at import: the file was loaded before
runtime = Runtime()

@runtime.route.post("/greet")
async def greet(ctx):
    return Response.text(GREETING + " " + str(len(ctx.body)))
"""


def serve_greeter(
    nessen_serve: ServeFactory, folder: Path, env_file: str, env: dict[str, str]
) -> ServeProcess:
    """``nessen serve greeter:runtime`` with ``env_file`` as its ``--env-file``."""
    (folder / "greeter.py").write_text(ENV_APP)
    path = folder / "service.env"
    path.write_text(env_file)
    return nessen_serve(
        "greeter:runtime", "--app-dir", str(folder), "--env-file", str(path), env=env
    )


@pytest.mark.parametrize(("environment", "limit"), [({}, 10), ({"MAX_BODY_SIZE": "1000"}, 1000)])
def test_env_file_sets_what_the_environment_does_not(
    nessen_serve: ServeFactory, tmp_path: Path, environment: dict[str, str], limit: int
) -> None:
    served = serve_greeter(
        nessen_serve,
        tmp_path,
        '# settings\nexport APP_GREETING="hello there"\nMAX_BODY_SIZE=10\n',
        base_env(**environment),
    )
    head = b"POST /greet HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
    with RawClient(served.address) as client:
        response = client.request(head % 11 + b"x" * 11)
    if limit == 10:
        assert response.status == 413  # MAX_BODY_SIZE from the file
    else:
        assert (response.status, response.body) == (200, b"hello there 11")  # the env's wins


def test_a_missing_env_file_exits_2(tmp_path: Path) -> None:
    result = run_nessen("serve", "--env-file", str(tmp_path / "absent.env"))
    assert result.returncode == 2
    assert "--env-file" in result.stderr
    assert "No such file" in result.stderr


def test_a_bad_flag_prints_a_short_usage_not_every_flag() -> None:
    result = run_nessen("serve", "--limit-concurrency", "ten")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) <= 3, result.stderr


def test_proxy_headers_before_the_app_does_not_take_it_as_its_value(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve("--proxy-headers", "tests.e2e.apps.sample:runtime")  # uvicorn's order
    with RawClient(served.address) as client:
        assert client.request(get("/ready")).status == 200


def test_header_server_replaces_ours(nessen_serve: ServeFactory) -> None:
    served = nessen_serve("tests.e2e.apps.sample:runtime", "--header", "Server: edge")
    with RawClient(served.address) as client:
        response = client.request(get("/ready"))
    assert [value for name, value in response.headers if name.lower() == "server"] == ["edge"]


def test_env_file_references_see_exported_variables(
    nessen_serve: ServeFactory, tmp_path: Path
) -> None:
    served = serve_greeter(
        nessen_serve,
        tmp_path,
        "BASE=file\nAPP_GREETING=${BASE}-greeting\n",
        base_env(BASE="exported"),
    )
    head = b"POST /greet HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
    with RawClient(served.address) as client:
        response = client.request(head)
    assert response.body == b"exported-greeting 0"  # as uvicorn's load_dotenv(override=False)
