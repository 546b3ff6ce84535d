"""FastAPI (no middleware), as its tutorial writes it: typed path parameter, dict returns."""

from __future__ import annotations

from typing import Any

from benchmarks.apps import payloads
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

app = FastAPI()


@app.get("/health", response_class=PlainTextResponse)
async def health() -> str:
    return "OK"


@app.get("/api/data")
async def api_data() -> dict[str, Any]:
    return payloads.data()


@app.get("/users/{user_id}")
async def user(user_id: str) -> dict[str, str]:
    return payloads.user(user_id)


@app.get("/json16k")
async def json16k() -> list[dict[str, Any]]:
    return payloads.ITEMS


@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")
