"""The shared-store settings: RATE_LIMIT_STORE, RATE_LIMIT_FAIL, CACHE_STORE, REDIS_*."""

from __future__ import annotations

import re

import pytest

from nessen.config import Config
from nessen.errors import ConfigError
from nessen.middleware import default_stack


def problems(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Config.from_env(environ)
    return caught.value.problems


def test_defaults_keep_everything_in_process_and_fail_open() -> None:
    config = Config.from_env({})
    assert config.rate_limit_store == "memory"
    assert config.cache_store == "memory"
    assert config.rate_limit_fail == "open"
    assert config.redis_timeout == 0.05  # REDIS_TIMEOUT=50 (ms)
    assert config.redis_pool_size == 16
    assert config.redis_key_prefix == "nessen:"


def test_a_full_redis_setup_is_read() -> None:
    config = Config.from_env(
        {
            "RATE_LIMIT_STORE": "Redis",
            "CACHE_STORE": "redis",
            "REDIS_URL": "rediss://user:secret@redis.internal:6380/2",
            "REDIS_TIMEOUT": "120",
            "REDIS_POOL_SIZE": "64",
            "REDIS_KEY_PREFIX": "shop:",
            "RATE_LIMIT_FAIL": "CLOSED",
        }
    )
    assert (config.rate_limit_store, config.cache_store) == ("redis", "redis")
    assert config.redis_timeout == 0.12
    assert config.redis_pool_size == 64
    assert config.redis_key_prefix == "shop:"
    assert config.rate_limit_fail == "closed"


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("RATE_LIMIT_FAIL", "maybe", r"^RATE_LIMIT_FAIL='maybe': must be one of open, closed$"),
        ("CACHE_STORE", "disk", r"^CACHE_STORE='disk': must be one of memory, redis$"),
        ("REDIS_TIMEOUT", "0", r"^REDIS_TIMEOUT='0': must be 1\.\.60000 ms"),
        ("REDIS_TIMEOUT", "60001", r"^REDIS_TIMEOUT='60001': must be 1\.\.60000 ms"),
        ("REDIS_TIMEOUT", "fast", r"^REDIS_TIMEOUT='fast': .*1\.\.60000 ms"),
        ("REDIS_POOL_SIZE", "0", r"^REDIS_POOL_SIZE='0': must be an integer 1\.\.10000$"),
        ("REDIS_URL", "http://cache:6379", r"^REDIS_URL='http://cache:6379': .*redis://"),
        ("REDIS_KEY_PREFIX", "my app:", r"^REDIS_KEY_PREFIX='my app:': .*without spaces"),
        ("REDIS_KEY_PREFIX", "x" * 65, r"^REDIS_KEY_PREFIX='x+': .*at most 64"),
    ],
)
def test_invalid_values_name_the_variable_and_what_is_allowed(
    name: str, raw: str, expected: str
) -> None:
    (problem,) = problems({name: raw})
    assert re.search(expected, problem), problem


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"CACHE_STORE": "redis"}, "REDIS_URL=None: required when CACHE_STORE='redis'"),
        (
            {"CACHE_STORE": "redis", "RATE_LIMIT_STORE": "redis"},
            "REDIS_URL=None: required when RATE_LIMIT_STORE='redis' and CACHE_STORE='redis'",
        ),
    ],
)
def test_a_redis_store_needs_redis_url(environ: dict[str, str], expected: str) -> None:
    assert problems(environ) == [expected]


def test_keyword_construction_names_the_fields() -> None:
    with pytest.raises(ConfigError) as caught:
        Config(rate_limit_fail="ajar", redis_timeout=0.0, cache_store="redis")
    assert sorted(p.split("=", 1)[0] for p in caught.value.problems) == [
        "rate_limit_fail",
        "redis_timeout",
        "redis_url",
    ]


def test_default_stack_will_not_silently_cache_per_process() -> None:
    config = Config(cache_store="redis", redis_url="redis://localhost:6379/0")
    with pytest.raises(ConfigError, match="cache_store='redis'"):
        default_stack(config, cache=True)
    assert len(default_stack(config)) == 5  # the cache is off: no store needed
