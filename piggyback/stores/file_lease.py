"""Page leases for the SQLite store: a kernel lock per page, never a database write.

A page's lease is a POSIX byte-range lock (``fcntl``) at an offset hashed from the page
id, in a lock file beside the database, plus an entry in a table of this process's
leases, since such locks belong to a process, not to a thread or greenlet. The kernel
drops the locks of a process that dies, so a killed worker's leases are free at once.

Only one process holds a page's kernel lock, so only its own threads and greenlets can
take over a lease past its time (the lock stays with the process); the store fences the
old holder out with a write (see ``sqlite.py``). Another process waits until the holder
gives the lease back or dies: a worker hung for good is ended by its server (gunicorn's
``--timeout``), and its pages are free at once.

The rules the module relies on:

- The lock file is opened once per process and never closed while the process may hold
  a lock on it: closing *any* descriptor of a file drops every POSIX lock the process
  holds on it. A forked child holds none of its parent's locks; it opens its own
  descriptor and starts with an empty table.
- Locks are only ever tried (``F_SETLK``), never waited for: under gevent a blocking
  ``fcntl`` would stop every greenlet of the process. Waiting is
  :func:`piggyback.lease.lease`'s.
- The lock file is private and a regular file: it is never opened through a symlink.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import os
import stat
import threading
import time
import typing as t
from contextlib import contextmanager
from dataclasses import dataclass

if t.TYPE_CHECKING:
    from .record_slots import Slot

#: Where the slots' locks of the record file (``record_slots.py``) start: past every
#: page's, whose offsets are below 2**62.
SLOT_LOCKS = 1 << 62


@functools.lru_cache(maxsize=4096)  # an event's lease and its record's slot both need it
def page_digest(page_id: str) -> bytes:
    """128 bits of a hash of the page id, which no two pages share in practice (page
    ids are random and signed: nobody chooses a collision)."""
    return hashlib.blake2b(page_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _offset(page_id: str) -> int:
    """Where the page's lock is in the file: 62 bits of its digest."""
    return int.from_bytes(page_digest(page_id)[:8], "little") >> 2


@dataclass(slots=True)
class Held:
    """A lease this process holds."""

    owner: str
    expires: float
    offset: int
    #: Whether the lease was taken over from a thread of this process past its time,
    #: which must be fenced out.
    took_over: bool
    #: The page's fence number when the lease was taken; set by the store.
    fence: int = 0
    #: When the page's row was last touched, as the lease was taken; set by the store.
    touched: float = 0.0
    #: The page's slot of the record file as the lease was taken, if it holds the
    #: page's record. Set by the store.
    slot: Slot | None = None


class LeaseFile:
    """This process's leases on the pages of one store file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self._fd = open_private(path, "lock file")
        self._mutex = threading.Lock()
        self._held: dict[str, Held] = {}

    @property
    def usable(self) -> bool:
        """Open, and opened by this process (a forked child opens its own)."""
        return self._fd >= 0 and self.pid == os.getpid()

    def take(self, page_id: str, owner: str, now: float, expires: float) -> Held | None:
        """Take the page's lease until ``expires``, or ``None`` while a holder keeps it
        (or this file was closed meanwhile: the caller's next try opens it again)."""
        with self._mutex:
            if self._fd < 0:
                return None
            held = self._held.get(page_id)
            if held is not None:
                if held.expires > now:
                    return None
                # A thread of this process ran out of time: its kernel lock is ours now.
                held = Held(owner, expires, held.offset, took_over=True)
            else:
                offset = _offset(page_id)
                if not self._lock(offset):
                    return None
                held = Held(owner, expires, offset, took_over=False)
            self._held[page_id] = held
        return held

    def holder(self, page_id: str, owner: str) -> Held | None:
        """The lease if ``owner`` holds it."""
        held = self._held.get(page_id)
        return held if held is not None and held.owner == owner else None

    def release(self, page_id: str, owner: str) -> None:
        """Give the lease back; a no-op when ``owner`` does not hold it."""
        with self._mutex:
            held = self._held.get(page_id)
            if held is None or held.owner != owner:
                return
            del self._held[page_id]
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, held.offset)

    def lock_slot(self, index: int, timeout: float) -> None:
        """Take the lock of the record file's slot ``index``, against this process's
        threads too, until :meth:`unlock_slot`. A slot's writer holds it for one read
        and one write, so it is tried again every 50 µs, for ``timeout`` seconds.

        :raise TimeoutError: another process held it all that time.
        """
        self._mutex.acquire()
        try:
            deadline = 0.0
            while not self._lock(SLOT_LOCKS + index):
                now = time.monotonic()
                deadline = deadline or now + timeout
                if now > deadline:
                    raise TimeoutError(f"a slot of {self.path!r} stayed locked {timeout} s")
                time.sleep(0.00005)
        except BaseException:  # a timeout, or a signal's handler raised during the sleep
            self._mutex.release()
            raise

    def unlock_slot(self, index: int) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, SLOT_LOCKS + index)
        self._mutex.release()

    @contextmanager
    def slot(self, index: int, timeout: float) -> t.Iterator[None]:
        """:meth:`lock_slot` and :meth:`unlock_slot` around a block."""
        self.lock_slot(index, timeout)
        try:
            yield
        finally:
            self.unlock_slot(index)

    def close(self) -> bool:
        """Close the file unless this process holds a lease on it (closing a descriptor
        drops the process's locks on its file); whether it did."""
        with self._mutex:
            if self._held or self._fd < 0:
                return False
            os.close(self._fd)
            self._fd = -1
            return True

    def _lock(self, offset: int) -> bool:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            return False
        return True


def open_private(path: str, what: str) -> int:
    """The store's ``what`` at ``path``, made if need be: a regular file of this
    user's, mode 0600."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        problem = {errno.ELOOP: "a symlink", errno.EISDIR: "a directory"}.get(e.errno or 0)
        if problem is None:
            raise
        raise PermissionError(f"the SQLite store's {what} {path!r} is {problem}") from e
    found = os.fstat(fd)
    problem = (
        "is not a regular file" if not stat.S_ISREG(found.st_mode)
        else "belongs to another user" if found.st_uid != os.geteuid()
        else ""
    )  # fmt: skip
    if problem:
        os.close(fd)  # this process holds no lock on it yet
        raise PermissionError(f"the SQLite store's {what} {path!r} {problem}")
    if stat.S_IMODE(found.st_mode) & 0o077:
        os.fchmod(fd, 0o600)
    return fd


_FILES = threading.Lock()
_OPEN: dict[str, LeaseFile] = {}


def lease_file(path: str) -> LeaseFile:
    """This process's :class:`LeaseFile` for ``path``, shared by every store on it."""
    found = _OPEN.get(path)
    if found is not None and found.usable:
        return found
    with _FILES:
        found = _OPEN.get(path)
        if found is None or not found.usable:
            # A forked child holds none of the locks of the descriptor it inherited,
            # so it may close it; the parent's stays open in the parent.
            if found is not None and found._fd >= 0:
                os.close(found._fd)
            found = _OPEN[path] = LeaseFile(path)
        return found


def close_lease_file(path: str) -> None:
    """Close this process's lock file for ``path``, unless it holds a lease on it."""
    with _FILES:
        found = _OPEN.get(path)
        if found is not None and found.usable and found.close():
            del _OPEN[path]
