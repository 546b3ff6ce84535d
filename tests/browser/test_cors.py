"""CORS in headless Chromium: a page on one origin calls an API on another.

The browser itself enforces CORS, so these tests show what an app's users would see: a
JSON ``fetch`` (whose ``Content-Type: application/json`` makes the browser send a
preflight naming ``content-type``) succeeds, and a server-made answer (413 for content
over ``max_body_bytes``) reaches the script with its real status instead of a CORS error.
"""

from __future__ import annotations

from pathlib import Path

from nessen import Request, Response, Runtime
from tests.browser.test_status_page import browse, chromium, out_text  # noqa: F401 (fixture)
from tests.conftest import ServeFactory

PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
const out = document.getElementById("out");
fetch("{api}/items", {{
  method: "POST",
  headers: {{"Content-Type": "application/json"}},
  body: JSON.stringify({{"text": "{text}"}}),
}})
  .then(r => r.text().then(t => {{ out.textContent = "status " + r.status + " " + t; }}))
  .catch(e => {{ out.textContent = "failed " + e; }});
</script></body></html>"""


def _api() -> Runtime:
    runtime = Runtime(middleware={"cors": {"allow_origins": ["*"]}}, access_log=False)

    @runtime.route.post("/items")
    async def items(ctx: Request) -> Response:
        return Response.json({"got": ctx.json()["text"]})

    return runtime


def _page(api_url: str, text: str) -> Runtime:
    runtime = Runtime(middleware=None, health_endpoints=False, metrics=False)

    @runtime.route.get("/")
    async def page(ctx: Request) -> Response:
        body = PAGE.format(api=api_url, text=text)
        return Response(200, body.encode(), content_type="text/html; charset=utf-8")

    return runtime


def test_a_cross_origin_json_post_passes_its_preflight(
    serve: ServeFactory,
    chromium: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    api = serve(_api())
    page = serve(_page(api.url, "hello"))  # another port: another origin
    dom = browse(chromium, tmp_path, page.url + "/", "--dump-dom", budget_ms=3000)
    assert out_text(dom) == 'status 200 {"got":"hello"}'


def test_a_server_made_413_reaches_the_script_with_its_status(
    serve: ServeFactory,
    chromium: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    api = serve(_api(), max_body_bytes=64)
    page = serve(_page(api.url, "x" * 200))
    dom = browse(chromium, tmp_path, page.url + "/", "--dump-dom", budget_ms=3000)
    result = out_text(dom)
    assert result.startswith("status 413 "), result
    assert '"reason":"body_too_large"' in result
