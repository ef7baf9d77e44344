"""Hooks that run before handlers, and what a response from one of them means.

A hook is called like a handler, with ``(page, event)``, before it. It lets the event
through by returning ``None``, or refuses it:

- by raising :class:`~piggyback.EventRejected` (the page gets ``piggyback:error`` with
  the code, the answer has the status), :class:`~piggyback.EventRedirected` (the page
  goes to the URL) or :class:`~piggyback.PageExpired` (the page gets
  ``piggyback:expired`` and, by default, reloads);
- or, like Flask's ``before_request``, by returning a response, e.g. the redirect that
  Flask-Login's ``login_manager.unauthorized()`` makes. A response a handler returns is
  read the same way: a redirect sends the page there, a 4xx or 5xx refuses the event.

Either way the handler does not run, nothing is committed, and what waits for the page
stays waiting for its next request.
"""

from __future__ import annotations

import functools
import logging
import typing as t
from urllib.parse import parse_qsl
from urllib.parse import urlencode
from urllib.parse import urlsplit

from werkzeug.wsgi import get_host

from .exceptions import EventRedirected
from .exceptions import EventRejected
from .exceptions import rejection_code
from .registry import Hook as Hook

if t.TYPE_CHECKING:
    from .event import Event
    from .page import Page
    from .registry import Handler

logger = logging.getLogger("piggyback")

F = t.TypeVar("F", bound="Handler")


def guard(hooks: t.Sequence[Hook], handler: Handler) -> Handler:
    """``handler`` behind ``hooks``: each hook runs first; the first that returns a
    response ends the event with it, and the handler does not run.
    """
    if not hooks:
        return handler

    @functools.wraps(handler)
    def guarded(page: Page, event: Event) -> t.Any:
        for hook in hooks:
            result = hook(page, event)
            if result is not None:
                return _response(hook, result)
        return handler(page, event)

    return guarded


def requires(*hooks: Hook) -> t.Callable[[F], F]:
    """Run ``hooks`` before one handler, as ``@live.before_event`` runs them before all.

    .. code-block:: python

        def admin_only(page, event):
            if not current_user.is_admin:
                raise EventRejected("Only admins may do this.", code="forbidden", status=403)

        @live.handler
        @requires(admin_only)
        def delete_everything(page, event): ...

    .. versionadded:: 0.1
    """
    for hook in hooks:
        if not callable(hook):
            raise TypeError(f"requires() takes hooks called as hook(page, event), not {hook!r}.")

    def decorate(handler: F) -> F:
        return t.cast(F, guard(hooks, handler))

    return decorate


def outcome_of(status: int, location: str | None, event: Event) -> EventRejected | None:
    """What a host framework's response to an event means: a redirect with a
    ``Location`` sends the page there; a 4xx or 5xx refuses the event with that status
    and its code (403 is ``forbidden``); anything else lets the event's answer stand.

    A login view's ``next`` parameter made from the request's URL would name the event
    endpoint: it is changed to the page's own URL (from ``Referer``), or dropped.
    """
    if 300 <= status < 400 and location:
        if urlsplit(location).path.rstrip("/") == _endpoint(event).rstrip("/"):
            return _redirect_loop(location)
        location = _back_to_the_page(location, event)
        return EventRedirected(location, f"The app answered {status} to {location!r}.")
    if status < 400:
        return None
    if not 400 <= status <= 599 or rejection_code(status) == "error":
        status = 500 if status >= 500 else 400
    code = rejection_code(status)
    return EventRejected(f"The app refused the event ({status}, {code}).", code=code, status=status)


def _endpoint(event: Event) -> str:
    return str(event.environ.get("SCRIPT_NAME", "") + event.environ.get("PATH_INFO", ""))


def _redirect_loop(location: str) -> EventRejected:
    """A redirect of the event to the event endpoint itself (e.g. Django's
    ``APPEND_SLASH`` or ``SECURE_SSL_REDIRECT``) would take the page to an answer
    document: a middleware that cannot apply to events made it.
    """
    reason = (
        f"The app redirected the event to the event endpoint itself ({location!r}):"
        " a middleware that cannot apply to events answered it."
    )
    logger.warning("%s Leave it out of events (PIGGYBACK_SKIP_MIDDLEWARE in Django).", reason)
    return EventRejected(reason, code="internal_server_error", status=500)


def _back_to_the_page(location: str, event: Event) -> str:
    parts = urlsplit(location)
    endpoint = _endpoint(event)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(urlsplit(value).path == endpoint for _, value in query):
        return location
    page = _page_url(event)
    kept = []
    for name, value in query:
        if urlsplit(value).path != endpoint:
            kept.append((name, value))
        elif page is not None:
            kept.append((name, page))
    return parts._replace(query=urlencode(kept, safe="/")).geturl()


def _page_url(event: Event) -> str | None:
    """The path and query of the page that sent the event, if the browser said."""
    referer = urlsplit(event.environ.get("HTTP_REFERER", ""))
    if referer.netloc != get_host(event.environ) or not referer.path.startswith("/"):
        return None
    return referer.path + (f"?{referer.query}" if referer.query else "")


def _response(hook: Hook, result: t.Any) -> t.Any:
    """A hook's non-``None`` result, which must be a response: anything else would
    skip the handler without a word.
    """
    if hasattr(result, "status_code"):  # werkzeug's, Flask's or Django's
        return result
    raise TypeError(
        f"The before_event hook {getattr(hook, '__qualname__', hook)!s} returned {result!r};"
        " a hook returns None to let the event through, or a response (or raises"
        " EventRejected) to refuse it."
    )
