"""Safe by default: production unless development is chosen; `make serve` is development
on loopback."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

from tests.e2e.serving import ROOT, ServeFactory, ServeProcess, base_env

SAMPLE = "tests.e2e.apps.sample:runtime"


def test_without_nessen_env_the_server_is_production(nessen_serve: ServeFactory) -> None:
    env = base_env()
    assert "NESSEN_ENV" not in env
    assert "NODE_ENV" not in env
    served = nessen_serve(SAMPLE, env=env)
    with served.client() as client:
        failed = client.get("/fail")
        status_page = client.get("/_nessen/status")
    assert failed.status_code == 500
    assert set(failed.json()) == {"error", "request_id"}  # no detail, no traceback
    assert "hunter2" not in failed.text
    assert status_page.status_code == 404
    line = served.wait_for("Nessen running on")
    assert json.loads(line)["level"] == "info"  # JSON lines
    assert served.stop() == 0
    assert "hunter2" in served.stderr  # the log has the detail, under the request id


def test_development_must_be_chosen_and_shows_the_traceback(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(SAMPLE, env=base_env(NESSEN_ENV="development"))
    with served.client() as client:
        failed = client.get("/fail")
    assert failed.status_code == 500
    assert "hunter2" in failed.json()["detail"]
    assert failed.json()["traceback"][0].startswith("Traceback")
    assert served.stop() == 0


def test_make_serve_runs_development_on_loopback() -> None:
    """What `make serve` runs (printed by `make -n`), run as is: development, 127.0.0.1."""
    env = {k: v for k, v in base_env().items() if k != "HOST"}
    printed = subprocess.run(
        ["make", "-s", "-n", "serve"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    command = printed.splitlines()[-1]
    assert "nessen serve" in command
    # The venv of this checkout is installed already (make test's setup); the recipe's
    # commands run with this interpreter's nessen instead of whichever .venv make names.
    nessen = shlex.join([os.path.join(os.path.dirname(sys.executable), "nessen")])
    command = command.replace(".venv/bin/nessen", nessen)
    served = ServeProcess([], env, command=["sh", "-c", "exec env " + command])
    try:
        assert served.host == "127.0.0.1"
        with served.client() as client:
            failed = client.get("/nowhere")
        assert failed.status_code == 404
        assert " INFO " in served.wait_for("Nessen running on")  # console lines: development
        assert served.stop() == 0
    finally:
        served.close()


def test_make_serve_installs_only_what_serving_needs() -> None:
    """``make serve`` on a fresh clone installs the package, not the test extras."""
    printed = subprocess.run(
        ["make", "-s", "-n", "-B", "serve"],  # -B: as on a fresh clone, every step runs
        cwd=ROOT,
        env=base_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [
        line.split("pip install", 1)[1].split()
        for line in printed.splitlines()
        if "pip install" in line and "--upgrade pip" not in line
    ]
    assert installs == [["--quiet", "-e", "."]]


def test_trusting_every_proxy_in_production_is_warned_once(nessen_serve: ServeFactory) -> None:
    served = nessen_serve(SAMPLE, "--workers", "2", env=base_env(TRUST_PROXY="true"))
    served.wait_for("TRUST_PROXY=true")
    with served.client() as client:  # both workers serve, neither warns again
        assert all(client.get("/health").status_code == 200 for _ in range(4))
    assert served.stop() == 0
    warnings = [line for line in served.lines if "TRUST_PROXY=true" in line]
    assert len(warnings) == 1
    assert json.loads(warnings[0])["level"] == "warning"


def test_loopback_trust_and_development_are_not_warned(nessen_serve: ServeFactory) -> None:
    for env in (base_env(), base_env(TRUST_PROXY="true", NESSEN_ENV="development")):
        served = nessen_serve(SAMPLE, env=env)
        with served.client() as client:
            assert client.get("/health").status_code == 200
        assert served.stop() == 0
        assert "TRUST_PROXY" not in served.stderr
