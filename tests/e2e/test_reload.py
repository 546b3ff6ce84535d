"""``nessen serve --reload``: the development loop restarts the server on a code change."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.serving import ServeFactory, ServeProcess, base_env, run_nessen
from tests.e2e.test_workers import get

pytestmark = pytest.mark.slow

SOURCE = """
from nessen import Response, Runtime

runtime = Runtime()


@runtime.route.get("/version")
async def version(ctx):
    return Response.text({version!r})
"""


def write(folder: Path, name: str, text: str) -> None:
    path = folder / name
    stamp = path.stat().st_mtime + 10 if path.exists() else time.time()
    path.write_text(text)
    os.utime(path, (stamp, stamp))  # a rewrite within the same second is still new code


def listening_lines(served: ServeProcess) -> int:
    return served.stderr.count("Nessen running on http://")


def wait_for_restart(served: ServeProcess, before: int) -> None:
    """Wait for the server started after a change to be listening (its ready line)."""
    served.wait_for("changed: restarting the server", timeout=30)
    served.wait_for_line(lambda _: listening_lines(served) > before, timeout=30)
    ready = served.stderr.rsplit("Nessen running on http://", 1)[1]
    served.port = int(ready.split(" ", 1)[0].rsplit(":", 1)[1])  # PORT=0: a new port


def version(served: ServeProcess) -> str:
    status, body = get(served.address, "/version")
    assert status == 200
    return body.decode()


def serve_reloading(nessen_serve: ServeFactory, folder: Path, *flags: str) -> ServeProcess:
    """``hot_app.py`` (version "one") in ``folder``, served with ``--reload`` and ``flags``."""
    write(folder, "hot_app.py", SOURCE.format(version="one"))
    return nessen_serve(
        "hot_app:runtime",
        "--app-dir",
        str(folder),
        "--reload",
        *flags,
        env=base_env(NESSEN_ENV="development"),
    )


def test_a_code_change_restarts_the_server_and_a_broken_import_waits_for_a_fix(
    nessen_serve: ServeFactory, tmp_path: Path
) -> None:
    served = serve_reloading(nessen_serve, tmp_path)
    assert version(served) == "one"
    before = listening_lines(served)
    write(tmp_path, "hot_app.py", SOURCE.format(version="two"))
    wait_for_restart(served, before)
    assert version(served) == "two"
    write(tmp_path, "hot_app.py", "def broken(:\n")
    served.wait_for("SyntaxError", timeout=30)  # the import error, with its traceback
    served.wait_for("waiting for a change to start it again", timeout=30)
    assert served.process.poll() is None  # the reloader stays up
    before = listening_lines(served)
    write(tmp_path, "hot_app.py", SOURCE.format(version="three"))
    wait_for_restart(served, before)
    assert version(served) == "three"
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert "DRAINING -> STOPPING" in served.stderr  # the server was stopped, not killed


def test_excluded_and_not_included_files_do_not_restart(
    nessen_serve: ServeFactory, tmp_path: Path
) -> None:
    served = serve_reloading(
        nessen_serve,
        tmp_path,
        "--reload-include",
        "*.html",
        "--reload-exclude",
        "scratch_*.py",
    )
    before = listening_lines(served)
    write(tmp_path, "notes.txt", "not watched\n")
    write(tmp_path, "scratch_1.py", "x = 1\n")
    write(tmp_path, "page.html", "<p>watched</p>\n")  # this one restarts it ...
    wait_for_restart(served, before)
    changed = [line for line in served.lines if "changed: restarting" in line]
    assert len(changed) == 1  # ... and only this one
    assert "page.html" in changed[0]
    assert "notes.txt" not in changed[0]
    assert "scratch_1.py" not in changed[0]


def test_reload_is_refused_in_production() -> None:
    result = run_nessen("serve", "tests.e2e.apps.sample:runtime", "--reload")
    assert result.returncode == 2
    assert "--reload is for development" in result.stderr
