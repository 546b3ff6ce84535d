"""The request target: splitting it into path and query, and making the path safe to route."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from nessen.errors import ProtocolError


def split_target(target: bytes) -> tuple[str, bytes]:
    """Split a request target into a decoded, normalised path and the raw query.

    Follows RFC 9112 §3.2: origin-form (``/a/b?x=1``), absolute-form
    (``http://host/a?x=1``, whose authority is dropped here) and asterisk-form (``*``,
    returned as the path ``"*"``). The path is percent-decoded as UTF-8 (invalid
    sequences become U+FFFD) and its dot-segments are removed as RFC 3986 §5.2.4 says,
    after decoding, so ``/a/%2e%2e/b`` routes as ``/b``. A path that would climb above
    the root (``/../etc``) is refused rather than clamped.

    ``%2F`` is decoded to ``/`` too, as nginx decodes ``$uri`` before merging it, though
    RFC 3986 §2.2 does not make a reserved character equivalent to its encoding: so no
    spelling of ``..`` (``%2e%2e%2f``, ``..%2f``, ``.%2e``) survives as a segment, and
    ``/static/%2e%2e%2fsecret`` routes as ``/secret``, which the client could have asked
    for directly. ``/a%2Fb`` and ``/a/b`` are the same path to the router. Decoding
    happens once: ``%252e`` reaches the handler as ``%2e``.

    Args:
        target: The request target bytes exactly as received.

    Returns:
        ``(path, query)``: the path as ``str`` starting with ``/`` (or ``"*"``) and the
        query as the raw bytes after ``?`` (``b""`` when absent).

    Raises:
        ProtocolError: 400 for a target in authority-form, an empty one, a path with a
            NUL after decoding, or one that climbs above the root.
    """
    if target[:1] == b"/":
        raw_path, _, query = target.partition(b"?")
    elif target == b"*":
        return "*", b""
    elif target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        try:
            parts = urlsplit(target)
        except ValueError as exc:  # e.g. an unclosed IPv6 literal in the authority
            raise ProtocolError(
                f"request target {target[:64]!r} has a malformed authority", reason="bad_target"
            ) from exc
        raw_path = parts.path or b"/"
        query = parts.query
    else:
        raise ProtocolError(
            f"request target {target[:64]!r} is not in origin, absolute or asterisk form",
            reason="bad_target",
        )
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path, encoding="utf-8", errors="replace")
    if "\x00" in path:
        raise ProtocolError("request path contains a NUL", reason="bad_target")
    if "/." in path:
        path = remove_dot_segments(path)
    return path, query


def remove_dot_segments(path: str) -> str:
    """Resolve ``.`` and ``..`` segments of an absolute path (RFC 3986 §5.2.4).

    Args:
        path: A path starting with ``/``.

    Returns:
        The path without dot-segments; a trailing ``/.`` or ``/..`` leaves a trailing ``/``.

    Raises:
        ProtocolError: 400 when a ``..`` would climb above the root.
    """
    segments = path.split("/")
    out: list[str] = []
    for segment in segments[1:]:
        if segment == ".":
            continue
        if segment == "..":
            if not out:
                raise ProtocolError(
                    "request path climbs above the root with '..'", reason="path_traversal"
                )
            out.pop()
            continue
        out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)
