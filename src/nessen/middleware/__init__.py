"""Built-in middleware, each a factory returning an ``async (ctx, next) -> Response``.

:func:`default_stack` builds the default pipeline from a :class:`~nessen.config.Config`
(outermost first): request id -> access log -> security headers -> [CORS] -> rate limit ->
[cache] -> compression. CORS and the cache are off unless asked for. Every factory can also
be used on its own with ``runtime.use(...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nessen.app.pipeline import Middleware
from nessen.config import Config
from nessen.errors import ConfigError
from nessen.middleware.access_log import logging_middleware
from nessen.middleware.cache import cache_middleware
from nessen.middleware.compression import compression_middleware
from nessen.middleware.cors import cors_middleware
from nessen.middleware.rate_limit import PROBE_PATHS, rate_limit_middleware
from nessen.middleware.request_id import request_id_middleware
from nessen.middleware.security_headers import security_headers_middleware
from nessen.stores import Store

Option = bool | Mapping[str, Any]
"""How :func:`default_stack` takes each built-in: ``True`` (on, settings from the config),
``False`` (off) or a mapping of the factory's keyword arguments (on, these arguments over
the config's)."""

STACK_ORDER = (
    "request_id",
    "access_log",
    "security_headers",
    "cors",
    "rate_limit",
    "cache",
    "compression",
)
"""The built-ins in pipeline order, outermost first."""


def default_stack(
    config: Config | None = None,
    *,
    request_id: Option = True,
    access_log: Option = True,
    security_headers: Option = True,
    cors: Option = False,
    rate_limit: Option = True,
    cache: Option = False,
    compression: Option = True,
    redis_store: Store | None = None,
) -> list[Middleware]:
    """Build the built-in middleware in their default order, outermost first.

    The order is request id (so every later log line carries it) -> access log (so it
    sees every answer, 429s and CORS refusals included) -> security headers -> CORS
    (preflights answered before rate limiting) -> rate limit -> cache (hits are still
    limited) -> compression (innermost, so the cache stores compressed bodies). User
    middleware added with ``runtime.use()`` runs inside all of them.

    Each keyword is ``True`` (use the config's settings), ``False`` (leave it out) or a
    mapping of keyword arguments for its factory, applied over the config's; e.g.
    ``default_stack(config, rate_limit=False, compression={"level": 4})`` or
    ``default_stack(config, cors={"allow_origins": ["https://app.example"]})``.

    Args:
        config: Settings (``Config()`` defaults when ``None``). Used: ``rate_limit_max``,
            ``rate_limit_window``, ``rate_limit_max_keys``, ``rate_limit_store``,
            ``rate_limit_fail``, ``cache_store``,
            ``probe_paths`` (never rate limited), ``compression_level``,
            ``compression_threshold``.
        request_id: :func:`request_id_middleware`.
        access_log: :func:`logging_middleware`.
        security_headers: :func:`security_headers_middleware`.
        cors: :func:`cors_middleware`; off by default, and needs a mapping with
            ``allow_origins`` to be turned on.
        rate_limit: :func:`rate_limit_middleware`.
        cache: :func:`cache_middleware`; off by default.
        compression: :func:`compression_middleware`.
        redis_store: The shared store used where the config says ``redis``
            (``rate_limit_store``, ``cache_store``) and no ``store`` option is given:
            a :class:`nessen.stores.redis.RedisStore`, whose connections the caller
            closes. :class:`~nessen.Runtime` creates one when serving starts and closes
            it on shutdown.

    Returns:
        The middleware list, for ``runtime.use`` one by one or ``Runtime(middleware=...)``.

    Raises:
        ValueError: ``cors=True`` without origins, or an option of the wrong type.
        ConfigError: ``rate_limit_store`` or ``cache_store`` is ``"redis"`` with neither
            ``redis_store`` nor a ``store`` option given (limits or entries would silently
            be per process).
        TypeError: A mapping holds an argument its factory does not take.
    """
    config = config if config is not None else Config()
    built: list[Middleware] = []
    if (options := _options("request_id", request_id)) is not None:
        built.append(request_id_middleware(**options))
    if (options := _options("access_log", access_log)) is not None:
        built.append(logging_middleware(**options))
    if (options := _options("security_headers", security_headers)) is not None:
        built.append(security_headers_middleware(**options))
    if (options := _options("cors", cors)) is not None:
        if "allow_origins" not in options:
            raise ValueError(
                "cors: pass a mapping with allow_origins, e.g. {'allow_origins': [...]}"
            )
        built.append(cors_middleware(**options))
    if (options := _options("rate_limit", rate_limit)) is not None:
        defaults: dict[str, Any] = {
            "fail_open": config.rate_limit_fail == "open",
            "limit": config.rate_limit_max,
            "window": config.rate_limit_window,
            "max_keys": config.rate_limit_max_keys,
            "skip_paths": PROBE_PATHS | config.probe_paths,
        }
        if config.rate_limit_store == "redis" and "store" not in options:
            defaults["store"] = _shared("rate_limit_store", redis_store)
        built.append(rate_limit_middleware(**{**defaults, **options}))
    if (options := _options("cache", cache)) is not None:
        if config.cache_store == "redis" and "store" not in options:
            options["store"] = _shared("cache_store", redis_store)
        built.append(cache_middleware(**options))
    if (options := _options("compression", compression)) is not None:
        defaults = {"level": config.compression_level, "threshold": config.compression_threshold}
        built.append(compression_middleware(**{**defaults, **options}))
    return built


def _shared(setting: str, store: Store | None) -> Store:
    """The shared store for ``setting='redis'``; a ConfigError when none was given."""
    if store is None:
        raise ConfigError(
            [
                f"{setting}='redis': default_stack needs redis_store="
                "RedisStore.from_config(config) (Runtime passes one), or a 'store' option"
            ]
        )
    return store


def _options(name: str, option: Option) -> dict[str, Any] | None:
    """``None`` when off, else the keyword arguments given for the factory."""
    if option is False:
        return None
    if option is True:
        return {}
    if isinstance(option, Mapping):
        return dict(option)
    raise ValueError(f"{name}={option!r}: must be True, False or a mapping of arguments")


__all__ = [
    "PROBE_PATHS",
    "STACK_ORDER",
    "Option",
    "cache_middleware",
    "compression_middleware",
    "cors_middleware",
    "default_stack",
    "logging_middleware",
    "rate_limit_middleware",
    "request_id_middleware",
    "security_headers_middleware",
]
