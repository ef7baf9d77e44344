"""Out-of-band handles: commands for pages from outside their own requests.

``live.page(page_id)`` and ``live.group(name)`` queue commands in the store; they ride
on the page's (each member page's) next request. Sent from inside a handler, they are
committed together with that handler's event, and dropped if the handler raises.
"""

from __future__ import annotations

import contextvars
import typing as t

from . import limits
from .commands import Command
from .commands import Commands
from .page import _group_name

if t.TYPE_CHECKING:
    from .stores.base import Changes
    from .stores.base import Store

#: What :meth:`PageHandle.expire` and :meth:`GroupHandle.expire` queue. The answering
#: code recognises it among a page's mail and ends the page; it never reaches a client.
EXPIRE: Command = ["expire"]

#: The changes of the event whose handler is running in this context, if any.
current_changes: contextvars.ContextVar[Changes | None] = contextvars.ContextVar(
    "piggyback_changes", default=None
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
        changes = current_changes.get()
        if changes is not None:
            changes.pushes.append((self.id, [command]))
        else:
            self.store.push(self.id, [command])

    def expire(self) -> None:
        """End the page: its next request gets ``piggyback:expired``, and it receives
        nothing more (what waits for it is dropped). Sent from a handler, it takes
        effect when that event commits.

        .. versionadded:: 0.2
        """
        self._queue(list(EXPIRE))

    def __repr__(self) -> str:
        return f"<PageHandle {self.id!r}>"


class GroupHandle(Commands):
    """Queues commands for every page in a group: one write, however many members.

    :param store: where the group's log lives.
    :param name: the group's name.
    """

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = _group_name(name)

    def _queue(self, command: Command) -> None:
        limits.check_command(command, limits.MAX_MESSAGE_BYTES, "group command")
        changes = current_changes.get()
        if changes is not None:
            changes.publishes.append((self.name, [command]))
        else:
            self.store.publish(self.name, [command])

    def expire(self) -> None:
        """End every page in the group now, e.g. every page of a user at logout:
        each gets ``piggyback:expired`` on its next request and receives nothing more.
        Pages that join the group later are not affected.

        .. code-block:: python

            live.group(f"user:{user.id}").expire()

        .. versionadded:: 0.2
        """
        self._queue(list(EXPIRE))

    def __repr__(self) -> str:
        return f"<GroupHandle {self.name!r}>"
