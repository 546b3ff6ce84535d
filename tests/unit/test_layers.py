"""The layering rules of ARCHITECTURE.md, checked on the source's import statements."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import nessen
from nessen.runtime import Runtime

PACKAGE = Path(nessen.__file__).parent

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "nessen.server": (
        "nessen.app",
        "nessen.middleware",
        "nessen.observability",
        "nessen.runtime",
        "nessen.asgi",
        "nessen.cli",
        "nessen.demo",
    ),
    "nessen.app": ("nessen.server",),
    # WebSockets sit beside the HTTP core: the server hands a connection over, duck-typed
    "nessen.websocket": (
        "nessen.server",
        "nessen.app",
        "nessen.middleware",
        "nessen.observability",
        "nessen.runtime",
        "nessen.asgi",
        "nessen.cli",
        "nessen.demo",
    ),
    "nessen.observability": ("nessen.server",),
    "nessen.middleware": (
        "nessen.server",
        "nessen.runtime",
        "nessen.asgi",
        "nessen.cli",
        "nessen.demo",
    ),
    # the seam a Redis store implements: bytes and numbers in, no HTTP types
    "nessen.stores": ("nessen.http", "nessen.server", "nessen.app", "nessen.middleware"),
    # one direction only: nessen.asgi builds on the Runtime's public seam and imports it;
    # Runtime.__call__ reaches the ASGI adapter through set_asgi_entry (set by nessen/__init__)
    "nessen.runtime": ("nessen.asgi", "nessen.cli", "nessen.demo", "nessen.testing"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules_of(package: str) -> list[Path]:
    """The source files of ``package``, or the one file of a plain module (nessen.runtime)."""
    folder = PACKAGE.parent.joinpath(*package.split("."))
    if not folder.is_dir():
        module = folder.with_suffix(".py")
        return [module] if module.is_file() else []
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
    assert all(modules_of(package) for package in FORBIDDEN)
    assert modules_of("nessen.runtime") == [PACKAGE / "runtime.py"]
    assert len(modules_of("nessen.asgi")) >= 4
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


# --- nessen.asgi on the Runtime's public seam ------------------------------------------------


def runtime_private_accesses(source: str) -> list[str]:
    """Where ``source`` reaches into a Runtime's private parts, as ``line: expression``.

    A Runtime is an expression named ``runtime`` (a variable, or an attribute such as
    ``self.runtime``), a name annotated with ``Runtime`` or assigned ``Runtime(...)``, the
    class ``Runtime`` itself, and ``self`` in a class based on it. Any attribute chain from
    one that names something starting with ``_`` (dunders aside) counts, so
    ``runtime.app._handler`` does as much as ``runtime._serving``; so does importing an
    underscore name from ``nessen.runtime``.
    """
    tree = ast.parse(source)
    runtimes = {"runtime", "Runtime"}
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            target = node.arg if isinstance(node, ast.arg) else ast.unparse(node.target)
            if "Runtime" in ast.unparse(node.annotation):
                runtimes.add(target)
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and ast.unparse(node.value.func).split(".")[-1] == "Runtime"
        ):
            runtimes.update(ast.unparse(target) for target in node.targets)

    def from_runtime(node: ast.expr, names: set[str]) -> bool:
        while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
            if isinstance(node, ast.Attribute) and node.attr == "runtime":
                return True
            if ast.unparse(node) in names:
                return True
            node = node.func if isinstance(node, ast.Call) else node.value
        return ast.unparse(node) in names

    def private_attributes(scope: ast.AST, names: set[str]) -> list[str]:
        return [
            f"{node.lineno}: {ast.unparse(node)}"
            for node in ast.walk(scope)
            if isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and from_runtime(node.value, names)
        ]

    found = private_attributes(tree, runtimes)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            ast.unparse(base).split(".")[-1] == "Runtime" for base in node.bases
        ):
            found += private_attributes(node, runtimes | {"self"})
        elif isinstance(node, ast.ImportFrom) and node.module == "nessen.runtime":
            found.extend(
                f"{node.lineno}: from nessen.runtime import {alias.name}"
                for alias in node.names
                if alias.name.startswith("_")
            )
    return sorted(set(found), key=lambda access: int(access.partition(":")[0]))


def test_nessen_asgi_touches_nothing_private_of_a_runtime() -> None:
    violations = [
        f"{module_name(path)}:{access}"
        for path in modules_of("nessen.asgi")
        for access in runtime_private_accesses(path.read_text())
    ]
    assert violations == []


@pytest.mark.parametrize(
    "source",
    [
        "runtime._serving = True",
        "self.runtime._builtin_middleware(config)",
        "runtime.app._handler = dispatch",
        "host.runtime.app.router._routes",
        "def f(rt: Runtime):\n    rt._start_observability(config)",
        "def f(rt: 'Runtime | None'):\n    rt._serving",
        "rt = Runtime()\nrt._serving",
        "rt = nessen.runtime.Runtime()\nrt.app._handler",
        "Runtime._on_tick",
        "from nessen.runtime import Runtime, _RuntimeEvents",
        "self.runtime.prepare()._x",
        "class Host(Runtime):\n    def f(self):\n        self.app._handler = None",
    ],
)
def test_the_private_access_finder_sees_every_form(source: str) -> None:
    assert len(runtime_private_accesses(source)) == 1, source


@pytest.mark.parametrize(
    "source",
    [
        "runtime.prepare()",
        "self.runtime.app.error_response",
        "runtime.__class__",
        "request._raw_headers",  # a Request's, not a Runtime's
        "self._stream = stream",
        "class Host:\n    def f(self):\n        self._handler = None",
        "from nessen.runtime import Prepared, Runtime",
    ],
)
def test_the_private_access_finder_passes_public_use(source: str) -> None:
    assert runtime_private_accesses(source) == []


def test_no_class_in_nessen_asgi_is_a_runtime() -> None:
    modules = [importlib.import_module(module_name(path)) for path in modules_of("nessen.asgi")]
    classes = [
        cls
        for module in modules
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__.startswith("nessen.asgi")
    ]
    assert len(classes) >= 5
    assert [cls for cls in classes if issubclass(cls, Runtime)] == []
