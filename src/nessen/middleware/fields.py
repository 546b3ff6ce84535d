"""Small parsers and editors for the list-valued fields middleware touch (Vary, Cache-Control)."""

from __future__ import annotations

from nessen.http import Headers


def has_token(value: str, token: str) -> bool:
    """Whether the comma-separated field ``value`` lists ``token`` (case-insensitive).

    ``token`` must be lower-case, e.g. ``has_token("Origin, Accept-Encoding",
    "accept-encoding")`` is ``True``.
    """
    return any(part.strip().lower() == token for part in value.split(","))


def add_vary(headers: Headers, name: str) -> None:
    """Add ``name`` to the response's ``Vary`` field unless it is already covered.

    RFC 9110 §12.5.5: ``Vary`` lists the request fields that selected the representation;
    ``*`` already covers every field. Repeated ``Vary`` fields are merged into one.

    Args:
        headers: The response's header fields, changed in place.
        name: The request field name to add, e.g. ``"Accept-Encoding"``.
    """
    if "vary" not in headers:
        headers.add("Vary", name)
        return
    values = headers.getall("vary")
    current = ", ".join(values)
    lower = name.lower()
    for part in current.split(","):
        token = part.strip().lower()
        if token == lower or token == "*":
            if len(values) > 1:
                headers["Vary"] = current
            return
    headers["Vary"] = f"{current}, {name}" if current.strip() else name


def vary_names(headers: Headers) -> tuple[str, ...] | None:
    """Return the lower-case request field names in ``Vary``; ``None`` for ``Vary: *``."""
    names: list[str] = []
    for value in headers.getall("vary"):
        for part in value.split(","):
            token = part.strip().lower()
            if token == "*":
                return None
            if token and token not in names:
                names.append(token)
    return tuple(names)


def cache_directives(value: str | None) -> dict[str, str | None]:
    """Parse a ``Cache-Control`` field value into lower-case directive names and arguments.

    RFC 9111 §5.2: ``"max-age=60, no-cache"`` gives ``{"max-age": "60", "no-cache": None}``;
    quoted arguments are unquoted.
    """
    directives: dict[str, str | None] = {}
    if not value:
        return directives
    for part in value.split(","):
        name, sep, argument = part.partition("=")
        name = name.strip().lower()
        if name:
            directives[name] = argument.strip().strip('"') if sep else None
    return directives


def seconds_directive(directives: dict[str, str | None], name: str) -> int | None:
    """Return a delta-seconds directive (``max-age=60`` -> 60); ``None`` if absent or invalid."""
    argument = directives.get(name)
    if argument is None or not argument.isdigit():
        return None
    return int(argument)
