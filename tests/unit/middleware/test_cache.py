from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import pytest

from nessen.http import Request, Response
from nessen.middleware.cache import cache_middleware, make_etag, none_match, request_origin
from nessen.stores import MemoryStore
from tests.unit.middleware.helpers import FakeClock, make_request, run

Factory = Callable[[Request], Response]


class Origin:
    """A handler that counts calls and builds its response from the request."""

    def __init__(self, factory: Factory | None = None) -> None:
        self.calls = 0
        self.factory = factory or (lambda r: Response.text(f"page {self.calls}"))

    async def __call__(self, request: Request) -> Response:
        self.calls += 1
        return self.factory(request)


def setup(**kwargs: object) -> tuple[object, Origin, FakeClock]:
    clock = FakeClock(1_000_000.0)
    kwargs.setdefault("clock", clock)
    return cache_middleware(**kwargs), Origin(), clock  # type: ignore[arg-type]


async def test_a_miss_is_stored_and_the_next_request_hits() -> None:
    cache, origin, clock = setup(ttl=60.0)
    first = await run(cache, make_request(target="/a"), origin)  # type: ignore[arg-type]
    assert first.headers["x-cache"] == "MISS"
    clock.advance(7.0)
    second = await run(cache, make_request(target="/a"), origin)  # type: ignore[arg-type]
    assert origin.calls == 1
    assert second.status == 200
    assert second.body == b"page 1"
    assert second.content_type == "text/plain; charset=utf-8"
    assert second.headers["x-cache"] == "HIT"
    assert second.headers["age"] == "7"
    assert second.headers["etag"] == first.headers["etag"]


async def test_entries_expire_after_the_ttl() -> None:
    cache, origin, clock = setup(ttl=30.0)
    await run(cache, make_request(target="/a"), origin)  # type: ignore[arg-type]
    clock.advance(29.0)
    assert (await run(cache, make_request(target="/a"), origin)).headers["x-cache"] == "HIT"  # type: ignore[arg-type]
    clock.advance(1.0)
    assert (await run(cache, make_request(target="/a"), origin)).headers["x-cache"] == "MISS"  # type: ignore[arg-type]
    assert origin.calls == 2


async def test_head_is_served_from_get_s_entry_but_never_stores() -> None:
    cache, origin, _ = setup()
    head_first = await run(cache, make_request("HEAD", "/a"), origin)  # type: ignore[arg-type]
    assert head_first.headers["x-cache"] == "MISS"
    get = await run(cache, make_request("GET", "/a"), origin)  # type: ignore[arg-type]
    assert get.headers["x-cache"] == "MISS"  # the HEAD stored nothing
    head = await run(cache, make_request("HEAD", "/a"), origin)  # type: ignore[arg-type]
    assert head.headers["x-cache"] == "HIT"
    assert origin.calls == 2


async def test_the_query_is_part_of_the_key_in_any_order() -> None:
    cache, origin, _ = setup()
    await run(cache, make_request(target="/s?b=2&a=1"), origin)  # type: ignore[arg-type]
    same = await run(cache, make_request(target="/s?a=1&b=2"), origin)  # type: ignore[arg-type]
    other = await run(cache, make_request(target="/s?a=1&b=3"), origin)  # type: ignore[arg-type]
    bare = await run(cache, make_request(target="/s"), origin)  # type: ignore[arg-type]
    assert same.headers["x-cache"] == "HIT"
    assert other.headers["x-cache"] == "MISS"
    assert bare.headers["x-cache"] == "MISS"
    assert origin.calls == 3


async def test_the_host_is_part_of_the_key() -> None:
    cache, _, _ = setup()
    origin = Origin(lambda r: Response.text(f"link: http://{r.headers.get('host')}/next"))

    async def get(host: str) -> Response:
        request = make_request(target="/p", headers=[("Host", host)])
        return await run(cache, request, origin)  # type: ignore[arg-type]

    forged = await get("evil.example")
    real = await get("shop.example")
    assert forged.headers["x-cache"] == real.headers["x-cache"] == "MISS"
    assert real.body == b"link: http://shop.example/next"
    again = await get("shop.example")
    assert (again.headers["x-cache"], again.body) == ("HIT", real.body)
    # the same origin spelt differently: case-insensitive host, default or empty port
    for spelling in ("SHOP.example", "shop.example:80", "shop.example:"):
        assert (await get(spelling)).headers["x-cache"] == "HIT", spelling
    assert (await get("shop.example:8080")).headers["x-cache"] == "MISS"
    assert origin.calls == 3


def test_request_origin_is_http_and_the_normalised_host() -> None:
    def origin(*headers: tuple[str, str]) -> str:
        return request_origin(make_request(headers=list(headers)))

    assert origin(("Host", "Shop.Example:80")) == "http://shop.example"
    assert origin(("Host", "[::1]:8080")) == "http://[::1]:8080"
    assert origin() == "http://"  # HTTP/1.0 without Host


async def test_an_absolute_form_request_bypasses_the_cache() -> None:
    # Its authority, not Host, names the resource (RFC 9112 §3.2.2), while a handler may
    # build the page from Host: neither key would be safe.
    cache, origin, _ = setup()
    request = make_request(target="/p", headers=[("Host", "evil.example")])
    for _ in range(2):
        absolute = Request("GET", b"http://shop.example/p", "/p", b"", [(b"host", b"evil.example")])
        assert (await run(cache, absolute, origin)).headers["x-cache"] == "MISS"  # type: ignore[arg-type]
    assert (await run(cache, request, origin)).headers["x-cache"] == "MISS"  # type: ignore[arg-type]
    assert origin.calls == 3


async def test_the_fields_named_in_vary_are_part_of_the_key() -> None:
    cache, _, _ = setup()
    origin = Origin(
        lambda r: Response.text(
            f"lang={r.headers.get('accept-language')}", headers={"Vary": "Accept-Language"}
        )
    )

    async def get(*headers: tuple[str, str]) -> Response:
        return await run(cache, make_request(headers=list(headers)), origin)  # type: ignore[arg-type]

    assert (await get(("Accept-Language", "de"))).headers["x-cache"] == "MISS"
    assert (await get(("Accept-Language", "fr"))).headers["x-cache"] == "MISS"
    de = await get(("Accept-Language", "de"))
    assert de.headers["x-cache"] == "HIT"
    assert de.body == b"lang=de"
    fr = await get(("Accept-Language", "fr"))
    assert fr.body == b"lang=fr"
    assert (await get()).headers["x-cache"] == "MISS"  # absent differs from any value
    assert (await get(("Accept-Language", ""))).headers["x-cache"] == "MISS"
    assert (await get()).headers["x-cache"] == "HIT"
    assert origin.calls == 4


async def test_vary_star_is_never_stored() -> None:
    cache, _, _ = setup()
    origin = Origin(lambda r: Response.text("x", headers={"Vary": "*"}))
    await run(cache, make_request(), origin)  # type: ignore[arg-type]
    assert (await run(cache, make_request(), origin)).headers["x-cache"] == "MISS"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cache_control", ["no-store", "private", "no-cache", "max-age=0", "max-age=abc", "s-maxage=0"]
)
async def test_responses_that_forbid_storing_are_not_stored(cache_control: str) -> None:
    cache, _, _ = setup()
    origin = Origin(lambda r: Response.text("x", headers={"Cache-Control": cache_control}))
    await run(cache, make_request(), origin)  # type: ignore[arg-type]
    second = await run(cache, make_request(), origin)  # type: ignore[arg-type]
    assert second.headers["x-cache"] == "MISS"
    assert origin.calls == 2


async def test_response_max_age_shortens_the_ttl() -> None:
    cache, _, clock = setup(ttl=60.0)
    origin = Origin(lambda r: Response.text("x", headers={"Cache-Control": "public, max-age=10"}))
    await run(cache, make_request(), origin)  # type: ignore[arg-type]
    clock.advance(9.5)
    assert (await run(cache, make_request(), origin)).headers["x-cache"] == "HIT"  # type: ignore[arg-type]
    clock.advance(0.5)
    assert (await run(cache, make_request(), origin)).headers["x-cache"] == "MISS"  # type: ignore[arg-type]


async def test_s_maxage_wins_over_max_age_and_cannot_lengthen_the_ttl() -> None:
    cache, _, clock = setup(ttl=20.0)
    origin = Origin(
        lambda r: Response.text("x", headers={"Cache-Control": "max-age=5, s-maxage=3600"})
    )
    await run(cache, make_request(), origin)  # type: ignore[arg-type]
    clock.advance(19.0)  # past max-age, within s-maxage and ttl
    assert (await run(cache, make_request(), origin)).headers["x-cache"] == "HIT"  # type: ignore[arg-type]
    clock.advance(1.0)  # ttl reached
    assert (await run(cache, make_request(), origin)).headers["x-cache"] == "MISS"  # type: ignore[arg-type]


async def test_set_cookie_is_never_stored() -> None:
    cache, _, _ = setup()
    origin = Origin(lambda r: Response.text("x", headers={"Set-Cookie": "session=abc"}))
    await run(cache, make_request(), origin)  # type: ignore[arg-type]
    second = await run(cache, make_request(), origin)  # type: ignore[arg-type]
    assert second.headers["x-cache"] == "MISS"
    assert origin.calls == 2


async def test_only_200_is_stored() -> None:
    cache, _, _ = setup()
    origin = Origin(lambda r: Response.json({"error": "Not Found"}, 404))
    await run(cache, make_request(), origin)  # type: ignore[arg-type]
    await run(cache, make_request(), origin)  # type: ignore[arg-type]
    assert origin.calls == 2


async def test_streams_are_not_stored() -> None:
    cache, _, _ = setup()
    origin = Origin(lambda r: Response.streaming([b"a"], content_type="text/plain"))
    await run(cache, make_request(), origin)  # type: ignore[arg-type]
    response = await run(cache, make_request(), origin)  # type: ignore[arg-type]
    assert origin.calls == 2
    assert "etag" not in response.headers


@pytest.mark.parametrize(
    "headers",
    [
        [("Cache-Control", "no-store")],
        [("Authorization", "Bearer x")],
        [("Cookie", "session=abc")],
    ],
)
async def test_requests_that_bypass_the_cache(headers: list[tuple[str, str]]) -> None:
    cache, origin, _ = setup()
    await run(cache, make_request(), origin)  # type: ignore[arg-type]  # stored
    bypass = await run(cache, make_request(headers=headers), origin)  # type: ignore[arg-type]
    assert bypass.headers["x-cache"] == "MISS"
    assert bypass.body == b"page 2"
    after = await run(cache, make_request(), origin)  # type: ignore[arg-type]
    assert after.body == b"page 1"  # the bypass stored nothing


@pytest.mark.parametrize(
    "headers",
    [[("Cache-Control", "no-cache")], [("Cache-Control", "max-age=0")], [("Pragma", "no-cache")]],
)
async def test_requests_that_want_a_fresh_answer_refresh_the_entry(
    headers: list[tuple[str, str]],
) -> None:
    cache, origin, _ = setup()
    await run(cache, make_request(), origin)  # type: ignore[arg-type]
    fresh = await run(cache, make_request(headers=headers), origin)  # type: ignore[arg-type]
    assert fresh.headers["x-cache"] == "MISS"
    assert fresh.body == b"page 2"
    after = await run(cache, make_request(), origin)  # type: ignore[arg-type]
    assert after.headers["x-cache"] == "HIT"
    assert after.body == b"page 2"


async def test_an_unsafe_method_invalidates_its_target() -> None:
    cache, origin, _ = setup()
    await run(cache, make_request(target="/items?a=1"), origin)  # type: ignore[arg-type]
    await run(cache, make_request("POST", "/items?a=1"), origin)  # type: ignore[arg-type]
    again = await run(cache, make_request(target="/items?a=1"), origin)  # type: ignore[arg-type]
    assert again.headers["x-cache"] == "MISS"
    assert origin.calls == 3


async def test_a_failed_unsafe_request_does_not_invalidate() -> None:
    cache, _, _ = setup()
    origin = Origin(lambda r: Response.text("x") if r.method == "GET" else Response.text("no", 500))
    await run(cache, make_request(), origin)  # type: ignore[arg-type]
    await run(cache, make_request("DELETE", "/"), origin)  # type: ignore[arg-type]
    assert (await run(cache, make_request(), origin)).headers["x-cache"] == "HIT"  # type: ignore[arg-type]


async def test_requests_with_cookies_can_be_cached_when_asked() -> None:
    cache, origin, _ = setup(bypass_cookies=False)
    cookie = [("Cookie", "theme=dark")]
    await run(cache, make_request(headers=cookie), origin)  # type: ignore[arg-type]
    hit = await run(cache, make_request(headers=cookie), origin)  # type: ignore[arg-type]
    assert hit.headers["x-cache"] == "HIT"


async def test_probe_paths_are_never_cached() -> None:
    cache, origin, _ = setup()
    for _ in range(2):
        response = await run(cache, make_request(target="/ready"), origin)  # type: ignore[arg-type]
        assert "x-cache" not in response.headers
    assert origin.calls == 2


async def test_a_skip_predicate_bypasses_the_cache() -> None:
    cache, origin, _ = setup(skip=lambda r: r.path.startswith("/me"))
    await run(cache, make_request(target="/me"), origin)  # type: ignore[arg-type]
    response = await run(cache, make_request(target="/me"), origin)  # type: ignore[arg-type]
    assert origin.calls == 2
    assert "x-cache" not in response.headers


async def test_the_entry_bound_holds() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=3, clock=clock)
    cache = cache_middleware(store=store, clock=clock)
    origin = Origin()
    for index in range(10):
        await run(cache, make_request(target=f"/p{index}"), origin)
    assert len(store) == 3
    assert (await run(cache, make_request(target="/p9"), origin)).headers["x-cache"] == "HIT"
    assert (await run(cache, make_request(target="/p0"), origin)).headers["x-cache"] == "MISS"


async def test_an_entry_over_max_entry_bytes_passes_through_unstored() -> None:
    cache, _, _ = setup(max_entry_bytes=1000)
    origin = Origin(lambda r: Response(200, b"x" * 2000, content_type="text/plain"))
    await run(cache, make_request(), origin)  # type: ignore[arg-type]
    second = await run(cache, make_request(), origin)  # type: ignore[arg-type]
    assert second.headers["x-cache"] == "MISS"
    assert second.body == b"x" * 2000


async def test_the_byte_bound_holds() -> None:
    clock = FakeClock()
    cache = cache_middleware(max_bytes=10_000, max_entry_bytes=5000, clock=clock)
    origin = Origin(lambda r: Response(200, b"x" * 3000, content_type="text/plain"))
    for index in range(10):
        await run(cache, make_request(target=f"/p{index}"), origin)
    hits = [
        (await run(cache, make_request(target=f"/p{index}"), origin)).headers["x-cache"]
        for index in (9, 8, 7, 6)
    ]
    assert hits == ["HIT", "HIT", "HIT", "MISS"]  # three ~3.2 KB entries fit in 10 000 bytes


class BrokenStore(MemoryStore):
    async def get(self, key: str) -> bytes | None:
        raise ConnectionError("down")

    async def set(self, key: str, value: bytes, ttl: float) -> bool:
        raise ConnectionError("down")


async def test_a_failing_store_serves_uncached(caplog: pytest.LogCaptureFixture) -> None:
    cache = cache_middleware(store=BrokenStore())
    origin = Origin()
    with caplog.at_level(logging.WARNING, logger="nessen.middleware.cache"):
        for _ in range(3):
            assert (await run(cache, make_request(), origin)).status == 200
    assert origin.calls == 3
    assert [r.message for r in caplog.records] == ["cache store failed to read; serving uncached"]


# --- ETag and If-None-Match ----------------------------------------------------------------


def test_make_etag_is_a_quoted_hash_of_the_content() -> None:
    assert make_etag(b"hello") == '"' + hashlib.blake2b(b"hello", digest_size=16).hexdigest() + '"'


@pytest.mark.parametrize(
    ("if_none_match", "etag", "matches"),
    [
        ('"a"', '"a"', True),
        ('"a"', '"b"', False),
        ('W/"a"', '"a"', True),  # weak comparison (RFC 9110 §8.8.3.2)
        ('"a"', 'W/"a"', True),
        ('"x", "y", W/"a"', '"a"', True),
        ('"x","y"', '"a"', False),
        ('"a,b"', '"a,b"', True),  # a comma inside an entity tag
        ("*", '"a"', True),
        ("*", None, True),
        ('"a"', None, False),
        ("a", '"a"', False),  # unquoted: not an entity tag
    ],
)
def test_if_none_match_evaluation(if_none_match: str, etag: str | None, matches: bool) -> None:
    assert none_match(if_none_match, etag) is matches


async def test_a_matching_if_none_match_gets_304_without_content() -> None:
    cache, _, _ = setup()
    origin = Origin(
        lambda r: Response.text(
            "body", headers={"Cache-Control": "max-age=30", "Vary": "Accept-Language"}
        )
    )
    first = await run(cache, make_request(), origin)  # type: ignore[arg-type]
    tag = first.headers["etag"]
    for condition in (tag, f'"other", W/{tag}', "*"):
        response = await run(cache, make_request(headers=[("If-None-Match", condition)]), origin)  # type: ignore[arg-type]
        assert response.status == 304
        assert response.body == b""
        assert response.content_type is None
        assert response.headers["etag"] == tag
        assert response.headers["cache-control"] == "max-age=30"
        assert response.headers["vary"] == "Accept-Language"
        assert response.headers["x-cache"] == "HIT"
    stale = await run(cache, make_request(headers=[("If-None-Match", '"old"')]), origin)  # type: ignore[arg-type]
    assert stale.status == 200
    assert stale.body == b"body"


async def test_uncacheable_responses_still_get_etags_and_304() -> None:
    cache, _, _ = setup()
    origin = Origin(lambda r: Response.text("fresh", headers={"Cache-Control": "no-store"}))
    first = await run(cache, make_request(), origin)  # type: ignore[arg-type]
    tag = first.headers["etag"]
    assert tag == make_etag(b"fresh")
    second = await run(cache, make_request(headers=[("If-None-Match", tag)]), origin)  # type: ignore[arg-type]
    assert second.status == 304
    assert origin.calls == 2  # it was not stored: the handler ran again


async def test_the_handler_s_etag_is_kept() -> None:
    cache, _, _ = setup()
    origin = Origin(lambda r: Response.text("x", headers={"ETag": 'W/"v7"'}))
    first = await run(cache, make_request(), origin)  # type: ignore[arg-type]
    assert first.headers.getall("etag") == ['W/"v7"']
    second = await run(cache, make_request(headers=[("If-None-Match", '"v7"')]), origin)  # type: ignore[arg-type]
    assert second.status == 304


async def test_etags_can_be_turned_off() -> None:
    cache, origin, _ = setup(etag=False)
    response = await run(cache, make_request(), origin)  # type: ignore[arg-type]
    assert "etag" not in response.headers
    conditional = await run(cache, make_request(headers=[("If-None-Match", "*")]), origin)  # type: ignore[arg-type]
    assert conditional.status == 200


async def test_if_none_match_is_ignored_for_other_statuses() -> None:
    cache, _, _ = setup()
    origin = Origin(lambda r: Response.json({"error": "x"}, 404))
    response = await run(cache, make_request(headers=[("If-None-Match", "*")]), origin)  # type: ignore[arg-type]
    assert response.status == 404


def test_a_non_positive_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="ttl=0"):
        cache_middleware(ttl=0)
