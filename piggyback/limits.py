"""The size limits: what no client can make the server store, read or send beyond.

One place for every bound and its check, shared by the answerer, the command queues
and all three stores (a store implements storage, not policy). Sizes are bytes of the
command as the answer document writes it (:func:`piggyback.literal`, UTF-8), so a
``<`` counts six bytes (``\\u003c``), as it does on the wire.

========================  =========  ===========================================
limit                     default    past it
========================  =========  ===========================================
``MAX_COMMAND_BYTES``     256 KiB    the helper raises :class:`TooMuchOutput`
``MAX_BATCH_BYTES``       1 MiB      one handler's commands: the handler fails
``MAX_MESSAGE_BYTES``     64 KiB     one ``live.page()``/``live.group()`` send: it raises
``MAX_WAITING``           1,000      messages waiting for a page: it expires
``MAX_MAIL_BYTES``        1 MiB      bytes of them delivered at once: it expires
``MAX_UNACKED``           16         unacknowledged batches kept per page
``MAX_UNACKED_BYTES``     2 MiB      bytes of them: the page expires
``MAX_MEMBERSHIPS``       100        groups one page is in: the join fails
``MAX_STATE_BYTES``       64 KiB     ``page.state`` as JSON: the handler fails
========================  =========  ===========================================

So one answer is at most :data:`MAX_ANSWER_BYTES`, whatever a client sends or withholds.

A group send made by a handler is also one of that handler's commands when its page is
in the group (it reaches the page in the same answer), so it counts toward
``MAX_BATCH_BYTES`` too. A group message that leaves pages out is stored behind a marker
naming them (:data:`piggyback.handles.SKIP`): at most two ids of at most
:data:`~piggyback.handles.MAX_EXCLUDE_CHARS` characters beyond ``MAX_MESSAGE_BYTES``.
The marker is dropped before delivery, so ``MAX_MAIL_BYTES`` counts what pages receive.
"""

from __future__ import annotations

import typing as t

from .exceptions import PiggybackError
from .script import literal

#: One command, encoded.
MAX_COMMAND_BYTES = 256 * 1024
#: The commands one handler queues for its own page in one event, together.
MAX_BATCH_BYTES = 1024 * 1024
#: One out-of-band send (``live.page(id)`` or ``live.group(name)``): its command, encoded
#: (a group message's marker of pages left out comes on top, see above).
MAX_MESSAGE_BYTES = 64 * 1024
#: Out-of-band messages that may wait for one page. A page with more waiting is told it
#: expired; stores read at most one more than this (``LIMIT``), never all of them.
MAX_WAITING = 1000
#: Bytes of waiting messages delivered in one answer; a page with more is told it
#: expired, as one too far behind.
MAX_MAIL_BYTES = 1024 * 1024
#: Unacknowledged batches kept per page; older ones are not redelivered again.
MAX_UNACKED = 16
#: Bytes of unacknowledged batches kept per page. A page whose client does not
#: acknowledge them is told it expired once they pass this, and they are dropped.
MAX_UNACKED_BYTES = 2 * 1024 * 1024
#: Groups one page may be a member of at once.
MAX_MEMBERSHIPS = 100
#: ``page.state`` as JSON: read and written with every event of the page, so it stays
#: small; keep large data in your database and its key in the state.
MAX_STATE_BYTES = 64 * 1024
#: The largest answer document: the kept batches, one more, its mail, and the rest.
MAX_ANSWER_BYTES = MAX_UNACKED_BYTES + MAX_BATCH_BYTES + MAX_MAIL_BYTES + 4096

#: What the page is told (``error`` on its batch) when its handler's output was too big.
TOO_MUCH_OUTPUT = "The handler's output is larger than piggyback's limits; the server logged it."


class TooMuchOutput(PiggybackError, ValueError):
    """A command, a batch, a send or the memberships of a page are over their limit.

    Raised where the command is queued, so the traceback in the log points at it; the
    handler fails, and nothing it did is committed.
    """


def size(value: t.Any) -> int:
    """The bytes ``value`` takes in an answer document."""
    text = literal(value)
    return len(text) if text.isascii() else len(text.encode())  # ASCII: a byte a character


def check_command(command: t.Any, limit: int = MAX_COMMAND_BYTES, what: str = "command") -> int:
    """The size of ``command``, which must be at most ``limit`` bytes.

    :raise TooMuchOutput: it is larger.
    """
    bytes_ = size(command)
    if bytes_ > limit:
        raise TooMuchOutput(
            f"The {what} {_preview(command)} is {bytes_:,} bytes encoded; the limit is"
            f" {limit:,} bytes."
        )
    return bytes_


def check_batch(total: int) -> None:
    """A handler's commands, ``total`` bytes together, must fit in one batch.

    :raise TooMuchOutput: they do not.
    """
    if total > MAX_BATCH_BYTES:
        raise TooMuchOutput(
            f"The handler queued {total:,} bytes of commands; one batch holds at most"
            f" {MAX_BATCH_BYTES:,} bytes."
        )


def check_memberships(count: int) -> None:
    """A page in ``count`` groups must be in at most :data:`MAX_MEMBERSHIPS`.

    :raise TooMuchOutput: it would be in more.
    """
    if count > MAX_MEMBERSHIPS:
        raise TooMuchOutput(
            f"The page would be in {count:,} groups; a page may be in at most"
            f" {MAX_MEMBERSHIPS:,}. Leave some first."
        )


def check_state(text: str) -> None:
    """``page.state``, as the JSON ``text``, must be at most :data:`MAX_STATE_BYTES`.

    :raise TooMuchOutput: it is larger.
    """
    if len(text) > MAX_STATE_BYTES:  # ASCII JSON: one byte a character
        raise TooMuchOutput(
            f"page.state is {len(text):,} bytes as JSON; the limit is {MAX_STATE_BYTES:,}"
            " bytes. Keep large data in your database and its key in the state."
        )


def _preview(command: t.Any) -> str:
    if isinstance(command, list) and command:
        return repr(command[:2])[:80]
    return repr(command)[:80]
