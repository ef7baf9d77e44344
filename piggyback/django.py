"""Django: each event is a Django request, through the project's middleware like a view.

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

An event runs the steps Django's ``BaseHandler`` runs for a view: ``request_started``;
the project's ``settings.MIDDLEWARE`` (``process_request``, ``__call__`` and
``process_response``); ``process_view`` with a view object that names the handler
(its ``__name__``, ``__module__`` and attributes, so view decorators that set
attributes, such as ``login_not_required`` for ``LoginRequiredMiddleware``, work on a
handler); the handler inside ``transaction.atomic`` when ``ATOMIC_REQUESTS`` is on;
``process_exception``, ``got_request_exception`` and the ``django.request`` log for its
exceptions; ``request_finished``. piggyback's ``before_event`` hooks run inside the
view, just before the handler. Session changes reach the browser with the answer.

What the project answers decides the outcome, as for a view: a redirect (e.g. from
``LoginRequiredMiddleware``) sends the page there; ``PermissionDenied``, ``Http404``
or any 4xx or 5xx response refuses the event with that status and its code
(``forbidden``, ``not_found``); a handler's other exceptions, once Django has handled
them, give the page piggyback's generic error, and no session change is saved.

Two things differ from a view, and why:

- The view is ``csrf_exempt``: piggyback checks that events come from the page's own
  origin and carry its token, and the client sends no CSRF token.
- The body of an event request has already been read by piggyback: a handler reads a
  submitted form from ``event.form`` and ``event.files``, not ``request.POST``.

Middleware that cannot apply to events (async-only middleware, or one that reads the
request body) is left out with one setting, ``PIGGYBACK_SKIP_MIDDLEWARE``: a list of
dotted paths from ``settings.MIDDLEWARE``.
"""

from __future__ import annotations

import functools
import threading
import typing as t

from django.conf import settings  # type: ignore[import-untyped]
from django.core import signals  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.core.exceptions import MiddlewareNotUsed
from django.core.handlers.base import BaseHandler  # type: ignore[import-untyped]
from django.core.handlers.exception import convert_exception_to_response  # type: ignore[import-untyped]
from django.core.handlers.wsgi import get_script_name  # type: ignore[import-untyped]
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse  # type: ignore[import-untyped]
from django.http import HttpResponseBase
from django.urls import ResolverMatch  # type: ignore[import-untyped]
from django.urls import set_script_prefix
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

from .exceptions import EventRejected
from .hooks import outcome_of
from .middleware import Piggyback
from .options import overlay
from .options import SETTINGS
from .runner import Outcome

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from .event import Event
    from .page import Page
    from .registry import Handler

#: Only what ``request.session`` and ``request.user`` need: pass it as ``middleware=``
#: to run events through these two alone.
DEFAULT_MIDDLEWARE = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
)

#: The options of :class:`~piggyback.Piggyback` that ``PIGGYBACK_<NAME>`` settings set.
OPTIONS = SETTINGS


def wrap(
    application: WSGIApplication,
    *,
    middleware: t.Iterable[str] | None = None,
    skip_middleware: t.Iterable[str] | None = None,
    **options: t.Any,
) -> Piggyback:
    """Wrap a Django WSGI application in piggyback, with a :class:`DjangoRunner`.

    .. code-block:: python

        application = piggyback.django.wrap(get_wsgi_application())

    Options not given are read from the settings, as whitenoise reads ``WHITENOISE_*``:
    ``PIGGYBACK_SECRET_KEY``, ``PIGGYBACK_STORE`` (a store or a URL such as
    ``"redis://…"``), ``PIGGYBACK_MOUNT``, ``PIGGYBACK_TIMEOUT``, ``PIGGYBACK_POLL``
    and every other option's name in capitals; ``PIGGYBACK_MIDDLEWARE`` and
    ``PIGGYBACK_SKIP_MIDDLEWARE`` for the two below.

    :param application: the Django project's WSGI application.
    :param middleware: dotted paths of the middleware an event's request passes
        through, outermost first. Default: ``settings.MIDDLEWARE``.
    :param skip_middleware: dotted paths of middleware events leave out.
    :param options: keyword options of :class:`~piggyback.Piggyback`; with the
        settings, they are checked by :class:`~piggyback.options.Options`
        (:class:`~piggyback.exceptions.OptionError` names a bad one).

    .. versionadded:: 0.1
    """
    from_settings = {
        name: getattr(settings, setting)
        for name in (*OPTIONS, "middleware", "skip_middleware")
        if hasattr(settings, setting := f"PIGGYBACK_{name.upper()}")
    }
    given = {"middleware": middleware, "skip_middleware": skip_middleware}
    options |= {name: value for name, value in given.items() if value is not None}
    options = overlay(from_settings, options)  # what is given wins over the settings
    middleware = options.pop("middleware", None)
    runner = DjangoRunner(middleware, skip=options.pop("skip_middleware", None) or ())
    runner.middleware  # noqa: B018 - a wrong PIGGYBACK_SKIP_MIDDLEWARE fails here, not at an event
    return Piggyback(application, runner=runner, **options)


class DjangoRunner:
    """Runs each handler as a Django view: the runner :func:`wrap` gives piggyback.

    Hands the handler the event with its ``HttpRequest`` as ``event.host_request``,
    and reports the cookies the middleware set (the session's) for the event's answer.

    :param middleware: dotted paths of synchronous middleware the event's request
        passes through, outermost first. Default: ``settings.MIDDLEWARE``, read at the
        first event.
    :param skip: dotted paths to leave out of ``settings.MIDDLEWARE``.

    .. versionadded:: 0.1
    """

    def __init__(self, middleware: t.Iterable[str] | None = None, skip: t.Iterable[str] = ()):
        self._middleware = None if middleware is None else tuple(middleware)
        self.skip = tuple(skip)
        self._handler: _EventHandler | None = None
        self._lock = threading.Lock()

    @property
    def middleware(self) -> tuple[str, ...]:
        """The middleware events pass through, outermost first."""
        if self._middleware is not None:
            return self._middleware
        unknown = [path for path in self.skip if path not in settings.MIDDLEWARE]
        if unknown:
            raise ImproperlyConfigured(
                f"PIGGYBACK_SKIP_MIDDLEWARE names {unknown[0]!r}, which is not in"
                f" settings.MIDDLEWARE: {list(settings.MIDDLEWARE)!r}."
            )
        return tuple(path for path in settings.MIDDLEWARE if path not in self.skip)

    def __call__(self, handler: Handler, page: Page, event: Event) -> Outcome:
        environ = event.environ
        view = _View(handler, page, event)
        environ["piggyback.view"] = view.function
        set_script_prefix(get_script_name(environ))
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            request = WSGIRequest(environ)
            response = self._event_handler().get_response(request)
        except BaseException:
            signals.request_finished.send(sender=self.__class__)
            raise
        response._handler_class = self.__class__  # as WSGIHandler does: the signal's sender
        response.close()  # request_finished; closes the request's files
        return view.outcome(response)

    def _event_handler(self) -> _EventHandler:
        if self._handler is None:
            with self._lock:
                if self._handler is None:
                    self._handler = _EventHandler(self.middleware)
        return self._handler


class _EventHandler(BaseHandler):  # type: ignore[misc]
    """Django's request handler, for events: the view is the event's handler."""

    def __init__(self, middleware: tuple[str, ...]) -> None:
        super().__init__()
        self._load(middleware)

    def _load(self, paths: tuple[str, ...]) -> None:
        """The middleware chain, as ``BaseHandler.load_middleware`` builds it for
        synchronous requests, from ``paths`` rather than ``settings.MIDDLEWARE``.
        """
        self._view_middleware: list[t.Any] = []
        self._template_response_middleware: list[t.Any] = []
        self._exception_middleware: list[t.Any] = []
        chain = convert_exception_to_response(self._get_response)
        for path in reversed(paths):
            factory = import_string(path)
            if not getattr(factory, "sync_capable", True):
                raise ImproperlyConfigured(
                    f"The middleware {path!r} is asynchronous only and piggyback runs"
                    " events synchronously: list it in PIGGYBACK_SKIP_MIDDLEWARE."
                )
            try:
                instance = factory(chain)
            except MiddlewareNotUsed:
                continue
            if hasattr(instance, "process_view"):
                self._view_middleware.insert(0, instance.process_view)
            if hasattr(instance, "process_template_response"):
                self._template_response_middleware.append(instance.process_template_response)
            if hasattr(instance, "process_exception"):
                self._exception_middleware.append(instance.process_exception)
            chain = convert_exception_to_response(instance)
        self._middleware_chain = chain

    def resolve_request(self, request: t.Any) -> t.Any:
        view = request.environ["piggyback.view"]
        match = ResolverMatch(view, (), {}, url_name=view.__name__)
        request.resolver_match = match
        return match

    def process_exception_by_middleware(self, exception: Exception, request: t.Any) -> t.Any:
        if isinstance(exception, EventRejected):  # piggyback's own: no middleware is for it
            return HttpResponse(status=exception.status)
        return super().process_exception_by_middleware(exception, request)


class _View:
    """The view for one event, and what became of it."""

    def __init__(self, handler: Handler, page: Page, event: Event) -> None:
        self.event = event
        self.result: t.Any = None
        self.failure: Exception | None = None
        self.refusal: EventRejected | None = None

        @functools.wraps(handler)
        def view(request: t.Any) -> t.Any:
            try:
                result = handler(page, event.for_host(request))
            except EventRejected as refusal:
                self.refusal = refusal
                raise  # out of transaction.atomic, which rolls back
            except Exception as e:
                self.failure = e
                raise
            if isinstance(result, HttpResponseBase):
                return result
            self.result = result
            return HttpResponse()

        view.csrf_exempt = True  # type: ignore[attr-defined]
        #: The view function Django's middleware sees.
        self.function = view

    def outcome(self, response: t.Any) -> Outcome:
        """What came of the event: the handler's result and the response's cookies, or
        the refusal the project's response stands for; a failure is raised again.
        """
        cookies = tuple(
            ("Set-Cookie", morsel.OutputString()) for morsel in response.cookies.values()
        )
        if self.refusal is not None:
            return Outcome(headers=cookies, refusal=self.refusal)
        status = response.status_code
        if self.failure is not None and not 300 <= status < 500:
            raise self.failure  # piggyback's generic error; the session is not saved
        refusal = outcome_of(status, response.get("Location"), self.event)
        return Outcome(self.result, cookies, refusal)
