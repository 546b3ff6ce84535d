from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nessen.errors import HTTPError
from nessen.http import Headers, Query, Request
from nessen.http.request import MAX_QUERY_FIELDS, new_request_id


def make_request(
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
) -> Request:
    target = b"/p" + (b"?" + query if query else b"")
    return Request("POST", target, "/p", query, headers or [], body=body, client=("10.0.0.1", 5))


# --- query ---------------------------------------------------------------------------------


def test_query_first_value_and_getall() -> None:
    query = Query.parse(b"tag=a&page=2&tag=b&tag=c")
    assert query["tag"] == "a"
    assert query["page"] == "2"
    assert query.getall("tag") == ["a", "b", "c"]
    assert query.getall("missing") == []
    assert len(query) == 2
    assert list(query) == ["tag", "page"]
    assert query.multi_items() == [("tag", "a"), ("page", "2"), ("tag", "b"), ("tag", "c")]


def test_query_keeps_blank_values() -> None:
    query = Query.parse(b"a=&b&c=1")
    assert query.multi_items() == [("a", ""), ("b", ""), ("c", "1")]


def test_query_plus_is_a_space_and_percent_escapes_decode_as_utf_8() -> None:
    query = Query.parse(b"q=hello+world&name=J%C3%BCrgen&sym=%2B%26%3D&k%20ey=v")
    assert query["q"] == "hello world"
    assert query["name"] == "Jürgen"
    assert query["sym"] == "+&="
    assert query["k ey"] == "v"


def test_query_invalid_utf_8_becomes_replacement_character() -> None:
    assert Query.parse(b"x=%FF")["x"] == "\ufffd"


def test_empty_query() -> None:
    query = Query.parse(b"")
    assert len(query) == 0
    assert query.get("a") is None


def test_query_at_the_field_limit_is_parsed() -> None:
    raw = b"&".join(b"f%d=1" % i for i in range(MAX_QUERY_FIELDS))
    assert MAX_QUERY_FIELDS == 1000
    assert len(Query.parse(raw)) == 1000


def test_query_over_the_field_limit_is_a_400() -> None:
    raw = b"&".join(b"f%d=1" % i for i in range(MAX_QUERY_FIELDS + 1))
    with pytest.raises(HTTPError) as caught:
        Query.parse(raw)
    assert caught.value.status == 400
    assert "1000" in caught.value.message


def test_request_query_is_parsed_from_the_query_string() -> None:
    request = make_request(query=b"a=1&a=2")
    assert request.query["a"] == "1"
    assert request.query.getall("a") == ["1", "2"]
    assert request.query_string == b"a=1&a=2"


def test_request_query_over_the_limit_raises_on_access() -> None:
    request = make_request(query=b"&".join([b"x=1"] * 1001))
    with pytest.raises(HTTPError) as caught:
        _ = request.query
    assert caught.value.status == 400


# --- body ----------------------------------------------------------------------------------


def test_json_parses_the_body() -> None:
    assert make_request(b'{"a": [1, 2], "b": null}').json() == {"a": [1, 2], "b": None}


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b'{"a": 1,}', b"\xff"])
def test_invalid_json_is_a_400(body: bytes) -> None:
    with pytest.raises(HTTPError) as caught:
        make_request(body).json()
    assert caught.value.status == 400
    assert caught.value.message == "invalid JSON body"


def test_text_is_utf_8_by_default() -> None:
    assert make_request("grüße".encode()).text() == "grüße"


def test_text_honours_the_charset() -> None:
    headers = [(b"Content-Type", b"text/plain; charset=ISO-8859-1")]
    assert make_request(b"gr\xfc\xdfe", headers).text() == "grüße"


def test_text_honours_a_quoted_charset_followed_by_parameters() -> None:
    headers = [(b"content-type", b'text/plain; charset="utf-16-le"; format=flowed')]
    assert make_request("hé".encode("utf-16-le"), headers).text() == "hé"


def test_text_with_an_unknown_charset_falls_back_to_utf_8() -> None:
    headers = [(b"content-type", b"text/plain; charset=no-such-charset")]
    assert make_request("é".encode(), headers).text() == "é"


def test_text_replaces_undecodable_bytes() -> None:
    assert make_request(b"a\xffb").text() == "a\ufffdb"


# --- identity and defaults ---------------------------------------------------------------


def test_ids_are_unique() -> None:
    ids = [make_request().id for _ in range(10_000)]
    assert len(set(ids)) == 10_000


def test_id_is_stable_for_one_request() -> None:
    request = make_request()
    assert request.id == request.id


def test_state_is_one_dict_made_on_first_use_and_can_be_replaced() -> None:
    request = Request("GET", b"/", "/")
    request.state["user"] = "ada"
    assert request.state == {"user": "ada"}
    request.state = {"tenant": 7}
    assert request.state == {"tenant": 7}


def test_defaults_before_routing() -> None:
    request = Request("GET", b"/", "/")
    assert request.params == {}
    assert request.route is None
    assert request.state == {}
    assert request.body == b""
    assert request.query_string == b""
    assert len(request.headers) == 0
    assert request.client is None
    assert request.client_ip == ""
    assert request.http_version == "1.1"


def test_accessors() -> None:
    request = Request(
        "GET",
        b"/a%20b?x=1",
        "/a b",
        b"x=1",
        [(b"Host", b"example.com")],
        client=("192.0.2.1", 4000),
        http_version="1.0",
    )
    assert request.method == "GET"
    assert request.target == b"/a%20b?x=1"
    assert request.path == "/a b"
    assert request.headers["host"] == "example.com"
    assert request.client == ("192.0.2.1", 4000)
    assert request.client_ip == "192.0.2.1"
    assert request.http_version == "1.0"
    assert repr(request) == "<Request GET '/a b'>"


def test_prebuilt_headers_are_used() -> None:
    headers = Headers({"X": "1"})
    assert Request("GET", b"/", "/", headers=headers).headers is headers


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Accept", "accept", "X-Request-ID", "x-request-id", "Host"]),
            st.text(alphabet="abc ,;=", max_size=8),
        ),
        max_size=6,
    ),
    st.sampled_from(["accept", "Accept", "X-REQUEST-ID", "host", "missing"]),
)
def test_one_header_reads_as_headers_get_does(fields: list[tuple[str, str]], name: str) -> None:
    raw = [(n.encode(), v.encode()) for n, v in fields]
    unbuilt = Request("GET", b"/", "/", b"", list(raw))
    built = Request("GET", b"/", "/", b"", list(raw))
    expected = built.headers.get(name)
    assert unbuilt.header(name) == expected
    assert unbuilt._headers is None  # the scan did not build the headers
    assert built.header(name) == expected


def test_a_forked_child_generates_ids_of_its_own() -> None:
    # Workers are forked from one supervisor: ids drawn in the parent and in the child
    # after the fork must not collide (the random prefix is drawn again in the child).
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first id and leave at once
        os.write(write_end, new_request_id().encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    parent_id = new_request_id()
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_id.split("-")[0] != parent_id.split("-")[0]
    assert child_id != parent_id
