"""What answering an event produces: batches of commands, and the reply that carries them.

A :class:`Batch` is what one event answered, kept in the page's record until the client
acknowledges it; a :class:`Reply` is what one answer document hands the client. Each has
one method for the client's view (the JSON of ``docs/protocol.md``), read back by
:meth:`Reply.from_client` (the test client's way, :mod:`piggyback.testing`); a batch also
has a stored form, read back by :meth:`Batch.from_stored`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import math
import reprlib
import typing as t
from dataclasses import dataclass
from dataclasses import field

from .commands import checked_commands
from .commands import Command
from .script import read_answer_document

#: An HTTP header, as WSGI writes it.
Header = tuple[str, str]

# Shows a bad value in an error message, shortened: a value nested a thousand deep
# would make repr() raise RecursionError instead of the ValueError.
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 8, 200, 200


@dataclass
class Batch:
    """The commands one event answered: waiting out-of-band ones, then its handler's.

    :param seq: the event's sequence number.
    :param commands: the commands, in the order the page runs them.
    :param error: why the handler failed (it committed nothing), or ``None``.
    :param poll: the poll interval the handler asked for, or ``None``.
    :param headers: headers the handler's runner added (a session's ``Set-Cookie``):
        for the HTTP answer, never for the client.
    :param requester: names the cookies of the request that got ``headers``, so that a
        replay sends them again only to the same browser.
    """

    seq: int
    commands: list[Command] = field(default_factory=list)
    error: str | None = None
    poll: float | None = None
    headers: list[Header] = field(default_factory=list)
    requester: str | None = None

    def for_client(self) -> dict[str, t.Any]:
        """The batch as the client reads it: never the headers or the requester."""
        view: dict[str, t.Any] = {"seq": self.seq, "commands": self.commands}
        if self.error is not None:
            view["error"] = self.error
        if self.poll is not None:
            view["poll"] = self.poll
        return view

    def stored(self) -> dict[str, t.Any]:
        """The batch as a store keeps it (JSON), for :meth:`from_stored`."""
        data = self.for_client()
        if self.headers:
            data["headers"] = self.headers
            data["requester"] = self.requester
        return data

    @classmethod
    def from_stored(cls, data: t.Any) -> Batch | None:
        """The batch :meth:`stored` wrote (the dict-based code before it wrote the same JSON), or
        ``None`` when ``data`` is not one: damaged."""
        if not isinstance(data, dict):
            return None
        seq, commands = data.get("seq"), checked_commands(data.get("commands"))
        error, poll = data.get("error"), data.get("poll")
        if type(seq) is not int or commands is None:
            return None
        if not (error is None or isinstance(error, str)) or not (poll is None or _is_poll(poll)):
            return None
        batch = cls(seq, commands, error, poll)
        if "headers" not in data:  # most batches: the handler's runner set none
            return batch
        headers = data["headers"]
        if not isinstance(headers, list) or not all(_is_header(h) for h in headers):
            return None
        batch.headers = [(name, value) for name, value in headers]
        batch.requester = data.get("requester")
        return batch


def _is_poll(value: t.Any) -> bool:
    """Whether ``value`` is a poll interval: a finite number of seconds from 0."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 <= value < math.inf  # NaN is not
    )


def _is_header(value: t.Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(part, str) for part in value)
    )


@dataclass
class Reply:
    """What one answer document carries (``REPLY`` in ``docs/protocol.md``).

    An answered event's reply holds the batches the client has not acknowledged; a
    refused event's holds only ``code`` and ``error``.

    :param seq: the sequence number of the request this answers.
    :param batches: the unacknowledged batches, in sequence order.
    :param poll: the poll interval the event's handler asked for, or ``None``.
    :param token: the page's token for the client's next request.
    :param code: a refused event's code, e.g. ``"expired"``; ``None`` when answered.
    :param error: a refused event's reason.
    """

    seq: int | None
    batches: list[Batch] = field(default_factory=list)
    poll: float | None = None
    token: str | None = None
    code: str | None = None
    error: str | None = None

    def for_client(self) -> dict[str, t.Any]:
        """The reply as the client reads it: the JSON the answer document carries."""
        if self.code is not None:
            return {"seq": self.seq, "code": self.code, "error": self.error}
        view: dict[str, t.Any] = {
            "seq": self.seq,
            "batches": [batch.for_client() for batch in self.batches],
        }
        if self.poll is not None:
            view["poll"] = self.poll
        if self.token is not None:
            view["token"] = self.token
        return view

    @classmethod
    def from_client(cls, data: t.Any) -> Reply:
        """The reply :meth:`for_client` wrote: ``Reply.from_client(r.for_client()) == r``
        for any reply ``r`` without stored headers.

        :raise ValueError: ``data`` is not such a reply; the message says what is wrong.
        """
        if not isinstance(data, dict):
            raise ValueError(f"Not a reply: a reply is a JSON object, not {_shown(data)}.")
        if "seq" not in data:
            raise ValueError(f"Not a reply: it has no seq: {_shown(data)}.")
        if "code" in data:
            return cls._refused(data)
        seq = data["seq"]
        if type(seq) is not int:
            raise ValueError(f"Not a reply: its seq must be an int, not {_shown(seq)}.")
        poll, token = data.get("poll"), data.get("token")
        if poll is not None and not _is_poll(poll):
            raise ValueError(
                "Not a reply: its poll must be a finite number of seconds from 0,"
                f" not {_shown(poll)}."
            )
        if token is not None and not isinstance(token, str):
            raise ValueError(f"Not a reply: its token must be a str, not {_shown(token)}.")
        return cls(seq, _client_batches(data.get("batches", [])), poll=poll, token=token)

    @classmethod
    def _refused(cls, data: dict[str, t.Any]) -> Reply:
        """A refused event's reply: a ``code``, an ``error`` (a reason, or ``None``) and
        the ``seq`` asked, ``None`` when the request had none that could be read."""
        seq, code, error = data["seq"], data["code"], data.get("error")
        if seq is not None and type(seq) is not int:
            raise ValueError(
                f"Not a reply: a refused reply's seq must be an int or null, not {_shown(seq)}."
            )
        if not isinstance(code, str):
            raise ValueError(f"Not a reply: its code must be a str, not {_shown(code)}.")
        if error is not None and not isinstance(error, str):
            raise ValueError(f"Not a reply: its error must be a str, not {_shown(error)}.")
        return cls(seq, code=code, error=error)

    @classmethod
    def from_document(cls, document: str | bytes) -> Reply:
        """The reply an answer document carries (:func:`~piggyback.script.answer_document`
        wrote it).

        :raise ValueError: ``document`` is not an answer document, or what it carries
            is not a reply; the message says what is wrong.
        """
        return cls.from_client(read_answer_document(document))


def _client_batches(value: t.Any) -> list[Batch]:
    """A reply's ``batches``, each as :meth:`Batch.from_stored` reads it, never with
    headers (the client is never sent them).

    :raise ValueError: ``value`` is not such a list.
    """
    if not isinstance(value, list):
        raise ValueError(f"Not a reply: its batches must be a list, not {_shown(value)}.")
    batches = []
    for index, data in enumerate(value):
        batch = Batch.from_stored(data)
        if batch is None or "headers" in data or "requester" in data:
            raise ValueError(
                f"Not a reply: its batch {index} is not one (an object with an int seq, a"
                " list of commands, each a list, and perhaps a str error and a poll of"
                f" seconds from 0): {_shown(data)}."
            )
        batches.append(batch)
    return batches


def _shown(value: t.Any) -> str:
    return _SHOWN.repr(value)
