"""The HTTP/1.1 server: sockets, parsing, limits, timeouts, keep-alive, flow control, drain.

It calls one handler per request and knows nothing of routes, middleware or metrics.
"""

from nessen.server.server import DrainResult, Server
from nessen.server.state import ServerEvents

__all__ = ["DrainResult", "Server", "ServerEvents"]
