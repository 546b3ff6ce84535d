from __future__ import annotations

from nessen.app.pipeline import Middleware, Next, compose
from nessen.http import Request, Response


def make_request() -> Request:
    return Request("GET", b"/", "/")


def recording(name: str, log: list[str]) -> Middleware:
    async def middleware(ctx: Request, next: Next) -> Response:
        log.append(f"{name} in")
        response = await next()
        log.append(f"{name} out")
        response.headers.add("X-Trace", name)
        return response

    return middleware


async def test_first_middleware_is_outermost() -> None:
    log: list[str] = []

    async def handler(ctx: Request) -> Response:
        log.append("handler")
        return Response.text("ok")

    pipeline = compose(handler, [recording("a", log), recording("b", log), recording("c", log)])
    response = await pipeline(make_request())
    assert log == ["a in", "b in", "c in", "handler", "c out", "b out", "a out"]
    assert response.headers.getall("x-trace") == ["c", "b", "a"]
    assert response.body == b"ok"


async def test_every_layer_sees_the_same_request() -> None:
    seen: list[Request] = []

    async def remember(ctx: Request, next: Next) -> Response:
        seen.append(ctx)
        ctx.state["depth"] = ctx.state.get("depth", 0) + 1
        return await next()

    async def handler(ctx: Request) -> Response:
        seen.append(ctx)
        return Response.json(ctx.state)

    request = make_request()
    response = await compose(handler, [remember, remember])(request)
    assert seen == [request, request, request]
    assert response.body == b'{"depth":2}'


async def test_a_middleware_that_does_not_call_next_answers_early() -> None:
    log: list[str] = []
    called: list[str] = []

    async def deny(ctx: Request, next: Next) -> Response:
        log.append("deny")
        return Response.text("no", 403)

    async def handler(ctx: Request) -> Response:
        called.append("handler")
        return Response.text("ok")

    pipeline = compose(handler, [recording("outer", log), deny, recording("inner", log)])
    response = await pipeline(make_request())
    assert response.status == 403
    assert response.body == b"no"
    assert log == ["outer in", "deny", "outer out"]
    assert called == []


async def test_outer_middleware_can_replace_the_response() -> None:
    async def wrap(ctx: Request, next: Next) -> Response:
        inner = await next()
        return Response.text(f"wrapped {inner.body.decode()}", inner.status)

    async def handler(ctx: Request) -> Response:
        return Response.text("body", 201)

    response = await compose(handler, [wrap])(make_request())
    assert (response.status, response.body) == (201, b"wrapped body")


def test_empty_pipeline_is_the_handler_itself() -> None:
    async def handler(ctx: Request) -> Response:
        return Response()

    assert compose(handler, []) is handler
    assert compose(handler, ()) is handler
