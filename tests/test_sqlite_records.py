"""The SQLite store's record file: where a page's record lives, and what survives.

White box where it must be: the file's slots are read and written here as the store
does (``record_slots.py``), to damage them or to see where a record is.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest

from piggyback.stores import record_slots
from piggyback.stores import sqlite as sqlite_store
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
from piggyback.stores.record_slots import SLOTS
from piggyback.stores.sqlite import SQLiteStore

A = [["text", "a", "1"]]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite3"


def _save(store: SQLiteStore, page_id: str, record: PageRecord, **changes: t.Any) -> None:
    taken = store.begin(page_id, 60)
    assert taken is not None
    store.save(page_id, taken[0], Changes(record=record, **changes))


def _clocked(path: Path) -> tuple[SQLiteStore, list[float]]:
    """A store whose clock reads ``clock[0]``, for a test to move on."""
    clock = [time.time()]
    return SQLiteStore(path, clock=lambda: clock[0]), clock


def _rows(path: Path) -> dict[str, tuple[str, int]]:
    """page id -> (record, fence) of the pages table."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {p: (r, f) for p, r, f in db.execute("SELECT id, record, fence FROM pages")}


def _in_slot(store: SQLiteStore, page_id: str) -> PageRecord | None:
    slot = store._slot_of(page_id)
    return None if slot is None else PageRecord(**_fields(slot.text))


def _fields(text: bytes) -> dict[str, t.Any]:
    data = json.loads(text)
    return {"seq": data["seq"], "state": data["state"]}


def _sharing_a_slot(page_id: str, count: int = 1) -> list[str]:
    """``count`` other page ids placed at the same slot as ``page_id``."""
    index = place(page_id).index
    placed = (f"q{n}" for n in itertools.count() if place(f"q{n}").index == index)
    return list(itertools.islice(placed, count))


def _next_door(page_id: str) -> str:
    """A page id placed at the neighbour of ``page_id``'s slot."""
    index = place(page_id).index ^ 1
    return next(f"r{n}" for n in itertools.count() if place(f"r{n}").index == index)


def test_a_page_keeps_its_record_in_its_slot_and_no_row(path: Path) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1, state={"n": 1}))
    _save(store, "p", PageRecord(seq=2, state={"n": 2}))
    assert _in_slot(store, "p") == PageRecord(seq=2, state={"n": 2})
    assert _rows(path) == {}
    other = SQLiteStore(path)  # another process's store reads the same file
    assert other.load("p") == (PageRecord(seq=2, state={"n": 2}), Mail())


def test_a_page_whose_slot_is_taken_keeps_its_record_in_the_neighbour(path: Path) -> None:
    store = SQLiteStore(path)
    [other] = _sharing_a_slot("p")
    _save(store, "p", PageRecord(seq=1))
    _save(store, other, PageRecord(seq=5))  # its first save, which claims a slot
    statements = _statements(store)
    _save(store, other, PageRecord(seq=6))
    _save(store, "p", PageRecord(seq=2))
    assert statements == []  # neither needs the database
    assert store.load("p") == (PageRecord(seq=2), Mail())
    assert store.load(other) == (PageRecord(seq=6), Mail())
    assert _index(store, "p") == place("p").index
    assert _index(store, other) == place("p").index ^ 1
    assert _rows(path) == {}
    assert SQLiteStore(path).load(other) == (PageRecord(seq=6), Mail())  # another process


@pytest.mark.parametrize("third", ["same slot", "next door"])
def test_a_page_whose_slots_are_both_taken_keeps_its_record_in_its_row(
    path: Path, third: str
) -> None:
    store = SQLiteStore(path)
    [other, *rest] = _sharing_a_slot("p", 2)
    late = rest[0] if third == "same slot" else _next_door("p")
    for page_id in ("p", other, late):
        _save(store, page_id, PageRecord(seq=5))
        _save(store, page_id, PageRecord(seq=6))
    for page_id in ("p", other, late):
        assert store.load(page_id) == (PageRecord(seq=6), Mail())
    assert (_index(store, "p"), _index(store, other)) == (place("p").index, place(other).index ^ 1)
    assert _in_slot(store, late) is None
    assert list(_rows(path)) == [late]


def _index(store: SQLiteStore, page_id: str) -> int:
    """The slot that holds the page's record."""
    slot = store._slot_of(page_id)
    assert slot is not None
    return slot.index


def test_a_slot_whose_page_expired_goes_to_the_next_new_page(path: Path) -> None:
    clock = [time.time()]
    store = SQLiteStore(path, page_ttl=100, clock=lambda: clock[0])
    [other] = _sharing_a_slot("p")
    _save(store, "p", PageRecord(seq=1))
    clock[0] += 101
    assert store.load("p") == (None, Mail())
    _save(store, other, PageRecord(seq=5))
    assert _in_slot(store, other) == PageRecord(seq=5)
    assert _index(store, other) == place("p").index  # the first free slot of its pair
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


def test_mail_for_a_page_in_the_neighbour_flags_its_slot_alone(path: Path) -> None:
    store = SQLiteStore(path)
    [other] = _sharing_a_slot("p")
    _save(store, "p", PageRecord(seq=1))
    _save(store, other, PageRecord(seq=1))
    store.push(other, A)
    assert store.load(other) == (PageRecord(seq=1), Mail(inbox=[(1, A)]))
    assert _begun_mail(store, other) == Mail(inbox=[(1, A)])
    assert store._slot_of(other).mail and not store._slot_of("p").mail  # type: ignore[union-attr]
    _save(store, other, PageRecord(seq=2), inbox_upto=1)  # moves it into its row
    assert store.load(other) == (PageRecord(seq=2), Mail())
    assert list(_rows(path)) == [other]
    assert store._records().read(place("p").index ^ 1) is None  # its slot is free again
    [late] = _sharing_a_slot("p", 2)[1:]
    _save(store, late, PageRecord(seq=3))
    assert _index(store, late) == place("p").index ^ 1
    assert store.load("p") == (PageRecord(seq=1), Mail())


def test_a_page_in_the_neighbour_taken_over_fences_its_holder_out(path: Path) -> None:
    store, clock = _clocked(path)
    [other] = _sharing_a_slot("p")
    _save(store, "p", PageRecord(seq=1))
    _save(store, other, PageRecord(seq=1))
    stale: list[t.Any] = []
    thread = threading.Thread(target=lambda: stale.append(store.begin(other, 10)))
    thread.start()
    thread.join()
    clock[0] += 60
    taken = store.begin(other, 60)  # a thread of this process, past the first's time
    assert taken is not None and taken[1] == PageRecord(seq=1)
    with pytest.raises(LeaseLost):
        store.save(other, stale[0][0], Changes(record=PageRecord(seq=9)))
    store.save(other, taken[0], Changes(record=PageRecord(seq=2)))
    assert store.load(other) == (PageRecord(seq=2), Mail())
    assert _index(store, other) == place("p").index ^ 1
    assert store.load("p") == (PageRecord(seq=1), Mail())


def test_a_damaged_neighbour_forgets_its_page_alone(path: Path) -> None:
    store = SQLiteStore(path)
    [other] = _sharing_a_slot("p")
    _save(store, "p", PageRecord(seq=1))
    _save(store, other, PageRecord(seq=1))
    index = place("p").index ^ 1
    data = bytearray(encode(Slot(place(other).digest, 2, time.time(), b'{"seq":1}')))
    data[-1] ^= 1  # a bit flipped: the CRC no longer matches
    os.pwrite(store._records()._fd, data, index * SLOT_SIZE)
    assert store.load("p") == (PageRecord(seq=1), Mail())
    assert store.load(other) == (None, Mail())
    _save(store, other, PageRecord(seq=1))  # a new page's save, into the freed slot
    assert _index(store, other) == index


@pytest.mark.parametrize("taker", ["same slot", "next door"])
def test_an_expired_page_whose_slot_another_takes_during_its_event_saves_as_new(
    path: Path, taker: str
) -> None:
    store, clock = _clocked(path)
    [same] = _sharing_a_slot("p")
    _save(store, "p", PageRecord(seq=1))
    _save(store, _next_door("p"), PageRecord(seq=1))  # p's neighbour is taken
    clock[0] += store.page_ttl + 1  # p's record expires, in its slot
    _save(store, _next_door("p"), PageRecord(seq=2))
    taken = store.begin("p", 60)
    assert taken is not None and taken[1] is None
    _save(
        store,
        same if taker == "same slot" else _sharing_a_slot(_next_door("p"))[0],
        PageRecord(seq=5),
    )
    store.save("p", taken[0], Changes(record=PageRecord(seq=1)))  # not LeaseLost
    assert store.load("p") == (PageRecord(seq=1), Mail())
    assert _in_slot(store, "p") is None  # both its slots are taken: it has a row


def test_a_first_save_keeps_memberships_made_before_it_alive(path: Path) -> None:
    store, clock = _clocked(path)
    store.join("p", "g")
    clock[0] += store.page_ttl * 0.6
    _save(store, "p", PageRecord(seq=1))  # its claim of a slot
    clock[0] += store.page_ttl * 0.6
    assert store.load("p") == (PageRecord(seq=1), Mail(groups={"g": []}))


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


def _write_slot(path: Path, page_id: str, slot: Slot) -> None:
    with open(f"{path}-records", "r+b") as file:
        file.seek(place(page_id).index * SLOT_SIZE)
        file.write(encode(slot))


@pytest.mark.parametrize(
    ("fence", "touched"),
    [(0, 0.0), (2**63 - 1, 0.0), (-1, 0.0), (1, float("nan")), (1, float("inf"))],
)
def test_a_slot_no_store_wrote_is_free(path: Path, fence: int, touched: float) -> None:
    # It checks out, but holds what no store writes: a fence that could not move on,
    # a time no clock tells.
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    where = place("p")
    _write_slot(path, "p", Slot(where.digest, fence, touched or time.time(), b'{"seq":1}'))
    assert store.load("p") == (None, Mail())
    _save(store, "p", PageRecord(seq=1))
    _save(store, "p", PageRecord(seq=2))
    assert store.load("p") == (PageRecord(seq=2), Mail())


@pytest.mark.parametrize("text", [b'{"seq":\xff}', b"[" * CAPACITY, b"{}"])
def test_a_slot_holding_no_record_is_a_damaged_record(path: Path, text: bytes) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    _write_slot(path, "p", Slot(place("p").digest, 2, time.time(), text))
    assert store.load("p") == (PageRecord(damaged=True), Mail())
    taken = store.begin("p", 60)
    assert taken is not None and taken[1] == PageRecord(damaged=True)
    # A send moves the damaged record into the page's row, and the save replaces it.
    store.save("p", taken[0], Changes(record=PageRecord(seq=1), pushes=[("q", A)]))
    assert store.load("p") == (PageRecord(seq=1), Mail())


def test_garbage_in_the_record_file_is_no_record(path: Path) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    with open(f"{path}-records", "r+b") as file:
        file.write(os.urandom(SLOT_SIZE * 4))
        file.seek(place("p").index * SLOT_SIZE)
        file.write(b"\xff" * SLOT_SIZE)
    assert store.load("p") == (None, Mail())


@pytest.mark.parametrize("slot", ["its own", "the neighbour"])
def test_a_slot_read_during_its_write_is_read_again_after_it(path: Path, slot: str) -> None:
    store = SQLiteStore(path)
    [other] = _sharing_a_slot("p")
    _save(store, other, PageRecord(seq=1))
    _save(store, "p", PageRecord(seq=1))  # in its slot's neighbour
    page_id = other if slot == "its own" else "p"
    index = _index(store, page_id)
    records, leases = store._records(), store._leases()
    text = b'{"seq":2,"state":{},"batches":[]}'
    whole = encode(Slot(place(page_id).digest, 3, time.time(), text))
    writing = threading.Event()

    def write_slowly() -> None:
        with leases.slot(index, 10):
            os.pwrite(records._fd, whole[:40], index * SLOT_SIZE)  # half written
            writing.set()
            time.sleep(0.2)
            os.pwrite(records._fd, whole, index * SLOT_SIZE)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    writing.wait()
    assert store.load(page_id) == (PageRecord(seq=2), Mail())
    writer.join()


def test_a_new_page_taken_over_before_its_first_save_fences_its_holder_out(
    path: Path,
) -> None:
    store, clock = _clocked(path)
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


@pytest.mark.parametrize("stale_first", [False, True])
def test_two_holders_of_a_new_page_never_both_save_it(path: Path, stale_first: bool) -> None:
    # A take-over that failed gave the page's lock back while the holder it was taking
    # over from was still saving: a second holder began the page, as new, meanwhile.
    store, clock = _clocked(path)
    stale = store.lock("n", 10)
    assert stale is not None
    held = store._leases().holder("n", stale)  # the stale holder, past its check
    assert held is not None
    store.unlock("n", stale)
    clock[0] += 60
    fresh = store.begin("n", 60)
    assert fresh is not None and fresh[1] is None
    saves = [
        lambda: store._write("n", held, Changes(record=PageRecord(seq=1, state={"by": 1}))),
        lambda: store.save("n", fresh[0], Changes(record=PageRecord(seq=1, state={"by": 2}))),
    ]
    saved = []
    for by, save in enumerate(saves if stale_first else saves[::-1]):
        with contextlib.suppress(LeaseLost):
            save()
            saved.append(by if stale_first else 1 - by)
    assert saved == [1]  # the fresh holder's, whichever saves first: the stale one lost
    assert store.load("n") == (PageRecord(seq=1, state={"by": 2}), Mail())
    assert _rows(path) == {}


def test_a_slot_lock_wait_cut_short_leaves_the_leases_usable(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    leases = store._leases()

    class Interrupted(Exception):
        pass

    def interrupted(seconds: float) -> None:
        raise Interrupted  # as a signal's handler raises, e.g. a request's timeout

    with monkeypatch.context() as patch:
        patch.setattr(leases, "_lock", lambda offset: False)  # another process holds it
        patch.setattr("piggyback.stores.file_lease.time.sleep", interrupted)
        with pytest.raises(Interrupted):
            store.push("p", A)
    assert leases._mutex.acquire(timeout=5)  # not left held: every lease would wait on it
    leases._mutex.release()
    _save(store, "p", PageRecord(seq=2))
    assert store.load("p") == (PageRecord(seq=2), Mail())


def test_a_holder_fenced_out_while_moving_its_record_into_its_row_writes_nothing(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, clock = _clocked(path)
    _save(store, "p", PageRecord(seq=1))
    stale = store.begin("p", 10)
    assert stale is not None
    adopt = store._adopt

    def taken_over_first(page_id: str, held: t.Any) -> None:
        # The stale holder passed its lease check; before it copies its slot into the
        # row, a thread takes the lease over, moves the record and saves after it.
        monkeypatch.setattr(store, "_adopt", adopt)
        clock[0] += 60
        _save(store, "p", PageRecord(seq=2), pushes=[("q", A)])
        _save(store, "p", PageRecord(seq=3))
        adopt(page_id, held)

    monkeypatch.setattr(store, "_adopt", taken_over_first)
    with pytest.raises(LeaseLost):
        store.save("p", stale[0], Changes(record=PageRecord(seq=9), pushes=[("q", A)]))
    assert store.load("p") == (PageRecord(seq=3), Mail())
    assert store.load("q") == (None, Mail(inbox=[(1, A)]))  # the stale send is not sent
    _save(store, "p", PageRecord(seq=4))
    assert store.load("p") == (PageRecord(seq=4), Mail())


# Holds the database's write lock, as a process's send does, then takes a slot's lock.
_SENDER = """
import sqlite3, sys
from piggyback.stores.record_slots import place
from piggyback.stores.sqlite import SQLiteStore
path, page = sys.argv[1:]
db = sqlite3.connect(path, isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("writing", flush=True)
sys.stdin.readline()
try:
    with SQLiteStore(path)._leases().slot(place(page).index, 2):
        print("slot", flush=True)
except TimeoutError:
    print("timed out", flush=True)
db.execute("COMMIT")
"""


def test_a_take_over_waits_for_a_writer_without_holding_its_slot(path: Path) -> None:
    # Whoever needs the database's write lock and a slot's takes the database's first:
    # a take-over holding the slot while it waits would stall a send for its timeout.
    store, clock = _clocked(path)
    _save(store, "p", PageRecord(seq=1), pushes=[("q", A)])  # its record is in its row
    thread = threading.Thread(target=lambda: store.lock("p", 10))
    thread.start()
    thread.join()
    clock[0] += 60
    command = [sys.executable, "-c", _SENDER, str(path), "p"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as sender:
        assert sender.stdout is not None and sender.stdin is not None
        assert sender.stdout.readline() == "writing\n"
        taken: list[t.Any] = []
        taking = threading.Thread(target=lambda: taken.append(store.begin("p", 60)))
        taking.start()
        time.sleep(0.3)  # the take-over waits for the sender's write
        sender.stdin.write("\n")
        sender.stdin.flush()
        assert sender.stdout.readline() == "slot\n"
        taking.join()
    assert sender.returncode == 0
    assert taken[0] is not None and taken[0][1] == PageRecord(seq=1)
    store.save("p", taken[0][0], Changes(record=PageRecord(seq=2)))
    assert store.load("p") == (PageRecord(seq=2), Mail())


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


def test_the_record_file_is_never_a_directory(path: Path) -> None:
    os.makedirs(f"{path}-records")
    with pytest.raises(PermissionError, match=r"record file .* is a directory"):
        SQLiteStore(path).load("p")


# The mail flag: a page in its slot reads the database only once mail may wait.


def test_mail_sent_during_an_event_keeps_its_flag_through_the_save(path: Path) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    taken = store.begin("p", 60)
    assert taken is not None and taken[2] == Mail()
    store.push("p", A)  # while the event runs
    store.save("p", taken[0], Changes(record=PageRecord(seq=2)))
    assert store.load("p") == (PageRecord(seq=2), Mail(inbox=[(1, A)]))
    assert _begun_mail(store, "p") == Mail(inbox=[(1, A)])


def _begun_mail(store: SQLiteStore, page_id: str) -> Mail:
    taken = store.begin(page_id, 60)
    assert taken is not None
    store.unlock(page_id, taken[0])
    return taken[2]


def test_mail_sent_before_a_page_had_its_slot_flags_the_slot(path: Path) -> None:
    store = SQLiteStore(path)
    store.push("n", A)
    store.join("m", "g")
    store.publish("g", A)
    for page_id in ("n", "m"):
        taken = store.begin(page_id, 60)
        assert taken is not None
        store.save(page_id, taken[0], Changes(record=PageRecord(seq=1)))  # its claim
        assert _in_slot(store, page_id) == PageRecord(seq=1)
    assert store.load("n") == (PageRecord(seq=1), Mail(inbox=[(1, A)]))
    assert store.load("m") == (PageRecord(seq=1), Mail(groups={"g": [(2, A)]}))


def _statements(store: SQLiteStore) -> list[str]:
    """The SQL this thread's connection to ``store`` runs from now on."""
    statements: list[str] = []
    store._db().set_trace_callback(statements.append)
    return statements


def test_a_page_with_nothing_in_the_database_is_read_without_it(path: Path) -> None:
    store = SQLiteStore(path)
    statements = _statements(store)
    assert store.load("new") == (None, Mail())  # a page's polls before its first event
    taken = store.begin("new", 60)
    assert taken is not None and taken[1:] == (None, Mail())
    store.unlock("new", taken[0])
    assert statements == []


@pytest.mark.parametrize(
    "send",
    [
        lambda store: store.push("n", A),
        lambda store: (store.join("n", "g"), store.publish("g", A)),
        lambda store: _save(store, "other", PageRecord(seq=1), pushes=[("n", A)]),
        lambda store: SQLiteStore(store.path).push("n", A),  # another store on the file
    ],
    ids=["push", "join", "a handler's send", "another store"],
)
def test_mail_for_a_page_with_no_record_is_read(
    path: Path, send: t.Callable[[SQLiteStore], t.Any]
) -> None:
    store = SQLiteStore(path)
    assert store.load("n") == (None, Mail())
    send(store)
    record, mail = store.load("n")
    assert record is None and (mail.inbox or mail.groups["g"])
    assert _begun_mail(store, "n") == mail


def test_a_record_in_its_row_is_read_from_the_moment_it_leaves_its_slot(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    taken = store.begin("p", 60)
    assert taken is not None

    def crash(*args: t.Any) -> None:
        raise OSError("the process died here")

    with monkeypatch.context() as patch:  # after the record moved into its row
        patch.setattr(SQLiteStore, "_save_record", crash)
        with pytest.raises(OSError, match="died here"):
            store.save("p", taken[0], Changes(record=PageRecord(seq=2), joins=["g"]))
    store.unlock("p", taken[0])
    assert _in_slot(store, "p") is None
    assert store.load("p") == (PageRecord(seq=1), Mail())


def test_a_new_page_taken_over_and_never_saved_saves_later(path: Path) -> None:
    store, clock = _clocked(path)
    first = store.lock("n", 10)
    assert first is not None
    clock[0] += 60
    taken = store.lock("n", 10)  # a take-over: it gives the page a row
    assert taken is not None
    store.unlock("n", taken)
    _save(store, "n", PageRecord(seq=1))
    assert store.load("n") == (PageRecord(seq=1), Mail())


@pytest.mark.parametrize("pages_before", [False, True])
def test_a_record_file_from_before_its_map_gets_one(path: Path, pages_before: bool) -> None:
    store = SQLiteStore(path)
    store.load("n")  # makes the files
    if pages_before:
        store.push("n", A)
        _save(store, "long", PageRecord(seq=1, state={"text": "x" * CAPACITY}))
    store.close()
    records = Path(f"{path}-records")
    with records.open("r+b") as file:  # as a release before the map left it
        file.truncate(SLOTS * SLOT_SIZE)
    store = SQLiteStore(path)
    statements = _statements(store)
    assert store.load("else") == (None, Mail())
    assert bool(statements) == pages_before  # every slot may then have something
    if pages_before:
        assert store.load("n") == (None, Mail(inbox=[(1, A)]))
        assert store.load("long")[0] == PageRecord(seq=1, state={"text": "x" * CAPACITY})


def test_a_sweep_forgets_the_slots_of_the_pages_it_swept(path: Path) -> None:
    store, clock = _clocked(path)
    store.push("gone", A)
    clock[0] += store.page_ttl / 2
    store.push("n", A)
    _save(store, "long", PageRecord(seq=1, state={"text": "x" * CAPACITY}))  # a row
    clock[0] += store.page_ttl / 2 + 1  # "gone"'s message expired, the others did not
    store.publish("g", A)  # a write: the sweep is due
    statements = _statements(store)
    assert store.load("gone") == (None, Mail())
    assert statements == []
    assert store.load("n") == (None, Mail(inbox=[(2, A)]))
    assert store.load("long")[0] == PageRecord(seq=1, state={"text": "x" * CAPACITY})


def test_a_sweep_leaves_the_map_when_the_pages_held_are_too_many_to_read(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "MAP_READ_LIMIT", 2)
    store, clock = _clocked(path)
    store.push("gone", A)
    clock[0] += store.page_ttl / 2
    for page_id in ("a", "b", "c"):
        store.push(page_id, A)
    clock[0] += store.page_ttl / 2 + 1
    store.publish("g", A)  # "gone"'s message is swept, the three others are too many
    statements = _statements(store)
    assert store.load("gone") == (None, Mail())
    assert statements  # its slot is still marked


def _clear_map_while(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, meanwhile: t.Callable[[], t.Any]
) -> None:
    """Clear ``store``'s map, running ``meanwhile`` after it read the database and
    before it writes the map."""
    pages_held = store._pages_held

    def read_then_meanwhile() -> list[int] | None:
        held = pages_held()
        meanwhile()
        return held

    monkeypatch.setattr(store, "_pages_held", read_then_meanwhile)
    store._clear_map()


def test_clearing_the_map_keeps_a_page_sent_mail_after_it_read_the_database(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(path)
    _clear_map_while(store, monkeypatch, lambda: SQLiteStore(path).push("late", A))
    assert store.load("late") == (None, Mail(inbox=[(1, A)]))


def test_clearing_the_map_leaves_it_if_another_clearing_began_meanwhile(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = SQLiteStore(path), SQLiteStore(path)

    def meanwhile() -> None:
        second._clear_map()  # another process's clearing, all of it
        second.push("late", A)  # marked in that clearing's generation

    _clear_map_while(first, monkeypatch, meanwhile)
    assert first.load("late") == (None, Mail(inbox=[(1, A)]))


def test_clearing_the_map_leaves_it_after_255_generations_began_meanwhile(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Marks repeat every 255 generations; whether another clearing began must not.
    first, second = SQLiteStore(path), SQLiteStore(path)

    def meanwhile() -> None:
        second.push("late", A)
        for _ in range(254):
            second._clear_map()
        with second._writing() as db, second._transaction(db):
            second._records().new_generation()  # a clearing that began and stalled

    _clear_map_while(first, monkeypatch, meanwhile)
    assert first.load("late") == (None, Mail(inbox=[(1, A)]))


def test_a_write_that_cannot_clear_the_map_is_done_all_the_same(
    path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store, clock = _clocked(path)
    store.push("p", A)

    def locked() -> list[int] | None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "_pages_held", locked)
    clock[0] += store.page_ttl / 2  # the next write sweeps, then clears the map
    store.push("p", A)
    assert store.load("p") == (None, Mail(inbox=[(1, A), (2, A)]))
    assert "could not clear its record file's map" in caplog.text


def test_garbage_in_the_maps_generation_clears_the_map_all_the_same(path: Path) -> None:
    store, clock = _clocked(path)
    store.push("gone", A)
    clock[0] += store.page_ttl / 2
    store.push("n", A)  # a store's first sweep clears nothing
    clock[0] += store.page_ttl / 2 + 1  # "gone"'s message expired
    os.pwrite(store._records()._fd, b"\xff" * 8, record_slots._GENERATION_AT)  # the last
    _save(store, "p", PageRecord(seq=1))  # a write: the sweep is due
    store.publish("g", A)
    statements = _statements(store)
    assert store.load("gone") == (None, Mail())
    assert statements == []
    assert store.load("n") == (None, Mail(inbox=[(2, A)]))


_SWEEPER = """
import sys
from piggyback.stores.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
store.load("x")
print("ready", flush=True)
store._clear_map()
print("cleared", flush=True)
"""


def test_clearing_the_map_never_forgets_a_row_being_made(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A row's mark and its making are one transaction: another process clearing the
    # map in between would clear the row's slot, hiding it.
    store = SQLiteStore(path)
    for other in _sharing_a_slot("p", 2):  # p's record goes in a row
        _save(store, other, PageRecord(seq=1))
    mark = RecordFile.mark_in_database
    sweepers: list[subprocess.Popen[str]] = []

    def mark_then_sweep(records: RecordFile, index: int) -> None:
        mark(records, index)
        if sweepers:
            return
        command = [sys.executable, "-c", _SWEEPER, str(path)]
        sweepers.append(sweeper := subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        assert sweeper.stdout is not None and sweeper.stdout.readline() == "ready\n"
        with contextlib.suppress(subprocess.TimeoutExpired):
            sweeper.wait(0.5)  # what a clearing not kept out would have done by now

    monkeypatch.setattr(RecordFile, "mark_in_database", mark_then_sweep)
    _save(store, "p", PageRecord(seq=1))
    assert sweepers
    with sweepers[0] as sweeper:
        assert sweeper.stdout is not None and sweeper.stdout.read() == "cleared\n"
    assert sweeper.returncode == 0
    assert SQLiteStore(path).load("p") == (PageRecord(seq=1), Mail())


def test_a_membership_and_a_handlers_send_flag_the_pages_slots(path: Path) -> None:
    store = SQLiteStore(path)
    for page_id in ("p", "q", "r"):
        _save(store, page_id, PageRecord(seq=1))
    store.join("p", "g")
    store.publish("g", A)
    _save(store, "r", PageRecord(seq=2), pushes=[("q", A)])
    assert store.load("p") == (PageRecord(seq=1), Mail(groups={"g": [(1, A)]}))
    assert store.load("q") == (PageRecord(seq=1), Mail(inbox=[(2, A)]))
    assert store._slot_of("p").mail and store._slot_of("q").mail  # type: ignore[union-attr]
    assert _in_slot(store, "r") is None  # its send moved it into its row


def test_a_flag_set_by_another_store_on_the_file_is_seen(path: Path) -> None:
    store = SQLiteStore(path)
    _save(store, "p", PageRecord(seq=1))
    assert store.load("p") == (PageRecord(seq=1), Mail())
    SQLiteStore(path).push("p", A)
    assert store.load("p") == (PageRecord(seq=1), Mail(inbox=[(1, A)]))


def test_a_save_that_cannot_keep_memberships_alive_writes_nothing(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, clock = _clocked(path)
    _save(store, "p", PageRecord(seq=1))
    store.join("p", "g")
    clock[0] += store.page_ttl / 50  # the page and its memberships are due a touch
    taken = store.begin("p", 60)
    assert taken is not None
    execute = store._execute

    def locked(db: t.Any, sql: str, params: t.Any = ()) -> t.Any:
        if "UPDATE memberships SET touched" in sql:
            raise sqlite3.OperationalError("database is locked")
        return execute(db, sql, params)

    monkeypatch.setattr(store, "_execute", locked)
    with pytest.raises(sqlite3.OperationalError):
        store.save("p", taken[0], Changes(record=PageRecord(seq=2)))
    store.unlock("p", taken[0])
    monkeypatch.undo()
    assert store.load("p") == (PageRecord(seq=1), Mail(groups={"g": []}))
    _save(store, "p", PageRecord(seq=2))
    assert store.load("p") == (PageRecord(seq=2), Mail(groups={"g": []}))


# Processes and threads at once on pages that share one slot: each event adds one to
# its page's count, sometimes sends another page mail (which moves that page into its
# row once delivered) or grows its record past a slot. With short leases, some events
# outlive theirs: another thread of the process may take the page over, and the late
# save must then be refused. Prints, as JSON, each page's saved events, the messages
# sent by saved events, those delivered to saved events, and how many saves were refused.
_WORKER = """
import json, random, sys, threading, time
from piggyback.lease import lease
from piggyback.stores.base import Changes, LeaseLost, PageRecord
from piggyback.stores.sqlite import SQLiteStore
path, pages, events, seed = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
short = sys.argv[5] == "short"
store = SQLiteStore(path)
done, sent, delivered, lost = {page: 0 for page in pages}, [], [], []
counted = threading.Lock()

def work(rng, name):
    for event in range(events):
        page = rng.choice(pages)
        seconds = 0.02 if short and rng.random() < 0.3 else 60
        with lease(store, page, seconds=seconds, wait=60) as held:
            record = held.record or PageRecord()
            n = record.state.get("n", 0) + 1
            state = {"n": n, "pad": "x" * 3000} if rng.random() < 0.05 else {"n": n}
            inbox = [number for number, _ in held.mail.inbox]
            got = [commands[0][2] for _, commands in held.mail.inbox]
            message = f"{name}.{event}"
            pushes = [(rng.choice(pages), [["text", "a", message]])] if rng.random() < 0.1 else []
            if seconds < 1 and rng.random() < 0.5:
                time.sleep(0.04)  # past the lease
            try:
                held.save(Changes(
                    record=PageRecord(seq=record.seq + 1, state=state),
                    inbox_upto=max(inbox, default=0), pushes=pushes,
                ))
            except LeaseLost:
                lost.append(page)
                continue
        with counted:
            done[page] += 1
            sent.extend(message for _ in pushes)
            delivered.extend(got)

threads = [
    threading.Thread(target=work, args=(random.Random(f"{seed}{i}"), f"{seed}.{i}"))
    for i in range(2)
]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"done": done, "sent": sent, "delivered": delivered, "lost": len(lost)}))
"""


def _colliding(count: int) -> list[str]:
    """``count`` page ids placed at the two slots of one pair, about half at each."""
    index = place("c0").index
    found = ["c0"]
    for n in itertools.count(1):
        if place.__wrapped__(f"c{n}").index == index ^ (len(found) % 2):
            found.append(f"c{n}")
            if len(found) == count:
                return found
    raise AssertionError("unreachable")


@pytest.mark.parametrize("leases", ["long", "short"])
def test_processes_and_threads_on_pages_sharing_a_slot_count_every_event(
    path: Path, leases: str
) -> None:
    pages = _colliding(5)
    SQLiteStore(path).secret()  # the file exists before the workers open it
    events = "150" if leases == "long" else "60"
    command = [sys.executable, "-c", _WORKER, str(path), ",".join(pages), events]
    workers = [
        subprocess.Popen([*command, str(seed), leases], stdout=subprocess.PIPE, text=True)
        for seed in range(3)
    ]
    totals, sent, delivered, lost = dict.fromkeys(pages, 0), [], [], 0
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        found = json.loads(out)
        for page, count in found["done"].items():
            totals[page] += count
        sent += found["sent"]
        delivered += found["delivered"]
        lost += found["lost"]
    store = SQLiteStore(path)
    waiting = []
    for page in pages:
        record, mail = store.load(page)
        assert record is not None
        assert (record.seq, record.state["n"]) == (totals[page], totals[page])
        waiting += [commands[0][2] for _, commands in mail.inbox]
    # Every message a saved event sent was delivered to a saved event once, or waits.
    assert sorted(delivered + waiting) == sorted(sent)
    if leases == "long":
        assert sum(totals.values()) == 3 * 2 * 150
    else:  # events outlived their leases, and were taken over
        assert lost > 0


def _open_record_files() -> int:
    return sum(
        os.readlink(f"/proc/self/fd/{fd}").endswith("-records")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    )


def test_a_closed_or_dropped_store_leaves_no_record_file_open(tmp_path: Path) -> None:
    before = _open_record_files()
    for n in range(50):
        store = SQLiteStore(tmp_path / f"s{n}.sqlite3")
        _save(store, "p", PageRecord(seq=1))
        if n % 2:
            store.close()
            assert store.load("p") == (PageRecord(seq=1), Mail())  # opened again
        del store
    assert _open_record_files() == before
