"""The README's code samples run here, so the README shows only what exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ServeFactory

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_the_two_quick_start_commands() -> None:
    text = README.read_text()
    quick_start = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick_start.strip().splitlines()]
    assert commands == ["make serve", "make test"]


def test_service_sample_behaves_as_described(serve: ServeFactory) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(python_blocks()[0], "README.md", "exec"), namespace)
    server = serve(namespace["runtime"])
    with httpx.Client(base_url=server.url) as client:
        user = client.get("/users/5?verbose=1")
        assert user.status_code == 200
        assert user.json() == {"id": 5, "verbose": True}
        assert user.headers["x-handled-by"] == "nessen"
        missing = client.get("/users/0")
        assert missing.status_code == 404
        assert missing.json()["error"] == "no such user"
        assert client.get("/users/abc").status_code == 404
        echoed = client.post("/echo", json={"a": [1, 2]})
        assert echoed.json() == {"received": {"a": [1, 2]}}
        bad = client.post("/echo", content=b"{not json")
        assert bad.status_code == 400
        assert bad.json()["error"] == "invalid JSON body"


def test_testing_sample_runs() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(python_blocks()[1], "README.md", "exec"), namespace)
    assert namespace["server"].result is not None  # the with-block stopped it cleanly
    assert namespace["server"].result.clean
