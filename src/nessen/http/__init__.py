"""I/O-free HTTP types: header fields, the request (``ctx``), the response, the handler type."""

from collections.abc import Awaitable, Callable

from nessen.http.headers import Headers
from nessen.http.request import Query, Request
from nessen.http.response import Response, SwitchingProtocols

Handler = Callable[[Request], Awaitable[Response]]
"""Anything the server can call with a request to get a response."""

__all__ = ["Handler", "Headers", "Query", "Request", "Response", "SwitchingProtocols"]
