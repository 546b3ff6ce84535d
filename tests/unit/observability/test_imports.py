from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import nessen, nessen.demo, nessen.cli, nessen.observability
nessen.Runtime()
assert "prometheus_client" not in sys.modules, "imported at import time"
print("ok")
"""


def test_prometheus_client_is_imported_only_when_a_runtime_starts_serving() -> None:
    """prometheus-client reads PROMETHEUS_MULTIPROC_DIR when imported: not at nessen's import."""
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
