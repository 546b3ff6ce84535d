"""Nessen: a production HTTP/1.1 runtime for Python.

Importing this package reads no environment, binds nothing and installs no handlers.
"""

from nessen._version import __version__
from nessen.app import Middleware, Next, State
from nessen.asgi.app import runtime_asgi_app
from nessen.config import Config
from nessen.errors import ConfigError, HTTPError, NessenError, ProtocolError
from nessen.http import Headers, Query, Request, Response
from nessen.runtime import Runtime, set_asgi_entry

# Runtime.__call__ (``uvicorn module:runtime``) runs the ASGI adapter: nessen.asgi imports
# nessen.runtime, never the reverse, so the two are joined here.
set_asgi_entry(runtime_asgi_app)

__all__ = [
    "Config",
    "ConfigError",
    "HTTPError",
    "Headers",
    "Middleware",
    "NessenError",
    "Next",
    "ProtocolError",
    "Query",
    "Request",
    "Response",
    "Runtime",
    "State",
    "__version__",
]
