"""The default store: one SQLite file shared by every process and thread on a machine.

Each write is one short ``BEGIN IMMEDIATE`` transaction; no transaction is open while a
handler runs, because the page's lease (:meth:`SQLiteStore.lock`) is what serializes a
page's events. Connections are opened lazily, one per process and thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import socket
import sqlite3
import threading
import time
import typing as t
import weakref

from .base import Changes
from .base import Command
from .base import DEFAULT_PAGE_TTL
from .base import LockLost
from .base import Mail
from .base import PageRecord
from .base import Store

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS pages (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    touched REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pages_touched ON pages (touched);
CREATE TABLE IF NOT EXISTS leases (
    page_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    expires REAL NOT NULL
);
-- Inboxes and group logs share one id sequence, so a page receives both in send
-- order; AUTOINCREMENT never reuses an id, so a cursor never skips a new message.
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('page', 'group')),
    name TEXT NOT NULL,
    commands TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_box ON messages (kind, name, id);
CREATE INDEX IF NOT EXISTS messages_created ON messages (created);
CREATE TABLE IF NOT EXISTS memberships (
    page_id TEXT NOT NULL,
    group_name TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    touched REAL NOT NULL,
    PRIMARY KEY (page_id, group_name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memberships_touched ON memberships (touched);
"""

_LOAD_GROUPS = """
SELECT m.group_name, msg.id, msg.commands
FROM memberships AS m
LEFT JOIN messages AS msg
    ON msg.kind = 'group' AND msg.name = m.group_name
    AND msg.id > m.cursor AND msg.created >= :cutoff
WHERE m.page_id = :page_id AND m.touched >= :cutoff
ORDER BY msg.id
"""

_JOIN = """
INSERT INTO memberships (page_id, group_name, cursor, touched)
SELECT :page_id, :group, coalesce(max(id), 0), :now
FROM messages WHERE kind = 'group' AND name = :group
ON CONFLICT DO NOTHING
"""

_SWEEP = (
    "DELETE FROM pages WHERE touched < :cutoff",
    "DELETE FROM messages WHERE created < :cutoff",
    "DELETE FROM memberships WHERE touched < :cutoff",
    "DELETE FROM leases WHERE expires < :cutoff",
)


def _host() -> str:
    # A pid means something only within one pid namespace on one machine; two
    # containers sharing the file on a volume must not judge each other's pids.
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()} {namespace}"


_HOST = _host()


def _alive(pid: int, host: str) -> bool:
    """Whether the process that took a lease may still be running."""
    if host != _HOST:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dumps(value: t.Any) -> str:
    return json.dumps(value, separators=(",", ":"))


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
        # 3.13 warns otherwise), but never one inherited across fork.
        if self.pid == os.getpid() and not self.closed:
            self.close()


class SQLiteStore(Store):
    """Keeps everything in one SQLite file, created with its directory on first use.

    Correct for any number of processes and threads on one machine with no
    configuration: ``gunicorn -w 4`` with sync or threaded workers alike.

    :param path: the database file.
    :param page_ttl: seconds after its last use that a page is forgotten.
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
        self.path = os.fspath(path)
        if self.path == ":memory:" or not self.path:
            raise ValueError(
                f"SQLiteStore needs a file, not {self.path!r}: an in-memory or"
                " temporary database is private to one connection. For one process,"
                " use MemoryStore."
            )
        if page_ttl <= 0:
            raise ValueError(f"page_ttl must be positive, got {page_ttl!r}.")
        self.page_ttl = page_ttl
        self.timeout = timeout
        self._clock = clock
        # Frequent small sweeps keep each one's write transaction short.
        self._sweep_every = min(page_ttl / 10, 600.0)
        self._next_sweep = 0.0
        self._secret: bytes | None = None
        self._local = threading.local()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._inherited: list[_Connection] = []

    def secret(self) -> bytes:
        if self._secret is None:
            with self._write() as db:
                db.execute(
                    "INSERT OR IGNORE INTO secret (id, key) VALUES (1, ?)",
                    (secrets.token_bytes(32),),
                )
                (self._secret,) = db.execute("SELECT key FROM secret").fetchone()
        return self._secret

    def lock(self, page_id: str, lease: float) -> str | None:
        now = self._clock()
        owner = secrets.token_hex(8)
        with self._write() as db:
            held = db.execute(
                "SELECT pid, host, expires FROM leases WHERE page_id = ?", (page_id,)
            ).fetchone()
            if held is not None and held[2] > now and _alive(held[0], held[1]):
                return None
            db.execute(
                "INSERT OR REPLACE INTO leases (page_id, owner, pid, host, expires)"
                " VALUES (?, ?, ?, ?, ?)",
                (page_id, owner, os.getpid(), _HOST, now + lease),
            )
        return owner

    def unlock(self, page_id: str, owner: str) -> None:
        with self._write() as db:
            db.execute(
                "DELETE FROM leases WHERE page_id = ? AND owner = ?", (page_id, owner)
            )

    def load(self, page_id: str) -> tuple[PageRecord | None, Mail]:
        params = {"page_id": page_id, "cutoff": self._clock() - self.page_ttl}
        with self._read() as db:
            row = db.execute(
                "SELECT record FROM pages WHERE id = :page_id AND touched >= :cutoff",
                params,
            ).fetchone()
            inbox = db.execute(
                "SELECT id, commands FROM messages WHERE kind = 'page'"
                " AND name = :page_id AND created >= :cutoff ORDER BY id",
                params,
            ).fetchall()
            groups = db.execute(_LOAD_GROUPS, params).fetchall()
        record = PageRecord(**json.loads(row[0])) if row else None
        mail = Mail(inbox=[(number, json.loads(text)) for number, text in inbox])
        for group, number, text in groups:
            messages = mail.groups.setdefault(group, [])
            if number is not None:
                messages.append((number, json.loads(text)))
        return record, mail

    def save(self, page_id: str, owner: str, changes: Changes) -> None:
        now = self._clock()
        with self._write() as db:
            released = db.execute(
                "DELETE FROM leases WHERE page_id = ? AND owner = ?", (page_id, owner)
            )
            if released.rowcount == 0:
                raise LockLost(page_id)
            db.execute(
                "INSERT OR REPLACE INTO pages (id, record, touched) VALUES (?, ?, ?)",
                (page_id, _dumps(dataclasses.asdict(changes.record)), now),
            )
            db.execute(
                "DELETE FROM messages WHERE kind = 'page' AND name = ? AND id <= ?",
                (page_id, changes.inbox_upto),
            )
            self._update_memberships(db, now, page_id, changes)
            for target, commands in changes.pushes:
                self._append(db, now, "page", target, commands)
            for group, commands in changes.publishes:
                self._append(db, now, "group", group, commands)

    def push(self, page_id: str, commands: list[Command]) -> None:
        with self._write() as db:
            self._append(db, self._clock(), "page", page_id, commands)

    def publish(self, group: str, commands: list[Command]) -> None:
        with self._write() as db:
            self._append(db, self._clock(), "group", group, commands)

    def join(self, page_id: str, group: str) -> None:
        now = self._clock()
        with self._write() as db:
            self._touch_memberships(db, now, page_id)
            db.execute(_JOIN, {"page_id": page_id, "group": group, "now": now})

    def leave(self, page_id: str, group: str) -> None:
        with self._write() as db:
            db.execute(
                "DELETE FROM memberships WHERE page_id = ? AND group_name = ?",
                (page_id, group),
            )

    def close(self) -> None:
        """Close this process's connections; each thread opens a new one on next use."""
        for db in list(self._connections):
            if db.pid == os.getpid():
                db.close()

    def _update_memberships(
        self, db: _Connection, now: float, page_id: str, changes: Changes
    ) -> None:
        self._touch_memberships(db, now, page_id)
        # An UPDATE cannot resurrect a membership that was left meanwhile.
        db.executemany(
            "UPDATE memberships SET cursor = ? WHERE page_id = ? AND group_name = ?",
            [(cursor, page_id, group) for group, cursor in changes.cursors.items()],
        )
        db.executemany(
            "DELETE FROM memberships WHERE page_id = ? AND group_name = ?",
            [(page_id, group) for group in changes.leaves],
        )
        db.executemany(
            _JOIN,
            [{"page_id": page_id, "group": g, "now": now} for g in changes.joins],
        )

    def _touch_memberships(self, db: _Connection, now: float, page_id: str) -> None:
        """Keep the page's memberships alive, except those that expired already."""
        params = {"page_id": page_id, "now": now, "cutoff": now - self.page_ttl}
        db.execute(
            "DELETE FROM memberships WHERE page_id = :page_id AND touched < :cutoff",
            params,
        )
        db.execute(
            "UPDATE memberships SET touched = :now WHERE page_id = :page_id", params
        )

    def _append(
        self, db: _Connection, now: float, kind: str, name: str, commands: list[Command]
    ) -> None:
        db.execute(
            "INSERT INTO messages (kind, name, commands, created) VALUES (?, ?, ?, ?)",
            (kind, name, _dumps(commands), now),
        )

    @contextlib.contextmanager
    def _write(self) -> t.Iterator[_Connection]:
        """A short write transaction, after the occasional sweep."""
        db = self._db()
        # Sweeping first: if it fails, the write it came with has not happened.
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_every
            with self._transaction(db, "BEGIN IMMEDIATE"):
                for statement in _SWEEP:
                    db.execute(statement, {"cutoff": now - self.page_ttl})
        with self._transaction(db, "BEGIN IMMEDIATE"):
            yield db

    @contextlib.contextmanager
    def _read(self) -> t.Iterator[_Connection]:
        """One snapshot for several reads; it never blocks writers."""
        db = self._db()
        with self._transaction(db, "BEGIN"):
            yield db

    @contextlib.contextmanager
    def _transaction(self, db: _Connection, begin: str) -> t.Iterator[None]:
        db.execute(begin)
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
        if db is not None and db.pid != os.getpid():
            # Closing a connection inherited across fork could disturb the
            # parent's locks, so it is kept, unused, instead of collected.
            self._inherited.append(db)
        db = self._local.db = self._connect()
        self._connections.add(db)
        return db

    def _connect(self) -> _Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        # The file holds the secret key: only its owner may read it.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(
            self.path,
            timeout=self.timeout,
            isolation_level=None,
            check_same_thread=False,
            factory=_Connection,
        )
        self._use_wal(db)
        # In WAL mode NORMAL can lose the last commits on power loss, never corrupt.
        db.execute("PRAGMA synchronous = NORMAL")
        self._create_schema(db)
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
        if db.execute("PRAGMA user_version").fetchone()[0] == _SCHEMA_VERSION:
            return
        script = f"{_SCHEMA} PRAGMA user_version = {_SCHEMA_VERSION};"
        try:
            db.executescript(f"BEGIN IMMEDIATE; {script} COMMIT;")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
