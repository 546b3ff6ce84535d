from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nessen.config import ENV_ALIASES, ENV_VARS, Config
from nessen.errors import ConfigError

ALL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def test_defaults_match_the_architecture_table() -> None:
    config = Config()
    assert config.host == "0.0.0.0"
    assert config.port == 3000
    assert config.workers == 1
    assert config.env == "production"
    assert config.log_level == "info"
    assert config.max_target_bytes == 8192
    assert config.max_header_bytes == 16384
    assert config.max_header_count == 100
    assert config.max_body_bytes == 1048576
    assert config.headers_timeout == 10.0
    assert config.body_timeout == 30.0
    assert config.body_min_rate == 240
    assert config.request_timeout == 30.0
    assert config.idle_timeout == 65.0
    assert config.send_timeout == 30.0
    assert config.max_connections == 10000
    assert config.max_concurrent_requests == 1000
    assert config.max_requests_per_connection == 0
    assert config.max_response_bytes == 10485760
    assert config.allowed_methods == ALL_METHODS
    assert config.allowed_hosts == frozenset()
    assert config.trust_proxy == ("127.0.0.0/8", "::1")  # loopback, as uvicorn
    assert [str(n) for n in config.trusted_networks] == ["127.0.0.0/8", "::1/128"]
    assert config.proxy_headers == "x-forwarded"
    assert config.shutdown_timeout == 30.0
    assert config.shutdown_delay == 0.0
    assert config.ready_when_degraded is True
    assert config.rate_limit_max == 100
    assert config.rate_limit_window == 60.0
    assert config.rate_limit_max_keys == 10000
    assert config.rate_limit_store == "memory"
    assert config.redis_url is None
    assert config.compression_level == 6
    assert config.compression_threshold == 1024


def test_from_an_empty_environment_gives_the_defaults() -> None:
    assert Config.from_env({}) == Config()


def test_log_format_defaults_to_console_in_development_and_json_in_production() -> None:
    assert Config().effective_log_format == "json"
    assert Config(env="development").effective_log_format == "console"
    assert Config(env="production").effective_log_format == "json"
    assert Config(env="production", log_format="console").effective_log_format == "console"


# One (raw value, expected field value) per variable, in the env var's units: times in
# milliseconds become seconds, sizes stay bytes. Every name in ENV_VARS must appear here.
ENV_CASES: dict[str, tuple[str, Any]] = {
    "HOST": ("127.0.0.1", "127.0.0.1"),
    "PORT": ("8080", 8080),
    "WORKERS": ("4", 4),
    "WORKER_TIMEOUT": ("5000", 5.0),
    "MAX_REQUESTS_PER_WORKER": ("10000", 10000),
    "MAX_REQUESTS_JITTER": ("500", 500),
    "NESSEN_ENV": ("Production", "production"),
    "LOG_LEVEL": ("DEBUG", "debug"),
    "LOG_FORMAT": ("JSON", "json"),
    "LOG_BUFFER_SIZE": ("65536", 65536),
    "MAX_URL_LENGTH": ("4096", 4096),
    "MAX_HEADER_SIZE": ("32768", 32768),
    "MAX_HEADER_COUNT": ("50", 50),
    "MAX_BODY_SIZE": ("2048", 2048),
    "MAX_BODY_BUFFER_SIZE": ("1048576", 1048576),
    "HEADERS_TIMEOUT": ("1500", 1.5),
    "BODY_TIMEOUT": ("20000", 20.0),
    "BODY_MIN_RATE": ("1024", 1024),
    "REQUEST_TIMEOUT": ("250", 0.25),
    "IDLE_TIMEOUT": ("75000", 75.0),
    "SEND_TIMEOUT": ("5000", 5.0),
    "SEND_MIN_RATE": ("4096", 4096),
    "MAX_CONNECTIONS": ("500", 500),
    "MAX_CONCURRENT_REQUESTS": ("64", 64),
    "MAX_REQUESTS_PER_CONNECTION": ("1000", 1000),
    "MAX_RESPONSE_SIZE": ("1024", 1024),
    "ALLOWED_METHODS": ("GET, post,PURGE", frozenset({"GET", "POST", "PURGE"})),
    "ALLOWED_HOSTS": (
        "example.com, api.example.com:8443,*.example.org",
        frozenset({"example.com", "api.example.com:8443", "*.example.org"}),
    ),
    "TRUST_PROXY": ("10.0.0.0/8,192.168.1.1", ("10.0.0.0/8", "192.168.1.1")),
    "PROXY_HEADERS": ("Forwarded", "forwarded"),
    "ADMIN_HOST": ("127.0.0.1", "127.0.0.1"),
    "ADMIN_PORT": ("9090", 9090),
    "ADMIN_ALLOW": ("10.0.0.0/8, 127.0.0.1,::1", ("10.0.0.0/8", "127.0.0.1", "::1")),
    "SHUTDOWN_TIMEOUT": ("45000", 45.0),
    "SHUTDOWN_DELAY": ("5000", 5.0),
    "READY_WHEN_DEGRADED": ("false", False),
    "RATE_LIMIT_MAX": ("20", 20),
    "RATE_LIMIT_WINDOW": ("1000", 1.0),
    "RATE_LIMIT_MAX_KEYS": ("500", 500),
    "RATE_LIMIT_STORE": ("redis", "redis"),
    "REDIS_URL": ("redis://cache:6379/0", "redis://cache:6379/0"),
    "RATE_LIMIT_FAIL": ("closed", "closed"),
    "CACHE_STORE": ("redis", "redis"),
    "REDIS_TIMEOUT": ("25", 0.025),
    "REDIS_POOL_SIZE": ("4", 4),
    "REDIS_KEY_PREFIX": ("shop:", "shop:"),
    "COMPRESSION_LEVEL": ("9", 9),
    "COMPRESSION_THRESHOLD": ("0", 0),
    "BACKLOG": ("512", 512),
    "SSL_CERTFILE": ("/etc/tls/tls.crt", "/etc/tls/tls.crt"),
    "SSL_KEYFILE": ("/etc/tls/tls.key", "/etc/tls/tls.key"),
    "SSL_KEYFILE_PASSWORD": (" spaces kept ", " spaces kept "),
    "SSL_CA_CERTS": ("/etc/tls/ca.crt", "/etc/tls/ca.crt"),
    "SSL_CERT_REQS": ("2", "required"),  # uvicorn's number
    "LOG_CONFIG": ("/etc/nessen/logging.yaml", "/etc/nessen/logging.yaml"),
    "UNIX_SOCKET": ("/run/nessen/app.sock", "/run/nessen/app.sock"),
    "UNIX_SOCKET_MODE": ("660", 0o660),  # octal, as chmod takes it
    "LISTEN_FD": ("3", 3),
    "WS_MAX_MESSAGE_SIZE": ("65536", 65536),
    "WS_MAX_FRAME_SIZE": ("16384", 16384),
    "WS_SEND_BUFFER_SIZE": ("131072", 131072),
    "WS_RECEIVE_QUEUE": ("32", 32),
    "WS_PING_INTERVAL": ("0", 0.0),  # off
    "WS_PING_TIMEOUT": ("5000", 5.0),
    "WS_IDLE_TIMEOUT": ("300000", 300.0),
    "WS_CLOSE_TIMEOUT": ("2500", 2.5),
    "WS_ALLOWED_ORIGINS": (
        "https://App.example.com/, http://localhost:5173",
        frozenset({"https://app.example.com", "http://localhost:5173"}),
    ),
    "WS_COMPRESSION": ("off", False),
}
EXCLUSIVE = {"LISTEN_FD"}
"""Left out of the all-together case: it excludes UNIX_SOCKET."""


def test_every_env_var_has_a_case() -> None:
    assert set(ENV_CASES) == set(ENV_VARS)


@pytest.mark.parametrize("name", sorted(ENV_CASES))
def test_from_env_reads_each_variable(name: str) -> None:
    raw, expected = ENV_CASES[name]
    environ = {name: raw}
    if name in ("RATE_LIMIT_STORE", "CACHE_STORE"):  # the redis store needs its URL
        environ["REDIS_URL"] = "redis://localhost:6379/0"
    if name.startswith("SSL_") and name != "SSL_CERTFILE":  # TLS settings need TLS on
        environ.setdefault("SSL_CERTFILE", "/etc/tls/tls.crt")
        environ.setdefault("SSL_CA_CERTS", "/etc/tls/ca.crt")
    config = Config.from_env(environ)
    assert getattr(config, ENV_VARS[name]) == expected


def test_from_env_reads_every_variable_together() -> None:
    cases = {name: case for name, case in ENV_CASES.items() if name not in EXCLUSIVE}
    config = Config.from_env({name: raw for name, (raw, _) in cases.items()})
    for name, (_, expected) in cases.items():
        assert getattr(config, ENV_VARS[name]) == expected, name


def test_a_unix_socket_and_an_inherited_one_exclude_each_other() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"UNIX_SOCKET": "/run/a.sock", "LISTEN_FD": "3"})
    assert "at most one of UNIX_SOCKET and LISTEN_FD" in caught.value.problems[0]


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"SSL_KEYFILE": "k.pem"}, "SSL_CERTFILE=None: required with SSL_KEYFILE='k.pem'"),
        ({"SSL_KEYFILE_PASSWORD": "pw"}, "SSL_CERTFILE=None: required with SSL_KEYFILE_PASSWORD"),
        (
            {"SSL_CERTFILE": "c.pem", "SSL_CERT_REQS": "optional"},
            "SSL_CA_CERTS=None: required with SSL_CERT_REQS='optional'",
        ),
        ({"SSL_CERTFILE": "c.pem", "SSL_CERT_REQS": "3"}, "must be one of none, optional"),
    ],
)
def test_tls_settings_without_what_they_need_are_refused(
    environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env(environ)
    assert any(problem in line for line in caught.value.problems), caught.value.problems


def test_the_key_password_is_not_in_the_configs_repr() -> None:
    config = Config(ssl_certfile="c.pem", ssl_keyfile_password="hunter2")
    assert "hunter2" not in repr(config)


def test_milliseconds_are_converted_to_float_seconds() -> None:
    config = Config.from_env({"REQUEST_TIMEOUT": "1", "IDLE_TIMEOUT": "2.5"})
    assert config.request_timeout == 0.001
    assert config.idle_timeout == 0.0025
    assert isinstance(config.request_timeout, float)


def test_node_env_is_accepted_as_an_alias_of_nessen_env() -> None:
    assert ENV_ALIASES == {"NODE_ENV": "env"}
    config = Config.from_env({"NODE_ENV": "production"})
    assert config.env == "production"
    assert config.production is True
    assert config.effective_log_format == "json"


def test_nessen_env_wins_over_node_env() -> None:
    config = Config.from_env({"NESSEN_ENV": "staging", "NODE_ENV": "production"})
    assert config.env == "staging"


def test_log_level_warn_means_warning() -> None:
    assert Config.from_env({"LOG_LEVEL": "warn"}).log_level == "warning"
    assert Config.from_env({"LOG_LEVEL": "WARN"}).log_level == "warning"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("false", False),
        ("0", False),
        ("10.0.0.0/8", ("10.0.0.0/8",)),
        ("10.0.0.0/8, ::1, 172.16.0.0/12", ("10.0.0.0/8", "::1", "172.16.0.0/12")),
    ],
)
def test_trust_proxy_is_a_boolean_or_a_cidr_list(raw: str, expected: object) -> None:
    assert Config.from_env({"TRUST_PROXY": raw}).trust_proxy == expected


def test_trusted_networks() -> None:
    assert Config(trust_proxy=False).trusted_networks == ()
    everyone = [str(n) for n in Config(trust_proxy=True).trusted_networks]
    assert everyone == ["0.0.0.0/0", "::/0"]
    listed = Config(trust_proxy=("10.1.2.3/8",)).trusted_networks
    assert [str(n) for n in listed] == ["10.0.0.0/8"]


def test_allowed_methods_are_upper_cased_and_split_on_commas() -> None:
    config = Config.from_env({"ALLOWED_METHODS": "get,head"})
    assert config.allowed_methods == frozenset({"GET", "HEAD"})


@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_variable_keeps_the_default(blank: str) -> None:
    environ = {name: blank for name in ENV_VARS}
    assert Config.from_env(environ) == Config()


def test_overrides_win_over_the_environment() -> None:
    config = Config.from_env({"PORT": "8080"}, port=9090)
    assert config.port == 9090


# --- invalid values: the message names the variable, the value and the allowed range ---


def _problems(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Config.from_env(environ)
    return caught.value.problems


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("PORT", "80a", r"^PORT='80a': .*\b0\.\.65535\b"),
        ("PORT", "70000", r"^PORT='70000': .*\b0\.\.65535\b"),
        ("PORT", "-1", r"^PORT='-1': .*\b0\.\.65535\b"),
        ("MAX_BODY_SIZE", "-1", r"^MAX_BODY_SIZE='-1': .*\b0\.\.\d+ bytes"),
        ("MAX_BODY_SIZE", "abc", r"^MAX_BODY_SIZE='abc': .*\b0\.\.\d+ bytes"),
        ("HEADERS_TIMEOUT", "abc", r"^HEADERS_TIMEOUT='abc': .*\b1\.\.\d+ ms"),
        ("HEADERS_TIMEOUT", "-5", r"^HEADERS_TIMEOUT='-5': .*\b1\.\.\d+ ms"),
        ("HEADERS_TIMEOUT", "0", r"^HEADERS_TIMEOUT='0': .*\b1\.\.\d+ ms"),
        ("WORKERS", "0", r"^WORKERS='0': .*\b1\.\.512\b"),
        ("BODY_MIN_RATE", "fast", r"^BODY_MIN_RATE='fast': .*\b0\.\.\d+ bytes per second"),
        ("BODY_MIN_RATE", "2000000000", r"^BODY_MIN_RATE='2000000000': .*0\.\.1073741824 "),
        ("SEND_MIN_RATE", "slow", r"^SEND_MIN_RATE='slow': .*\b0\.\.\d+ bytes per second"),
        ("LOG_LEVEL", "loud", r"^LOG_LEVEL='loud': .*debug, info, warning, error, critical"),
        ("LOG_FORMAT", "xml", r"^LOG_FORMAT='xml': .*json, console"),
        ("LOG_BUFFER_SIZE", "1024", r"^LOG_BUFFER_SIZE='1024': .*\b16384\.\.\d+ bytes"),
        ("LOG_BUFFER_SIZE", "1m", r"^LOG_BUFFER_SIZE='1m': .*\b16384\.\.\d+ bytes"),
        ("TRUST_PROXY", "not-a-cidr", r"^TRUST_PROXY='not-a-cidr': .*CIDR"),
        ("PROXY_HEADERS", "x-real-ip", r"^PROXY_HEADERS='x-real-ip': .*x-forwarded, forwarded"),
        ("ADMIN_PORT", "70000", r"^ADMIN_PORT='70000': .*\b0\.\.65535\b"),
        ("ADMIN_PORT", "nine", r"^ADMIN_PORT='nine': .*\b0\.\.65535\b"),
        ("ADMIN_HOST", "not a host", r"^ADMIN_HOST='not a host': .*host name"),
        ("ADMIN_ALLOW", "10.0.0.0/8,10.0.0.0/33", r"^ADMIN_ALLOW='.*': '10.0.0.0/33' .*CIDR"),
        ("ADMIN_ALLOW", "localhost", r"^ADMIN_ALLOW='localhost': 'localhost' .*CIDR"),
        ("READY_WHEN_DEGRADED", "maybe", r"^READY_WHEN_DEGRADED='maybe': .*true or false"),
        ("COMPRESSION_LEVEL", "12", r"^COMPRESSION_LEVEL='12': .*\b1\.\.11\b"),
        ("RATE_LIMIT_STORE", "disk", r"^RATE_LIMIT_STORE='disk': .*memory, redis"),
        ("ALLOWED_METHODS", "GET,BAD METHOD", r"^ALLOWED_METHODS='GET,BAD METHOD': .*token"),
    ],
)
def test_invalid_value_names_variable_value_and_range(name: str, raw: str, expected: str) -> None:
    problems = _problems({name: raw})
    assert len(problems) == 1
    assert re.search(expected, problems[0]), problems[0]


def test_out_of_range_timeouts_print_plain_numbers() -> None:
    (problem,) = _problems({"IDLE_TIMEOUT": "0"})
    assert "e+" not in problem  # "1..86400000 ms", not "1..8.64e+07 ms"
    assert "86400000 ms" in problem


def test_the_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"PORT": "80a", "MAX_BODY_SIZE": "-1", "LOG_LEVEL": "loud"})
    error = caught.value
    assert sorted(p.split("=", 1)[0] for p in error.problems) == [
        "LOG_LEVEL",
        "MAX_BODY_SIZE",
        "PORT",
    ]
    message = str(error)
    assert message.startswith("invalid configuration: ")
    for fragment in ("PORT='80a'", "MAX_BODY_SIZE='-1'", "LOG_LEVEL='loud'"):
        assert fragment in message


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="PORT"):
        Config.from_env({"PORT": "x"})


def test_cross_field_rule_is_reported_with_env_names() -> None:
    (problem,) = _problems({"MAX_URL_LENGTH": "16384", "MAX_HEADER_SIZE": "16384"})
    assert problem.startswith("MAX_URL_LENGTH=16384: must be below MAX_HEADER_SIZE=16384")
    assert "max_target_bytes" not in problem
    assert "max_header_bytes" not in problem


def test_cross_field_rule_with_the_default_header_size() -> None:
    (problem,) = _problems({"MAX_URL_LENGTH": "20000"})
    assert problem.startswith("MAX_URL_LENGTH=20000: must be below MAX_HEADER_SIZE=16384")


def test_the_admin_listener_is_off_by_default_and_needs_a_port_of_its_own() -> None:
    assert Config().admin_address is None
    assert Config().admin_networks == ()
    assert Config(admin_port=9090).admin_address == ("0.0.0.0", 9090)  # HOST's address
    assert Config(host="::", admin_port=9090, admin_host="127.0.0.1").admin_address == (
        "127.0.0.1",
        9090,
    )
    assert Config(port=0, admin_port=0).admin_port == 0  # two free ports
    (problem,) = _problems({"PORT": "8080", "ADMIN_PORT": "8080"})
    assert problem.startswith("ADMIN_PORT=8080: must differ from PORT=8080")
    with pytest.raises(ConfigError, match="admin_port=3000: must differ from port=3000"):
        Config(admin_port=3000)


def test_admin_allow_is_parsed_into_networks() -> None:
    config = Config.from_env({"ADMIN_ALLOW": "10.1.2.3/8, 192.0.2.7"})
    assert [str(n) for n in config.admin_networks] == ["10.0.0.0/8", "192.0.2.7/32"]


def test_redis_store_needs_redis_url() -> None:
    (problem,) = _problems({"RATE_LIMIT_STORE": "redis"})
    assert problem.startswith("REDIS_URL=None: required when RATE_LIMIT_STORE='redis'")


def test_keyword_construction_reports_field_names() -> None:
    with pytest.raises(ConfigError) as caught:
        Config(port=-1, max_body_bytes=-5, headers_timeout=0)
    problems = caught.value.problems
    assert len(problems) == 3
    assert problems[0].startswith("port=-1: must be an integer 0..65535")
    assert problems[1].startswith("max_body_bytes=-5: ")
    assert problems[2].startswith("headers_timeout=0: ")


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", True), ("port", "3000"), ("port", 3000.0), ("headers_timeout", True)],
)
def test_wrong_types_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"^invalid configuration: {field}="):
        Config(**{field: value})


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 8080  # type: ignore[misc]
    assert config.port == 3000


def test_replace_returns_a_changed_copy() -> None:
    config = Config()
    changed = config.replace(port=8080, max_body_bytes=10)
    assert changed.port == 8080
    assert changed.max_body_bytes == 10
    assert config.port == 3000


def test_replace_validates_again() -> None:
    with pytest.raises(ConfigError, match=r"port=70000: must be an integer 0\.\.65535"):
        Config().replace(port=70000)
    with pytest.raises(ConfigError, match="max_target_bytes=20000: must be below"):
        Config().replace(max_target_bytes=20000)


def test_shutdown_delay_may_be_zero_but_timeouts_may_not() -> None:
    assert Config.from_env({"SHUTDOWN_DELAY": "0"}).shutdown_delay == 0.0
    assert _problems({"SHUTDOWN_TIMEOUT": "0"})[0].startswith("SHUTDOWN_TIMEOUT='0': ")


@given(port=st.integers(min_value=0, max_value=65535))
def test_any_port_in_range_is_accepted(port: int) -> None:
    assert Config(port=port).port == port
    assert Config.from_env({"PORT": str(port)}).port == port


@given(
    port=st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=65536),
    )
)
def test_any_port_out_of_range_is_rejected(port: int) -> None:
    with pytest.raises(ConfigError, match=rf"^invalid configuration: port={port}: "):
        Config(port=port)
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"PORT": str(port)})
    (problem,) = caught.value.problems
    assert problem.startswith(f"PORT='{port}': ")
    assert "0..65535" in problem


@pytest.mark.parametrize(
    ("env", "production"),
    [
        ("development", False),
        ("test", False),
        ("production", True),
        ("prod", True),
        ("staging", True),
    ],
)
def test_anything_but_development_or_test_behaves_as_production(env: str, production: bool) -> None:
    assert Config(env=env).production is production


def test_body_buffer_is_automatic_or_at_least_one_body() -> None:
    assert Config().body_buffer_bytes == 64 * 1024 * 1024
    assert Config(max_body_bytes=100 * 1024 * 1024).body_buffer_bytes == 400 * 1024 * 1024
    assert Config(max_body_buffer_bytes=5_000_000).body_buffer_bytes == 5_000_000
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"MAX_BODY_SIZE": "2000000", "MAX_BODY_BUFFER_SIZE": "1000000"})
    assert caught.value.problems == [
        "MAX_BODY_BUFFER_SIZE=1000000: must be 0 (automatic) or at least MAX_BODY_SIZE=2000000"
    ]
