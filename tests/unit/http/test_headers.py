from __future__ import annotations

import pytest

from nessen.http import Headers


def test_get_is_case_insensitive() -> None:
    headers = Headers([("Content-Type", "text/plain")])
    assert headers["content-type"] == "text/plain"
    assert headers["CONTENT-TYPE"] == "text/plain"
    assert headers.get("Content-type") == "text/plain"


def test_missing_field() -> None:
    headers = Headers()
    assert headers.get("x") is None
    assert headers.get("x", "fallback") == "fallback"
    with pytest.raises(KeyError):
        headers["x"]


def test_repeated_fields_are_joined_with_comma_space() -> None:
    headers = Headers([("Accept", "text/html"), ("X-Other", "1"), ("accept", "application/json")])
    assert headers["accept"] == "text/html, application/json"
    assert headers.get("ACCEPT") == "text/html, application/json"


def test_getall_keeps_order() -> None:
    headers = Headers(
        [("Set-Cookie", "a=1"), ("X", "y"), ("set-cookie", "b=2"), ("SET-COOKIE", "c")]
    )
    assert headers.getall("set-cookie") == ["a=1", "b=2", "c"]
    assert headers.getall("missing") == []


def test_setitem_replaces_every_value() -> None:
    headers = Headers([("Vary", "Accept"), ("Other", "x"), ("vary", "Origin")])
    headers["VARY"] = "Accept-Encoding"
    assert headers.getall("vary") == ["Accept-Encoding"]
    assert headers.multi_items() == [("Other", "x"), ("VARY", "Accept-Encoding")]


def test_add_keeps_earlier_values() -> None:
    headers = Headers({"Set-Cookie": "a=1"})
    headers.add("Set-Cookie", "b=2")
    assert headers.getall("set-cookie") == ["a=1", "b=2"]
    assert len(headers) == 1


def test_delete_removes_every_value() -> None:
    headers = Headers([("A", "1"), ("B", "2"), ("a", "3")])
    del headers["a"]
    assert "a" not in headers
    assert headers.multi_items() == [("B", "2")]
    with pytest.raises(KeyError):
        del headers["a"]


def test_contains() -> None:
    headers = Headers({"X-Request-ID": "abc"})
    assert "x-request-id" in headers
    assert "X-REQUEST-ID" in headers
    assert "x-request" not in headers
    assert 42 not in headers


def test_len_counts_distinct_names() -> None:
    headers = Headers([("A", "1"), ("a", "2"), ("B", "3")])
    assert len(headers) == 2
    assert list(headers) == ["a", "b"]


def test_multi_items_returns_every_pair_in_order_with_given_spelling() -> None:
    pairs = [("Set-Cookie", "a=1"), ("X-Thing", "t"), ("set-cookie", "b=2")]
    assert Headers(pairs).multi_items() == pairs


def test_setdefault() -> None:
    headers = Headers({"A": "1"})
    assert headers.setdefault("a", "2") == "1"
    assert headers.setdefault("B", "3") == "3"
    assert headers.multi_items() == [("A", "1"), ("B", "3")]


def test_from_raw_lower_cases_names_and_decodes_latin_1() -> None:
    high = bytes(range(0x80, 0x100))
    headers = Headers.from_raw([(b"Content-Type", b"text/plain"), (b"X-Bin", high)])
    assert headers.multi_items()[0] == ("content-type", "text/plain")
    name, value = headers.multi_items()[1]
    assert name == "x-bin"
    assert len(value) == 128
    assert value.encode("latin-1") == high


def test_from_raw_keeps_repeated_fields() -> None:
    headers = Headers.from_raw([(b"Accept", b"a"), (b"ACCEPT", b"b")])
    assert headers.getall("accept") == ["a", "b"]
    assert headers.multi_items() == [("accept", "a"), ("accept", "b")]


def test_equality_ignores_order_and_name_case() -> None:
    one = Headers([("A", "1"), ("B", "2")])
    two = Headers([("b", "2"), ("a", "1")])
    assert one == two
    assert one != Headers([("A", "1"), ("B", "3")])
    assert one != Headers([("A", "1")])
    assert one != {"a": "1", "b": "2"}


def test_values_are_case_sensitive_in_equality() -> None:
    assert Headers({"A": "x"}) != Headers({"A": "X"})


def test_copy_is_independent() -> None:
    headers = Headers({"A": "1"})
    other = headers.copy()
    other["A"] = "2"
    other.add("B", "3")
    assert headers.multi_items() == [("A", "1")]
    assert other.multi_items() == [("A", "2"), ("B", "3")]


def test_built_from_another_headers_keeps_repeated_fields() -> None:
    source = Headers([("A", "1"), ("a", "2")])
    assert Headers(source).multi_items() == [("A", "1"), ("a", "2")]


def test_headers_are_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(Headers())


def test_setdefaults_adds_only_the_absent_fields_in_order() -> None:
    headers = Headers([("X-Frame-Options", "SAMEORIGIN"), ("Set-Cookie", "a=1")])
    headers.setdefaults(
        Headers([("x-frame-options", "DENY"), ("X-Content-Type-Options", "nosniff")])
    )
    assert headers.multi_items() == [
        ("X-Frame-Options", "SAMEORIGIN"),
        ("Set-Cookie", "a=1"),
        ("X-Content-Type-Options", "nosniff"),
    ]
    assert headers["x-content-type-options"] == "nosniff"
