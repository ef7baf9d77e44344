"""Flask: each event goes through the app's request pipeline, as a view would.

.. code-block:: python

    from flask import Flask, session
    from piggyback.flask import FlaskPiggyback

    app = Flask(__name__)
    live = FlaskPiggyback(app)

    @live.handler
    def increment(page, event):
        session["n"] = session.get("n", 0) + 1
        page.set_text("count", session["n"])

A handler runs like a view without routing, in the steps of Flask's
``full_dispatch_request``: ``request_started``; the app's ``url_value_preprocessor``
and ``before_request`` functions (with ``request.endpoint`` and ``view_args`` ``None``:
no URL rule matched, so blueprint functions do not run); piggyback's
``before_event`` hooks; the handler; then ``after_request`` functions, the session
save and ``request_finished``; ``teardown_request`` and ``teardown_appcontext`` when the
context is popped. ``flask.request``, ``session``, ``g``, ``current_app``, ``url_for``
and extensions built on them (Flask-Login's ``current_user``) work, and the cookies of
the finished response (the session's, Flask-Login's remember cookie) reach the
browser with the event's answer.

What the app answers decides the outcome, as for a view:

- a ``before_request`` function, hook or handler that returns a redirect (Flask-Login's
  ``@login_required`` with a ``login_view``) sends the page there;
- ``abort(403)``, any ``HTTPException``, or a response of status 4xx or 5xx refuses
  the event with that status and its code (``forbidden``); the page gets
  ``piggyback:error``, and nothing is committed;
- an exception goes to the app's ``errorhandler`` if it has one for it; if not, Flask
  sends ``got_request_exception`` and logs it with ``app.logger``. Unless the error
  handler answered with a redirect or a 4xx, the page then gets piggyback's
  generic error, and the handler's session changes are not saved.

The body of an event request has already been read by piggyback: a submitted form is
``event.form`` and ``event.files``, and ``flask.request.form`` and ``.files`` are the
same objects; the raw body (``request.get_data()``) is gone.
"""

from __future__ import annotations

import functools
import typing as t
import weakref

from flask import current_app
from flask import Flask
from flask import request_started
from markupsafe import Markup
from werkzeug.wrappers import Response

from . import templates
from .exceptions import EventRejected
from .hooks import outcome_of
from .middleware import Piggyback
from .options import check_names
from .options import overlay
from .options import SETTINGS
from .registry import HandlerDecorator
from .registry import Registry
from .runner import Outcome

if t.TYPE_CHECKING:
    from .event import Event
    from .handles import GroupHandle
    from .handles import PageHandle
    from .hooks import Hook
    from .page import Page
    from .registry import Handler

H = t.TypeVar("H", bound="Hook")

#: The config keys :meth:`FlaskPiggyback.init_app` reads, and the options they set:
#: ``PIGGYBACK_<NAME>`` for every option but ``runner`` and ``registry``.
CONFIG_KEYS = {f"PIGGYBACK_{name.upper()}": name for name in SETTINGS}


class FlaskPiggyback:
    """piggyback for a Flask app, as an extension.

    .. code-block:: python

        live = FlaskPiggyback()

        def create_app():
            app = Flask(__name__)
            live.init_app(app)
            return app

    Handlers may be registered before or after :meth:`init_app`. One extension may be
    initialized for several apps (an app factory called by each test): each app gets
    its own :class:`~piggyback.Piggyback` middleware, configured by its own config,
    and every app runs the extension's handlers.

    :param app: the app to initialize now, if any.
    :param options: keyword options of :class:`~piggyback.Piggyback`, except
        ``runner`` and ``registry``. An app's config overrides them with
        ``PIGGYBACK_<NAME>`` for each option (:data:`CONFIG_KEYS`):
        ``PIGGYBACK_SECRET_KEY``, ``PIGGYBACK_STORE`` (a store URL such as
        ``"memory:"``, or a store), ``PIGGYBACK_MOUNT``, ``PIGGYBACK_TIMEOUT`` and
        ``PIGGYBACK_POLL`` (seconds), ``PIGGYBACK_LEASE``, and so on. Together they are
        checked by :class:`~piggyback.options.Options` when an app is initialized.
    :raise TypeError: an option is not one of :class:`~piggyback.Piggyback`'s.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Flask | None = None, **options: t.Any) -> None:
        if "runner" in options:
            raise TypeError(
                "FlaskPiggyback runs handlers in Flask's request context itself; it"
                " takes no 'runner' option."
            )
        check_names(options, allowed=SETTINGS)
        self.options = options
        #: The handlers of every app this extension serves.
        self.registry = Registry()
        # Weak both ways: an app holds its middleware (app.wsgi_app) and the middleware
        # holds its app, so a strong reference to either would keep every app that a
        # test's factory made alive for good.
        self._middlewares: weakref.WeakKeyDictionary[Flask, weakref.ref[Piggyback]]
        self._middlewares = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Wrap ``app.wsgi_app`` in piggyback's middleware.

        :raise RuntimeError: the app has piggyback already.
        """
        if "piggyback" in app.extensions:
            raise RuntimeError(
                f"The app {app.name!r} is already initialized for piggyback;"
                " use its app.extensions['piggyback'] instead of another extension."
            )
        options = self._options(app)
        runner = functools.partial(_run, app)
        live = Piggyback(app.wsgi_app, runner=runner, registry=self.registry, **options)
        app.wsgi_app = live  # type: ignore[method-assign]
        app.extensions["piggyback"] = self
        self._middlewares[app] = weakref.ref(live)

    @property
    def handler(self) -> HandlerDecorator:
        """Register a handler, under its function's name or the name given; see
        :meth:`piggyback.Piggyback.handler`. Works before :meth:`init_app`.
        """
        return self.registry.decorator

    def before_event(self, hook: H) -> H:
        """Run ``hook(page, event)`` before every handler, after the app's
        ``before_request`` functions; see :meth:`piggyback.Piggyback.before_event`.

        Every handler requires login, with Flask-Login:

        .. code-block:: python

            @live.before_event
            def require_login(page, event):
                return None if current_user.is_authenticated else login_manager.unauthorized()

        .. versionadded:: 0.1
        """
        self.registry.add_hook(hook)
        return hook

    def render_template(self, template: str, **context: t.Any) -> Markup:
        """Render a template of the current app as ``Markup``, for ``page.set_html``.

        :raise ValueError: the app's Jinja environment does not autoescape the template.

        .. versionadded:: 0.1
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        app.update_template_context(context)
        return templates.render_template(app.jinja_env, template, **context)

    def render_block(self, template: str, block: str, **context: t.Any) -> Markup:
        """Render one ``{% block %}`` of a template of the current app as ``Markup``,
        with the app's template context (``request``, ``session``, ``g``, context
        processors) and autoescaping on.

        .. code-block:: python

            page.append("todos", live.render_block("todo.html", "item", todo=todo))

        :raise ValueError: the template has no such block, or is not autoescaped.

        .. versionadded:: 0.1
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        app.update_template_context(context)
        return templates.render_block(app.jinja_env, template, block, **context)

    def middleware(self, app: Flask | None = None) -> Piggyback:
        """The middleware serving ``app``, by default the current app.

        :raise RuntimeError: no app is given and none is active, or this extension was
            not initialized for the app.
        """
        if app is None:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        reference = self._middlewares.get(app)
        live = reference() if reference is not None else None
        if live is None:
            raise RuntimeError(
                f"This FlaskPiggyback is not initialized for the app {app.name!r};"
                " call init_app(app) first."
            )
        return live

    def page(self, page_id: str) -> PageHandle:
        """A handle that queues commands for one page of the current app."""
        return self.middleware().page(page_id)

    def group(self, name: str, *, exclude: str | None = None) -> GroupHandle:
        """A handle that queues commands for each page of a group of the current app;
        ``exclude`` is a page left out."""
        return self.middleware().group(name, exclude=exclude)

    def _options(self, app: Flask) -> dict[str, t.Any]:
        config = {name: app.config[key] for key, name in CONFIG_KEYS.items() if key in app.config}
        return overlay(self.options, config)


def _run(app: Flask, handler: Handler, page: Page, event: Event) -> Outcome:
    """Run a handler the way Flask's ``wsgi_app`` runs a view (see the module's doc)."""
    context = app.request_context(event.environ)
    error: BaseException | None = None
    context.push()
    try:
        request = context.request
        if event.environ.get("REQUEST_METHOD") == "POST":
            # piggyback has read the body: hand Flask the same form instead of the
            # emptied stream, which werkzeug would take for a client that hung up.
            request.form, request.files = event.request.form, event.request.files
        dispatch = _Dispatch(app, handler, page, event.for_host(request))
        try:
            response = dispatch.full()
        except Exception as e:  # unhandled: got_request_exception, app.logger, a 500
            error = dispatch.failure = e
            response = app.handle_exception(e)
        return dispatch.outcome(response)
    finally:
        context.pop(error)


class _Dispatch:
    """Flask's ``full_dispatch_request`` for one event, with the handler as the view."""

    def __init__(self, app: Flask, handler: Handler, page: Page, event: Event) -> None:
        self.app = app
        self.view = functools.partial(handler, page, event)
        self.event = event
        self.result: t.Any = None
        #: What the handler (or a hook, or a before_request function) raised.
        self.failure: Exception | None = None
        self.refusal: EventRejected | None = None

    def full(self) -> Response:
        app = self.app
        try:
            request_started.send(app, _async_wrapper=app.ensure_sync)
            answer = app.preprocess_request()
            if answer is None:
                answer = self._call_view()
        except EventRejected as refusal:  # piggyback's own: no error handler is for it
            self.refusal = refusal
            answer = app.response_class(status=refusal.status)
        except Exception as e:
            self.failure = e
            answer = app.handle_user_exception(e)
        return app.finalize_request(answer)

    def _call_view(self) -> Response:
        result = self.view()
        if isinstance(result, Response):
            return result
        self.result = result
        return self.app.response_class()

    def outcome(self, response: Response) -> Outcome:
        """What came of the event: the handler's result and the response's cookies, or
        the refusal the response stands for; a failure is raised again.
        """
        cookies = tuple(("Set-Cookie", value) for value in response.headers.getlist("Set-Cookie"))
        if self.refusal is not None:
            return Outcome(headers=cookies, refusal=self.refusal)
        status = response.status_code
        if self.failure is not None and not 300 <= status < 500:
            raise self.failure  # piggyback's generic error; the session is not saved
        refusal = outcome_of(status, response.headers.get("Location"), self.event)
        return Outcome(self.result, cookies, refusal)
