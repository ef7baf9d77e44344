"""The page: one rendered HTML document in one browser tab, as handlers see it."""

from __future__ import annotations

import typing as t

from . import limits
from .commands import Command
from .commands import Commands
from .tokens import new_page_id


class Page(Commands):
    """A page: its id, its state, and the commands queued for it in this request.

    A handler gets the sending page; while the app renders HTML,
    ``environ["piggyback.page"]`` is the new page. Commands queued while rendering are
    delivered with the page's first event; group changes take effect at once.

    :param id: the page's random id; a new page gets one when it is first asked for.
    :param state: the state kept in the store between the page's requests.
    """

    def __init__(self, id: str | None = None, state: dict[str, t.Any] | None = None) -> None:
        self._id = id
        #: A dict kept in the store between this page's requests; must be JSON.
        self.state: dict[str, t.Any] = {} if state is None else state
        #: The commands queued in this request, in order.
        self.commands: list[Command] = []
        #: Groups joined and left in this request, in order: ``("join", name)``.
        self.memberships: list[tuple[str, str]] = []
        #: The poll interval this request asked for (0 stops polling), or ``None``.
        self.poll_interval: float | None = None
        self._bytes = 0

    @property
    def id(self) -> str:
        """The page's id: 16 random bytes, base64url. Most responses never need one."""
        if self._id is None:
            self._id = new_page_id()
        return self._id

    def _queue(self, command: Command) -> None:
        """Queue a command, within :data:`~piggyback.limits.MAX_COMMAND_BYTES` and, with
        the others, :data:`~piggyback.limits.MAX_BATCH_BYTES`."""
        total = self._bytes + limits.check_command(command)
        limits.check_batch(total)
        self._bytes = total
        self.commands.append(command)

    def join(self, group: str) -> None:
        """Join ``group``: the page receives what ``live.group(group)`` sends from now on.

        :raise piggyback.limits.TooMuchOutput: the page would be in more than
            :data:`~piggyback.limits.MAX_MEMBERSHIPS` groups.
        """
        name = _group_name(group)
        if len(self.memberships) >= limits.MAX_MEMBERSHIPS:  # else too few to matter
            limits.check_memberships(len({*self.group_changes()[0], name}))
        self.memberships.append(("join", name))

    def leave(self, group: str) -> None:
        """Leave ``group``; leaving a group the page is not in is fine."""
        self.memberships.append(("leave", _group_name(group)))

    def group_changes(self) -> tuple[list[str], list[str]]:
        """The groups joined and the groups left in this request; the last word wins."""
        if not self.memberships:
            return [], []
        last = dict((group, op) for op, group in self.memberships)
        joins = [group for group, op in last.items() if op == "join"]
        return joins, [group for group, op in last.items() if op == "leave"]

    def poll(self, seconds: float) -> None:
        """Ask the client to poll every ``seconds`` (0 stops), so out-of-band commands
        arrive without user action. Polls pause while the tab is hidden.
        """
        if (
            not isinstance(seconds, int | float)
            or isinstance(seconds, bool)
            or not 0 <= seconds <= 86400
        ):
            raise ValueError(f"poll() takes seconds from 0 to 86400, not {seconds!r}.")
        self.poll_interval = seconds

    def __repr__(self) -> str:
        return f"<Page {self.id!r}>"


def _group_name(group: t.Any) -> str:
    if not isinstance(group, str) or not group or len(group) > 200:
        raise ValueError(f"A group name must be a str of 1 to 200 characters, not {group!r}.")
    return group
