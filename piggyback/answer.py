"""Answering one event: the page's lease, exactly-once, delivery, one commit.

The steps, for a request carrying sequence number ``seq`` and acknowledgement ``ack``:

1. Take the page's lease, so one page's events run one at a time.
2. ``seq`` at or below the last answered one is a retry: answer the stored batches
   again, run nothing.
3. Otherwise collect the out-of-band mail, run the handler, and commit the new sequence
   number, state, sends and answered batch together. Batches stay stored until the
   client acknowledges them, so a lost answer is redelivered, not dropped.

A poll that finds nothing waiting skips all of it: one read, no lease, no write.
"""

from __future__ import annotations

import json
import logging
import time
import typing as t
from dataclasses import dataclass

from .event import Event
from .event import MAX_SEQ
from .exceptions import EventRedirected
from .exceptions import EventRejected
from .exceptions import PageBusy
from .exceptions import PageExpired
from .exceptions import StaleEvent
from .handles import current_changes
from .handles import EXPIRE
from .hooks import check_result
from .hooks import guard
from .page import Page
from .stores.base import Changes
from .stores.base import LockLost
from .stores.base import Mail
from .stores.base import PageRecord
from .stores.base import Store

if t.TYPE_CHECKING:
    from .hooks import Hook
    from .registry import Handler

logger = logging.getLogger("piggyback")

#: Unacknowledged batches kept per page; older ones are not redelivered again.
MAX_UNACKED = 16
#: Out-of-band messages that may wait for one page; a page that fell further behind is
#: better reloaded than replayed, so it is told it expired.
MAX_WAITING = 1000
#: The sequence number an ended page's record keeps: above any an event may carry, so
#: no handler of the page can ever run again (see :meth:`~piggyback.PageHandle.expire`).
ENDED_SEQ = MAX_SEQ + 1

#: Runs a handler, e.g. inside the host framework's request context.
Runner = t.Callable[["Handler", Page, Event], t.Any]


def run_directly(handler: Handler, page: Page, event: Event) -> t.Any:
    return handler(page, event)


@dataclass
class Answerer:
    """Answers events against one store.

    :param store: where pages live.
    :param lease: seconds a request may hold a page before another may take it over.
    :param lock_wait: seconds to wait for a busy page before answering ``busy``.
    :param runner: calls the handler; adapters wrap it in their framework's context.
    :param hooks: run before every handler (``@live.before_event``); the list may grow.
    """

    store: Store
    lease: float = 60.0
    lock_wait: float = 5.0
    runner: Runner = run_directly
    hooks: t.Sequence[Hook] = ()

    def answer(
        self,
        page_id: str,
        seq: int,
        ack: int,
        handler: Handler | None,
        event: Event,
        *,
        quiet: bool = False,
    ) -> dict[str, t.Any]:
        """The reply to one event, as the protocol's JSON object (without a token).

        :param quiet: the page's data is fresh in the store, so a poll that finds
            nothing waiting may be answered from one read, without writing.
        """
        if handler is None and quiet:
            reply = self._quiet_poll(page_id, seq, ack)
            if reply is not None:
                return reply
        owner, record, mail = self._begin(page_id)
        try:
            if _ended(record) or _expiring(mail):
                self._end(page_id, owner, record, mail)
            if record is None:
                if ack > 0:
                    raise PageExpired("The server no longer knows this page; reload it.")
                record = PageRecord()
            if seq <= record.seq:
                self.store.unlock(page_id, owner)
                return _replay(record, seq, ack, event)
            if _count(mail) > MAX_WAITING:
                self._drop_mail(page_id, owner, record, mail, seq)
            changes = self._run(page_id, record, mail, handler, event, ack)
            self.store.save(page_id, owner, changes)
        except LockLost:
            raise PageBusy("The page's request took too long; try again.") from None
        except EventRedirected as redirect:
            self.store.unlock(page_id, owner)
            return _redirected(record, seq, ack, redirect)
        except BaseException:
            self.store.unlock(page_id, owner)
            raise
        return _reply(seq, changes.record.batches)

    def _quiet_poll(self, page_id: str, seq: int, ack: int) -> dict[str, t.Any] | None:
        """Answer a poll that finds nothing waiting, or ``None`` if it needs a write.

        Nothing is stored for the poll's sequence number: a retry is simply read again,
        and the next event commits as usual (gaps are allowed).
        """
        record, mail = self.store.load(page_id)
        if _ended(record):
            raise PageExpired(_ENDED)
        if mail.inbox or any(mail.groups.values()):
            return None
        if record is None:
            if ack > 0:
                raise PageExpired("The server no longer knows this page; reload it.")
            return {"seq": seq, "batches": []}
        if seq <= record.seq:
            return None
        unacked = [b for b in record.batches if b["seq"] > ack]
        return {"seq": seq, "batches": _for_client(unacked)}

    def _begin(self, page_id: str) -> tuple[str, PageRecord | None, Mail]:
        """Take the page's lease and load it, waiting a little while it is busy."""
        deadline = time.monotonic() + self.lock_wait
        pause = 0.002
        while True:
            begun = self.store.begin(page_id, self.lease)
            if begun is not None:
                return begun
            if time.monotonic() + pause > deadline:
                raise PageBusy("Another request of this page is still running.")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _end(self, page_id: str, owner: str, record: PageRecord | None, mail: Mail) -> t.NoReturn:
        """Say the page expired; the first time, make its record remember that it
        ended, and take what waits for it out of the store.
        """
        if not _ended(record):
            changes = Changes(record=PageRecord(seq=ENDED_SEQ), leaves=sorted(mail.groups))
            _deliver(mail, changes)
            self.store.save(page_id, owner, changes)
        raise PageExpired(_ENDED)

    def _drop_mail(
        self, page_id: str, owner: str, record: PageRecord, mail: Mail, seq: int
    ) -> t.NoReturn:
        """Forget what waited for a page that fell too far behind, and say it expired."""
        changes = Changes(record=PageRecord(seq=seq, state=record.state))
        _deliver(mail, changes)
        self.store.save(page_id, owner, changes)
        raise PageExpired(f"More than {MAX_WAITING} commands waited for this page; reload it.")

    def _run(
        self,
        page_id: str,
        record: PageRecord,
        mail: Mail,
        handler: Handler | None,
        event: Event,
        ack: int,
    ) -> Changes:
        page = Page(page_id, state=record.state)  # the store's fresh copy
        event.environ["piggyback.page"] = page
        changes = Changes(record=PageRecord(seq=event.seq, state=record.state))
        batch: dict[str, t.Any] = {"seq": event.seq, "commands": _deliver(mail, changes)}
        if handler is not None:
            error = self._call(handler, page, event, changes)
            if error is None:
                batch["commands"].extend(page.commands)
                if event.headers:  # e.g. a session cookie: sent again with a replay
                    batch["headers"] = event.headers
            else:
                batch["error"] = error
                # The handler may have changed the state it was given in place.
                changes.record.state = self._stored_state(page_id)
        if page.poll_interval is not None:
            batch["poll"] = page.poll_interval
        unacked = [b for b in record.batches if b["seq"] > ack]
        changes.record.batches = [*unacked[-(MAX_UNACKED - 1) :], batch]
        return changes

    def _stored_state(self, page_id: str) -> dict[str, t.Any]:
        record, _ = self.store.load(page_id)  # under our lease: unchanged since
        return {} if record is None else record.state

    def _call(self, handler: Handler, page: Page, event: Event, changes: Changes) -> str | None:
        """Run the handler; keep its effects in ``changes`` on success, else none."""
        sends = Changes(record=changes.record)
        token = current_changes.set(sends)
        try:
            check_result(self.runner(guard(self.hooks, handler), page, event), event)
            json.dumps(page.state, allow_nan=False)  # state must be JSON: fail here
        except EventRejected as refusal:  # by a hook or the host: nothing is committed
            refusal.headers = list(event.headers)
            raise
        except Exception:
            logger.exception("The handler %r failed (page %s).", event.handler, page.id)
            return "The handler failed; the server logged the error."
        finally:
            current_changes.reset(token)
        changes.record.state = page.state
        changes.pushes, changes.publishes = sends.pushes, sends.publishes
        changes.joins, changes.leaves = page.group_changes()
        return None


_ENDED = "The app ended this page (e.g. at logout); reload it."


def _ended(record: PageRecord | None) -> bool:
    return record is not None and record.seq == ENDED_SEQ


def _expiring(mail: Mail) -> bool:
    """Whether ``expire()`` was sent to the page, or to one of its groups."""
    messages = [*mail.inbox, *(m for log in mail.groups.values() for m in log)]
    return any(command == EXPIRE for _, commands in messages for command in commands)


def _redirected(
    record: PageRecord | None, seq: int, ack: int, redirect: EventRedirected
) -> dict[str, t.Any]:
    """The reply that sends the page elsewhere: not stored, so a retry asks again."""
    unacked = [b for b in record.batches if b["seq"] > ack] if record is not None else []
    return _reply(seq, [*unacked, {"seq": seq, "commands": [redirect.command]}])


def _count(mail: Mail) -> int:
    return len(mail.inbox) + sum(map(len, mail.groups.values()))


def _deliver(mail: Mail, changes: Changes) -> list[t.Any]:
    """The waiting commands in send order; marks them delivered in ``changes``."""
    if not (mail.inbox or mail.groups):
        return []
    messages = list(mail.inbox)
    for group, log in mail.groups.items():
        messages.extend(log)
        if log:
            changes.cursors[group] = log[-1][0]
    if mail.inbox:
        changes.inbox_upto = mail.inbox[-1][0]
    messages.sort(key=lambda message: message[0])
    return [command for _, commands in messages for command in commands]


def _replay(record: PageRecord, seq: int, ack: int, event: Event) -> dict[str, t.Any]:
    batches = [b for b in record.batches if b["seq"] > ack]
    own = next((b for b in batches if b["seq"] == seq), None)
    if own is None:
        raise StaleEvent(
            f"The event {seq} is not newer than the last one answered ({record.seq}), and"
            " its answer is no longer kept."
        )
    event.headers[:] = [tuple(header) for header in own.get("headers", [])]
    return _reply(seq, batches)


def _reply(seq: int, batches: list[dict[str, t.Any]]) -> dict[str, t.Any]:
    """The reply for event ``seq``; a retry gets the same one (but for the token).

    The headers stored with a batch are for the HTTP answer, not for the client.
    """
    reply: dict[str, t.Any] = {"seq": seq, "batches": _for_client(batches)}
    own = next(b for b in batches if b["seq"] == seq)
    if "poll" in own:
        reply["poll"] = own["poll"]
    return reply


def _for_client(batches: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    """Batches without the headers stored with them (those are for the HTTP answer)."""
    return [{k: v for k, v in b.items() if k != "headers"} for b in batches]
