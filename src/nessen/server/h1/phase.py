"""The read phases of an HTTP/1.1 server connection, and the transitions between them.

A connection is always in exactly one phase, which says what its read deadline guards
(RFC 9112 §9 for persistence, §9.6 for the close). The legal moves are the table
:data:`TRANSITIONS`; :func:`check_transition` is what the connection asserts on every
change, and ``docs/ARCHITECTURE.md`` draws the same table.

::

    HEAD ──header section complete, content follows──▶ BODY
    HEAD ──header section complete, no content───────▶ HANDLING
    BODY ──content complete──────────────────────────▶ HANDLING
    HANDLING ──last queued response out──────────────▶ IDLE
    HANDLING ──first byte of a pipelined request─────▶ HEAD
    IDLE ──first byte of the next request────────────▶ HEAD
    any ──error answered, or close after the queue───▶ LINGER
    HEAD, BODY ──parsing stopped (error, upgrade)────▶ HANDLING
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """What a connection's read deadline is guarding.

    Members:
        HEAD: A header section is awaited or arriving (``HEADERS_TIMEOUT``).
        BODY: Content is arriving (``BODY_TIMEOUT`` and ``BODY_MIN_RATE``).
        HANDLING: A complete request is being handled or queued; no read deadline (the
            request's own deadline runs).
        IDLE: A persistent connection between requests (``IDLE_TIMEOUT``).
        LINGER: The answer is out and the write side shut; input is discarded until the
            client closes or the linger ends (RFC 9112 §9.6).
    """

    HEAD = "head"
    BODY = "body"
    HANDLING = "handling"
    IDLE = "idle"
    LINGER = "linger"

    # Members are singletons compared by identity: hash them by identity too, in C,
    # instead of Enum's Python-level __hash__ (a function call per table lookup).
    __hash__ = object.__hash__


HEAD = Phase.HEAD
BODY = Phase.BODY
HANDLING = Phase.HANDLING
IDLE = Phase.IDLE
LINGER = Phase.LINGER

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    HEAD: frozenset({BODY, HANDLING, LINGER}),
    BODY: frozenset({HANDLING, LINGER}),
    HANDLING: frozenset({HEAD, IDLE, LINGER}),
    IDLE: frozenset({HEAD, LINGER}),
    LINGER: frozenset(),
}
"""For each phase, the phases a connection may move to next. A phase "moving" to itself
is no transition and always allowed (a deadline renewed within the phase). LINGER is
final: the connection closes from it."""


ALLOWED: dict[Phase, frozenset[Phase]] = {
    phase: targets | {phase} for phase, targets in TRANSITIONS.items()
}
""":data:`TRANSITIONS` with each phase allowed to stay itself: ``new in ALLOWED[current]``
is the whole check, cheap enough for every move of every connection."""


class IllegalTransition(AssertionError):
    """A connection tried a move that :data:`TRANSITIONS` does not list: a bug of ours."""


def check_transition(current: Phase, new: Phase) -> None:
    """Check that a connection in ``current`` may enter ``new``.

    Raises:
        IllegalTransition: The move is not in :data:`TRANSITIONS`.
    """
    if new not in ALLOWED[current]:
        raise IllegalTransition(f"read phase {current.value} -> {new.value} is not allowed")
