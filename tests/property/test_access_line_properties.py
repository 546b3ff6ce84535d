"""The access line's fast paths print exactly what the generic field path prints.

``ConsoleFormatter.format_access`` and ``JsonFormatter.format_access`` build the line in
one step for speed; ``LineFormatter.format_access`` goes through ``format_fields`` like
every other record. For any fields (control characters, quotes, ``=``, line separators,
non-ASCII, missing route or outcome), both must give the same text, and the JSON line must
stay one line that parses back to the fields.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from nessen.observability.logs import AccessFields, ConsoleFormatter, JsonFormatter, LineFormatter

TEXT = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\n", "\r", "\x00", "\x85", "\u2028", "\u2029", '"', "=", " ", "\\"]),
    ),
    max_size=40,
)
ACCESS = st.tuples(
    TEXT,  # request_id
    st.sampled_from(["GET", "POST", "HEAD", "PROPFIND"]),
    TEXT,  # path
    st.none() | TEXT,  # route
    st.integers(min_value=100, max_value=599),
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    st.integers(min_value=0, max_value=2**40),
    TEXT,  # client_ip
    st.none() | TEXT,  # outcome
)
CREATED = st.floats(min_value=0.0, max_value=4_000_000_000.0, allow_nan=False)
LEVELS = st.sampled_from(["INFO", "WARNING", "ERROR"])


@given(access=ACCESS, created=CREATED, level=LEVELS, colour=st.booleans())
def test_console_fast_path_matches_the_field_path(
    access: AccessFields, created: float, level: str, colour: bool
) -> None:
    formatter = ConsoleFormatter(colour=colour)
    fast = formatter.format_access(created, level, "nessen.access", access)
    assert fast == LineFormatter.format_access(formatter, created, level, "nessen.access", access)
    assert "\n" not in fast
    assert "\r" not in fast


@given(access=ACCESS, created=CREATED, level=LEVELS)
def test_json_fast_path_matches_the_field_path(
    access: AccessFields, created: float, level: str
) -> None:
    formatter = JsonFormatter()
    fast = formatter.format_access(created, level, "nessen.access", access)
    assert fast == LineFormatter.format_access(formatter, created, level, "nessen.access", access)
    assert len(fast.splitlines()) == 1  # no separator str.splitlines() honours
    entry = json.loads(fast)
    request_id, method, path, route, status, duration_ms, sent, client_ip, outcome = access
    assert entry["request_id"] == request_id
    assert entry["method"] == method
    assert entry["path"] == path
    assert entry.get("route") == route
    assert entry["status"] == status
    assert entry["duration_ms"] == duration_ms
    assert entry["bytes"] == sent
    assert entry["client_ip"] == client_ip
    assert entry.get("outcome") == outcome
    assert entry["level"] == level.lower()
