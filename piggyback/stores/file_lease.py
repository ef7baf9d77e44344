"""Page leases for the SQLite store: a kernel lock per page, never a database write.

A page's lease is a POSIX byte-range lock (``fcntl``) at an offset hashed from the page
id, in a lock file beside the database, plus an entry in a table of this process's
leases, since such locks belong to a process, not to a thread or greenlet. The kernel
drops the locks of a process that dies, so a killed worker's leases are free at once.

A lease whose holder is alive but past its time can be taken over: each holder writes
its expiry into a slot of the file (hashed from the page id too), and a request that
finds the lock busy and the slot's expiry past takes the page without the lock. The
store then fences the old holder out with a write (see ``sqlite.py``): a lease only
serializes events; a save's check of the page's fence number is what makes it safe.

The rules the module relies on:

- The lock file is opened once per process and never closed while the process may hold
  a lock on it: closing *any* descriptor of a file drops every POSIX lock the process
  holds on it. A forked child holds none of its parent's locks; it opens its own
  descriptor and starts with an empty table.
- Locks are only ever tried (``F_SETLK``), never waited for: under gevent a blocking
  ``fcntl`` would stop every greenlet of the process. Waiting is :func:`piggyback.lease.lease`'s.

.. versionadded:: 0.1
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import struct
import threading
from dataclasses import dataclass

#: Expiry slots in the lock file: 16 bytes each (the page's hash and its expiry).
SLOTS = 4096
_SLOT = struct.Struct("<Qd")
# Lock offsets start after the slots, and stay far below 2**63.
_LOCKS_AT = SLOTS * _SLOT.size


def _hash(page_id: str) -> int:
    digest = hashlib.blake2b(page_id.encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "little")


@dataclass
class Held:
    """A lease this process holds."""

    owner: str
    expires: float
    #: The page id's hash: where its lock and expiry slot are in the file.
    key: int
    #: Whether this process holds the page's kernel lock (not after a take-over from
    #: another process, whose lock stays until that process lets go).
    locked: bool
    #: Whether the lease was taken over from a holder past its time, who must be fenced.
    took_over: bool
    #: The page's fence number when the lease was taken; set by the store.
    fence: int = 0
    #: When the page's row was last touched, as the lease was taken; set by the store.
    touched: float = 0.0


class LeaseFile:
    """This process's leases on the pages of one store file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._mutex = threading.Lock()
        self._held: dict[str, Held] = {}

    def take(self, page_id: str, owner: str, now: float, expires: float) -> Held | None:
        """Take the page's lease until ``expires``, or ``None`` while a holder keeps it."""
        key = _hash(page_id)
        with self._mutex:
            held = self._held.get(page_id)
            if held is not None:
                if held.expires > now:
                    return None
                # A thread of this process ran out of time: its kernel lock is ours now.
                held = Held(owner, expires, key, locked=held.locked, took_over=True)
            else:
                held = self._take_from_processes(key, owner, now, expires)
                if held is None:
                    return None
            self._held[page_id] = held
        self._write_slot(key, expires)
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
            if held.locked:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, _offset(held.key))

    def _take_from_processes(self, key: int, owner: str, now: float, expires: float) -> Held | None:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _offset(key))
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
        else:
            return Held(owner, expires, key, locked=True, took_over=False)
        # Another live process holds the lock: is its lease past its time?
        if self._read_slot(key) > now:
            return None
        return Held(owner, expires, key, locked=False, took_over=True)

    def _write_slot(self, key: int, expires: float) -> None:
        os.pwrite(self._fd, _SLOT.pack(key, expires), key % SLOTS * _SLOT.size)

    def _read_slot(self, key: int) -> float:
        """When the page's holder's lease ends; infinity when the slot does not say."""
        data = os.pread(self._fd, _SLOT.size, key % SLOTS * _SLOT.size)
        if len(data) < _SLOT.size:
            return float("inf")
        found, expires = _SLOT.unpack(data)
        # Another page's holder wrote over the slot: wait for the lock instead.
        return float(expires) if found == key else float("inf")


def _offset(key: int) -> int:
    return _LOCKS_AT + (key >> 2)


_FILES = threading.Lock()
_OPEN: dict[str, LeaseFile] = {}


def lease_file(path: str) -> LeaseFile:
    """This process's :class:`LeaseFile` for ``path``, shared by every store on it."""
    found = _OPEN.get(path)
    if found is not None and found.pid == os.getpid():
        return found
    with _FILES:
        found = _OPEN.get(path)
        if found is None or found.pid != os.getpid():
            # A forked child holds none of the locks of the descriptor it inherited,
            # so it may close it; the parent's stays open in the parent.
            if found is not None:
                os.close(found._fd)
            found = _OPEN[path] = LeaseFile(path)
        return found
