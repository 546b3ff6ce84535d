"""Message framing and request-line checks: what RFC 9112 calls ambiguous is refused."""

from __future__ import annotations

import json

import pytest

from nessen import Response, Runtime
from tests.conftest import ServeFactory, echo_runtime
from tests.integration.wire import closed_cleanly, expect_rejection, json_body
from tests.rawhttp import RawClient, get

BAD_REQUESTS = {
    "content-length-and-transfer-encoding": (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "transfer-encoding-then-content-length": (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n"
    ),
    "two-different-content-lengths": (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    ),
    "content-length-list": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!",
    "content-length-negative": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    "content-length-plus-sign": (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello"
    ),
    "content-length-exponent": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1e3\r\n\r\n",
    "content-length-hex": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello",
    "content-length-empty": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n\r\n",
    "content-length-only-ows": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \t \r\n\r\n",
    "content-length-inner-space": (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5 5\r\n\r\nhello"
    ),
    "obs-fold": b"GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",
    "lower-case-method": b"get / HTTP/1.1\r\nHost: t\r\n\r\n",
    "bare-lf-line-ending": b"GET / HTTP/1.1\nHost: t\n\n",
    "nul-in-field-value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "cr-in-field-value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n",
    "bare-lf-in-field-value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\nb\r\n\r\n",
    "bare-lf-before-a-field-line": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\nX-B: b\r\n\r\n",
    "chunked-not-last": (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
    ),
    "missing-chunk-crlf": (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabcX\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("raw", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_malformed_framing_gets_400_and_close(serve: ServeFactory, raw: bytes) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(raw)
        expect_rejection(client, 400, "malformed_request")


def test_missing_host_on_http11_gets_400(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"GET / HTTP/1.1\r\n\r\n")
        expect_rejection(client, 400, "missing_host")


def test_two_host_fields_get_400(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        expect_rejection(client, 400, "duplicate_host")


def test_two_host_fields_get_400_on_http10_too(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n")
        expect_rejection(client, 400, "duplicate_host")


def test_http10_without_host_is_served(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(b"GET / HTTP/1.0\r\n\r\n")
    assert (response.status, response.body) == (200, b"hello")


def test_gzip_then_chunked_transfer_coding_gets_501(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
        )
        expect_rejection(client, 501, "unsupported_transfer_coding")


def test_two_transfer_encoding_fields_get_501(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        expect_rejection(client, 501, "unsupported_transfer_coding")


def test_http2_request_line_gets_505(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n")
        expect_rejection(client, 505, "http_version")


def test_method_outside_allowed_methods_gets_501(serve: ServeFactory) -> None:
    server = serve(allowed_methods=frozenset({"GET", "HEAD"}))
    with RawClient(server.address) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
        expect_rejection(client, 501, "method_not_implemented")


@pytest.mark.parametrize("method", [b"FOO", b"PURGE", b"TRACE", b"BREW", b"X-CUSTOM_1"])
def test_unknown_method_token_gets_501(serve: ServeFactory, method: bytes) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(method + b" / HTTP/1.1\r\nHost: t\r\n\r\n")
        expect_rejection(client, 501, "method_not_implemented")


def test_unknown_method_split_across_writes_gets_501(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"F")
        client.send(b"OO / HTTP/1.1\r\nHost: t\r\n\r\n")
        expect_rejection(client, 501, "method_not_implemented")


def test_method_that_is_not_a_token_gets_400(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n")
        expect_rejection(client, 400, "malformed_request")


@pytest.mark.parametrize(
    "raw", [b"GET /\r\n\r\n", b"GET /\r\nHost: t\r\n\r\n", b"GET / HTTP/0.9\r\nHost: t\r\n\r\n"]
)
def test_http09_request_line_gets_400(serve: ServeFactory, raw: bytes) -> None:
    # HTTP/0.9 (a request line without a version) has no status line or fields to answer
    # with; we answer in HTTP/1.1 and close rather than guess at its framing.
    seen: list[str] = []
    server = serve(_path_runtime(seen))
    with RawClient(server.address) as client:
        client.send(raw)
        expect_rejection(client, 400, "http_0_9")
    assert seen == []


@pytest.mark.parametrize("pieces", [[b"GET /\r\n"], [b"GET /", b"\r\n"], [b"GET /x?y\n"]])
def test_bare_http09_request_line_gets_400_at_its_end(
    serve: ServeFactory, pieces: list[bytes]
) -> None:
    # A real HTTP/0.9 client sends "GET /\r\n" and waits for the answer: it is refused when
    # the line ends, not held until headers_timeout (an hour here, so waiting would fail).
    seen: list[str] = []
    server = serve(_path_runtime(seen), headers_timeout=3600.0)
    with RawClient(server.address) as client:
        for piece in pieces:
            client.send(piece)
        expect_rejection(client, 400, "http_0_9")
    assert seen == []


@pytest.mark.parametrize("pipelined", [True, False])
def test_an_http09_line_after_a_request_on_the_same_connection_gets_400(
    serve: ServeFactory, pipelined: bool
) -> None:
    # llhttp keeps reporting the previous request's version until it reads a new one, so
    # the line's own bytes decide; the first request is answered, the HTTP/0.9 line 400.
    seen: list[str] = []
    server = serve(_path_runtime(seen), headers_timeout=3600.0)
    with RawClient(server.address) as client:
        if pipelined:
            client.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\nGET /second\r\n")
            assert client.response().status == 200
        else:
            assert client.request(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n").status == 200
            client.send(b"GET /second\r\n")
        expect_rejection(client, 400, "http_0_9")
    assert seen == ["/first"]


@pytest.mark.parametrize("pieces", [[b"GET /second", b"\r\n"], [b"GET /second\r", b"\n"]])
def test_an_http09_line_split_before_its_newline_on_a_reused_connection_gets_400(
    serve: ServeFactory, pieces: list[bytes]
) -> None:
    seen: list[str] = []
    server = serve(_path_runtime(seen), headers_timeout=3600.0)
    with RawClient(server.address) as client:
        assert client.request(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n").status == 200
        for piece in pieces:
            client.send(piece)
        expect_rejection(client, 400, "http_0_9")
    assert seen == ["/first"]


def test_a_later_request_line_sent_before_its_fields_is_served(serve: ServeFactory) -> None:
    # The request line alone, ending with its version, on a reused connection: it waits
    # for its header section (not taken for HTTP/0.9).
    seen: list[str] = []
    server = serve(_path_runtime(seen))
    with RawClient(server.address) as client:
        assert client.request(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n").status == 200
        client.send(b"GET /b HTTP/1.1\r\n")
        client.send(b"Host: t\r\n\r\n")
        assert client.response().status == 200
    assert seen == ["/a", "/b"]


def test_request_line_split_before_its_version_is_served(serve: ServeFactory) -> None:
    # The target arrives alone first; the version follows: not mistaken for HTTP/0.9.
    seen: list[str] = []
    server = serve(_path_runtime(seen))
    with RawClient(server.address) as client:
        client.send(b"GET /a")
        client.send(b" HTTP/1.1\r\n")
        client.send(b"Host: t\r\n\r\n")
        assert client.response().status == 200
    assert seen == ["/a"]


@pytest.mark.parametrize(
    "field",
    [
        b"Content-Length:  5",
        b"Content-Length:\t5",
        b"Content-Length: 5  ",
        b"Content-Length: \t 5\t ",
    ],
)
def test_content_length_surrounded_by_ows_is_its_plain_value(
    serve: ServeFactory, field: bytes
) -> None:
    # RFC 9112 §5: field-line = field-name ":" OWS field-value OWS, and RFC 9110 §5.5: the
    # leading and trailing OWS "is not part of the field value". So "  5" is the value "5",
    # a valid Content-Length (only what is left after stripping OWS must be 1*DIGIT,
    # RFC 9110 §8.6). The request right behind the 5 bytes proves the framing took 5.
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\n" + field + b"\r\n\r\nabcde" + get("/"))
        echoed = client.response()
        follow_up = client.response()
    assert (echoed.status, echoed.body) == (200, b"abcde")
    assert echoed.header("connection") is None
    assert (follow_up.status, follow_up.body) == (200, b"hello")


# --- request targets -----------------------------------------------------------------------


def _path_runtime(seen: list[str]) -> Runtime:
    runtime = Runtime(access_log=False)

    @runtime.route.get("/{rest:path}")
    async def echo_path(ctx):  # type: ignore[no-untyped-def]
        seen.append(ctx.path)
        return Response.json({"path": ctx.path, "rest": ctx.params["rest"]})

    return runtime


@pytest.mark.parametrize(
    "target",
    [
        b"/a/../../etc/passwd",
        b"/%2e%2e/%2e%2e/etc",
        b"/%2E%2E/etc/passwd",
        b"/..",
        b"/a/%2e%2e/%2e%2e/b",
    ],
)
def test_target_climbing_above_the_root_is_never_routed(serve: ServeFactory, target: bytes) -> None:
    seen: list[str] = []
    server = serve(_path_runtime(seen))
    with RawClient(server.address) as client:
        client.send(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        expect_rejection(client, 400, "path_traversal")
    assert seen == []


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/a/./b/../c", "/a/c"),
        (b"/a/%2e/b/%2E%2E/c", "/a/c"),
        (b"/a/b/..", "/a/"),
        (b"/a/./", "/a/"),
    ],
)
def test_dot_segments_are_removed_before_routing(
    serve: ServeFactory, target: bytes, path: str
) -> None:
    seen: list[str] = []
    server = serve(_path_runtime(seen))
    with RawClient(server.address) as client:
        response = client.request(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.status == 200
    assert json.loads(response.body) == {"path": path, "rest": path[1:]}
    assert seen == [path]


def _static_runtime(static: list[str], elsewhere: list[str]) -> Runtime:
    """``/static/{rest:path}`` as a file server would mount it, and a catch-all beside it."""
    runtime = Runtime(access_log=False)

    @runtime.route.get("/static/{rest:path}")
    async def static_file(ctx):  # type: ignore[no-untyped-def]
        static.append(ctx.params["rest"])
        return Response.json({"route": "static", "rest": ctx.params["rest"]})

    @runtime.route.get("/{other:path}")
    async def anything(ctx):  # type: ignore[no-untyped-def]
        elsewhere.append(ctx.path)
        return Response.json({"route": "elsewhere", "path": ctx.path})

    return runtime


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/static/../x", "/x"),
        (b"/static/%2e%2e/x", "/x"),
        (b"/static/%2e%2e%2fx", "/x"),
        (b"/static/%2E%2E%2Fx", "/x"),
        (b"/static/a/%2e%2e/%2e%2e/x", "/x"),
        (b"/static/..%2fx", "/x"),
        (b"/static/.%2e/x", "/x"),
        (b"/static/%2e./x", "/x"),
        (b"/static/a/..%2F..%2Fx", "/x"),
        (b"/static/./%2e%2e/x?y=1", "/x"),
        (b"http://h/static/%2e%2e%2fx", "/x"),
    ],
)
def test_dot_segment_escapes_never_reach_a_prefix_route(
    serve: ServeFactory, target: bytes, path: str
) -> None:
    # RFC 3986 §6.2.2.2 lets "%2e" be decoded (an unreserved "."), after which §5.2.4
    # removes the dot-segments; "%2f" is reserved, and decoding it too is nginx's choice
    # (its $uri is decoded, then merged), which we follow: ".." can then never survive as
    # a segment, whatever its spelling. "/static/%2e%2e%2fx" is thus "/x", a path the
    # client could have asked for directly; it never reaches the /static handler.
    static: list[str] = []
    elsewhere: list[str] = []
    server = serve(_static_runtime(static, elsewhere))
    with RawClient(server.address) as client:
        response = client.request(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        direct = client.request(get(path))
    assert response.status == 200
    assert json.loads(response.body) == {"route": "elsewhere", "path": path}
    assert json.loads(direct.body) == json.loads(response.body)
    assert static == []
    assert elsewhere == [path, path]


@pytest.mark.parametrize(
    "target",
    [
        b"/%2e%2e/static/x",
        b"/static/%2e%2e%2f%2e%2e%2fsecret",
        b"/static/..%2f..%2f..%2fetc/passwd",
        b"/static/.%2e/.%2e/x",
    ],
)
def test_dot_segment_escape_above_the_root_gets_400(serve: ServeFactory, target: bytes) -> None:
    static: list[str] = []
    elsewhere: list[str] = []
    server = serve(_static_runtime(static, elsewhere))
    with RawClient(server.address) as client:
        client.send(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        expect_rejection(client, 400, "path_traversal")
    assert (static, elsewhere) == ([], [])


@pytest.mark.parametrize(
    ("target", "rest"),
    [
        (b"/static/a%2Fb", "a/b"),  # the same route and parameter as /static/a/b
        (b"/static/%252e%252e/x", "%2e%2e/x"),  # decoded once: "%2e%2e" is a plain name
        (b"/static/..a/b..", "..a/b.."),  # dots inside a name are not a dot-segment
        (b"/static/a/./b/../c", "a/c"),
    ],
)
def test_prefix_route_parameter_is_the_normalised_remainder(
    serve: ServeFactory, target: bytes, rest: str
) -> None:
    static: list[str] = []
    elsewhere: list[str] = []
    server = serve(_static_runtime(static, elsewhere))
    with RawClient(server.address) as client:
        response = client.request(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.status == 200
    assert json.loads(response.body) == {"route": "static", "rest": rest}
    assert static == [rest]
    assert ".." not in rest.split("/")
    assert elsewhere == []


def test_percent_encoded_nul_in_path_gets_400(serve: ServeFactory) -> None:
    seen: list[str] = []
    server = serve(_path_runtime(seen))
    with RawClient(server.address) as client:
        client.send(get("/a%00b"))
        expect_rejection(client, 400, "bad_target")
    assert seen == []


def test_absolute_form_target_routes_by_its_path(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(get("http://example.com/path?x=1"))
    assert response.status == 200
    assert json.loads(response.body) == {"path": "/path", "query": "x=1"}


# --- routing errors over the wire ----------------------------------------------------------


def test_unknown_path_gets_404_json_and_keeps_the_connection(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(get("/nope"))
        follow_up = client.request(get("/"))
    assert response.status == 404
    assert response.header("connection") is None
    assert json_body(response)["error"] == "Not Found"
    assert json_body(response)["request_id"]
    assert (follow_up.status, follow_up.body) == (200, b"hello")


def test_wrong_method_gets_405_with_allow(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(b"DELETE / HTTP/1.1\r\nHost: t\r\n\r\n")
        on_echo = client.request(get("/echo"))
    assert response.status == 405
    assert response.header("allow") == "GET, HEAD, OPTIONS"
    assert json_body(response)["error"] == "Method Not Allowed"
    assert json_body(response)["request_id"]
    assert on_echo.status == 405
    assert on_echo.header("allow") == "OPTIONS, PATCH, POST, PUT"


def test_options_on_a_known_path_gets_204_with_allow(serve: ServeFactory) -> None:
    server = serve(echo_runtime())
    with RawClient(server.address) as client:
        response = client.request(b"OPTIONS /echo HTTP/1.1\r\nHost: t\r\n\r\n")
        root = client.request(b"OPTIONS / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.status == 204
    assert response.header("allow") == "OPTIONS, PATCH, POST, PUT"
    assert response.header("content-length") is None
    assert response.body == b""
    assert (root.status, root.header("allow")) == (204, "GET, HEAD, OPTIONS")


def test_options_on_an_unknown_path_gets_404(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(b"OPTIONS /nope HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.status == 404


def test_unknown_method_on_a_reused_connection_gets_501(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        assert client.request(get("/")).status == 200
        client.send(b"FOO / HTTP/1.1\r\nHost: t\r\n\r\n")
        expect_rejection(client, 501, "method_not_implemented")


def test_lower_case_method_split_across_writes_gets_400(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"G")
        client.send(b"et / HTTP/1.1\r\nHost: t\r\n\r\n")
        expect_rejection(client, 400, "malformed_request")


def test_transfer_encoding_in_an_http10_request_is_refused(serve: ServeFactory) -> None:
    # RFC 9112 §6.1: HTTP/1.0 has no chunked coding, so its framing is faulty; keeping
    # the connection would let a front end that framed it differently smuggle a request.
    server = serve()
    with RawClient(server.address) as client:
        client.send(
            b"POST /echo HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        expect_rejection(client, 400, "http10_transfer_encoding")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"HEAD / HTTP/1.1\r\n\r\n", 400),
        (b"HEAD /a/../../x HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"HEAD / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"HEAD / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    ],
)
def test_refusal_of_a_head_request_has_no_content(
    serve: ServeFactory, raw: bytes, status: int
) -> None:
    # RFC 9110 §9.3.2: a response to HEAD never carries content, errors included.
    server = serve()
    with RawClient(server.address) as client:
        client.send(raw)
        assert closed_cleanly(client)
    head, separator, content = client.buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert b"\r\nConnection: close" in head
    assert separator == b"\r\n\r\n"
    assert content == b""


# --- response framing belongs to the server ------------------------------------------------


def test_framing_fields_set_by_a_handler_are_not_sent(serve: ServeFactory) -> None:
    runtime = echo_runtime()

    @runtime.route.get("/framing")
    async def framing(ctx):  # type: ignore[no-untyped-def]
        return Response.text(
            "four",
            headers={
                "Content-Length": "999",
                "Transfer-Encoding": "chunked",
                "Connection": "Upgrade",
                "Keep-Alive": "timeout=1",
                "X-Kept": "yes",
            },
        )

    server = serve(runtime)
    with RawClient(server.address) as client:
        response = client.request(get("/framing"))
        follow_up = client.request(get("/"))
    assert response.status == 200
    assert response.body == b"four"
    assert [v for k, v in response.headers if k.lower() == "content-length"] == ["4"]
    assert response.header("transfer-encoding") is None
    assert response.header("connection") is None
    assert response.header("keep-alive") == "timeout=65"
    assert response.header("x-kept") == "yes"
    assert (follow_up.status, follow_up.body) == (200, b"hello")


def test_a_handlers_connection_close_closes_the_connection_after_its_response(
    serve: ServeFactory,
) -> None:
    runtime = echo_runtime()

    @runtime.route.get("/last")
    async def last(ctx):  # type: ignore[no-untyped-def]
        return Response.text("last one", headers={"Connection": "close"})

    server = serve(runtime)
    with RawClient(server.address) as client:
        client.send(get("/last") + get("/"))
        response = client.response()
        assert response.header("connection") == "close"  # once, written by the server
        assert [k for k, _ in response.headers if k.lower() == "connection"] == ["Connection"]
        assert client.closed_by_peer()
        assert client.buffer == b""  # the request pipelined behind it was not answered


def test_a_handlers_server_and_date_replace_the_servers(serve: ServeFactory) -> None:
    runtime = echo_runtime()

    @runtime.route.get("/own")
    async def own(ctx):  # type: ignore[no-untyped-def]
        return Response.text(
            "mine", headers={"Server": "shop/2.1", "Date": "Tue, 01 Dec 2026 10:00:00 GMT"}
        )

    server = serve(runtime)
    with RawClient(server.address) as client:
        response = client.request(get("/own"))
        ours = client.request(get("/"))
    assert [v for k, v in response.headers if k.lower() == "server"] == ["shop/2.1"]
    assert [v for k, v in response.headers if k.lower() == "date"] == [
        "Tue, 01 Dec 2026 10:00:00 GMT"
    ]
    assert ours.header("server") == "nessen"  # other responses keep the server's
    assert ours.header("date") is not None


# --- Upgrade and CONNECT -------------------------------------------------------------------


def test_upgrade_request_is_served_without_switching_then_closed(serve: ServeFactory) -> None:
    # RFC 9110 §7.8 lets a server ignore Upgrade; what follows the request would be in a
    # protocol the server does not speak, so it answers over HTTP/1.1 and closes.
    server = serve()
    with RawClient(server.address) as client:
        client.send(
            get("/", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n")
            + b"\x81\x85not http at all"
        )
        response = client.response()
        assert closed_cleanly(client)
        assert client.buffer == b""
    assert (response.status, response.body) == (200, b"hello")
    assert response.header("connection") == "close"
    assert response.header("upgrade") is None


def test_connect_gets_501(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        client.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        expect_rejection(client, 501, "method_not_implemented")
