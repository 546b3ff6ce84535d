"""``nessen.cli`` pieces that need no process: systemd's socket-activation variables."""

from __future__ import annotations

import pytest

from nessen.cli import systemd_socket


def test_socket_activation_for_this_process_gives_fd_3_and_clears_the_variables() -> None:
    environ = {"LISTEN_PID": "4321", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:admin", "X": "1"}
    assert systemd_socket(environ, 4321) == 3
    assert environ == {"X": "1"}


@pytest.mark.parametrize(
    "variables",
    [
        {"LISTEN_PID": "4322", "LISTEN_FDS": "1"},  # meant for another process (our parent)
        {"LISTEN_PID": "4321", "LISTEN_FDS": "0"},
        {"LISTEN_PID": "4321", "LISTEN_FDS": "one"},
        {"LISTEN_FDS": "1"},
        {},
    ],
)
def test_no_socket_activation_unless_the_variables_say_so(variables: dict[str, str]) -> None:
    environ = dict(variables)
    assert systemd_socket(environ, 4321) is None
    assert environ == {}  # cleared all the same, as sd_listen_fds(1) does
