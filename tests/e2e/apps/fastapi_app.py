"""A real FastAPI app for the ASGI tests and the benchmark (a test dependency only).

Its lifespan opens a resource (a ``Resource`` object standing for a connection pool),
yields it as lifespan state, and closes it at shutdown; both moments are printed to
stderr, so a test reading the server's stderr sees them.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel


class Resource:
    """What a lifespan typically opens: here, just a flag and a counter."""

    def __init__(self) -> None:
        self.open = True
        self.uses = 0

    def close(self) -> None:
        self.open = False


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    resource = Resource()
    print("fastapi-app: lifespan startup, resource opened", file=sys.stderr, flush=True)
    yield {"resource": resource}
    resource.close()
    print(
        f"fastapi-app: lifespan shutdown, resource closed after {resource.uses} uses",
        file=sys.stderr,
        flush=True,
    )


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    quantity: int = 1


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item) -> dict[str, Any]:
    return {"name": item.name, "total": item.price * item.quantity}


@app.get("/stream")
async def stream(n: int = 3) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"part {i}\n".encode()

    return StreamingResponse(parts(), media_type="text/plain")


@app.get("/resource")
async def resource(request: Request) -> dict[str, Any]:
    res: Resource = request.state.resource
    res.uses += 1
    return {"open": res.open, "uses": res.uses}


@app.post("/upload")
async def upload(request: Request) -> dict[str, Any]:
    size = 0
    parts = 0
    async for chunk in request.stream():
        if chunk:
            parts += 1
            size += len(chunk)
    return {"bytes": size, "parts": parts}


@app.get("/plain")
async def plain() -> PlainTextResponse:
    return PlainTextResponse("hello")


@app.get("/json")
async def json() -> dict[str, Any]:
    return {"message": "hello", "items": list(range(10))}
