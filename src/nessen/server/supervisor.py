"""Worker processes: pre-fork, restart with backoff, signal forwarding, rolling restarts.

The supervisor binds the listening socket once and forks N workers that inherit it; each
worker runs its own event loop and accepts from the one shared queue. A shared socket (not
SO_REUSEPORT, which gives each worker a queue of its own) is what makes a rolling restart
lose nothing: a worker that drains closes only its copy of the socket, and connections
waiting in the queue are accepted by the others instead of being reset with the old
worker's queue.

Each worker has a pipe to the supervisor and writes one byte per event:

- ``!`` ready (startup hooks done, accepting);
- ``.`` heartbeat, about once a second from the server's ticker, so a worker whose event
  loop is stuck is noticed and killed after ``worker_timeout``;
- ``R`` wants to be recycled (it has served ``max_requests_per_worker``): the supervisor
  starts its replacement first and only then asks it to drain.

Signals: SIGTERM/SIGINT are forwarded to every worker, which drain; the supervisor exits 0
when all of them exited 0 (1 otherwise). SIGHUP replaces the workers one at a time, each
new one ready before the old one drains.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nessen.config import Config

logger = logging.getLogger("nessen.supervisor")

WORKER_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""Signals a worker handles itself once its event loop runs (blocked until then)."""

READY = b"!"
BEAT = b"."
RECYCLE = b"R"

BACKOFF_START = 0.5
"""Seconds before restarting a worker that died young; doubles per consecutive early death."""
BACKOFF_MAX = 30.0
YOUNG = 5.0
"""A worker that dies within this many seconds of starting counts as a crash loop."""
READY_TIMEOUT = 60.0
"""Seconds a replacement may take to become ready during a rolling restart."""
KILL_GRACE = 5.0
"""Seconds past ``shutdown_timeout`` before a draining worker is killed."""


class WorkerLink:
    """The worker's end of its pipe to the supervisor (see the module docstring).

    Writes never block and never raise: a supervisor that went away must not take a
    serving worker down with it.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._last_beat = 0.0
        self.orphaned = False
        """True once the supervisor's end of the pipe is gone (it died)."""

    def _send(self, message: bytes) -> None:
        try:
            os.write(self.fd, message)
        except BrokenPipeError:
            self.orphaned = True
        except OSError:  # the pipe is full: the supervisor is busy; a beat can wait
            pass

    def ready(self) -> None:
        """Report that the worker accepts connections."""
        self._send(READY)

    def beat(self) -> None:
        """Report liveness; sends at most one byte per second (sets ``orphaned``)."""
        now = time.monotonic()
        if now - self._last_beat >= 1.0:
            self._last_beat = now
            self._send(BEAT)

    def recycle(self) -> None:
        """Ask to be replaced (the worker keeps serving until told to drain)."""
        self._send(RECYCLE)


WorkerMain = Callable[[socket.socket, WorkerLink, int], int]
"""Runs one worker in the forked child: ``(listening socket, link, slot) -> exit status``."""


@dataclass(eq=False)
class _Worker:
    slot: int
    pid: int
    fd: int
    started: float
    ready: bool = False
    last_beat: float = field(default_factory=time.monotonic)
    recycling: bool = False
    stopping: bool = False
    stop_sent: float = 0.0


class Supervisor:
    """Runs ``workers`` copies of ``worker_main`` in forked processes and keeps them alive.

    Args:
        config: Settings (address, workers, shutdown_timeout, worker_timeout).
        worker_main: Called in each child with the inherited listening socket, its
            :class:`WorkerLink` and its slot number (0..N-1); returns its exit status.
        sock: A bound listening socket to share; when ``None`` one is bound to
            ``config.host:config.port``.
    """

    def __init__(
        self, config: Config, worker_main: WorkerMain, sock: socket.socket | None = None
    ) -> None:
        self.config = config
        self.worker_main = worker_main
        self.sock = sock
        self.workers: dict[int, _Worker] = {}
        self._failures: dict[int, int] = {}
        self._restart_at: dict[int, float] = {}
        self._stopping = False
        self._draining: int | None = None  # workers told to drain, until logged
        self._hup = False
        self._exit_codes: list[int] = []
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_w, False)
        os.set_blocking(self._wakeup_r, False)

    # --- setup -------------------------------------------------------------------------

    def bind(self) -> socket.socket:
        """Bind and listen on ``config.host:config.port`` (IPv6 when the host is).

        Raises:
            OSError: The address cannot be bound.
        """
        if self.sock is None:
            family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.config.host, self.config.port))
            sock.listen(2048)
            sock.setblocking(False)
            self.sock = sock
        return self.sock

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        assert self.sock is not None
        name = self.sock.getsockname()
        return str(name[0]), int(name[1])

    # --- the supervisor loop --------------------------------------------------------------

    def run(self) -> int:
        """Start the workers and supervise them until SIGTERM/SIGINT; blocking.

        Returns:
            0 when every worker drained and exited 0 at shutdown, else 1.
        """
        sock = self.bind()
        metrics_dir = self._prepare_metrics_dir()
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        logger.info(
            "supervisor %d listening on http://%s:%d with %d workers",
            os.getpid(),
            shown,
            port,
            self.config.workers,
            extra={"address": f"http://{shown}:{port}"},
        )
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        }
        try:
            for slot in range(self.config.workers):
                self._spawn(slot)
            while True:
                self._reap()
                if self._stopping:
                    if self._draining is not None:  # logged here, not in the signal handler
                        logger.info("supervisor: draining %d workers", self._draining)
                        self._draining = None
                    if not self.workers:
                        break
                    self._enforce_shutdown_deadline()
                else:
                    if self._hup:
                        self._hup = False
                        self._rolling_restart(list(self.workers.values()))
                    self._restart_due()
                    self._kill_unresponsive()
                self._wait(0.2)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            sock.close()
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        clean = not self._restart_at and all(code == 0 for code in self._exit_codes)
        logger.info("supervisor: all workers exited (%s)", "clean" if clean else "not clean")
        return 0 if clean else 1

    def _prepare_metrics_dir(self) -> str | None:
        """Give the workers a shared directory for multiprocess metrics, unless one is set.

        prometheus-client decides at import whether it runs in multiprocess mode, from
        ``PROMETHEUS_MULTIPROC_DIR``; the workers import it after the fork, so setting the
        variable here is enough for every worker's ``/metrics`` to show the aggregate.

        Returns:
            The directory created (removed at exit), or ``None`` when the user set one.
        """
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return None
        directory = tempfile.mkdtemp(prefix="nessen-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        return directory

    def _mark_dead(self, pid: int) -> None:
        """Drop a dead worker's live gauges from the multiprocess metrics."""
        try:
            from prometheus_client import multiprocess
        except ImportError:  # pragma: no cover - a dependency
            return
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        elif signum in (signal.SIGTERM, signal.SIGINT):
            if self._stopping:  # second signal: the workers cut their drains short
                for worker in self.workers.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGTERM)
            else:
                self._stopping = True
                self._stop_all()
        with contextlib.suppress(OSError):
            os.write(self._wakeup_w, b"x")

    def _stop_all(self) -> None:
        """Tell every worker to drain (runs in the signal handler: no logging here)."""
        self._draining = len(self.workers)
        now = time.monotonic()
        for worker in self.workers.values():
            worker.stopping = True
            worker.stop_sent = now
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)

    def _enforce_shutdown_deadline(self) -> None:
        limit = self.config.shutdown_timeout + self.config.shutdown_delay + KILL_GRACE
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.stopping and now - worker.stop_sent > limit:
                logger.error(
                    "worker %d (pid %d) overran its drain: killed", worker.slot, worker.pid
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)

    def _wait(self, timeout: float) -> None:
        """Sleep until a worker writes, a signal arrives, or ``timeout`` passes."""
        fds = [self._wakeup_r, *(w.fd for w in self.workers.values())]
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            return
        for fd in readable:
            if fd == self._wakeup_r:
                with contextlib.suppress(OSError):
                    os.read(fd, 1024)
                continue
            worker = next((w for w in self.workers.values() if w.fd == fd), None)
            if worker is not None:
                self._read_link(worker)

    def _read_link(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.fd, 1024)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return
        worker.last_beat = time.monotonic()
        if READY in data and not worker.ready:
            worker.ready = True
            self._failures.pop(worker.slot, None)
        if RECYCLE in data and not worker.recycling and not self._stopping:
            worker.recycling = True
            logger.info(
                "worker %d (pid %d) served its request quota: recycling", worker.slot, worker.pid
            )
            self._rolling_restart([worker])

    # --- workers ------------------------------------------------------------------------

    def _spawn(self, slot: int) -> _Worker:
        read_fd, write_fd = os.pipe()
        sock = self.sock
        assert sock is not None
        # The child starts with SIGTERM/SIGINT blocked: one that arrives before its runtime
        # has installed its handlers stays pending until then (the runtime unblocks them),
        # instead of killing a worker that has not started draining.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        pid = os.fork()
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if pid == 0:  # the child: never returns
            status = 1
            try:
                os.close(read_fd)
                os.close(self._wakeup_r)
                os.close(self._wakeup_w)
                for other in self.workers.values():
                    with contextlib.suppress(OSError):
                        os.close(other.fd)
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(signum, signal.SIG_DFL)
                # Own process group: a terminal's Ctrl-C reaches only the supervisor, which
                # forwards one SIGTERM (a second signal would cut the workers' drains short).
                os.setpgid(0, 0)
                status = self.worker_main(sock, WorkerLink(write_fd), slot)
            except BaseException:
                logger.exception("worker %d failed", slot)
            finally:
                logging.shutdown()
                os._exit(status)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        worker = _Worker(slot, pid, read_fd, time.monotonic())
        self.workers[pid] = worker
        logger.info("worker %d started (pid %d)", slot, pid)
        return worker

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            with contextlib.suppress(OSError):
                os.close(worker.fd)
            self._mark_dead(pid)
            self._on_exit(worker, status)

    def _on_exit(self, worker: _Worker, status: int) -> None:
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            how = f"killed by {signal.Signals(signum).name}"
            code = 128 + signum
        else:
            code = os.WEXITSTATUS(status)
            how = f"exited with status {code}"
        expected = worker.stopping or self._stopping
        level = logging.INFO if expected and code == 0 else logging.ERROR
        logger.log(level, "worker %d (pid %d) %s", worker.slot, worker.pid, how)
        if self._stopping:
            self._exit_codes.append(code)
            return
        if worker.stopping:  # replaced on purpose (rolling restart, recycle)
            return
        lived = time.monotonic() - worker.started
        failures = self._failures.get(worker.slot, 0) + 1 if lived < YOUNG else 0
        self._failures[worker.slot] = failures
        delay = 0.0 if failures == 0 else min(BACKOFF_MAX, BACKOFF_START * 2 ** (failures - 1))
        if delay:
            logger.warning(
                "worker %d crashed %d time(s) in a row: restarting in %.1f s",
                worker.slot,
                failures,
                delay,
            )
        self._restart_at[worker.slot] = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[slot]
                self._spawn(slot)

    def _kill_unresponsive(self) -> None:
        limit = self.config.worker_timeout
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if not worker.stopping and now - worker.last_beat > limit:
                logger.error(
                    "worker %d (pid %d) sent no heartbeat for %.0f s (worker_timeout): killed",
                    worker.slot,
                    worker.pid,
                    now - worker.last_beat,
                )
                worker.last_beat = now  # one kill; _reap restarts it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)

    def _rolling_restart(self, old_workers: list[_Worker]) -> None:
        """Replace each worker in turn: start the new one, wait until ready, drain the old."""
        logger.info("rolling restart of %d worker(s)", len(old_workers))
        for old in old_workers:
            if old.pid not in self.workers or self._stopping:
                continue
            new = self._spawn(old.slot)
            deadline = time.monotonic() + READY_TIMEOUT
            while not new.ready and time.monotonic() < deadline and not self._stopping:
                self._wait(0.1)
                self._reap()
                if new.pid not in self.workers:
                    break  # the replacement died; _on_exit scheduled its restart
            if new.pid not in self.workers or not new.ready:
                logger.error("replacement for worker %d did not become ready", old.slot)
                continue
            old.stopping = True
            old.stop_sent = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(old.pid, signal.SIGTERM)
