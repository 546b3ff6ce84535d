"""Exceptions raised by nessen, and the HTTP status each one maps to."""

from __future__ import annotations

import sys
from collections.abc import Iterable


class NessenError(Exception):
    """Base class of every exception nessen raises on purpose."""


class ConfigError(NessenError, ValueError):
    """One or more settings are invalid.

    Every problem is reported at once, each as ``NAME=value: rule`` where ``NAME`` is the
    environment variable (from ``Config.from_env``) or the ``Config`` field (from code).
    ``nessen serve`` prints the message and exits with status 2.

    Attributes:
        problems: One line per invalid setting.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("invalid configuration: " + "; ".join(self.problems))

    def report(self) -> int:
        """Print the problems to stderr as ``nessen serve`` does; return its exit status, 2."""
        print("nessen: invalid configuration:", file=sys.stderr)
        for problem in self.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2


class ProtocolError(NessenError):
    """The peer broke HTTP/1.1 or a limit; we answer ``status`` and close the connection.

    Attributes:
        status: The status code to answer with (400, 408, 413, 414, 431, 501, 505).
        reason: A short machine-readable tag for logs and metrics, e.g. ``"header_too_large"``.
    """

    def __init__(self, message: str, *, status: int = 400, reason: str = "bad_request") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class HTTPError(NessenError):
    """Raised by a handler or middleware to answer with an error status.

    The router turns it into a JSON response ``{"error": <message>, "request_id": ...}``
    with ``status``; it is an expected outcome, so no stack trace is logged.

    Attributes:
        status: An HTTP status code, 400..599.
        message: Short text for the client; the reason phrase when empty.
        headers: Extra response header fields, e.g. ``{"Retry-After": "3"}``.
    """

    def __init__(
        self, status: int, message: str = "", *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message or str(status))
        self.status = status
        self.message = message
        self.headers = headers or {}
