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

import hashlib
import json
import logging
import time
import typing as t
from dataclasses import dataclass

from . import limits
from .event import Event
from .event import MAX_SEQ
from .exceptions import EventRedirected
from .exceptions import EventRejected
from .exceptions import PageBusy
from .exceptions import PageExpired
from .exceptions import StaleEvent
from .handles import current_sender
from .handles import EXPIRE
from .handles import Sender
from .handles import SKIP
from .hooks import check_result
from .hooks import guard
from .limits import MAX_UNACKED
from .limits import MAX_WAITING
from .page import Page
from .script import answer_document
from .stores.base import Changes
from .stores.base import LockLost
from .stores.base import Mail
from .stores.base import Message
from .stores.base import PageRecord
from .stores.base import Store

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .hooks import Hook
    from .registry import Handler

logger = logging.getLogger("piggyback")

__all__ = ["MAX_UNACKED", "MAX_WAITING", "Answer", "Answerer"]

#: Deletes a whole inbox: every message id is below it.
_ALL = 2**62
#: The sequence number an ended page's record keeps: above any an event may carry, so
#: no handler of the page can ever run again (see :meth:`~piggyback.PageHandle.expire`).
ENDED_SEQ = MAX_SEQ + 1


@dataclass
class Answer:
    """An answered event: the reply, and its document, written before anything was
    committed (a reply that cannot be written is never stored)."""

    reply: dict[str, t.Any]
    document: bytes
    #: The CSP ``script-src`` source that allows the document's script.
    script_source: str


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
        token: str,
        quiet: bool = False,
    ) -> Answer:
        """The answer to one event, with ``token`` for the client.

        :param quiet: the page's data is fresh in the store, so a poll that finds
            nothing waiting may be answered from one read, without writing.
        :raise PageExpired: also for a page too far behind (see :mod:`piggyback.limits`)
            or whose stored data is damaged; its backlog is dropped.
        """
        if handler is None and quiet:
            reply = self._quiet_poll(page_id, seq, ack)
            if reply is not None:
                return _written(reply, token)
        owner, record, mail = self._begin(page_id)
        mail = _for_page(mail, page_id)
        try:
            if _ended(record) or _expiring(mail):
                self._end(page_id, owner, record, mail)
            if record is None:
                if ack > 0:
                    raise PageExpired("The server no longer knows this page; reload it.")
                record = PageRecord()
            self._check(page_id, owner, record, mail, seq, ack)
            if seq <= record.seq:
                self.store.unlock(page_id, owner)
                return _written(_replay(record, seq, ack, event), token)
            changes = self._run(page_id, record, mail, handler, event, ack)
            # Written before the commit: what cannot be written is never stored.
            written = _written(_reply(seq, changes.record.batches), token)
            self.store.save(page_id, owner, changes)
        except LockLost:
            raise PageBusy("The page's request took too long; try again.") from None
        except EventRedirected as redirect:
            self.store.unlock(page_id, owner)
            return _written(_redirected(record, seq, ack, redirect), token)
        except BaseException:
            self.store.unlock(page_id, owner)
            raise
        return written

    def _quiet_poll(self, page_id: str, seq: int, ack: int) -> dict[str, t.Any] | None:
        """Answer a poll that finds nothing waiting, or ``None`` if it needs a write.

        Nothing is stored for the poll's sequence number: a retry is simply read again,
        and the next event commits as usual (gaps are allowed).
        """
        record, mail = self.store.load(page_id)
        if _ended(record):
            raise PageExpired(_ENDED)
        if mail.inbox or any(mail.groups.values()) or mail.damaged:
            return None
        if record is None:
            if ack > 0:
                raise PageExpired("The server no longer knows this page; reload it.")
            return {"seq": seq, "batches": []}
        if seq <= record.seq or record.damaged:
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
            changes = Changes(
                record=PageRecord(seq=ENDED_SEQ), inbox_upto=_ALL, leaves=sorted(mail.groups)
            )
            self.store.save(page_id, owner, changes)
        raise PageExpired(_ENDED)

    def _check(
        self, page_id: str, owner: str, record: PageRecord, mail: Mail, seq: int, ack: int
    ) -> None:
        """Expire a page that is damaged, or too far behind to be answered in bounds."""
        if record.damaged or mail.damaged:
            logger.error("Page %s has damaged data in the store; it is told it expired.", page_id)
            self._expire(page_id, owner, record, mail, seq, "This page's stored data is damaged")
        why = None if seq <= record.seq else _too_far_behind(record, mail, ack)
        if why is not None:
            self._expire(page_id, owner, record, mail, seq, why)

    def _expire(
        self, page_id: str, owner: str, record: PageRecord, mail: Mail, seq: int, why: str
    ) -> t.NoReturn:
        """End the page: drop what it kept and what waits for it, leave its groups, and
        say it expired. It receives nothing more; the client reloads it (a new page).
        """
        changes = Changes(
            record=PageRecord(seq=ENDED_SEQ),  # ended: no later event of it ever runs
            inbox_upto=_ALL,
            leaves=sorted(mail.groups),
        )
        self.store.save(page_id, owner, changes)
        logger.info("Page %s expired: %s.", page_id, why)
        raise PageExpired(f"{why}; reload it.")

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
            error = self._call(handler, page, event, changes, mail)
            if error is None:
                batch["commands"].extend(page.commands)
                if event.headers:  # e.g. a session cookie: sent again with a replay,
                    batch["headers"] = event.headers  # to the same requester only
                    batch["requester"] = _requester(event.environ)
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

    def _call(
        self, handler: Handler, page: Page, event: Event, changes: Changes, mail: Mail
    ) -> str | None:
        """Run the handler; keep its effects in ``changes`` on success, else none."""
        sends = Changes(record=changes.record)
        token = current_sender.set(Sender(sends, page, frozenset(mail.groups)))
        try:
            check_result(self.runner(guard(self.hooks, handler), page, event), event)
            # The state must be JSON, and small: fail here, where the handler is named.
            limits.check_state(json.dumps(page.state, allow_nan=False))
            joins, leaves = page.group_changes()
            if joins:
                limits.check_memberships(len((mail.groups.keys() | set(joins)) - set(leaves)))
        except EventRejected as refusal:  # by a hook or the host: nothing is committed
            refusal.headers = list(event.headers)
            raise
        except limits.TooMuchOutput:
            logger.exception("The handler %r went over a limit (page %s).", event.handler, page.id)
            return limits.TOO_MUCH_OUTPUT
        except Exception:
            logger.exception("The handler %r failed (page %s).", event.handler, page.id)
            return "The handler failed; the server logged the error."
        finally:
            current_sender.reset(token)
        changes.record.state = page.state
        changes.pushes, changes.publishes = sends.pushes, sends.publishes
        changes.joins, changes.leaves = joins, leaves
        return None


_ENDED = "The app ended this page (e.g. at logout); reload it."


def _ended(record: PageRecord | None) -> bool:
    return record is not None and record.seq == ENDED_SEQ


def _expiring(mail: Mail) -> bool:
    """Whether ``expire()`` was sent to the page, or to one of its groups."""
    return any(EXPIRE in commands for commands in _waiting(mail))


def _for_page(mail: Mail, page_id: str) -> Mail:
    """``mail`` as the page receives it: a group message that leaves the page out is
    empty (still read, so that the page's cursor moves past it), and no message keeps
    its marker (:data:`~piggyback.handles.SKIP`)."""
    mail.groups = {
        group: [_skipping(message, page_id) for message in log]
        for group, log in mail.groups.items()
    }
    return mail


def _skipping(message: Message, page_id: str) -> Message:
    n, commands = message
    if not commands or commands[0][:1] != [SKIP]:
        return message
    if page_id in commands[0][1:]:
        return n, []
    return n, commands[1:]


def _redirected(
    record: PageRecord | None, seq: int, ack: int, redirect: EventRedirected
) -> dict[str, t.Any]:
    """The reply that sends the page elsewhere: not stored, so a retry asks again."""
    unacked = [b for b in record.batches if b["seq"] > ack] if record is not None else []
    return _reply(seq, [*unacked, {"seq": seq, "commands": [redirect.command]}])


def _count(mail: Mail) -> int:
    return len(mail.inbox) + sum(map(len, mail.groups.values()))


def _too_far_behind(record: PageRecord, mail: Mail, ack: int) -> str | None:
    """Why answering the page would go over a limit, or ``None`` if it would not."""
    if _count(mail) > MAX_WAITING:
        return f"More than {MAX_WAITING} commands waited for this page"
    unacked = [b for b in record.batches if b["seq"] > ack]
    if unacked and limits.size(unacked) > limits.MAX_UNACKED_BYTES:
        return (
            f"This page did not acknowledge more than {limits.MAX_UNACKED_BYTES:,} bytes of answers"
        )
    if _count(mail) and limits.size(_waiting(mail)) > limits.MAX_MAIL_BYTES:
        return f"More than {limits.MAX_MAIL_BYTES:,} bytes of commands waited for this page"
    return None


def _waiting(mail: Mail) -> list[t.Any]:
    """Every waiting command, in no particular order: for measuring."""
    messages = [*mail.inbox, *(m for log in mail.groups.values() for m in log)]
    return [commands for _, commands in messages]


def _requester(environ: WSGIEnvironment) -> str:
    """Names the cookies a request carried, so that headers stored with its answer (a
    session's ``Set-Cookie``) are replayed only to a request carrying the same ones."""
    cookies = environ.get("HTTP_COOKIE", "").encode("utf-8", "surrogatepass")
    return hashlib.sha256(cookies).hexdigest()[:32]


def _written(reply: dict[str, t.Any], token: str) -> Answer:
    reply["token"] = token
    document, source = answer_document(reply)
    return Answer(reply, document, source)


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
    if own is None:  # the page's own sequence numbers are none of the sender's business
        raise StaleEvent(f"The event {seq} was answered already, and its answer is no longer kept.")
    if own.get("requester") == _requester(event.environ):
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
    return [{k: v for k, v in b.items() if k not in _FOR_SERVER} for b in batches]


_FOR_SERVER = frozenset(("headers", "requester"))
