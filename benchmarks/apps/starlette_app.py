"""Bare Starlette (no middleware): routing and its response classes, stdlib json as shipped."""

from __future__ import annotations

from benchmarks.apps import payloads
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("OK")


async def api_data(request: Request) -> JSONResponse:
    return JSONResponse(payloads.data())


async def user(request: Request) -> JSONResponse:
    return JSONResponse(payloads.user(request.path_params["id"]))


async def json16k(request: Request) -> JSONResponse:
    return JSONResponse(payloads.ITEMS)


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/api/data", api_data),
        Route("/users/{id}", user),
        Route("/json16k", json16k),
        Route("/echo", echo, methods=["POST"]),
    ]
)
