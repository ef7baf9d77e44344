"""The SQLite store's record file: where a page's record lives, and what survives.

White box where it must be: the file's slots are read and written here as the store
does (``record_slots.py``), to damage them or to see where a record is.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
import time
import typing as t
from pathlib import Path

import pytest

from piggyback.stores.base import Changes
from piggyback.stores.base import LeaseLost
from piggyback.stores.base import Mail
from piggyback.stores.base import PageRecord
from piggyback.stores.record_slots import CAPACITY
from piggyback.stores.record_slots import encode
from piggyback.stores.record_slots import place
from piggyback.stores.record_slots import RecordFile
from piggyback.stores.record_slots import Slot
from piggyback.stores.record_slots import SLOT_SIZE
from piggyback.stores.sqlite import SQLiteStore

A = [["text", "a", "1"]]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite3"


def _save(store: SQLiteStore, page_id: str, record: PageRecord, **changes: t.Any) -> None:
    taken = store.begin(page_id, 60)
    assert taken is not None
    store.save(page_id, taken[0], Changes(record=record, **changes))


def _rows(path: Path) -> dict[str, tuple[str, int]]:
    """page id -> (record, fence) of the pages table."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {p: (r, f) for p, r, f in db.execute("SELECT id, record, fence FROM pages")}


def _in_slot(store: SQLiteStore, page_id: str) -> PageRecord | None:
    slot = store._slot_of(page_id)
    return None if slot is None else PageRecord(**_fields(slot.text))


def _fields(text: bytes) -> dict[str, t.Any]:
    import json

    data = json.loads(text)
    return {"seq": data["seq"], "state": data["state"]}


def _sharing_a_slot(page_id: str) -> str:
    """Another page id whose record would live in the same slot."""
    index = place(page_id).index
    return next(f"q{n}" for n in itertools.count() if place(f"q{n}").index == index)


def test_a_page_keeps_its_record_in_its_slot_and_no_row(path: Path) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1, state={"n": 1}))
    _save(store, "p", PageRecord(seq=2, state={"n": 2}))
    assert _in_slot(store, "p") == PageRecord(seq=2, state={"n": 2})
    assert _rows(path) == {}
    other = SQLiteStore(path)  # another process's store reads the same file
    assert other.load("p") == (PageRecord(seq=2, state={"n": 2}), Mail())


def test_a_page_whose_slot_is_taken_keeps_its_record_in_its_row(path: Path) -> None:
    store = SQLiteStore(path)
    other = _sharing_a_slot("p")
    _save(store, "p", PageRecord(seq=1))
    _save(store, other, PageRecord(seq=5))
    _save(store, other, PageRecord(seq=6))
    _save(store, "p", PageRecord(seq=2))
    assert store.load("p") == (PageRecord(seq=2), Mail())
    assert store.load(other) == (PageRecord(seq=6), Mail())
    assert _in_slot(store, "p") == PageRecord(seq=2)
    assert list(_rows(path)) == [other]


def test_a_slot_whose_page_expired_goes_to_the_next_new_page(path: Path) -> None:
    clock = [time.time()]
    store = SQLiteStore(path, page_ttl=100, clock=lambda: clock[0])
    other = _sharing_a_slot("p")
    _save(store, "p", PageRecord(seq=1))
    clock[0] += 101
    assert store.load("p") == (None, Mail())
    _save(store, other, PageRecord(seq=5))
    assert _in_slot(store, other) == PageRecord(seq=5)
    assert store.load("p") == (None, Mail())


def test_a_record_too_long_for_its_slot_moves_into_its_row_for_good(path: Path) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    long = {"text": "x" * CAPACITY}
    _save(store, "p", PageRecord(seq=2, state=long))
    assert store.load("p") == (PageRecord(seq=2, state=long), Mail())
    assert _in_slot(store, "p") is None
    _save(store, "p", PageRecord(seq=3))
    assert store.load("p") == (PageRecord(seq=3), Mail())
    assert _in_slot(store, "p") is None
    assert _rows(path)["p"] == ('{"seq":3,"state":{},"batches":[]}', 3)


def test_mail_moves_a_page_into_its_row_with_its_fence(path: Path) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    store.push("p", A)
    taken = store.begin("p", 60)
    assert taken is not None
    assert taken[1:] == (PageRecord(seq=1), Mail(inbox=[(1, A)]))
    store.save("p", taken[0], Changes(record=PageRecord(seq=2), inbox_upto=1))
    assert store.load("p") == (PageRecord(seq=2), Mail())
    assert _in_slot(store, "p") is None
    assert _rows(path)["p"][1] == 2  # the slot's fence 1, moved on by the save


def test_a_crash_between_copying_a_record_and_clearing_its_slot_loses_nothing(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    store.push("p", A)
    taken = store.begin("p", 60)
    assert taken is not None

    def crash(self: RecordFile, index: int) -> None:
        raise OSError("the process died here")

    with monkeypatch.context() as patch:
        patch.setattr(RecordFile, "clear", crash)
        with pytest.raises(OSError, match="died here"):
            store.save("p", taken[0], Changes(record=PageRecord(seq=2), inbox_upto=1))
    store.unlock("p", taken[0])
    assert store.load("p") == (PageRecord(seq=1), Mail(inbox=[(1, A)]))
    _save(store, "p", PageRecord(seq=2), inbox_upto=1)
    assert store.load("p") == (PageRecord(seq=2), Mail())


def test_a_damaged_slot_is_free_and_its_page_forgotten(path: Path) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    where = place("p")
    data = bytearray(encode(Slot(where.digest, 2, time.time(), b'{"seq":1}')))
    data[-1] ^= 1  # a bit flipped: the CRC no longer matches
    with open(f"{path}-records", "r+b") as file:
        file.seek(where.index * SLOT_SIZE)
        file.write(data)
    assert store.load("p") == (None, Mail())
    taken = store.begin("p", 60)
    assert taken is not None and taken[1] is None
    store.save("p", taken[0], Changes(record=PageRecord(seq=1)))  # a new page's save
    assert store.load("p") == (PageRecord(seq=1), Mail())


def test_garbage_in_the_record_file_is_no_record(path: Path) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    with open(f"{path}-records", "r+b") as file:
        file.write(os.urandom(SLOT_SIZE * 4))
        file.seek(place("p").index * SLOT_SIZE)
        file.write(b"\xff" * SLOT_SIZE)
    assert store.load("p") == (None, Mail())


def test_a_slot_read_during_its_write_is_read_again_after_it(path: Path) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    where = place("p")
    records, leases = store._records(), store._leases()
    whole = encode(Slot(where.digest, 3, time.time(), b'{"seq":2,"state":{},"batches":[]}'))
    writing = threading.Event()

    def write_slowly() -> None:
        with leases.slot(where.index, 10):
            os.pwrite(records._fd, whole[:40], where.index * SLOT_SIZE)  # half written
            writing.set()
            time.sleep(0.2)
            os.pwrite(records._fd, whole, where.index * SLOT_SIZE)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    writing.wait()
    assert store.load("p") == (PageRecord(seq=2), Mail())
    writer.join()


def test_a_new_page_taken_over_before_its_first_save_fences_its_holder_out(
    path: Path,
) -> None:
    clock = [time.time()]
    store = SQLiteStore(path, clock=lambda: clock[0])
    stale: list[t.Any] = []
    thread = threading.Thread(target=lambda: stale.append(store.lock("n", 10)))
    thread.start()
    thread.join()
    clock[0] += 60
    taken = store.begin("n", 60)  # a thread of this process, past the first's time
    assert taken is not None and taken[1] is None
    with pytest.raises(LeaseLost):
        store.save("n", stale[0], Changes(record=PageRecord(seq=9)))
    store.save("n", taken[0], Changes(record=PageRecord(seq=1)))
    assert store.load("n") == (PageRecord(seq=1), Mail())


def test_the_record_file_is_private_and_never_a_symlink(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    _save(SQLiteStore(path), "p", PageRecord(seq=1))
    assert os.stat(f"{path}-records").st_mode & 0o777 == 0o600
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    target = tmp_path / "somewhere"
    target.write_bytes(b"")
    os.symlink(target, elsewhere / "store.sqlite3-records")
    with pytest.raises(PermissionError, match=r"record file .* is a symlink"):
        SQLiteStore(elsewhere / "store.sqlite3").load("p")
