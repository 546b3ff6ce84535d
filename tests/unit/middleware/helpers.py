"""Requests, handlers and a fake clock for calling middleware directly (no sockets)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from nessen.app.pipeline import Middleware, compose
from nessen.http import Request, Response
from nessen.http.forwarded import ProxyTrust

Handler = Callable[[Request], Awaitable[Response]]


class FakeClock:
    """A clock that moves only when told: ``clock()`` returns ``now``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_request(
    method: str = "GET",
    target: str = "/",
    headers: Sequence[tuple[str, str]] = (),
    *,
    body: bytes = b"",
    client: str = "192.0.2.10",
    proxy: ProxyTrust | None = None,
    scheme: str = "http",
) -> Request:
    """A request as the server builds it (lower-case raw header names, query split off)."""
    path, _, query = target.partition("?")
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    return Request(
        method,
        target.encode(),
        path,
        query.encode(),
        raw,
        body=body,
        client=(client, 40000),
        proxy=proxy,
        scheme=scheme,
    )


def responding(response_factory: Callable[[], Response]) -> Handler:
    """A handler that returns a fresh ``response_factory()`` and counts its calls."""
    calls = [0]

    async def handler(request: Request) -> Response:
        calls[0] += 1
        return response_factory()

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


async def run(
    middleware: Middleware | Sequence[Middleware],
    request: Request,
    handler: Handler | None = None,
    *,
    duration: float = 0.0,
) -> Response:
    """Send ``request`` through ``middleware`` (outermost first) to ``handler``.

    A buffered response is then finished as the server would once it is written whole:
    ``request.on_finished`` (if set) gets its status, its content length (0 for HEAD, 204
    and 304) and ``duration``. A streamed one is left to the test.
    """
    chain = [middleware] if callable(middleware) else list(middleware)
    inner = handler if handler is not None else responding(lambda: Response.text("ok"))
    response = await compose(inner, chain)(request)
    if response.stream is None:
        empty = request.method == "HEAD" or response.status in (204, 304)
        finish(request, response, response.status, 0 if empty else len(response.body), duration)
    return response


def finish(
    request: Request,
    response: Response | None,
    status: int,
    sent: int,
    duration: float = 0.0,
    outcome: str | None = None,
) -> None:
    """Call ``request.on_finished`` once, as the server does when the response is over."""
    hook = request.on_finished
    if hook is not None:
        request.on_finished = None
        hook(request, response, status, sent, outcome, duration)


def text_of(size: int) -> str:
    """Compressible text of ``size`` characters."""
    base = "the quick brown fox jumps over the lazy dog. "
    return (base * (size // len(base) + 1))[:size]
