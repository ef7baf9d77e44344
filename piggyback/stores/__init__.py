"""Stores keep what must outlive one request; see :mod:`piggyback.stores.base`."""

from __future__ import annotations

import os
import typing as t

from .base import Store as Store
from .memory import MemoryStore as MemoryStore

#: Where the default SQLite store lives, unless ``PIGGYBACK_STORE`` says otherwise.
DEFAULT_SQLITE_PATH = os.path.join(".piggyback", "store.sqlite3")


def store_from_url(url: str | None = None, **options: t.Any) -> Store:
    """Open the store a URL names: ``memory:``, ``sqlite:///path`` or ``redis://...``.

    Without a URL, ``PIGGYBACK_STORE`` from the environment is used, and without that
    the embedded SQLite file ``.piggyback/store.sqlite3`` in the working directory.

    :param url: the store's URL.
    :param options: passed to the store's constructor, e.g. ``page_ttl=3600``.
    """
    url = url or os.environ.get("PIGGYBACK_STORE") or ""
    kind = store_kind(url) if url else "sqlite"
    if kind == "memory":
        return MemoryStore(**options)
    if kind == "redis":
        from .redis import RedisStore

        return RedisStore.from_url(url, **options)
    from .sqlite import SQLiteStore

    return SQLiteStore(url.removeprefix("sqlite:///") or DEFAULT_SQLITE_PATH, **options)


def store_kind(url: str) -> t.Literal["memory", "sqlite", "redis"]:
    """Which store a URL names, without opening it.

    :raise ValueError: it names none of them.

    .. versionadded:: 0.1
    """
    if url == "memory:":
        return "memory"
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith(_REDIS_SCHEMES):
        return "redis"
    raise ValueError(
        f"Unknown store URL {url!r}: expected 'memory:', 'sqlite:///<path>' or"
        " 'redis://<host>:<port>/<db>'."
    )


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
