"""The layering rules of ARCHITECTURE.md, checked on the source's import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nessen

PACKAGE = Path(nessen.__file__).parent

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "nessen.server": (
        "nessen.app",
        "nessen.middleware",
        "nessen.observability",
        "nessen.runtime",
        "nessen.cli",
        "nessen.demo",
    ),
    "nessen.app": ("nessen.server",),
    "nessen.observability": ("nessen.server",),
    "nessen.middleware": ("nessen.server", "nessen.runtime", "nessen.cli", "nessen.demo"),
    # the seam a Redis store implements: bytes and numbers in, no HTTP types
    "nessen.stores": ("nessen.http", "nessen.server", "nessen.app", "nessen.middleware"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules_of(package: str) -> list[Path]:
    folder = PACKAGE.parent.joinpath(*package.split("."))
    return sorted(folder.rglob("*.py"))


def imported_modules(source: str) -> list[str]:
    """Every module an ``import`` or ``from ... import`` statement names, anywhere in the file.

    ``from nessen import app`` counts as importing ``nessen.app``; imports under ``if
    TYPE_CHECKING:`` and inside functions count too.
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def relative_imports(source: str) -> list[str]:
    return [
        "." * node.level + (node.module or "")
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_packages_exist() -> None:
    assert len(modules_of("nessen.server")) >= 4
    assert len(modules_of("nessen.http")) >= 4
    assert len(modules_of("nessen.app")) >= 4
    assert len(modules_of("nessen.observability")) >= 3
    assert len(modules_of("nessen.middleware")) >= 8
    assert len(modules_of("nessen.stores")) >= 3


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import nessen.app", ["nessen.app"]),
        ("import nessen.app.routing as r", ["nessen.app.routing"]),
        ("from nessen.app import Router", ["nessen.app", "nessen.app.Router"]),
        ("from nessen import app", ["nessen", "nessen.app"]),
        ("if TYPE_CHECKING:\n    from nessen.cli import main", ["nessen.cli", "nessen.cli.main"]),
        ("def f():\n    import nessen.demo", ["nessen.demo"]),
    ],
)
def test_the_import_walker_sees_every_form(source: str, expected: list[str]) -> None:
    assert imported_modules(source) == expected


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_forbidden_imports(package: str) -> None:
    violations = [
        f"{module_name(path)} imports {name}"
        for path in modules_of(package)
        for name in imported_modules(path.read_text())
        # ``from nessen import X`` goes through the top-level package, which imports them all
        if name == "nessen" or any(within(name, banned) for banned in FORBIDDEN[package])
    ]
    assert violations == []


def test_http_imports_only_itself_and_errors_from_nessen() -> None:
    violations = [
        f"{module_name(path)} imports {name}"
        for path in modules_of("nessen.http")
        for name in imported_modules(path.read_text())
        if within(name, "nessen")
        and not within(name, "nessen.http")
        and not within(name, "nessen.errors")
    ]
    assert violations == []


def test_no_relative_imports() -> None:
    violations = [
        f"{module_name(path)}: from {target} import ..."
        for path in sorted(PACKAGE.rglob("*.py"))
        for target in relative_imports(path.read_text())
    ]
    assert violations == []


def test_the_relative_import_finder_works() -> None:
    assert relative_imports("from . import x\nfrom ..http import y\nimport z") == [".", "..http"]


H1_MAY_IMPORT = (
    "__future__",
    "collections",
    "dataclasses",
    "email.utils",
    "enum",
    "http",
    "httptools",
    "logging",
    "re",
    "typing",
    "nessen.config",  # the settings, as values
    "nessen.errors",
    "nessen.http",
    "nessen.server.h1",
)
"""What the HTTP/1.1 core may import: no asyncio, no socket or transport, no clock (time
comes in as a value), nothing of the server around it."""


def test_the_connection_core_imports_no_io_and_no_clock() -> None:
    modules = modules_of("nessen.server.h1")
    assert len(modules) >= 4
    violations = [
        f"{module_name(path)} imports {name}"
        for path in modules
        for name in imported_modules(path.read_text())
        if not any(within(name, allowed) for allowed in H1_MAY_IMPORT)
    ]
    assert violations == []


def test_the_core_rule_catches_asyncio_and_time() -> None:
    source = "import asyncio\nfrom time import monotonic\nimport re"
    names = imported_modules(source)
    assert [n for n in names if not any(within(n, a) for a in H1_MAY_IMPORT)] == [
        "asyncio",
        "time",
        "time.monotonic",
    ]
