"""``nessen serve --reload``: restart the server when the code changes (development only).

The reloader runs ``nessen serve`` (the same arguments, without the reload flags) as a
child process and watches folders with ``watchfiles``. On a change it stops the child
(SIGTERM: the server drains as on any stop; SIGKILL past ``STOP_GRACE`` seconds) and starts
a new one. A child that exits on its own (its app failed to import: the traceback is on
stderr) is not restarted until the next change, and the reloader stays up. SIGINT or
SIGTERM stop the child and the reloader.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STOP_GRACE = 10.0
"""Seconds a child has to exit after SIGTERM before it is killed."""

REFUSED_IN_PRODUCTION = (
    "nessen: --reload is for development (NESSEN_ENV=development or test): in production, "
    "deploy the new code and send SIGHUP to the supervisor"
)

_VALUED = ("--reload-dir", "--reload-include", "--reload-exclude")


def child_arguments(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--reload`` and its ``--reload-dir/include/exclude VALUE`` options."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--reload":
            continue
        if arg in _VALUED:
            skip = True
            continue
        if arg.startswith(tuple(f"{name}=" for name in _VALUED)):
            continue
        out.append(arg)
    return out


class _Filter:
    """Which changed files restart the server: ``includes`` patterns, less ``excludes``.

    Patterns match the file name (``*.py``, ``*.html``); folders such as ``.git``,
    ``__pycache__`` and ``.venv`` are never watched (watchfiles' default filter).
    """

    def __init__(self, includes: Sequence[str], excludes: Sequence[str]) -> None:
        from watchfiles import DefaultFilter

        self._default = DefaultFilter()
        self.includes = tuple(includes)
        self.excludes = tuple(excludes)

    def __call__(self, change: Any, path: str) -> bool:
        if not self._default(change, path):
            return False
        name = Path(path).name
        if any(fnmatch.fnmatch(name, pattern) for pattern in self.excludes):
            return False
        return any(fnmatch.fnmatch(name, pattern) for pattern in self.includes)


def run_reloader(
    argv: Sequence[str],
    dirs: Sequence[str],
    includes: Sequence[str] = ("*.py",),
    excludes: Sequence[str] = (),
) -> int:
    """Serve ``nessen ARGV`` in a child process, restarted whenever a watched file changes.

    Args:
        argv: The ``nessen`` command line (``serve ...``); the reload flags are removed.
        dirs: Folders to watch, recursively.
        includes: File name patterns whose changes restart the server.
        excludes: File name patterns whose changes are ignored.

    Returns:
        0 after SIGINT or SIGTERM; 2 when ``watchfiles`` is not installed.
    """
    try:
        from watchfiles import watch
    except ImportError:
        print(
            "nessen: --reload needs watchfiles (pip install watchfiles: nessen's reload extra)",
            file=sys.stderr,
        )
        return 2
    command = [sys.executable, "-m", "nessen", *child_arguments(argv)]
    stop = threading.Event()
    child: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    watched = [str(Path(folder).resolve()) for folder in dirs]
    _say(f"watching {', '.join(watched)} ({', '.join(includes)}); the server restarts on a change")
    try:
        child.append(_start(command))
        for changes in watch(
            *watched,
            watch_filter=_Filter(includes, excludes),
            stop_event=stop,
            rust_timeout=500,
            yield_on_timeout=False,
        ):
            names = sorted({Path(path).name for _, path in changes})
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            _say(f"{shown} changed: restarting the server")
            _stop(child.pop())
            child.append(_start(command))
    finally:
        if child:
            _stop(child.pop())
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    # Its own session: Ctrl-C reaches the reloader alone, which stops the server with one
    # SIGTERM (two signals would cut the server's drain short).
    process = subprocess.Popen(command, start_new_session=True)
    watcher = threading.Thread(target=_report_exit, args=(process,), daemon=True)
    watcher.start()
    return process


def _report_exit(process: subprocess.Popen[bytes]) -> None:
    """Say when a child ends on its own (not stopped by the reloader): it waits for a change."""
    status = process.wait()
    if not getattr(process, "stopped_by_reloader", False):
        _say(f"the server exited with status {status}; waiting for a change to start it again")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.stopped_by_reloader = True  # type: ignore[attr-defined]
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _say(text: str) -> None:
    print(f"nessen reloader ({os.getpid()}): {text}", file=sys.stderr, flush=True)
