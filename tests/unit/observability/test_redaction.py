"""What the probe endpoints may show in production: reasons with their addresses redacted."""

from __future__ import annotations

import pytest

from nessen.observability.health import REDACTED, redact_addresses

R = REDACTED


@pytest.mark.parametrize(
    ("reason", "public"),
    [
        # redis-py's own messages, as RedisStore reports them (captured from redis-py 5)
        (
            "redis unavailable: ConnectionError: Error 111 connecting to 127.0.0.1:6379. "
            "Connect call failed ('127.0.0.1', 6379).",
            f"redis unavailable: ConnectionError: Error 111 connecting to {R}. "
            f"Connect call failed {R}.",
        ),
        (
            "redis unavailable: ConnectionError: Error -2 connecting to "
            "redis-master.prod.svc.cluster.local:6379. Name or service not known.",
            f"redis unavailable: ConnectionError: Error -2 connecting to {R}. "
            "Name or service not known.",
        ),
        (
            "ConnectionError: Error 111 connecting to ::1:6380. "
            "Connect call failed ('::1', 6380, 0, 0).",
            f"ConnectionError: Error 111 connecting to {R}. Connect call failed {R}.",
        ),
        (
            "ConnectionError: Error 2 connecting to /run/redis/redis.sock. No such file.",
            f"ConnectionError: Error 2 connecting to {R}. No such file.",
        ),
        (
            "certificate is not valid for '10.1.2.3'",
            f"certificate is not valid for '{R}'",
        ),
        # URLs and credentials, whatever wrote them
        ("cannot use redis://:hunter2@cache:6379/0 now", f"cannot use {R} now"),
        ("cannot use rediss://app:hunter2@10.0.0.5/1", f"cannot use {R}"),
        ("login app:hunter2@db failed", f"login {R} failed"),
        ("[fe80::1%eth0]:5432 and [2001:db8::7]:80 down", f"{R} and {R} down"),
        ("upstream 2001:db8::7 down", f"upstream {R} down"),
        ("upstream ::ffff:10.0.0.5 down", f"upstream {R} down"),
        ("api.payments.example unreachable", f"{R} unreachable"),
        # what names no address is kept as it was
        ("redis unavailable: timed out after 50 ms", "redis unavailable: timed out after 50 ms"),
        ("cache store down", "cache store down"),
        ("shutdown requested", "shutdown requested"),
        ("ConnectionError: Error 111", "ConnectionError: Error 111"),
    ],
)
def test_addresses_and_credentials_are_redacted(reason: str, public: str) -> None:
    assert redact_addresses(reason) == public
