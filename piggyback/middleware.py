"""The WSGI middleware: routes its mount path, injects the client's tag, serves the script.

A request under the mount is piggyback's own: ``<mount>/event`` goes to the
:class:`~piggyback.endpoint.EventEndpoint`, ``<mount>/piggyback.js`` to the
:class:`~piggyback.client_script.ClientScript`. Every other request is the app's: it
renders with a new page (:mod:`piggyback.rendering`), and an HTML answer gets the
client's tag (:mod:`piggyback.inject`).
"""

from __future__ import annotations

import os
import typing as t

from markupsafe import Markup

from .answer import Answerer
from .browsers import BrowserCookie
from .browsers import DEFAULT_COOKIE
from .client_script import ClientScript
from .deploy import DeployName
from .endpoint import EventEndpoint
from .endpoint import status_line
from .handles import GroupHandle
from .handles import PageHandle
from .hooks import Hook
from .options import DEFAULT_LEASE_WAIT
from .options import MAX_POLL as MAX_POLL
from .options import MAX_TIMEOUT as MAX_TIMEOUT
from .options import Options
from .registry import HandlerDecorator
from .registry import Registry
from .rendering import PageRenderer
from .runner import run_directly
from .runner import Runner
from .stores.base import Store
from .tokens import LazySigner
from .tokens import TokenSigner

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment


H = t.TypeVar("H", bound=Hook)


class Piggyback:
    """Live partial-page updates for a WSGI app, over plain request/response HTTP.

    .. code-block:: python

        live = Piggyback(app)

        @live.handler
        def increment(page, event):
            page.state["n"] = page.state.get("n", 0) + 1
            page.set_text("count", page.state["n"])

    Every option is checked here, once (:mod:`piggyback.options` has the rules); a bad
    one raises :class:`~piggyback.exceptions.OptionError`, a ``ValueError`` naming the
    bad value and what is allowed.

    :param app: the WSGI app to wrap.
    :param options: keyword options, each described by
        :class:`~piggyback.options.Options` (``live.options`` keeps them): ``store``,
        ``secret_key``, ``mount``, ``lease``, ``lease_wait``, ``timeout``, ``poll``, …
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        secret_key: str | bytes | None = None,
        store: Store | str | None = None,
        mount: str = "/_pb",
        inject: bool = True,
        page_ttl: float | None = None,
        lease: float = 60.0,
        lease_wait: float = DEFAULT_LEASE_WAIT,
        lock_wait: float | None = None,
        max_query_bytes: int = 16 * 1024,
        max_body_bytes: int = 1024 * 1024,
        runner: Runner = run_directly,
        registry: Registry | None = None,
        transport: str | None = None,
        timeout: float | None = None,
        poll: float | None = None,
        bind_browser: bool = True,
        browser_cookie: str | None = None,
    ) -> None:
        #: The options, checked and frozen (:class:`~piggyback.options.Options`).
        self.options = options = Options(
            secret_key=secret_key,
            store=store,
            mount=mount,
            inject=inject,
            page_ttl=page_ttl,
            lease=lease,
            lease_wait=lease_wait,
            lock_wait=lock_wait,
            max_query_bytes=max_query_bytes,
            max_body_bytes=max_body_bytes,
            runner=runner,
            registry=registry,
            transport=transport,
            timeout=timeout,
            poll=poll,
            bind_browser=bind_browser,
            browser_cookie=browser_cookie,
        )
        self.app = app
        self.store = options.open_store()
        cookie = options.browser_cookie or DEFAULT_COOKIE
        #: The cookie page tokens are bound to, or ``None`` when they are not bound.
        self.browsers = BrowserCookie(cookie) if options.bind_browser else None
        self.registry = options.registry if options.registry is not None else Registry()
        self.answerer = Answerer(
            self.store,
            lease=options.lease,
            lease_wait=options.lease_wait,
            runner=options.runner,
            hooks=self.registry.hooks,
        )
        secret_key = options.secret_key or os.environ.get("PIGGYBACK_SECRET_KEY")
        self._signer = LazySigner(self.store, secret_key)
        self._script = ClientScript(options.mount)
        self._deploy = DeployName(self._script.version, self.registry)
        self._mount = options.mount  # read by every request
        self._event_path = options.mount + "/event"  # most requests under the mount
        self._endpoint = EventEndpoint(
            signer=self._signer.__call__,  # bound: a vectorcall, as _answer_event below
            registry=self.registry,
            answerer=self.answerer,
            browsers=self.browsers,
            deploy=self._deploy,
            max_query_bytes=options.max_query_bytes,
            max_body_bytes=options.max_body_bytes,
        )
        # The bound method: calling the instance costs more (a slot, not a vectorcall).
        self._answer_event = self._endpoint.__call__
        self._renderer = PageRenderer(
            app,
            options=options,
            signer=self._signer,
            browsers=self.browsers,
            script=self._script,
            deploy=self._deploy,
            keep=self.answerer.keep,
        )
        self._render_page = self._renderer.__call__  # bound, as _answer_event above

    @property
    def mount(self) -> str:
        """The path piggyback owns, e.g. ``"/_pb"`` (the ``mount`` option)."""
        return self._mount

    @property
    def inject(self) -> bool:
        """Whether the client's tag is put into HTML responses (the ``inject`` option)."""
        return self.options.inject

    @property
    def transport(self) -> str | None:
        """The ``transport`` option: ``"iframe"``, or ``None`` for the best one."""
        return self.options.transport

    @property
    def timeout(self) -> float | None:
        """The ``timeout`` option, in seconds, or ``None`` for the client's own."""
        return self.options.timeout

    @property
    def poll(self) -> float | None:
        """The ``poll`` option, in seconds, or ``None``: pages do not poll."""
        return self.options.poll

    @property
    def max_query_bytes(self) -> int:
        """The ``max_query_bytes`` option."""
        return self.options.max_query_bytes

    @property
    def max_body_bytes(self) -> int:
        """The ``max_body_bytes`` option."""
        return self.options.max_body_bytes

    @property
    def handler(self) -> HandlerDecorator:
        """Register a handler, under its function's name or the name given.

        .. code-block:: python

            @live.handler
            def increment(page, event): ...

            @live.handler("rename")
            def rename_item(page, event): ...

        Registering a name twice raises :class:`~piggyback.HandlerError`.
        """
        return self.registry.decorator

    def before_event(self, hook: H) -> H:
        """Run ``hook(page, event)`` before every handler; it may refuse the event.

        .. code-block:: python

            @live.before_event
            def require_login(page, event):
                if not signed_in(event.request):
                    raise EventRejected("Sign in first.", code="unauthorized", status=401)

        A hook refuses by raising :class:`~piggyback.EventRejected` (or
        :class:`~piggyback.EventRedirected`, :class:`~piggyback.PageExpired`), or by
        returning a response; then the handler does not run and nothing is committed.
        See :mod:`piggyback.hooks`. Polls run no hooks: they run no app code.

        .. versionadded:: 0.1
        """
        self.registry.add_hook(hook)
        return hook

    def page(self, page_id: str) -> PageHandle:
        """A handle that queues commands for one page, delivered on its next request."""
        return PageHandle(self.store, page_id)

    def group(self, name: str, *, exclude: str | None = None) -> GroupHandle:
        """A handle that queues commands for every page in the group.

        :param exclude: a page (its ``page.id``) that the sends leave out, e.g. the
            sender: ``live.group("room", exclude=page.id)``.
        """
        return GroupHandle(self.store, name, exclude=exclude)

    @property
    def signer(self) -> TokenSigner:
        """Signs and checks page tokens; created on first use."""
        return self._signer()

    def script_tag(self, environ: WSGIEnvironment, nonce: str | None = None) -> Markup:
        """The client's ``<script>`` tag for the page being rendered, to place yourself.

        :param environ: the request's environ, holding ``piggyback.page``.
        :param nonce: the CSP nonce for the tag, if the page's policy uses one.
        """
        return self._renderer.script_tag(environ, nonce)

    def browser_of(self, environ: WSGIEnvironment) -> str:
        """The id of the browser a request came from, as page tokens are bound to it
        (``""`` for none, and always when tokens are not bound)."""
        return "" if self.browsers is None else self.browsers.read(environ)

    @property
    def deploy(self) -> str:
        """Names this deploy's client and handlers, so pages of an older one can tell."""
        return self._deploy()

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        path, mount = environ.get("PATH_INFO", ""), self._mount
        if path == self._event_path:  # first: it spares an event the slicing below
            return self._answer_event(environ, start_response)
        if not path.startswith(mount) or path[len(mount) : len(mount) + 1] not in ("/", ""):
            return self._render_page(environ, start_response)  # the app's, with a new page
        name = path[len(mount) + 1 :]
        if name == "piggyback.js":
            return self._script.serve(environ, start_response)
        return _plain(start_response, 404, f"piggyback has nothing at {name!r}.")


def _plain(start_response: StartResponse, status: int, text: str) -> list[bytes]:
    body = text.encode("utf-8", "backslashreplace")
    start_response(
        status_line(status),
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Content-Type-Options", "nosniff"),
        ],
    )
    return [body]
