"""Every variable deploy/ sets is a setting Nessen reads, with a value it accepts.

``Config.from_env`` ignores names it does not know, so a misspelt ``SHUTDOWN_TIMEOUT_MS`` in
a manifest would silently leave the default in force. These tests catch that.
"""

from __future__ import annotations

import pytest

from nessen.config import ENV_ALIASES, ENV_VARS, Config
from nessen.errors import ConfigError
from tests.deploy.manifests import app_container, compose, container_env, final_stage

NOT_NESSEN = {
    "PATH": "the image's venv first on the search path (Dockerfile)",
    "PYTHONDONTWRITEBYTECODE": "CPython: no .pyc writes on a read-only root (Dockerfile)",
    "PYTHONUNBUFFERED": "CPython: log lines leave at once (Dockerfile)",
}
"""Variables deploy/ may set that are not Nessen settings, each with the reader that needs it."""


def sources() -> dict[str, dict[str, str]]:
    return {
        "Dockerfile (final stage)": final_stage().env(),
        "docker-compose.yml (nessen)": {
            name: str(value)
            for name, value in compose()["services"]["nessen"]["environment"].items()
        },
        "kubernetes/deployment.yaml": container_env(app_container()),
    }


@pytest.mark.parametrize("source", sources().keys())
def test_every_variable_is_a_nessen_setting(source: str) -> None:
    known = ENV_VARS.keys() | ENV_ALIASES.keys()
    unknown = sorted(sources()[source].keys() - known - NOT_NESSEN.keys())
    assert unknown == [], f"{source} sets variables Config.from_env() does not read"


@pytest.mark.parametrize("source", sources().keys())
def test_config_from_env_accepts_every_value(source: str) -> None:
    config = Config.from_env(sources()[source])  # raises ConfigError naming any bad value
    assert config.production  # every deploy/ file runs production: no error details sent


def test_an_unknown_or_invalid_variable_would_be_caught() -> None:
    known = ENV_VARS.keys() | ENV_ALIASES.keys()
    assert "SHUTDOWN_TIMEOUT_MS" not in known
    with pytest.raises(ConfigError, match="SHUTDOWN_TIMEOUT"):
        Config.from_env({"SHUTDOWN_TIMEOUT": "25s"})


def test_the_exceptions_are_not_nessen_settings() -> None:
    assert not NOT_NESSEN.keys() & (ENV_VARS.keys() | ENV_ALIASES.keys())
    used = set().union(*(env.keys() for env in sources().values()))
    assert NOT_NESSEN.keys() <= used, "an exception nobody needs any more: drop it"
