"""Importing nessen, its CLI and the default stack loads only what serving HTTP needs.

Each module listed costs resident memory in every worker; it is imported where the feature
that needs it runs. Checked in a fresh interpreter, so other tests' imports do not count.
"""

from __future__ import annotations

import os
import subprocess
import sys

NOT_AT_IMPORT = (
    "email",  # the Date field is computed (framing.http_date), not email.utils'
    "hashlib",  # sets up OpenSSL's digests: the cache's ETags, the WebSocket handshake
    "html",  # the status page, when installed
    "logging.config",  # LOG_CONFIG only
    "pickle",  # the CLI hands a worker's settings over
    "tempfile",  # the supervisor of several workers
)

CHECK = """
import sys
import nessen, nessen.cli, nessen.middleware, nessen.observability
nessen.Runtime()
print(",".join(name for name in sys.argv[1:] if name in sys.modules))
"""


def test_importing_nessen_loads_none_of_the_optional_stdlib_modules() -> None:
    # Without coverage's subprocess measurement (make test): coverage itself imports
    # hashlib, pickle and html in the process it measures.
    env = {name: value for name, value in os.environ.items() if not name.startswith("COVERAGE_")}
    result = subprocess.run(
        [sys.executable, "-c", CHECK, *NOT_AT_IMPORT],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "\n", f"imported at import time: {result.stdout.strip()}"
