"""Router: route templates, path parameters, 404, and 405 with an Allow field (RFC 9110 §15.5.6).

Templates are paths whose segments may hold parameters: ``/users/{id}``, ``/users/{id:int}``,
``/users/:id``, ``/badge/{label}/{value}.svg``, ``/files/{rest:path}``. A template without
parameters is found with one dict lookup; the others in a tree of path segments, where a
literal segment is tried before a parameter, so ``/users/me`` wins over ``/users/{id}``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar, overload

from nessen.errors import HTTPError
from nessen.http import Request, Response
from nessen.websocket.api import WebSocketEndpoint

RouteHandler = Callable[[Request], Awaitable[Any]]
"""A handler: ``async (ctx) -> Response`` (or the seed's ``{"status", "headers", "body"}``)."""
ErrorHandler = Callable[[Request, Exception], Response]
H = TypeVar("H", bound=RouteHandler)

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ANY = "*"

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")
_COLON_PARAM = re.compile(r"^:([A-Za-z_][A-Za-z0-9_]*)$")


def _uuid(text: str) -> Any:
    """``uuid.UUID(text)``; ``uuid`` is imported by the first ``{name:uuid}`` matched."""
    from uuid import UUID

    return UUID(text)


@dataclass(frozen=True, slots=True)
class _Converter:
    pattern: str
    convert: Callable[[str], Any]


CONVERTERS: dict[str, _Converter] = {
    "str": _Converter(r"[^/]+", str),
    "int": _Converter(r"-?[0-9]{1,18}", int),
    "float": _Converter(r"-?[0-9]{1,18}(?:\.[0-9]{1,18})?", float),
    "uuid": _Converter(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        _uuid,
    ),
    "path": _Converter(r".*", str),
}
"""Parameter converters: ``{name:int}`` matches ``-?[0-9]{1,18}`` (so it fits in 64 bits and
a JSON encoder) and passes an ``int``; a longer number does not match (404)."""


@dataclass(slots=True)
class Route:
    """One template bound to a handler for some methods.

    Attributes:
        template: The template as written, with ``:id`` rewritten to ``{id}``.
        methods: Upper-case methods served, or ``{"*"}`` for any.
        handler: The handler.
    """

    template: str
    methods: frozenset[str]
    handler: RouteHandler


@dataclass(slots=True)
class _Segment:
    """A segment with parameters, e.g. ``{value}.svg`` or ``{id:int}``."""

    regex: re.Pattern[str]
    converters: tuple[tuple[str, Callable[[str], Any]], ...]
    rest: bool  # a {name:path} parameter: matches every remaining segment

    def match(self, text: str) -> dict[str, Any] | None:
        found = self.regex.fullmatch(text)
        if found is None:
            return None
        try:
            return {name: convert(found.group(name)) for name, convert in self.converters}
        except ValueError:
            return None


@dataclass(slots=True)
class _Node:
    static: dict[str, _Node] = field(default_factory=dict)
    dynamic: list[tuple[str, _Segment, _Node]] = field(default_factory=list)
    routes: dict[str, Route] = field(default_factory=dict)


class Router:
    """Routes requests to handlers by method and path.

    Register with ``router.get("/users/{id}")`` as a decorator, or
    ``router.get("/users/{id}", handler)``; the same for post, put, patch, delete, head,
    options, and ``any`` (every method). ``HEAD`` falls back to the ``GET`` handler (the
    server drops the content) and ``OPTIONS`` is answered 204 with ``Allow`` when no handler
    is registered for it. A path known only for other methods gets 405 with ``Allow``.
    """

    def __init__(self) -> None:
        self._static: dict[str, dict[str, Route]] = {}
        self._root = _Node()
        self.routes: list[Route] = []
        self.on_error: ErrorHandler = default_error_handler
        """Turns an exception from a handler into a response; set by the App."""

    # --- registration ---------------------------------------------------------------------

    def add(self, methods: str | Iterable[str], template: str, handler: RouteHandler) -> Route:
        """Register ``handler`` for ``methods`` on ``template``.

        Raises:
            ValueError: The template does not start with ``/``, has an unknown converter,
                a parameter name used twice, a ``path`` parameter that is not last, or the
                route is already taken.
        """
        names = {methods} if isinstance(methods, str) else set(methods)
        names = {m.upper() for m in names}
        if not template.startswith("/"):
            raise ValueError(f"route template {template!r} must start with '/'")
        segments = [_normalise_segment(s) for s in template.split("/")[1:]]
        template = "/" + "/".join(segments)
        params = [found.group(1) for s in segments for found in _PARAM.finditer(s)]
        if len(params) != len(set(params)):
            raise ValueError(f"route template {template!r} uses a parameter name twice")
        route = Route(template, frozenset(names), handler)
        if not any("{" in s for s in segments):
            table = self._static.setdefault(template, {})
            self._claim(table, route)
        node = self._root
        for index, text in enumerate(segments):
            if "{" not in text:
                node = node.static.setdefault(text, _Node())
                continue
            segment = _compile_segment(text)
            if segment.rest and index != len(segments) - 1:
                raise ValueError(f"{template!r}: a path parameter must be the last segment")
            for existing_text, _, child in node.dynamic:
                if existing_text == text:
                    node = child
                    break
            else:
                child = _Node()
                node.dynamic.append((text, segment, child))
                node = child
        if template not in self._static:
            self._claim(node.routes, route)
        else:
            node.routes.update(self._static[template])
        self.routes.append(route)
        return route

    @staticmethod
    def _claim(table: dict[str, Route], route: Route) -> None:
        for method in route.methods:
            if method in table:
                raise ValueError(f"{method} {route.template} is already routed")
        for method in route.methods:
            table[method] = route

    def _decorator(self, methods: str | Iterable[str], template: str, handler: H | None) -> Any:
        if handler is not None:
            self.add(methods, template, handler)
            return handler

        def register(func: H) -> H:
            self.add(methods, template, func)
            return func

        return register

    @overload
    def get(self, template: str) -> Callable[[H], H]: ...
    @overload
    def get(self, template: str, handler: H) -> H: ...
    def get(self, template: str, handler: H | None = None) -> Any:
        """Route GET (and so HEAD) on ``template``; decorator or call form."""
        return self._decorator("GET", template, handler)

    @overload
    def post(self, template: str) -> Callable[[H], H]: ...
    @overload
    def post(self, template: str, handler: H) -> H: ...
    def post(self, template: str, handler: H | None = None) -> Any:
        """Route POST on ``template``; decorator or call form."""
        return self._decorator("POST", template, handler)

    @overload
    def put(self, template: str) -> Callable[[H], H]: ...
    @overload
    def put(self, template: str, handler: H) -> H: ...
    def put(self, template: str, handler: H | None = None) -> Any:
        """Route PUT on ``template``; decorator or call form."""
        return self._decorator("PUT", template, handler)

    @overload
    def patch(self, template: str) -> Callable[[H], H]: ...
    @overload
    def patch(self, template: str, handler: H) -> H: ...
    def patch(self, template: str, handler: H | None = None) -> Any:
        """Route PATCH on ``template``; decorator or call form."""
        return self._decorator("PATCH", template, handler)

    @overload
    def delete(self, template: str) -> Callable[[H], H]: ...
    @overload
    def delete(self, template: str, handler: H) -> H: ...
    def delete(self, template: str, handler: H | None = None) -> Any:
        """Route DELETE on ``template``; decorator or call form."""
        return self._decorator("DELETE", template, handler)

    @overload
    def head(self, template: str) -> Callable[[H], H]: ...
    @overload
    def head(self, template: str, handler: H) -> H: ...
    def head(self, template: str, handler: H | None = None) -> Any:
        """Route HEAD on ``template`` (without it, HEAD uses the GET handler)."""
        return self._decorator("HEAD", template, handler)

    @overload
    def options(self, template: str) -> Callable[[H], H]: ...
    @overload
    def options(self, template: str, handler: H) -> H: ...
    def options(self, template: str, handler: H | None = None) -> Any:
        """Route OPTIONS on ``template`` (without it, OPTIONS gets 204 + Allow)."""
        return self._decorator("OPTIONS", template, handler)

    @overload
    def any(self, template: str) -> Callable[[H], H]: ...
    @overload
    def any(self, template: str, handler: H) -> H: ...
    def any(self, template: str, handler: H | None = None) -> Any:
        """Route every method on ``template``; decorator or call form."""
        return self._decorator(ANY, template, handler)

    @overload
    def route(self, methods: Iterable[str], template: str) -> Callable[[H], H]: ...
    @overload
    def route(self, methods: Iterable[str], template: str, handler: H) -> H: ...
    def route(self, methods: Iterable[str], template: str, handler: H | None = None) -> Any:
        """Route several methods on ``template``: ``route(["GET", "POST"], "/x")``."""
        return self._decorator(list(methods), template, handler)

    def websocket(self, template: str, handler: Any = None) -> Any:
        """Route WebSocket upgrades on ``template`` to ``handler(ws)``; decorator or call form.

        ``handler`` is ``async (ws: WebSocket) -> None`` (see :class:`nessen.websocket.WebSocket`).
        The route is a GET route: a plain GET to it gets 426 Upgrade Required, and the
        same template cannot have another GET handler.

        Raises:
            ValueError: As :meth:`add`.
            TypeError: ``handler`` is not a coroutine function.
        """

        def register(func: Any) -> Any:
            call = getattr(func, "__call__", None)  # noqa: B004 (an object with async __call__)
            if not (inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(call)):
                raise TypeError(
                    f"websocket handler {getattr(func, '__name__', func)!r} must be an async "
                    "def taking the WebSocket"
                )
            self.add("GET", template, WebSocketEndpoint(func))
            return func

        return register(handler) if handler is not None else register

    def websocket_endpoints(self) -> list[Any]:
        """The :class:`~nessen.websocket.WebSocketEndpoint` of every websocket route."""
        return [r.handler for r in self.routes if isinstance(r.handler, WebSocketEndpoint)]

    # --- lookup ---------------------------------------------------------------------------

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, Any], set[str]]:
        """Find the route for ``method`` on ``path``.

        Returns:
            ``(route, params, allowed)``: the route and its converted parameters, or
            ``(None, {}, allowed)`` where ``allowed`` holds the methods the path has
            (empty for an unknown path: 404; else 405).
        """
        table = self._static.get(path)
        if table is not None:
            route = _pick(table, method)
            if route is not None:
                return route, {}, set()
        allowed: set[str] = set()
        for routes, params in _walk(self._root, path.split("/")[1:], 0, {}):
            route = _pick(routes, method)
            if route is not None:
                return route, params, set()
            allowed.update(routes)
        return None, {}, allowed

    async def dispatch(self, request: Request) -> Response:
        """Route and run one request; the innermost handler of the middleware pipeline.

        Exceptions from the handler become responses here (``HTTPError`` its status, any
        other 500 through :attr:`on_error`), so every middleware sees a response.
        """
        if request.path == "*":
            return self._asterisk(request)
        route, params, allowed = self.match(request.method, request.path)
        if route is None:
            return self._unrouted(request, allowed)
        request._params = params
        request.route = route.template
        if request.content_pending:  # its client waits for 100 Continue: now it is wanted
            await request.read()
        try:
            result = await route.handler(request)
            if type(result) is not Response:
                result = coerce_response(result)
        except HTTPError as exc:
            return http_error_response(exc, request)
        except Exception as exc:
            return self.on_error(request, exc)
        return result

    def _unrouted(self, request: Request, allowed: set[str]) -> Response:
        if not allowed:
            return Response.json({"error": "Not Found", "request_id": request.id}, 404)
        allow = allow_field(allowed)
        if request.method == "OPTIONS":
            return Response(204, headers={"Allow": allow})
        return Response.json(
            {"error": "Method Not Allowed", "request_id": request.id},
            405,
            headers={"Allow": allow},
        )

    def _asterisk(self, request: Request) -> Response:
        """``OPTIONS *`` asks about the server itself (RFC 9110 §9.3.7); other methods can't."""
        if request.method == "OPTIONS":
            methods = {m for route in self.routes for m in route.methods}
            return Response(204, headers={"Allow": allow_field(methods)})
        return Response.json(
            {"error": "the asterisk target is only for OPTIONS", "request_id": request.id}, 400
        )


def _pick(routes: Mapping[str, Route], method: str) -> Route | None:
    route = routes.get(method)
    if route is None:
        route = routes.get(ANY)
        if route is None and method == "HEAD":
            route = routes.get("GET")
    return route


def _walk(
    node: _Node, segments: list[str], index: int, params: dict[str, Any]
) -> Iterator[tuple[dict[str, Route], dict[str, Any]]]:
    """Yield every node matching ``segments``, literal branches first."""
    if index == len(segments):
        if node.routes:
            yield node.routes, params
        return
    text = segments[index]
    child = node.static.get(text)
    if child is not None:
        yield from _walk(child, segments, index + 1, params)
    for _, segment, child in node.dynamic:
        if segment.rest:
            value = "/".join(segments[index:])
            found = segment.match(value)
            if found is not None and child.routes:
                yield child.routes, {**params, **found}
            continue
        found = segment.match(text)
        if found is not None:
            yield from _walk(child, segments, index + 1, {**params, **found})


def allow_field(methods: Iterable[str]) -> str:
    """Build an ``Allow`` value: the methods, plus HEAD with GET, plus OPTIONS."""
    names = set(methods)
    if ANY in names:
        names = set(METHODS)
    if "GET" in names:
        names.add("HEAD")
    names.add("OPTIONS")
    return ", ".join(sorted(names))


def _normalise_segment(text: str) -> str:
    colon = _COLON_PARAM.match(text)
    if colon:
        return "{" + colon.group(1) + "}"
    return text


def _compile_segment(text: str) -> _Segment:
    pattern = []
    converters = []
    position = 0
    rest = False
    for found in _PARAM.finditer(text):
        name, kind = found.group(1), found.group(2) or "str"
        converter = CONVERTERS.get(kind)
        if converter is None:
            raise ValueError(
                f"unknown converter {kind!r} in {text!r}; known: {', '.join(CONVERTERS)}"
            )
        rest = rest or kind == "path"
        pattern.append(re.escape(text[position : found.start()]))
        pattern.append(f"(?P<{name}>{converter.pattern})")
        converters.append((name, converter.convert))
        position = found.end()
    pattern.append(re.escape(text[position:]))
    if "{" in text[position:] or "}" in text[position:]:
        raise ValueError(f"malformed parameter in route segment {text!r}")
    return _Segment(re.compile("".join(pattern)), tuple(converters), rest)


def http_error_response(exc: HTTPError, request: Request) -> Response:
    """The JSON response for an :class:`HTTPError`: ``{"error", "request_id"}``."""
    message = exc.message or _phrase(exc.status)
    response = Response.json(
        {"error": message, "request_id": request.id}, exc.status, headers=exc.headers or None
    )
    return response


def default_error_handler(request: Request, exc: Exception) -> Response:
    """A bare 500 with the request id; the App installs one that also logs."""
    return Response.json({"error": "Internal Server Error", "request_id": request.id}, 500)


def coerce_response(result: Any) -> Response:
    """Accept the seed's mapping shape as well as a Response.

    Raises:
        TypeError: ``result`` is neither.
    """
    if isinstance(result, Response):
        return result
    if isinstance(result, Mapping):
        return Response.from_mapping(result)
    raise TypeError(
        f"handler returned {type(result).__name__}; return a Response or a mapping "
        '{"status", "headers", "body"}'
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
