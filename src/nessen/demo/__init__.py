"""The built-in demo app that ``nessen serve`` runs when no app is given.

``GET /`` shows the request as the server saw it and the runtime's state; ``GET
/badge/{label}/{value}.svg`` draws a status badge. Everything taken from the request is
HTML- or XML-escaped. Creating the module's ``runtime`` reads no environment: settings are
read when it starts serving.
"""

from __future__ import annotations

import hashlib
import html

from nessen.http import Request, Response
from nessen.runtime import Runtime

runtime = Runtime()
"""The demo service: ``nessen serve`` (or ``nessen serve nessen.demo:runtime``)."""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Nessen runtime</title>
<link rel="stylesheet" href="/demo.css">
</head>
<body>
<main>
<h1>Nessen runtime <span class="state state-{state_lower}">{state}</span></h1>
<p>Version {version} &middot; up {uptime} &middot; {total} requests served
 &middot; <img src="/badge/state/{state_lower}.svg" alt="state: {state}" height="20"></p>
<h2>Your request</h2>
<table>
<tr><th>Request id</th><td><code>{request_id}</code></td></tr>
<tr><th>Method</th><td><code>{method}</code></td></tr>
<tr><th>Path</th><td><code>{path}</code></td></tr>
<tr><th>Query</th><td><code>{query}</code></td></tr>
<tr><th>HTTP version</th><td><code>{http_version}</code></td></tr>
<tr><th>Client address</th><td><code>{client_ip}</code></td></tr>
</table>
<h2>Header fields</h2>
<table>
{header_rows}
</table>
<h2>Endpoints</h2>
<ul>
<li><a href="/health">/health</a> &mdash; liveness</li>
<li><a href="/ready">/ready</a> &mdash; readiness</li>
<li><a href="/api/health">/api/health</a> &mdash; state, uptime, latency percentiles</li>
<li><a href="/metrics">/metrics</a> &mdash; Prometheus metrics</li>{status_link}
<li><a href="/badge/build/passing.svg">/badge/build/passing.svg</a> &mdash; a badge</li>
</ul>
</main>
</body>
</html>
"""

_CSS = """
 body { font: 15px/1.5 system-ui, sans-serif; margin: 0; background: #f6f7f9;
        color: #1d2330; }
 main { max-width: 860px; margin: 0 auto; padding: 24px 16px; }
 h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
 .state { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff;
          background: #c62828; font-weight: 600; font-size: 13px; }
 .state-ready { background: #2e7d32; } .state-degraded { background: #ef6c00; }
 .state-draining { background: #6d4c41; }
 table { border-collapse: collapse; width: 100%; background: #fff; font-size: 14px; }
 td, th { border-bottom: 1px solid #e3e6eb; padding: 6px 10px; text-align: left;
          vertical-align: top; word-break: break-all; }
 th { width: 30%; font-weight: 600; color: #4a5366; }
 code { font: 13px ui-monospace, monospace; }
 a { color: #2456c7; }
"""
"""The page's style sheet, served from the same origin so the default
``Content-Security-Policy: default-src 'self'`` allows it (an inline <style> would be blocked)."""


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"


@runtime.route.get("/")
async def home(ctx: Request) -> Response:
    """The demo page: this request's details and the runtime's state, all escaped."""
    esc = html.escape
    header_rows = "\n".join(
        f"<tr><th><code>{esc(name)}</code></th><td><code>{esc(value)}</code></td></tr>"
        for name, value in ctx.headers.multi_items()
    )
    state = str(runtime.state)
    page = _PAGE.format(
        state=esc(state),
        state_lower=esc(state.lower()),
        version=esc(runtime.version),
        uptime=_duration(runtime.lifecycle.uptime),
        total=runtime.stats.total,
        request_id=esc(ctx.id),
        method=esc(ctx.method),
        path=esc(ctx.path),
        query=esc(ctx.query_string.decode("latin-1")) or "&mdash;",
        http_version=esc(ctx.http_version),
        client_ip=esc(ctx.client_ip),
        header_rows=header_rows,
        status_link=(
            f'\n<li><a href="{esc(runtime.status_path)}">{esc(runtime.status_path)}</a> '
            "&mdash; live status page</li>"
            if runtime.status_path
            else ""
        ),
    )
    return Response.html(page)


@runtime.route.get("/demo.css")
async def stylesheet(ctx: Request) -> Response:
    """The demo page's CSS."""
    return Response(
        200, _CSS, content_type="text/css; charset=utf-8", headers={"Cache-Control": "max-age=300"}
    )


@runtime.route.get("/{path:path}")
async def not_found_page(ctx: Request) -> Response:
    """Any other path: a 404 page that names the (escaped) path."""
    body = (
        "<!doctype html><meta charset=utf-8><title>Not Found</title>"
        f"<h1>Not Found</h1><p>No route for <code>{html.escape(ctx.path)}</code>.</p>"
        '<p><a href="/">Back to the demo page</a></p>'
    )
    return Response.html(body, 404)


_COLOURS = {
    "passing": "#4c1",
    "ready": "#4c1",
    "ok": "#4c1",
    "failing": "#e05d44",
    "draining": "#fe7d37",
    "degraded": "#dfb317",
}
_CHAR_WIDTH = 7  # px per character in 11 px Verdana, close enough for a badge


@runtime.route.get("/badge/{label}/{value}.svg")
async def badge(ctx: Request) -> Response:
    """An SVG status badge; label and value are XML-escaped and cut to 40 characters."""
    label = str(ctx.params["label"])[:40]
    value = str(ctx.params["value"])[:40]
    left = 10 + _CHAR_WIDTH * len(label)
    right = 10 + _CHAR_WIDTH * len(value)
    colour = _COLOURS.get(value.lower(), "#007ec6")
    esc = html.escape
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + right}" height="20" '
        f'role="img" aria-label="{esc(label)}: {esc(value)}">'
        f'<rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        '<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" '
        'text-anchor="middle">'
        f'<text x="{left / 2}" y="14">{esc(label)}</text>'
        f'<text x="{left + right / 2}" y="14">{esc(value)}</text>'
        "</g></svg>"
    )
    body = svg.encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
    # A 304 carries the Cache-Control the 200 would have (RFC 9110 §15.4.5).
    cached = {"ETag": etag, "Cache-Control": "public, max-age=300"}
    if ctx.headers.get("if-none-match") == etag:
        return Response(304, headers=cached)
    return Response(200, body, content_type="image/svg+xml", headers=cached)
