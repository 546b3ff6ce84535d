"""Pure checks on request data that the parser does not make: the Host allowlist."""

from __future__ import annotations

from collections.abc import Iterable


class HostAllowlist:
    """Decides whether a ``Host`` field value is one this server answers for.

    Entries (from ``ALLOWED_HOSTS``) are compared case-insensitively:

    - ``example.com`` allows that name on any port;
    - ``example.com:8443`` allows that name on that port only;
    - ``*.example.com`` allows every subdomain (``a.example.com``, ``a.b.example.com``)
      but not ``example.com`` itself;
    - IPv6 literals are written in brackets: ``[::1]`` or ``[::1]:3000``;
    - a fully qualified name's trailing dot is ignored on both sides (``example.com.`` is
      ``example.com``, RFC 1034 §3.1), as browsers, curl and nginx's ``server_name`` treat
      it.

    An empty allowlist allows everything.
    """

    __slots__ = ("_any_port", "_exact", "_suffixes")

    def __init__(self, entries: Iterable[str]) -> None:
        self._exact: set[str] = set()
        self._any_port: set[str] = set()
        self._suffixes: list[str] = []
        for entry in entries:
            name, port = _split_port(entry.strip().lower())
            name = name.removesuffix(".")
            if name.startswith("*."):
                self._suffixes.append(name[1:])  # ".example.com"
            elif port:
                self._exact.add(f"{name}:{port}")
            else:
                self._any_port.add(name)

    def __bool__(self) -> bool:
        return bool(self._exact or self._any_port or self._suffixes)

    def allows(self, host: bytes) -> bool:
        """Whether the raw ``Host`` field value ``host`` is allowed.

        Args:
            host: The field value as received, e.g. ``b"api.example.com:8080"``.
        """
        text = host.decode("latin-1").strip().lower()
        if text in self._exact:
            return True
        name, port = _split_port(text)
        if name.endswith("."):  # the root label of a fully qualified name
            name = name[:-1]
            if port and f"{name}:{port}" in self._exact:
                return True
        if name in self._any_port:
            return True
        return any(name.endswith(suffix) and len(name) > len(suffix) for suffix in self._suffixes)


def _split_port(host: str) -> tuple[str, str]:
    """Split ``name[:port]`` (``[v6]:port`` for IPv6) into name and port (``""`` if none)."""
    if host.startswith("["):
        end = host.find("]")
        if end != -1 and host[end + 1 : end + 2] == ":":
            return host[: end + 1], host[end + 2 :]
        return host, ""
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, port
    return host, ""
