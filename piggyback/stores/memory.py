"""An in-process store: for tests and single-process servers.

Nothing is shared between processes, so under ``gunicorn -w 4`` use the SQLite default.
Records and commands are kept as JSON text: reading one back gives the caller new
objects, which costs far less than deep copies.
"""

from __future__ import annotations

import bisect
import itertools
import secrets
import threading
import time
import typing as t

from .base import add_message
from .base import Changes
from .base import checked_page_ttl
from .base import Command
from .base import DEFAULT_PAGE_TTL
from .base import dump_record
from .base import dumps
from .base import keep_oldest
from .base import LeaseLost
from .base import load_record
from .base import Mail
from .base import Message
from .base import PageRecord
from .base import READ_LIMIT
from .base import Store
from .base import sweep_interval

#: A stored message: when it was sent, its id, its commands as JSON.
_Entry = tuple[float, int, str]


class MemoryStore(Store):
    """Keeps everything in dictionaries guarded by one lock.

    :param page_ttl: seconds after its last use that a page is forgotten.
    :param clock: returns the current time in seconds; for tests.
    """

    def __init__(
        self,
        *,
        page_ttl: float = DEFAULT_PAGE_TTL,
        clock: t.Callable[[], float] = time.time,
    ) -> None:
        self.page_ttl = checked_page_ttl(page_ttl)
        self._clock = clock
        self._mutex = threading.Lock()
        self._secret = secrets.token_bytes(32)
        self._ids = itertools.count(1)
        self._owners = itertools.count(1)
        self._records: dict[str, tuple[float, str]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._inboxes: dict[str, list[_Entry]] = {}
        self._logs: dict[str, list[_Entry]] = {}
        self._members: dict[str, dict[str, tuple[float, int]]] = {}
        self._next_sweep = 0.0

    def secret(self) -> bytes:
        return self._secret

    def lock(self, page_id: str, lease: float) -> str | None:
        now = self._clock()
        with self._mutex:
            return self._take_lease(now, page_id, lease)

    def begin(self, page_id: str, lease: float) -> tuple[str, PageRecord | None, Mail] | None:
        now = self._clock()
        with self._mutex:
            owner = self._take_lease(now, page_id, lease)
            if owner is None:
                return None
            return (owner, *self._load(now, page_id))

    def unlock(self, page_id: str, owner: str) -> None:
        with self._mutex:
            if self._leases.get(page_id, ("",))[0] == owner:
                del self._leases[page_id]

    def load(self, page_id: str) -> tuple[PageRecord | None, Mail]:
        now = self._clock()
        with self._mutex:
            return self._load(now, page_id)

    def save(self, page_id: str, owner: str, changes: Changes) -> None:
        now = self._clock()
        record = dump_record(changes.record)
        with self._mutex:
            held = self._leases.get(page_id)
            if held is None or held[0] != owner:
                raise LeaseLost(page_id)
            del self._leases[page_id]
            self._records[page_id] = (now, record)
            if changes.inbox_upto:
                self._take_delivery(page_id, changes.inbox_upto)
            if page_id in self._members or changes.joins:
                self._update_memberships(now, page_id, changes)
            for target, commands in changes.pushes:
                self._push(now, target, commands)
            for group, commands in changes.publishes:
                self._publish(now, group, commands)

    def push(self, page_id: str, commands: list[Command]) -> None:
        with self._mutex:
            self._push(self._clock(), page_id, commands)

    def publish(self, group: str, commands: list[Command]) -> None:
        with self._mutex:
            self._publish(self._clock(), group, commands)

    def join(self, page_id: str, group: str) -> None:
        now = self._clock()
        with self._mutex:
            self._touch(now, page_id)
            self._join(now, page_id, group)

    def leave(self, page_id: str, group: str) -> None:
        with self._mutex:
            self._members.get(page_id, {}).pop(group, None)

    def _take_lease(self, now: float, page_id: str, lease: float) -> str | None:
        held = self._leases.get(page_id)
        if held is not None and held[1] > now:
            return None
        owner = str(next(self._owners))
        self._leases[page_id] = (owner, now + lease)
        return owner

    def _load(self, now: float, page_id: str) -> tuple[PageRecord | None, Mail]:
        self._expire(now)
        # Sweeps are occasional, so what expired since the last one is skipped here.
        cutoff = now - self.page_ttl
        entry = self._records.get(page_id)
        record = load_record(entry[1]) if entry and entry[0] >= cutoff else None
        mail = Mail()
        mail.inbox = _messages(mail, self._inboxes.get(page_id, []), cutoff)
        for group, (touched, cursor) in self._members.get(page_id, {}).items():
            if touched >= cutoff:
                log = self._logs.get(group, [])
                mail.groups[group] = _messages(mail, log, cutoff, after=cursor)
        return record, keep_oldest(mail)

    def _take_delivery(self, page_id: str, upto: int) -> None:
        kept = [e for e in self._inboxes.get(page_id, ()) if e[1] > upto]
        if kept:
            self._inboxes[page_id] = kept
        else:  # an empty list per page that ever got mail would only grow
            self._inboxes.pop(page_id, None)

    def _update_memberships(self, now: float, page_id: str, changes: Changes) -> None:
        members = self._touch(now, page_id)
        for group, cursor in changes.cursors.items():
            if group in members:  # a cursor moves only for a membership that still exists
                members[group] = (now, cursor)
        for group in changes.leaves:
            members.pop(group, None)
        for group in changes.joins:
            self._join(now, page_id, group)

    def _push(self, now: float, page_id: str, commands: list[Command]) -> None:
        entry = (now, next(self._ids), dumps(commands))
        self._inboxes.setdefault(page_id, []).append(entry)

    def _publish(self, now: float, group: str, commands: list[Command]) -> None:
        entry = (now, next(self._ids), dumps(commands))
        self._logs.setdefault(group, []).append(entry)

    def _join(self, now: float, page_id: str, group: str) -> None:
        members = self._members.setdefault(page_id, {})
        # Joining again keeps the cursor (stores/base.py).
        members.setdefault(group, (now, self._head(group)))

    def _touch(self, now: float, page_id: str) -> dict[str, tuple[float, int]]:
        """Keep the page's memberships alive, except those that expired already."""
        cutoff = now - self.page_ttl
        members = self._members.get(page_id, {})
        members = {g: (now, c) for g, (at, c) in members.items() if at >= cutoff}
        self._members[page_id] = members
        return members

    def _head(self, group: str) -> int:
        log = self._logs.get(group)
        return log[-1][1] if log else 0

    def _expire(self, now: float) -> None:
        # A sweep walks everything, so it runs only now and then.
        if now < self._next_sweep:
            return
        self._next_sweep = now + sweep_interval(self.page_ttl)
        cutoff = now - self.page_ttl
        for page_id, (touched, _) in list(self._records.items()):
            if touched < cutoff:
                del self._records[page_id]
        for page_id, (_, expires) in list(self._leases.items()):
            if expires < cutoff:
                del self._leases[page_id]
        for entries in (*self._inboxes.values(), *self._logs.values()):
            entries[:] = [e for e in entries if e[0] >= cutoff]
        for page_id, groups in list(self._members.items()):
            live = {g: c for g, c in groups.items() if c[0] >= cutoff}
            if live:
                self._members[page_id] = live
            else:
                del self._members[page_id]


def _messages(mail: Mail, entries: list[_Entry], cutoff: float, after: int = 0) -> list[Message]:
    """Up to ``READ_LIMIT`` live messages after the id ``after``, decoded: new objects
    for the caller. A damaged one is left out and marks ``mail`` damaged."""
    start = bisect.bisect_right(entries, after, key=lambda entry: entry[1])
    messages: list[Message] = []
    for at, n, text in entries[start : start + READ_LIMIT]:
        if at < cutoff:
            continue
        add_message(mail, messages, n, text)
    return messages
