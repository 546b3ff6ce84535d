from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from nessen.app.routing import Route, Router, allow_field, coerce_response
from nessen.errors import HTTPError
from nessen.http import Request, Response


def make_request(method: str, path: str) -> Request:
    return Request(method, path.encode(), path)


def ok(name: str) -> Any:
    async def handler(ctx: Request) -> Response:
        return Response.text(name)

    handler.__name__ = name
    return handler


def matched(router: Router, method: str, path: str) -> tuple[str, dict[str, Any]]:
    route, params, allowed = router.match(method, path)
    assert route is not None, (method, path, allowed)
    assert allowed == set()
    return route.template, params


# --- match ---------------------------------------------------------------------------------


def test_static_route() -> None:
    router = Router()
    router.get("/users", ok("users"))
    router.get("/", ok("root"))
    assert matched(router, "GET", "/users") == ("/users", {})
    assert matched(router, "GET", "/") == ("/", {})


def test_unknown_path_matches_nothing_and_allows_nothing() -> None:
    router = Router()
    router.get("/users", ok("users"))
    assert router.match("GET", "/nope") == (None, {}, set())
    assert router.match("GET", "/users/") == (None, {}, set())
    assert router.match("GET", "/Users") == (None, {}, set())


def test_brace_parameter() -> None:
    router = Router()
    router.get("/users/{id}", ok("user"))
    assert matched(router, "GET", "/users/42") == ("/users/{id}", {"id": "42"})
    assert matched(router, "GET", "/users/a b") == ("/users/{id}", {"id": "a b"})
    assert router.match("GET", "/users/")[0] is None
    assert router.match("GET", "/users/42/x")[0] is None


def test_int_parameter_is_converted() -> None:
    router = Router()
    router.get("/items/{id:int}", ok("item"))
    assert matched(router, "GET", "/items/42") == ("/items/{id:int}", {"id": 42})
    assert matched(router, "GET", "/items/-3")[1] == {"id": -3}
    assert router.match("GET", "/items/abc") == (None, {}, set())
    assert router.match("GET", "/items/4a") == (None, {}, set())
    assert router.match("GET", "/items/1.5") == (None, {}, set())


def test_float_and_uuid_parameters() -> None:
    router = Router()
    router.get("/price/{value:float}", ok("price"))
    router.get("/things/{key:uuid}", ok("thing"))
    assert matched(router, "GET", "/price/1.25")[1] == {"value": 1.25}
    key = "12345678-1234-5678-1234-567812345678"
    assert matched(router, "GET", f"/things/{key}")[1] == {"key": uuid.UUID(key)}
    assert router.match("GET", "/things/not-a-uuid")[0] is None


def test_colon_parameter_is_rewritten_to_braces() -> None:
    router = Router()
    route = router.add("GET", "/users/:id/posts/:post_id", ok("post"))
    assert route.template == "/users/{id}/posts/{post_id}"
    assert matched(router, "GET", "/users/7/posts/9") == (
        "/users/{id}/posts/{post_id}",
        {"id": "7", "post_id": "9"},
    )


def test_parameters_inside_a_segment() -> None:
    router = Router()
    router.get("/badge/{label}/{value}.svg", ok("badge"))
    assert matched(router, "GET", "/badge/build/passing.svg")[1] == {
        "label": "build",
        "value": "passing",
    }
    assert router.match("GET", "/badge/build/passing.png")[0] is None
    assert router.match("GET", "/badge/build/.svg")[0] is None  # a parameter is never empty


def test_path_parameter_takes_the_rest() -> None:
    router = Router()
    router.get("/files/{rest:path}", ok("files"))
    assert matched(router, "GET", "/files/a/b/c.txt")[1] == {"rest": "a/b/c.txt"}
    assert matched(router, "GET", "/files/x")[1] == {"rest": "x"}


def test_literal_beats_parameter_whatever_the_order() -> None:
    router = Router()
    router.get("/users/{id}", ok("user"))
    router.get("/users/me", ok("me"))
    assert matched(router, "GET", "/users/me") == ("/users/me", {})
    assert matched(router, "GET", "/users/you") == ("/users/{id}", {"id": "you"})


def test_literal_branch_falls_back_to_a_parameter_deeper_down() -> None:
    router = Router()
    router.get("/users/me", ok("me"))
    router.get("/users/{id}/posts", ok("posts"))
    assert matched(router, "GET", "/users/me/posts") == ("/users/{id}/posts", {"id": "me"})


def test_other_method_on_a_known_path_gives_the_allowed_set() -> None:
    router = Router()
    router.get("/users/{id}", ok("get"))
    router.delete("/users/{id}", ok("delete"))
    route, params, allowed = router.match("POST", "/users/1")
    assert route is None
    assert params == {}
    assert allowed == {"GET", "DELETE"}


def test_static_route_for_one_method_and_parameter_route_for_another() -> None:
    router = Router()
    router.get("/users/me", ok("me"))
    router.delete("/users/{id}", ok("delete"))
    assert matched(router, "DELETE", "/users/me") == ("/users/{id}", {"id": "me"})
    assert router.match("PUT", "/users/me")[2] == {"GET", "DELETE"}


def test_head_falls_back_to_get() -> None:
    router = Router()
    router.get("/page", ok("page"))
    assert matched(router, "HEAD", "/page") == ("/page", {})


def test_explicit_head_wins_over_get() -> None:
    router = Router()
    get_handler, head_handler = ok("get"), ok("head")
    router.get("/page", get_handler)
    router.head("/page", head_handler)
    route, _, _ = router.match("HEAD", "/page")
    assert route is not None
    assert route.handler is head_handler


def test_any_matches_every_method() -> None:
    router = Router()
    router.any("/hook", ok("hook"))
    for method in ("GET", "POST", "PURGE", "OPTIONS"):
        assert matched(router, method, "/hook") == ("/hook", {})


# --- registration ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete", "head", "options"])
def test_decorator_and_call_forms(method: str) -> None:
    router = Router()
    handler = ok("call")

    @getattr(router, method)("/decorated/{id}")
    async def decorated(ctx: Request) -> Response:
        return Response.text("decorated")

    returned = getattr(router, method)("/called", handler)
    assert returned is handler
    assert callable(decorated)  # the decorator gives the function back
    verb = method.upper()
    decorated_route = router.match(verb, "/decorated/1")[0]
    called_route = router.match(verb, "/called")[0]
    assert decorated_route is not None
    assert decorated_route.handler is decorated
    assert called_route is not None
    assert called_route.handler is handler
    assert decorated_route.methods == frozenset({verb})


def test_any_decorator_and_call_forms() -> None:
    router = Router()

    @router.any("/a")
    async def a(ctx: Request) -> Response:
        return Response()

    b = router.any("/b", ok("b"))
    route_a, route_b = router.match("PATCH", "/a")[0], router.match("PATCH", "/b")[0]
    assert route_a is not None
    assert route_a.handler is a
    assert route_b is not None
    assert route_b.handler is b


def test_route_with_several_methods() -> None:
    router = Router()
    handler = router.route(["get", "POST"], "/x", ok("x"))
    for method in ("GET", "POST", "HEAD"):
        route = router.match(method, "/x")[0]
        assert route is not None
        assert route.handler is handler
    assert router.match("PUT", "/x")[2] == {"GET", "POST"}


def test_routes_are_listed() -> None:
    router = Router()
    router.get("/a", ok("a"))
    router.post("/b/{id}", ok("b"))
    assert [(r.template, r.methods) for r in router.routes] == [
        ("/a", frozenset({"GET"})),
        ("/b/{id}", frozenset({"POST"})),
    ]
    assert all(isinstance(r, Route) for r in router.routes)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("/users", "/users"),
        ("/users/{id}", "/users/{id}"),
        ("/users/{id}", "/users/:id"),
    ],
)
def test_duplicate_route_is_a_value_error(first: str, second: str) -> None:
    router = Router()
    router.get(first, ok("one"))
    with pytest.raises(ValueError, match="already routed"):
        router.get(second, ok("two"))


def test_same_template_for_another_method_is_fine() -> None:
    router = Router()
    router.get("/users/{id}", ok("get"))
    router.put("/users/{id}", ok("put"))
    assert router.match("PUT", "/users/1")[0] is not None


def test_a_failed_registration_claims_nothing() -> None:
    router = Router()
    router.get("/a", ok("a"))
    with pytest.raises(ValueError, match="already routed"):
        router.route(["POST", "GET"], "/a", ok("b"))
    assert router.match("POST", "/a")[2] == {"GET"}


@pytest.mark.parametrize(
    "template",
    [
        "users",  # no leading slash
        "",
        "/users/{id:nope}",  # unknown converter
        "/files/{rest:path}/edit",  # path parameter not last
        "/users/{id",  # unclosed
        "/users/{id}}",
        "/users/{1id}",  # not an identifier
        "/x/{a}-{a}",  # the same name twice in a segment
        "/x/{a}/{a}",  # the same name twice in the template
    ],
)
def test_bad_template_is_a_value_error(template: str) -> None:
    router = Router()
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        router.get(template, ok("bad"))
    assert router.routes == []


# --- dispatch ----------------------------------------------------------------------------


async def test_dispatch_runs_the_handler_and_sets_params_and_route() -> None:
    router = Router()
    seen: dict[str, Any] = {}

    @router.get("/users/{id:int}")
    async def user(ctx: Request) -> Response:
        seen["params"] = dict(ctx.params)
        seen["route"] = ctx.route
        return Response.json({"id": ctx.params["id"]})

    response = await router.dispatch(make_request("GET", "/users/5"))
    assert response.status == 200
    assert json.loads(response.body) == {"id": 5}
    assert seen == {"params": {"id": 5}, "route": "/users/{id:int}"}


async def test_dispatch_unknown_path_is_404() -> None:
    router = Router()
    router.get("/a", ok("a"))
    request = make_request("GET", "/b")
    response = await router.dispatch(request)
    assert response.status == 404
    assert response.content_type == "application/json"
    assert json.loads(response.body) == {"error": "Not Found", "request_id": request.id}
    assert request.route is None


async def test_dispatch_non_digits_for_an_int_parameter_is_404() -> None:
    router = Router()
    router.get("/items/{id:int}", ok("item"))
    assert (await router.dispatch(make_request("GET", "/items/abc"))).status == 404


async def test_dispatch_other_method_is_405_with_allow() -> None:
    router = Router()
    router.get("/users/{id}", ok("get"))
    router.delete("/users/{id}", ok("delete"))
    request = make_request("POST", "/users/1")
    response = await router.dispatch(request)
    assert response.status == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"
    assert json.loads(response.body) == {"error": "Method Not Allowed", "request_id": request.id}


async def test_options_asterisk_describes_the_server_and_other_methods_get_400() -> None:
    router = Router()
    router.get("/a", ok("a"))
    router.post("/b", ok("b"))
    response = await router.dispatch(make_request("OPTIONS", "*"))
    assert response.status == 204
    assert response.headers["allow"] == "GET, HEAD, OPTIONS, POST"
    assert (await router.dispatch(make_request("GET", "*"))).status == 400


async def test_int_parameter_longer_than_18_digits_does_not_match() -> None:
    router = Router()
    router.get("/items/{id:int}", ok("item"))
    assert (await router.dispatch(make_request("GET", "/items/" + "9" * 18))).status == 200
    assert (await router.dispatch(make_request("GET", "/items/" + "9" * 19))).status == 404
    assert (await router.dispatch(make_request("GET", "/items/-5"))).status == 200


async def test_dispatch_head_uses_the_get_handler() -> None:
    router = Router()
    router.get("/page", ok("page"))
    response = await router.dispatch(make_request("HEAD", "/page"))
    assert response.status == 200
    assert response.body == b"page"  # the server drops the content of a HEAD response


async def test_dispatch_options_without_handler_is_204_with_allow() -> None:
    router = Router()
    router.post("/things", ok("create"))
    router.get("/things", ok("list"))
    response = await router.dispatch(make_request("OPTIONS", "/things"))
    assert response.status == 204
    assert response.body == b""
    assert response.headers["allow"] == "GET, HEAD, OPTIONS, POST"


async def test_dispatch_options_on_an_unknown_path_is_404() -> None:
    router = Router()
    router.get("/a", ok("a"))
    assert (await router.dispatch(make_request("OPTIONS", "/b"))).status == 404


async def test_dispatch_registered_options_handler_runs() -> None:
    router = Router()
    router.get("/a", ok("get"))
    router.options("/a", ok("options"))
    response = await router.dispatch(make_request("OPTIONS", "/a"))
    assert response.status == 200
    assert response.body == b"options"


async def test_dispatch_http_error_becomes_its_status_with_request_id() -> None:
    router = Router()

    @router.get("/limited")
    async def limited(ctx: Request) -> Response:
        raise HTTPError(429, "slow down", headers={"Retry-After": "3"})

    request = make_request("GET", "/limited")
    response = await router.dispatch(request)
    assert response.status == 429
    assert response.headers["retry-after"] == "3"
    assert response.content_type == "application/json"
    assert json.loads(response.body) == {"error": "slow down", "request_id": request.id}


async def test_dispatch_http_error_without_message_uses_the_reason_phrase() -> None:
    router = Router()

    @router.get("/gone")
    async def gone(ctx: Request) -> Response:
        raise HTTPError(410)

    response = await router.dispatch(make_request("GET", "/gone"))
    assert response.status == 410
    assert json.loads(response.body)["error"] == "Gone"


async def test_dispatch_exception_goes_to_on_error() -> None:
    router = Router()
    failures: list[BaseException] = []

    @router.get("/boom")
    async def boom(ctx: Request) -> Response:
        raise RuntimeError("kaput")

    request = make_request("GET", "/boom")
    response = await router.dispatch(request)
    assert response.status == 500
    assert json.loads(response.body) == {
        "error": "Internal Server Error",
        "request_id": request.id,
    }

    def on_error(req: Request, exc: Exception) -> Response:
        failures.append(exc)
        return Response.text("custom", 500)

    router.on_error = on_error
    response = await router.dispatch(make_request("GET", "/boom"))
    assert response.body == b"custom"
    assert [str(f) for f in failures] == ["kaput"]


async def test_dispatch_coerces_the_seed_mapping() -> None:
    router = Router()

    @router.get("/seed")
    async def seed(ctx: Request) -> dict[str, Any]:
        return {"status": 201, "headers": {"X-Seed": "1"}, "body": {"created": True}}

    response = await router.dispatch(make_request("GET", "/seed"))
    assert type(response) is Response
    assert response.status == 201
    assert response.headers["x-seed"] == "1"
    assert response.content_type == "application/json"
    assert json.loads(response.body) == {"created": True}


async def test_dispatch_a_return_that_is_not_a_response_is_a_500() -> None:
    router = Router()
    failures: list[Exception] = []
    router.on_error = lambda request, exc: failures.append(exc) or Response(500)

    @router.get("/none")
    async def none(ctx: Request) -> None:
        return None

    response = await router.dispatch(make_request("GET", "/none"))
    assert response.status == 500
    assert len(failures) == 1
    assert isinstance(failures[0], TypeError)


def test_coerce_response() -> None:
    response = Response.text("x")
    assert coerce_response(response) is response
    assert coerce_response({"body": "hi"}).body == b"hi"
    with pytest.raises(TypeError, match="handler returned int"):
        coerce_response(3)


@pytest.mark.parametrize(
    ("methods", "expected"),
    [
        ({"GET"}, "GET, HEAD, OPTIONS"),
        ({"POST"}, "OPTIONS, POST"),
        ({"*"}, "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"),
    ],
)
def test_allow_field(methods: set[str], expected: str) -> None:
    assert allow_field(methods) == expected
