"""The exceptions piggyback raises."""

from __future__ import annotations


class PiggybackError(Exception):
    """Base class of every piggyback error."""


class HandlerError(PiggybackError):
    """A handler cannot be registered, e.g. its name is taken."""


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
            self.code = code
        if status is not None:
            self.status = status


class BadToken(EventRejected):
    """The page token is missing, malformed or forged."""

    code = "bad_token"
    status = 403


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
