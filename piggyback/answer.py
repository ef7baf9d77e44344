"""Answering one event: the page's lease, exactly-once, delivery, one commit.

The steps, for a request carrying sequence number ``seq`` and acknowledgement ``ack``:

1. Take the page's lease (:func:`~piggyback.lease.lease`), so one page's events run one
   at a time; it is saved or released exactly once, whatever happens.
2. A page that was ended, that fell too far behind or whose data is damaged is told it
   expired; what it kept and what waits for it are dropped.
3. ``seq`` at or below the last answered one is a retry: answer the stored batches
   again, run nothing.
4. Otherwise collect the out-of-band mail, run the handler through the runner, which
   reports an :class:`~piggyback.runner.Outcome` (headers for the answer, or the app's
   refusal: then nothing is committed), and commit the new sequence number, state,
   sends and answered :class:`~piggyback.reply.Batch` together. Batches stay stored
   until the client acknowledges them, so a lost answer is redelivered.

Every outcome, a refusal included, is a :class:`Result`: the reply, its document, the
HTTP status and headers. A poll of a young page (its token is young, so its data is
fresh in the store) that finds nothing waiting skips all of it: one read, no lease.
What a page queues while it renders commits through the same lease (:meth:`Answerer.keep`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import typing as t
from dataclasses import dataclass
from dataclasses import field

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
from .hooks import guard
from .jsonwriter import writer
from .lease import DEFAULT_LEASE
from .lease import DEFAULT_WAIT
from .lease import Lease
from .lease import lease
from .limits import MAX_UNACKED
from .limits import MAX_WAITING
from .page import Page
from .reply import Batch
from .reply import Header
from .reply import Reply
from .runner import Outcome
from .runner import run_directly
from .runner import Runner
from .runner import runner_outcome
from .script import answer_document
from .stores.base import Changes
from .stores.base import LeaseLost
from .stores.base import Mail
from .stores.base import Message
from .stores.base import PageRecord
from .stores.base import Store

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .hooks import Hook
    from .registry import Handler

logger = logging.getLogger("piggyback")

__all__ = ["MAX_UNACKED", "MAX_WAITING", "Answerer", "Result", "refused"]

#: Deletes a whole inbox: every message id is below it.
_ALL = 2**62
#: The sequence number an ended page's record keeps: above any an event may carry, so
#: no handler of the page can ever run again (see :meth:`~piggyback.PageHandle.expire`).
ENDED_SEQ = MAX_SEQ + 1
#: Writes ``page.state`` as ``json.dumps(state, allow_nan=False)`` does, to measure it.
_STATE_JSON = writer(json.JSONEncoder(allow_nan=False))


@dataclass
class Result:
    """What answering one event gives the endpoint, whatever the outcome.

    The document is written before anything is committed: a reply that cannot be
    written is never stored.

    .. versionadded:: 0.1
    """

    reply: Reply
    #: The answer document (``docs/protocol.md``).
    document: bytes
    #: The CSP ``script-src`` source that allows the document's script.
    script_source: str
    #: The HTTP status: 200 for an answered event, the refusal's status otherwise.
    status: int = 200
    #: Headers for the HTTP answer: the :class:`~piggyback.runner.Outcome`'s, e.g. the
    #: session cookie the host framework set (a replay's: the stored ones).
    headers: list[Header] = field(default_factory=list)
    #: Why the event was refused, or ``None`` when it was answered.
    refusal: EventRejected | None = None


@dataclass
class _Asked:
    """One event as answering sees it."""

    event: Event
    #: The handler to run, or ``None`` for a poll.
    handler: Handler | None
    #: The highest sequence number whose batch the client applied.
    ack: int
    #: The page's token for the client's next request.
    token: str
    #: The event's sequence number (a field, not a property: it is read often).
    seq: int


@dataclass
class Answerer:
    """Answers events against one store.

    :param store: where pages live.
    :param lease: seconds a request may hold a page before another may take it over.
    :param lease_wait: seconds to wait for a busy page's lease before answering ``busy``.
    :param runner: calls the handler; adapters wrap it in their framework's context.
    :param hooks: run before every handler (``@live.before_event``); the list may grow.
    """

    store: Store
    lease: float = DEFAULT_LEASE
    lease_wait: float = DEFAULT_WAIT
    runner: Runner = run_directly
    hooks: t.Sequence[Hook] = ()

    def respond(
        self,
        page_id: str,
        event: Event,
        handler: Handler | None,
        *,
        ack: int,
        token: str,
        young: bool = False,
    ) -> Result:
        """The answer to one event, with ``token`` for the client; a refusal (busy,
        expired, stale, refused by a hook) is a result too, never raised.

        :param page_id: the page the event's verified token names.
        :param event: the event; its ``seq`` is the request's sequence number.
        :param handler: the handler to run, or ``None`` for a poll.
        :param ack: the highest sequence number whose batch the client applied.
        :param token: the page's token for the client's next request.
        :param young: the page's token is young, so its data is fresh in the store: a
            poll that finds nothing waiting is answered from one read, without a lease.

        .. versionadded:: 0.1
        """
        if handler is None and young:
            result = self._read_poll(page_id, event.seq, ack, token)
            if result is not None:
                return result
        try:
            with self._take(page_id) as held:
                return self._answer(held, _Asked(event, handler, ack, token, event.seq))
        except LeaseLost:
            return refused(event.seq, PageBusy("The page's request took too long; try again."))
        except PageBusy as busy:
            return refused(event.seq, busy)

    def keep(self, page: Page) -> None:
        """Commit what a page queued while it rendered (state, commands, groups), through
        the page's lease as an event commits; usually there is nothing to commit.

        Its commands wait in its inbox for its first event. A page whose first event
        committed already keeps that event's record (its state is newer).

        .. versionadded:: 0.1
        """
        if not (page.state or page.commands or page.memberships):
            return
        joins, leaves = page.group_changes()
        try:
            with self._take(page.id) as held:
                record = held.record
                if record is None or record.damaged:
                    record = PageRecord(state=page.state)
                pushes = [(page.id, page.commands)] if page.commands else []
                held.save(Changes(record=record, pushes=pushes, joins=joins, leaves=leaves))
        except (PageBusy, LeaseLost):
            logger.warning("Page %s was busy while it rendered; what it queued is lost.", page.id)

    def _take(self, page_id: str) -> Lease:
        return lease(self.store, page_id, seconds=self.lease, wait=self.lease_wait)

    def _answer(self, held: Lease, asked: _Asked) -> Result:
        """The answer, under the page's lease: saved when the event commits."""
        record, mail, seq = held.record, _for_page(held.mail, held.page_id), asked.seq
        if _ended(record) or _expiring(mail):
            return self._end(held, record, mail, seq)
        if record is None:
            if asked.ack > 0:
                return refused(seq, PageExpired(_UNKNOWN))
            record = PageRecord()
        unacked = _unacked(record, asked.ack)
        why = _why_expired(held.page_id, record, mail, seq, unacked)
        if why is not None:
            return self._end(held, record, mail, seq, why)
        if seq <= record.seq:
            return _replay(asked, unacked)
        return self._run(held, record, mail, asked, unacked)

    def _read_poll(self, page_id: str, seq: int, ack: int, token: str) -> Result | None:
        """Answer a poll that finds nothing waiting, or ``None`` if it needs the lease.

        Nothing is stored for the poll's sequence number: a retry is simply read again,
        and the next event commits as usual (gaps are allowed).
        """
        record, mail = self.store.load(page_id)
        if _ended(record):
            return refused(seq, PageExpired(_ENDED))
        if mail.inbox or any(mail.groups.values()) or mail.damaged:
            return None
        if record is None:
            if ack > 0:
                return refused(seq, PageExpired(_UNKNOWN))
            return _answered(Reply(seq, [], None, token))  # positional: keywords cost more
        if seq <= record.seq or record.damaged:
            return None
        return _answered(Reply(seq, _unacked(record, ack), None, token))

    def _end(
        self, held: Lease, record: PageRecord | None, mail: Mail, seq: int, why: str = ""
    ) -> Result:
        """End the page and say it expired: the first time, drop what it kept and what
        waits for it, and leave its groups. No later event of it runs; the client reloads
        it (a new page). ``why`` is empty when the app ended it (``expire()``).
        """
        if not _ended(record):
            ended = PageRecord(seq=ENDED_SEQ)
            held.save(Changes(record=ended, inbox_upto=_ALL, leaves=sorted(mail.groups)))
            logger.info("Page %s ended: %s.", held.page_id, why or "the app ended it")
        return refused(seq, PageExpired(f"{why}; reload it." if why else _ENDED))

    def _run(
        self, held: Lease, record: PageRecord, mail: Mail, asked: _Asked, unacked: list[Batch]
    ) -> Result:
        """Deliver the mail and run the handler; commit it all, or nothing if refused.

        :param unacked: the record's batches the client has not acknowledged.
        """
        # Classes are called with positional arguments here: keywords cost more.
        seq, page = asked.seq, Page(held.page_id, record.state)  # the store's fresh copy
        asked.event.environ["piggyback.page"] = page
        changes = Changes(PageRecord(seq, record.state))
        batch = Batch(seq, _deliver(mail, changes))
        if asked.handler is not None:
            ran = self._call(asked.handler, page, asked.event, changes, mail)
            if isinstance(ran, str):
                batch.error = ran
                # The handler may have changed the state it was given in place.
                changes.record.state = self._stored_state(held.page_id)
            elif ran.refusal is not None:  # nothing is committed
                return _not_run(asked, unacked, ran.refusal, list(ran.headers))
            else:
                _add_run(batch, page, ran, asked.event)
        batch.poll = page.poll_interval
        changes.record.batches = [*unacked[-(MAX_UNACKED - 1) :], batch]
        reply = Reply(seq, changes.record.batches, batch.poll, asked.token)
        result = _answered(reply, batch.headers)  # what cannot be written is not stored
        held.save(changes)
        return result

    def _stored_state(self, page_id: str) -> dict[str, t.Any]:
        record, _ = self.store.load(page_id)  # under our lease: unchanged since
        return {} if record is None else record.state

    def _call(
        self, handler: Handler, page: Page, event: Event, changes: Changes, mail: Mail
    ) -> Outcome | str:
        """Run the handler; keep its effects in ``changes`` and return its outcome when
        it succeeded; else keep none, and return its outcome if the app refused the
        event, or why it failed."""
        sender = Sender(page, frozenset(mail.groups))
        token = current_sender.set(sender)
        try:
            guarded = guard(self.hooks, handler) if self.hooks else handler  # most have none
            ran = self.runner(guarded, page, event)
            ran = runner_outcome(ran, event)
            if ran.refusal is not None:
                return ran
            # The state must be JSON, and small: fail here, where the handler is named.
            if page.state != {}:  # many handlers keep none: nothing to measure
                limits.check_state(_STATE_JSON(page.state))
            joins, leaves = page.group_changes()
            if joins:
                limits.check_memberships(len((mail.groups.keys() | set(joins)) - set(leaves)))
        except EventRejected as refusal:  # by a hook or the handler
            return Outcome(refusal=refusal)
        except limits.TooMuchOutput:
            logger.exception("The handler %r went over a limit (page %s).", event.handler, page.id)
            return limits.TOO_MUCH_OUTPUT
        except Exception:
            logger.exception("The handler %r failed (page %s).", event.handler, page.id)
            return "The handler failed; the server logged the error."
        finally:
            current_sender.reset(token)
        changes.record.state = page.state
        changes.pushes, changes.publishes = sender.pushes, sender.publishes
        changes.joins, changes.leaves = joins, leaves
        return ran


_ENDED = "The app ended this page (e.g. at logout); reload it."
_UNKNOWN = "The server no longer knows this page; reload it."


def _answered(reply: Reply, headers: list[Header] | None = None) -> Result:
    document, source = answer_document(reply.for_client())
    return Result(reply, document, source, 200, list(headers or []))


def refused(seq: int | None, refusal: EventRejected, headers: list[Header] | None = None) -> Result:
    """The answer to a refused event: its reason and code, no batches; ``headers``
    are the app's (e.g. the session cookie its host framework set meanwhile)."""
    reply = Reply(seq, code=refusal.code, error=refusal.reason)
    document, source = answer_document(reply.for_client())
    return Result(reply, document, source, refusal.status, headers or [], refusal)


def _add_run(batch: Batch, page: Page, ran: Outcome, event: Event) -> None:
    """Add what a handler that succeeded gave to its batch: its commands, and the
    headers of its outcome (e.g. a session cookie), replayed to the same requester only."""
    batch.commands.extend(page.commands)
    if ran.headers:
        batch.headers = list(ran.headers)
        batch.requester = _requester(event.environ)


def _not_run(
    asked: _Asked, unacked: list[Batch], refusal: EventRejected, headers: list[Header]
) -> Result:
    """The answer to an event the app refused to run: a redirect sends the page
    elsewhere (not stored, so a retry asks again); anything else is a refusal."""
    if not isinstance(refusal, EventRedirected):
        return refused(asked.seq, refusal, headers)
    batches = [*unacked, Batch(asked.seq, [refusal.command])]
    return _answered(Reply(asked.seq, batches, token=asked.token), headers)


def _replay(asked: _Asked, batches: list[Batch]) -> Result:
    """The stored answer again, for a retry (``batches``: the unacknowledged ones); its
    headers only to the same requester."""
    seq = asked.seq
    own = next((b for b in batches if b.seq == seq), None)
    if own is None:  # the page's own sequence numbers are none of the sender's business
        why = f"The event {seq} was answered already, and its answer is no longer kept."
        return refused(seq, StaleEvent(why))
    mine = own.headers and own.requester == _requester(asked.event.environ)
    reply = Reply(seq, batches, poll=own.poll, token=asked.token)
    return _answered(reply, own.headers if mine else [])


def _unacked(record: PageRecord, ack: int) -> list[Batch]:
    return [batch for batch in record.batches if batch.seq > ack]


def _ended(record: PageRecord | None) -> bool:
    return record is not None and record.seq == ENDED_SEQ


def _expiring(mail: Mail) -> bool:
    """Whether ``expire()`` was sent to the page, or to one of its groups."""
    if not (mail.inbox or mail.groups):  # most events: nothing waits
        return False
    return any(EXPIRE in commands for commands in _waiting(mail))


def _for_page(mail: Mail, page_id: str) -> Mail:
    """``mail`` as the page receives it: a group message that leaves the page out is
    empty (still read, so that the page's cursor moves past it), and no message keeps
    its marker (:data:`~piggyback.handles.SKIP`)."""
    if not mail.groups:  # most pages are in none
        return mail
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


def _count(mail: Mail) -> int:
    if not mail.groups:  # most pages are in none
        return len(mail.inbox)
    return len(mail.inbox) + sum(map(len, mail.groups.values()))


def _why_expired(
    page_id: str, record: PageRecord, mail: Mail, seq: int, unacked: list[Batch]
) -> str | None:
    """Why the page must be told it expired (damaged, or too far behind to be answered
    in bounds), or ``None``; ``unacked``: the record's batches the client has not
    acknowledged."""
    if record.damaged or mail.damaged:
        logger.error("Page %s has damaged data in the store; it is told it expired.", page_id)
        return "This page's stored data is damaged"
    return None if seq <= record.seq else _too_far_behind(unacked, mail)


def _too_far_behind(unacked: list[Batch], mail: Mail) -> str | None:
    """Why answering the page would go over a limit, or ``None`` if it would not."""
    count = _count(mail)
    if count > MAX_WAITING:
        return f"More than {MAX_WAITING} commands waited for this page"
    if unacked and limits.size([b.for_client() for b in unacked]) > limits.MAX_UNACKED_BYTES:
        return (
            f"This page did not acknowledge more than {limits.MAX_UNACKED_BYTES:,} bytes of answers"
        )
    if count and limits.size(_waiting(mail)) > limits.MAX_MAIL_BYTES:
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
