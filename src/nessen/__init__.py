"""Nessen: a production HTTP/1.1 runtime for Python.

Importing this package reads no environment, binds nothing and installs no handlers.
"""

from nessen._version import __version__
from nessen.app import Middleware, Next, State
from nessen.config import Config
from nessen.errors import ConfigError, HTTPError, NessenError, ProtocolError
from nessen.http import Headers, Query, Request, Response
from nessen.runtime import Runtime

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
