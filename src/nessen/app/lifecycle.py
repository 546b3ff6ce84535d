"""The lifecycle state machine and readiness checks.

``STARTING -> READY <-> DEGRADED -> DRAINING -> STOPPING``. Liveness (``/health``) holds
until STOPPING; readiness (``/ready``) holds in READY, and in DEGRADED unless
``ready_when_degraded`` is off, and only while every readiness check passes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("nessen.lifecycle")


class State(enum.StrEnum):
    """Where the runtime is in its life."""

    STARTING = "STARTING"
    READY = "READY"
    DEGRADED = "DEGRADED"
    DRAINING = "DRAINING"
    STOPPING = "STOPPING"


_NEXT: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.READY, State.DRAINING, State.STOPPING}),
    State.READY: frozenset({State.DEGRADED, State.DRAINING, State.STOPPING}),
    State.DEGRADED: frozenset({State.READY, State.DRAINING, State.STOPPING}),
    State.DRAINING: frozenset({State.STOPPING}),
    State.STOPPING: frozenset(),
}


class Lifecycle:
    """The current state, its allowed transitions, and a bounded history.

    Attributes:
        state: The current state.
        reason: Why the last transition happened (e.g. the DEGRADED cause).
        started: ``time.monotonic()`` at creation, for uptime.
        history: The last 32 transitions as ``(wall-clock time, from, to, reason)``.
    """

    def __init__(self) -> None:
        self.state = State.STARTING
        self.reason = ""
        self.started = time.monotonic()
        self.history: deque[tuple[float, State, State, str]] = deque(maxlen=32)
        self._listeners: list[Callable[[State, State], None]] = []

    def transition(self, new: State, reason: str = "") -> bool:
        """Move to ``new`` if allowed from the current state; log it.

        Returns:
            Whether the state changed (a transition that is not allowed, such as
            STOPPING -> READY, or one to the current state, is ignored).
        """
        old = self.state
        if new not in _NEXT[old]:
            return False
        self.state = new
        self.reason = reason
        self.history.append((time.time(), old, new, reason))
        logger.info(
            "state %s -> %s%s",
            old,
            new,
            f" ({reason})" if reason else "",
            extra={"state": str(new), "previous_state": str(old), "reason": reason or None},
        )
        for listener in self._listeners:
            listener(old, new)
        return True

    def on_change(self, listener: Callable[[State, State], None]) -> None:
        """Call ``listener(old, new)`` after every transition."""
        self._listeners.append(listener)

    @property
    def uptime(self) -> float:
        """Seconds since creation."""
        return time.monotonic() - self.started

    @property
    def live(self) -> bool:
        """Liveness: true until STOPPING."""
        return self.state != State.STOPPING

    def accepting(self, ready_when_degraded: bool) -> bool:
        """Whether the state alone allows readiness."""
        state = self.state
        return state == State.READY or (state == State.DEGRADED and ready_when_degraded)


ReadinessFn = Callable[[], Awaitable[Any]]
"""A readiness check: returns normally (anything but ``False``) when healthy; returning
``False`` or raising means not ready."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One readiness check's outcome.

    Attributes:
        ok: Whether it passed.
        duration_ms: How long it took, in milliseconds.
        error: Why it failed (``"timed out after 2 s"``, the exception), else ``None``.
    """

    ok: bool
    duration_ms: float
    error: str | None = None
    kind: str | None = None
    """What failed without the exception's text: ``"timeout"``, ``"returned False"`` or
    the exception's class name (``"ConnectionError"``); shown to clients in production,
    where the text (a connection string, a host name) stays in the log."""


class Readiness:
    """Named readiness checks, run concurrently, each under its own timeout.

    Results are cached for ``cache_seconds`` so that a storm of probes costs one round of
    checks per interval, not one per probe. ``/ready`` and ``/api/health`` read the same
    cache.

    Args:
        cache_seconds: How long a round of results is reused, counted from its end.
        clock: Seconds on a monotonic clock, read only for the cache's age (the checks'
            timeouts and durations use real time); tests pass a fake one.
    """

    def __init__(
        self, cache_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._checks: dict[str, tuple[ReadinessFn, float]] = {}
        self._last_errors: dict[str, str | None] = {}
        self._cached: tuple[float, dict[str, CheckResult]] | None = None
        self._running: asyncio.Task[dict[str, CheckResult]] | None = None

    def add(self, name: str, check: ReadinessFn, timeout: float = 2.0) -> None:
        """Register ``check`` under ``name`` with ``timeout`` seconds.

        Raises:
            ValueError: ``name`` is taken or ``timeout`` is not positive.
        """
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} already registered")
        if timeout <= 0:
            raise ValueError(f"readiness check {name!r}: timeout must be > 0 seconds")
        self._checks[name] = (check, timeout)
        self._cached = None

    def __len__(self) -> int:
        return len(self._checks)

    async def run(self) -> dict[str, CheckResult]:
        """Return every check's result, from the cache when fresh.

        Concurrent callers share one run.
        """
        if not self._checks:
            return {}
        now = self.clock()
        cached = self._cached
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._run_all())
        return await asyncio.shield(self._running)

    async def _run_all(self) -> dict[str, CheckResult]:
        names = list(self._checks)
        results = await asyncio.gather(*(self._run_one(name) for name in names))
        outcome = dict(zip(names, results, strict=True))
        self._cached = (self.clock(), outcome)
        return outcome

    async def _run_one(self, name: str) -> CheckResult:
        check, timeout = self._checks[name]
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                value = await check()
        except TimeoutError:
            result = CheckResult(False, _ms(started), f"timed out after {timeout:g} s", "timeout")
        except Exception as exc:
            kind = type(exc).__name__
            result = CheckResult(False, _ms(started), f"{kind}: {exc}"[:200], kind)
        else:
            if value is False:
                result = CheckResult(False, _ms(started), "returned False", "returned False")
            else:
                result = CheckResult(True, _ms(started))
        self._log_change(name, result)
        return result

    def _log_change(self, name: str, result: CheckResult) -> None:
        """Log a check that starts failing (with the error's text), changes error, or recovers."""
        previous = self._last_errors.get(name)
        if result.error == previous:
            return
        self._last_errors[name] = result.error
        if result.ok:
            logger.info("readiness check %r passes again", name, extra={"reason": name})
        else:
            logger.warning(
                "readiness check %r fails: %s", name, result.error, extra={"reason": name}
            )


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 3)
