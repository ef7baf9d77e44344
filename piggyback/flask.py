"""Flask: handlers that run in the app's request context.

.. code-block:: python

    from flask import Flask, session
    from piggyback.flask import FlaskPiggyback

    app = Flask(__name__)
    live = FlaskPiggyback(app)

    @live.handler
    def increment(page, event):
        session["n"] = session.get("n", 0) + 1
        page.set_text("count", session["n"])

A handler runs like a view without routing: ``flask.request``, ``session``, ``g``,
``current_app``, ``url_for`` and extensions built on them (Flask-Login's
``current_user``) work, and what it writes to the session reaches the browser with the
event's answer. ``before_request`` and ``after_request`` functions do not run for
events; ``teardown_request`` and ``teardown_appcontext`` functions do.

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

from .middleware import Piggyback
from .registry import Registry
from .stores import store_from_url
from .stores.base import DEFAULT_PAGE_TTL

if t.TYPE_CHECKING:
    from flask.sessions import SessionMixin

    from .event import Event
    from .handles import GroupHandle
    from .handles import PageHandle
    from .page import Page
    from .registry import Handler

F = t.TypeVar("F", bound="Handler")

#: The config keys :meth:`FlaskPiggyback.init_app` reads, and the options they set.
CONFIG_KEYS = {
    "PIGGYBACK_SECRET_KEY": "secret_key",
    "PIGGYBACK_STORE": "store",
    "PIGGYBACK_MOUNT": "mount",
}


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
        ``runner``. An app's config overrides them with ``PIGGYBACK_SECRET_KEY``,
        ``PIGGYBACK_STORE`` (a store URL such as ``"memory:"``, or a store) and
        ``PIGGYBACK_MOUNT``.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Flask | None = None, **options: t.Any) -> None:
        if "runner" in options:
            raise TypeError(
                "FlaskPiggyback runs handlers in Flask's request context itself; it"
                " takes no 'runner' option."
            )
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

    @t.overload
    def handler(self, name: F) -> F: ...
    @t.overload
    def handler(self, name: str | None = None) -> t.Callable[[F], F]: ...
    def handler(self, name: str | F | None = None) -> F | t.Callable[[F], F]:
        """Register a handler, under its function's name or the name given; see
        :meth:`piggyback.Piggyback.handler`. Works before :meth:`init_app`.
        """
        return self.registry.decorator(name)

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

    def group(self, name: str) -> GroupHandle:
        """A handle that queues commands for each page of a group of the current app."""
        return self.middleware().group(name)

    def _options(self, app: Flask) -> dict[str, t.Any]:
        options = dict(self.options)
        for key, option in CONFIG_KEYS.items():
            if key in app.config:
                options[option] = app.config[key]
        if isinstance(options.get("store"), str):
            page_ttl = options.get("page_ttl", DEFAULT_PAGE_TTL)
            options["store"] = store_from_url(options["store"], page_ttl=page_ttl)
        return options


def _run(app: Flask, handler: Handler, page: Page, event: Event) -> t.Any:
    """Run a handler in ``app``'s request context; its session goes in the answer."""
    with app.request_context(event.environ) as context:
        event.host_request = request = context.request
        if event.environ.get("REQUEST_METHOD") == "POST":
            # piggyback has read the body: hand Flask the same form instead of the
            # emptied stream, which werkzeug would take for a client that hung up.
            request.form, request.files = event.request.form, event.request.files
        result = handler(page, event)
        event.headers.extend(_session_cookies(app, context.session))
    return result


def _session_cookies(app: Flask, session: SessionMixin) -> list[tuple[str, str]]:
    """The ``Set-Cookie`` headers saving ``session``, as Flask would set them."""
    interface = app.session_interface
    if interface.is_null_session(session):
        return []
    response = app.response_class()
    interface.save_session(app, session, response)
    return [("Set-Cookie", value) for value in response.headers.getlist("Set-Cookie")]
