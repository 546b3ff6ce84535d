"""deploy/nginx/nessen.conf: valid for nginx, and its timeouts and limits agree with Nessen's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nessen.config import Config
from tests.deploy.manifests import NGINX_CONF, nginx_bytes, nginx_directives, nginx_seconds

DEFAULTS = Config()
"""The conf is written for Nessen's defaults (its header says which variables matter)."""


def one(name: str) -> str:
    (value,) = set(nginx_directives()[name])
    return value


def test_idle_upstream_connections_are_closed_by_nginx_first() -> None:
    # nginx must close an idle upstream connection before Nessen's IDLE_TIMEOUT does, or it
    # may send a request on a connection Nessen is closing (a 502); see the conf's comment.
    assert int(one("keepalive")) > 0
    assert nginx_seconds(one("keepalive_timeout")) < DEFAULTS.idle_timeout
    assert one("proxy_http_version") == "1.1"
    assert 'Connection ""' in nginx_directives()["proxy_set_header"]


def test_nginx_waits_longer_than_the_request_timeout() -> None:
    # Nessen's 503 + Retry-After at REQUEST_TIMEOUT reaches the client, not nginx's 504.
    assert nginx_seconds(one("proxy_read_timeout")) > DEFAULTS.request_timeout
    # A retry on another server happens only before a handler could have timed out.
    assert nginx_seconds(one("proxy_next_upstream_timeout")) < DEFAULTS.request_timeout


def test_edge_limits_match_nessens() -> None:
    assert nginx_bytes(one("client_max_body_size")) == DEFAULTS.max_body_bytes
    assert nginx_seconds(one("client_header_timeout")) == DEFAULTS.headers_timeout
    _count, size = one("large_client_header_buffers").split()
    assert nginx_bytes(size) >= DEFAULTS.max_header_bytes  # Nessen answers 431, not nginx 400


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (Debian: nginx)")
def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    # The conf is an http {} include, as in /etc/nginx/conf.d/; wrap it in a minimal main
    # config whose pid file, logs and temp paths are in tmp_path.
    main = tmp_path / "nginx.conf"
    temp = "\n".join(
        f"  {kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main.write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n{temp}\n  include {NGINX_CONF};\n}}\n"
    )
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(main), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
