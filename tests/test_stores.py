"""One suite for every store: memory, SQLite and Redis behave alike.

Time is a hand-moved clock for the memory and SQLite stores; a Redis server keeps its
own, so its tests really wait, with small TTLs and generous margins.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import multiprocessing
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from piggyback.reply import Batch
from piggyback.stores import store_from_url
from piggyback.stores.base import Changes
from piggyback.stores.base import DEFAULT_PAGE_TTL
from piggyback.stores.base import LeaseLost
from piggyback.stores.base import load_record
from piggyback.stores.base import Mail
from piggyback.stores.base import MAX_SWEEP_INTERVAL
from piggyback.stores.base import PageRecord
from piggyback.stores.base import READ_LIMIT
from piggyback.stores.base import Store
from piggyback.stores.base import sweep_interval
from piggyback.stores.base import SWEEPS_PER_TTL
from piggyback.stores.memory import MemoryStore
from piggyback.stores.record_slots import place
from piggyback.stores.redis import RedisStore
from piggyback.stores.sqlite import _SCHEMA
from piggyback.stores.sqlite import SQLiteStore

from .redis_server import redis_server
from .servers import ROOT

#: The page TTL of the expiry tests.
TTL = 1.0

A = [["text", "a", "1"]]
B = [["html", "b", "<i>2</i>"]]
C = [["js", "console.log(3)"]]


class Clock:
    """A clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Backend:
    """Opens stores on one storage, and lets time pass for them."""

    def __init__(self, make: t.Callable[..., Store], travel: t.Callable[[float], None]) -> None:
        self.make = make
        self.travel = travel
        self.stores: list[Store] = []

    def open(self, **options: t.Any) -> Store:
        store = self.make(**options)
        self.stores.append(store)
        return store


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    clock = Clock()
    return Backend(lambda **o: MemoryStore(clock=clock, **o), clock.advance)


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    clock = Clock()
    path = tmp_path / "store.sqlite3"
    return Backend(lambda **o: SQLiteStore(path, clock=clock, **o), clock.advance)


def _redis(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    client = request.getfixturevalue("redis_client")
    return Backend(lambda **o: RedisStore(client, **o), time.sleep)


def _redis_bounded(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    # A pool of one connection: a store that kept it would fail its next call.
    request.getfixturevalue("redis_client")  # an empty database
    client = _pool_client(request.getfixturevalue("redis_url"), redis.BlockingConnectionPool, 1)
    request.addfinalizer(client.connection_pool.disconnect)
    return Backend(lambda **o: RedisStore(client, **o), time.sleep)


MEMORY = pytest.param(_memory, id="memory")
SQLITE = pytest.param(_sqlite, id="sqlite")
REDIS = pytest.param(_redis, id="redis")
REDIS_BOUNDED = pytest.param(_redis_bounded, id="redis-bounded")

#: The bound of a pool without one: the store keeps its connections only there.
UNBOUNDED = 2**31

#: Makes a client on a pool of its own, of a class and bound.
MakeClient = t.Callable[[type[redis.ConnectionPool], int], redis.Redis]


@pytest.fixture(scope="session")
def redis_url() -> t.Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> t.Iterator[redis.Redis]:
    """A client on a pool without a bound, from which the store keeps connections."""
    client = redis.Redis.from_url(redis_url, max_connections=UNBOUNDED)
    client.flushdb()
    yield client
    client.close()


def _pool_client(
    url: str, pool_class: type[redis.ConnectionPool], max_connections: int
) -> redis.Redis:
    """A client on a pool of its own; a blocking pool waits 2 s for a connection."""
    options = {"timeout": 2} if issubclass(pool_class, redis.BlockingConnectionPool) else {}
    pool = pool_class.from_url(url, max_connections=max_connections, **options)
    return redis.Redis(connection_pool=pool)


@pytest.fixture
def bounded_client(redis_client: redis.Redis, redis_url: str) -> t.Iterator[MakeClient]:
    """Makes clients on pools of a class and bound, on an empty database."""
    clients: list[redis.Redis] = []

    def make(pool_class: type[redis.ConnectionPool], max_connections: int) -> redis.Redis:
        clients.append(_pool_client(redis_url, pool_class, max_connections))
        return clients[-1]

    yield make
    for client in clients:
        client.connection_pool.disconnect()


def _backend(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[Backend]:
    backend = request.param(request, tmp_path)
    yield backend
    for store in backend.stores:
        store.close()


@pytest.fixture(params=[MEMORY, SQLITE, REDIS, REDIS_BOUNDED])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[Backend]:
    yield from _backend(request, tmp_path)


@pytest.fixture(params=[SQLITE, REDIS])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[Backend]:
    """A backend whose stores see the same data, as processes and machines do."""
    yield from _backend(request, tmp_path)


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


def commit(store: Store, page_id: str, record: PageRecord | None = None, **kw: t.Any) -> None:
    """Lock the page and save ``Changes(record, **kw)``, as an event would."""
    owner = store.lock(page_id, 60)
    assert owner is not None
    store.save(page_id, owner, Changes(record=record or PageRecord(), **kw))


# Secret


def test_secret_is_32_stable_bytes(store: Store) -> None:
    secret = store.secret()
    assert isinstance(secret, bytes)
    assert len(secret) == 32
    assert store.secret() == secret


def test_secret_is_shared_by_stores_on_the_same_storage(shared: Backend) -> None:
    assert shared.open().secret() == shared.open().secret()


# Leases


def test_lock_is_exclusive_per_page(store: Store) -> None:
    owner = store.lock("p", 60)
    assert isinstance(owner, str)
    assert store.lock("p", 60) is None
    other = store.lock("q", 60)
    assert other is not None
    assert other != owner


def test_unlock_gives_the_lease_back(store: Store) -> None:
    owner = store.lock("p", 60)
    assert owner is not None
    store.unlock("p", owner)
    assert store.lock("p", 60) is not None


def test_unlock_by_another_owner_is_a_no_op(store: Store) -> None:
    owner = store.lock("p", 60)
    assert owner is not None
    store.unlock("p", "someone-else")
    store.unlock("never-locked", "someone-else")
    assert store.lock("p", 60) is None
    store.save("p", owner, Changes(record=PageRecord(seq=1)))
    assert store.load("p") == (PageRecord(seq=1), Mail())


def test_lease_that_ran_out_is_taken_over(backend: Backend) -> None:
    store = backend.open()
    stale = store.lock("p", 0.1)
    assert stale is not None
    backend.travel(0.3)
    owner = store.lock("p", 60)
    assert owner is not None
    assert owner != stale
    with pytest.raises(LeaseLost):
        store.save("p", stale, Changes(record=PageRecord(seq=1)))
    store.unlock("p", stale)
    assert store.lock("p", 60) is None
    store.save("p", owner, Changes(record=PageRecord(seq=2)))
    assert store.load("p") == (PageRecord(seq=2), Mail())


def test_lease_that_ran_out_untaken_still_saves(backend: Backend) -> None:
    store = backend.open()
    owner = store.lock("p", 0.1)
    assert owner is not None
    backend.travel(0.3)
    store.save("p", owner, Changes(record=PageRecord(seq=1)))
    assert store.load("p") == (PageRecord(seq=1), Mail())


def test_save_gives_the_lease_back(store: Store) -> None:
    owner = store.lock("p", 60)
    assert owner is not None
    store.save("p", owner, Changes(record=PageRecord(seq=1)))
    with pytest.raises(LeaseLost):
        store.save("p", owner, Changes(record=PageRecord(seq=2)))
    assert store.lock("p", 60) is not None
    assert store.load("p") == (PageRecord(seq=1), Mail())


def test_save_without_the_lease_raises_and_changes_nothing(store: Store) -> None:
    store.join("p", "g")
    commit(store, "p", PageRecord(seq=1, state={"n": 1}))
    store.push("p", A)
    store.publish("g", B)
    before = store.load("p")
    stale = store.lock("p", 60)
    assert stale is not None
    store.unlock("p", stale)
    taker = store.lock("p", 60)
    assert taker is not None
    changes = Changes(
        record=PageRecord(seq=2, state={"n": 2}),
        inbox_upto=1,
        cursors={"g": 2},
        pushes=[("q", C)],
        publishes=[("g", C)],
        joins=["h"],
        leaves=["g"],
    )
    with pytest.raises(LeaseLost, match=r"^The lease on page 'p' is no longer held"):
        store.save("p", stale, changes)
    with pytest.raises(LeaseLost):
        store.save("never-locked", "someone", changes)
    assert store.load("p") == before
    assert store.load("q") == (None, Mail())
    assert store.load("never-locked") == (None, Mail())
    assert store.lock("p", 60) is None


def test_lease_lost_carries_the_page_id() -> None:
    error = LeaseLost("p")
    assert error.page_id == "p"
    assert str(error) == (
        "The lease on page 'p' is no longer held by this owner; nothing was saved."
    )


# Begin: the lease and the load in one go


def _fill(store: Store, page_id: str) -> None:
    """A page with a record, an inbox and two groups, one with news."""
    store.join(page_id, "quiet")
    store.join(page_id, "busy")
    commit(store, page_id, PageRecord(seq=3, state={"n": 3}, batches=[Batch(3, A)]))
    store.push(page_id, B)
    store.publish("busy", C)


def test_begin_returns_what_lock_and_load_return(store: Store) -> None:
    _fill(store, "p")
    taken = store.begin("p", 60)
    assert taken is not None
    owner, record, mail = taken
    assert isinstance(owner, str)
    store.unlock("p", owner)
    locked = store.lock("p", 60)
    assert locked is not None
    assert (record, mail) == store.load("p")
    assert (record, mail) == (
        PageRecord(seq=3, state={"n": 3}, batches=[Batch(3, A)]),
        Mail(inbox=[(1, B)], groups={"busy": [(2, C)], "quiet": []}),
    )


def test_begin_on_an_unknown_page(store: Store) -> None:
    taken = store.begin("p", 60)
    assert taken is not None
    owner, record, mail = taken
    assert (record, mail) == (None, Mail())
    store.save("p", owner, Changes(record=PageRecord(seq=1)))
    assert store.load("p") == (PageRecord(seq=1), Mail())


def test_begin_is_refused_while_a_live_owner_holds_the_lease(store: Store) -> None:
    commit(store, "p", PageRecord(seq=1))
    taken = store.begin("p", 60)
    assert taken is not None
    owner = taken[0]
    assert store.begin("p", 60) is None
    assert store.lock("p", 60) is None
    assert store.begin("q", 60) is not None
    store.save("p", owner, Changes(record=PageRecord(seq=2)))
    other = store.lock("p", 60)
    assert other is not None
    assert store.begin("p", 60) is None
    store.unlock("p", other)
    again = store.begin("p", 60)
    assert again is not None
    assert again[1] == PageRecord(seq=2)


def test_begin_takes_over_a_lease_that_ran_out(backend: Backend) -> None:
    store = backend.open()
    commit(store, "p", PageRecord(seq=1))
    stale = store.begin("p", 0.1)
    assert stale is not None
    backend.travel(0.3)
    taken = store.begin("p", 60)
    assert taken is not None
    owner, record, _ = taken
    assert owner != stale[0]
    assert record == PageRecord(seq=1)
    with pytest.raises(LeaseLost):
        store.save("p", stale[0], Changes(record=PageRecord(seq=9)))
    store.save("p", owner, Changes(record=PageRecord(seq=2)))
    assert store.load("p") == (PageRecord(seq=2), Mail())


def test_load_needs_no_lease_while_an_event_runs(store: Store) -> None:
    _fill(store, "p")
    before = store.load("p")
    taken = store.begin("p", 60)
    assert taken is not None
    owner = taken[0]
    assert store.load("p") == before
    store.push("p", A)  # while the handler runs
    during = store.load("p")
    assert during[1].inbox == [(1, B), (3, A)]
    changes = Changes(record=PageRecord(seq=4), inbox_upto=1, cursors={"busy": 2})
    store.save("p", owner, changes)
    assert store.load("p") == (
        PageRecord(seq=4),
        Mail(inbox=[(3, A)], groups={"busy": [], "quiet": []}),
    )


def test_begin_of_an_expired_page_has_no_record(backend: Backend) -> None:
    store = backend.open(page_ttl=TTL)
    commit(store, "p", PageRecord(seq=1))
    backend.travel(TTL * 1.5)
    taken = store.begin("p", 60)
    assert taken is not None
    assert taken[1:] == (None, Mail())
    store.unlock("p", taken[0])
    assert store.load("p") == (None, Mail())


class DefaultBegin(MemoryStore):
    """A store that relies on :meth:`Store.begin`, built on its lock and load."""

    begin = Store.begin
    fail_load = False

    def load(self, page_id: str) -> tuple[PageRecord | None, Mail]:
        if self.fail_load:
            raise RuntimeError("The store is down.")
        return super().load(page_id)


def test_default_begin_is_lock_then_load() -> None:
    store = DefaultBegin()
    _fill(store, "p")
    taken = store.begin("p", 60)
    assert taken is not None
    assert taken[1:] == store.load("p")
    assert store.begin("p", 60) is None
    store.unlock("p", taken[0])
    store.fail_load = True
    with pytest.raises(RuntimeError, match="down"):
        store.begin("p", 60)
    assert store.lock("p", 60) is not None  # the failed begin gave the lease back


# Records


def test_unknown_page_has_no_record_and_no_mail(store: Store) -> None:
    assert store.load("p") == (None, Mail())


def test_record_round_trips(store: Store) -> None:
    record = PageRecord(
        seq=7,
        state={"n": 1, "text": "é </script> \u2028", "list": [1, 2.5, None, True]},
        batches=[
            Batch(6, [["text", "a", "x"]]),
            Batch(7, [], error="The handler failed."),
        ],
    )
    commit(store, "p", record)
    assert store.load("p") == (record, Mail())
    commit(store, "p", PageRecord(seq=8))
    assert store.load("p") == (PageRecord(seq=8), Mail())


# Inboxes


def test_pushes_wait_in_the_inbox_in_order(store: Store) -> None:
    store.push("p", A)
    store.push("p", B + C)
    expected = (None, Mail(inbox=[(1, A), (2, B + C)]))
    assert store.load("p") == expected
    assert store.load("p") == expected
    assert store.load("q") == (None, Mail())


def test_inbox_upto_deletes_only_what_was_delivered(store: Store) -> None:
    store.push("p", A)
    owner = store.lock("p", 60)
    assert owner is not None
    _, mail = store.load("p")
    assert mail == Mail(inbox=[(1, A)])
    store.push("p", B)  # while the handler runs
    store.save("p", owner, Changes(record=PageRecord(seq=1), inbox_upto=1))
    assert store.load("p") == (PageRecord(seq=1), Mail(inbox=[(2, B)]))


# Groups


def test_member_receives_only_what_is_published_after_joining(store: Store) -> None:
    store.publish("g", A)
    store.join("p", "g")
    assert store.load("p") == (None, Mail(groups={"g": []}))
    store.publish("g", B)
    store.publish("other", C)
    assert store.load("p") == (None, Mail(groups={"g": [(2, B)]}))
    assert store.load("q") == (None, Mail())


def test_cursor_marks_what_was_delivered(store: Store) -> None:
    store.join("p", "g")
    store.publish("g", A)
    store.publish("g", B)
    owner = store.lock("p", 60)
    assert owner is not None
    assert store.load("p")[1] == Mail(groups={"g": [(1, A), (2, B)]})
    store.publish("g", C)  # while the handler runs
    store.save("p", owner, Changes(record=PageRecord(seq=1), cursors={"g": 2}))
    assert store.load("p") == (PageRecord(seq=1), Mail(groups={"g": [(3, C)]}))


def test_leave_stops_delivery(store: Store) -> None:
    store.join("p", "g")
    store.publish("g", A)
    store.leave("p", "g")
    assert store.load("p") == (None, Mail())
    store.publish("g", B)
    assert store.load("p") == (None, Mail())
    store.leave("p", "g")
    store.leave("q", "never-joined")


def test_cursor_does_not_bring_back_a_membership_left_meanwhile(store: Store) -> None:
    store.join("p", "g")
    store.publish("g", A)
    owner = store.lock("p", 60)
    assert owner is not None
    store.load("p")
    store.leave("p", "g")  # e.g. by another page's handler
    store.save("p", owner, Changes(record=PageRecord(seq=1), cursors={"g": 1}))
    store.publish("g", B)
    assert store.load("p") == (PageRecord(seq=1), Mail())


def test_joining_again_keeps_the_cursor(store: Store) -> None:
    store.join("p", "g")
    store.publish("g", A)
    store.join("p", "g")
    commit(store, "p", joins=["g"])
    assert store.load("p")[1] == Mail(groups={"g": [(1, A)]})


def test_save_applies_leaves_and_joins(store: Store) -> None:
    store.join("p", "old")
    commit(store, "p", joins=["new"], leaves=["old"])
    store.publish("old", A)
    store.publish("new", B)
    assert store.load("p")[1] == Mail(groups={"new": [(2, B)]})


def test_save_leaving_and_joining_again_starts_after_the_head(store: Store) -> None:
    store.join("p", "g")
    store.publish("g", A)
    commit(store, "p", leaves=["g"], joins=["g"])
    assert store.load("p")[1] == Mail(groups={"g": []})


def test_save_sends_pushes_and_publishes(store: Store) -> None:
    store.join("member", "g")
    store.join("p", "g")
    commit(
        store,
        "p",
        pushes=[("q", A), ("p", B)],
        publishes=[("g", C), ("h", A)],
        joins=["h"],
    )
    assert store.load("q") == (None, Mail(inbox=[(1, A)]))
    assert store.load("member") == (None, Mail(groups={"g": [(3, C)]}))
    assert store.load("p") == (
        PageRecord(),
        Mail(inbox=[(2, B)], groups={"g": [(3, C)], "h": [(4, A)]}),
    )


def test_ids_increase_across_inboxes_and_groups(store: Store) -> None:
    store.join("p", "g")
    store.push("p", A)
    store.publish("g", B)
    store.push("p", C)
    assert store.load("p")[1] == Mail(inbox=[(1, A), (3, C)], groups={"g": [(2, B)]})


def test_loaded_mail_is_a_copy(store: Store) -> None:
    store.push("p", [["text", "a", "1"]])
    _, mail = store.load("p")
    mail.inbox[0][1].append(["remove", "x"])
    assert store.load("p")[1] == Mail(inbox=[(1, A)])


# Expiry


def test_unused_pages_expire_with_their_mail(backend: Backend) -> None:
    store = backend.open(page_ttl=TTL)
    store.join("p", "g")
    commit(store, "p", PageRecord(seq=1))
    store.push("p", A)
    store.publish("g", B)
    backend.travel(TTL * 1.5)
    assert store.load("p") == (None, Mail())
    store.publish("g", C)
    assert store.load("p") == (None, Mail())
    assert store.lock("p", 60) is not None


def test_use_keeps_a_page_alive_and_old_messages_expire(backend: Backend) -> None:
    store = backend.open(page_ttl=TTL)
    store.join("p", "g")
    commit(store, "p", PageRecord(seq=1))
    store.push("p", A)
    backend.travel(TTL * 0.6)
    commit(store, "p", PageRecord(seq=2))
    store.push("p", B)
    store.publish("g", C)
    backend.travel(TTL * 0.6)
    assert store.load("p") == (
        PageRecord(seq=2),
        Mail(inbox=[(2, B)], groups={"g": [(3, C)]}),
    )


def test_expired_membership_stays_gone_when_the_page_joins_another(
    backend: Backend,
) -> None:
    store = backend.open(page_ttl=TTL)
    store.join("p", "old")
    backend.travel(TTL * 1.5)
    store.join("p", "new")
    store.publish("old", A)
    assert store.load("p") == (None, Mail(groups={"new": []}))


# Sharing and closing


def test_stores_on_the_same_storage_share_everything(shared: Backend) -> None:
    one, two = shared.open(), shared.open()
    owner = one.lock("p", 60)
    assert owner is not None
    assert two.lock("p", 60) is None
    two.join("p", "g")
    two.push("p", A)
    two.publish("g", B)
    one.save("p", owner, Changes(record=PageRecord(seq=1)))
    assert two.load("p") == (
        PageRecord(seq=1),
        Mail(inbox=[(1, A)], groups={"g": [(2, B)]}),
    )


def test_close_then_use_again(store: Store) -> None:
    store.push("p", A)
    store.close()
    store.push("p", B)
    assert store.load("p") == (None, Mail(inbox=[(1, A), (2, B)]))
    store.close()


# store_from_url


def test_store_from_url_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_from_url("memory:", page_ttl=5)
    assert isinstance(store, MemoryStore)
    assert store.page_ttl == 5
    monkeypatch.setenv("PIGGYBACK_STORE", "memory:")
    assert isinstance(store_from_url(), MemoryStore)


def test_store_from_url_sqlite(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite:///{tmp_path}/store.db", page_ttl=5)
    assert isinstance(store, SQLiteStore)
    assert (store.path, store.page_ttl) == (f"{tmp_path}/store.db", 5)


def test_store_from_url_default_is_sqlite_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PIGGYBACK_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    store = store_from_url()
    assert isinstance(store, SQLiteStore)
    store.push("p", A)
    store.close()
    assert (tmp_path / ".piggyback" / "store.sqlite3").is_file()


def test_store_from_url_redis(redis_url: str) -> None:
    store = store_from_url(redis_url, page_ttl=5, prefix="app:")
    assert isinstance(store, RedisStore)
    assert (store.page_ttl, store.prefix) == (5, "app:")
    store.close()


def test_store_from_url_unknown() -> None:
    with pytest.raises(ValueError, match=r"^Unknown store URL 'mongodb://x': expected"):
        store_from_url("mongodb://x")


# SQLite


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_creates_a_private_wal_file_and_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.sqlite3"
    store = SQLiteStore(path)
    assert not path.parent.parent.exists()  # importing an app creates nothing
    store.push("p", A)
    assert _mode(path.parent) == 0o700
    modes = {p.name: _mode(p) for p in path.parent.iterdir()}
    files = ("store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm", "store.sqlite3-lease")
    assert modes == {name: 0o600 for name in (*files, "store.sqlite3-records")}
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_makes_an_existing_file_and_piggyback_directory_private(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app" / ".piggyback" / "store.sqlite3"
    path.parent.mkdir(mode=0o755, parents=True)
    os.chmod(path.parent, 0o755)
    os.chmod(path.parent.parent, 0o755)
    first = SQLiteStore(path)
    first.push("p", A)  # its open connection keeps the -wal and -shm
    for name in ("store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm"):
        os.chmod(path.parent / name, 0o644)
    store = SQLiteStore(path)
    assert store.load("p") == (None, Mail(inbox=[(1, A)]))
    modes = {p.name: _mode(p) for p in (path.parent.parent, *path.parent.parent.rglob("*"))}
    assert modes == {
        "app": 0o755,  # the user's own directory is left alone
        ".piggyback": 0o700,
        "store.sqlite3": 0o600,
        "store.sqlite3-wal": 0o600,
        "store.sqlite3-shm": 0o600,
        "store.sqlite3-lease": 0o600,
        "store.sqlite3-records": 0o600,
    }


def test_sqlite_leaves_a_directory_of_another_name_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "data" / "store.sqlite3"
    path.parent.mkdir()
    os.chmod(path.parent, 0o750)
    SQLiteStore(path).push("p", A)
    assert (_mode(path), _mode(path.parent)) == (0o600, 0o750)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        pytest.param(":memory:", "SQLiteStore needs a file, not ':memory:'", id="memory"),
        pytest.param("", "SQLiteStore needs a file, not ''", id="empty"),
    ],
)
def test_sqlite_needs_a_file(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        SQLiteStore(path)


@pytest.mark.parametrize(
    "page_ttl",
    [
        pytest.param(0, id="zero"),
        pytest.param(-5, id="negative"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="infinite"),
        pytest.param("60", id="text"),
        pytest.param(True, id="bool"),
    ],
)
def test_a_store_needs_a_positive_finite_ttl(backend: Backend, page_ttl: t.Any) -> None:
    """One rule for all three stores (stores/base.py); the memory store once took any."""
    message = f"page_ttl must be positive, got {page_ttl!r}: a finite number of seconds"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        backend.open(page_ttl=page_ttl)


def test_every_store_sweeps_on_the_shared_interval(tmp_path: Path) -> None:
    assert sweep_interval(TTL) == TTL / SWEEPS_PER_TTL
    assert sweep_interval(DEFAULT_PAGE_TTL) == MAX_SWEEP_INTERVAL
    assert SQLiteStore(tmp_path / "s.sqlite3", page_ttl=50)._sweep_every == 5
    clock = Clock()
    memory = MemoryStore(page_ttl=50, clock=clock)
    memory.load("p")
    assert memory._next_sweep == clock.now + 5


def _count_rows(path: Path) -> dict[str, int]:
    counts = {
        "pages": "SELECT count(*) FROM pages",
        "messages": "SELECT count(*) FROM messages",
        "memberships": "SELECT count(*) FROM memberships",
    }
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {name: db.execute(sql).fetchone()[0] for name, sql in counts.items()}


def test_sqlite_sweep_deletes_what_expired(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    clock = Clock()
    store = SQLiteStore(path, page_ttl=100, clock=clock)
    for n in range(20):
        # A save that moves mail keeps the record in the page's row, not in a slot.
        commit(store, f"p{n}", PageRecord(seq=1), joins=["g"])
        store.push(f"p{n}", A)
        store.publish("g", B)
    store.lock("crashed", 10)  # a lease is no row: the lock file holds it
    store.lock("p0", 10)
    assert _count_rows(path) == {
        "pages": 20,
        "messages": 40,
        "memberships": 20,
    }
    clock.advance(150)
    store.push("fresh", C)
    assert _count_rows(path) == {
        "pages": 0,
        "messages": 1,
        "memberships": 0,
    }


_TABLE_SCAN = r"SCAN (?!CONSTANT ROW|\(subquery-\d+\)|w\Z)"


def test_sqlite_queries_use_indexes(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(tmp_path / "store.sqlite3", page_ttl=100, clock=clock)
    statements: list[str] = []
    store._db().set_trace_callback(statements.append)  # white box: see every query
    store.join("p", "g")
    store.push("p", A)
    store.publish("g", B)
    commit(store, "p", inbox_upto=1, cursors={"g": 2}, pushes=[("q", C)], joins=["h"])
    commit(store, "p", publishes=[("g", C)], leaves=["h"])
    taken = store.begin("p", 60)
    assert taken is not None
    assert store.begin("p", 60) is None
    store.save("p", taken[0], Changes(record=PageRecord(seq=1)))
    store.unlock("p", "nobody")
    store.load("p")
    store.load("q")
    store.leave("p", "g")
    clock.advance(20)
    store.push("p", A)  # and the sweep before it
    scans = []
    # Clearing the record file's map reads every page that has anything, by design.
    map_reads = [sql for sql in statements if sql.strip().startswith("SELECT id FROM pages")]
    assert len(map_reads) == 1
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        for sql in statements:
            if sql.split()[0] in {"SELECT", "INSERT", "UPDATE", "DELETE"} and sql not in map_reads:
                plan = db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
                # Scans of the few ids a LIMIT let through are fine; of a table, not.
                scans += [d for *_, d in plan if re.match(_TABLE_SCAN, d)]
    assert len(statements) > 20
    assert scans == []


def test_sqlite_page_in_steady_use_stays_alive(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(tmp_path / "store.sqlite3", page_ttl=100, clock=clock)
    store.join("p", "g")
    for seq in range(1, 301):  # for 1.5 TTL, so often that most saves touch nothing
        commit(store, "p", PageRecord(seq=seq))
        clock.advance(0.5)
    clock.advance(98)
    store.publish("g", A)
    assert store.load("p") == (PageRecord(seq=300), Mail(groups={"g": [(1, A)]}))
    clock.advance(2)
    assert store.load("p") == (None, Mail())


def _statements(store: SQLiteStore, run: t.Callable[[], t.Any]) -> list[str]:
    """The first word of each statement ``run`` makes the store execute."""
    statements: list[str] = []
    store._db().set_trace_callback(lambda sql: statements.append(sql.split()[0]))
    run()
    store._db().set_trace_callback(None)
    return statements


def test_sqlite_plain_event_of_a_page_in_its_slot_runs_no_statement(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.sqlite3")
    commit(store, "p", PageRecord(seq=1))
    taken: list[t.Any] = []
    # The record is in the page's slot of the record file, whose flag says no mail.
    assert _statements(store, lambda: taken.append(store.begin("p", 60))) == []
    owner, record, mail = taken[0]
    assert (record, mail) == (PageRecord(seq=1), Mail())
    save = lambda: store.save("p", owner, Changes(record=PageRecord(seq=2)))  # noqa: E731
    assert _statements(store, save) == []
    assert _statements(store, lambda: store.load("p")) == []
    assert store.load("p") == (PageRecord(seq=2), Mail())
    store.push("p", A)  # flags the slot: now the page's reads look for mail
    assert _statements(store, lambda: store.load("p")) == ["SELECT", "SELECT"]
    assert store.load("p") == (PageRecord(seq=2), Mail(inbox=[(1, A)]))


def test_sqlite_plain_event_of_a_page_in_the_database_is_one_statement_each_way(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "store.sqlite3")
    commit(store, "p", PageRecord(seq=1), joins=["g"])  # moves mail: the record's row
    taken: list[t.Any] = []
    assert _statements(store, lambda: taken.append(store.begin("p", 60))) == [
        "SELECT",
        "SELECT",  # the page's membership: mail may wait
    ]
    owner, record, _ = taken[0]
    assert record == PageRecord(seq=1)
    save = lambda: store.save("p", owner, Changes(record=PageRecord(seq=2)))  # noqa: E731
    assert _statements(store, save) == ["UPDATE"]
    assert store.load("p") == (PageRecord(seq=2), Mail(groups={"g": []}))


def test_sqlite_reads_mail_only_for_a_page_that_may_have_some(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.sqlite3")
    store.push("p", A)
    taken: list[t.Any] = []
    assert _statements(store, lambda: taken.append(store.begin("p", 60))) == [
        "SELECT",
        "SELECT",
    ]
    assert taken[0][2] == Mail(inbox=[(1, A)])
    save = lambda: store.save("p", taken[0][0], Changes(record=PageRecord(), inbox_upto=1))  # noqa: E731
    # Its first save makes the row and touches the memberships with it.
    assert _statements(store, save) == ["BEGIN", "INSERT", "DELETE", "UPDATE", "COMMIT"]


def _hold_the_write_lock(path: Path, seconds: float) -> threading.Thread:
    """Another connection holds the database's write lock for ``seconds``."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("BEGIN IMMEDIATE")

    def release() -> None:
        time.sleep(seconds)
        db.execute("COMMIT")
        db.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_sqlite_waits_while_another_connection_writes(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SQLiteStore(path)
    store.push("p", A)
    holder = _hold_the_write_lock(path, 0.2)
    taken = store.begin("p", 60)  # a read: it never waits for a writer
    assert taken is not None
    assert taken[2] == Mail(inbox=[(1, A)])
    started = time.monotonic()
    store.save("p", taken[0], Changes(record=PageRecord(seq=1), inbox_upto=1))
    assert time.monotonic() - started >= 0.15
    holder.join()
    assert store.load("p") == (PageRecord(seq=1), Mail())


def test_sqlite_gives_up_after_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SQLiteStore(path, timeout=0.05)
    store.push("p", A)
    holder = _hold_the_write_lock(path, 0.5)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        store.push("p", B)
    holder.join()
    store.push("p", C)
    assert store.load("p") == (None, Mail(inbox=[(1, A), (2, C)]))


_SCHEMA_V1 = """
CREATE TABLE secret (id INTEGER PRIMARY KEY CHECK (id = 1), key BLOB NOT NULL);
CREATE TABLE pages (id TEXT PRIMARY KEY, record TEXT NOT NULL, touched REAL NOT NULL);
CREATE INDEX pages_touched ON pages (touched);
CREATE TABLE leases (
    page_id TEXT PRIMARY KEY, owner TEXT NOT NULL, pid INTEGER NOT NULL,
    host TEXT NOT NULL, expires REAL NOT NULL
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('page', 'group')),
    name TEXT NOT NULL, commands TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX messages_box ON messages (kind, name, id);
CREATE INDEX messages_created ON messages (created);
CREATE TABLE memberships (
    page_id TEXT NOT NULL, group_name TEXT NOT NULL, cursor INTEGER NOT NULL,
    touched REAL NOT NULL, PRIMARY KEY (page_id, group_name)
) WITHOUT ROWID;
CREATE INDEX memberships_touched ON memberships (touched);
INSERT INTO secret VALUES (1, x'00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff');
INSERT INTO pages VALUES ('p', '{"seq":2,"state":{"n":2},"batches":[]}', 1000000);
INSERT INTO leases VALUES ('q', 'old', 1, 'elsewhere', 9999999999);
INSERT INTO messages VALUES (1, 'page', 'p', '[["text","a","1"]]', 1000000);
INSERT INTO messages VALUES (2, 'group', 'g', '[["js","console.log(3)"]]', 1000000);
INSERT INTO memberships VALUES ('p', 'g', 1, 1000000);
PRAGMA user_version = 1;
"""


def test_sqlite_migrates_a_version_1_file(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(_SCHEMA_V1)
    clock = Clock()
    store = SQLiteStore(path, clock=clock)
    assert store.secret() == bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
    assert store.load("p") == (
        PageRecord(seq=2, state={"n": 2}),
        Mail(inbox=[(1, A)], groups={"g": [(2, C)]}),
    )
    assert store.begin("q", 60) is not None  # leases held before are dropped
    store.push("p", B)
    assert store.load("p")[1].inbox == [(1, A), (3, B)]
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (6,)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "leases" not in tables
    assert "pages_v1" not in tables


def test_sqlite_migrates_a_version_2_file(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(_SCHEMA_V1)
    SQLiteStore(path).load("p")  # version 1 to version 3; then back to version 2's pages
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            """
            DROP TABLE pages;
            CREATE TABLE pages (id TEXT PRIMARY KEY, record TEXT, touched REAL NOT NULL,
                owner TEXT, pid INTEGER, host TEXT, expires REAL);
            CREATE INDEX pages_touched ON pages (touched);
            INSERT INTO pages VALUES ('p', '{"seq":2,"state":{},"batches":[]}', 1000000,
                'old', 1, 'elsewhere', 9999999999);
            PRAGMA user_version = 2;
            """
        )
    store = SQLiteStore(path, clock=Clock())
    taken = store.begin("p", 60)  # leases held before are dropped
    assert taken is not None
    assert taken[1] == PageRecord(seq=2)
    store.save("p", taken[0], Changes(record=PageRecord(seq=3)))
    assert store.load("p")[0] == PageRecord(seq=3)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (6,)
        columns = [row[1] for row in db.execute("PRAGMA table_info(pages)")]
    assert columns == ["id", "record", "touched", "fence"]


def test_sqlite_migrates_a_version_3_file_whose_records_stay_in_their_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(";".join(_SCHEMA) + ";PRAGMA user_version = 3")
        db.execute(
            'INSERT INTO pages VALUES (\'p\', \'{"seq":2,"state":{},"batches":[]}\', ?, 1)',
            (time.time(),),
        )
        db.commit()
    store = SQLiteStore(path)
    assert store.load("p") == (PageRecord(seq=2), Mail())
    taken = store.begin("p", 60)
    assert taken is not None
    store.save("p", taken[0], Changes(record=PageRecord(seq=3)))
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (6,)
        assert db.execute("SELECT record, fence FROM pages").fetchall() == [
            ('{"seq":3,"state":{},"batches":[]}', 2)
        ]


def test_sqlite_migrates_a_version_4_file_and_marks_its_pages_in_the_record_file(
    tmp_path: Path,
) -> None:
    """A release before the record file's map wrote rows it never marked there; here
    even beside a record file whose map says no page has any (a backup restored)."""
    path = tmp_path / "store.sqlite3"
    empty = SQLiteStore(path)
    assert empty.load("p") == (None, Mail())
    empty.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(";".join(_SCHEMA) + ";PRAGMA user_version = 4")
        db.execute(
            'INSERT INTO pages VALUES (\'p\', \'{"seq":2,"state":{},"batches":[]}\', ?, 1)',
            (time.time(),),
        )
        db.execute(
            "INSERT INTO messages (kind, name, commands, created) VALUES"
            " ('page', 'q', '[[\"t\"]]', ?)",
            (time.time(),),
        )
        db.commit()
    store = SQLiteStore(path)
    assert store.load("p") == (PageRecord(seq=2), Mail())
    assert store.load("q") == (None, Mail(inbox=[(1, [["t"]])]))
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (6,)


def test_sqlite_migrates_a_version_5_file_keeping_its_records_and_map(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SQLiteStore(path)
    taken = store.begin("p", 60)
    assert taken is not None
    store.save("p", taken[0], Changes(record=PageRecord(seq=2)))
    store.push("q", A)  # a row: a file with one marks every slot
    marked = store._records().marked()
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 5")
    store = SQLiteStore(path)
    assert store.load("p") == (PageRecord(seq=2), Mail())
    assert store.load("q") == (None, Mail(inbox=[(1, A)]))
    assert store._records().marked() == marked < 3
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (6,)


def test_sqlite_refuses_a_file_of_a_newer_release(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match=r"has schema version 99, newer than this"):
        SQLiteStore(path).push("p", A)


def test_sqlite_needs_sqlite_3_35(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(RuntimeError, match=r"^SQLiteStore needs SQLite 3\.35 or newer"):
        SQLiteStore(tmp_path / "store.sqlite3")


def _event(store: Store, page_id: str = "p") -> None:
    """One event: wait for the lease, count it, take delivery of the mail, save."""
    while (taken := store.begin(page_id, 60)) is None:
        time.sleep(0.001)
    owner, record, mail = taken
    record = record or PageRecord()
    record.state["n"] = record.state.get("n", 0) + 1
    messages = sorted(mail.inbox + [m for log in mail.groups.values() for m in log])
    record.state.setdefault("got", []).extend(c for _, cs in messages for c in cs)
    changes = Changes(
        record=record,
        inbox_upto=max((number for number, _ in mail.inbox), default=0),
        cursors={group: log[-1][0] for group, log in mail.groups.items() if log},
    )
    store.save(page_id, owner, changes)


def _events_and_sends(
    store: Store | str, worker: int, rounds: int, pause: float | None = None
) -> None:
    """Push, publish, then handle an event, ``rounds`` times; ``store`` or its URL.

    :param pause: seconds to sleep after each round, letting other threads (greenlets)
        run meanwhile.
    """
    if isinstance(store, str):
        store = store_from_url(store)
    for n in range(rounds):
        store.push("p", [["push", worker, n]])
        store.publish("g", [["publish", worker, n]])
        _event(store)
        if pause is not None:
            time.sleep(pause)


@pytest.mark.parametrize(
    ("kind", "method"),
    [
        # Forked children inherit the parent's store, with its open connection.
        pytest.param("sqlite", "fork", id="sqlite-fork"),
        pytest.param("sqlite", "spawn", id="sqlite-spawn"),
        pytest.param("redis", "fork", id="redis-fork"),
    ],
)
def test_processes_lose_no_update(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, method: str
) -> None:
    if kind == "redis":
        request.getfixturevalue("redis_client")  # an empty database
        url = request.getfixturevalue("redis_url")
    else:
        url = f"sqlite:///{tmp_path}/store.sqlite3"
    store = store_from_url(url)
    store.join("p", "g")
    context = multiprocessing.get_context(method)
    target = store if method == "fork" else url
    workers = [
        context.Process(target=_events_and_sends, args=(target, n, 50), daemon=True)
        for n in range(4)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
    assert [process.exitcode for process in workers] == [0, 0, 0, 0]
    _event(store)
    record, mail = store.load("p")
    store.close()
    assert record is not None
    assert mail == Mail(groups={"g": []})
    assert record.state["n"] == 201
    got = collections.defaultdict(list)
    for send, worker, n in record.state["got"]:
        got[send, worker].append(n)
    # Each send exactly once, and each process's sends in the order it made them.
    assert got == {
        (send, worker): list(range(50)) for send in ("push", "publish") for worker in range(4)
    }


def test_threads_lose_no_update(shared: Backend) -> None:
    store = shared.open()
    with ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(_events_and_sends, store, n, 50) for n in range(4)]
        for run in runs:
            run.result()
    record, _ = store.load("p")
    assert record is not None
    assert record.state["n"] == 200
    assert sorted(record.state["got"]) == sorted(
        ["push", worker, n] for worker in range(4) for n in range(50)
    )


def _holds_a_lock(pid: int, path: str | Path) -> bool:
    """Whether process ``pid`` holds a POSIX lock on the file (from Linux's /proc/locks).

    SQLite in WAL mode keeps a read lock on the database file for as long as a
    connection is open: it is how another process knows the file is in use.
    """
    inode = os.stat(path).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        # "1: POSIX  ADVISORY  READ 4242 fe:00:2148961 128 128"; a waiter has "->" first.
        fields = line.split()
        if fields[1:2] == ["POSIX"] and fields[4] == str(pid) and fields[5].endswith(f":{inode}"):
            return True
    return False


def test_sqlite_threads_connecting_leave_the_process_its_locks(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SQLiteStore(path)
    store.push("p", A)
    assert _holds_a_lock(os.getpid(), path)
    for _ in range(3):  # each thread opens a connection of its own
        thread = threading.Thread(target=store.push, args=("p", B))
        thread.start()
        thread.join()
    assert _holds_a_lock(os.getpid(), path)
    assert len(store.load("p")[1].inbox) == 4


def _push_and_report_locks(store: SQLiteStore, held: t.Any) -> None:
    store.push("p", B)
    held.put(_holds_a_lock(os.getpid(), store.path))


def test_sqlite_forked_child_takes_locks_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SQLiteStore(path)
    store.push("p", A)  # the parent has a connection open when it forks
    context = multiprocessing.get_context("fork")
    held = context.Queue()
    child = context.Process(target=_push_and_report_locks, args=(store, held), daemon=True)
    child.start()
    assert held.get(timeout=60) is True
    child.join(60)
    assert child.exitcode == 0
    assert _holds_a_lock(os.getpid(), path)  # the parent kept its own
    assert store.load("p")[1].inbox == [(1, A), (2, B)]


def test_sqlite_child_forked_by_c_code_takes_locks_of_its_own(tmp_path: Path) -> None:
    """A server written in C (uWSGI, without --lazy-apps) forks its workers without
    Python's fork hooks: the store tells its own connections from the parent's anyway."""
    path = tmp_path / "store.sqlite3"
    store = SQLiteStore(path)
    store.push("p", A)  # the parent has a connection open when it forks
    read, write = os.pipe()
    pid = ctypes.PyDLL(None).fork()  # libc's fork, holding the GIL: no hooks run
    if pid == 0:  # the child: report, and leave without running anything of pytest's
        code = 1
        try:
            store.push("p", B)
            code = 0 if _holds_a_lock(os.getpid(), path) else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"\x00"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert _holds_a_lock(os.getpid(), path)  # the parent kept its own
    assert store.load("p")[1].inbox == [(1, A), (2, B)]


#: Workers per round, rounds, and sends per worker in the tests below.
WORKERS, ROUNDS, SENDS = 4, 4, 15


def _open_and_close(path: str, stop: t.Any, count: t.Any) -> None:
    """A CLI, run again and again: open the store, send, close. Past the most messages
    a read returns, it only reads, so that the test can count what it sent."""
    while not stop.is_set():
        store = SQLiteStore(path)
        if count.value < READ_LIMIT - 1:
            store.push("cli", A)
            with count.get_lock():
                count.value += 1
        else:
            store.load("cli")
        store.close()


def _in_threads(path: str) -> None:
    """Rounds of new threads, each opening its connection, as a threaded server's."""
    store = SQLiteStore(path)
    for round_ in range(ROUNDS):
        with ThreadPoolExecutor(WORKERS) as pool:
            workers = range(round_ * WORKERS, (round_ + 1) * WORKERS)
            list(pool.map(lambda w: _events_and_sends(store, w, SENDS, 0.001), workers))


def _in_greenlets(path: str) -> None:
    """The same with greenlets, in a process of its own that gevent monkey-patches."""
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import sys, gevent\n"
        "from piggyback.stores.sqlite import SQLiteStore\n"
        "from tests.test_stores import _events_and_sends, WORKERS, ROUNDS, SENDS\n"
        "store = SQLiteStore(sys.argv[1])\n"
        "for r in range(ROUNDS):\n"
        "    gevent.joinall([gevent.spawn(_events_and_sends, store, w, SENDS, 0.001)\n"
        "                    for w in range(r * WORKERS, (r + 1) * WORKERS)], raise_error=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, path], env=env, check=True, timeout=120)


@pytest.mark.parametrize(
    "run", [pytest.param(_in_threads, id="threads"), pytest.param(_in_greenlets, id="greenlets")]
)
def test_sqlite_loses_nothing_while_another_process_opens_and_closes(
    tmp_path: Path, run: t.Callable[[str], None]
) -> None:
    path = str(tmp_path / "store.sqlite3")
    store = SQLiteStore(path)
    store.join("p", "g")
    store.close()  # its lock on the file would protect the run from what is tested
    context = multiprocessing.get_context("spawn")
    stop, count = context.Event(), context.Value("i", 0)
    cli = context.Process(target=_open_and_close, args=(path, stop, count), daemon=True)
    cli.start()
    try:
        while count.value == 0 and cli.is_alive():
            time.sleep(0.01)
        run(path)
        assert cli.is_alive()
    finally:
        stop.set()
        cli.join(60)
    assert (cli.exitcode, count.value > 0) == (0, True)
    _event(store)
    record, mail = store.load("p")
    assert record is not None
    assert mail == Mail(groups={"g": []})
    assert record.state["n"] == WORKERS * ROUNDS * SENDS + 1
    got = collections.defaultdict(list)
    for send, worker, n in record.state["got"]:
        got[send, worker].append(n)
    assert got == {
        (send, worker): list(range(SENDS))
        for send in ("push", "publish")
        for worker in range(WORKERS * ROUNDS)
    }
    assert len(store.load("cli")[1].inbox) == count.value


def _lock_and_wait(path: str, locked: t.Any, release: t.Any) -> None:
    SQLiteStore(path).lock("p", 3600)
    locked.set()
    release.wait(60)
    os._exit(0)  # like kill -9: the lease is never given back


def test_sqlite_takes_over_the_lease_of_a_dead_process(tmp_path: Path) -> None:
    path = str(tmp_path / "store.sqlite3")
    store = SQLiteStore(path)
    context = multiprocessing.get_context("fork")
    locked, release = context.Event(), context.Event()
    child = context.Process(target=_lock_and_wait, args=(path, locked, release), daemon=True)
    child.start()
    assert locked.wait(60)
    assert store.lock("p", 60) is None
    assert store.begin("p", 60) is None
    release.set()
    child.join(60)
    assert child.exitcode == 0
    taken = store.begin("p", 60)
    assert taken is not None
    assert taken[1:] == (None, Mail())


def _start(path: str, barrier: t.Any, secrets: t.Any) -> None:
    barrier.wait(60)
    store = SQLiteStore(path)
    store.push("p", [["started", os.getpid()]])
    secrets.put(store.secret())


def test_sqlite_processes_starting_at_once_on_a_new_file(tmp_path: Path) -> None:
    path = str(tmp_path / "new" / "store.sqlite3")
    context = multiprocessing.get_context("fork")
    barrier, secrets = context.Barrier(8), context.Queue()
    workers = [
        context.Process(target=_start, args=(path, barrier, secrets), daemon=True) for _ in range(8)
    ]
    for process in workers:
        process.start()
    shared = {secrets.get(timeout=60) for _ in workers}
    for process in workers:
        process.join(60)
    assert [process.exitcode for process in workers] == [0] * 8
    assert shared == {SQLiteStore(path).secret()}
    _, mail = SQLiteStore(path).load("p")
    assert sorted(pid for _, [[_, pid]] in mail.inbox) == sorted(process.pid for process in workers)


# Limits: reads are bounded, damaged data is seen, not raised


def test_a_read_returns_the_oldest_messages_up_to_the_limit(store: Store) -> None:
    """A flooded inbox and logs: the store reads READ_LIMIT messages (LIMIT in its
    queries), the oldest of all, and still names every membership."""
    store.join("p", "g")
    store.join("p", "h")
    store.join("p", "quiet")
    for n in range(READ_LIMIT // 2 + 10):
        store.push("p", [["text", "a", str(n)]])
        store.publish("g", [["text", "b", str(n)]])
        store.publish("h", [["text", "c", str(n)]])
    for read in (store.load("p")[1], _begun(store, "p")[1]):
        ids = [n for n, _ in read.inbox] + [n for log in read.groups.values() for n, _ in log]
        assert sorted(ids) == list(range(1, READ_LIMIT + 1))
        assert sorted(read.groups) == ["g", "h", "quiet"]
        assert read.inbox[:2] == [(1, [["text", "a", "0"]]), (4, [["text", "a", "1"]])]
        assert not read.damaged


def _begun(store: Store, page_id: str) -> tuple[PageRecord | None, Mail]:
    taken = store.begin(page_id, 60)
    assert taken is not None
    store.unlock(page_id, taken[0])
    return taken[1], taken[2]


def _damage(store: Store, page_id: str) -> None:
    """Write a record and a group message no release would write (white box)."""
    if isinstance(store, MemoryStore):
        store._records[page_id] = (store._clock(), '{"seq": "one"}')
        at, n, _ = store._logs["g"][-1]
        store._logs["g"][-1] = (at, n, "[[")
    elif isinstance(store, SQLiteStore):
        db = store._db()
        db.execute("UPDATE pages SET record = '[1,' WHERE id = ?", (page_id,))
        slot = store._slot_of(page_id)
        if slot is not None:  # the record is in the record file
            store._records().write(place(page_id).index, replace(slot, text=b"[1,"))
        db.execute("UPDATE messages SET commands = '{}' WHERE id = (SELECT max(id) FROM messages)")
    else:
        assert isinstance(store, RedisStore)
        store.client.set(f"piggyback:page:{page_id}", b"\xff not even text")
        log = "piggyback:log:g"
        ((newest, score),) = store.client.zrange(log, -1, -1, withscores=True)
        store.client.zrem(log, newest)
        store.client.zadd(log, {newest.decode().rsplit(",", 1)[0] + ',"x"]': score})


def test_damaged_data_is_reported_not_raised(store: Store) -> None:
    store.join("p", "g")
    store.push("p", A)
    store.publish("g", B)
    store.publish("g", C)
    commit(store, "p", PageRecord(seq=1))
    _damage(store, "p")
    for record, mail in (store.load("p"), _begun(store, "p")):
        assert record == PageRecord(damaged=True)
        assert mail == Mail(inbox=[(1, A)], groups={"g": [(2, B)]}, damaged=True)
    commit(store, "p", PageRecord(seq=2), inbox_upto=10**9, leaves=["g"])  # what expiry does
    assert store.load("p") == (PageRecord(seq=2), Mail())


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("[]", id="not-an-object"),
        pytest.param('{"seq": 1, "state": {}}', id="no-batches"),
        pytest.param('{"seq": 1, "state": [], "batches": []}', id="state-not-an-object"),
        pytest.param('{"seq": true, "state": {}, "batches": []}', id="seq-not-a-number"),
        pytest.param('{"seq": 1, "state": {}, "batches": [{"seq": 1}]}', id="batch-no-commands"),
        pytest.param(b"\xff", id="not-utf-8"),
        pytest.param('{"seq": 1, "state": {}, "batches": []}{}', id="two-values"),
        pytest.param('{"seq": 1, "state": {}, "batches": []', id="cut-short"),
        pytest.param(" ", id="space"),
    ],
)
def test_load_record_never_raises(text: str | bytes) -> None:
    assert load_record(text) == PageRecord(damaged=True)


@pytest.mark.parametrize(
    "text",
    ['{"seq":3,"state":{"n":1},"batches":[]}', b'{"seq": 3, "state": {"n": 1}, "batches": []}'],
)
def test_load_record_reads_text_and_utf_8_bytes(text: str | bytes) -> None:
    assert load_record(text) == PageRecord(seq=3, state={"n": 1})


# Redis


def test_redis_keys_are_prefixed_and_expire(redis_client: redis.Redis) -> None:
    store = RedisStore(redis_client, prefix="app:", page_ttl=60)
    store.secret()
    store.join("p", "g")
    store.push("p", A)
    store.publish("g", B)
    commit(store, "p", PageRecord(seq=1))
    store.lock("p", 10)
    keys = sorted(key.decode() for key in redis_client.keys("*"))
    assert keys == [
        "app:ids",
        "app:inbox:p",
        "app:lease:p",
        "app:log:g",
        "app:member:p",
        "app:page:p",
        "app:secret",
    ]
    forever = {k for k in keys if redis_client.pttl(k) == -1}
    assert forever == {"app:ids", "app:secret"}


def test_redis_trims_expired_messages_from_a_busy_log(
    redis_client: redis.Redis,
) -> None:
    store = RedisStore(redis_client, page_ttl=0.2)
    for _ in range(3):
        store.publish("g", A)
    time.sleep(0.3)
    store.publish("g", B)
    assert redis_client.zcard("piggyback:log:g") == 1


def test_redis_works_with_a_decoding_client(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url, prefix="text:", decode_responses=True)
    assert len(store.secret()) == 32
    store.join("p", "g")
    store.publish("g", A)
    commit(store, "p", PageRecord(seq=1, state={"é": "ü"}), pushes=[("p", B)])
    assert store.load("p") == (
        PageRecord(seq=1, state={"é": "ü"}),
        Mail(inbox=[(2, B)], groups={"g": [(1, A)]}),
    )
    store.close()


def test_redis_event_after_the_server_forgot_its_scripts(redis_client: redis.Redis) -> None:
    store = RedisStore(redis_client)
    commit(store, "p", PageRecord(seq=1))
    redis_client.script_flush()
    commit(store, "p", PageRecord(seq=2))
    assert store.load("p")[0] == PageRecord(seq=2)


def test_redis_replaces_a_connection_the_server_closed(redis_url: str) -> None:
    # No retries: the store itself must notice that the connection it kept was closed.
    client = redis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0), max_connections=UNBOUNDED)
    store = RedisStore(client, prefix="closed:")
    commit(store, "p", PageRecord(seq=1))
    with redis.Redis.from_url(redis_url) as killer:
        assert killer.client_kill_filter(_type="normal", skipme=True) >= 1
    commit(store, "p", PageRecord(seq=2))
    assert store.load("p")[0] == PageRecord(seq=2)
    client.close()


def test_redis_begin_sent_again_by_its_owner_takes_the_lease_again(
    redis_client: redis.Redis,
) -> None:
    # What redis-py's retry does after a reply was lost: the same script, the same owner.
    store = RedisStore(redis_client)
    commit(store, "p", PageRecord(seq=1))
    keys = [f"piggyback:{kind}:p" for kind in ("lease", "page", "inbox", "member")]
    args: list[str | int] = ["owner", 60_000, store._ttl, "piggyback:log:", READ_LIMIT]
    assert store._call(store._begin, keys, args) is not None
    assert store._call(store._begin, keys, args) is not None
    assert store.begin("p", 60) is None  # anyone else waits
    store.save("p", "owner", Changes(record=PageRecord(seq=2)))
    assert store.load("p")[0] == PageRecord(seq=2)


def test_redis_works_with_a_single_connection_client(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, single_connection_client=True)
    store = RedisStore(client, prefix="single:")
    store.join("p", "g")
    store.publish("g", A)
    commit(store, "p", PageRecord(seq=1), pushes=[("p", B)])
    assert store.load("p") == (PageRecord(seq=1), Mail(inbox=[(2, B)], groups={"g": [(1, A)]}))
    client.close()


def test_redis_connections_are_shared_by_threads(redis_client: redis.Redis) -> None:
    store = RedisStore(redis_client, prefix="threads:")
    pages = [f"p{n}" for n in range(8)]

    def events(page_id: str) -> None:
        for seq in range(1, 26):
            commit(store, page_id, PageRecord(seq=seq), pushes=[(page_id, A)])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(events, pages))
    for page_id in pages:
        record, mail = store.load(page_id)
        assert record == PageRecord(seq=25)
        assert len(mail.inbox) == 25
    assert 1 <= len(store._connections._idle) <= len(pages)


@pytest.mark.parametrize(
    ("pool_class", "max_connections", "kept"),
    [
        pytest.param(redis.ConnectionPool, UNBOUNDED, 1, id="unbounded"),
        pytest.param(redis.ConnectionPool, 100, 0, id="bounded"),
        pytest.param(redis.BlockingConnectionPool, 50, 0, id="blocking"),
    ],
)
def test_redis_keeps_connections_only_from_a_pool_without_a_bound(
    bounded_client: MakeClient,
    pool_class: type[redis.ConnectionPool],
    max_connections: int,
    kept: int,
) -> None:
    store = RedisStore(bounded_client(pool_class, max_connections))
    store.push("p", A)
    assert len(store._connections._idle) == kept


def test_redis_store_made_from_a_url_keeps_connections_of_its_own_pool(redis_url: str) -> None:
    """Its pool is the store's alone (redis-py 8 bounds a default pool at 100)."""
    store = RedisStore.from_url(redis_url, max_connections=100)
    try:
        store.push("p", A)
        assert len(store._connections._idle) == 1
    finally:
        store.close()


@pytest.mark.parametrize(
    "pool_class",
    [
        pytest.param(redis.ConnectionPool, id="pool"),
        pytest.param(redis.BlockingConnectionPool, id="blocking"),
    ],
)
def test_redis_store_and_app_share_a_pool_of_one_connection(
    bounded_client: MakeClient, pool_class: type[redis.ConnectionPool]
) -> None:
    client = bounded_client(pool_class, 1)
    store = RedisStore(client)
    store.push("p", A)
    assert client.get("x") is None
    store.join("p", "g")
    store.leave("p", "g")
    assert len(store.secret()) == 32
    taken = store.begin("p", 60)
    assert taken is not None
    client.set("x", "1")
    owner, _, mail = taken
    assert mail == Mail(inbox=[(1, A)])
    store.save("p", owner, Changes(record=PageRecord(seq=1), inbox_upto=1))
    assert client.get("x") == b"1"
    assert store.load("p") == (PageRecord(seq=1), Mail())


@pytest.mark.parametrize(
    ("pool_class", "max_connections"),
    [
        # Each thread uses one connection at a time, for the store or for the app.
        pytest.param(redis.ConnectionPool, 4, id="pool"),
        # Fewer connections than threads: each waits for its turn.
        pytest.param(redis.BlockingConnectionPool, 2, id="blocking"),
    ],
)
def test_redis_threads_share_a_bounded_pool_with_the_app(
    bounded_client: MakeClient, pool_class: type[redis.ConnectionPool], max_connections: int
) -> None:
    client = bounded_client(pool_class, max_connections)
    store = RedisStore(client, prefix="threads:")
    pages = [f"p{n}" for n in range(4)]

    def events(page_id: str) -> None:
        for seq in range(1, 26):
            commit(store, page_id, PageRecord(seq=seq), pushes=[(page_id, A)])
            client.incr(f"app:{page_id}")
            store.join(page_id, "g")
            store.leave(page_id, "g")

    with ThreadPoolExecutor(len(pages)) as pool:
        list(pool.map(events, pages))
    for page_id in pages:
        record, mail = store.load(page_id)
        assert record == PageRecord(seq=25)
        assert len(mail.inbox) == 25
        assert client.get(f"app:{page_id}") == b"25"
    assert store._connections._idle == []


def test_redis_without_the_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'piggyback[redis]'")):
        RedisStore.from_url("redis://127.0.0.1:1/0")
