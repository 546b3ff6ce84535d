"""A FastAPI app whose lifespan fails: Starlette answers ``lifespan.startup.failed`` with
the traceback's text, then raises the exception again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    raise ConnectionError("cannot reach the database")
    yield  # pragma: no cover - never reached


app = FastAPI(lifespan=lifespan)
