"""Django: handlers that get an ``HttpRequest`` with a session and a user.

.. code-block:: python

    # wsgi.py
    from django.core.wsgi import get_wsgi_application
    import piggyback.django

    application = live = piggyback.django.wrap(get_wsgi_application())

    @live.handler
    def increment(page, event):
        request = event.host_request  # a django.http.HttpRequest
        request.session["n"] = request.session.get("n", 0) + 1
        page.set_text("count", f"{request.session['n']} ({request.user})")

Each event is a Django request of its own: ``request_started`` and
``request_finished`` are sent around it, so database connections are reset and closed
as after a view, and its ``HttpRequest`` passes through the session and authentication
middleware (or the ones given) with the handler as the innermost view. Session
changes reach the browser with the event's answer.

Only the middleware's ``process_request`` and ``process_response`` parts run (a
middleware's ``__call__``); ``process_view`` and ``process_exception`` do not, so
``CsrfViewMiddleware`` has no say: piggyback refuses cross-site events itself. The body
of an event request has already been read by piggyback: a handler reads a submitted
form from ``event.form`` and ``event.files``, not ``request.POST``.
"""

from __future__ import annotations

import typing as t

from django.core import signals  # type: ignore[import-untyped]
from django.core.handlers.wsgi import get_script_name  # type: ignore[import-untyped]
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse  # type: ignore[import-untyped]
from django.urls import set_script_prefix  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

from .middleware import Piggyback

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from .event import Event
    from .page import Page
    from .registry import Handler

#: The middleware an event's request passes through by default: what
#: ``request.session`` and ``request.user`` need.
DEFAULT_MIDDLEWARE = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
)


def wrap(
    application: WSGIApplication,
    *,
    middleware: t.Iterable[str] = DEFAULT_MIDDLEWARE,
    **options: t.Any,
) -> Piggyback:
    """Wrap a Django WSGI application in piggyback, with a :class:`DjangoRunner`.

    .. code-block:: python

        application = piggyback.django.wrap(get_wsgi_application())

    :param application: the Django project's WSGI application.
    :param middleware: dotted paths of the middleware an event's request passes
        through, outermost first, as in ``settings.MIDDLEWARE``.
    :param options: keyword options of :class:`~piggyback.Piggyback`.

    .. versionadded:: 0.1
    """
    return Piggyback(application, runner=DjangoRunner(middleware), **options)


class DjangoRunner:
    """Runs each handler as a Django view: the runner :func:`wrap` gives piggyback.

    Sets ``event.host_request`` to the event's ``HttpRequest`` and adds the cookies
    the middleware set (the session's) to the event's answer.

    :param middleware: dotted paths of synchronous middleware the event's request
        passes through, outermost first.

    .. versionadded:: 0.1
    """

    def __init__(self, middleware: t.Iterable[str] = DEFAULT_MIDDLEWARE) -> None:
        self.middleware = tuple(middleware)

    def __call__(self, handler: Handler, page: Page, event: Event) -> t.Any:
        results: list[t.Any] = []

        def view(request: t.Any) -> t.Any:
            results.append(handler(page, event))
            return HttpResponse()

        environ = event.environ
        set_script_prefix(get_script_name(environ))
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            event.host_request = WSGIRequest(environ)
            response = self._through_middleware(view)(event.host_request)
        finally:
            signals.request_finished.send(sender=self.__class__)
        if not results:
            raise RuntimeError(
                f"A middleware answered the event with status {response.status_code}"
                f" instead of running its handler; middleware: {self.middleware!r}."
            )
        event.headers.extend(
            ("Set-Cookie", morsel.OutputString()) for morsel in response.cookies.values()
        )
        return results[0]

    def _through_middleware(self, view: t.Callable[[t.Any], t.Any]) -> t.Any:
        """``view`` wrapped in the middleware, as Django wraps a project's views."""
        get_response = view
        for path in reversed(self.middleware):
            get_response = import_string(path)(get_response)
        return get_response
