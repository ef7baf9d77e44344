"""How the SQLite store writes: its own checkpoints, and one writing thread per process.

The guarantees (nothing lost, exactly once) are the store contract's, in
``tests/test_stores.py``; these tests hold the two rules that keep a write cheap.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from piggyback.stores import sqlite as sqlite_store
from piggyback.stores.sqlite import SQLiteStore

from .test_stores import _event
from .test_stores import A


def test_sqlite_a_new_file_has_small_pages_and_an_old_file_keeps_its_own(
    tmp_path: Path,
) -> None:
    with sqlite3.connect(tmp_path / "old.sqlite3") as db:
        db.execute("PRAGMA page_size = 4096")
        db.execute("CREATE TABLE t (x)")
    for name, size in (("new.sqlite3", sqlite_store.PAGE_SIZE), ("old.sqlite3", 4096)):
        store = SQLiteStore(tmp_path / name)
        _event(store, "p")
        assert store._db().execute("PRAGMA page_size").fetchone() == (size,)
        assert store.load("p")[0] is not None


def test_sqlite_checkpoints_the_log_itself_so_it_stays_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own checkpoints are off; the store's keep the log from growing."""
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 50)
    path = tmp_path / "store.sqlite3"
    store = SQLiteStore(path)
    reader = SQLiteStore(path)  # another connection, as another worker's would be
    reader.load("p")
    for _ in range(2000):
        store.push("p", A)
        reader.load("q")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (2000,)
    autocheckpoint = store._db().execute("PRAGMA wal_autocheckpoint").fetchone()
    assert autocheckpoint == (sqlite_store.AUTOCHECKPOINT_PAGES,)
    # 2,000 commits of a few pages each: about 25 MB of log without checkpoints.
    assert os.path.getsize(f"{path}-wal") < 4 * 1024 * 1024


def test_sqlite_checkpoints_when_every_request_has_a_thread_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server with a thread (or greenlet) per request opens a connection per request:
    the count of writes that checkpoints the log is the process's, not a connection's."""
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 50)
    path = tmp_path / "store.sqlite3"
    store = SQLiteStore(path)
    store.load("p")  # this thread's connection keeps the log from going at each close
    for _ in range(1000):
        request = threading.Thread(target=store.push, args=("p", A))
        request.start()
        request.join()
    assert len(store.load("p")[1].inbox) == 1000
    assert os.path.getsize(f"{path}-wal") < 4 * 1024 * 1024


def test_sqlite_checkpoints_when_every_sender_writes_a_little(tmp_path: Path) -> None:
    """A CLI or a job opens the store, sends a few messages and exits, again and again,
    while a web worker keeps the file open: each new store checkpoints first."""
    path = tmp_path / "store.sqlite3"
    worker = SQLiteStore(path)
    worker.load("p")
    for _ in range(1000):
        cli = SQLiteStore(path)
        cli.push("p", A)
        cli.close()
    assert len(worker.load("p")[1].inbox) == 1000
    assert os.path.getsize(f"{path}-wal") < 4 * 1024 * 1024


def test_sqlite_a_thread_waits_for_the_writer_lock_no_longer_than_the_timeout(
    tmp_path: Path,
) -> None:
    """The writer lock is waited for as SQLite's own lock is, up to ``timeout``: a
    thread behind one stuck on a busy file gives up in its turn, not after it."""
    store = SQLiteStore(tmp_path / "store.sqlite3", timeout=0.2)
    store.push("p", A)
    failures: list[BaseException] = []

    def push() -> None:
        try:
            store.push("p", A)
        except sqlite3.OperationalError as error:
            failures.append(error)

    lock = sqlite_store._writer_lock(store._file)
    with lock:  # another thread of this process is writing, and stays
        waiter = threading.Thread(target=push)
        waiter.start()
        waiter.join(30)
        stuck = waiter.is_alive()
    waiter.join()
    assert not stuck
    assert [str(error)[:17] for error in failures] == ["database is locke"]
    assert len(store.load("p")[1].inbox) == 1


def test_sqlite_threads_of_a_process_never_find_the_file_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads of one process take turns to write instead of retrying SQLite's lock."""
    busy: list[sqlite3.OperationalError] = []
    found_busy = sqlite_store._busy

    def counting(error: sqlite3.OperationalError) -> bool:
        busy.append(error)
        return found_busy(error)

    store = SQLiteStore(tmp_path / "store.sqlite3")
    # The file made and its log begun first: a read racing a new file's first write may
    # find SQLite's log being set up (busy, and retried), which is not the point here.
    store.secret()
    monkeypatch.setattr(sqlite_store, "_busy", counting)

    def events(worker: int) -> None:
        for _ in range(100):
            store.push(f"p{worker}", A)
            _event(store, f"p{worker}")

    threads = [threading.Thread(target=events, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [store.load(f"p{n}")[0].state["n"] for n in range(8)] == [100] * 8  # type: ignore[union-attr]
    assert busy == []
