"""The live status page: ``GET /_nessen/status`` with its script and style sheet.

A self-contained page (no CDN, no web fonts, works offline) that polls ``/api/health``
once a second and draws the last two minutes of request rate, p50/p95/p99 latency, active
requests, rejections and lifecycle state as inline SVG. With several workers it shows the
service (``/api/health``'s ``aggregate``) and a table of the workers (its ``workers``). Its
script and style sheet are served from ``<path>.js`` and ``<path>.css`` rather than
inlined, so the page works under ``Content-Security-Policy: default-src 'self'``.

The runtime serves it outside production unless told otherwise (``Runtime(status_page=...)``).
The three files are read from the package when the routes are installed, not at import.
"""

from __future__ import annotations

from nessen.app.routing import Router
from nessen.http import Request, Response
from nessen.observability.admin import OpsGuard, guarded

STATUS_PATH = "/_nessen/status"
"""Default path of the status page."""

_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def status_paths(path: str = STATUS_PATH) -> tuple[str, str, str]:
    """Return the page, script and style-sheet paths for a page at ``path``."""
    return path, f"{path}.js", f"{path}.css"


def install_status_routes(
    router: Router,
    path: str = STATUS_PATH,
    health_path: str = "/api/health",
    *,
    guard: OpsGuard | None = None,
) -> None:
    """Register ``GET path`` (the page), ``GET path.js`` and ``GET path.css`` on ``router``.

    Args:
        router: Where to register them.
        path: The page's path, e.g. ``"/_nessen/status"``.
        health_path: What the page polls: the ``/api/health`` JSON.
        guard: Decides who gets the three files (see :mod:`nessen.observability.admin`);
            ``None``: every client.

    Raises:
        ValueError: ``path`` does not start with ``/`` or ends with ``/``, or a route is
            already taken.
    """
    if not path.startswith("/") or path.endswith("/") or "{" in path or ":" in path:
        raise ValueError(f"status page path {path!r}: must start with / and have no parameters")
    import html  # here, not at import: most servers (production) show no page
    from importlib import resources

    page_path, script_path, style_path = status_paths(path)
    folder = resources.files("nessen.observability").joinpath("static")
    page = (
        folder.joinpath("status.html")
        .read_text(encoding="utf-8")
        .replace("__CSS__", html.escape(style_path))
        .replace("__JS__", html.escape(script_path))
        .replace("__HEALTH__", html.escape(health_path))
        .encode()
    )
    script = folder.joinpath("status.js").read_bytes()
    style = folder.joinpath("status.css").read_bytes()

    async def status_page(request: Request) -> Response:
        return Response(200, page, content_type="text/html; charset=utf-8", headers=_HEADERS)

    async def status_script(request: Request) -> Response:
        return Response(
            200, script, content_type="text/javascript; charset=utf-8", headers=_HEADERS
        )

    async def status_style(request: Request) -> Response:
        return Response(200, style, content_type="text/css; charset=utf-8", headers=_HEADERS)

    router.get(page_path, guarded(status_page, guard))
    router.get(script_path, guarded(status_script, guard))
    router.get(style_path, guarded(status_style, guard))
