"""Settings: one frozen dataclass, built from keyword arguments or the environment, checked once.

Inside the code durations are ``float`` seconds and sizes ``int`` bytes. The environment
keeps the seed's names and units: times in milliseconds, sizes in bytes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nessen.errors import ConfigError
from nessen.http.forwarded import LOOPBACK_NETWORKS, PROXY_HEADER_KINDS, X_FORWARDED

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOST = re.compile(r"^(\*\.)?[A-Za-z0-9.\-_\[\]:]+$")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEVELOPMENT_ENVS = frozenset({"development", "test"})
"""The ``env`` values that show error details to clients; any other value is production."""
LOG_FORMATS = ("json", "console")
RATE_LIMIT_STORES = ("memory", "redis")
"""Values of ``RATE_LIMIT_STORE`` and ``CACHE_STORE``."""
CERT_REQS = ("none", "optional", "required")
"""Values of ``SSL_CERT_REQS``: whether a client certificate is asked for, and required."""
FAIL_MODES = ("open", "closed")
"""Values of ``RATE_LIMIT_FAIL``."""
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
"""URL schemes ``REDIS_URL`` may use (plain TCP, TLS, Unix socket), as redis-py reads them."""
DAY_SECONDS = 86_400.0
GiB = 1 << 30


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Settings for one server process. Built once at startup, read-only after.

    Every field has the default of the architecture's configuration table; the env var
    that sets it is named in each field's doc. ``Config(...)`` validates at once and raises
    :class:`~nessen.errors.ConfigError` listing every invalid field.
    """

    host: str = "0.0.0.0"
    """Address to bind (``HOST``)."""
    port: int = 3000
    """TCP port, 0..65535; 0 picks a free one (``PORT``)."""
    workers: int = 1
    """Worker processes, 1..512 (``WORKERS``); more than one runs a supervisor."""
    worker_timeout: float = 30.0
    """Seconds a worker may go without a heartbeat before the supervisor kills and
    replaces it (``WORKER_TIMEOUT``, ms)."""
    max_requests_per_worker: int = 0
    """Requests a worker serves before it is replaced; 0 = never (``MAX_REQUESTS_PER_WORKER``).
    Replacement starts the new worker first, so no request is lost."""
    max_requests_jitter: int = 0
    """Up to this many extra requests, drawn at random per worker, so workers do not all
    recycle at once (``MAX_REQUESTS_JITTER``)."""
    env: str = "production"
    """Deployment environment (``NESSEN_ENV``, or ``NODE_ENV``). Anything but
    ``development`` or ``test`` behaves as production: JSON logs, no error details sent."""
    log_level: str = "info"
    """One of debug, info, warning, error, critical (``LOG_LEVEL``)."""
    log_format: str | None = None
    """``json`` or ``console``; ``None`` picks json in production, console otherwise
    (``LOG_FORMAT``)."""
    log_buffer_bytes: int = 1024 * 1024
    """Most log output each process holds unwritten, 16 KiB..1 GiB (``LOG_BUFFER_SIZE``,
    bytes). Logging never waits on stderr: lines go to this buffer and a thread writes
    them; when the destination stops reading and the buffer is full, further lines are
    dropped and counted (``nessen_log_lines_dropped_total``). The default, Docker's for
    its non-blocking log mode, holds about 4,000 access lines."""
    log_config: str | None = None
    """A ``logging`` configuration file applied after Nessen's own set-up (``LOG_CONFIG``;
    uvicorn's ``--log-config``): ``.json``, ``.yaml``/``.yml`` (with PyYAML installed) for
    ``logging.config.dictConfig``, anything else an INI file for ``fileConfig``. Loggers
    it does not name stay enabled (``disable_existing_loggers`` is false unless the file
    says otherwise)."""

    max_target_bytes: int = 8192
    """Longest request target; longer gets 414 (``MAX_URL_LENGTH``)."""
    max_header_bytes: int = 16384
    """Largest request line plus header section; larger gets 431 (``MAX_HEADER_SIZE``)."""
    max_header_count: int = 100
    """Most header fields in one request; more gets 431 (``MAX_HEADER_COUNT``)."""
    max_body_bytes: int = 1024 * 1024
    """Largest request content, declared or chunked; larger gets 413 (``MAX_BODY_SIZE``)."""
    max_body_buffer_bytes: int = 0
    """Request content buffered across all connections of a worker at once; a request that
    would go past it gets 503 + Retry-After. 0 picks max(64 MiB, 4 x max_body_bytes)
    (``MAX_BODY_BUFFER_SIZE``)."""

    headers_timeout: float = 10.0
    """Seconds to receive a whole header section; then 408 and close (``HEADERS_TIMEOUT``, ms).
    Counted from accept for a connection's first request, from its first byte for later ones."""
    body_timeout: float = 30.0
    """Longest wait, in seconds, for the next piece of request content (from the end of
    the header section, then from each read that brought content), and the grace period
    before ``body_min_rate`` applies; then 408 and close (``BODY_TIMEOUT``, ms). A long
    upload that keeps arriving is not cut by it."""
    body_min_rate: int = 240
    """Lowest average rate of request content, in bytes per second, once the content has
    been arriving for ``body_timeout``; a slower one gets 408 and close, so a trickle that
    never stalls for a whole ``body_timeout`` is still cut. 0 turns the rate check off
    (``BODY_MIN_RATE``; Kestrel's MinRequestBodyDataRate is 240 bytes/s too)."""
    request_timeout: float = 30.0
    """Seconds a handler may run; then 503 + Retry-After and the handler task is cancelled
    (``REQUEST_TIMEOUT``, ms)."""
    idle_timeout: float = 65.0
    """Seconds an idle persistent connection stays open, above common load balancers' 60 s
    (``IDLE_TIMEOUT``, ms)."""
    send_timeout: float = 30.0
    """Longest wait, in seconds, for the client to take any of the output queued for it
    (checked again after each such wait while output stays queued), and the grace period
    before ``send_min_rate`` applies; then the connection is aborted (``SEND_TIMEOUT``,
    ms). A long response that a client keeps reading is not cut by it."""
    send_min_rate: int = 240
    """Lowest average rate, in bytes per second, at which a client must take queued output
    once it has been behind for ``send_timeout``; a slower one is aborted, so a reader
    that takes a byte now and then cannot hold a connection and its response for ever.
    0 turns the rate check off (``SEND_MIN_RATE``; Kestrel's MinResponseDataRate is 240
    bytes/s too)."""

    max_connections: int = 10_000
    """Open connections per worker; more get 503 and close (``MAX_CONNECTIONS``)."""
    max_concurrent_requests: int = 1000
    """Requests in handlers at once per worker; more get 503 + Retry-After
    (``MAX_CONCURRENT_REQUESTS``)."""
    max_requests_per_connection: int = 0
    """Requests served on one connection before ``Connection: close``; 0 = unlimited
    (``MAX_REQUESTS_PER_CONNECTION``)."""
    max_response_bytes: int = 10 * 1024 * 1024
    """Largest buffered response content; larger is a handler fault, answered with 500
    (``MAX_RESPONSE_SIZE``)."""

    allowed_methods: frozenset[str] = frozenset(
        {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
    )
    """Methods served; others get 501 (``ALLOWED_METHODS``, comma-separated)."""
    allowed_hosts: frozenset[str] = frozenset()
    """Host header allowlist (``host``, ``host:port`` or ``*.domain``); empty allows any; a
    Host not listed gets 400 (``ALLOWED_HOSTS``, comma-separated)."""
    probe_paths: frozenset[str] = frozenset({"/health", "/ready"})
    """Paths served whatever the Host field says (``allowed_hosts`` does not apply), so an
    orchestrator's probe addressed to the pod IP gets the real answer."""
    trust_proxy: bool | tuple[str, ...] = LOOPBACK_NETWORKS
    """Which socket peers are proxies whose forwarding fields (client address, scheme, host)
    are believed: ``False`` (none), ``True`` (every peer: a warning in production) or proxy
    CIDRs (``TRUST_PROXY``: ``false``, ``true`` or a comma-separated CIDR list). Default
    loopback, ``127.0.0.0/8,::1``, as uvicorn's: a proxy on the same host. See
    :mod:`nessen.http.forwarded`."""
    proxy_headers: str = X_FORWARDED
    """Which forwarding fields trusted proxies write (``PROXY_HEADERS``): ``x-forwarded``
    (``X-Forwarded-For``/``-Proto``/``-Host``) or ``forwarded`` (RFC 7239). Only that kind
    is read: a proxy passes the other kind through from the client, forgeable."""

    admin_host: str | None = None
    """Address of the admin listener (``ADMIN_HOST``); ``None``: the same as ``host``."""
    admin_port: int | None = None
    """TCP port of the admin listener, 0..65535, 0 picks a free one (``ADMIN_PORT``); ``None``
    (unset) serves no admin listener. When set, ``/metrics``, ``/api/health`` and the status
    page are served there and no longer on ``port``; ``/health`` and ``/ready`` stay on
    ``port`` (and are on the admin listener too). Must differ from ``port``."""
    admin_allow: tuple[str, ...] = ()
    """Client networks (CIDRs or addresses) that may read ``/metrics``, ``/api/health`` and
    the status page, wherever they are served; others get 403. Empty allows any client
    (``ADMIN_ALLOW``, comma-separated, e.g. ``10.0.0.0/8,127.0.0.1``). The client is the
    one ``trust_proxy`` resolves. ``/health`` and ``/ready`` are never restricted."""

    shutdown_timeout: float = 30.0
    """Seconds the drain may take after SIGTERM before what is left is cut
    (``SHUTDOWN_TIMEOUT``, ms)."""
    shutdown_delay: float = 0.0
    """Seconds to keep serving, with readiness 503, before the drain starts, so load
    balancers stop sending (``SHUTDOWN_DELAY``, ms)."""
    ready_when_degraded: bool = True
    """Whether ``/ready`` answers 200 in the DEGRADED state (``READY_WHEN_DEGRADED``)."""

    rate_limit_max: int = 100
    """Token bucket capacity: requests per window per client key (``RATE_LIMIT_MAX``)."""
    rate_limit_window: float = 60.0
    """Seconds in which a full bucket refills (``RATE_LIMIT_WINDOW``, ms)."""
    rate_limit_max_keys: int = 10_000
    """Client keys tracked at most; the least recently used is evicted
    (``RATE_LIMIT_MAX_KEYS``)."""
    rate_limit_store: str = "memory"
    """``memory`` (per process) or ``redis`` (shared by every worker and replica using the
    same ``REDIS_URL``, so the limit holds across them) (``RATE_LIMIT_STORE``)."""
    rate_limit_fail: str = "open"
    """What the rate limiter does when its shared store fails or is slower than
    ``redis_timeout`` (``RATE_LIMIT_FAIL``): ``open`` lets the request through (the runtime
    goes DEGRADED, ``/ready`` stays 200), ``closed`` answers 503 + ``Retry-After`` and
    ``/ready`` answers 503 until Redis answers again. The memory store never fails."""
    cache_store: str = "memory"
    """Where the response cache keeps entries when it is on (``CACHE_STORE``): ``memory``
    (per process) or ``redis`` (shared: a page cached by one replica is a hit on all)."""
    redis_url: str | None = None
    """Redis URL (``redis://``, ``rediss://`` for TLS, or ``unix://``), required when
    ``rate_limit_store`` or ``cache_store`` is ``redis`` (``REDIS_URL``)."""
    redis_timeout: float = 0.05
    """Seconds one Redis call may take, connecting included, before it counts as failed
    (``REDIS_TIMEOUT``, ms; 1..60000, default 50). A healthy Redis on the same network answers
    in well under 1 ms, so 50 ms is only reached by an unreachable or overloaded one, and it
    bounds what Redis can add to a request's latency."""
    redis_pool_size: int = 16
    """Connections each worker process may open to Redis, 1..10000 (``REDIS_POOL_SIZE``).
    A call that finds all of them busy waits for one within ``redis_timeout``."""
    redis_key_prefix: str = "nessen:"
    """Prepended to every Redis key, so several services can share one Redis
    (``REDIS_KEY_PREFIX``; at most 64 printable ASCII characters, no spaces)."""

    compression_level: int = 6
    """Compression level 1..11; gzip uses at most 9 (``COMPRESSION_LEVEL``)."""
    compression_threshold: int = 1024
    """Smallest content in bytes worth compressing (``COMPRESSION_THRESHOLD``)."""

    ws_max_message_bytes: int = 1024 * 1024
    """Largest WebSocket message received, in bytes, after permessage-deflate
    decompression; a larger one closes the connection with 1009 (``WS_MAX_MESSAGE_SIZE``)."""
    ws_max_frame_bytes: int = 0
    """Largest WebSocket frame received, in bytes; a larger one closes with 1009
    (``WS_MAX_FRAME_SIZE``). 0, the default, is ``ws_max_message_bytes``; set lower, it
    bounds each fragment of a long message sent in pieces."""
    ws_send_buffer_bytes: int = 64 * 1024
    """WebSocket output queued for one client, in bytes, above which the app's ``send``
    waits for the client to read (``WS_SEND_BUFFER_SIZE``); a client that takes none of it
    for ``send_timeout`` is cut."""
    ws_receive_queue: int = 16
    """WebSocket messages received and not yet read by the app, 1..10000; at this many the
    server stops reading the socket until the app catches up (``WS_RECEIVE_QUEUE``)."""
    ws_ping_interval: float = 20.0
    """Seconds between the server's pings on an idle WebSocket; 0 sends none
    (``WS_PING_INTERVAL``, ms)."""
    ws_ping_timeout: float = 20.0
    """Seconds to wait for the pong; a peer that sends none is cut as dead, close code
    1006 in the logs (``WS_PING_TIMEOUT``, ms)."""
    ws_idle_timeout: float = 0.0
    """Seconds a WebSocket may go without a message either way before the server closes it
    with 1001; 0 never (``WS_IDLE_TIMEOUT``, ms). Pings do not count as messages."""
    ws_close_timeout: float = 5.0
    """Seconds the closing handshake may take once the server sent its close frame
    (drain, idle, limit): then the connection is cut; and how long a handler may still run
    after its connection closed: then it is cancelled (``WS_CLOSE_TIMEOUT``, ms)."""
    ws_allowed_origins: frozenset[str] = frozenset()
    """``Origin`` values (``scheme://host[:port]``) a WebSocket handshake may carry besides
    the server's own origin; empty allows same-origin only, ``*`` any. A handshake without
    ``Origin`` (not a browser) is allowed; one from another origin gets 403 (cross-site
    WebSocket hijacking) (``WS_ALLOWED_ORIGINS``, comma-separated)."""
    ws_compression: bool = True
    """Accept permessage-deflate (RFC 7692) when a WebSocket client offers it
    (``WS_COMPRESSION``)."""

    server_header: str = "nessen"
    """Value of the ``Server`` field on every response; empty sends none
    (``--no-server-header``)."""
    extra_headers: tuple[tuple[str, str], ...] = ()
    """``(name, value)`` fields added to every response, the server's own answers
    included (``--header NAME:VALUE``, as uvicorn's)."""
    backlog: int = 2048
    """Length of the listen queue (``BACKLOG``; the kernel caps it at
    ``net.core.somaxconn``)."""
    unix_socket: str | None = None
    """Listen on this Unix socket path instead of ``host:port`` (``UNIX_SOCKET``; uvicorn's
    ``--uds``): for a proxy on the same machine (nginx ``proxy_pass http://unix:PATH``). A
    stale socket file is replaced; one another process listens on is refused; the file is
    removed at exit. Its peers count as loopback for ``TRUST_PROXY``."""
    unix_socket_mode: int = 0o666
    """Permissions of the ``unix_socket`` file, octal in the variable (``UNIX_SOCKET_MODE``,
    default 666 as uvicorn's: any local user, nginx's included, may connect)."""
    listen_fd: int | None = None
    """Serve on this inherited socket (a file descriptor number) instead of binding
    ``host:port`` (``LISTEN_FD``; uvicorn's ``--fd``): systemd socket activation (fd 3), or
    a socket a parent process bound."""

    ssl_certfile: str | None = None
    """PEM file of the server's certificate chain, and of its private key unless
    ``ssl_keyfile`` is set: the main port then speaks HTTPS (``SSL_CERTFILE``). TLS 1.2 at
    least, ALPN ``http/1.1``; a handshake must end within ``headers_timeout``. The admin
    listener stays plain HTTP. Read again by each new worker (so SIGHUP takes up a renewed
    certificate) and, with one process, on SIGHUP."""
    ssl_keyfile: str | None = None
    """PEM file of the private key, when not in ``ssl_certfile`` (``SSL_KEYFILE``)."""
    ssl_keyfile_password: str | None = dataclasses.field(default=None, repr=False)
    """Password of an encrypted private key (``SSL_KEYFILE_PASSWORD``); never logged."""
    ssl_ca_certs: str | None = None
    """PEM file of the CAs a client certificate must chain to (``SSL_CA_CERTS``)."""
    ssl_cert_reqs: str = "none"
    """Client certificates (mutual TLS): ``none`` (not asked for), ``optional`` (checked
    when sent) or ``required`` (no handshake without a valid one) (``SSL_CERT_REQS``;
    uvicorn's 0, 1 and 2 mean the same)."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name, rule in _RULES.items():
            message = rule(getattr(self, name))
            if message:
                problems.append(f"{name}={getattr(self, name)!r}: {message}")
        problems.extend(self._cross_field_problems())
        if problems:
            raise ConfigError(problems)

    def _cross_field_problems(self) -> list[str]:
        problems = []
        if self.max_target_bytes >= self.max_header_bytes:
            problems.append(
                f"max_target_bytes={self.max_target_bytes}: must be below "
                f"max_header_bytes={self.max_header_bytes} (the request line counts toward it, "
                "so 414 could never be sent)"
            )
        if self.max_body_buffer_bytes and self.max_body_buffer_bytes < self.max_body_bytes:
            problems.append(
                f"max_body_buffer_bytes={self.max_body_buffer_bytes}: must be 0 (automatic) or "
                f"at least max_body_bytes={self.max_body_bytes}"
            )
        users = [
            f"{name}='redis'"
            for name in ("rate_limit_store", "cache_store")
            if getattr(self, name) == "redis"
        ]
        if users and not self.redis_url:
            problems.append(f"redis_url=None: required when {' and '.join(users)}")
        tls_only = [
            f"{name}={getattr(self, name)!r}"
            for name in ("ssl_keyfile", "ssl_ca_certs")
            if getattr(self, name) is not None
        ]
        if self.ssl_keyfile_password is not None:
            tls_only.append("ssl_keyfile_password")
        if self.ssl_cert_reqs != "none":
            tls_only.append(f"ssl_cert_reqs={self.ssl_cert_reqs!r}")
        if tls_only and self.ssl_certfile is None:
            problems.append(
                f"ssl_certfile=None: required with {', '.join(tls_only)} (TLS is on only "
                "with a certificate)"
            )
        if self.ssl_cert_reqs != "none" and self.ssl_ca_certs is None:
            problems.append(
                f"ssl_ca_certs=None: required with ssl_cert_reqs={self.ssl_cert_reqs!r} (the "
                "CAs client certificates are checked against)"
            )
        if self.unix_socket is not None and self.listen_fd is not None:
            problems.append(
                f"unix_socket={self.unix_socket!r}: at most one of unix_socket and listen_fd "
                f"(listen_fd={self.listen_fd})"
            )
        if self.admin_port and self.admin_port == self.port:
            problems.append(
                f"admin_port={self.admin_port}: must differ from port={self.port} (each "
                "listener needs its own; leave admin_port unset for no admin listener)"
            )
        return problems

    @property
    def body_buffer_bytes(self) -> int:
        """The effective ``max_body_buffer_bytes`` (its automatic value when 0)."""
        if self.max_body_buffer_bytes:
            return self.max_body_buffer_bytes
        return max(64 * 1024 * 1024, 4 * self.max_body_bytes)

    @property
    def production(self) -> bool:
        """Whether to behave as in production: every ``env`` but ``development`` and ``test``.

        So a misspelt ``NESSEN_ENV=prod`` hides error details instead of exposing them.
        """
        return self.env not in DEVELOPMENT_ENVS

    @property
    def effective_log_format(self) -> str:
        """``log_format``, or the environment's default when it is ``None``."""
        if self.log_format is not None:
            return self.log_format
        return "json" if self.production else "console"

    @property
    def trusted_networks(
        self,
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The proxy networks whose forwarding fields are believed (all when ``True``)."""
        if self.trust_proxy is True:
            return (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
        if self.trust_proxy is False:
            return ()
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in self.trust_proxy)

    @property
    def admin_networks(
        self,
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The client networks of ``admin_allow`` (empty: every client may read)."""
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in self.admin_allow)

    @property
    def admin_address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the admin listener, ``None`` when there is none."""
        if self.admin_port is None:
            return None
        return (self.admin_host if self.admin_host is not None else self.host, self.admin_port)

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied, validated again.

        Raises:
            ConfigError: A changed value is invalid.
        """
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build a Config from environment variables (the seed's names and units).

        Unset or empty variables keep their defaults. Times are read as milliseconds and
        sizes as bytes. ``overrides`` (field names, code units) win over the environment.

        Args:
            environ: The variables to read; ``os.environ`` when ``None``.
            **overrides: Field values applied after the environment.

        Raises:
            ConfigError: Listing every invalid variable as ``NAME='value': rule``.
        """
        values = parse_settings(os.environ if environ is None else environ)
        values.update(overrides)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(_env_names(exc.problems)) from None


def parse_settings(source: Mapping[str, str]) -> dict[str, Any]:
    """The settings ``source`` gives, as field values: each variable parsed and checked.

    What :meth:`Config.from_env` reads, without building a Config (rules between fields,
    such as ``MAX_URL_LENGTH`` below ``MAX_HEADER_SIZE``, are checked when one is built).
    Unset or empty variables are left out.

    Raises:
        ConfigError: Listing every invalid variable as ``NAME='value': rule``.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec in _ENV_SPECS:
        raw, name = _lookup(source, spec.names)
        if raw is None:
            continue
        rule = _RULES.get(spec.field)
        try:
            value = spec.parse(raw)
        except ValueError as exc:
            # Name the allowed range too: the rule's message for a value it must refuse
            # (an optional field's rule accepts None: ask the rule it wraps).
            refuses = getattr(rule, "wrapped", rule)
            allowed = refuses(None) if refuses is not None else None
            problems.append(f"{name}={raw!r}: {exc}" + (f"; {allowed}" if allowed else ""))
            continue
        message = rule(value) if rule is not None else None
        if message:
            problems.append(f"{name}={raw!r}: {message}")
            continue
        values[spec.field] = value
    if problems:
        raise ConfigError(problems)
    return values


# --- validation rules: value -> message or None ----------------------------------------


def _int_range(low: int, high: int, unit: str = "") -> Callable[[Any], str | None]:
    suffix = f" {unit}" if unit else ""

    def rule(value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            return f"must be an integer {low}..{high}{suffix}"
        return None

    return rule


def _seconds(low: float, high: float, *, allow_zero: bool = False) -> Callable[[Any], str | None]:
    def rule(value: Any) -> str | None:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and allow_zero and value == 0:
            return None
        if not ok or not low <= value <= high:
            lowest_ms = "0" if allow_zero else _number(low * 1000)
            lowest_s = "0" if allow_zero else _number(low)
            return f"must be {lowest_ms}..{_number(high * 1000)} ms ({lowest_s}..{_number(high)} s)"
        return None

    return rule


def _number(value: float) -> str:
    """Format a bound without an exponent: ``86400000``, ``0.001``."""
    return f"{value:.15g}"


def _choice(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    def rule(value: Any) -> str | None:
        return None if value in options else f"must be one of {', '.join(options)}"

    return rule


def _methods(value: Any) -> str | None:
    if not value or not all(isinstance(m, str) and _TOKEN.match(m) for m in value):
        return "must be a non-empty set of method tokens, e.g. GET,POST"
    if any(m != m.upper() for m in value):
        return "method names are case-sensitive and must be upper-case"
    return None


def _hosts(value: Any) -> str | None:
    if not all(isinstance(h, str) and _HOST.match(h) for h in value):
        return "must be host names, host:port or *.domain, comma-separated"
    return None


_ORIGIN = re.compile(r"^(\*|[a-z][a-z0-9+.\-]*://[A-Za-z0-9.\-_\[\]:]+)$")


def _origins(value: Any) -> str | None:
    if not all(isinstance(o, str) and _ORIGIN.match(o) for o in value):
        return "must be origins (scheme://host[:port]) or *, comma-separated"
    return None


def _trust(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if not isinstance(value, tuple) or not value:
        return "must be true, false or a list of CIDRs"
    return _networks(value)


def _optional(rule: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    """``rule``, except that ``None`` (unset) is valid."""

    def check(value: Any) -> str | None:
        return None if value is None else rule(value)

    check.wrapped = rule  # type: ignore[attr-defined]
    return check


def _networks(value: Any) -> str | None:
    if not isinstance(value, tuple):
        return "must be a list of CIDRs or addresses, e.g. 10.0.0.0/8,127.0.0.1"
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except (ValueError, TypeError):
            return f"{cidr!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)"
    return None


def _env_name(value: Any) -> str | None:
    if not isinstance(value, str) or not re.match(r"^[a-z][a-z0-9_-]{0,31}$", value):
        return "must be a lower-case name such as development or production"
    return None


def _host(value: Any) -> str | None:
    if not isinstance(value, str) or not value or not _HOST.match(value):
        return "must be an IP address or host name"
    return None


def _header_value(value: Any) -> str | None:
    if not isinstance(value, str) or any(c in value for c in "\r\n\x00"):
        return "must be text without CR, LF or NUL"
    return None


_SERVER_OWNED = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "upgrade", "server"}
)


def header_problem(name: Any, value: Any) -> str | None:
    """What is wrong with a field the server is to add to every response, or ``None``.

    The name must be a token (RFC 9110 §5.1) and not one the server writes itself
    (``Content-Length``, ``Transfer-Encoding``, ``Connection``, ``Keep-Alive``, ``Date``,
    ``Upgrade``; ``Server`` is ``server_header``); the value latin-1 text without CR, LF
    or NUL (RFC 9110 §5.5).
    """
    if not (isinstance(name, str) and _TOKEN.match(name)):
        return f"the name {name!r} is not a token (RFC 9110 §5.1)"
    if name.lower() in _SERVER_OWNED:
        return f"{name} is written by the server itself"
    if not isinstance(value, str) or _header_value(value) or not all(ord(c) < 256 for c in value):
        return "the value must be latin-1 text without CR, LF or NUL"
    return None


def _extra_headers(value: Any) -> str | None:
    if not isinstance(value, tuple):
        return "must be a tuple of (name, value) pairs"
    for pair in value:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            return "must be a tuple of (name, value) pairs"
        problem = header_problem(*pair)
        if problem:
            return problem
    return None


def _redis_url(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.startswith(REDIS_SCHEMES)):
        return None
    return "must be a URL starting redis://, rediss:// or unix://, e.g. redis://localhost:6379/0"


def _key_prefix(value: Any) -> str | None:
    if isinstance(value, str) and len(value) <= 64 and all(33 <= ord(c) <= 126 for c in value):
        return None
    return "must be at most 64 printable ASCII characters without spaces, e.g. nessen:"


def _path(value: Any) -> str | None:
    if not isinstance(value, str) or not value or "\x00" in value:
        return "must be a file path"
    return None


def _parse_mode(raw: str) -> int:
    text = raw.strip()
    if not re.fullmatch(r"0?o?[0-7]{1,4}", text):
        raise ValueError("not an octal file mode such as 660")
    return int(text.replace("o", ""), 8)


def _socket_path(value: Any) -> str | None:
    if not isinstance(value, str) or not value or "\x00" in value:
        return "must be a file path"
    if len(value.encode()) > 107:
        return "must be at most 107 bytes (the limit of a Unix socket address)"
    return None


def _parse_cert_reqs(raw: str) -> str:
    text = raw.strip().lower()
    return {"0": "none", "1": "optional", "2": "required"}.get(text, text)


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


_RULES: dict[str, Callable[[Any], str | None]] = {
    "host": _host,
    "port": _int_range(0, 65535),
    "workers": _int_range(1, 512),
    "worker_timeout": _seconds(1.0, DAY_SECONDS),
    "max_requests_per_worker": _int_range(0, 1 << 40),
    "max_requests_jitter": _int_range(0, 1 << 40),
    "env": _env_name,
    "log_level": _choice(LOG_LEVELS),
    "log_format": lambda v: None if v is None else _choice(LOG_FORMATS)(v),
    "log_buffer_bytes": _int_range(16 * 1024, GiB, "bytes"),
    "log_config": _optional(_path),
    "max_target_bytes": _int_range(16, 1024 * 1024, "bytes"),
    "max_header_bytes": _int_range(256, 1024 * 1024, "bytes"),
    "max_header_count": _int_range(1, 10_000),
    "max_body_bytes": _int_range(0, 64 * GiB, "bytes"),
    "max_body_buffer_bytes": _int_range(0, 1024 * GiB, "bytes"),
    "headers_timeout": _seconds(0.001, DAY_SECONDS),
    "body_timeout": _seconds(0.001, DAY_SECONDS),
    "body_min_rate": _int_range(0, 1024 * 1024 * 1024, "bytes per second"),
    "request_timeout": _seconds(0.001, DAY_SECONDS),
    "idle_timeout": _seconds(0.001, DAY_SECONDS),
    "send_timeout": _seconds(0.001, DAY_SECONDS),
    "send_min_rate": _int_range(0, 1024 * 1024 * 1024, "bytes per second"),
    "max_connections": _int_range(1, 1_000_000),
    "max_concurrent_requests": _int_range(1, 1_000_000),
    "max_requests_per_connection": _int_range(0, 1 << 31),
    "max_response_bytes": _int_range(1, 64 * GiB, "bytes"),
    "allowed_methods": _methods,
    "allowed_hosts": _hosts,
    "probe_paths": lambda v: (
        None
        if all(isinstance(p, str) and p.startswith("/") for p in v)
        else "must be paths starting with /"
    ),
    "trust_proxy": _trust,
    "proxy_headers": _choice(PROXY_HEADER_KINDS),
    "admin_host": _optional(_host),
    "admin_port": _optional(_int_range(0, 65535)),
    "admin_allow": _networks,
    "shutdown_timeout": _seconds(0.001, DAY_SECONDS),
    "shutdown_delay": _seconds(0.0, DAY_SECONDS, allow_zero=True),
    "ready_when_degraded": _bool,
    "rate_limit_max": _int_range(1, 1_000_000_000),
    "rate_limit_window": _seconds(0.001, DAY_SECONDS),
    "rate_limit_max_keys": _int_range(1, 100_000_000),
    "rate_limit_store": _choice(RATE_LIMIT_STORES),
    "rate_limit_fail": _choice(FAIL_MODES),
    "cache_store": _choice(RATE_LIMIT_STORES),
    "redis_url": _redis_url,
    "redis_timeout": _seconds(0.001, 60.0),
    "redis_pool_size": _int_range(1, 10_000),
    "redis_key_prefix": _key_prefix,
    "compression_level": _int_range(1, 11),
    "compression_threshold": _int_range(0, 64 * GiB, "bytes"),
    "ws_max_message_bytes": _int_range(1, GiB, "bytes"),
    "ws_max_frame_bytes": _int_range(0, GiB, "bytes"),
    "ws_send_buffer_bytes": _int_range(1024, GiB, "bytes"),
    "ws_receive_queue": _int_range(1, 10_000),
    "ws_ping_interval": _seconds(0.001, DAY_SECONDS, allow_zero=True),
    "ws_ping_timeout": _seconds(0.001, DAY_SECONDS),
    "ws_idle_timeout": _seconds(0.001, DAY_SECONDS, allow_zero=True),
    "ws_close_timeout": _seconds(0.001, 600.0),
    "ws_allowed_origins": _origins,
    "ws_compression": _bool,
    "server_header": _header_value,
    "extra_headers": _extra_headers,
    "backlog": _int_range(1, 65535),
    "unix_socket": _optional(_socket_path),
    "unix_socket_mode": lambda v: (
        None if isinstance(v, int) and 0 <= v <= 0o777 else "must be an octal mode, 000..777"
    ),
    "listen_fd": _optional(_int_range(0, 1 << 20)),
    "ssl_certfile": _optional(_path),
    "ssl_keyfile": _optional(_path),
    "ssl_keyfile_password": lambda v: None if v is None or isinstance(v, str) else "must be text",
    "ssl_ca_certs": _optional(_path),
    "ssl_cert_reqs": _choice(CERT_REQS),
}


# --- environment parsing: text -> value, or ValueError with the rule ----------------------


def _parse_int(raw: str) -> int:
    text = raw.strip().replace("_", "")
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError("not a non-negative whole number")
    return int(text)


def _parse_ms(raw: str) -> float:
    text = raw.strip().replace("_", "")
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        raise ValueError("not a number of milliseconds")
    return float(text) / 1000.0


def parse_bool(raw: str) -> bool:
    """An environment variable's boolean: ``1/true/yes/on`` or ``0/false/no/off``, any case.

    Raises:
        ValueError: Anything else.
    """
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_trust(raw: str) -> bool | tuple[str, ...]:
    text = raw.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    return _parse_list(raw)


def _parse_level(raw: str) -> str:
    level = raw.strip().lower()
    return "warning" if level == "warn" else level


@dataclass(frozen=True, slots=True)
class _EnvSpec:
    field: str
    names: tuple[str, ...]
    parse: Callable[[str], Any] = dataclasses.field(default=lambda raw: raw.strip())


_ENV_SPECS: tuple[_EnvSpec, ...] = (
    _EnvSpec("host", ("HOST",)),
    _EnvSpec("port", ("PORT",), _parse_int),
    _EnvSpec("workers", ("WORKERS",), _parse_int),
    _EnvSpec("worker_timeout", ("WORKER_TIMEOUT",), _parse_ms),
    _EnvSpec("max_requests_per_worker", ("MAX_REQUESTS_PER_WORKER",), _parse_int),
    _EnvSpec("max_requests_jitter", ("MAX_REQUESTS_JITTER",), _parse_int),
    _EnvSpec("env", ("NESSEN_ENV", "NODE_ENV"), lambda raw: raw.strip().lower()),
    _EnvSpec("log_level", ("LOG_LEVEL",), _parse_level),
    _EnvSpec("log_format", ("LOG_FORMAT",), lambda raw: raw.strip().lower()),
    _EnvSpec("log_buffer_bytes", ("LOG_BUFFER_SIZE",), _parse_int),
    _EnvSpec("log_config", ("LOG_CONFIG",)),
    _EnvSpec("max_target_bytes", ("MAX_URL_LENGTH",), _parse_int),
    _EnvSpec("max_header_bytes", ("MAX_HEADER_SIZE",), _parse_int),
    _EnvSpec("max_header_count", ("MAX_HEADER_COUNT",), _parse_int),
    _EnvSpec("max_body_bytes", ("MAX_BODY_SIZE",), _parse_int),
    _EnvSpec("max_body_buffer_bytes", ("MAX_BODY_BUFFER_SIZE",), _parse_int),
    _EnvSpec("headers_timeout", ("HEADERS_TIMEOUT",), _parse_ms),
    _EnvSpec("body_timeout", ("BODY_TIMEOUT",), _parse_ms),
    _EnvSpec("body_min_rate", ("BODY_MIN_RATE",), _parse_int),
    _EnvSpec("request_timeout", ("REQUEST_TIMEOUT",), _parse_ms),
    _EnvSpec("idle_timeout", ("IDLE_TIMEOUT",), _parse_ms),
    _EnvSpec("send_timeout", ("SEND_TIMEOUT",), _parse_ms),
    _EnvSpec("send_min_rate", ("SEND_MIN_RATE",), _parse_int),
    _EnvSpec("max_connections", ("MAX_CONNECTIONS",), _parse_int),
    _EnvSpec("max_concurrent_requests", ("MAX_CONCURRENT_REQUESTS",), _parse_int),
    _EnvSpec("max_requests_per_connection", ("MAX_REQUESTS_PER_CONNECTION",), _parse_int),
    _EnvSpec("max_response_bytes", ("MAX_RESPONSE_SIZE",), _parse_int),
    _EnvSpec(
        "allowed_methods", ("ALLOWED_METHODS",), lambda raw: frozenset(_parse_list(raw.upper()))
    ),
    _EnvSpec("allowed_hosts", ("ALLOWED_HOSTS",), lambda raw: frozenset(_parse_list(raw))),
    _EnvSpec("trust_proxy", ("TRUST_PROXY",), _parse_trust),
    _EnvSpec("proxy_headers", ("PROXY_HEADERS",), lambda raw: raw.strip().lower()),
    _EnvSpec("admin_host", ("ADMIN_HOST",)),
    _EnvSpec("admin_port", ("ADMIN_PORT",), _parse_int),
    _EnvSpec("admin_allow", ("ADMIN_ALLOW",), _parse_list),
    _EnvSpec("shutdown_timeout", ("SHUTDOWN_TIMEOUT",), _parse_ms),
    _EnvSpec("shutdown_delay", ("SHUTDOWN_DELAY",), _parse_ms),
    _EnvSpec("ready_when_degraded", ("READY_WHEN_DEGRADED",), parse_bool),
    _EnvSpec("rate_limit_max", ("RATE_LIMIT_MAX",), _parse_int),
    _EnvSpec("rate_limit_window", ("RATE_LIMIT_WINDOW",), _parse_ms),
    _EnvSpec("rate_limit_max_keys", ("RATE_LIMIT_MAX_KEYS",), _parse_int),
    _EnvSpec("rate_limit_store", ("RATE_LIMIT_STORE",), lambda raw: raw.strip().lower()),
    _EnvSpec("rate_limit_fail", ("RATE_LIMIT_FAIL",), lambda raw: raw.strip().lower()),
    _EnvSpec("cache_store", ("CACHE_STORE",), lambda raw: raw.strip().lower()),
    _EnvSpec("redis_url", ("REDIS_URL",)),
    _EnvSpec("redis_timeout", ("REDIS_TIMEOUT",), _parse_ms),
    _EnvSpec("redis_pool_size", ("REDIS_POOL_SIZE",), _parse_int),
    _EnvSpec("redis_key_prefix", ("REDIS_KEY_PREFIX",), lambda raw: raw.strip()),
    _EnvSpec("compression_level", ("COMPRESSION_LEVEL",), _parse_int),
    _EnvSpec("compression_threshold", ("COMPRESSION_THRESHOLD",), _parse_int),
    _EnvSpec("ws_max_message_bytes", ("WS_MAX_MESSAGE_SIZE",), _parse_int),
    _EnvSpec("ws_max_frame_bytes", ("WS_MAX_FRAME_SIZE",), _parse_int),
    _EnvSpec("ws_send_buffer_bytes", ("WS_SEND_BUFFER_SIZE",), _parse_int),
    _EnvSpec("ws_receive_queue", ("WS_RECEIVE_QUEUE",), _parse_int),
    _EnvSpec("ws_ping_interval", ("WS_PING_INTERVAL",), _parse_ms),
    _EnvSpec("ws_ping_timeout", ("WS_PING_TIMEOUT",), _parse_ms),
    _EnvSpec("ws_idle_timeout", ("WS_IDLE_TIMEOUT",), _parse_ms),
    _EnvSpec("ws_close_timeout", ("WS_CLOSE_TIMEOUT",), _parse_ms),
    _EnvSpec(
        "ws_allowed_origins",
        ("WS_ALLOWED_ORIGINS",),
        lambda raw: frozenset(o.lower().rstrip("/") for o in _parse_list(raw)),
    ),
    _EnvSpec("ws_compression", ("WS_COMPRESSION",), parse_bool),
    _EnvSpec("backlog", ("BACKLOG",), _parse_int),
    _EnvSpec("unix_socket", ("UNIX_SOCKET",)),
    _EnvSpec("unix_socket_mode", ("UNIX_SOCKET_MODE",), _parse_mode),
    _EnvSpec("listen_fd", ("LISTEN_FD",), _parse_int),
    _EnvSpec("ssl_certfile", ("SSL_CERTFILE",)),
    _EnvSpec("ssl_keyfile", ("SSL_KEYFILE",)),
    _EnvSpec("ssl_keyfile_password", ("SSL_KEYFILE_PASSWORD",), lambda raw: raw),
    _EnvSpec("ssl_ca_certs", ("SSL_CA_CERTS",)),
    _EnvSpec("ssl_cert_reqs", ("SSL_CERT_REQS",), _parse_cert_reqs),
)


_HELP_NOTES = {
    "NESSEN_ENV": "production, development or test (NODE_ENV too)",
    "LOG_FORMAT": "json or console; none: json in production, console otherwise",
    "ADMIN_HOST": "none: HOST's",
    "MAX_BODY_BUFFER_SIZE": "0: max(64 MiB, 4 x MAX_BODY_SIZE)",
    "MAX_REQUESTS_PER_CONNECTION": "0: no limit",
    "MAX_REQUESTS_PER_WORKER": "0: no limit",
    "PROXY_HEADERS": "x-forwarded or forwarded",
    "TRUST_PROXY": "true, false, or addresses and networks, comma-separated",
    "RATE_LIMIT_STORE": "memory or redis",
    "RATE_LIMIT_FAIL": "open or closed",
    "CACHE_STORE": "memory or redis",
    "SSL_CERTFILE": "none: plain HTTP; a PEM file turns TLS on",
    "LOG_CONFIG": "a dictConfig .json/.yaml file, or an INI fileConfig file",
    "UNIX_SOCKET": "none: HOST:PORT; a path: listen on that Unix socket instead",
    "UNIX_SOCKET_MODE": "octal",
    "LISTEN_FD": "none: bind HOST:PORT; a number: serve on that inherited socket",
    "SSL_CERT_REQS": "none, optional or required (0, 1, 2)",
}
"""What a default or a value means, where the default alone does not say."""
_HELP_UNITS = {"COMPRESSION_THRESHOLD": "bytes"}
"""Units the field name does not give."""


def settings_help() -> list[tuple[str, str, str, str]]:
    """Every setting ``Config.from_env`` reads: ``(variable, unit, default, note)``.

    In table order. The unit is the variable's (``ms`` for times, which the fields hold in
    seconds; ``bytes``, ``bytes/s``, or ``""``), the default is written as the variable
    would give it, so a help text built from this cannot drift from the code, and the
    note says what a value means where the default alone does not (``""`` if nothing).
    """
    defaults = Config()
    rows = []
    for spec in _ENV_SPECS:
        value = getattr(defaults, spec.field)
        if spec.parse is _parse_ms:
            unit = "ms"
            shown = "none" if value is None else f"{value * 1000:g}"
        elif spec.parse is _parse_mode:
            unit, shown = "", f"{value:o}"
        else:
            unit = _HELP_UNITS.get(spec.names[0]) or (
                "bytes"
                if spec.field.endswith("_bytes")
                else "bytes/s"
                if spec.field.endswith("_rate")
                else ""
            )
            if value is None:
                shown = "none"
            elif isinstance(value, bool):
                shown = str(value).lower()
            elif isinstance(value, frozenset | tuple | list):
                shown = ",".join(sorted(value)) or "(empty)"
            else:
                shown = str(value) if value != "" else "(empty)"
        rows.append((spec.names[0], unit, shown, _HELP_NOTES.get(spec.names[0], "")))
    return rows


ENV_VARS: dict[str, str] = {spec.names[0]: spec.field for spec in _ENV_SPECS}
"""Every environment variable ``Config.from_env`` reads, mapped to its field."""
ENV_ALIASES: dict[str, str] = {alias: spec.field for spec in _ENV_SPECS for alias in spec.names[1:]}
"""Accepted alternative names (``NODE_ENV`` for ``NESSEN_ENV``)."""


def _lookup(environ: Mapping[str, str], names: tuple[str, ...]) -> tuple[str | None, str]:
    for name in names:
        raw = environ.get(name)
        if raw is not None and raw.strip() != "":
            return raw, name
    return None, names[0]


def _env_names(problems: list[str]) -> list[str]:
    """Rewrite cross-field problems from field names to env var names."""
    field_to_env = {spec.field: spec.names[0] for spec in _ENV_SPECS}
    out = []
    for problem in problems:
        for field_name, env_name in sorted(field_to_env.items(), key=lambda kv: -len(kv[0])):
            problem = re.sub(rf"\b{field_name}\b", env_name, problem)
        out.append(problem)
    return out
