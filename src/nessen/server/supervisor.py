"""Worker processes: pre-fork, restart with backoff, signal forwarding, rolling restarts.

The supervisor binds the listening socket once and forks N workers that inherit it; each
worker runs its own event loop and accepts from the one shared queue. A shared socket (not
SO_REUSEPORT, which gives each worker a queue of its own) is what makes a rolling restart
lose nothing: a worker that drains closes only its copy of the socket, and connections
waiting in the queue are accepted by the others instead of being reset with the old
worker's queue. The admin listener's socket (``ADMIN_PORT``), when there is one, is bound
and shared the same way, so any worker answers a scrape.

The port tells the truth: the supervisor binds without listening, so connection attempts
are refused until the first worker is ready (it calls ``listen()`` on the shared socket);
at a full stop the socket is shut down for every process at once when the drain begins
(see :meth:`WorkerLink.service_stopping`), so attempts during the drain are refused
instead of being queued and reset at exit; and a worker that cannot start makes the
supervisor stop (exit 3) rather than keep a port that nothing serves.

Each worker has a pipe to the supervisor and writes one byte per event:

- ``!`` ready (startup hooks done, accepting);
- ``.`` heartbeat, from the server's ticker (every ``min(1 s, worker_timeout / 5)``), so a
  worker whose event loop is stuck is noticed and killed after ``worker_timeout``;
- ``R`` wants to be recycled (it has served ``max_requests_per_worker``): the supervisor
  starts its replacement first and only then asks it to drain;
- ``F`` then one line of text: why it could not start (logged if it was the last straw).

Signals: SIGTERM/SIGINT make the supervisor drain every worker; it exits 0 when all of them
exited 0 (1 otherwise). SIGHUP replaces the workers one at a time, each new one ready before
the old one drains. Signal handlers only record the signal; the supervisor loop acts on it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import mmap
import os
import re
import select
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nessen.config import Config
from nessen.server.server import (
    bind_listeners,
    listeners,
    release_unix,
    shown_address,
    socket_address,
)

logger = logging.getLogger("nessen.supervisor")

WORKER_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""Signals a worker handles itself once its event loop runs (blocked until then)."""

READY = b"!"
BEAT = b"."
RECYCLE = b"R"
FAILED = b"F"
"""Followed by one line (``\\n``-terminated) of text: why the worker could not start."""

EXIT_BOOT_FAILED = 3
"""The supervisor's exit status when a worker cannot start (as a single process's 3)."""

BACKOFF_START = 0.5
"""Seconds before restarting a worker that died young; doubles per consecutive early death."""
BACKOFF_MAX = 30.0
YOUNG = 5.0
"""A worker that dies within this many seconds of starting counts as a crash loop."""
BOOT_ATTEMPTS = 5
"""Failed starts in a row of one worker slot (exits before it ever became ready) after which
the supervisor stops, exit 3. Between them it waits 0.5, 1, 2 and 4 s, so a worker that
cannot start (an import error, a failing startup hook, a dependency that is down) stops the
service about 8 s plus five start-up times after it began: time enough to ride out a
dependency that comes up a few seconds late (a sidecar proxy, a database failing over),
short enough for the orchestrator to see the failure (and apply its own backoff) at once.
systemd's default start limit is the same burst (StartLimitBurst=5 within 10 s)."""
READY_TIMEOUT = 60.0
"""Seconds a new worker may take to become ready (startup hooks included), or
``worker_timeout`` when longer: past it, it is killed and counts as a failed start."""
KILL_GRACE = 5.0
"""Seconds past ``shutdown_timeout`` before a draining worker is killed."""
LISTENER_BACKSTOP = 1.0
"""Seconds after the drain should have begun (the stop signal plus ``shutdown_delay``) at
which the supervisor shuts the listening socket down itself, if no worker has (each ready
worker does it as its drain begins, after accepting what is queued)."""
RECYCLE_RETRY = 30.0
"""Seconds before retrying to recycle a worker whose replacement failed to start."""
HEARTBEAT_MAX = 1.0
"""Longest interval between heartbeats, in seconds (shorter for a short worker_timeout)."""

_METRIC_FILE = re.compile(r"^(?:counter|gauge_[a-z]+|histogram|summary)_\d+\.db$")
"""prometheus-client's multiprocess files (``counter_<pid>.db``, ``gauge_livesum_<pid>.db``)."""


def heartbeat_interval(worker_timeout: float) -> float:
    """Seconds between a worker's heartbeats: five or more per ``worker_timeout``, at most 1 s.

    A few beats per timeout window, so that a healthy worker whose beat is delayed by a busy
    machine (or whose supervisor is) is never taken for a stuck one.
    """
    return min(HEARTBEAT_MAX, worker_timeout / 5)


class WorkerLink:
    """The worker's end of its pipe to the supervisor (see the module docstring).

    Writes never block and never raise: a supervisor that went away must not take a
    serving worker down with it.

    Args:
        fd: The pipe's write end.
        stop_flag: Memory shared with the supervisor; its first byte turns 1 when the whole
            service stops (see :meth:`service_stopping`).
        slot: The worker's number, 0..N-1 (the ``worker`` label of its process metrics).
        beat_interval: Seconds between heartbeats.
        status_dir: A directory the supervisor made for the workers' status snapshots
            (removed when it exits), in which each worker's figures are shared with the
            others (see ``nessen.observability.workers``).
    """

    def __init__(
        self,
        fd: int,
        stop_flag: mmap.mmap | None = None,
        slot: int = 0,
        beat_interval: float = HEARTBEAT_MAX,
        status_dir: str | None = None,
    ) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.slot = slot
        self.beat_interval = beat_interval
        self.status_dir = status_dir
        self._stop_flag = stop_flag
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
        """Report liveness; sends at most one byte per ``beat_interval`` (sets ``orphaned``)."""
        now = time.monotonic()
        if now - self._last_beat >= self.beat_interval:
            self._last_beat = now
            self._send(BEAT)

    def recycle(self) -> None:
        """Ask to be replaced (the worker keeps serving until told to drain)."""
        self._send(RECYCLE)

    def failed(self, reason: str) -> None:
        """Tell the supervisor why this worker could not start (one line, 500 bytes at most)."""
        text = " ".join(reason.split()).encode("utf-8", "replace")[:500]
        self._send(FAILED + text + b"\n")

    def service_stopping(self) -> bool:
        """Whether the whole service stops, rather than this worker being replaced.

        True once the supervisor got SIGTERM/SIGINT, or gave up on a worker that cannot
        start. The worker whose drain begins first then shuts the shared listening socket down
        for every process, instead of closing only its own copy.
        """
        flag = self._stop_flag
        return flag is not None and flag[0] == 1


WorkerMain = Callable[[Sequence[socket.socket], WorkerLink, int, Sequence[socket.socket]], int]
"""Runs one worker in the forked child: ``(listening sockets, link, slot, the admin
listener's sockets (empty without ADMIN_PORT)) -> exit status``."""


@dataclass(eq=False)
class _Worker:
    slot: int
    pid: int
    fd: int
    started: float
    ready: bool = False
    last_beat: float = field(default_factory=time.monotonic)
    stopping: bool = False
    """Told to drain: replaced, or the service stops."""
    stop_sent: float = 0.0
    killed: bool = False
    replaces: _Worker | None = None
    """The worker this one is to take over from (a rolling restart or a recycle)."""
    recycling: bool = False
    """Queued for replacement, or being replaced."""
    quota_reached: bool = False
    """It asked to be recycled (``max_requests_per_worker``)."""
    recycle_retry_at: float = float("inf")
    reason: str = ""
    """What the worker said about a failed start, or why it was killed."""
    _reading_reason: bool = False


class Supervisor:
    """Runs ``workers`` copies of ``worker_main`` in forked processes and keeps them alive.

    Args:
        config: Settings (address, workers, shutdown_timeout, shutdown_delay,
            worker_timeout).
        worker_main: Called in each child with the inherited listening sockets, its
            :class:`WorkerLink`, its slot number (0..N-1) and the inherited admin
            listener's sockets (empty without ``admin_port``); returns its exit status.
        sock: A bound socket to share; when ``None`` the supervisor binds
            ``config.host:config.port`` (see :func:`~nessen.server.server.bind_listeners`).
    """

    def __init__(
        self, config: Config, worker_main: WorkerMain, sock: socket.socket | None = None
    ) -> None:
        self.config = config
        self.worker_main = worker_main
        self.sockets: list[socket.socket] = [sock] if sock is not None else []
        self.admin_sockets: list[socket.socket] = []
        self.workers: dict[int, _Worker] = {}
        self._crashes: dict[int, int] = {}  # slot -> deaths in a row within YOUNG of start
        self._boot_failures: dict[int, int] = {}  # slot -> exits in a row before ready
        self._restart_at: dict[int, float] = {}
        self._queue: collections.deque[_Worker] = collections.deque()  # to be replaced
        self._replacement: _Worker | None = None  # starting, to take over from .replaces
        self._signals: list[int] = []
        self._stopping = False
        self._stop_began = 0.0
        self._backstop_done = False
        self._exit_status: int | None = None
        self._exit_codes: list[int] = []
        self._stop_flag = mmap.mmap(-1, 1)  # shared with the workers: 1 = the service stops
        self.status_dir: str | None = None
        """The workers' status snapshot directory while :meth:`run` runs."""
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_w, False)
        os.set_blocking(self._wakeup_r, False)

    # --- setup -------------------------------------------------------------------------

    def bind(self) -> list[socket.socket]:
        """Bind ``config.host:config.port`` without listening (the first ready worker listens).

        Also binds ``config.admin_address`` (the admin listener's) when it is set.

        Returns:
            The bound sockets (the main address's).

        Raises:
            OSError: An address cannot be bound; its ``address`` attribute is the
                ``(host, port)`` that failed when it is the admin listener's (the main
                sockets are then closed again).
        """
        if not self.sockets:
            self.sockets = listeners(self.config)
        admin = self.config.admin_address
        if admin is not None and not self.admin_sockets:
            try:
                self.admin_sockets = bind_listeners(*admin)
            except OSError as exc:
                for sock in self.sockets:
                    sock.close()
                self.sockets = []
                exc.address = admin  # type: ignore[attr-defined]
                raise
        return self.sockets

    @property
    def sock(self) -> socket.socket | None:
        """The first bound socket, once bound."""
        return self.sockets[0] if self.sockets else None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` (of the first socket)."""
        assert self.sockets
        return socket_address(self.sockets[0])

    # --- the supervisor loop --------------------------------------------------------------

    def run(self) -> int:
        """Start the workers and supervise them until SIGTERM/SIGINT; blocking.

        Returns:
            0 when every worker drained and exited 0 at shutdown, 1 otherwise, 3 when a
            worker failed to start ``BOOT_ATTEMPTS`` times in a row.
        """
        # Here, not at import: a single-process server (which imports this module for
        # WorkerLink) has no use for them.
        import shutil
        import tempfile

        sockets = self.bind()
        metrics_dir = self._prepare_metrics_dir()
        # The workers' status snapshots: made here, removed with everything in it at exit.
        self.status_dir = tempfile.mkdtemp(prefix="nessen-status-")
        scheme = "https" if self.config.ssl_certfile is not None else "http"
        address = shown_address(sockets[0], scheme)
        logger.info(
            "supervisor %d starting %d workers on %s (connections are taken once one is ready)",
            os.getpid(),
            self.config.workers,
            address,
            extra={"address": address},
        )
        if self.admin_sockets:
            admin_host, admin_port = self.admin_sockets[0].getsockname()[:2]
            admin_shown = f"[{admin_host}]" if ":" in admin_host else admin_host
            logger.info(
                "supervisor: admin listener on http://%s:%d, shared by the workers",
                admin_shown,
                admin_port,
                extra={"admin_address": f"http://{admin_shown}:{admin_port}"},
            )
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        }
        try:
            for slot in range(self.config.workers):
                self._spawn(slot)
            while True:
                self._handle_signals()
                self._reap()
                now = time.monotonic()
                if self._stopping:
                    if not self.workers:
                        break
                    self._shut_listener_when_due(now)
                    self._enforce_shutdown_deadline(now)
                else:
                    self._advance_replacement(now)
                    self._restart_due(now)
                    self._check_workers()
                self._wait(0.2)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for sock in (*sockets, *self.admin_sockets):
                release_unix(sock)
                sock.close()
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
            shutil.rmtree(self.status_dir, ignore_errors=True)
            self.status_dir = None
        if self._exit_status is not None:
            return self._exit_status
        clean = not self._restart_at and all(code == 0 for code in self._exit_codes)
        logger.info("supervisor: all workers exited (%s)", "clean" if clean else "not clean")
        return 0 if clean else 1

    def _prepare_metrics_dir(self) -> str | None:
        """Give the workers a clean directory for multiprocess metrics.

        prometheus-client decides at import whether it runs in multiprocess mode, from
        ``PROMETHEUS_MULTIPROC_DIR``; the workers import it after the fork, so setting the
        variable here is enough for every worker's ``/metrics`` to show the aggregate. A
        directory the operator set is emptied of prometheus-client's files (a restart must
        not inherit the previous run's totals), and nothing else in it is touched; it is
        created when missing.

        Returns:
            The directory created (removed at exit), or ``None`` when the operator set one.
        """
        import tempfile

        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            directory = tempfile.mkdtemp(prefix="nessen-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
            return directory
        os.makedirs(directory, exist_ok=True)
        removed = 0
        foreign = []
        for name in sorted(os.listdir(directory)):
            if _METRIC_FILE.match(name):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(directory, name))
                    removed += 1
            elif name.endswith(".db"):
                foreign.append(name)
        if foreign:  # prometheus-client reads every *.db file there as its own
            logger.warning(
                "PROMETHEUS_MULTIPROC_DIR %s holds %s, not prometheus-client's: /metrics "
                "will fail to read it; give the workers a directory of their own",
                directory,
                ", ".join(foreign),
            )
        if removed:
            logger.info(
                "removed %d metrics file(s) of a previous run from PROMETHEUS_MULTIPROC_DIR %s",
                removed,
                directory,
            )
        return None

    def _mark_dead(self, pid: int) -> None:
        """Drop a dead worker's live gauges from the multiprocess metrics."""
        try:
            from prometheus_client import multiprocess
        except ImportError:  # pragma: no cover - a dependency
            return
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

    def _on_signal(self, signum: int, frame: object) -> None:
        """Record the signal for the loop (nothing else: no logging in a signal handler)."""
        self._signals.append(signum)
        with contextlib.suppress(OSError):
            os.write(self._wakeup_w, b"x")

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGHUP and not self._stopping:
                old = [w for w in self.workers.values() if self._replaceable(w)]
                logger.info("SIGHUP: rolling restart of %d worker(s)", len(old))
                for worker in old:
                    worker.recycling = True
                    self._queue.append(worker)
            elif signum in (signal.SIGTERM, signal.SIGINT):
                if self._stopping:  # second signal: the workers cut their drains short
                    for worker in self.workers.values():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(worker.pid, signal.SIGTERM)
                else:
                    self._begin_stop()

    def _replaceable(self, worker: _Worker) -> bool:
        return not (worker.stopping or worker.recycling or worker is self._replacement)

    def _begin_stop(self) -> None:
        """Drain every worker; the port closes as the drains begin."""
        now = time.monotonic()
        self._stopping = True
        self._stop_began = now
        self._stop_flag[0] = 1  # before the SIGTERMs: each worker reads it at its drain
        self._queue.clear()
        self._replacement = None
        logger.info("supervisor: draining %d workers", len(self.workers))
        for worker in self.workers.values():
            worker.stopping = True
            worker.stop_sent = now
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        if not any(w.ready for w in self.workers.values()):
            self._shut_listener()  # nobody serves it: refuse from now on

    def _shut_listener_when_due(self, now: float) -> None:
        due = self._stop_began + self.config.shutdown_delay + LISTENER_BACKSTOP
        if not self._backstop_done and now >= due:
            self._backstop_done = True
            self._shut_listener()

    def _shut_listener(self) -> None:
        """Stop the shared sockets listening, in every process (connections are refused).

        An inherited main socket (``LISTEN_FD``) is left listening: it is its parent's too,
        which keeps queueing connections on it for the next start.
        """
        inherited = self.config.listen_fd is not None
        for sock in (*([] if inherited else self.sockets), *self.admin_sockets):
            with contextlib.suppress(OSError):  # never listened, or a worker did it already
                sock.shutdown(socket.SHUT_RDWR)

    def _enforce_shutdown_deadline(self, now: float) -> None:
        limit = self.config.shutdown_timeout + self.config.shutdown_delay + KILL_GRACE
        for worker in self.workers.values():
            if worker.stopping and not worker.killed and now - worker.stop_sent > limit:
                logger.error(
                    "worker %d (pid %d) overran its drain: killed", worker.slot, worker.pid
                )
                worker.killed = True
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
            data = os.read(worker.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return
        worker.last_beat = time.monotonic()
        if worker._reading_reason:  # the rest of an ``F`` line
            text, newline, data = data.partition(b"\n")
            worker.reason += text.decode("utf-8", "replace")
            worker._reading_reason = not newline
        data, failed, text = data.partition(FAILED)
        if failed:
            line, newline, _ = text.partition(b"\n")
            worker.reason = line.decode("utf-8", "replace")
            worker._reading_reason = not newline
        if READY in data and not worker.ready:
            worker.ready = True
            self._boot_failures.pop(worker.slot, None)
        alive = worker.pid in self.workers
        if RECYCLE in data and alive and self._replaceable(worker) and not self._stopping:
            logger.info(
                "worker %d (pid %d) served its request quota: recycling", worker.slot, worker.pid
            )
            worker.recycling = True
            worker.quota_reached = True
            self._queue.append(worker)

    # --- workers ------------------------------------------------------------------------

    def _spawn(self, slot: int) -> _Worker:
        read_fd, write_fd = os.pipe()
        sockets = self.sockets
        assert sockets
        # The child starts with SIGTERM/SIGINT blocked: one that arrives before its runtime
        # has installed its handlers stays pending until then (the runtime unblocks them),
        # instead of killing a worker that has not started draining.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        pid = os.fork()
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if pid == 0:  # the child: never returns
            status = 1
            link: WorkerLink | None = None
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
                link = WorkerLink(
                    write_fd,
                    self._stop_flag,
                    slot,
                    heartbeat_interval(self.config.worker_timeout),
                    self.status_dir,
                )
                status = self.worker_main(sockets, link, slot, self.admin_sockets)
            except BaseException as exc:
                logger.exception("worker %d failed", slot)
                if link is not None:
                    link.failed(f"{type(exc).__name__}: {exc}")
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
            self._read_link(worker)  # a failed start's reason may still be in the pipe
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
        if worker.reason:
            how = f"{how}: {worker.reason}"
        now = time.monotonic()
        if worker is self._replacement:  # it never became ready (else it would not be)
            self._replacement = None
            old = worker.replaces
            if old is not None and old.pid in self.workers:
                self._replacement_failed(worker, old, how, now)
                return
            # The worker it was to replace died meanwhile: the slot is empty, so this
            # counts as a failed start of the slot's worker.
        elif self._replacement is not None and self._replacement.replaces is worker:
            return  # its replacement, starting now, takes the slot over
        if not worker.ready:
            self._failed_start(worker, how, now)
            return
        lived = now - worker.started
        crashes = self._crashes.get(worker.slot, 0) + 1 if lived < YOUNG else 0
        self._crashes[worker.slot] = crashes
        delay = 0.0 if crashes == 0 else min(BACKOFF_MAX, BACKOFF_START * 2 ** (crashes - 1))
        if delay:
            logger.warning(
                "worker %d crashed %d time(s) in a row: restarting in %.1f s",
                worker.slot,
                crashes,
                delay,
            )
        self._restart_at[worker.slot] = now + delay

    def _failed_start(self, worker: _Worker, how: str, now: float) -> None:
        """The slot's worker exited before it was ready: retry with backoff, or give up."""
        failures = self._boot_failures.get(worker.slot, 0) + 1
        self._boot_failures[worker.slot] = failures
        if failures >= BOOT_ATTEMPTS:
            logger.error(
                "worker %d failed to start %d times in a row (last: %s): stopping the "
                "service, exit status %d",
                worker.slot,
                failures,
                how,
                EXIT_BOOT_FAILED,
            )
            self._exit_status = EXIT_BOOT_FAILED
            self._restart_at.clear()
            self._begin_stop()
            return
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** (failures - 1))
        logger.warning(
            "worker %d failed to start (%d of %d attempts; %s): retrying in %.1f s",
            worker.slot,
            failures,
            BOOT_ATTEMPTS,
            how,
            delay,
        )
        self._restart_at[worker.slot] = now + delay

    def _replacement_failed(self, new: _Worker, old: _Worker, how: str, now: float) -> None:
        """A replacement exited before it was ready: the old worker keeps serving."""
        left = [w for w in self._queue if w.pid in self.workers]
        self._queue.clear()
        for worker in left:
            worker.recycling = False
        old.recycling = False
        if old.quota_reached:  # it still needs replacing: try again later
            old.recycle_retry_at = now + RECYCLE_RETRY
        logger.error(
            "the replacement for worker %d (pid %d) failed to start (%s): worker %d (pid %d) "
            "keeps serving%s",
            new.slot,
            new.pid,
            how,
            old.slot,
            old.pid,
            f"; {len(left)} more worker(s) not replaced" if left else "",
        )

    def _advance_replacement(self, now: float) -> None:
        """Go on with the rolling restart.

        The old worker drains once its replacement is ready; then the next one is started.
        """
        new = self._replacement
        if new is not None:
            if not new.ready:
                return  # starting (a start that overruns is killed by _check_workers)
            self._replacement = None
            old = new.replaces
            new.replaces = None
            if old is not None and old.pid in self.workers and not old.stopping:
                old.stopping = True
                old.stop_sent = now
                with contextlib.suppress(ProcessLookupError):
                    os.kill(old.pid, signal.SIGTERM)
        for worker in self.workers.values():
            if worker.recycle_retry_at <= now:
                worker.recycle_retry_at = float("inf")
                if self._replaceable(worker):
                    logger.info(
                        "worker %d (pid %d): retrying its recycling", worker.slot, worker.pid
                    )
                    worker.recycling = True
                    self._queue.append(worker)
        while self._queue:
            old = self._queue.popleft()
            if old.pid not in self.workers or old.stopping:
                continue
            replacement = self._spawn(old.slot)
            replacement.replaces = old
            self._replacement = replacement
            return

    def _restart_due(self, now: float) -> None:
        for slot, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[slot]
                self._spawn(slot)

    def _check_workers(self) -> None:
        """Kill a worker whose heartbeat stopped, or that takes too long to become ready.

        What the workers wrote is read first: a supervisor that was itself descheduled for
        a while must not take the beats waiting in the pipes for missing ones.
        """
        for worker in list(self.workers.values()):
            self._read_link(worker)
        now = time.monotonic()
        limit = self.config.worker_timeout
        start_limit = max(READY_TIMEOUT, limit)
        for worker in list(self.workers.values()):
            if worker.stopping or worker.killed:
                continue
            if not worker.ready:
                if now - worker.started <= start_limit:
                    continue
                worker.reason = f"not ready within {start_limit:g} s"
                logger.error(
                    "worker %d (pid %d) did not become ready within %g s: killed",
                    worker.slot,
                    worker.pid,
                    start_limit,
                )
            elif now - worker.last_beat > limit:
                logger.error(
                    "worker %d (pid %d) sent no heartbeat for %.1f s (worker_timeout): killed",
                    worker.slot,
                    worker.pid,
                    now - worker.last_beat,
                )
            else:
                continue
            worker.killed = True  # one kill; _reap restarts it
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
