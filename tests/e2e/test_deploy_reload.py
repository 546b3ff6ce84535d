"""SIGHUP after a deploy: the replacement workers run the code now on disk.

The supervisor never imports the app (``nessen serve`` re-executes itself to supervise, and
a short-lived child reads the settings), so each worker imports it after it is forked.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.serving import ServeFactory, ServeProcess, base_env
from tests.e2e.test_reload import write
from tests.e2e.test_workers import Load, get, started_pids, worker_pids

pytestmark = pytest.mark.slow

SOURCE = """
import os

from nessen import Response, Runtime

runtime = Runtime()


@runtime.route.get("/pid")
async def pid(ctx):
    return Response.text(str(os.getpid()))


@runtime.route.get("/version")
async def version(ctx):
    return Response.text({version!r})
"""


def serve_release(nessen_serve: ServeFactory, folder: Path, version: str) -> ServeProcess:
    """``hot_app.py`` answering ``version`` in ``folder``, served by two workers."""
    deploy(folder, SOURCE.format(version=version))
    return nessen_serve("hot_app:runtime", "--app-dir", str(folder), env=base_env(WORKERS="2"))


def deploy(folder: Path, source: str) -> None:
    """Write the app's module as a deploy would: new content, a newer modification time."""
    write(folder, "hot_app.py", source)


def versions(served: ServeProcess, count: int = 10) -> set[str]:
    """What ``/version`` answers on ``count`` fresh connections."""
    seen = set()
    for _ in range(count):
        status, body = get(served.address, "/version")
        assert status == 200
        seen.add(body.decode())
    return seen


def test_sighup_after_a_deploy_serves_the_new_code_without_a_failed_request(
    nessen_serve: ServeFactory, tmp_path: Path
) -> None:
    served = serve_release(nessen_serve, tmp_path, "release 1")
    old = worker_pids(served, 2)
    assert versions(served) == {"release 1"}
    with Load(served.address) as load:
        load.wait_for_requests(50)
        deploy(tmp_path, SOURCE.format(version="release 2, with a longer name"))
        served.signal(signal.SIGHUP)
        for pid in old:
            served.wait_for(f"(pid {pid}) exited with status 0", timeout=60)
        load.wait_for_requests(50)
    assert versions(served) == {"release 2, with a longer name"}
    assert load.failed == []
    assert set(started_pids(served)) - old  # new workers, not the old ones reloaded
    assert served.stop() == 0


def test_a_deploy_that_does_not_import_keeps_the_old_workers_serving(
    nessen_serve: ServeFactory, tmp_path: Path
) -> None:
    served = serve_release(nessen_serve, tmp_path, "good")
    old = worker_pids(served, 2)
    deploy(tmp_path, "def broken(:\n")
    served.signal(signal.SIGHUP)
    served.wait_for("SyntaxError")  # the import error, with its traceback, in the log
    served.wait_for("failed to start", timeout=60)
    assert versions(served) == {"good"}
    assert worker_pids(served, 2) == old
    assert served.process.poll() is None
