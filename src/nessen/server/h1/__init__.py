"""The HTTP/1.1 connection core, free of I/O: what bytes mean and what to answer.

Modules here import no asyncio and no transport and read no clock (a layering test checks
it): time comes in as a value and bytes come in and go out as values, so every rule can be
tested from bytes and a fake clock, and the native server, the ASGI host and the Runtime
running under another ASGI server share one copy of each rule.

- :mod:`~nessen.server.h1.phase`: the connection's read phases and their legal transitions.
- :mod:`~nessen.server.h1.policy`: the request checks of RFC 9112/9110 and the limits, as
  functions that raise :class:`~nessen.errors.ProtocolError` with the status to answer.
- :mod:`~nessen.server.h1.framing`: response serialisation (status line, fields, chunked
  coding) and the one server-made error answer.
"""
