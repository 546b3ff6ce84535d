"""The applications ``benchmarks/run.py`` compares: one module per server or framework.

Every app answers the same five endpoints the same way:

- ``GET /health``: ``OK`` as text/plain (2 bytes).
- ``GET /api/data``: about 200 bytes of JSON built and encoded per request.
- ``GET /users/{id}``: a path parameter echoed in a small JSON object.
- ``GET /json16k``: about 16 KB of JSON encoded per request (sent with
  ``Accept-Encoding: gzip``; only a stack with compression compresses it).
- ``POST /echo``: the request body (4 KB in the benchmark) sent back.
"""
