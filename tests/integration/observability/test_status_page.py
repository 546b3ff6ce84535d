"""The status page's three files, where and when they are served (the browser test draws it)."""

from __future__ import annotations

import re

import httpx
import pytest

from nessen import Runtime
from nessen.app import Router
from nessen.observability import install_status_routes
from tests.conftest import ServeFactory


def fetch(url: str) -> httpx.Response:
    return httpx.get(url, trust_env=False)


def test_the_page_script_and_style_sheet_are_served_outside_production(
    serve: ServeFactory,
) -> None:
    runtime = Runtime(access_log=False)
    server = serve(runtime, env="development")
    assert runtime.status_path == "/_nessen/status"
    page = fetch(server.url + "/_nessen/status")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<link rel="stylesheet" href="/_nessen/status.css">' in page.text
    assert '<script src="/_nessen/status.js" defer></script>' in page.text
    assert 'data-health="/api/health"' in page.text
    script = fetch(server.url + "/_nessen/status.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "fetch(HEALTH" in script.text
    style = fetch(server.url + "/_nessen/status.css")
    assert style.headers["content-type"] == "text/css; charset=utf-8"


def test_the_page_is_self_contained_and_needs_no_inline_script_or_style(
    serve: ServeFactory,
) -> None:
    """Works offline and under ``Content-Security-Policy: default-src 'self'``."""
    server = serve(Runtime(access_log=False), env="development")
    page = fetch(server.url + "/_nessen/status").text
    script = fetch(server.url + "/_nessen/status.js").text
    style = fetch(server.url + "/_nessen/status.css").text
    for text in (page, script, style):
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text
        assert "@import" not in text
        assert "url(" not in text
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/_nessen/status.js" defer>']
    assert "<style" not in page
    assert " style=" not in page
    assert re.search(r"\son[a-z]+=", page) is None  # no inline event handlers
    assert ".innerHTML" not in script
    assert "eval(" not in script
    assert 'setAttribute("style"' not in script


def test_production_serves_no_status_page_unless_asked(serve: ServeFactory) -> None:
    default = Runtime(access_log=False)
    server = serve(default, env="production")
    assert fetch(server.url + "/_nessen/status").status_code == 404
    assert fetch(server.url + "/_nessen/status.js").status_code == 404
    assert default.status_path is None

    enabled = Runtime(access_log=False, status_page=True)
    server = serve(enabled, env="production")
    assert fetch(server.url + "/_nessen/status").status_code == 200


def test_the_page_can_be_moved_or_switched_off(serve: ServeFactory) -> None:
    moved = serve(Runtime(access_log=False, status_path="/ops/dashboard"), env="development")
    assert fetch(moved.url + "/ops/dashboard").status_code == 200
    assert fetch(moved.url + "/ops/dashboard.js").status_code == 200
    assert fetch(moved.url + "/_nessen/status").status_code == 404
    off = serve(Runtime(access_log=False, status_page=False), env="development")
    assert fetch(off.url + "/_nessen/status").status_code == 404


def test_the_page_needs_the_health_endpoints_it_polls() -> None:
    with pytest.raises(ValueError, match="status_page=True needs health_endpoints=True"):
        Runtime(health_endpoints=False, status_page=True)
    assert Runtime(health_endpoints=False)._status_page is False


@pytest.mark.parametrize("path", ["status", "/status/", "/status/{id}", "/:name"])
def test_a_status_path_must_be_a_plain_absolute_path(path: str) -> None:
    with pytest.raises(ValueError, match="must start with / and have no parameters"):
        install_status_routes(Router(), path)
