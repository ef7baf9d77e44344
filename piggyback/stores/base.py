"""The store interface: what must outlive one request.

A store keeps, per page, the last answered sequence number, ``page.state`` and the
batches the client has not acknowledged yet (a :class:`PageRecord`); the page's inbox of
out-of-band commands; its group memberships with a cursor into each group's log; and the
shared secret key. Pages are serialized by a short lease (:meth:`Store.begin`), never
by a long database transaction, so different pages run in parallel.

Everything stored is JSON: commands are JSON arrays, state is a JSON object, and a
record is ``{"seq": n, "state": {...}, "batches": [...]}`` with each batch in the form
:meth:`~piggyback.reply.Batch.stored` writes: ``{"seq": n, "commands": [...]}``, plus
``"error"`` when the handler failed, ``"poll"`` when it set the page's poll interval,
and ``"headers"`` with ``"requester"`` when its runner set headers (a session cookie),
which are sent again only to the same requester.

A store implements storage, not policy. What the three stores share lives here and in
:mod:`piggyback.limits`, and ``tests/test_stores.py`` holds every store to it:

- reading stored text (:func:`load_record`, :func:`load_commands`), which never raises
  on damaged data;
- how many waiting messages a read may return (:data:`READ_LIMIT`);
- the page TTL's check (:func:`checked_page_ttl`) and how often expired data is swept
  (:func:`sweep_interval`, :data:`TRIMMED_PER_SEND`);
- the membership rules, which each store's queries keep in its own language (Python,
  SQL, Lua), each marked there by the rule's name:

  *joining again keeps the cursor*: joining a group the page is in already (by
  :meth:`Store.join` or ``Changes.joins``) changes nothing, so nothing published
  meanwhile is skipped; a page whose membership expired joins afresh, after the
  group's last message;

  *a cursor moves only for a membership that still exists*: ``Changes.cursors`` never
  brings back a group the page left meanwhile.
"""

from __future__ import annotations

import abc
import json
import math
import typing as t
from dataclasses import dataclass
from dataclasses import field

from ..commands import checked_commands as checked_commands
from ..commands import Command as Command
from ..exceptions import LeaseLost as LeaseLost
from ..exceptions import LockLost as LockLost
from ..jsonwriter import writer
from ..limits import MAX_WAITING
from ..reply import Batch

Message = tuple[int, list[Command]]

#: A page, its inbox and its memberships are forgotten this long after their last use.
DEFAULT_PAGE_TTL = 24 * 3600.0

#: A store sweeps what expired at least this many times per page TTL...
SWEEPS_PER_TTL = 10
#: ...and at least this often, in seconds, so that one sweep's work stays small.
MAX_SWEEP_INTERVAL = 600.0
#: The most expired messages a store that trims as it sends (Redis) drops per send:
#: message ids grow with time, so the expired ones are the oldest, and a few per send
#: keep up with the sends that made them.
TRIMMED_PER_SEND = 10

#: The most waiting messages a store reads for one page (``LIMIT`` in its queries): one
#: more than may wait, so that a page with too many is seen to have them, cheaply.
READ_LIMIT = MAX_WAITING + 1

# ``json.dumps`` with any option builds a new encoder on every call.
_WRITE = writer(json.JSONEncoder(separators=(",", ":")))
# json.loads's own scanner, without the Python layers around it (three calls, two
# regex matches): what a store reads it wrote itself, one value with no space around.
_DECODER: t.Any = json.JSONDecoder()
_SCAN: t.Callable[[str, int], tuple[t.Any, int]] = _DECODER.scan_once


@dataclass
class PageRecord:
    """What a page carries from one event to the next."""

    #: The highest sequence number answered so far.
    seq: int = 0
    #: ``page.state``.
    state: dict[str, t.Any] = field(default_factory=dict)
    #: Answered batches not yet acknowledged, in sequence order.
    batches: list[Batch] = field(default_factory=list)
    #: The stored record could not be read (e.g. written by a broken older release).
    damaged: bool = False


@dataclass
class Mail:
    """Out-of-band commands waiting for a page, each message with its id.

    A store returns at most :data:`READ_LIMIT` messages, the oldest; every membership
    of the page is a key of ``groups``, with or without messages.
    """

    inbox: list[Message] = field(default_factory=list)
    #: group name -> the messages after the page's cursor, oldest first.
    groups: dict[str, list[Message]] = field(default_factory=dict)
    #: A waiting message could not be read; it is left out.
    damaged: bool = False


@dataclass
class Changes:
    """Everything one event, or a page's render (:meth:`~piggyback.answer.Answerer.keep`),
    commits atomically when it is done."""

    record: PageRecord
    #: Remove the page's inbox messages with ids up to this one (delivered).
    inbox_upto: int = 0
    #: group name -> the id of the last message delivered from it.
    cursors: dict[str, int] = field(default_factory=dict)
    #: Out-of-band sends made by the handler: (page id, commands).
    pushes: list[tuple[str, list[Command]]] = field(default_factory=list)
    #: Group sends made by the handler: (group name, commands).
    publishes: list[tuple[str, list[Command]]] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)


class Store(abc.ABC):
    """The interface every store implements; see ``tests/test_stores.py``.

    :meth:`lock` and :meth:`unlock` take and give back a page's lease (their names are
    those of 0.1); answering uses them through :func:`piggyback.lease.lease`.
    """

    page_ttl: float = DEFAULT_PAGE_TTL

    @abc.abstractmethod
    def secret(self) -> bytes:
        """The key shared by every process using this store, created on first use."""

    @abc.abstractmethod
    def lock(self, page_id: str, lease: float) -> str | None:
        """Take the page's lease for ``lease`` seconds.

        :return: an owner token for :meth:`save` and :meth:`unlock`, or ``None`` when a
            live owner holds it. A lease whose owner died or ran out is taken over
            (a store may let only the owner's own process take over one that ran
            out, as the SQLite store does); until then, its owner still holds it,
            even past its time.
        """

    def begin(self, page_id: str, lease: float) -> tuple[str, PageRecord | None, Mail] | None:
        """Take the page's lease, as :meth:`lock` does, and load it, as :meth:`load` does.

        What an event does first, in as few round trips as the store allows; this
        default is :meth:`lock` then :meth:`load`.

        :return: the owner token, the record (``None`` for a page the store does not
            know) and the mail; or ``None``, having taken nothing, when a live owner
            holds the lease.

        .. versionadded:: 0.1
        """
        owner = self.lock(page_id, lease)
        if owner is None:
            return None
        try:
            record, mail = self.load(page_id)
        except BaseException:
            self.unlock(page_id, owner)
            raise
        return owner, record, mail

    @abc.abstractmethod
    def unlock(self, page_id: str, owner: str) -> None:
        """Give the lease back without saving; a no-op when ``owner`` lost it."""

    @abc.abstractmethod
    def load(self, page_id: str) -> tuple[PageRecord | None, Mail]:
        """The page's record (``None`` for a page the store does not know) and mail.

        Needs no lease: read while another request holds it, the record and the mail
        are one consistent snapshot, from before or after that request's save.
        """

    @abc.abstractmethod
    def save(self, page_id: str, owner: str, changes: Changes) -> None:
        """Commit ``changes`` atomically and release the lease.

        Cursors move only for memberships that still exist; then the leaves, the joins,
        the pushes and the publishes apply, in that order.

        :raise LeaseLost: ``owner`` no longer holds the lease; nothing was written.
        """

    @abc.abstractmethod
    def push(self, page_id: str, commands: list[Command]) -> None:
        """Queue commands for one page's next request."""

    @abc.abstractmethod
    def publish(self, group: str, commands: list[Command]) -> None:
        """Append commands to a group's log: one write, however many members."""

    @abc.abstractmethod
    def join(self, page_id: str, group: str) -> None:
        """Make the page a member; it receives what is published from now on.

        Joining a group the page is in already changes nothing, so nothing is skipped.
        """

    @abc.abstractmethod
    def leave(self, page_id: str, group: str) -> None:
        """End the page's membership (not a member is fine)."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections; the store may be used again afterwards."""


def checked_page_ttl(page_ttl: t.Any) -> float:
    """``page_ttl``, which every store needs to be a positive, finite number of seconds.

    :raise ValueError: it is not.
    """
    if (
        not isinstance(page_ttl, int | float)
        or isinstance(page_ttl, bool)
        or not 0 < page_ttl < math.inf
    ):
        raise ValueError(
            f"page_ttl must be positive, got {page_ttl!r}: a finite number of seconds,"
            " such as 86400 (a day)."
        )
    return page_ttl


def sweep_interval(page_ttl: float) -> float:
    """Seconds between a store's sweeps of what expired, for pages of ``page_ttl``."""
    return min(page_ttl / SWEEPS_PER_TTL, MAX_SWEEP_INTERVAL)


def dumps(value: t.Any) -> str:
    """Compact JSON text."""
    return _WRITE(value)


def dump_record(record: PageRecord) -> str:
    """A record as JSON text, for :func:`load_record`."""
    # Not dataclasses.asdict: it deep-copies everything before the encoder walks it.
    batches = [batch.stored() for batch in record.batches]
    return _WRITE({"seq": record.seq, "state": record.state, "batches": batches})


def load_record(text: str | bytes) -> PageRecord:
    """The record that :func:`dump_record` wrote, as new objects; a damaged one (not
    such JSON) is ``PageRecord(damaged=True)``."""
    try:
        data = _parse(text)
        seq, state, stored = data["seq"], data["state"], data["batches"]
    except (ValueError, TypeError, KeyError):
        return PageRecord(damaged=True)
    if type(seq) is not int or not isinstance(state, dict) or not isinstance(stored, list):
        return PageRecord(damaged=True)
    batches = [Batch.from_stored(b) for b in stored]
    if any(batch is None for batch in batches):
        return PageRecord(damaged=True)
    return PageRecord(seq=seq, state=state, batches=t.cast(list[Batch], batches))


def _parse(text: str | bytes) -> t.Any:
    """The one JSON value that is ``text``.

    :raise ValueError: it is not, e.g. it was cut short.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        raise ValueError("not a JSON value") from None
    except RecursionError:  # written by no piggyback: damaged
        raise ValueError("nested too deeply") from None
    if end != len(text):
        raise ValueError("more than one JSON value")
    return value


def load_commands(text: str | bytes) -> list[Command] | None:
    """The commands of a stored message, or ``None`` if it is damaged."""
    try:
        return checked_commands(_parse(text))
    except ValueError:
        return None


def add_message(mail: Mail, messages: list[Message], number: int, text: str | bytes) -> None:
    """Append a stored message, decoded, to ``messages``, one of ``mail``'s lists; a
    damaged one is left out and marks ``mail`` damaged."""
    commands = load_commands(text)
    if commands is None:
        mail.damaged = True
    else:
        messages.append((number, commands))


def keep_oldest(mail: Mail, limit: int = READ_LIMIT) -> Mail:
    """``mail`` with only its ``limit`` oldest messages, for stores that read each
    inbox and log up to ``limit`` on its own."""
    ids = sorted(n for n, _ in mail.inbox) + sorted(
        n for log in mail.groups.values() for n, _ in log
    )
    if len(ids) <= limit:
        return mail
    last = sorted(ids)[limit - 1]
    mail.inbox = [m for m in mail.inbox if m[0] <= last]
    mail.groups = {g: [m for m in log if m[0] <= last] for g, log in mail.groups.items()}
    return mail
