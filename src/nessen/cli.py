"""``nessen serve``: argv and environment -> Config -> Runtime; errors -> exit codes.

Exit codes: 0 stopped cleanly, 1 the drain deadline cut requests, 2 usage or configuration
error, 3 startup failed (a startup hook raised, or the address could not be bound).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import socket
import stat
import sys
import traceback
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from nessen._version import __version__
from nessen.asgi import ASGIHost
from nessen.asgi.lifespan import LIFESPAN_MODES
from nessen.config import (
    DAY_SECONDS,
    LOG_LEVELS,
    Config,
    header_problem,
    parse_bool,
    parse_settings,
    settings_help,
)
from nessen.errors import ConfigError
from nessen.http.forwarded import PROXY_HEADER_KINDS, X_FORWARDED
from nessen.observability.logs import configure_logging_for, read_log_config
from nessen.reload import REFUSED_IN_PRODUCTION, run_reloader
from nessen.runtime import EXIT_STARTUP_FAILED, Runtime, Servable, run
from nessen.server.server import raise_open_file_limit
from nessen.server.state import warn_if_trusting_every_peer
from nessen.server.supervisor import Supervisor, WorkerLink
from nessen.server.tls import server_context

EXIT_USAGE = 2
DEMO_APP = "nessen.demo:runtime"


class AppLoadError(Exception):
    """The ``module:attr`` given to ``nessen serve`` cannot be loaded.

    Args:
        message: One line saying what failed.
        traceback: For an exception raised while importing the app's module: its
            traceback, formatted (printed after the message), else ``""``.
    """

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``nessen`` command."""
    parser = argparse.ArgumentParser(
        prog="nessen", description="Nessen: a production HTTP/1.1 runtime for Python."
    )
    parser.add_argument("--version", action="version", version=f"nessen {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        usage="nessen serve [MODULE:ATTR] [options]  (nessen serve --help lists them)",
        help="serve an app (the built-in demo when none is given)",
        description="Serve MODULE:ATTR, a nessen Runtime or any ASGI 3 application "
        "(FastAPI, Starlette, ...); the demo app when omitted. Settings come from the "
        "environment (PORT, MAX_BODY_SIZE, ...); flags override them.",
    )
    serve.add_argument("app", nargs="?", default=None, metavar="MODULE:ATTR")
    serve.add_argument("--host", help="address to bind (HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="TCP port, 0 for any free one (PORT, default 3000)")
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="LOG_LEVEL (default info)")
    serve.add_argument("--workers", type=int, help="worker processes (WORKERS, default 1)")
    serve.add_argument(
        "--health-endpoints",
        action="store_true",
        default=None,
        help="ASGI apps: answer /health, /ready, /api/health and /metrics in front of the app "
        "(HEALTH_ENDPOINTS=true; a Runtime always has them)",
    )
    serve.add_argument(
        "--root-path", default=None, help="ASGI apps: scope['root_path'] (ROOT_PATH, default '')"
    )
    settings = serve.add_argument_group(
        "settings",
        "Every environment variable is also a flag, which wins over it: --max-body-size "
        "2000000 is MAX_BODY_SIZE=2000000, read and checked the same way (times in "
        "milliseconds, as the variables).",
    )
    for name, unit, default, note in settings_help():
        if name in _DEDICATED_FLAGS or name in _UVICORN_UNITS:
            continue
        settings.add_argument(
            flag_of(name),
            dest=f"env_{name}",
            default=None,
            metavar=unit.upper().replace("/", "_PER_") or "VALUE",
            help=f"{name}"
            + (f", {unit}" if unit else "")
            + f" (default {default}"
            + (f"; {note}" if note else "")
            + ")",
        )
    uvicorn = serve.add_argument_group(
        "coming from uvicorn",
        "uvicorn's names for the same settings, in uvicorn's units (seconds), so a "
        "command line carries over.",
    )
    defaults = Config()
    uvicorn.add_argument(
        "--timeout-keep-alive",
        type=float,
        metavar="S",
        help=f"IDLE_TIMEOUT, in seconds (default {defaults.idle_timeout:g}; uvicorn's is 5)",
    )
    uvicorn.add_argument(
        "--limit-concurrency",
        type=int,
        metavar="N",
        help=f"MAX_CONCURRENT_REQUESTS (default {defaults.max_concurrent_requests}): requests "
        "in handlers, not connections as uvicorn counts",
    )
    uvicorn.add_argument(
        "--timeout-graceful-shutdown",
        type=float,
        metavar="S",
        help=f"SHUTDOWN_TIMEOUT, in seconds (default {defaults.shutdown_timeout:g})",
    )
    uvicorn.add_argument(
        "--ws-ping-interval",
        type=float,
        metavar="S",
        help=f"WS_PING_INTERVAL, in seconds as uvicorn's (default {defaults.ws_ping_interval:g}"
        "; 0 sends no pings)",
    )
    uvicorn.add_argument(
        "--ws-ping-timeout",
        type=float,
        metavar="S",
        help=f"WS_PING_TIMEOUT, in seconds as uvicorn's (default {defaults.ws_ping_timeout:g})",
    )
    uvicorn.add_argument(
        "--ws-max-size",
        type=int,
        metavar="BYTES",
        help=f"WS_MAX_MESSAGE_SIZE (default {defaults.ws_max_message_bytes}; uvicorn's is "
        "16777216)",
    )
    uvicorn.add_argument(
        "--ws-max-queue", type=int, metavar="N", help="WS_RECEIVE_QUEUE (default 16; uvicorn's 32)"
    )
    uvicorn.add_argument(
        "--ws-per-message-deflate",
        metavar="BOOL",
        help="WS_COMPRESSION: accept permessage-deflate (default true)",
    )
    uvicorn.add_argument(
        "--forwarded-allow-ips",
        metavar="LIST",
        help="TRUST_PROXY: addresses or networks, comma-separated; '*' trusts every peer",
    )
    uvicorn.add_argument(
        "--no-proxy-headers",
        dest="proxy_headers",
        action="store_false",
        default=None,
        help="TRUST_PROXY=false: forwarded fields are never read (a bare --proxy-headers, "
        "as uvicorn users write it, is the default: PROXY_HEADERS=x-forwarded, loopback "
        "peers trusted)",
    )
    uvicorn.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one nessen.access line per request (on by default)",
    )
    uvicorn.add_argument(
        "--header",
        action="append",
        default=None,
        metavar="NAME:VALUE",
        help="a field added to every response (repeat for more)",
    )
    uvicorn.add_argument(
        "--no-server-header",
        action="store_true",
        default=None,
        help="send no Server field",
    )
    uvicorn.add_argument(
        "--env-file",
        metavar="PATH",
        help="a .env file of VARIABLE=value lines (python-dotenv's format), put in the "
        "environment before the app is imported; variables already set win",
    )
    uvicorn.add_argument(
        "--lifespan",
        choices=LIFESPAN_MODES,
        default="auto",
        help="ASGI apps: run the lifespan protocol if the app supports it (auto), require "
        "it (on: exit 3 if not), or not at all (off)",
    )
    uvicorn.add_argument(
        "--app-dir",
        default=None,
        metavar="DIR",
        help="look for MODULE in DIR first (default: the current directory)",
    )
    uvicorn.add_argument(
        "--factory",
        action="store_true",
        help="MODULE:ATTR is a function that returns the app: call it",
    )
    uvicorn.add_argument(
        "--reload",
        action="store_true",
        help="development: restart the server when a watched file changes (needs "
        "watchfiles; refused unless NESSEN_ENV is development or test)",
    )
    uvicorn.add_argument(
        "--reload-dir",
        action="append",
        default=None,
        metavar="DIR",
        help="watch DIR (repeatable; default: --app-dir, else the current directory)",
    )
    uvicorn.add_argument(
        "--reload-include",
        action="append",
        default=None,
        metavar="PATTERN",
        help="file names whose changes restart it too, besides *.py (repeatable)",
    )
    uvicorn.add_argument(
        "--reload-exclude",
        action="append",
        default=None,
        metavar="PATTERN",
        help="file names whose changes are ignored (repeatable)",
    )
    uvicorn.add_argument(
        "--uds",
        metavar="PATH",
        help="UNIX_SOCKET: listen on this Unix socket instead of HOST:PORT",
    )
    uvicorn.add_argument(
        "--fd",
        metavar="N",
        help="LISTEN_FD: serve on this inherited socket (systemd socket activation: 3, "
        "found by itself when systemd set LISTEN_PID and LISTEN_FDS)",
    )
    return parser


def bare_proxy_headers(argv: Sequence[str]) -> list[str]:
    """Uvicorn's ``--proxy-headers`` takes no value; ours (``PROXY_HEADERS``) takes one.

    A ``--proxy-headers`` not followed by one of the kinds (``x-forwarded``,
    ``forwarded``), as in ``nessen serve --proxy-headers app:app``, is read as uvicorn's:
    the default kind, so it does not swallow the next argument.
    """
    out: list[str] = []
    items = list(argv)
    for index, item in enumerate(items):
        following = items[index + 1] if index + 1 < len(items) else None
        if item == "--proxy-headers" and (
            following is None or following.strip().lower() not in PROXY_HEADER_KINDS
        ):
            out.append(f"--proxy-headers={X_FORWARDED}")
        else:
            out.append(item)
    return out


def load_env_file(path: str) -> str | None:
    """Put the variables of the ``.env`` file ``path`` in ``os.environ`` (set ones win).

    The format is python-dotenv's (``KEY=value``, quotes, ``export``, comments), read by
    python-dotenv, as uvicorn's ``--env-file`` reads it.

    Returns:
        ``None``, or what is wrong, in one line: python-dotenv is not installed, or the
        file cannot be read.
    """
    try:
        from dotenv import load_dotenv
    except ImportError:
        return "--env-file needs python-dotenv: pip install python-dotenv (nessen's dotenv extra)"
    try:
        with open(path, encoding="utf-8") as stream:  # ${VAR} sees the environment first
            load_dotenv(stream=stream, override=False)
    except OSError as exc:
        return f"--env-file {path!r}: {exc.strerror or exc}"
    return None


def uvicorn_settings(args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    """The settings uvicorn-named flags give: ``{variable: (value as the variable, flag)}``."""
    given: dict[str, tuple[str, str]] = {}

    def seconds(value: float | None, variable: str, flag: str) -> None:
        if value is None:
            return
        if not 0 < value <= DAY_SECONDS:  # checked in the flag's own unit
            raise ConfigError(
                [f"{flag}={value:g}: must be a number of seconds above 0, at most {DAY_SECONDS:g}"]
            )
        given[variable] = (f"{value * 1000:.0f}", flag)  # the variables are in milliseconds

    seconds(args.timeout_keep_alive, "IDLE_TIMEOUT", "--timeout-keep-alive")
    seconds(args.timeout_graceful_shutdown, "SHUTDOWN_TIMEOUT", "--timeout-graceful-shutdown")
    if args.ws_ping_interval == 0:
        given["WS_PING_INTERVAL"] = ("0", "--ws-ping-interval")
    else:
        seconds(args.ws_ping_interval, "WS_PING_INTERVAL", "--ws-ping-interval")
    seconds(args.ws_ping_timeout, "WS_PING_TIMEOUT", "--ws-ping-timeout")
    if args.ws_max_size is not None:
        given["WS_MAX_MESSAGE_SIZE"] = (str(args.ws_max_size), "--ws-max-size")
    if args.ws_max_queue is not None:
        given["WS_RECEIVE_QUEUE"] = (str(args.ws_max_queue), "--ws-max-queue")
    if args.ws_per_message_deflate is not None:
        given["WS_COMPRESSION"] = (args.ws_per_message_deflate, "--ws-per-message-deflate")
    if args.limit_concurrency is not None:
        given["MAX_CONCURRENT_REQUESTS"] = (str(args.limit_concurrency), "--limit-concurrency")
    if args.forwarded_allow_ips is not None:
        ips = args.forwarded_allow_ips.strip()
        given["TRUST_PROXY"] = ("true" if ips == "*" else ips, "--forwarded-allow-ips")
    if args.proxy_headers is False:  # wins over --forwarded-allow-ips, as in uvicorn
        given["TRUST_PROXY"] = ("false", "--no-proxy-headers")
    if args.uds is not None:
        given["UNIX_SOCKET"] = (args.uds, "--uds")
    if args.fd is not None:
        given["LISTEN_FD"] = (args.fd, "--fd")
    return given


_UVICORN_UNITS = frozenset({"WS_PING_INTERVAL", "WS_PING_TIMEOUT"})
"""Variables whose flag is uvicorn's, in uvicorn's unit (seconds): a generated flag of the
same name in milliseconds would turn ``--ws-ping-interval 20`` into 20 ms pings."""
_DEDICATED_FLAGS = frozenset({"HOST", "PORT", "LOG_LEVEL", "WORKERS"})
"""Variables whose flags are declared above, with their own types and choices."""


def flag_of(variable: str) -> str:
    """The flag of an environment variable: ``MAX_BODY_SIZE`` -> ``--max-body-size``."""
    return "--" + variable.lower().replace("_", "-")


def flag_settings(args: argparse.Namespace) -> dict[str, str]:
    """The settings given as flags, as the environment variables they stand for."""
    return {
        name[len("env_") :]: value
        for name, value in vars(args).items()
        if name.startswith("env_") and value is not None
    }


def load_app(
    spec: str,
    *,
    health_endpoints: bool = False,
    root_path: str = "",
    app_dir: str | None = None,
    factory: bool = False,
    lifespan: str = "auto",
) -> Servable:
    """Import ``module:attr`` and return what to serve: a Runtime, or an ASGI host.

    A nessen Runtime, or an :class:`~nessen.asgi.ASGIHost`, is served as it is. Any other
    ASGI 3 application (a coroutine function, or an object whose ``__call__`` is one:
    FastAPI, Starlette, Litestar...) is wrapped in an :class:`~nessen.asgi.ASGIHost`. The
    current directory is put first on ``sys.path``, so ``nessen serve app:runtime`` finds
    ``./app.py``.

    Args:
        spec: ``module:attr``.
        health_endpoints: For an ASGI app: serve the probe and metrics endpoints in front.
        root_path: For an ASGI app: its ``scope["root_path"]``.
        app_dir: Put this folder first on ``sys.path`` instead of the current directory.
        factory: ``attr`` is a function of no arguments that returns the app.
        lifespan: For an ASGI app: ``"auto"``, ``"on"`` or ``"off"``.

    Raises:
        AppLoadError: Malformed spec, module not found, attribute missing, a factory
            that fails, or neither a Runtime nor an ASGI 3 application: the message is
            one line. An exception
            raised while importing the module (a syntax error, a missing dependency, code
            that fails at import) also gives its traceback.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppLoadError(f"app {spec!r} must look like MODULE:ATTR, e.g. myservice.app:runtime")
    folder = os.path.abspath(app_dir) if app_dir is not None else os.getcwd()
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        if isinstance(exc, ModuleNotFoundError) and _names_the_module(exc, module_name):
            raise AppLoadError(f"cannot import module {module_name!r}: not found") from exc
        raise AppLoadError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}",
            _import_traceback(exc),
        ) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        if isinstance(target, Runtime | ASGIHost) or is_asgi3(target):
            raise AppLoadError(f"{spec} is an app already, not a factory: drop --factory")
        if not callable(target):
            raise AppLoadError(f"{spec} is not callable, so it cannot be a --factory")
        try:
            target = target()
        except Exception as exc:
            raise AppLoadError(
                f"the factory {spec} failed: {type(exc).__name__}: {exc}", _import_traceback(exc)
            ) from exc
    if isinstance(target, Runtime | ASGIHost):
        return target
    if not is_asgi3(target):
        raise AppLoadError(
            f"{spec} is a {type(target).__name__}, not a nessen Runtime "
            "(create one with `runtime = nessen.Runtime()`) or an ASGI 3 application "
            "(`async def app(scope, receive, send)`)"
        )
    return ASGIHost(
        target, health_endpoints=health_endpoints, root_path=root_path, lifespan=lifespan
    )


def _names_the_module(exc: ModuleNotFoundError, module_name: str) -> bool:
    """Whether ``exc`` says ``module_name`` (or a package above it) is absent.

    Not something the module's own code imports: that is an error in the app.
    """
    missing = exc.name or ""
    return bool(missing) and (module_name == missing or module_name.startswith(missing + "."))


def _import_traceback(exc: BaseException) -> str:
    """``exc``'s traceback, formatted, from the app's own frames.

    The CLI's frame and importlib's machinery (``importlib.import_module``, ``<frozen
    importlib._bootstrap>``) are left out, as Python's own import statement leaves them.
    """
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith(("<frozen importlib", __file__, importlib.__file__ or "?")):
            frames.append(tb)
        tb = tb.tb_next
    if frames:  # relink the kept frames (a traceback's tb_next is writable)
        for current, following in zip(frames, [*frames[1:], None], strict=True):
            current.tb_next = following
        exc = exc.with_traceback(frames[0])
    return "".join(traceback.format_exception(exc))


def is_asgi3(target: object) -> bool:
    """Whether ``target`` looks like an ASGI 3 application (as uvicorn tells ASGI 3 from 2).

    True for a coroutine function and for an object whose ``__call__`` is one; ASGI 2
    style classes (``app(scope)`` returning the coroutine function) are not.
    """
    if inspect.isclass(target):
        return False
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(target, "__call__", None)  # noqa: B004 - the method itself, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


def resolve_config(
    args: argparse.Namespace, environ: Mapping[str, str], base: Config | None
) -> Config:
    """Settings: ``base`` (the app's own) or the environment, then the command-line flags.

    Raises:
        ConfigError: An environment variable or flag is invalid.
    """
    given = flag_settings(args)
    named = {name: flag_of(name) for name in given}
    for name, (value, flag) in uvicorn_settings(args).items():
        given[name], named[name] = value, flag
    try:
        if base is None:  # the environment with the flags over it, checked as one
            config = Config.from_env({**environ, **given})
        else:  # the app's own settings, with the flags over them
            config = base.replace(**parse_settings(given)) if given else base
    except ConfigError as exc:
        raise ConfigError(_name_setting_flags(exc.problems, named, given)) from None
    changes: dict[str, Any] = {}
    if args.no_server_header:
        changes["server_header"] = ""
    if args.header:
        pairs = []
        for field in args.header:
            name, colon, value = field.partition(":")
            name, value = name.strip(), value.strip()
            if not colon:
                raise ConfigError([f"--header={field!r}: must be NAME:VALUE"])
            if name.lower() == "server":  # replaces ours, as uvicorn's does
                changes["server_header"] = value
                continue
            problem = header_problem(name, value)
            if problem:
                raise ConfigError([f"--header={field!r}: {problem}"])
            pairs.append((name, value))
        changes["extra_headers"] = tuple(pairs)
    for flag, name in (
        ("host", "host"),
        ("port", "port"),
        ("log_level", "log_level"),
        ("workers", "workers"),
    ):
        value = getattr(args, flag)
        if value is not None:
            changes[name] = value
    if changes:
        try:
            config = config.replace(**changes)
        except ConfigError as exc:
            raise ConfigError(_name_flags(exc.problems, changes)) from None
    return config


def _name_setting_flags(
    problems: list[str], named: Mapping[str, str], values: Mapping[str, str]
) -> list[str]:
    """Rewrite ``MAX_BODY_SIZE='x': rule`` to ``--max-body-size='x': rule`` for a flag's value.

    ``named`` maps each variable a flag gave to that flag, ``values`` to the flag's value.
    A flag named otherwise than its variable (uvicorn's ``--fd`` for ``LISTEN_FD``) names
    the variable too: ``--fd='abc' (LISTEN_FD): rule``.
    """
    out = []
    for problem in problems:
        name, sep, rest = problem.partition("=")
        if not sep or name not in named:
            out.append(problem)
            continue
        flag = named[name]
        shown = f"{values[name]!r}: " if name in values else None
        if flag != flag_of(name) and shown is not None and rest.startswith(shown):
            out.append(f"{flag}={shown[:-2]} ({name}): {rest[len(shown) :]}")
        else:
            out.append(f"{flag}={rest}")
    return out


def _name_flags(problems: list[str], flags: Mapping[str, Any]) -> list[str]:
    """Rewrite ``port=70000: rule`` to ``--port=70000: rule`` for values that came from flags."""
    out = []
    for problem in problems:
        field, _, rest = problem.partition("=")
        flag = _FIELD_FLAGS.get(field, f"--{field.replace('_', '-')}")
        out.append(f"{flag}={rest}" if field in flags else problem)
    return out


_FIELD_FLAGS = {"extra_headers": "--header", "server_header": "--no-server-header"}
"""Fields set by a flag of another name."""


SD_LISTEN_FDS_START = 3
"""The first socket systemd passes by socket activation (``SD_LISTEN_FDS_START``)."""


def systemd_socket(environ: MutableMapping[str, str], pid: int) -> int | None:
    """The socket systemd's socket activation passed to process ``pid``, if any.

    As ``sd_listen_fds(unset_environment=1)``: systemd sets ``LISTEN_PID`` to the process
    the sockets are meant for and ``LISTEN_FDS`` to how many there are, from fd 3 on. The
    three variables (``LISTEN_FDNAMES`` too) are removed from ``environ`` whatever they
    say, so no child process takes the sockets for its own.

    Args:
        environ: The environment (``os.environ`` from :func:`main`); changed.
        pid: This process's id.

    Returns:
        3 (the first socket; any others are left alone) when ``LISTEN_PID`` is ``pid``
        and ``LISTEN_FDS`` is a whole number of 1 or more; ``None`` otherwise.
    """
    listen_pid = environ.pop("LISTEN_PID", "")
    listen_fds = environ.pop("LISTEN_FDS", "")
    environ.pop("LISTEN_FDNAMES", None)
    if listen_pid.strip() != str(pid) or not listen_fds.strip().isdigit():
        return None
    return SD_LISTEN_FDS_START if int(listen_fds) >= 1 else None


def _activated(args: argparse.Namespace, environ: MutableMapping[str, str]) -> bool:
    """Whether systemd passed a socket to serve on and nothing else says where to listen."""
    fd = systemd_socket(environ, os.getpid())
    chosen = (args.fd, args.uds, args.env_LISTEN_FD, args.env_UNIX_SOCKET)
    elsewhere = any(value is not None for value in chosen) or any(
        environ.get(name) for name in ("LISTEN_FD", "UNIX_SOCKET")
    )
    return fd is not None and not elsewhere


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nessen`` command; returns the exit status."""
    arguments = bare_proxy_headers(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    if args.env_file is not None:
        problem = load_env_file(args.env_file)
        if problem is not None:
            print(f"nessen: {problem}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "serve" and _activated(args, os.environ):
        # systemd socket activation: as --fd 3, which the supervisor's re-execution is
        # given too (the variables that said so are gone from the environment).
        arguments = [*arguments, "--fd", str(SD_LISTEN_FDS_START)]
        args.fd = str(SD_LISTEN_FDS_START)
    if args.reload:
        return _reload(args, arguments)
    health = args.health_endpoints
    if health is None:
        raw = os.environ.get("HEALTH_ENDPOINTS", "")
        try:
            health = bool(raw.strip()) and parse_bool(raw)
        except ValueError:
            problem = f"HEALTH_ENDPOINTS={raw!r}: not a boolean; must be true or false"
            return ConfigError([problem]).report()
    root_path = args.root_path
    if root_path is None:
        root_path = os.environ.get("ROOT_PATH", "")
    app = _AppSpec(
        args.app or DEMO_APP,
        {
            "health_endpoints": health,
            "root_path": root_path,
            "app_dir": args.app_dir,
            "factory": args.factory,
            "lifespan": args.lifespan,
        },
        args,
    )
    if os.environ.get(SUPERVISOR_ENV) == "1":
        # Re-executed to supervise: this process never imports the app (see _reexec).
        del os.environ[SUPERVISOR_ENV]  # not inherited by the workers' own children
        config_or_status = _probe(app)
        if isinstance(config_or_status, int):
            return config_or_status
        return supervise(app.fresh_worker, config_or_status)
    loaded = app.load()
    if isinstance(loaded, int):
        return loaded
    runtime, config = loaded
    if config.workers > 1 or config.max_requests_per_worker:
        return _reexec(arguments)
    return runtime.listen()


def _reload(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``--reload``: refused in production, else the reloader (see :mod:`nessen.reload`)."""
    try:
        config = resolve_config(args, os.environ, None)
    except ConfigError as exc:
        return exc.report()
    if config.production:
        print(REFUSED_IN_PRODUCTION, file=sys.stderr)
        return EXIT_USAGE
    dirs = args.reload_dir or [args.app_dir or os.getcwd()]
    includes = ["*.py", *(p for p in args.reload_include or () if p != "*.py")]
    return run_reloader(argv, dirs, includes=includes, excludes=args.reload_exclude or ())


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


SUPERVISOR_ENV = "NESSEN_SUPERVISOR"
"""Set (to ``1``) in the environment of ``nessen serve`` re-executed to supervise workers."""


class _AppSpec:
    """What ``nessen serve`` was asked to serve, loadable again in each worker."""

    def __init__(self, spec: str, options: dict[str, Any], args: argparse.Namespace) -> None:
        self.spec = spec
        self.options = options
        self.args = args

    def load(self) -> tuple[Servable, Config] | int:
        """Import the app and resolve the settings; an exit status (2) on failure.

        The problem is printed to stderr: one line, and the traceback of an app whose
        import raised.
        """
        try:
            runtime = load_app(self.spec, **self.options)
            config = resolve_config(
                self.args, os.environ, runtime.config if runtime.has_config else None
            )
            server_context(config)  # the TLS files load, or exit 2 now (not in each worker)
            if config.log_config is not None:
                read_log_config(config.log_config)  # likewise the logging file
            if config.listen_fd is not None and not _is_socket(config.listen_fd):
                raise ConfigError([f"LISTEN_FD={config.listen_fd}: not an open socket"])
        except AppLoadError as exc:
            print(f"nessen: {exc}", file=sys.stderr)
            if exc.traceback:
                print(exc.traceback, end="", file=sys.stderr)
            return EXIT_USAGE
        except ConfigError as exc:
            return exc.report()
        runtime.configure(config)
        access_log = self.args.access_log
        if access_log is not None:  # the Runtime an ASGI app is served through, or the app
            served = runtime.runtime if isinstance(runtime, ASGIHost) else runtime
            served.access_log = access_log  # type: ignore[attr-defined]
        return runtime, config

    def fresh_worker(
        self,
        sockets: Sequence[socket.socket],
        link: WorkerLink,
        slot: int,
        admin_sockets: Sequence[socket.socket] = (),
    ) -> int:
        """A forked worker: import the app now (its code as it is on disk), then serve.

        The supervisor never imported it, so a worker started after a deploy (SIGHUP's
        rolling restart) runs the new code. An import that fails now is reported to the
        supervisor as a failed start: the old workers keep serving.
        """
        loaded = self.load()
        if isinstance(loaded, int):
            link.failed(f"the app {self.spec} or its settings failed to load (see above)")
            return EXIT_STARTUP_FAILED
        runtime, _ = loaded
        return run(runtime.serve(sock=sockets, link=link, admin_sock=admin_sockets or None))


def _reexec(argv: Sequence[str] | None) -> int:
    """Run ``nessen serve`` again in this process, to supervise, with a fresh interpreter.

    This process imported the app to read its settings; workers forked from it would share
    those modules, so SIGHUP could not load new code. The new image imports nessen only;
    each worker imports the app after it is forked.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    os.environ[SUPERVISOR_ENV] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, "-m", "nessen", *arguments])
    except OSError as exc:  # pragma: no cover - the running interpreter is executable
        print(f"nessen: cannot start the supervisor: {exc}", file=sys.stderr)
    return EXIT_STARTUP_FAILED


def _probe(app: _AppSpec) -> Config | int:
    """The settings ``app`` resolves to, found in a short-lived child that imports it.

    Returns:
        The settings, or the exit status the child gave (2: the app or the settings are
        invalid; its stderr said why).
    """
    read_end, write_end = os.pipe()
    import pickle

    pid = os.fork()
    if pid == 0:  # the child: import, resolve, send the settings back, leave
        os.close(read_end)
        status = 1
        try:
            loaded = app.load()
            if isinstance(loaded, int):
                status = loaded
            else:
                with os.fdopen(write_end, "wb") as out:
                    pickle.dump(loaded[1], out)
                status = 0
        except BaseException:  # pragma: no cover - load() reports what it expects
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as source:
        data = source.read()
    _, wait_status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(wait_status)
    if status != 0 or not data:
        return status or EXIT_STARTUP_FAILED
    config = pickle.loads(data)
    assert isinstance(config, Config)
    return config


def supervise(worker_main: Callable[..., int], config: Config) -> int:
    """Serve in ``config.workers`` forked worker processes under a supervisor.

    ``worker_main(sockets, link, slot, admin_sockets)`` runs in each forked worker and
    returns its exit status (see :meth:`_AppSpec.fresh_worker`).

    Returns:
        0 when every worker drained cleanly at shutdown, 1 otherwise, 3 when the address
        cannot be bound or a worker cannot start (see ``BOOT_ATTEMPTS``).
    """
    try:
        undo = configure_logging_for(config)
    except ConfigError as exc:
        return exc.report()
    try:
        warn_if_trusting_every_peer(config)
        raise_open_file_limit(config)  # the workers inherit it
        supervisor = Supervisor(config, worker_main)
        try:
            supervisor.bind()
        except OSError as exc:
            host, port = getattr(exc, "address", (config.host, config.port))
            what = " (ADMIN_PORT)" if hasattr(exc, "address") else ""
            logging.getLogger("nessen.supervisor").error(
                "cannot listen on %s:%d%s: %s", host, port, what, exc
            )
            return EXIT_STARTUP_FAILED
        return supervisor.run()
    finally:
        undo()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
