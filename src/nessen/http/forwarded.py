"""Who the client is: its address, scheme and host, believed from trusted proxies only.

One rule, applied once per request and cached on it (:class:`~nessen.http.Request`
``client_ip``, ``scheme``, ``host``), so the handler, the access log, the rate limiter and an
ASGI app's scope all see the same answer.

The socket peer is the client unless it is a trusted proxy (``TRUST_PROXY``, by default
loopback only). A trusted peer's forwarding fields are read, of one kind only
(``PROXY_HEADERS``):

- ``x-forwarded`` (default): ``X-Forwarded-For``, ``X-Forwarded-Proto``,
  ``X-Forwarded-Host``, as nginx, HAProxy, Envoy, Traefik, AWS and Google load balancers
  write them. ``Forwarded`` is ignored.
- ``forwarded``: RFC 7239 ``Forwarded`` (``for=``, ``proto=``, ``host=``).
  ``X-Forwarded-*`` are ignored.

Never both: a proxy that writes one kind passes the other through from the client
untouched, so reading both would let any client forge its address, whichever came first.

The address is the right-most hop that is not a trusted proxy: each proxy appends the
address it received the request from, so only the entries appended by proxies we trust are
believable, and anything further left was written by the client (``X-Forwarded-For:
1.2.3.4`` sent by an attacker stays on the left). If every hop is trusted, the left-most one;
if a hop is not an IP address (``unknown``, an obfuscated ``_name``, garbage), the hop to its
right, the last one a trusted proxy vouched for.

The scheme and host: with ``Forwarded``, the ``proto=`` and ``host=`` of the element whose
``for=`` gave the address (RFC 7239 §5: that element describes the request as our outermost
trusted proxy received it). With ``X-Forwarded-*``, the right-most value of
``X-Forwarded-Proto`` and ``X-Forwarded-Host``, which the proxy nearest us set. A scheme
other than ``http``/``https``, a host that is not ``host[:port]`` (RFC 9110 §7.2), or one
outside ``ALLOWED_HOSTS`` when that is set, is ignored: the connection's own values stay.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolved = tuple[str, str, str | None]
"""``(client address, scheme, forwarded host or None)``."""

X_FORWARDED = "x-forwarded"
FORWARDED = "forwarded"
PROXY_HEADER_KINDS = (X_FORWARDED, FORWARDED)
"""Values of ``PROXY_HEADERS``: which forwarding fields trusted proxies write."""
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1")
"""``TRUST_PROXY``'s default: a proxy on the same host (uvicorn's default trust too)."""

_CACHE_SIZE = 4096
_SCHEMES = {"http": "http", "https": "https"}
HOST_VALUE = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
"""A Host field value: uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2); may be empty."""
_FORWARDED_PAIR = re.compile(
    r'[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^;,\s"]+)[ \t]*'
)
_UNESCAPE = re.compile(r"\\(.)")


def parse_hop(text: str) -> Address | None:
    """Parse one forwarded address: ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]:80``.

    Returns:
        The address (an IPv4-mapped IPv6 address as IPv4), or ``None`` when ``text`` is not
        an IP address (``unknown``, an obfuscated ``_name``, garbage).
    """
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has two or more colons
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """Parse an RFC 7239 ``Forwarded`` field value into its elements, left to right.

    ``for=192.0.2.60;proto=https, for="[2001:db8::1]:4711"`` gives ``[{"for":
    "192.0.2.60", "proto": "https"}, {"for": "[2001:db8::1]:4711"}]``. Parameter names are
    lower-cased; quoted values are unquoted (RFC 9110 §5.6.4). Unquoted values may hold any
    character but ``;``, ``,``, ``"`` and white space (a lenient reading of proxies that do
    not quote IPv6 literals). Empty elements are skipped.

    Returns:
        The elements, or ``None`` when ``value`` is not a ``Forwarded`` value.
    """
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    position = 0
    size = len(value)
    while position < size:
        char = value[position]
        if char in " \t":
            position += 1
            continue
        if char == ",":
            if current:
                elements.append(current)
                current = {}
            position += 1
            continue
        match = _FORWARDED_PAIR.match(value, position)
        if match is None:
            return None
        name, raw = match.group(1).lower(), match.group(2)
        current[name] = _UNESCAPE.sub(r"\1", raw[1:-1]) if raw.startswith('"') else raw
        position = match.end()
        if position < size:
            if value[position] == ";":
                position += 1
            elif value[position] != ",":
                return None
    if current:
        elements.append(current)
    return elements


UNIX_PEER = "unix"
"""The peer address of a connection on a Unix socket, which has none: a local process, so
trusted as a proxy exactly when loopback (127.0.0.1) is."""


class ProxyTrust:
    """The trusted proxies and the rule above; built once per server, shared by its requests.

    The networks are parsed once; each peer's and each hop's verdict is cached (4096
    addresses, then the cache starts again), so a request from an untrusted peer costs one
    dict lookup and reads no header field, and one from a trusted proxy one pass over its
    header fields.

    Args:
        networks: Proxy networks whose forwarding fields are believed
            (``Config.trusted_networks``).
        headers: ``"x-forwarded"`` or ``"forwarded"`` (``PROXY_HEADERS``).
        allows_host: Whether a forwarded host may be used (``ALLOWED_HOSTS``'s check, given
            the raw ``host[:port]`` bytes); ``None`` allows any well-formed host.

    Raises:
        ValueError: ``headers`` is not one of :data:`PROXY_HEADER_KINDS`.
    """

    __slots__ = ("_allows_host", "_forwarded", "_hops", "_networks", "_peers", "_trusts_local")

    def __init__(
        self,
        networks: Iterable[Network],
        *,
        headers: str = X_FORWARDED,
        allows_host: Callable[[bytes], bool] | None = None,
    ) -> None:
        if headers not in PROXY_HEADER_KINDS:
            raise ValueError(f"headers={headers!r}: must be one of {', '.join(PROXY_HEADER_KINDS)}")
        self._networks = tuple(networks)
        loopback = ipaddress.ip_address("127.0.0.1")
        self._trusts_local = any(
            net.version == 4 and loopback in net for net in self._networks
        )  # a peer on a Unix socket (UNIX_PEER) is a local process, as a loopback one
        self._forwarded = headers == FORWARDED
        self._allows_host = allows_host
        self._peers: dict[str, bool] = {}
        self._hops: dict[str, tuple[bool | None, str]] = {}

    def trusts(self, peer: str) -> bool:
        """Whether the socket peer ``peer`` (an address as text) is a trusted proxy."""
        verdict = self._peers.get(peer)
        if verdict is None:
            if peer == UNIX_PEER:
                return self._trusts_local
            verdict = self._classify(peer)[0] is True
            peers = self._peers
            if len(peers) >= _CACHE_SIZE:
                peers.clear()
            peers[peer] = verdict
        return verdict

    def _classify(self, text: str) -> tuple[bool | None, str]:
        """``(trusted, normalised address)``; ``trusted`` is ``None`` when not an IP."""
        hops = self._hops
        found = hops.get(text)
        if found is None:
            address = parse_hop(text)
            if address is None:
                found = (None, text)
            else:
                found = (any(address in net for net in self._networks), str(address))
            if len(hops) >= _CACHE_SIZE:
                hops.clear()
            hops[text] = found
        return found

    def resolve(self, peer: str, scheme: str, raw_headers: list[tuple[bytes, bytes]]) -> Resolved:
        """Apply the rule to a request whose peer :meth:`trusts` says is a proxy.

        Args:
            peer: The socket peer's address.
            scheme: The connection's own scheme (``"http"``, or the host server's).
            raw_headers: The request's header fields as received.

        Returns:
            ``(client address, scheme, forwarded host or None)``.
        """
        if self._forwarded:
            return self._resolve_forwarded(peer, scheme, raw_headers)
        hops = proto = host = None
        for name, value in raw_headers:
            size = len(name)
            if size < 15 or size > 17:  # x-forwarded-for 15, -host 16, -proto 17
                continue
            lower = name.lower()
            if lower == b"x-forwarded-for":
                hops = value if hops is None else hops + b"," + value
            elif lower == b"x-forwarded-proto":
                proto = value if proto is None else proto + b"," + value
            elif lower == b"x-forwarded-host":
                host = value if host is None else host + b"," + value
        client = peer if hops is None else self._walk_for(peer, hops.decode("latin-1"))
        if proto is not None:
            scheme = _SCHEMES.get(
                proto.rpartition(b",")[2].strip().lower().decode("latin-1"), scheme
            )
        forwarded_host = None
        if host is not None:
            forwarded_host = self._checked_host(host.rpartition(b",")[2].strip())
        return client, scheme, forwarded_host

    def _walk_for(self, peer: str, value: str) -> str:
        """The X-Forwarded-For walk from the right (see the module docstring)."""
        classify = self._classify
        chosen = peer
        for hop in reversed(value.split(",")):
            verdict, address = classify(hop.strip())
            if verdict is None:  # not an address: believe nothing left of it
                return chosen
            chosen = address
            if not verdict:
                return address
        return chosen  # every hop is a trusted proxy: the farthest one

    def _resolve_forwarded(
        self, peer: str, scheme: str, raw_headers: list[tuple[bytes, bytes]]
    ) -> Resolved:
        """The walk over RFC 7239 elements; field lines are read right to left."""
        lines = [
            value for name, value in raw_headers if len(name) == 9 and name.lower() == b"forwarded"
        ]
        classify = self._classify
        chosen: dict[str, str] | None = None
        client = peer
        for line in reversed(lines):
            elements = parse_forwarded(line.decode("latin-1"))
            if elements is None:  # a line we cannot read: believe nothing left of it
                break
            stop = False
            for element in reversed(elements):
                verdict, address = classify(element.get("for", ""))
                if verdict is None:
                    stop = True
                    break
                chosen, client = element, address
                if not verdict:
                    stop = True
                    break
            if stop:
                break
        if chosen is None:
            return client, scheme, None
        proto = chosen.get("proto")
        if proto is not None:
            scheme = _SCHEMES.get(proto.strip().lower(), scheme)
        host = chosen.get("host")
        return client, scheme, None if host is None else self._checked_host(host.encode("latin-1"))

    def _checked_host(self, host: bytes) -> str | None:
        """``host`` as text when it is ``host[:port]`` and allowed, else ``None``."""
        if not host or not HOST_VALUE.fullmatch(host):
            return None
        allows = self._allows_host
        if allows is not None and not allows(host):
            return None
        return host.decode("latin-1")
