"""The default store: one SQLite file shared by every process and thread on a machine.

A page's lease is a kernel lock in a lock file beside the database
(:mod:`piggyback.stores.file_lease`), never a database write, and most pages' records
live in slots of a record file beside it (:mod:`piggyback.stores.record_slots`). So an
event's start (take the lease, read the record, see whether mail waits) is one read of
the slot, whose flag says whether mail may wait (then the database is read too), and its
end is one write of the slot: the database is not used at all. A page whose record is
not in a slot is looked up in the database only if the record file's map says it may
have anything there, which no page has before its first event. An event that moves mail,
memberships or sends, or whose page has its record in its row (its slot was taken, or
it outgrew one), reads one row from a WAL snapshot and writes one statement, or a short
transaction. No transaction is open while a handler runs: the lease is what
serializes a page's events, and each page's slot or row carries a fence number, which
every save checks and moves on and every take-over of a lease past its time moves on,
so that a holder who lost its lease writes nothing. Connections are
opened lazily, one per process and thread (or greenlet, under gevent); one thread of a
process writes at a time, and each store checkpoints the write-ahead log at its first
write and after every :data:`CHECKPOINT_EVERY` more (SQLite's own checkpoints are a
backstop: see ``_connect``).

What the store relies on:

- The file is on a local file system, never NFS or another network file system: WAL
  mode needs shared memory and POSIX locks that work between processes.
- In a process that uses the store, only SQLite opens and closes the file: closing
  *any* descriptor of a file drops every POSIX lock the process holds on it, including
  the one by which SQLite's WAL mode knows the file is in use. Another process that
  then closes its connection believes it was the last one, checkpoints and deletes
  ``-wal`` and ``-shm`` under the server (lost messages, "disk I/O error", "database
  disk image is malformed"). So the file and its directory are created, private, when
  the store is constructed, before it opens any connection; later, the file is only
  ``chmod``-ed by path. Nothing moves or deletes the file, its ``-wal`` or its
  ``-shm`` while the store is in use, and a backup goes through SQLite
  (``sqlite3 store.sqlite3 ".backup copy.sqlite3"`` or ``VACUUM INTO``): a plain copy
  misses what is still in the ``-wal``. The record file (``<file>-records``) is copied
  beside it, after the backup (its map must know of every row the copy holds): a page
  in use during the copy may come back as it was a moment before, or not at all.
- Other processes (a CLI, a job worker, ``python -m examples.chat_bot``) may open the
  store with ``SQLiteStore(path)`` or ``store_from_url()``, use it and exit at any
  time, as often as they like: they are users of the file like the web workers, and
  need the same SQLite (3.35 or newer) and the same user (the file is private).
- A connection never crosses a fork. A process that finds connections opened before
  it was forked closes them before it opens its own: sharing SQLite's bookkeeping of
  the parent's locks, the child's connections would take no locks of their own (the
  parent keeps its connections and its locks). Fork only while no other thread is
  using the store: a parent forked in the middle of another thread's transaction
  leaves its child unable to use the store.

Schema version 2 moved the leases onto the pages' rows; version 3 moved them into the
lock file and gave each row a fence number; version 4 keeps records in the record file,
which releases before it would not read; version 5 keeps the record file's map, which
they would not keep; version 6 lets a record live in its slot's neighbour, where they
would not look. An older file is migrated on first use (its pages, mail and secret are
kept; leases held at that moment are dropped), so every process on the file runs one
release: an older one still running would not read what the newer one writes where. The
lock file (``<file>-lease``) and the record file must not be deleted while the store is
in use either. A record file without its map (made by a release before the map) gets one
at first use, with every slot marked if the database holds anything of any page; sweeps
then clear the slots of pages that have nothing in the database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import sqlite3
import stat
import threading
import time
import typing as t
import weakref
from dataclasses import replace

from .base import add_message
from .base import Changes
from .base import checked_page_ttl
from .base import Command
from .base import DEFAULT_PAGE_TTL
from .base import dump_record
from .base import dumps
from .base import LeaseLost
from .base import load_record
from .base import Mail
from .base import PageRecord
from .base import READ_LIMIT
from .base import Store
from .base import sweep_interval
from .file_lease import close_lease_file
from .file_lease import Held
from .file_lease import lease_file
from .file_lease import LeaseFile
from .record_slots import CAPACITY
from .record_slots import DAMAGED
from .record_slots import pair
from .record_slots import Place
from .record_slots import place
from .record_slots import RecordFile
from .record_slots import Slot
from .record_slots import SLOTS

logger = logging.getLogger("piggyback")

# RETURNING needs SQLite 3.35.
_MIN_SQLITE = (3, 35, 0)

_SCHEMA_VERSION = 6

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS secret (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        key BLOB NOT NULL
    )""",
    # A row may carry a fence and no record yet: a lease was taken over before the
    # page's first save.
    """CREATE TABLE IF NOT EXISTS pages (
        id TEXT PRIMARY KEY,
        record TEXT,
        touched REAL NOT NULL,
        fence INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS pages_touched ON pages (touched)",
    # Inboxes and group logs share one id sequence, so a page receives both in send
    # order; AUTOINCREMENT never reuses an id, so a cursor never skips a new message.
    """CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('page', 'group')),
        name TEXT NOT NULL,
        commands TEXT NOT NULL,
        created REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS messages_box ON messages (kind, name, id)",
    "CREATE INDEX IF NOT EXISTS messages_created ON messages (created)",
    """CREATE TABLE IF NOT EXISTS memberships (
        page_id TEXT NOT NULL,
        group_name TEXT NOT NULL,
        cursor INTEGER NOT NULL,
        touched REAL NOT NULL,
        PRIMARY KEY (page_id, group_name)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS memberships_touched ON memberships (touched)",
)

# Version 1 kept leases in a table of their own; messages and memberships are unchanged.
_FROM_V1 = (
    "ALTER TABLE pages RENAME TO pages_v1",
    "DROP INDEX pages_touched",
    "DROP TABLE leases",
    *_SCHEMA,
    "INSERT INTO pages (id, record, touched) SELECT id, record, touched FROM pages_v1",
    "DROP TABLE pages_v1",
)

# Version 2 kept leases on the pages' rows.
_FROM_V2 = (
    "ALTER TABLE pages ADD COLUMN fence INTEGER NOT NULL DEFAULT 0",
    *(f"ALTER TABLE pages DROP COLUMN {column}" for column in ("owner", "pid", "host", "expires")),
)

# Version 3 kept every record in the database; version 4 may keep some in the record
# file, which an older release would not read.
_FROM_V3: tuple[str, ...] = ()

# Version 5 keeps the record file's map, which an older release would write past: rows
# it made unmarked would be hidden from this one (see record_slots.py).
_FROM_V4: tuple[str, ...] = ()
_FROM_V5: tuple[str, ...] = ()

# The statements an event or a poll runs take their parameters by position (?1 is
# the page id): binding by name costs a microsecond more per statement.

# Whether mail may wait for the page: two index lookups, so that the mail query runs
# only for pages that have an inbox or a membership.
_MAY_HAVE_MAIL = """
    EXISTS (SELECT 1 FROM messages WHERE kind = 'page' AND name = ?1)
    OR EXISTS (SELECT 1 FROM memberships WHERE page_id = ?1)
"""

# Whether mail may wait for a page whose record is in a slot.
_MAIL_WAITS = f"SELECT {_MAY_HAVE_MAIL}"

# The fence of a page's row (NULL: the page has no row), and whether mail may wait.
_CLAIM = f"SELECT (SELECT fence FROM pages WHERE id = ?1), {_MAY_HAVE_MAIL}"

# A slot's record moves into the page's row for good, with its fence and time.
_ADOPT = """
INSERT INTO pages (id, record, touched, fence) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (id) DO UPDATE SET record = ?2, touched = ?3, fence = ?4
"""

# What an event reads under its lease: the record, when it was written, the fence, and
# whether mail may wait; one row, with NULLs for a page that has none yet.
_READ = f"""
SELECT pages.record, pages.touched, pages.fence, {_MAY_HAVE_MAIL}
FROM (SELECT 1) LEFT JOIN pages ON pages.id = ?1
"""

# Fences out the holder of a lease that ran out, and reads as _READ does. (RETURNING
# gives plain columns: SQLite 3.40 compares the row's own columns wrongly there, e.g. a
# REAL column with a number, in a table whose primary key is TEXT.)
_TAKE_OVER = f"""
INSERT INTO pages (id, touched, fence) VALUES (?1, ?2, 1)
ON CONFLICT (id) DO UPDATE SET fence = pages.fence + 1
RETURNING record, touched, fence, {_MAY_HAVE_MAIL}
"""

# The ids of the oldest waiting messages, at most :limit of them: the inbox's, and each
# membership's after its cursor, each read in id order from the index and cut at :limit
# (never all of a flooded log), then the oldest :limit of those.
_WAITING = """
SELECT 'inbox' AS source, NULL AS group_name, id FROM (
    SELECT id FROM messages WHERE kind = 'page' AND name = :page_id ORDER BY id LIMIT :limit
)
UNION ALL
SELECT 'group', m.group_name, x.id
FROM memberships AS m, messages AS x
WHERE m.page_id = :page_id AND m.touched >= :cutoff AND x.id IN (
    SELECT id FROM messages
    WHERE kind = 'group' AND name = m.group_name AND id > m.cursor
    ORDER BY id LIMIT :limit
)
ORDER BY id LIMIT :limit
"""

# Rows of (source, group, message id, JSON): those messages, whose text is read only
# now, and one row with no message for each membership.
_MAIL_ROWS = f"""
SELECT w.source, w.group_name, w.id, msg.commands
FROM ({_WAITING}) AS w JOIN messages AS msg ON msg.id = w.id
WHERE msg.created >= :cutoff
UNION ALL
SELECT 'group', group_name, NULL, NULL FROM memberships
WHERE page_id = :page_id AND touched >= :cutoff
"""

_MAIL = f"{_MAIL_ROWS} ORDER BY 3"

# A page's record, unless it expired, and whether mail may wait for it: one row, of
# NULLs for a page the store does not know.
_PEEK = f"""
SELECT pages.record, {_MAY_HAVE_MAIL}
FROM (SELECT 1) LEFT JOIN pages ON pages.id = ?1 AND pages.touched >= ?2
"""

# The record too: one statement is one snapshot, with no transaction around it.
_LOAD = f"""
SELECT 'record', NULL, NULL, record FROM pages
WHERE id = :page_id AND touched >= :cutoff AND record IS NOT NULL
UNION ALL {_MAIL_ROWS} ORDER BY 3
"""

# Writes the record (?2) and moves the fence (?3) on; changes no row when the fence
# moved since the lease was taken (or the row expired and was swept).
_SAVE = """
UPDATE pages SET record = ?2, fence = ?3 + 1
WHERE id = ?1 AND fence = ?3
"""

# The same, touching the row at ?4. The page's memberships are touched with it
# (_TOUCH), so they stay as alive as the page.
_SAVE_AND_TOUCH = """
UPDATE pages SET record = ?2, touched = ?4, fence = ?3 + 1
WHERE id = ?1 AND fence = ?3
"""

# A page's first save (its fence is 0), touching it at ?3: makes its row, or fills one a
# version 2 file left.
_CREATE = """
INSERT INTO pages (id, record, touched, fence) VALUES (?1, ?2, ?3, 1)
ON CONFLICT (id) DO UPDATE SET record = ?2, touched = ?3, fence = 1
WHERE pages.fence = 0
"""

# Keeps the page's memberships alive, except those that expired already.
_TOUCH = """
UPDATE memberships SET touched = :now
WHERE page_id = :page_id AND touched >= :cutoff AND touched < :due
"""

# Joining again keeps the cursor (stores/base.py); joining after the membership
# expired starts afresh.
_JOIN = """
INSERT INTO memberships (page_id, group_name, cursor, touched)
SELECT :page_id, :group, coalesce(max(id), 0), :now
FROM messages WHERE kind = 'group' AND name = :group
ON CONFLICT (page_id, group_name) DO UPDATE
    SET cursor = excluded.cursor, touched = excluded.touched
WHERE memberships.touched < :cutoff
"""

_LIMIT = {"limit": READ_LIMIT}

#: A store checkpoints the write-ahead log at its first write and after this many more.
CHECKPOINT_EVERY = 1000
#: Pages in the log past which SQLite checkpoints after every commit: a backstop only.
AUTOCHECKPOINT_PAGES = 10_000
#: The page size of a new file. Every save writes the pages it changed to the log
#: whole, and a page's record is a few hundred bytes: smaller pages write less (4 KiB,
#: SQLite's default, cost 7% more instructions per event). A file keeps its size.
PAGE_SIZE = 1024
#: The size the write-ahead log is cut back to when it starts over.
WAL_SIZE_LIMIT = 64 * 1024 * 1024

_APPEND = "INSERT INTO messages (kind, name, commands, created) VALUES (?, ?, ?, ?)"

#: The most pages read to clear the record file's map (see ``_clear_map``), 0.2 s of
#: CPU for 65,536; beyond, it stays as it is: nearly every slot is then in use.
MAP_READ_LIMIT = 4 * SLOTS

# Whether the database holds anything of any page (see _start_map).
_HOLDS_PAGES = """
SELECT EXISTS (SELECT 1 FROM pages) OR EXISTS (SELECT 1 FROM memberships)
    OR EXISTS (SELECT 1 FROM messages WHERE kind = 'page')
"""

# The pages that have anything in the database, up to a limit.
_PAGES_HELD = """
SELECT id FROM pages UNION SELECT page_id FROM memberships
    UNION SELECT name FROM messages WHERE kind = 'page' LIMIT ?
"""

# What _READ reads for a page that has nothing in the database.
_NOTHING_READ = (None, None, None, 0)

_SWEEP = (
    "DELETE FROM pages WHERE touched < :cutoff",
    "DELETE FROM messages WHERE created < :cutoff",
    "DELETE FROM memberships WHERE touched < :cutoff",
)


def _new_owner() -> str:
    # Unique, not secret: the PRNG is enough (and ``random`` reseeds after fork).
    return f"{random.getrandbits(64):016x}"


def _busy(error: sqlite3.OperationalError) -> bool:
    # The low byte is the primary code: SQLITE_BUSY_SNAPSHOT and the like are BUSY too.
    return error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def _checkpoint(db: _Connection) -> None:
    """Copy the log into the database as far as no reader still needs it, waiting for
    no one; another process's checkpoint running meanwhile is as good."""
    with contextlib.suppress(sqlite3.OperationalError):
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def _read(rows: sqlite3.Cursor) -> tuple[str | None, Mail]:
    """The record's text and the mail in the rows of ``_LOAD`` or ``_MAIL``."""
    record, mail = None, Mail()
    for source, group, number, text in rows:
        if source == "record":
            record = text
            continue
        messages = mail.inbox if source == "inbox" else mail.groups.setdefault(group, [])
        if number is not None:
            add_message(mail, messages, number, text)
    return record, mail


def _moves_mail(changes: Changes) -> bool:
    """Whether saving ``changes`` writes more than the page's own row."""
    return bool(
        changes.inbox_upto
        or changes.cursors
        or changes.joins
        or changes.leaves
        or changes.pushes
        or changes.publishes
    )


class _Connection(sqlite3.Connection):
    """A connection that knows the process that opened it and whether it is closed."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        self.pid = os.getpid()
        self.closed = False
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        self.closed = True
        super().close()

    def __del__(self) -> None:
        # A thread's connection goes when the thread ends: close it properly (Python
        # 3.13 warns otherwise).
        if not self.closed:
            self.close()


# Serializes, within a process, what must not overlap with SQLite's own use of the
# file: creating it, and closing the connections inherited across fork.
_FILES = threading.Lock()
# Every connection opened by this module (in this process or, after fork, its parent).
_OPENED: weakref.WeakSet[_Connection] = weakref.WeakSet()
# The process whose connections _OPENED holds.
_opened_by = os.getpid()


# Per process and file: the lock that lets one thread of the process write at a time.
_WRITER_LOCKS: dict[tuple[int, str], threading.Lock] = {}


def _writer_lock(path: str) -> threading.Lock:
    """This process's writer lock for the file (a forked child makes its own: one
    inherited could be held by a thread that does not exist in the child)."""
    key = (os.getpid(), path)
    found = _WRITER_LOCKS.get(key)
    if found is None:
        with _FILES:
            found = _WRITER_LOCKS.setdefault(key, threading.Lock())
    return found


def _create(path: str) -> None:
    """Create the file, readable by its owner only, and its directory, unless it exists.

    The descriptor of a file that did not exist is closed while no connection to the
    file can exist in this process: the caller holds ``_FILES``, which keeps this
    process's threads from connecting meanwhile. A file that exists is never opened.
    """
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it meanwhile
    os.close(descriptor)


def _make_private(path: str) -> None:
    """Take access to the file (and ``.piggyback/``) from everyone but its owner.

    The file holds the secret key. ``chmod`` by path opens no descriptor, so it cannot
    drop a lock. A directory of another name is the user's, and left as it is.
    """
    directory = os.path.dirname(path)
    if os.path.basename(directory) == ".piggyback":
        _restrict(directory)
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            _restrict(name)


def _restrict(path: str) -> None:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if not mode & 0o077:
        return
    try:
        os.chmod(path, mode & 0o700)
    except PermissionError as e:
        raise PermissionError(
            f"{path!r} has mode {mode:04o}: other users may read the store's secret key,"
            " and this process may not change that. Run as the file's owner, or"
            f" 'chmod go= {path}'."
        ) from e


def _close_inherited() -> None:
    """Close the connections a forked process inherited, before it opens its own.

    A child holds none of its parent's locks, but SQLite's bookkeeping of them, copied
    by fork, says it does: a connection it opened beside an inherited one would take no
    lock of its own. Closing the inherited ones clears that bookkeeping and leaves the
    parent's connections and locks as they are.
    """
    global _opened_by
    if _opened_by == os.getpid():
        return
    inherited = [db for db in _OPENED if not db.closed]
    if any(db.in_transaction for db in inherited):
        # Closing it would roll back, in the memory shared with the parent, the
        # transaction the parent's thread is still writing.
        raise RuntimeError(
            "This process was forked while another thread was writing to the SQLite"
            " store, so it cannot use the store safely. Fork before starting threads"
            " that use the store, or open the store after the fork."
        )
    for db in inherited:
        db.close()
    _opened_by = os.getpid()


class SQLiteStore(Store):
    """Keeps everything in one SQLite file, created with its directory on first use.

    Correct for any number of processes, threads and greenlets on one machine with no
    configuration: ``gunicorn -w 4`` with sync, threaded or gevent workers alike, and
    other processes using the file meanwhile. The file must be on a local disk; see
    the module's documentation for the rules the store relies on.

    The file (mode 0600) and a ``.piggyback`` directory (mode 0700) are made readable
    by their owner only: they hold the secret key.

    :param path: the database file.
    :param page_ttl: seconds after its last use that a page is forgotten, or up to a
        hundredth of that sooner: times of use are kept to that precision, which
        spares most events an index update.
    :param timeout: seconds to wait for another process's write to finish.
    :param clock: returns the current time in seconds; for tests.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        page_ttl: float = DEFAULT_PAGE_TTL,
        timeout: float = 10.0,
        clock: t.Callable[[], float] = time.time,
    ) -> None:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise RuntimeError(
                f"SQLiteStore needs SQLite 3.35 or newer; this Python has"
                f" {sqlite3.sqlite_version!r}. Use a newer Python, or the Redis store."
            )
        self.path = os.fspath(path)
        if self.path == ":memory:" or not self.path:
            raise ValueError(
                f"SQLiteStore needs a file, not {self.path!r}: an in-memory or"
                " temporary database is private to one connection. For one process,"
                " use MemoryStore."
            )
        page_ttl = checked_page_ttl(page_ttl)
        # Absolute, so that a later chdir cannot point a connection at another file.
        self._file = os.path.abspath(self.path)
        # Beside the file SQLite opens, whatever symlinks lead there.
        self._lease_path = f"{os.path.realpath(self._file)}-lease"
        self._records_path = f"{os.path.realpath(self._file)}-records"
        self._private = False  # the file's mode is checked once, at the first connection
        self.page_ttl = page_ttl
        self.timeout = timeout
        self._clock = clock
        # Frequent small sweeps keep each one's write transaction short.
        self._sweep_every = sweep_interval(page_ttl)
        self._next_sweep = 0.0
        self._map_due = False  # see _after_writing
        # Counted per store, not per connection: a server that starts a thread (or a
        # greenlet) per request makes connections that never write 1,000 times. A new
        # store checkpoints at its first write: processes that each write a little (a
        # CLI, a job) keep the log short together.
        self._writes_to_checkpoint = 1
        self._secret: bytes | None = None
        self._local = threading.local()
        self._lease_file: LeaseFile | None = None
        self._record_file: RecordFile | None = None
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()

    def secret(self) -> bytes:
        if self._secret is None:
            with self._writing() as db, self._transaction(db):
                db.execute(
                    "INSERT OR IGNORE INTO secret (id, key) VALUES (1, ?)",
                    (secrets.token_bytes(32),),
                )
                (self._secret,) = db.execute("SELECT key FROM secret").fetchone()
        return self._secret

    def lock(self, page_id: str, lease: float) -> str | None:
        taken = self._take(page_id, lease)
        return None if taken is None else taken[0]

    def begin(self, page_id: str, lease: float) -> tuple[str, PageRecord | None, Mail] | None:
        taken = self._take(page_id, lease)
        if taken is None:
            return None
        owner, text, touched, may_have_mail = taken
        try:
            record = self._unexpired(text, touched)
            if not may_have_mail:
                return owner, record, Mail()
            # The lease keeps the record as it was; mail arriving meanwhile waits.
            return owner, record, self._mail(self._db(), page_id)
        except BaseException:
            self.unlock(page_id, owner)
            raise

    def unlock(self, page_id: str, owner: str) -> None:
        self._leases().release(page_id, owner)

    def load(self, page_id: str) -> tuple[PageRecord | None, Mail]:
        cutoff = self._clock() - self.page_ttl
        db = self._db()
        slot = self._slot_of(page_id)
        if slot is not None:
            may_have_mail = self._slot_row(db, page_id, slot)[3]
            mail = self._mail(db, page_id) if may_have_mail else Mail()
            return self._unexpired(slot.text, slot.touched), mail
        if not self._in_database(page_id):
            return None, Mail()
        text, may_have_mail = self._execute(db, _PEEK, (page_id, cutoff)).fetchone()
        if may_have_mail:  # the usual poll finds none: a quarter of the work
            params = {"page_id": page_id, "cutoff": cutoff, **_LIMIT}
            text, mail = _read(self._execute(db, _LOAD, params))
        else:
            mail = Mail()
        return (None if text is None else load_record(text)), mail

    def save(self, page_id: str, owner: str, changes: Changes) -> None:
        leases = self._leases()
        held = leases.holder(page_id, owner)
        if held is None:
            raise LeaseLost(page_id)
        try:
            self._write(page_id, held, changes)
        except LeaseLost:
            leases.release(page_id, owner)
            raise
        leases.release(page_id, owner)

    def _write(self, page_id: str, held: Held, changes: Changes) -> None:
        """Commit ``changes`` if the page's fence is still the one ``held`` read.

        :raise LeaseLost: it moved on: nothing was written.
        """
        now = self._clock()
        record = dump_record(changes.record)
        touch = not held.fence or held.touched < self._due(now)
        moves_mail = _moves_mail(changes)
        if not moves_mail and self._saved_in_slot(page_id, held, record, now, touch):
            return
        if held.slot is not None:
            self._adopt(page_id, held)
        if not moves_mail and held.fence:
            # The usual event on a row: one statement, its own transaction (and the
            # writer lock taken as _writing() takes it, without the cost of its
            # generator). A row's making marks the map, in a transaction of its own.
            lock = self._lock_writer()
            try:
                db = self._writer()
                self._save_record(db, page_id, record, held.fence, now, touch)
                if touch:
                    self._execute(db, _TOUCH, self._times(page_id, now))
            finally:
                lock.release()
            self._after_writing()
            return
        sends = [("page", p, dumps(c), now) for p, c in changes.pushes]
        sends += [("group", g, dumps(c), now) for g, c in changes.publishes]
        with self._writing() as db, self._transaction(db):
            self._save_record(db, page_id, record, held.fence, now, touch)
            self._flag_mail(p for p, _ in changes.pushes)
            if changes.inbox_upto:
                db.execute(
                    "DELETE FROM messages WHERE kind = 'page' AND name = ? AND id <= ?",
                    (page_id, changes.inbox_upto),
                )
            self._update_memberships(db, self._times(page_id, now), changes, touch)
            db.executemany(_APPEND, sends)

    def push(self, page_id: str, commands: list[Command]) -> None:
        row = ("page", page_id, dumps(commands), self._clock())
        with self._writing() as db, self._transaction(db):
            self._flag_mail([page_id])
            db.execute(_APPEND, row)

    def publish(self, group: str, commands: list[Command]) -> None:
        row = ("group", group, dumps(commands), self._clock())
        with self._writing() as db:
            self._execute(db, _APPEND, row)

    def join(self, page_id: str, group: str) -> None:
        params = {**self._times(page_id, self._clock()), "group": group}
        with self._writing() as db, self._transaction(db):
            self._flag_mail([page_id])
            db.execute(_TOUCH, params)
            db.execute(_JOIN, params)

    def leave(self, page_id: str, group: str) -> None:
        with self._writing() as db:
            self._execute(
                db,
                "DELETE FROM memberships WHERE page_id = ? AND group_name = ?",
                (page_id, group),
            )

    def close(self) -> None:
        """Close this process's connections, and its lock file unless it holds a lease
        on it; each thread opens them again on next use."""
        for db in list(self._connections):
            if db.pid == os.getpid():
                db.close()
        self._record_file = None  # closed once no thread uses it
        close_lease_file(self._lease_path)

    def _take(self, page_id: str, lease: float) -> tuple[str, str | None, float, int] | None:
        """Take the lease: the owner, the record, when it was written, whether mail
        may wait; ``None`` while a live holder keeps it."""
        db = self._db()  # first: it makes the directory the lock file is in
        owner = _new_owner()
        now = self._clock()
        leases = self._leases()
        held = leases.take(page_id, owner, now, now + lease)
        if held is None:
            return None
        try:
            if held.took_over:
                row = self._take_over(page_id, held, now)
            else:
                row = self._read_held(db, page_id, held)
            text, touched, fence, may_have_mail = row
        except BaseException:
            leases.release(page_id, owner)
            raise
        held.fence = fence or 0
        held.touched = touched or 0.0
        return owner, text, now if touched is None else touched, may_have_mail

    # The record file (record_slots.py). A page's record is in a slot from its first
    # save, if the slot is free, until the page moves mail or outgrows the slot; then
    # it moves into the page's row for good. Its fence is where its record is. A
    # slot's mail flag is set while the database's write lock is held, and a slot goes
    # to a page under that lock too: whoever needs both takes the database's first.

    def _slot_of(self, page_id: str) -> Slot | None:
        """The slot that holds the page's record, if one of its pair does."""
        where = place(page_id)
        records = self._records()
        found = records.find(where)
        if found is None:
            return None
        index, slot = found
        if slot is DAMAGED:  # read during a write, or torn: read again after it
            with self._leases().slot(index, self.timeout):
                slot = records.read_locked(index)
        return slot if slot is not None and slot.digest == where.digest else None

    def _read_held(self, db: _Connection, page_id: str, held: Held) -> tuple[t.Any, ...]:
        """What ``_READ`` reads, from the page's slot if its record is there."""
        slot = self._slot_of(page_id)
        if slot is None:
            if not self._in_database(page_id):
                return _NOTHING_READ
            return tuple(self._execute(db, _READ, (page_id,)).fetchone())
        held.slot = slot
        return self._slot_row(db, page_id, slot)

    def _take_over(self, page_id: str, held: Held, now: float) -> tuple[t.Any, ...]:
        """Fence out the holder whose lease ran out, and read as ``_READ`` does.

        Under the database's write lock, so that the holder fenced out cannot meanwhile
        put the page's first record in a slot (see ``_claimed``) or move it into the
        row (see ``_adopt``).
        """
        where = place(page_id)
        with self._writing() as db, self._transaction(db):
            slot = self._fenced_in_slot(where)
            if slot is None:
                self._records().mark_in_database(where.index)
                taken = db.execute(_TAKE_OVER, (page_id, now))
                row = tuple(taken.fetchone())
                taken.close()  # done before the commit
                return row
        held.slot = slot
        return self._slot_row(self._db(), page_id, slot)

    def _fenced_in_slot(self, where: Place) -> Slot | None:
        """Move the fence on in the slot that holds the page's record, if one of its
        pair does; the caller holds the database's write lock."""
        records, leases = self._records(), self._leases()
        for index in pair(where.index):
            with leases.slot(index, self.timeout):
                found = records.read_locked(index)
                if found is not None and found.digest == where.digest:
                    slot = replace(found, fence=found.fence + 1)
                    records.write(index, slot)
                    return slot
        return None

    def _slot_row(self, db: _Connection, page_id: str, slot: Slot) -> tuple[t.Any, ...]:
        may_have_mail = slot.mail and self._execute(db, _MAIL_WAITS, (page_id,)).fetchone()[0]
        return slot.text, slot.touched, slot.fence, may_have_mail

    def _saved_in_slot(
        self, page_id: str, held: Held, record: str, now: float, touch: bool
    ) -> bool:
        """Write the record in the page's slot, if it is there already or goes there
        now (a page's first save, into a free slot), and fits.

        :raise LeaseLost: another holder took the lease over.
        """
        text = record.encode()
        if len(text) > CAPACITY or (held.slot is None and held.fence):
            return False
        if held.slot is None:
            return self._claimed(page_id, held, text, now)
        if touch and held.slot.mail:
            # The page may have memberships: keep them alive, first, so that a save that
            # fails here has written nothing of its own. (One joined since the lease
            # was taken was touched as it was made.)
            with self._writing() as db:
                self._execute(db, _TOUCH, self._times(page_id, now))
        slot, touched = held.slot, now if touch else held.touched
        records, leases = self._records(), self._leases()
        leases.lock_slot(slot.index, self.timeout)
        try:
            written = records.rewrite(slot, held.fence, touched, text)
        finally:
            leases.unlock_slot(slot.index)
        if written:
            return True
        # Another page took the slot, the page's record having expired; or another
        # holder moved the fence on, which the claim refuses as it refuses a stale one.
        held.slot, held.fence = None, 0
        return self._claimed(page_id, held, text, now)

    def _claimed(self, page_id: str, held: Held, text: bytes, now: float) -> bool:
        """Put a new page's first record in the first slot of its pair that holds no
        live record, if the page has no row (a lease taken over made one); flagged if
        mail waits, and its memberships touched. Under the database's write lock, which
        every claim and take-over takes, so that no other holder can put the page in a
        slot meanwhile.

        :raise LeaseLost: another holder took the lease over, or saved the page already.
        """
        where = place(page_id)
        records, leases = self._records(), self._leases()
        with self._writing() as db, self._transaction(db):
            if leases.holder(page_id, held.owner) is not held or self._slot_of(page_id) is not None:
                raise LeaseLost(page_id)
            for index in pair(where.index):
                with leases.slot(index, self.timeout):
                    found = records.read_locked(index)
                    if found is not None and found.touched >= now - self.page_ttl:
                        continue
                    fence, may_have_mail = self._execute(db, _CLAIM, (page_id,)).fetchone()
                    if fence is not None:
                        return False
                    if may_have_mail:
                        db.execute(_TOUCH, self._times(page_id, now))
                    records.write(index, Slot(where.digest, 1, now, text, bool(may_have_mail)))
                    return True
        return False

    def _flag_mail(self, page_ids: t.Iterable[str]) -> None:
        """Set the mail flag of these pages' slots; the caller holds the database's
        write lock, in the transaction that sends them mail or a membership."""
        records, leases = self._records(), self._leases()
        for page_id in page_ids:
            records.mark_in_database(place(page_id).index)
            slot = self._slot_of(page_id)  # it stays there while the write lock is held
            if slot is not None:
                with leases.slot(slot.index, self.timeout):
                    records.flag_mail(slot.index, slot.digest)

    def _adopt(self, page_id: str, held: Held) -> None:
        """Move the record from the page's slot into its row, as it was when the lease
        was taken: first copied, then the slot cleared, so that a crash between the
        two leaves it readable.

        :raise LeaseLost: the slot's fence moved on: nothing was written.
        """
        assert held.slot is not None
        # A damaged record stays damaged; the row holds text.
        row = (page_id, held.slot.text.decode(errors="replace"), held.touched, held.fence)
        index, records = held.slot.index, self._records()
        with self._writing() as db:
            # Not _transaction(): the row commits before the slot clears, both under
            # the slot's lock.
            self._execute(db, "BEGIN IMMEDIATE")
            try:
                with self._leases().slot(index, self.timeout):
                    found = records.owner(index)
                    if found is None or found[:2] != (held.slot.digest, held.fence):
                        raise LeaseLost(page_id)
                    records.mark_in_database(place(page_id).index)
                    db.execute(_ADOPT, row)
                    db.execute("COMMIT")
                    records.clear(index)
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")
        held.slot = None

    def _records(self) -> RecordFile:
        """This process's descriptor of the record file."""
        found = self._record_file
        if found is None or not found.usable:
            found = self._record_file = RecordFile(self._records_path)
        return found

    def _in_database(self, page_id: str) -> bool:
        """Whether a page whose record is not in its slot may have anything in the
        database: read after the slot, which a record leaves only once its row is
        written."""
        return self._records().in_database(place(page_id).index)

    def _start_map(self, db: _Connection) -> None:
        """Start the record file's map, if it has none yet."""
        records = self._records()
        if records.has_map():
            return
        with self._transaction(db):
            if not records.has_map():
                self._mark_all_if_held(db)

    def _mark_all_if_held(self, db: _Connection) -> None:
        """Write the record file's map, every slot marked if the database holds
        anything of any page; the caller is in a write transaction."""
        self._records().start_map(db.execute(_HOLDS_PAGES).fetchone()[0])

    def _clear_map(self) -> None:
        """Clear the record file's map of the pages that have nothing in the database
        any more, holding the database's write lock only to start a generation of
        marks and to write the map (see :mod:`~piggyback.stores.record_slots`)."""
        records = self._records()
        with self._writing() as db, self._transaction(db):
            generation = records.new_generation()
        marked = self._pages_held()
        if marked is not None:
            with self._writing() as db, self._transaction(db):
                records.clear_map(generation, marked)

    def _pages_held(self) -> list[int] | None:
        """The slots of the pages that have anything in the database, in a read of its
        own (which sees every row committed before it); none if there are more than
        :data:`MAP_READ_LIMIT` pages."""
        held = self._db().execute(_PAGES_HELD, (MAP_READ_LIMIT + 1,)).fetchall()
        if len(held) > MAP_READ_LIMIT:
            return None
        return [place(page_id).index for (page_id,) in held]

    def _leases(self) -> LeaseFile:
        """This process's leases on the file's pages."""
        found = self._lease_file
        if found is None or not found.usable:
            found = self._lease_file = lease_file(self._lease_path)
        return found

    def _unexpired(self, text: str | bytes | None, touched: float) -> PageRecord | None:
        """The record on a page's row, unless it expired or the row has none yet."""
        if text is None or touched < self._clock() - self.page_ttl:
            return None
        return load_record(text)

    def _mail(self, db: _Connection, page_id: str) -> Mail:
        params = {"page_id": page_id, "cutoff": self._clock() - self.page_ttl, **_LIMIT}
        return _read(self._execute(db, _MAIL, params))[1]

    def _due(self, now: float) -> float:
        """When a page's row and memberships are touched again: once they are a
        hundredth of the TTL old, so that most saves leave the indexes on those times
        alone (that halves a save's cost); a page unused for 99% of its TTL may expire."""
        return now - self.page_ttl / 100

    def _times(self, page_id: str, now: float) -> dict[str, t.Any]:
        """The page, ``now``, the ``cutoff`` before which things expired, and when they
        are ``due`` (see ``_due``), for the statements that name them."""
        cutoff, due = now - self.page_ttl, self._due(now)
        return {"page_id": page_id, "now": now, "cutoff": cutoff, "due": due}

    def _save_record(
        self, db: _Connection, page_id: str, record: str, fence: int, now: float, touch: bool
    ) -> None:
        """Write the record and move the fence on (a page's first save makes its row).

        :raise LeaseLost: the fence moved on since the lease was taken.
        """
        if not fence:  # a row with a fence was marked as it was made (or migrated)
            self._records().mark_in_database(place(page_id).index)
            saved = self._execute(db, _CREATE, (page_id, record, now))
        elif touch:
            saved = self._execute(db, _SAVE_AND_TOUCH, (page_id, record, fence, now))
        else:
            saved = self._execute(db, _SAVE, (page_id, record, fence))
        if saved.rowcount != 1:
            raise LeaseLost(page_id)

    def _update_memberships(
        self, db: _Connection, params: dict[str, t.Any], changes: Changes, touch: bool
    ) -> None:
        page_id = params["page_id"]
        if touch:
            db.execute(_TOUCH, params)
        # A cursor moves only for a membership that still exists: an UPDATE cannot
        # resurrect one left meanwhile.
        if changes.cursors:
            db.executemany(
                "UPDATE memberships SET cursor = ? WHERE page_id = ? AND group_name = ?",
                [(cursor, page_id, group) for group, cursor in changes.cursors.items()],
            )
        if changes.leaves:
            db.executemany(
                "DELETE FROM memberships WHERE page_id = ? AND group_name = ?",
                [(page_id, group) for group in changes.leaves],
            )
        if changes.joins:
            db.executemany(_JOIN, [{**params, "group": group} for group in changes.joins])

    def _execute(self, db: _Connection, sql: str, params: t.Any = ()) -> sqlite3.Cursor:
        """Run a statement that takes a lock, waiting while another connection has it.

        SQLite's own busy handler sleeps a millisecond or more at a time, while a write
        here holds the lock for tens of microseconds: short naps waste far less time.
        A statement that found the database busy did nothing, so it is simply retried.
        """
        try:
            return db.execute(sql, params)
        except sqlite3.OperationalError as e:
            if not _busy(e):
                raise
        deadline = time.monotonic() + self.timeout
        pause = 0.00005
        while True:
            time.sleep(pause)
            try:
                return db.execute(sql, params)
            except sqlite3.OperationalError as e:
                if not _busy(e) or time.monotonic() > deadline:
                    raise
            pause = min(pause * 2, 0.005)

    @contextlib.contextmanager
    def _writing(self) -> t.Iterator[_Connection]:
        """This thread's connection, to write with while no other thread of this process
        writes to the file (see ``_lock_writer``)."""
        lock = self._lock_writer()
        try:
            yield self._writer()
        finally:
            lock.release()
        self._after_writing()

    def _lock_writer(self) -> threading.Lock:
        """Take this process's writer lock of the file and return it, to release: SQLite
        lets one connection write at a time, and threads that find it busy would only
        sleep and retry, as processes must."""
        lock = _writer_lock(self._file)
        if not lock.acquire(timeout=self.timeout):
            raise sqlite3.OperationalError(
                f"database is locked: another thread of this process has been writing to"
                f" {self.path!r} for {self.timeout} s"
            )
        return lock

    def _writer(self) -> _Connection:
        """This thread's connection, after the occasional checkpoint and sweep."""
        db = self._db()
        self._writes_to_checkpoint -= 1
        if self._writes_to_checkpoint <= 0:
            self._writes_to_checkpoint = CHECKPOINT_EVERY
            _checkpoint(db)
        now = self._clock()
        if now >= self._next_sweep:
            # A store's first sweep leaves the map: a process that writes once (a CLI,
            # a job) does not read every page.
            self._map_due = bool(self._next_sweep)
            self._next_sweep = now + self._sweep_every
            with self._transaction(db):
                for statement in _SWEEP:
                    db.execute(statement, {"cutoff": now - self.page_ttl})
        return db

    def _after_writing(self) -> None:
        """Clear the record file's map after a sweep, once this process's writer lock
        is free: other threads write meanwhile. A write that was done stays done: if
        the clearing fails, the map stays as it was, which is safe."""
        if self._map_due:
            self._map_due = False
            try:
                self._clear_map()
            except (sqlite3.Error, OSError):
                logger.warning(
                    "The SQLite store %r could not clear its record file's map, which"
                    " stays as it was (that is safe).",
                    self.path,
                    exc_info=True,
                )

    @contextlib.contextmanager
    def _transaction(self, db: _Connection) -> t.Iterator[None]:
        """A write transaction."""
        self._execute(db, "BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _db(self) -> _Connection:
        """This thread's connection, opened in this process."""
        db: _Connection | None = getattr(self._local, "db", None)
        if db is not None and db.pid == os.getpid() and not db.closed:
            return db
        db = self._local.db = self._connect()
        self._connections.add(db)
        return db

    def _connect(self) -> _Connection:
        with _FILES:
            _close_inherited()
            _create(self._file)
        if not self._private:
            _make_private(self._file)
            self._private = True
        db = sqlite3.connect(
            self._file,
            timeout=0,  # waits are _execute's
            isolation_level=None,
            check_same_thread=False,
            factory=_Connection,
        )
        _OPENED.add(db)
        db.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # only a new file's changes
        self._use_wal(db)
        # In WAL mode NORMAL can lose the last commits on power loss, never corrupt.
        db.execute("PRAGMA synchronous = NORMAL")
        # SQLite's own checkpoints run after any commit once the log is long (1,000
        # pages by default): with another process reading, most cannot finish, so
        # nearly every commit paid two fdatasync()s and doubled an event's cost.
        # _writer() checkpoints instead; SQLite's stay, far out, as a backstop.
        db.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
        db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        self._create_schema(db)
        self._start_map(db)
        return db

    def _use_wal(self, db: _Connection) -> None:
        """Let readers and a writer work at once; the file keeps WAL once it has it."""
        # Switching waits for no one (busy_timeout does not apply), so when several
        # processes open a new file at once, all but one retry.
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(sqlite3.OperationalError):
                if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                    return
            time.sleep(0.01)
        raise sqlite3.OperationalError(
            f"{self.path!r} could not be switched to WAL mode in {self.timeout} s;"
            " is it on a file system without shared memory, such as NFS?"
        )

    def _create_schema(self, db: _Connection) -> None:
        if self._schema_version(db) == _SCHEMA_VERSION:
            return
        with self._transaction(db):
            # Another process may have done it while this one waited for the lock.
            version = self._schema_version(db)
            if version == _SCHEMA_VERSION:
                return
            for statement in self._migration(version):
                db.execute(statement)
            if 0 < version < 5:  # rows written before the map, which it may not know
                self._mark_all_if_held(db)
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _schema_version(self, db: _Connection) -> int:
        version: int = self._execute(db, "PRAGMA user_version").fetchone()[0]
        return version

    def _migration(self, version: int) -> tuple[str, ...]:
        if version == 0:
            return _SCHEMA
        if version == 1:
            return _FROM_V1
        if version == 2:
            return _FROM_V2
        if version == 3:
            return _FROM_V3
        if version == 4:
            return _FROM_V4
        if version == 5:
            return _FROM_V5
        raise RuntimeError(
            f"{self.path!r} has schema version {version}, newer than this piggyback's"
            f" ({_SCHEMA_VERSION}): it was written by a newer release. Upgrade"
            " piggyback, or point the store at another file."
        )
