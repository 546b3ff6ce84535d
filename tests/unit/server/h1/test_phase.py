"""The read phases of a connection and the table of legal moves."""

from __future__ import annotations

import itertools

import pytest

from nessen.server.h1.phase import TRANSITIONS, IllegalTransition, Phase, check_transition

LEGAL = {
    (Phase.HEAD, Phase.BODY),  # header section complete, content follows
    (Phase.HEAD, Phase.HANDLING),  # complete without content, or parsing stopped
    (Phase.HEAD, Phase.LINGER),  # error answered
    (Phase.BODY, Phase.HANDLING),  # content complete, or parsing stopped
    (Phase.BODY, Phase.LINGER),
    (Phase.HANDLING, Phase.IDLE),  # last queued response out
    (Phase.HANDLING, Phase.HEAD),  # a pipelined request begins
    (Phase.HANDLING, Phase.LINGER),
    (Phase.IDLE, Phase.HEAD),  # next request begins
    (Phase.IDLE, Phase.LINGER),  # drain or idle close
}


def test_the_table_lists_every_phase() -> None:
    assert set(TRANSITIONS) == set(Phase)


@pytest.mark.parametrize(("current", "new"), list(itertools.product(Phase, Phase)))
def test_every_move_is_checked_against_the_table(current: Phase, new: Phase) -> None:
    if current is new or (current, new) in LEGAL:
        check_transition(current, new)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, new)


def test_linger_is_final() -> None:
    assert TRANSITIONS[Phase.LINGER] == frozenset()
