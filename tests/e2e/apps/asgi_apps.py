"""Small raw ASGI apps for the ``nessen serve`` end-to-end tests."""

from __future__ import annotations

from typing import Any


async def failing_startup(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Its lifespan startup fails: ``nessen serve`` must exit 3 without listening."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "cannot reach the database"})
        return
    raise AssertionError("never served")


class SyncCallable:
    """Callable, but not ASGI 3 (``__call__`` is not a coroutine function)."""

    def __call__(self, scope: Any) -> None:
        return None


not_asgi = SyncCallable()


async def raising_startup(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Its lifespan startup raises after taking the startup event (a failure, not "no
    lifespan support")."""
    if scope["type"] == "lifespan":
        await receive()
        raise ConnectionError("cannot reach the database")
    raise AssertionError("never served")


async def _ok(send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


async def no_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """No lifespan support (as Django's ASGI handler: it raises on any other scope)."""
    if scope["type"] != "http":
        raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}")
    await _ok(send)


async def startup_fails_but_serves(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Its lifespan startup fails; requests are answered 200 (``--lifespan off`` serves it)."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "cannot reach the database"})
        return
    await _ok(send)
