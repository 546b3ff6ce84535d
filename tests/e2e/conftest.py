from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.serving import ServeFactory, serve_processes


@pytest.fixture
def nessen_serve() -> Iterator[ServeFactory]:
    """Start ``nessen serve ARGS`` (``PORT=0`` on 127.0.0.1); killed at the end of the test."""
    with serve_processes() as start:
        yield start
