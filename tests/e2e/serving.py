"""Run ``nessen serve`` as a subprocess and follow its stderr."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the subprocess's working directory, so ``tests.e2e.apps`` imports."""
START_TIMEOUT = 20.0
EXIT_TIMEOUT = 20.0
CLOSE_GRACE = 5.0
LISTENING = re.compile(r"Nessen running on (?:(https?)://([0-9.]+):(\d+)|unix:(\S+))")
"""The ready line: ``scheme://address:port``, or ``unix:PATH`` on a Unix socket."""


def base_env(**extra: str) -> dict[str, str]:
    """A small explicit environment: PATH, loopback, a free port, plus ``extra``."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOST": "127.0.0.1", "PORT": "0"}
    # The tests send many requests from one address; the default rate limit would 429 them.
    env["RATE_LIMIT_MAX"] = "1000000000"
    # coverage's subprocess measurement (``make test``) travels in COVERAGE_* variables
    env.update((k, v) for k, v in os.environ.items() if k.startswith("COVERAGE_"))
    # a checkout tested without installing it (PYTHONPATH=src) serves its own code
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(extra)
    return env


def nessen_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nessen", *args]


def run_nessen(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``nessen ARGS`` to completion (for commands that exit at once)."""
    return subprocess.run(
        nessen_command(*args),
        env=env if env is not None else base_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class ServeProcess:
    """``nessen serve`` in a subprocess; a thread collects its stderr line by line."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        command: Sequence[str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        """Start ``nessen serve ARGS`` (or ``command``, a whole argv, e.g. a script that
        calls ``Runtime.listen``) and wait for its "listening" line."""
        self.lines: list[str] = []
        self.scheme = "http"
        self._changed = threading.Condition()
        self._eof = False
        self.process = subprocess.Popen(
            list(command) if command is not None else nessen_command("serve", *args),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            pass_fds=tuple(pass_fds),
        )
        self._reader = threading.Thread(target=self._read, name="nessen-stderr", daemon=True)
        self._reader.start()
        try:
            self.scheme, self.host, self.port = self._wait_listening()
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_line(self, matches: Callable[[str], bool], timeout: float = 10.0) -> str:
        """Block until a stderr line satisfies ``matches``; return it.

        Raises:
            AssertionError: No such line within ``timeout`` seconds, or the process ended.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if matches(line):
                        return line
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    raise AssertionError(
                        f"no matching stderr line (exit {self.process.poll()}):\n"
                        + "\n".join(self.lines)
                    )
                self._changed.wait(remaining)

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        """Block until a stderr line contains ``text``."""
        return self.wait_for_line(lambda line: text in line, timeout)

    def _wait_listening(self) -> tuple[str, str, int]:
        line = self.wait_for_line(lambda line: LISTENING.search(line) is not None, START_TIMEOUT)
        found = LISTENING.search(line)
        assert found is not None
        if found.group(4) is not None:  # a Unix socket: its path, port 0
            return "http", found.group(4), 0
        return found.group(1), found.group(2), int(found.group(3))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        """Wait for the exit and for stderr's end; return the exit status."""
        status = self.process.wait(timeout)
        self._reader.join(timeout)
        return status

    def stop(self, timeout: float = EXIT_TIMEOUT) -> int:
        """SIGTERM, then wait for the exit."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def close(self) -> None:
        """End the process if it still runs (SIGTERM, then SIGKILL) and release its pipe."""
        try:
            if self.process.poll() is None:
                self.process.terminate()  # lets coverage save its data; killed if it hangs
                try:
                    self.process.wait(CLOSE_GRACE)
                except subprocess.TimeoutExpired:
                    self.process.kill()
            self.process.wait(EXIT_TIMEOUT)
            self._reader.join(EXIT_TIMEOUT)
        finally:
            if self.process.stderr is not None:
                self.process.stderr.close()


ServeFactory = Callable[..., ServeProcess]


@contextlib.contextmanager
def serve_processes() -> Iterator[ServeFactory]:
    """Give a function that starts ``nessen serve ARGS``; every process started is closed."""
    started: list[ServeProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, pass_fds: Sequence[int] = ()
    ) -> ServeProcess:
        process = ServeProcess(args, env if env is not None else base_env(), pass_fds=pass_fds)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.close()
