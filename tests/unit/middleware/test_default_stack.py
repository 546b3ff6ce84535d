from __future__ import annotations

import gzip
import logging
import zlib

import pytest

from nessen.config import Config
from nessen.errors import ConfigError
from nessen.http import Headers, Request, Response
from nessen.middleware import STACK_ORDER, default_stack
from nessen.middleware.fields import add_vary, cache_directives, has_token, vary_names
from nessen.server.state import proxy_trust
from tests.unit.middleware.helpers import make_request, run, text_of

BODY = text_of(3000)


async def handler(ctx: Request) -> Response:
    return Response.text(BODY)


def names(stack: list[object]) -> list[str]:
    return [getattr(mw, "__name__", "") for mw in stack]


def test_the_default_order() -> None:
    assert names(default_stack(Config())) == [
        "request_id",
        "access_log",
        "security_headers",
        "rate_limit",
        "compression",
    ]


def test_cors_and_cache_slot_into_their_places() -> None:
    stack = default_stack(Config(), cors={"allow_origins": ["https://a.example"]}, cache=True)
    assert names(stack) == list(STACK_ORDER)


def test_each_built_in_can_be_switched_off() -> None:
    stack = default_stack(
        Config(),
        request_id=False,
        access_log=False,
        security_headers=False,
        rate_limit=False,
        compression=False,
    )
    assert stack == []
    assert default_stack() != []  # Config() defaults when none is given


async def test_the_config_drives_the_rate_limit_and_compression() -> None:
    config = Config(rate_limit_max=2, compression_threshold=100_000)
    stack = default_stack(config, access_log=False)
    request = make_request(headers=[("Accept-Encoding", "gzip")])
    first = await run(stack, request, handler)
    assert first.headers["ratelimit-limit"] == "2"
    assert "content-encoding" not in first.headers  # 3000 bytes < threshold 100 000
    await run(stack, make_request(), handler)
    assert (await run(stack, make_request(), handler)).status == 429


async def test_probe_paths_from_the_config_are_not_limited() -> None:
    config = Config(rate_limit_max=1, probe_paths=frozenset({"/livez"}))
    stack = default_stack(config, access_log=False)
    for path in ("/livez", "/livez", "/health", "/health", "/metrics", "/metrics"):
        assert (await run(stack, make_request(target=path), handler)).status == 200


async def test_mappings_override_the_config() -> None:
    config = Config(rate_limit_max=1)
    stack = default_stack(
        config,
        access_log=False,
        rate_limit={"limit": 5},
        compression={"level": 1, "threshold": 10},
        security_headers={"frame_options": "SAMEORIGIN"},
        request_id={"header": "X-Trace-ID"},
    )
    response = await run(stack, make_request(headers=[("Accept-Encoding", "gzip")]), handler)
    assert response.headers["ratelimit-limit"] == "5"
    assert response.headers["content-encoding"] == "gzip"
    assert response.body == zlib.compress(BODY.encode(), 1, wbits=31)  # level 1
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert "x-trace-id" in response.headers


async def test_trusted_proxies_from_the_config_feed_the_rate_limit_key() -> None:
    config = Config(rate_limit_max=1, trust_proxy=("10.0.0.0/8",))
    stack = default_stack(config, access_log=False)

    proxy = proxy_trust(config)

    def via(forwarded: str) -> Request:  # as the server builds it: with the config's trust
        headers = [("X-Forwarded-For", forwarded)]
        return make_request(headers=headers, client="10.0.0.1", proxy=proxy)

    assert (await run(stack, via("198.51.100.1"), handler)).status == 200
    assert (await run(stack, via("6.6.6.6, 198.51.100.1"), handler)).status == 429
    assert (await run(stack, via("198.51.100.2"), handler)).status == 200


def test_cors_needs_origins() -> None:
    with pytest.raises(ValueError, match="allow_origins"):
        default_stack(Config(), cors=True)


def test_an_option_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ValueError, match="compression=4"):
        default_stack(Config(), compression=4)  # type: ignore[arg-type]


def test_an_unknown_argument_is_refused() -> None:
    with pytest.raises(TypeError, match="colour"):
        default_stack(Config(), compression={"colour": "blue"})


def test_a_redis_rate_limit_store_is_not_silently_per_process() -> None:
    config = Config(rate_limit_store="redis", redis_url="redis://localhost:6379/0")
    with pytest.raises(ConfigError, match="rate_limit_store='redis'"):
        default_stack(config)
    assert len(default_stack(config, rate_limit=False)) == 4


async def test_one_request_through_the_whole_stack(caplog: pytest.LogCaptureFixture) -> None:
    stack = default_stack(Config(), cache=True, cors={"allow_origins": ["https://a.example"]})
    request = make_request(
        headers=[
            ("Accept-Encoding", "br;q=0.5, gzip"),
            ("X-Request-ID", "e2e-1"),
            ("Origin", "https://a.example"),
        ]
    )
    with caplog.at_level(logging.INFO, logger="nessen.access"):
        response = await run(stack, request, handler)
    headers = response.headers
    assert headers["x-request-id"] == "e2e-1"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["access-control-allow-origin"] == "https://a.example"
    assert headers["ratelimit-remaining"] == "99"
    assert headers["x-cache"] == "MISS"
    assert headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding, Origin"
    assert gzip.decompress(response.body) == BODY.encode()
    access = [r for r in caplog.records if r.name == "nessen.access"]
    assert [(r.request_id, r.status, r.bytes) for r in access] == [  # type: ignore[attr-defined]
        ("e2e-1", 200, len(response.body))
    ]


# --- field helpers -------------------------------------------------------------------------


def test_cache_directives() -> None:
    assert cache_directives('max-age=60, No-Cache, private="set-cookie", ,') == {
        "max-age": "60",
        "no-cache": None,
        "private": "set-cookie",
    }
    assert cache_directives(None) == {}


def test_vary_names() -> None:
    headers = Headers([("Vary", "Accept-Encoding, origin"), ("vary", "Origin, Cookie")])
    assert vary_names(headers) == ("accept-encoding", "origin", "cookie")
    assert vary_names(Headers([("Vary", "Origin, *")])) is None
    assert vary_names(Headers()) == ()


def test_add_vary_merges_repeated_fields_into_one() -> None:
    headers = Headers([("Vary", "Origin"), ("Vary", "Accept-Encoding")])
    add_vary(headers, "accept-encoding")
    assert headers.getall("vary") == ["Origin, Accept-Encoding"]
    empty = Headers([("Vary", "")])
    add_vary(empty, "Origin")
    assert empty.getall("vary") == ["Origin"]


def test_has_token() -> None:
    assert has_token("gzip, No-Transform", "no-transform")
    assert not has_token("no-transformer", "no-transform")
