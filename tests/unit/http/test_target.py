from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from nessen.errors import ProtocolError
from nessen.http.target import remove_dot_segments, split_target


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/", "/", b""),
        (b"/a/b", "/a/b", b""),
        (b"/a/b?x=1&y=2", "/a/b", b"x=1&y=2"),
        (b"/a?", "/a", b""),
        (b"/a?b?c", "/a", b"b?c"),
        (b"/search?q=%20", "/search", b"q=%20"),  # the query stays raw
    ],
)
def test_origin_form(target: bytes, path: str, query: bytes) -> None:
    assert split_target(target) == (path, query)


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"http://example.com/a/b?x=1", "/a/b", b"x=1"),
        (b"https://example.com:8443/a", "/a", b""),
        (b"http://example.com", "/", b""),
        (b"http://example.com?x=1", "/", b"x=1"),
        (b"HTTP://EXAMPLE.COM/A", "/A", b""),
        (b"http://example.com/a/../b", "/b", b""),
    ],
)
def test_absolute_form_drops_the_authority(target: bytes, path: str, query: bytes) -> None:
    assert split_target(target) == (path, query)


def test_asterisk_form() -> None:
    assert split_target(b"*") == ("*", b"")


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/a%20b", "/a b"),
        (b"/caf%C3%A9", "/café"),
        (b"/a%2Fb", "/a/b"),
        (b"/%ff", "/\ufffd"),
        (b"/100%", "/100%"),
        (b"/a+b", "/a+b"),  # '+' is only a space in a query
    ],
)
def test_path_is_percent_decoded_as_utf_8(target: bytes, path: str) -> None:
    assert split_target(target)[0] == path


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/a/./b/../c", "/a/c"),
        (b"/a/b/..", "/a/"),
        (b"/a/b/.", "/a/b/"),
        (b"/./a", "/a"),
        (b"/a/%2e%2e/b", "/b"),  # dot-segments are removed after decoding
        (b"/a/%2E/b", "/a/b"),
        (b"/a/..", "/"),
        (b"/a/.../b", "/a/.../b"),  # three dots is a name, not a dot-segment
        (b"/a/.b/c.", "/a/.b/c."),
    ],
)
def test_dot_segments_are_removed(target: bytes, path: str) -> None:
    assert split_target(target)[0] == path


@pytest.mark.parametrize("target", [b"/..", b"/../etc/passwd", b"/a/../../b", b"/%2e%2e/x"])
def test_climbing_above_the_root_is_a_400(target: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        split_target(target)
    assert caught.value.status == 400
    assert caught.value.reason == "path_traversal"


@pytest.mark.parametrize("target", [b"/a%00b", b"/%00", b"http://h/%00"])
def test_encoded_nul_is_a_400(target: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        split_target(target)
    assert caught.value.status == 400
    assert caught.value.reason == "bad_target"


@pytest.mark.parametrize("target", [b"example.com:443", b"example.com", b"", b"ftp://h/a", b"a/b"])
def test_authority_form_and_other_shapes_are_a_400(target: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        split_target(target)
    assert caught.value.status == 400
    assert caught.value.reason == "bad_target"


def test_malformed_absolute_form_authority_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as caught:
        split_target(b"http://[::1/a")
    assert caught.value.status == 400
    assert caught.value.reason == "bad_target"


def test_remove_dot_segments_directly() -> None:
    assert remove_dot_segments("/a/b/c/./../../g") == "/a/g"
    assert remove_dot_segments("/mid/content=5/../6") == "/mid/6"
    with pytest.raises(ProtocolError):
        remove_dot_segments("/a/../..")


def path_or_none(target: bytes) -> str | None:
    """The normalised path, or None when the target is refused with a 400."""
    try:
        return split_target(target)[0]
    except ProtocolError as exc:
        if exc.status != 400:
            raise
        return None


_SEGMENT = st.one_of(
    st.sampled_from([".", "..", "%2e", "%2E%2e", ".%2e", "", "a", "b.", ".c", "%2F", "%"]),
    st.text(alphabet="ab./%2eE", max_size=6),
)


@given(segments=st.lists(_SEGMENT, max_size=12), absolute=st.booleans())
@example(segments=["a", "%2e%2e", "%2e", "b"], absolute=False)
@example(segments=["a", "..%2F..", "b"], absolute=True)
def test_normalised_path_has_no_dot_segments(segments: list[str], absolute: bool) -> None:
    target = ("/" + "/".join(segments)).encode()
    if absolute:
        target = b"http://example.com" + target
    path = path_or_none(target)
    if path is None:
        return
    assert path.startswith("/")
    parts = path.split("/")
    assert "." not in parts
    assert ".." not in parts


@given(raw=st.binary(max_size=40))
def test_any_origin_form_target_gives_a_clean_path_or_a_400(raw: bytes) -> None:
    path = path_or_none(b"/" + raw)
    if path is None:
        return
    assert path.startswith("/")
    assert "." not in path.split("/")
    assert ".." not in path.split("/")
    assert split_target(b"/" + raw)[1] == (b"/" + raw).partition(b"?")[2]
