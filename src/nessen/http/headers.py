"""Header fields: a case-insensitive, multi-valued, ordered collection (RFC 9110 §5)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TypeVar, Union, overload

_T = TypeVar("_T")

HeadersInit = Union["Headers", Mapping[str, str], Iterable[tuple[str, str]], None]

FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A field name is a token (RFC 9110 §5.1, §5.6.2); use ``FIELD_NAME.fullmatch(name)``."""

SERVER_FIELDS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}
)
"""Fields the server owns (lower case): a handler's copy is dropped so framing stays ours."""


class Headers(MutableMapping[str, str]):
    """Ordered header fields with case-insensitive names and repeatable fields.

    Names are compared case-insensitively (RFC 9110 §5.1) and kept as given, so a
    response goes out with the spelling its handler chose. Request headers are built by the
    server with lower-case names. Values are ``str`` holding latin-1 text: bytes 0x80-0xFF
    (obs-text) survive a decode/encode round trip unchanged.

    Reading a repeated field with ``headers[name]`` joins its values with ``", "``, the
    combination RFC 9110 §5.3 allows; :meth:`getall` returns them one by one and
    :meth:`multi_items` returns every ``(name, value)`` pair in order.
    """

    __slots__ = ("_items", "_keys")

    def __init__(self, fields: HeadersInit = None) -> None:
        self._items: list[tuple[str, str]] = []
        self._keys: list[str] = []
        if fields is None:
            return
        pairs = fields.items() if isinstance(fields, Mapping) else fields
        if isinstance(fields, Headers):
            pairs = fields.multi_items()
        for name, value in pairs:
            self._items.append((name, value))
            self._keys.append(name.lower())

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> Headers:
        """Build request headers from the parser's raw ``(name, value)`` byte pairs.

        Names are lower-cased; both are decoded as latin-1, which cannot fail.
        """
        headers = cls()
        items = headers._items
        keys = headers._keys
        for name, value in raw:
            key = name.decode("latin-1").lower()
            items.append((key, value.decode("latin-1")))
            keys.append(key)
        return headers

    def __getitem__(self, name: str) -> str:
        key = name.lower()
        keys = self._keys
        try:
            index = keys.index(key)
        except ValueError:
            raise KeyError(name) from None
        if keys.count(key) == 1:
            return self._items[index][1]
        return ", ".join(self.getall(name))

    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, default: str, /) -> str: ...
    @overload
    def get(self, name: str, default: _T, /) -> str | _T: ...

    def get(self, name: str, default: object = None, /) -> object:
        """Return the value of ``name`` (repeated fields joined by ``", "``) or ``default``."""
        key = name.lower()
        if key not in self._keys:
            return default
        return self[name]

    def getall(self, name: str) -> list[str]:
        """Return every value of ``name`` in order; ``[]`` when absent."""
        key = name.lower()
        return [item[1] for k, item in zip(self._keys, self._items, strict=True) if k == key]

    def __setitem__(self, name: str, value: str) -> None:
        """Set ``name`` to one ``value``, replacing every earlier value of that field."""
        key = name.lower()
        if key in self._keys:
            self._remove(key)
        self._items.append((name, value))
        self._keys.append(key)

    def setdefault(self, name: str, default: str = "") -> str:
        """Return the value of ``name``, adding ``name: default`` first when absent."""
        if name.lower() in self._keys:
            return self[name]
        self.add(name, default)
        return default

    def setdefaults(self, fields: Headers) -> None:
        """Add every field of ``fields`` whose name is not set here yet, in one pass.

        ``fields`` is usually built once and reused (e.g. a middleware's fixed security
        fields), so its names are already lower-cased: no per-call case folding.
        """
        keys = self._keys
        items = self._items
        for key, item in zip(fields._keys, fields._items, strict=True):
            if key not in keys:
                keys.append(key)
                items.append(item)

    def add(self, name: str, value: str) -> None:
        """Append a field, keeping any earlier values (e.g. a second ``Set-Cookie``)."""
        self._items.append((name, value))
        self._keys.append(name.lower())

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        if key not in self._keys:
            raise KeyError(name)
        self._remove(key)

    def _remove(self, key: str) -> None:
        pairs = [(k, item) for k, item in zip(self._keys, self._items, strict=True) if k != key]
        self._keys = [k for k, _ in pairs]
        self._items = [item for _, item in pairs]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._keys

    def __iter__(self) -> Iterator[str]:
        """Iterate over distinct field names, lower-cased, in first-seen order."""
        return iter(dict.fromkeys(self._keys))

    def __len__(self) -> int:
        """Return the number of distinct field names."""
        return len(set(self._keys))

    def multi_items(self) -> list[tuple[str, str]]:
        """Return every ``(name, value)`` pair in order, repeated fields included."""
        return list(self._items)

    def copy(self) -> Headers:
        """Return an independent copy."""
        other = Headers()
        other._items = list(self._items)
        other._keys = list(self._keys)
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        mine = sorted(zip(self._keys, (v for _, v in self._items), strict=True))
        theirs = sorted(zip(other._keys, (v for _, v in other._items), strict=True))
        return mine == theirs

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
