"""What answering an event produces: batches of commands, and the reply that carries them.

A :class:`Batch` is what one event answered, kept in the page's record until the client
acknowledges it; a :class:`Reply` is what one answer document hands the client. Each has
one method for the client's view (the JSON of ``docs/protocol.md``), read back by
:meth:`Reply.from_client` (the test client's way, :mod:`piggyback.testing`); a batch also
has a stored form, read back by :meth:`Batch.from_stored`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from dataclasses import field

from .commands import Command
from .script import read_answer_document

#: An HTTP header, as WSGI writes it.
Header = tuple[str, str]


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
        seq, commands = data.get("seq"), data.get("commands")
        if type(seq) is not int or not isinstance(commands, list):
            return None
        batch = cls(seq, commands, data.get("error"), data.get("poll"))
        if "headers" not in data:  # most batches: the handler's runner set none
            return batch
        headers = data["headers"]
        if not isinstance(headers, list) or not all(_is_header(h) for h in headers):
            return None
        batch.headers = [(name, value) for name, value in headers]
        batch.requester = data.get("requester")
        return batch


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

        :raise ValueError: ``data`` is not such a reply.
        """
        if not isinstance(data, dict) or "seq" not in data:
            raise ValueError(f"Not a reply: {data!r:.200}.")
        if "code" in data:
            return cls(data["seq"], code=data["code"], error=data.get("error"))
        batches = [Batch.from_stored(batch) for batch in data.get("batches", ())]
        if None in batches or any(batch.headers for batch in batches if batch is not None):
            raise ValueError(f"Not a reply's batches: {data.get('batches')!r:.200}.")
        return cls(
            data["seq"],
            t.cast(list[Batch], batches),
            poll=data.get("poll"),
            token=data.get("token"),
        )

    @classmethod
    def from_document(cls, document: str | bytes) -> Reply:
        """The reply an answer document carries (:func:`~piggyback.script.answer_document`
        wrote it).

        :raise ValueError: ``document`` is not an answer document.
        """
        return cls.from_client(read_answer_document(document))
