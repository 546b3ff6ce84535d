"""What ``nessen serve`` writes to stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nessen import __version__
from tests.e2e.serving import ServeFactory, base_env, run_nessen
from tests.rawhttp import RawClient, get

SAMPLE = "tests.e2e.apps.sample:runtime"


def test_json_logs_are_one_object_per_line_with_access_fields(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve("tests.e2e.apps.sample:runtime", env=base_env(LOG_FORMAT="json"))
    with RawClient(served.address) as client:
        assert client.request(get("/health")).status == 200
        evil = client.request(get("/no%0awhere%0d%0aFAKE"))
        assert evil.status == 404
    access = json.loads(
        served.wait_for_line(lambda line: '"logger":"nessen.access"' in line and "/health" in line)
    )
    assert served.stop() == 0

    assert access["level"] == "info"
    assert access["method"] == "GET"
    assert access["path"] == "/health"
    assert access["route"] == "/health"
    assert access["status"] == 200
    assert access["bytes"] == 2
    assert access["client_ip"] == "127.0.0.1"
    assert isinstance(access["duration_ms"], float)
    assert access["duration_ms"] >= 0.0
    assert isinstance(access["request_id"], str)
    assert access["request_id"] != ""
    assert access["message"] == "GET /health 200"

    lines = served.stderr.splitlines()
    entries = [json.loads(line) for line in lines]  # every line is JSON
    assert all(set(e) >= {"timestamp", "level", "logger", "message"} for e in entries)
    messages = [e["message"] for e in entries]
    assert any("Nessen running on http://127.0.0.1:" in m for m in messages)
    (not_found,) = [e for e in entries if e.get("status") == 404]
    assert not_found["path"] == "/no\nwhere\r\nFAKE"
    assert not any(line.startswith("FAKE") for line in lines)
    states = [(e["previous_state"], e["state"]) for e in entries if "previous_state" in e]
    assert states == [("STARTING", "READY"), ("READY", "DRAINING"), ("DRAINING", "STOPPING")]


def test_console_logs_escape_control_characters(nessen_serve: ServeFactory) -> None:
    served = nessen_serve("tests.e2e.apps.sample:runtime", env=base_env(LOG_FORMAT="console"))
    with RawClient(served.address) as client:
        assert client.request(get("/no%0awhere%0d%0aFAKE")).status == 404
    line = served.wait_for("nessen.access")
    assert served.stop() == 0
    assert "path=/no\\x0awhere\\x0d\\x0aFAKE" in line
    assert not any(line.startswith("FAKE") for line in served.stderr.splitlines())


def test_production_logs_json_by_default(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(env=base_env(NESSEN_ENV="production"))
    assert served.stop() == 0
    lines = served.stderr.splitlines()
    assert len(lines) >= 4
    assert all(isinstance(json.loads(line), dict) for line in lines)


LIMITS = {
    "MAX_URL_LENGTH": "4096",
    "MAX_HEADER_SIZE": "12345",
    "MAX_HEADER_COUNT": "42",
    "MAX_BODY_SIZE": "54321",
    "MAX_CONNECTIONS": "777",
    "MAX_CONCURRENT_REQUESTS": "55",
    "HEADERS_TIMEOUT": "7000",
    "REQUEST_TIMEOUT": "2500",
    "IDLE_TIMEOUT": "61000",
}


def _ready_and_limits(lines: list[str]) -> tuple[str, str]:
    """The ready line and the line after it."""
    (index,) = [i for i, line in enumerate(lines) if "Nessen running on" in line]
    return lines[index], lines[index + 1]


def test_the_ready_line_is_short_and_the_limits_follow_on_a_second_line(
    nessen_serve: ServeFactory,
) -> None:
    served = nessen_serve(SAMPLE, env=base_env(LOG_FORMAT="console", **LIMITS))
    pid = served.process.pid
    assert served.stop() == 0
    ready, limits = _ready_and_limits(served.stderr.splitlines())
    assert ready.endswith(
        f" INFO    nessen.runtime Nessen running on http://127.0.0.1:{served.port} "
        "(Press CTRL+C to quit)"
    )
    assert f" nessen.runtime nessen {__version__}, pid {pid}, env production, workers 1; " in limits
    assert (
        "limits: connections 777, requests in handlers 55, target 4096 B, header section "
        "12345 B / 42 fields, body 54321 B; "
        "timeouts: headers 7s, body 30s, request 2.5s, idle 61s, send 30s"
    ) in limits
    assert limits.endswith("send 30s")  # the fields are in the message, not repeated


def test_the_json_ready_and_limits_lines_carry_their_fields(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(SAMPLE, env=base_env(LOG_FORMAT="json", **LIMITS))
    pid = served.process.pid
    assert served.stop() == 0
    ready_line, limits_line = _ready_and_limits(served.stderr.splitlines())
    ready, limits = json.loads(ready_line), json.loads(limits_line)
    address = f"http://127.0.0.1:{served.port}"
    assert ready["message"] == f"Nessen running on {address} (Press CTRL+C to quit)"
    assert ready["address"] == address
    assert {k: limits[k] for k in limits if k not in ("timestamp", "message")} == {
        "level": "info",
        "logger": "nessen.runtime",
        "version": __version__,
        "pid": pid,
        "env": "production",
        "workers": 1,
        "max_connections": 777,
        "max_concurrent_requests": 55,
        "max_target_bytes": 4096,
        "max_header_bytes": 12345,
        "max_header_count": 42,
        "max_body_bytes": 54321,
        "headers_timeout_ms": 7000,
        "body_timeout_ms": 30000,
        "request_timeout_ms": 2500,
        "idle_timeout_ms": 61000,
        "send_timeout_ms": 30000,
    }


def test_an_apps_own_logging_set_up_is_kept_and_gets_the_request_id(
    nessen_serve: ServeFactory, tmp_path: Path
) -> None:
    app_log = tmp_path / "app.log"
    served = nessen_serve("tests.e2e.apps.own_logging:app", env=base_env(APP_LOG_FILE=str(app_log)))
    with served.client() as client:
        answer = client.get("/order/42")
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    access = served.wait_for("GET /order/42")  # Nessen's lines still on stderr, as before
    assert request_id in access
    assert served.stop() == 0
    lines = app_log.read_text().splitlines()
    # the app's handler, format and level are its own: Nessen replaced none of them, the
    # line has the file and line number, and the request id the response carried
    assert f"APP {request_id} shop.orders own_logging.py:" in "\n".join(lines)
    assert any(line.endswith("order 42 looked up") for line in lines)
    assert not any("nessen." in line for line in lines)  # Nessen's own lines stay out


LOG_CONFIG = {
    "version": 1,
    "formatters": {"plain": {"format": "ACCESS %(levelname)s %(message)s"}},
    "handlers": {"file": {"class": "logging.FileHandler", "formatter": "plain"}},
    "loggers": {"nessen.access": {"handlers": ["file"], "level": "INFO"}},
}


@pytest.mark.parametrize("kind", ["json", "yaml"])
def test_log_config_file_is_applied_over_nessens_set_up(
    nessen_serve: ServeFactory, tmp_path: Path, kind: str
) -> None:
    access_log = tmp_path / "access.log"
    config = json.loads(json.dumps(LOG_CONFIG))
    config["handlers"]["file"]["filename"] = str(access_log)
    path = tmp_path / f"logging.{kind}"
    path.write_text(json.dumps(config) if kind == "json" else yaml.safe_dump(config))
    served = nessen_serve("tests.e2e.apps.sample:runtime", "--log-config", str(path))
    with served.client() as client:
        assert client.get("/current-task").status_code == 200
    assert served.stop() == 0
    assert "ACCESS INFO GET /current-task 200" in access_log.read_text().splitlines()
    # only there: a nessen logger given handlers does not propagate to Nessen's stderr one
    assert "GET /current-task 200" not in served.stderr
    # loggers the file does not name stay enabled (disable_existing_loggers defaults off)
    assert "STARTING -> READY" in served.stderr


def test_an_ini_log_config_is_read_with_file_config(
    nessen_serve: ServeFactory, tmp_path: Path
) -> None:
    access_log = tmp_path / "access.log"
    path = tmp_path / "logging.ini"
    path.write_text(
        "[loggers]\nkeys=root,access\n\n[handlers]\nkeys=file\n\n[formatters]\nkeys=plain\n\n"
        "[logger_root]\nhandlers=\n\n"
        "[logger_access]\nqualname=nessen.access\nhandlers=file\nlevel=INFO\n\n"
        f"[handler_file]\nclass=FileHandler\nformatter=plain\nargs=({str(access_log)!r},)\n\n"
        "[formatter_plain]\nformat=INI %(message)s\n"
    )
    served = nessen_serve("tests.e2e.apps.sample:runtime", "--log-config", str(path))
    with served.client() as client:
        assert client.get("/current-task").status_code == 200
    assert served.stop() == 0
    assert "INI GET /current-task 200" in access_log.read_text().splitlines()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "LOG_CONFIG='{path}': not valid JSON"),
        ('{"handlers": {}}', "must be a mapping with version: 1"),
        (
            '{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}',
            "refused by logging.config",
        ),
    ],
)
def test_a_log_config_that_cannot_work_exits_2_naming_it(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "logging.json"
    path.write_text(content)
    result = run_nessen("serve", "tests.e2e.apps.sample:runtime", "--log-config", str(path))
    assert result.returncode == 2, result.stderr
    assert expected.format(path=path) in result.stderr
