"""The SQLite store's leases across processes, threads and greenlets, for real.

Whatever holds a lease (a kernel lock in ``<file>-lease`` since schema 3), these hold:
the lease excludes another process and another thread, a holder killed with SIGKILL
leaves it free at once, a lease past its time is taken over by another thread of its
process and its old holder's save raises ``LeaseLost`` and writes nothing (another
process waits for the holder to let go or die), and under gevent waiting for a lease
blocks no other greenlet. Other processes are real ones (``python -c``), driven line by line over
their standard input and output. Time past a lease is a clock handed to each store,
never a sleep.
"""

from __future__ import annotations

import itertools
import os
import queue
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest

from piggyback.stores.base import Changes
from piggyback.stores.base import LeaseLost
from piggyback.stores.base import Mail
from piggyback.stores.base import PageRecord
from piggyback.stores.record_slots import place
from piggyback.stores.sqlite import SQLiteStore

from .servers import ROOT

# Takes page p's lease for argv[2] seconds on a clock stopped at argv[3], says "held"
# (or "busy"), then on each line of input saves the next record and says "saved" or
# "lost".
_HOLDER = """
import sys
from piggyback.stores.base import Changes, LeaseLost, PageRecord
from piggyback.stores.sqlite import SQLiteStore
path, lease, now = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
store = SQLiteStore(path, clock=lambda: now)
owner = store.lock("p", lease)
print("held" if owner else "busy", flush=True)
sys.stdin.readline()
try:
    store.save("p", owner, Changes(record=PageRecord(seq=1, state={"by": "holder"})))
except LeaseLost:
    print("lost", flush=True)
else:
    print("saved", flush=True)
sys.stdin.readline()
"""

# Tries page p's lease once and says "held" or "busy".
_PROBE = """
import sys
from piggyback.stores.sqlite import SQLiteStore
print("held" if SQLiteStore(sys.argv[1]).lock("p", 3600) else "busy", flush=True)
"""

# Under gevent: one greenlet waits for page p's lease (held by another process) while
# another counts its own turns; says "ticking" once it has had 20 turns meanwhile, then
# "got <seq>" once the waiter has the lease.
_GREEN_WAITER = """
from gevent import monkey; monkey.patch_all()
import sys, gevent
from piggyback.lease import lease
from piggyback.stores.base import Changes, PageRecord
from piggyback.stores.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
got = []
def wait():
    with lease(store, "p", wait=120) as held:
        got.append(held.record.seq)
        held.save(Changes(record=PageRecord(seq=2)))
def tick():
    for _ in range(20):
        gevent.sleep(0.005)
    print("ticking" if not got else "too late", flush=True)
gevent.joinall([gevent.spawn(wait), gevent.spawn(tick)], raise_error=True)
print(f"got {got[0]}", flush=True)
"""


class _Process:
    """A ``python -c`` child, told what to do one line at a time."""

    def __init__(self, code: str, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.popen = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line.strip())

    def line(self) -> str:
        """Its next line of output; a child stuck for a minute fails the test."""
        try:
            return self._lines.get(timeout=60)
        except queue.Empty:
            pytest.fail("the child process said nothing for 60 s")

    def tell(self) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write("\n")
        self.popen.stdin.flush()

    def end(self) -> int:
        """Its exit status, once it has exited (its input closed)."""
        self._close()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self._close()

    def _close(self) -> None:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.close()
        self.popen.wait(60)
        self._reader.join(60)
        self.popen.stdout.close()


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "store.sqlite3")


@pytest.fixture
def processes() -> t.Iterator[list[_Process]]:
    started: list[_Process] = []
    yield started
    for process in started:
        process.kill()


def _commit(store: SQLiteStore, record: PageRecord) -> None:
    owner = store.lock("p", 60)
    assert owner is not None
    store.save("p", owner, Changes(record=record))


def _holder(
    processes: list[_Process], path: str, lease: float = 3600, now: float | None = None
) -> _Process:
    now = time.time() if now is None else now
    holder = _Process(_HOLDER, path, str(lease), str(now))
    processes.append(holder)
    assert holder.line() == "held"
    return holder


def test_the_lease_excludes_another_process(path: str, processes: list[_Process]) -> None:
    SQLiteStore(path).push("p", [["text", "a", "1"]])
    store = SQLiteStore(path)
    holder = _holder(processes, path)
    assert store.lock("p", 60) is None
    assert store.begin("p", 60) is None
    assert store.lock("q", 60) is not None  # another page is free
    holder.tell()
    assert holder.line() == "saved"
    taken = store.begin("p", 60)
    assert taken is not None
    assert taken[1] == PageRecord(seq=1, state={"by": "holder"})


def test_the_lease_of_a_killed_holder_is_taken_at_once(
    path: str, processes: list[_Process]
) -> None:
    store = SQLiteStore(path)
    holder = _holder(processes, path, lease=3600)
    assert store.lock("p", 60) is None
    holder.popen.kill()  # SIGKILL: the holder gives nothing back
    holder.popen.wait(60)
    taken = store.begin("p", 60)  # one try: no waiting, no lease running out
    assert taken is not None
    assert taken[1:] == (None, Mail())


def test_a_live_process_keeps_its_lease_past_its_time(path: str, processes: list[_Process]) -> None:
    """Only the holder's own process may take over a lease past its time (it holds the
    kernel lock); another waits until the holder lets go or dies."""
    now = time.time()
    store = SQLiteStore(path, clock=lambda: now + 60)
    _commit(store, PageRecord(seq=1))
    holder = _holder(processes, path, lease=10, now=now)  # alive, and 50 s past its time
    assert store.begin("p", 60) is None
    holder.tell()
    assert holder.line() == "saved"
    taken = store.begin("p", 60)
    assert taken is not None
    assert taken[1] == PageRecord(seq=1, state={"by": "holder"})


def test_a_lease_past_its_time_is_taken_at_once_when_its_process_dies(
    path: str, processes: list[_Process]
) -> None:
    now = time.time()
    store = SQLiteStore(path, clock=lambda: now + 60)
    holder = _holder(processes, path, lease=10, now=now)
    assert store.begin("p", 60) is None
    holder.popen.kill()
    holder.popen.wait(60)
    assert store.begin("p", 60) is not None


def _in_thread(run: t.Callable[[], t.Any]) -> t.Any:
    """What ``run`` returns or raises, run in a thread of its own."""
    result: list[t.Any] = []

    def target() -> None:
        try:
            result.append(run())
        except BaseException as e:  # raised again in the caller's thread
            result.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def test_the_lease_excludes_another_thread(path: str) -> None:
    store = SQLiteStore(path)
    owner = _in_thread(lambda: store.lock("p", 60))
    assert owner is not None
    assert store.lock("p", 60) is None
    assert SQLiteStore(path).lock("p", 60) is None  # another store on the file too
    _in_thread(lambda: store.save("p", owner, Changes(record=PageRecord(seq=1))))
    assert store.lock("p", 60) is not None


def test_a_thread_past_its_time_loses_the_lease_and_writes_nothing(path: str) -> None:
    clock = [time.time()]
    store = SQLiteStore(path, clock=lambda: clock[0])
    _commit(store, PageRecord(seq=1))
    stale = _in_thread(lambda: store.lock("p", 10))
    clock[0] += 60
    taken = store.begin("p", 60)
    assert taken is not None
    with pytest.raises(LeaseLost):
        _in_thread(lambda: store.save("p", stale, Changes(record=PageRecord(seq=9))))
    assert store.load("p") == (PageRecord(seq=1), Mail())
    assert store.lock("p", 60) is None  # the old holder's loss left the taker's lease
    store.save("p", taken[0], Changes(record=PageRecord(seq=2)))
    assert store.load("p") == (PageRecord(seq=2), Mail())


def test_a_page_saved_meanwhile_fences_out_a_stale_owner(path: str) -> None:
    """Safety does not rest on the lock: a save checks the fence it began with."""
    store = SQLiteStore(path)
    owner = store.lock("p", 60)
    assert owner is not None
    store.save("p", owner, Changes(record=PageRecord(seq=1)))
    owner = store.lock("p", 60)
    assert owner is not None
    held = store._leases().holder("p", owner)  # white box: this process's lease
    assert held is not None
    held.fence -= 1  # as if another holder had saved since this one began
    with pytest.raises(LeaseLost):
        store.save("p", owner, Changes(record=PageRecord(seq=9)))
    assert store.load("p") == (PageRecord(seq=1), Mail())
    assert store.lock("p", 60) is not None  # the lost lease was given back


def test_under_gevent_waiting_for_a_lease_blocks_no_greenlet(
    path: str, processes: list[_Process]
) -> None:
    pytest.importorskip("gevent")
    holder = _holder(processes, path)
    waiter = _Process(_GREEN_WAITER, path)
    processes.append(waiter)
    assert waiter.line() == "ticking"  # the other greenlet ran while the lease was busy
    holder.tell()
    assert holder.line() == "saved"
    assert waiter.line() == "got 1"  # the waiter got the lease once the holder saved
    assert waiter.end() == 0
    assert SQLiteStore(path).load("p") == (PageRecord(seq=2), Mail())


def test_a_forked_child_takes_leases_of_its_own(path: str) -> None:
    store = SQLiteStore(path)
    owner = store.lock("p", 60)  # held by the parent across the fork
    assert owner is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        busy = store.lock("p", 60) is None
        free = store.lock("q", 60) is not None
        os.write(write, b"ok" if busy and free else b"no")
        os._exit(0)
    os.close(write)
    assert os.read(read, 2) == b"ok"
    os.close(read)
    os.waitpid(pid, 0)
    store.save("p", owner, Changes(record=PageRecord(seq=1)))
    assert store.lock("q", 60) is not None  # the child's lease ended with it


def _probe(processes: list[_Process], path: str) -> str:
    """Whether another process can take page p's lease now."""
    probe = _Process(_PROBE, path)
    processes.append(probe)
    return probe.line()


def test_a_lease_taken_over_twice_in_one_process_fences_each_out(path: str) -> None:
    clock = [time.time()]
    store = SQLiteStore(path, clock=lambda: clock[0])
    first = _in_thread(lambda: store.lock("p", 10))
    clock[0] += 60
    second = _in_thread(lambda: store.lock("p", 10))
    clock[0] += 60
    third = store.lock("p", 600)
    assert first is not None and second is not None and third is not None
    for owner in (first, second):
        with pytest.raises(LeaseLost):
            _in_thread(lambda o=owner: store.save("p", o, Changes(record=PageRecord(seq=9))))
    assert store.lock("p", 60) is None
    store.save("p", third, Changes(record=PageRecord(seq=2)))
    with pytest.raises(LeaseLost):  # a second save with the same owner
        store.save("p", third, Changes(record=PageRecord(seq=3)))
    store.unlock("p", "not-an-owner")
    assert store.load("p")[0] == PageRecord(seq=2)


def test_a_thread_losing_to_a_thread_leaves_the_kernel_lock_to_it(
    path: str, processes: list[_Process]
) -> None:
    clock = [time.time() - 100]
    store = SQLiteStore(path, clock=lambda: clock[0])
    stale = _in_thread(lambda: store.lock("p", 10))
    clock[0] = time.time()
    taker = store.lock("p", 3600)
    assert stale is not None and taker is not None
    with pytest.raises(LeaseLost):
        _in_thread(lambda: store.save("p", stale, Changes(record=PageRecord(seq=9))))
    assert _probe(processes, path) == "busy"
    store.save("p", taker, Changes(record=PageRecord(seq=1)))
    assert _probe(processes, path) == "held"


def test_a_child_giving_back_its_parents_lease_frees_nothing(
    path: str, processes: list[_Process]
) -> None:
    store = SQLiteStore(path)
    owner = store.lock("p", 3600)
    assert owner is not None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        store.unlock("p", owner)
        taken = store.lock("q", 60)  # opens a lock file descriptor of its own
        store.unlock("q", taken or "")
        os._exit(0)
    os.waitpid(pid, 0)
    assert _probe(processes, path) == "busy"
    store.save("p", owner, Changes(record=PageRecord(seq=1)))


def test_a_holder_of_an_expired_page_writes_nothing_once_it_was_swept(path: str) -> None:
    clock = [time.time()]
    store = SQLiteStore(path, page_ttl=100, clock=lambda: clock[0])
    owner = store.lock("p", 60)
    assert owner is not None
    store.save("p", owner, Changes(record=PageRecord(seq=1), joins=["g"]))  # in its row
    owner = store.lock("p", 10)
    assert owner is not None
    clock[0] += 600  # the page expires; a write sweeps its row away
    store.push("other", [["text", "a", "1"]])
    with pytest.raises(LeaseLost):
        store.save("p", owner, Changes(record=PageRecord(seq=2)))
    assert store.load("p") == (None, Mail())


def _sharing_a_slot(page_id: str) -> str:
    """Another page id whose record would live in the same slot of the record file."""
    index = place(page_id).index
    return next(f"q{n}" for n in itertools.count() if place(f"q{n}").index == index)


@pytest.mark.parametrize("taken_over", [False, True])
def test_a_holder_of_an_expired_page_whose_slot_went_to_another_saves_it_as_new(
    path: str, taken_over: bool
) -> None:
    # As in every store: a holder past its lease saves unless another took it over.
    clock = [time.time()]
    store = SQLiteStore(path, page_ttl=100, clock=lambda: clock[0])
    _commit(store, PageRecord(seq=1))  # in its slot
    owner = store.lock("p", 10)
    assert owner is not None
    clock[0] += 600  # the page expires; another page takes its slot
    other = _sharing_a_slot("p")
    taken = store.lock(other, 10)
    assert taken is not None
    store.save(other, taken, Changes(record=PageRecord(seq=7)))
    if taken_over:
        thief = store.lock("p", 10)
        assert thief is not None
        with pytest.raises(LeaseLost):
            store.save("p", owner, Changes(record=PageRecord(seq=2)))
        store.save("p", thief, Changes(record=PageRecord(seq=3)))
        assert store.load("p") == (PageRecord(seq=3), Mail())
    else:
        store.save("p", owner, Changes(record=PageRecord(seq=2)))
        assert store.load("p") == (PageRecord(seq=2), Mail())
    assert store.load(other) == (PageRecord(seq=7), Mail())


def test_a_store_opened_through_a_symlink_shares_the_leases(
    tmp_path: Path, processes: list[_Process]
) -> None:
    real = tmp_path / "data" / "store.sqlite3"
    SQLiteStore(real).push("x", [["text", "a", "1"]])  # the file exists
    link = tmp_path / "link.sqlite3"
    link.symlink_to(real)
    holder = _holder(processes, str(real))
    assert SQLiteStore(link).lock("p", 60) is None
    assert _probe(processes, str(link)) == "busy"
    holder.tell()
    assert holder.line() == "saved"


def test_the_lock_file_is_private(path: str) -> None:
    old = os.umask(0)
    try:
        SQLiteStore(path).lock("p", 60)
    finally:
        os.umask(old)
    assert os.stat(f"{path}-lease").st_mode & 0o777 == 0o600


def test_a_lock_file_that_exists_is_made_private(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(f"{path}-lease").touch(mode=0o666)
    os.chmod(f"{path}-lease", 0o666)
    assert SQLiteStore(path).lock("p", 60) is not None
    assert os.stat(f"{path}-lease").st_mode & 0o777 == 0o600


def test_a_lock_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / "store.sqlite3-lease").symlink_to(victim)
    with pytest.raises(PermissionError, match=r"lock file .* is a symlink"):
        SQLiteStore(tmp_path / "store.sqlite3").lock("p", 60)
    assert victim.read_text() == "keep me\n"


def _lock_files_open() -> int:
    """How many of this process's descriptors are SQLite lock files."""
    return sum(
        os.readlink(f"/proc/self/fd/{fd}").endswith(".sqlite3-lease")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    )


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_closing_a_store_closes_its_lock_file(tmp_path: Path) -> None:
    before = _lock_files_open()
    for n in range(20):  # a test suite's stores, one file each
        store = SQLiteStore(tmp_path / f"{n}" / "store.sqlite3")
        _commit(store, PageRecord(seq=1))
        store.close()
    assert _lock_files_open() == before
    assert store.lock("p", 60) is not None  # opened again on use


def test_closing_a_store_keeps_the_leases_it_holds(path: str, processes: list[_Process]) -> None:
    store = SQLiteStore(path)
    owner = store.lock("p", 60)
    assert owner is not None
    store.close()  # closing the lock file now would drop the lease
    assert _probe(processes, path) == "busy"
    store.save("p", owner, Changes(record=PageRecord(seq=1)))
    store.close()
    assert _probe(processes, path) == "held"


def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "store.sqlite3-lease")
    with pytest.raises(PermissionError, match=r"lock file .* is not a regular file"):
        SQLiteStore(tmp_path / "store.sqlite3").lock("p", 60)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_lock_file_of_another_user_is_refused(tmp_path: Path) -> None:
    lock_file = tmp_path / "store.sqlite3-lease"
    lock_file.touch(mode=0o600)
    os.chown(lock_file, 12345, -1)
    with pytest.raises(PermissionError, match=r"lock file .* belongs to another user"):
        SQLiteStore(tmp_path / "store.sqlite3").lock("p", 60)
