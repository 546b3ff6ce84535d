from __future__ import annotations

import subprocess
import sys

import nessen

EXPECTED_ALL = [
    "Config",
    "ConfigError",
    "HTTPError",
    "Headers",
    "Middleware",
    "NessenError",
    "Next",
    "ProtocolError",
    "Query",
    "Request",
    "Response",
    "Runtime",
    "State",
    "__version__",
]


def test_all_is_pinned() -> None:
    assert nessen.__all__ == EXPECTED_ALL


def test_every_public_name_exists() -> None:
    for name in nessen.__all__:
        assert getattr(nessen, name) is not None, name


def test_version_is_a_dotted_string() -> None:
    parts = nessen.__version__.split(".")
    assert len(parts) == 3
    assert all(part.isdigit() for part in parts)


def test_error_hierarchy() -> None:
    assert issubclass(nessen.ConfigError, nessen.NessenError)
    assert issubclass(nessen.ConfigError, ValueError)
    assert issubclass(nessen.ProtocolError, nessen.NessenError)
    assert issubclass(nessen.HTTPError, nessen.NessenError)


IMPORT_CHECK = """
import logging, signal, sys
term, interrupt = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
import {module}
# unchanged, whatever they were (a shell's background job starts with SIGINT ignored)
assert signal.getsignal(signal.SIGTERM) is term, signal.getsignal(signal.SIGTERM)
assert signal.getsignal(signal.SIGINT) is interrupt, signal.getsignal(signal.SIGINT)
root = logging.getLogger()
assert root.handlers == [], root.handlers
assert root.level == logging.WARNING, root.level
print("ok")
"""


def run_import_check(module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK.format(module=module)],
        env={"PORT": "not-a-port", "MAX_BODY_SIZE": "-1", "LOG_LEVEL": "loud"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_importing_nessen_reads_no_environment_and_installs_nothing() -> None:
    result = run_import_check("nessen")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert result.stderr == ""


def test_importing_the_demo_and_the_cli_reads_no_environment() -> None:
    result = run_import_check("nessen.demo, nessen.cli, nessen.testing")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
