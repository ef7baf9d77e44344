"""Running a handler: a runner calls it, and reports what came of it as an :class:`Outcome`.

The default runner, :func:`run_directly`, calls the handler; the framework adapters run it
the way their framework runs a view (:mod:`piggyback.flask`, :mod:`piggyback.django`). A
runner never writes into the event: what it produced (the host's cookies, its refusal or
redirect) comes back as an :class:`Outcome`, and the answerer builds the answer from it.

.. versionadded:: 0.1
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass

from werkzeug.sansio.response import Response

from .exceptions import EventRejected
from .hooks import outcome_of

if t.TYPE_CHECKING:
    from .event import Event
    from .page import Page
    from .registry import Handler
    from .reply import Header

#: Runs a handler as ``runner(handler, page, event)``, e.g. inside the host framework's
#: request context, and returns an :class:`Outcome` (any other value is read by
#: :func:`read_outcome`, as the handler's own result).
Runner = t.Callable[["Handler", "Page", "Event"], t.Any]


@dataclass(frozen=True)
class Outcome:
    """What running one handler produced, for the answerer.

    :param result: what the handler returned.
    :param headers: headers for the event's answer, e.g. the ``Set-Cookie`` of the
        session the host framework saved; kept with the batch, for a replay.
    :param refusal: why the app refused the event (a 4xx, a redirect, a hook's
        :class:`~piggyback.EventRejected`), or ``None``: then nothing is committed.
    """

    result: t.Any = None
    headers: tuple[Header, ...] = ()
    refusal: EventRejected | None = None


def checked_outcome(outcome: Outcome) -> Outcome:
    """``outcome``, if the answer can carry it: its headers are ``Set-Cookie`` headers
    (the only ones an event's answer takes from the app, and replays with the batch),
    whole lines of text; its refusal an :class:`~piggyback.EventRejected` or ``None``.

    :raise TypeError: it is not; the handler failed, and nothing is committed.
    """
    if outcome.refusal is not None and not isinstance(outcome.refusal, EventRejected):
        raise TypeError(f"An outcome's refusal is an EventRejected, not {outcome.refusal!r}.")
    for header in outcome.headers:
        if not _is_cookie_header(header):
            raise TypeError(
                f"An event's answer carries only Set-Cookie headers, as text without line"
                f" breaks, not {header!r:.120}."
            )
    return outcome


def runner_outcome(returned: t.Any, event: Event) -> Outcome:
    """What a runner returned, read (:func:`read_outcome`) and checked
    (:func:`checked_outcome`) in one call."""
    if returned is _NOTHING_RETURNED:  # the usual one, fine as it is
        return returned
    return checked_outcome(read_outcome(returned, event))


def _is_cookie_header(header: t.Any) -> bool:
    if not isinstance(header, tuple) or len(header) != 2:
        return False
    name, value = header
    return (
        isinstance(name, str)
        and name.lower() == "set-cookie"
        and isinstance(value, str)
        and not _BREAKS.search(value)
    )


_BREAKS = re.compile("[\r\n\x00]")
# Outcomes are frozen, so every handler that returns nothing can share one (making one
# costs more than a microsecond).
_NOTHING_RETURNED = Outcome()


def run_directly(handler: Handler, page: Page, event: Event) -> Outcome:
    """Call the handler: the runner when no framework adapter provides one."""
    return read_outcome(handler(page, event), event)


def read_outcome(returned: t.Any, event: Event) -> Outcome:
    """What a runner's (or a handler's) return value means: an :class:`Outcome` as it
    is; a werkzeug response its ``Set-Cookie`` headers and the refusal or redirect its
    status stands for (:func:`~piggyback.hooks.outcome_of`); anything else the
    handler's result.
    """
    if returned is None:  # most handlers return nothing
        return _NOTHING_RETURNED
    if isinstance(returned, Outcome):
        return returned
    if not isinstance(returned, Response):
        return Outcome(returned)
    cookies = tuple(("Set-Cookie", value) for value in returned.headers.getlist("Set-Cookie"))
    refusal = outcome_of(returned.status_code, returned.headers.get("Location"), event)
    return Outcome(None, cookies, refusal)
