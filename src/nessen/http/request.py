"""The request a handler receives (its ``ctx``), and its parsed query."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import parse_qsl

import orjson

from nessen.errors import HTTPError
from nessen.http.forwarded import ProxyTrust, Resolved
from nessen.http.headers import Headers

if TYPE_CHECKING:
    from nessen.http.response import Response

MAX_QUERY_FIELDS = 1000
"""Most ``name=value`` pairs parsed from one query string; more is answered with 400."""

_ID_PREFIX = os.urandom(6).hex()  # secrets.token_hex(6), without importing secrets
_id_counter = itertools.count(1)


def _new_id_prefix() -> None:
    """Draw a fresh id prefix and restart the counter, in every forked child.

    Workers forked from one supervisor would otherwise hand out the same ids.
    """
    global _ID_PREFIX, _id_counter
    _ID_PREFIX = os.urandom(6).hex()
    _id_counter = itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)


def new_request_id() -> str:
    """Return an id unique across processes and restarts: 48 random bits, then a counter.

    The 48 bits are drawn per process (again after a ``fork``), so ids from workers of one
    supervisor do not collide.
    """
    return f"{_ID_PREFIX}-{next(_id_counter):08x}"


class Query(Mapping[str, str]):
    """Parsed query parameters: ``query["page"]`` is the first value, ``getall`` all of them.

    Built from ``application/x-www-form-urlencoded`` rules (``+`` is a space, percent
    escapes decode as UTF-8, blank values kept).
    """

    __slots__ = ("_map", "_pairs")

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs
        first: dict[str, str] = {}
        for name, value in pairs:
            first.setdefault(name, value)
        self._map = first

    @classmethod
    def parse(cls, query: bytes) -> Query:
        """Parse a raw query string.

        Raises:
            HTTPError: 400 when it holds more than ``MAX_QUERY_FIELDS`` fields.
        """
        if not query:
            return cls([])
        try:
            pairs = parse_qsl(
                query.decode("latin-1"),
                keep_blank_values=True,
                encoding="utf-8",
                errors="replace",
                max_num_fields=MAX_QUERY_FIELDS,
            )
        except ValueError as exc:
            raise HTTPError(400, f"query has more than {MAX_QUERY_FIELDS} fields") from exc
        return cls(pairs)

    def __getitem__(self, name: str) -> str:
        return self._map[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def getall(self, name: str) -> list[str]:
        """Return every value of ``name`` in order; ``[]`` when absent."""
        return [value for key, value in self._pairs if key == name]

    def multi_items(self) -> list[tuple[str, str]]:
        """Return every ``(name, value)`` pair in order."""
        return list(self._pairs)

    def __repr__(self) -> str:
        return f"Query({self._pairs!r})"


# Outcomes of a response that did not go out whole (see Request.on_finished).
CLIENT_DISCONNECTED = "client_disconnected"
"""The client closed the connection before the whole response was handed over."""
SEND_TIMEOUT = "send_timeout"
"""The client read nothing for ``send_timeout``: the server aborted the connection."""
REQUEST_TIMEOUT = "request_timeout"
"""The handler ran past ``request_timeout``: the server answered 503 and cancelled it."""
SHUTDOWN_CUT = "shutdown_cut"
"""The drain deadline passed while the handler ran or the response was being written."""
RESPONSE_ERROR = "response_error"
"""The response failed after its status line went out (its stream raised, or produced a
length other than its Content-Length): the server aborted the connection."""

FinishedHook: TypeAlias = "Callable[[Request, Response | None, int, int, str | None, float], None]"
"""What :attr:`Request.on_finished` holds: ``(request, response, status, content_bytes,
outcome, duration)``; see there."""


class Request:
    """One parsed HTTP request: the ``ctx`` every handler and middleware receives.

    Read-only to handlers; the one mutable part is :attr:`state`, a dict where middleware
    leaves data for the code inside it. The server builds it when the header section is
    complete and fills :attr:`body` once the content has arrived (the handler runs after).
    Headers and query are parsed on first access, so a handler that never reads them does
    not pay for them.
    """

    __slots__ = (
        "_body",
        "_client",
        "_headers",
        "_host",
        "_id",
        "_method",
        "_params",
        "_path",
        "_proxy",
        "_query",
        "_query_string",
        "_raw_headers",
        "_resolved",
        "_scheme",
        "_state",
        "_target",
        "_version",
        "on_finished",
        "route",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        path: str,
        query_string: bytes = b"",
        raw_headers: list[tuple[bytes, bytes]] | None = None,
        *,
        body: bytes = b"",
        client: tuple[str, int] | None = None,
        http_version: str = "1.1",
        headers: Headers | None = None,
        scheme: str = "http",
        proxy: ProxyTrust | None = None,
    ) -> None:
        self._method = method
        self._target = target
        self._path = path
        self._query_string = query_string
        self._raw_headers = raw_headers if raw_headers is not None else []
        self._headers = headers
        self._query: Query | None = None
        self._params: dict[str, Any] = {}
        self._body = body
        self._client = client
        self._version = http_version
        self._scheme = scheme
        self._proxy = proxy
        self._resolved: Resolved | None = None
        self._host: str | None = None
        self._id: str | None = None
        self.route: str | None = None
        """The matched route template (``/users/{id}``), ``None`` until routed or if none."""
        self._state: dict[str, Any] | None = None  # made on first use (see state)
        self.on_finished: FinishedHook | None = None
        """Called once by the server when the response is over, with what went on the wire.

        ``on_finished(request, response, status, content_bytes, outcome, duration)``:

        - ``response``: the :class:`~nessen.http.Response` the server serialised (the
          server's own 500 when it refused the handler's), or ``None`` for an answer the
          server made itself (503 after ``request_timeout``) or when nothing was sent.
        - ``status``: the status code sent; 0 when no status line went out (the client
          left, or the drain cut the handler, before the response began).
        - ``content_bytes``: content bytes handed to the kernel (no head, no chunk framing;
          0 for HEAD, 204, 304). When the connection ended with part of the response still
          queued in the server, that part is not counted.
        - ``outcome``: ``None`` when the whole response was handed over, else why it was
          not, or why the server answered instead of the handler: ``"client_disconnected"``,
          ``"send_timeout"``, ``"request_timeout"``, ``"shutdown_cut"``,
          ``"response_error"``, or the ``reason`` of a refusal of the request's content
          while its handler ran (``"body_timeout"``, ``"body_too_large"``...).
        - ``duration``: seconds from the request's first byte to the last byte handed to
          the kernel (or to the cut).

        ``None`` (the default) costs nothing. The access log sets it; to add your own, keep
        the one already set and call it too. It runs on the event loop: it must be quick; an
        exception it raises is logged and ignored.
        """

    @property
    def id(self) -> str:
        """The request id: echoed as ``X-Request-ID`` and put in every log line."""
        request_id = self._id
        if request_id is None:
            request_id = self._id = new_request_id()
        return request_id

    @property
    def method(self) -> str:
        """The method token, upper-case as sent (``GET``)."""
        return self._method

    @property
    def target(self) -> bytes:
        """The raw request target as received (RFC 9112 §3.2), e.g. ``b"/a%20b?x=1"``."""
        return self._target

    @property
    def path(self) -> str:
        """The path: percent-decoded, dot-segments removed, always starting with ``/``."""
        return self._path

    @property
    def query_string(self) -> bytes:
        """The raw query bytes after ``?``; ``b""`` when none."""
        return self._query_string

    @property
    def query(self) -> Query:
        """The parsed query (see :class:`Query`).

        Raises:
            HTTPError: 400 when the query has too many fields.
        """
        query = self._query
        if query is None:
            query = self._query = Query.parse(self._query_string)
        return query

    @property
    def state(self) -> dict[str, Any]:
        """Free-form per-request data that middleware passes inward (made on first use)."""
        state = self._state
        if state is None:
            state = self._state = {}
        return state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self._state = value

    @property
    def headers(self) -> Headers:
        """Request header fields, names lower-cased, values as latin-1 text."""
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers.from_raw(self._raw_headers)
        return headers

    def header(self, name: str) -> str | None:
        """One field's value (repeated fields joined with ``", "``), ``None`` when absent.

        The same answer as ``headers.get(name)``, without building :attr:`headers` when it
        was not built yet: a scan of the raw fields, for middleware that reads one or two.
        """
        headers = self._headers
        if headers is not None:
            return headers.get(name)
        key = name.lower().encode("latin-1")
        size = len(key)
        found: str | None = None
        for raw_name, value in self._raw_headers:
            if len(raw_name) == size and raw_name.lower() == key:
                text = value.decode("latin-1")
                found = text if found is None else f"{found}, {text}"
        return found

    @property
    def params(self) -> dict[str, Any]:
        """Path parameters from the route template (``{id:int}`` gives an ``int``)."""
        return self._params

    @property
    def body(self) -> bytes:
        """The whole request content; ``b""`` when there is none."""
        return self._body

    content_pending: bool = False
    """Whether the content is still to be read with :meth:`read`.

    True only for a request whose client sent ``Expect: 100-continue`` and waits for the
    ``100`` before it sends the content (RFC 9110 §10.1.1), until it is read. The router
    reads it just before calling the route's handler, so a request refused before it
    (404, 405, 401 or 429 from middleware) is answered without the upload. (A class
    attribute here, an instance one on the server's deferred requests: no call per
    request.)"""

    async def read(self) -> bytes:
        """The whole request content, read first if it is still to come.

        See :attr:`content_pending`: a middleware that needs the content of such a
        request before the router does awaits this.

        Raises:
            ClientDisconnected: (``nessen.server.body``) The connection closed, or the
                server refused the content (413, 408), before it was complete.
        """
        return self._body

    @property
    def peer(self) -> tuple[str, int] | None:
        """The socket peer's ``(address, port)``, ``None`` when unknown.

        Behind a proxy this is the proxy; :attr:`client` is who sent the request.
        """
        return self._client

    @property
    def peer_ip(self) -> str:
        """The socket peer's address (``""`` when unknown); see :attr:`peer`."""
        client = self._client
        return client[0] if client is not None else ""

    def _resolve(self) -> Resolved:
        """``(client address, scheme, forwarded host or None)``, worked out once.

        See :mod:`nessen.http.forwarded`: a peer that is not a trusted proxy is the client,
        and its forwarding fields are never read.
        """
        resolved = self._resolved
        if resolved is None:
            client = self._client
            peer = client[0] if client is not None else ""
            proxy = self._proxy
            if proxy is None or not proxy.trusts(peer):
                resolved = (peer, self._scheme, None)
            else:
                resolved = proxy.resolve(peer, self._scheme, self._raw_headers)
            self._resolved = resolved
        return resolved

    @property
    def client_ip(self) -> str:
        """The client's address: the peer, or the one a trusted proxy forwarded.

        Behind a proxy in ``TRUST_PROXY``, the right-most untrusted hop it forwarded (see
        :mod:`nessen.http.forwarded`). ``""`` when unknown. The access log, the rate
        limiter and an ASGI app's ``scope["client"]`` use the same value; the socket peer
        is :attr:`peer_ip`.
        """
        resolved = self._resolved
        if resolved is None:
            if self._proxy is None:  # no proxy is trusted: nothing to work out
                client = self._client
                return client[0] if client is not None else ""
            resolved = self._resolve()  # an untrusted peer: one dict lookup, no field read
        return resolved[0]

    @property
    def client(self) -> tuple[str, int] | None:
        """``(client_ip, port)``: the peer's, or ``(forwarded address, 0)`` behind a proxy.

        As uvicorn sets ``scope["client"]`` from proxy headers: the client's port is not
        known there. ``None`` when the peer is unknown.
        """
        peer = self._client
        if peer is None or self._proxy is None:
            return peer
        address = self._resolve()[0]
        return peer if address == peer[0] else (address, 0)

    @property
    def scheme(self) -> str:
        """``"http"`` or ``"https"``: the connection's, or the one a trusted proxy forwarded.

        Behind a proxy in ``TRUST_PROXY``, the scheme the client used, from
        ``X-Forwarded-Proto`` or ``Forwarded: proto=``.
        """
        resolved = self._resolved
        if resolved is None:
            if self._proxy is None:
                return self._scheme
            resolved = self._resolve()
        return resolved[1]

    @property
    def host(self) -> str:
        """The host the client asked for, ``host[:port]`` as sent.

        Behind a trusted proxy, its ``X-Forwarded-Host`` (or ``Forwarded: host=``) when
        well-formed and allowed by ``ALLOWED_HOSTS``; otherwise the ``Host`` field, or the
        authority of an absolute-form target (RFC 9112 §3.2.2); ``""`` when there is none.
        """
        host = self._host
        if host is None:
            forwarded = self._resolve()[2] if self._proxy is not None else None
            if forwarded is not None:
                host = forwarded
            else:
                target = self._target
                if target[:1] != b"/" and b"://" in target[:16]:
                    authority = target.split(b"/", 3)[2].partition(b"?")[0]
                    host = authority.rpartition(b"@")[2].decode("latin-1")
                else:
                    host = (self.header("host") or "").strip()
            self._host = host
        return host

    @property
    def http_version(self) -> str:
        """``"1.1"`` or ``"1.0"``."""
        return self._version

    def text(self) -> str:
        """Decode the body with the ``charset`` of its Content-Type, UTF-8 by default.

        Undecodable bytes become U+FFFD rather than raising.
        """
        charset = "utf-8"
        content_type = self.headers.get("content-type")
        if content_type and "charset=" in content_type:
            charset = content_type.split("charset=", 1)[1].split(";", 1)[0].strip(" \"'")
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """Parse the body as JSON (RFC 8259).

        Raises:
            HTTPError: 400 ``"invalid JSON body"`` when the body is empty or not valid JSON.
        """
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, "invalid JSON body") from exc

    def __repr__(self) -> str:
        return f"<Request {self._method} {self._path!r}>"
