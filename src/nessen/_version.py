"""The package version (one place, read by pyproject and the runtime)."""

__version__ = "0.1.0"
