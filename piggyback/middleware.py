"""The WSGI middleware: owns a mount path, renders pages, answers events."""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import typing as t

from markupsafe import Markup
from werkzeug.wsgi import ClosingIterator

from .answer import Answerer
from .browsers import BrowserCookie
from .browsers import DEFAULT_COOKIE
from .endpoint import EventEndpoint
from .endpoint import status_line
from .handles import GroupHandle
from .handles import PageHandle
from .hooks import Hook
from .inject import csp_nonce
from .inject import read_body
from .inject import ResponseCatcher
from .inject import scan_page
from .inject import script_tag
from .inject import stream_reason
from .options import DEFAULT_LEASE_WAIT
from .options import MAX_POLL as MAX_POLL
from .options import MAX_TIMEOUT as MAX_TIMEOUT
from .options import Options
from .page import Page
from .registry import HandlerDecorator
from .registry import Registry
from .runner import run_directly
from .runner import Runner
from .stores.base import Store
from .tokens import TokenSigner

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment

logger = logging.getLogger("piggyback")

H = t.TypeVar("H", bound=Hook)

#: HTML bodies larger than this are passed through without the client tag.
MAX_EDITED_BODY = 8 * 1024 * 1024


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
    :param secret_key: signs page tokens. Default: ``PIGGYBACK_SECRET_KEY`` from the
        environment, else a random key kept in the store and shared by every process.
    :param store: where pages live: a store, or a store URL (``"memory:"``,
        ``"sqlite:///path"``, ``"redis://…"``). Default: ``PIGGYBACK_STORE`` from the
        environment, else an SQLite file ``.piggyback/store.sqlite3`` in the working
        directory.
    :param mount: the path piggyback owns for its script and events; never ``/``.
    :param inject: put the client's tag into HTML responses; when false, place
        :meth:`script_tag` in your template yourself.
    :param page_ttl: seconds an unused page lives, for a store piggyback opens (from a
        URL or the default); a store object has its own. Default: a day.
    :param lease: seconds one event may hold its page before another takes over its
        lease; shorter than ``page_ttl``.
    :param lease_wait: seconds an event waits for its busy page's lease before
        answering busy.
    :param lock_wait: deprecated: the old name of ``lease_wait``.
    :param max_query_bytes: the largest event query string accepted.
    :param max_body_bytes: the largest event request body accepted.
    :param runner: calls each handler as ``runner(handler, page, event)``; framework
        adapters use it to provide their request context.
    :param registry: the handlers, when they are registered before the app exists.
    :param transport: ``"iframe"`` makes every client use the hidden-iframe transport,
        even where ``fetch`` exists.
    :param timeout: seconds one try of an event may take before the client tries
        again (the tag's ``data-timeout``). Default: the client's, 10 seconds.
    :param poll: seconds between the polls every page sends from its first render
        (the tag's ``data-poll``); ``page.poll()`` while rendering overrides it.
        Default: no polling.
    :param bind_browser: bind each page's token to the browser that rendered the page,
        with a random id in an ``HttpOnly``, ``SameSite=Lax`` cookie set with the page
        (:mod:`piggyback.browsers`), so a token works in no other browser. It costs that
        one cookie; turn it off only for clients that keep no cookies (an API client).
    :param browser_cookie: that cookie's name (``__Host-`` is put before it over HTTPS).
        Default: ``pb_browser``.
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
        self._secret_key = _key(options.secret_key or os.environ.get("PIGGYBACK_SECRET_KEY"))
        self._signer: TokenSigner | None = None
        self._script = (
            importlib.resources.files(__package__).joinpath("js/piggyback.js").read_bytes()
        )
        self._script_version = hashlib.sha256(self._script).hexdigest()[:12]
        self._mount = options.mount  # read by every request
        self._script_path = f"{self._mount}/piggyback.js"
        self._deploy = (-1, "")
        self._endpoint = EventEndpoint(
            signer=self._make_signer,
            registry=self.registry,
            answerer=self.answerer,
            browsers=self.browsers,
            deploy=self._name_deploy,
            max_query_bytes=options.max_query_bytes,
            max_body_bytes=options.max_body_bytes,
        )

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
        return self._make_signer()

    def _make_signer(self) -> TokenSigner:
        if self._signer is None:
            secret = self._secret_key or self.store.secret()
            self._signer = TokenSigner(secret, max_age=self.store.page_ttl)
        return self._signer

    def script_tag(self, environ: WSGIEnvironment, nonce: str | None = None) -> Markup:
        """The client's ``<script>`` tag for the page being rendered, to place yourself.

        :param environ: the request's environ, holding ``piggyback.page``.
        :param nonce: the CSP nonce for the tag, if the page's policy uses one.
        """
        page: Page = environ["piggyback.page"]
        root = environ.get("SCRIPT_NAME", "").rstrip("/")
        browser = "" if self.browsers is None else self.browsers.for_page(environ)
        return script_tag(
            src=f"{root}{self._script_path}?v={self._script_version}",
            token=self.signer.sign(page.id, browser=browser),
            endpoint=f"{root}{self.mount}/event",
            deploy=self.deploy,
            nonce=nonce,
            poll=self.poll if page.poll_interval is None else page.poll_interval,
            transport=self.transport,
            timeout=None if self.timeout is None else max(1, round(self.timeout * 1000)),
        )

    def browser_of(self, environ: WSGIEnvironment) -> str:
        """The id of the browser a request came from, as page tokens are bound to it
        (``""`` for none, and always when tokens are not bound)."""
        return "" if self.browsers is None else self.browsers.read(environ)

    @property
    def deploy(self) -> str:
        """Names this deploy's client and handlers, so pages of an older one can tell."""
        return self._name_deploy()

    def _name_deploy(self) -> str:
        handlers = len(self.registry)
        if self._deploy[0] != handlers:  # registered after the last look
            digest = hashlib.sha256(
                f"{self._script_version} {self.registry.fingerprint()}".encode()
            )
            self._deploy = (handlers, digest.hexdigest()[:10])
        return self._deploy[1]

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        path, mount = environ.get("PATH_INFO", ""), self._mount
        if path.startswith(mount) and path[len(mount) : len(mount) + 1] in ("/", ""):
            return self._serve(environ, start_response)
        page = Page()
        environ["piggyback.page"] = page
        if self.browsers is not None:  # a page's first token may give the browser an id
            start_response = _with_headers(start_response, self.browsers.headers, environ)
        if not self.options.inject or environ.get("REQUEST_METHOD") == "HEAD":
            return self._pass(self.app(environ, start_response), page, environ)
        return self._render(environ, start_response, page)

    def _render(
        self, environ: WSGIEnvironment, start_response: StartResponse, page: Page
    ) -> t.Iterable[bytes]:
        catcher = ResponseCatcher(start_response)
        body = self.app(environ, catcher)
        catcher.open = False
        if catcher.caught is None:
            return self._pass(body, page, environ)
        body, why = _held_body(body, catcher, environ)
        if why is not None:
            logger.debug("No client tag in the page at %r: %s.", environ.get("PATH_INFO"), why)
            write = catcher.release()
            for chunk in catcher.written:
                write(chunk)
            return self._pass(body, page, environ)
        try:
            html = b"".join([*catcher.written, *body])
        finally:
            if hasattr(body, "close"):
                body.close()
        html = self._with_tag(html, catcher, environ)
        self._keep(page)
        catcher.release(html)
        return [html]

    def _with_tag(self, html: bytes, catcher: ResponseCatcher, environ: WSGIEnvironment) -> bytes:
        """``html`` with the client's tag before its real ``</body>``, if it needs one."""
        found = scan_page(html, self._script_path)
        if found.has_tag or found.body_end is None:
            why = "it has the tag already" if found.has_tag else "it has no </body>"
            logger.debug("No client tag in the page at %r: %s.", environ.get("PATH_INFO"), why)
            return html
        assert catcher.caught is not None
        tag = self.script_tag(environ, csp_nonce(catcher.caught[1])).encode()
        return html[: found.body_end] + tag + html[found.body_end :]

    def _pass(
        self, body: t.Iterable[bytes], page: Page, environ: WSGIEnvironment
    ) -> t.Iterable[bytes]:
        """The app's body untouched; what the page queued is kept once it is done."""
        if isinstance(body, list | tuple) or _is_file(body, environ):
            self._keep(page)
            return body
        return ClosingIterator(body, lambda: self._keep(page))

    def _keep(self, page: Page) -> None:
        """Commit what rendering gave the page, as an event commits. Usually none."""
        self.answerer.keep(page)

    def _serve(self, environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        name = environ.get("PATH_INFO", "")[len(self._mount) + 1 :]
        if name == "event":
            return self._endpoint(environ, start_response)
        if name == "piggyback.js":
            return self._serve_script(environ, start_response)
        return _plain(start_response, 404, f"piggyback has nothing at {name!r}.")

    def _serve_script(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        etag = f'"{self._script_version}"'
        versioned = environ.get("QUERY_STRING") == f"v={self._script_version}"
        cache = "public, max-age=31536000, immutable" if versioned else "no-cache"
        headers = [("ETag", etag), ("Cache-Control", cache), ("X-Content-Type-Options", "nosniff")]
        if etag in environ.get("HTTP_IF_NONE_MATCH", ""):
            start_response(status_line(304), headers)
            return []
        headers += [
            ("Content-Type", "text/javascript; charset=utf-8"),
            ("Content-Length", str(len(self._script))),
        ]
        start_response(status_line(200), headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [self._script]


def _held_body(
    body: t.Iterable[bytes], catcher: ResponseCatcher, environ: WSGIEnvironment
) -> tuple[t.Iterable[bytes], str | None]:
    """The HTML body to edit, in memory; or the body to pass on and why it must pass.

    A body of unknown length is read into memory, up to :data:`MAX_EDITED_BODY`,
    unless it streams (see :func:`~piggyback.inject.stream_reason`).
    """
    assert catcher.caught is not None
    length = catcher.content_length()
    if _is_file(body, environ):
        return body, "it is a file (wsgi.file_wrapper)"
    if length is not None:
        if length > MAX_EDITED_BODY:
            return body, f"it is larger than {MAX_EDITED_BODY} bytes"
        return body, None
    if isinstance(body, list | tuple):
        return body, None
    if catcher.written:
        return body, "the app streams it through write()"
    why = stream_reason(body, catcher.caught[1])
    if why is not None:
        return body, why
    body, whole = read_body(body, MAX_EDITED_BODY)
    return body, None if whole else f"it is larger than {MAX_EDITED_BODY} bytes"


def _is_file(body: t.Iterable[bytes], environ: WSGIEnvironment) -> bool:
    wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(wrapper, type) and isinstance(body, wrapper)


def _with_headers(
    start_response: StartResponse,
    headers: t.Callable[[WSGIEnvironment], list[tuple[str, str]]],
    environ: WSGIEnvironment,
) -> StartResponse:
    """``start_response``, adding ``headers(environ)`` as it is called."""

    def start(status: str, response_headers: list[tuple[str, str]], *args: t.Any) -> t.Any:
        return start_response(status, [*response_headers, *headers(environ)], *args)

    return t.cast("StartResponse", start)


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


def _key(secret: str | bytes | None) -> bytes | None:
    if isinstance(secret, str):
        return secret.encode()
    return secret
