"""Out-of-band handles: commands for pages from outside their own requests.

``live.page(page_id)`` and ``live.group(name)`` queue commands in the store; they ride
on the page's (each member page's) next request. Sent from inside a handler, they are
committed together with that handler's event, and dropped if the handler raises.

A group send made by a handler reaches its own page at once, when that page is in the
group at the moment of the send: the command joins the handler's own commands, in send
order, and the stored message leaves the page out, so it is never delivered twice.
"""

from __future__ import annotations

import contextvars
import typing as t
from dataclasses import dataclass
from dataclasses import field

from . import limits
from .commands import Command
from .commands import Commands
from .page import _group_name

if t.TYPE_CHECKING:
    from .page import Page
    from .stores.base import Store

#: What :meth:`PageHandle.expire` and :meth:`GroupHandle.expire` queue. The answering
#: code recognises it among a page's mail and ends the page; it never reaches a client.
EXPIRE: Command = ["expire"]

#: The first item of the marker that leads a group message leaving pages out:
#: ``["skip", page_id, ...]``. The answering code drops the message for those pages and
#: the marker for every page; it never reaches a client.
SKIP = "skip"

#: The longest page id a group send may leave out (page ids are 22 characters).
MAX_EXCLUDE_CHARS = 200


@dataclass
class Sender:
    """The event whose handler is running in this context: where its sends go.

    :param page: the sending page.
    :param groups: the page's groups when its event began.
    :param pushes: the handler's sends to pages, committed with its event.
    :param publishes: the handler's sends to groups, committed with its event.
    """

    page: Page
    groups: t.Collection[str]
    pushes: list[tuple[str, list[Command]]] = field(default_factory=list)
    publishes: list[tuple[str, list[Command]]] = field(default_factory=list)

    def is_member(self, group: str) -> bool:
        """Whether the page is in ``group`` now, after its joins and leaves so far."""
        member = group in self.groups
        for op, name in self.page.memberships:
            if name == group:
                member = op == "join"
        return member


#: The event whose handler is running in this context, if any.
current_sender: contextvars.ContextVar[Sender | None] = contextvars.ContextVar(
    "piggyback_sender", default=None
)


class PageHandle(Commands):
    """Queues commands for one page by its id.

    :param store: where the commands wait.
    :param page_id: the page's id (``page.id``).
    """

    def __init__(self, store: Store, page_id: str) -> None:
        if not isinstance(page_id, str) or not page_id:
            raise ValueError(f"A page id must be a non-empty str, not {page_id!r}.")
        self.store = store
        self.id = page_id

    def _queue(self, command: Command) -> None:
        limits.check_command(command, limits.MAX_MESSAGE_BYTES, "out-of-band command")
        sender = current_sender.get()
        if sender is not None:
            sender.pushes.append((self.id, [command]))
        else:
            self.store.push(self.id, [command])

    def expire(self) -> None:
        """End the page: its next request gets ``piggyback:expired``, and it receives
        nothing more (what waits for it is dropped). Sent from a handler, it takes
        effect when that event commits.

        .. versionadded:: 0.1
        """
        self._queue(list(EXPIRE))

    def __repr__(self) -> str:
        return f"<PageHandle {self.id!r}>"


class GroupHandle(Commands):
    """Queues commands for every page in a group: one write, however many members.

    Sent from a handler, a command reaches the handler's own page in the same answer,
    among its own commands in send order, if the page is in the group at that moment
    (joined before, or earlier in the handler); it never arrives there again.

    .. code-block:: python

        live.group("room", exclude=page.id).append("log", line)  # everyone but me

    :param store: where the group's log lives.
    :param name: the group's name.
    :param exclude: the id of a page that is left out: it never receives what this
        handle sends.
    """

    def __init__(self, store: Store, name: str, *, exclude: str | None = None) -> None:
        self.store = store
        self.name = _group_name(name)
        self.exclude = None if exclude is None else _excluded(exclude)

    def _queue(self, command: Command) -> None:
        limits.check_command(command, limits.MAX_MESSAGE_BYTES, "group command")
        sender = current_sender.get()
        if sender is not None and self._reaches(sender):
            sender.page._queue(command)  # counts toward the limits of its batch
        # Whether or not it got the command now, the sending page never gets it from
        # the log: a page joining later in the handler receives only what is sent after.
        self._publish(command, skip_sender=True)

    def _reaches(self, sender: Sender) -> bool:
        """Whether the sending page is one this handle sends to, now."""
        return sender.page.id != self.exclude and sender.is_member(self.name)

    def _publish(self, command: Command, *, skip_sender: bool) -> None:
        """Store ``command`` for the group, after a marker naming the pages it skips;
        sent from a handler, with that handler's event."""
        sender = current_sender.get()
        skipped = {self.exclude} if self.exclude is not None else set()
        if sender is not None and skip_sender:
            skipped.add(sender.page.id)
        message = [[SKIP, *sorted(skipped)], command] if skipped else [command]
        if sender is None:
            self.store.publish(self.name, message)
        else:
            sender.publishes.append((self.name, message))

    def expire(self) -> None:
        """End every page in the group now, e.g. every page of a user at logout:
        each gets ``piggyback:expired`` on its next request and receives nothing more.
        Pages that join the group later are not affected.

        .. code-block:: python

            live.group(f"user:{user.id}").expire()

        ``exclude`` spares one page: ``live.group(f"user:{user.id}",
        exclude=page.id).expire()`` ends the user's other pages. Sent from a handler,
        it ends the handler's own page too, on its next request, unless that is the
        page excluded.

        .. versionadded:: 0.1
        """
        self._publish(list(EXPIRE), skip_sender=False)

    def __repr__(self) -> str:
        if self.exclude is None:
            return f"<GroupHandle {self.name!r}>"
        return f"<GroupHandle {self.name!r} exclude={self.exclude!r}>"


def _excluded(page_id: t.Any) -> str:
    if not isinstance(page_id, str) or not 0 < len(page_id) <= MAX_EXCLUDE_CHARS:
        raise ValueError(
            f"exclude takes a page id (page.id): a str of 1 to {MAX_EXCLUDE_CHARS}"
            f" characters, not {page_id!r}."
        )
    return page_id
