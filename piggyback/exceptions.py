"""The exceptions piggyback raises."""

from __future__ import annotations

import re
import typing as t

from werkzeug.http import HTTP_STATUS_CODES

from .commands import redirect_command

_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")


class PiggybackError(Exception):
    """Base class of every piggyback error."""


class HandlerError(PiggybackError):
    """A handler cannot be registered, e.g. its name is taken."""


class OptionError(PiggybackError, ValueError):
    """An option of :class:`~piggyback.Piggyback` is out of range, of the wrong kind, or
    contradicts another one; see :mod:`piggyback.options`.

    :param option: the option's name, e.g. ``"lease"``.
    :param value: the value it was given.
    :param reason: a sentence with the bad value and what is allowed.

    .. versionadded:: 0.1
    """

    def __init__(self, option: str, value: t.Any, reason: str) -> None:
        super().__init__(reason)
        self.option = option
        self.value = value


class LeaseLost(PiggybackError):
    """The owner no longer holds the page's lease; nothing was saved.

    The lease ran out and another request took it over (or it was given back). Raised
    by a store's ``save`` (:class:`piggyback.stores.base.Store`).

    :param page_id: the page.
    """

    def __init__(self, page_id: str) -> None:
        super().__init__(page_id)
        self.page_id = page_id

    def __str__(self) -> str:
        return (
            f"The lease on page {self.page_id!r} is no longer held by this owner;"
            " nothing was saved."
        )


#: The earlier name of :class:`LeaseLost`, kept for code that uses it.
LockLost = LeaseLost


class EventRejected(PiggybackError):
    """An event request that piggyback refuses to run, with the reason the client sees.

    :param reason: a sentence for the client and the log.
    :param code: the protocol's code for the client, e.g. ``"bad_token"``.
    :param status: the HTTP status of the answer.
    """

    code = "bad_request"
    status = 400

    def __init__(self, reason: str, *, code: str | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            if not isinstance(code, str) or not _CODE.match(code):
                raise ValueError(
                    f"An event's rejection code is a lowercase word such as 'forbidden',"
                    f" not {code!r}: a letter, then up to 63 letters, digits or _."
                )
            self.code = code
        if status is not None:
            if not isinstance(status, int) or status not in _ERROR_STATUSES:
                raise ValueError(
                    f"An event's rejection status is a 4xx or 5xx HTTP status, not {status!r}."
                )
            self.status = status


class BadToken(EventRejected):
    """The page token is missing, malformed or forged."""

    code = "bad_token"
    status = 403


class BadSignature(BadToken):
    """The page token is well formed, but its signature is wrong for this browser."""


class PageExpired(EventRejected):
    """The page's token expired, or the store no longer knows the page."""

    code = "expired"
    status = 410


class UnknownHandler(EventRejected):
    """The event names a handler that is not registered."""

    code = "unknown_handler"
    status = 404


class PageBusy(EventRejected):
    """Another request of the same page is still running; the client may retry."""

    code = "busy"
    status = 409


class StaleEvent(EventRejected):
    """The event's sequence number was answered and acknowledged already."""

    code = "stale"
    status = 409


class TooLarge(EventRejected):
    """The request is larger than the configured limit."""

    code = "too_large"
    status = 413


class EventRedirected(EventRejected):
    """The app sends the page to another URL instead of running the event's handler.

    Raised by a ``before_event`` hook (or a host framework's redirect response, e.g. to
    its login view): the handler does not run and nothing is committed; the answer is
    one batch whose one command is the redirect.

    :param url: where the page goes: http, https or relative, as for ``page.redirect``.
    :param reason: a sentence for the log.

    .. versionadded:: 0.1
    """

    code = "redirect"
    status = 303

    def __init__(self, url: str, reason: str | None = None) -> None:
        command = redirect_command(url)  # checked as page.redirect() checks it
        super().__init__(reason or f"The app sent the page to {url!r}.")
        self.url = url
        #: The command the answer carries.
        self.command = command


_ERROR_STATUSES = frozenset(code for code in HTTP_STATUS_CODES if 400 <= code <= 599)


def rejection_code(status: int) -> str:
    """The rejection code for an HTTP status: 403 is ``forbidden``, 401 ``unauthorized``.

    .. code-block:: python

        rejection_code(404) == "not_found"
    """
    words = re.findall(r"[a-z0-9]+", HTTP_STATUS_CODES.get(status, "error").lower())
    return "_".join(words) or "error"
