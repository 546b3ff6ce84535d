from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nessen.http import Headers, Response


def test_defaults() -> None:
    response = Response()
    assert response.status == 200
    assert response.body == b""
    assert response.content_type is None
    assert response.stream is None
    assert len(response.headers) == 0


def test_str_body_is_encoded_as_utf_8() -> None:
    assert Response(200, "grüße €").body == "grüße €".encode()


def test_json() -> None:
    response = Response.json({"a": [1, "é"], "b": None}, 201, headers={"X-Id": "1"})
    assert response.status == 201
    assert response.content_type == "application/json"
    assert json.loads(response.body) == {"a": [1, "é"], "b": None}
    assert response.headers["x-id"] == "1"


def test_json_with_an_unencodable_value_raises_type_error() -> None:
    with pytest.raises(TypeError):
        Response.json({"x": object()})


def test_text() -> None:
    response = Response.text("héllo", 404)
    assert response.status == 404
    assert response.content_type == "text/plain; charset=utf-8"
    assert response.body == "héllo".encode()


def test_html_is_sent_as_given() -> None:
    response = Response.html("<p>hi</p>")
    assert response.status == 200
    assert response.content_type == "text/html; charset=utf-8"
    assert response.body == b"<p>hi</p>"


def test_headers_accept_pairs_and_keep_repeats() -> None:
    response = Response(headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    assert isinstance(response.headers, Headers)
    assert response.headers.getall("set-cookie") == ["a=1", "b=2"]


# --- the seed's mapping shape ------------------------------------------------------------


def test_from_mapping_str_body_is_text_plain() -> None:
    response = Response.from_mapping({"status": 201, "body": "created"})
    assert response.status == 201
    assert response.body == b"created"
    assert response.content_type == "text/plain; charset=utf-8"


@pytest.mark.parametrize("body", [{"ok": True}, [1, 2, 3], 42, True])
def test_from_mapping_other_bodies_are_json(body: Any) -> None:
    response = Response.from_mapping({"body": body})
    assert response.status == 200
    assert response.content_type == "application/json"
    assert json.loads(response.body) == body


def test_from_mapping_bytes_body_has_no_content_type() -> None:
    response = Response.from_mapping({"status": 200, "body": b"\x00\x01"})
    assert response.body == b"\x00\x01"
    assert response.content_type is None


def test_from_mapping_content_type_from_headers_is_honoured() -> None:
    response = Response.from_mapping(
        {
            "status": 200,
            "headers": {"content-type": "text/csv", "X-Count": 3},
            "body": "a,b\n1,2\n",
        }
    )
    assert response.content_type == "text/csv"
    assert response.body == b"a,b\n1,2\n"
    assert "content-type" not in response.headers  # sent once, as content_type
    assert response.headers["x-count"] == "3"


def test_from_mapping_content_type_is_honoured_for_json_bodies_too() -> None:
    response = Response.from_mapping(
        {"headers": {"Content-Type": "application/problem+json"}, "body": {"title": "x"}}
    )
    assert response.content_type == "application/problem+json"
    assert json.loads(response.body) == {"title": "x"}


@pytest.mark.parametrize("data", [{}, {"status": 204}, {"status": 204, "body": None}])
def test_from_mapping_empty_body(data: dict[str, Any]) -> None:
    response = Response.from_mapping(data)
    assert response.body == b""
    assert response.content_type is None
    assert response.status == data.get("status", 200)


@pytest.mark.parametrize("status", ["200", 200.0, None, True])
def test_from_mapping_bad_status_type_is_a_type_error(status: object) -> None:
    with pytest.raises(TypeError, match="status must be an int"):
        Response.from_mapping({"status": status, "body": "x"})


def test_from_mapping_headers_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match="headers must be a mapping"):
        Response.from_mapping({"headers": [("a", "b")]})


def test_from_mapping_unencodable_body_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        Response.from_mapping({"body": {"x": object()}})


# --- streaming -----------------------------------------------------------------------------


def test_streaming_holds_the_iterable() -> None:
    chunks = [b"a", b"b"]
    response = Response.streaming(chunks, 206, headers={"X": "1"}, content_type="text/plain")
    assert response.stream is chunks
    assert response.body == b""
    assert response.status == 206
    assert response.content_type == "text/plain"
    assert response.headers["x"] == "1"


async def test_streaming_accepts_an_async_iterable() -> None:
    async def produce() -> AsyncIterator[bytes]:
        yield b"one"
        yield b"two"

    response = Response.streaming(produce())
    assert response.stream is not None
    received = [chunk async for chunk in response.stream]  # type: ignore[union-attr]
    assert received == [b"one", b"two"]


def test_repr() -> None:
    assert repr(Response.text("abc")) == "<Response 200 text/plain; charset=utf-8 3 bytes>"
    assert repr(Response.streaming([b"x"])) == "<Response 200 - stream>"


def test_encoded_fields_show_in_headers_after_those_set_before() -> None:
    response = Response.text("hi", headers={"X-A": "1"})
    response.add_encoded_fields("X-B: 2\r\nX-C: 3\r\n", ("x-b", "x-c"))
    assert response.has_field("x-a")
    assert response.has_field("x-c")
    assert not response.has_field("x-d")
    response.headers.add("X-D", "4")  # reading headers takes the encoded fields in, in order
    assert response.headers.multi_items() == [
        ("X-A", "1"),
        ("X-B", "2"),
        ("X-C", "3"),
        ("X-D", "4"),
    ]
    assert response._encoded == ""


def test_encoded_fields_without_other_headers() -> None:
    response = Response.text("hi")
    response.add_encoded_fields("Vary: Accept-Encoding\r\n", ("vary",))
    assert response.has_field("vary")
    assert response.headers["vary"] == "Accept-Encoding"
