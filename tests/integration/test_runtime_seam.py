"""The public seam another server serves a Runtime through: prepare, begin_serving, stop,
delegate and stream_bodies (what the ASGI host and the Runtime under an ASGI server use)."""

from __future__ import annotations

import json

import pytest

from nessen import Config, Request, Response, Runtime, State
from nessen.runtime import StartupError


def get(path: str) -> Request:
    return Request("GET", path.encode(), path, client=("127.0.0.1", 5000))


async def test_prepare_runs_the_hooks_and_composes_the_handler_without_binding() -> None:
    runtime = Runtime(Config())
    ran: list[str] = []

    @runtime.route.get("/hi")
    async def hi(ctx: Request) -> Response:
        return Response.text("hi")

    @runtime.on_startup
    async def opened() -> None:
        ran.append("startup")

    @runtime.on_shutdown
    async def closed() -> None:
        ran.append("shutdown")

    prepared = await runtime.prepare()
    assert ran == ["startup"]
    assert runtime.serving
    assert runtime.server is None  # nothing bound
    assert runtime.state == State.STARTING
    assert not prepared.stream_bodies
    assert {"/api/health", "/metrics"} <= prepared.config.probe_paths
    response = await prepared.handler(get("/hi"))
    assert response.body == b"hi"
    assert response.has_field("x-request-id")  # the built-in middleware is in front
    prepared.events.request_finished(get("/hi"), 200, 2, 0.001)
    assert runtime.stats.total == 1
    runtime.begin_serving()
    assert runtime.state == State.READY
    result = await runtime.stop()
    assert result.clean
    assert ran == ["startup", "shutdown"]
    assert runtime.state == State.STOPPING
    assert not runtime.serving


async def test_prepare_twice_and_begin_serving_unprepared_are_refused() -> None:
    runtime = Runtime(Config())
    with pytest.raises(RuntimeError, match="prepare"):
        runtime.begin_serving()
    await runtime.prepare()
    with pytest.raises(RuntimeError, match="already serving"):
        await runtime.prepare()
    with pytest.raises(RuntimeError, match="already serving"):
        await runtime.start()
    await runtime.stop()


async def test_a_failing_startup_hook_fails_prepare_once_and_stops() -> None:
    runtime = Runtime(Config())

    @runtime.on_startup
    async def connect() -> None:
        raise ValueError("database unreachable")

    with pytest.raises(StartupError, match="startup hook connect failed: ValueError: database"):
        await runtime.prepare()
    assert runtime.state == State.STOPPING


async def test_prepare_without_hooks_skips_them() -> None:
    runtime = Runtime(Config())
    ran: list[str] = []

    @runtime.on_startup
    async def opened() -> None:
        ran.append("startup")

    await runtime.prepare(run_hooks=False)
    assert ran == []
    await runtime.stop()


async def test_delegate_sends_every_other_path_to_its_handler() -> None:
    seen: list[str] = []

    async def other(request: Request) -> Response:
        seen.append(request.path)
        return Response.text("other")

    runtime = Runtime(Config(), stream_bodies=True)
    assert runtime.stream_bodies
    runtime.delegate(other, native_paths={"/health", "/api/health"})
    prepared = await runtime.prepare()
    assert prepared.stream_bodies
    assert (await prepared.handler(get("/health"))).body == b"OK"
    health = await prepared.handler(get("/api/health"))
    assert json.loads(health.body)["state"] == "STARTING"
    assert (await prepared.handler(get("/metrics"))).body == b"other"  # not native
    assert (await prepared.handler(get("/anything"))).body == b"other"
    assert seen == ["/metrics", "/anything"]
    with pytest.raises(RuntimeError, match="running runtime"):
        runtime.delegate(None)
    await runtime.stop()


async def test_with_an_admin_listener_its_paths_are_the_delegate_s_on_the_main_port() -> None:
    async def other(request: Request) -> Response:
        return Response.text("other:" + request.path)

    runtime = Runtime(Config(admin_port=0))
    runtime.delegate(other, native_paths={"/health", "/api/health", "/metrics"})
    prepared = await runtime.prepare()
    assert (await prepared.handler(get("/health"))).body == b"OK"
    assert (await prepared.handler(get("/api/health"))).body == b"other:/api/health"
    assert (await prepared.handler(get("/metrics"))).body == b"other:/metrics"
    await runtime.stop()


async def test_undoing_the_delegation_serves_every_path_natively() -> None:
    async def other(request: Request) -> Response:
        return Response.text("other")

    runtime = Runtime(Config())
    runtime.delegate(other, native_paths={"/health"})
    runtime.delegate(None)
    prepared = await runtime.prepare()
    assert (await prepared.handler(get("/nowhere"))).status == 404
    await runtime.stop()
