"""A page while the app renders it: a new page, the client's tag, what it queued kept.

Every request that is not piggyback's own renders a new :class:`~piggyback.Page`, which
is ``environ["piggyback.page"]`` while the app runs: the app may join groups (a chat
room), queue commands or set state; usually it does none of this. An HTML answer that
can be edited gets the client's ``<script>`` tag (:mod:`piggyback.inject` finds where and
whether). Once the response is done (for a streamed body, when it is closed), what the
page queued commits through the page's lease, as an event commits
(:meth:`~piggyback.answer.Answerer.keep`).

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import typing as t

from markupsafe import Markup
from werkzeug.wsgi import ClosingIterator

from .inject import csp_nonce
from .inject import held_body
from .inject import is_file
from .inject import ResponseCatcher
from .inject import scan_page
from .inject import script_tag
from .page import Page

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment

    from .browsers import BrowserCookie
    from .client_script import ClientScript
    from .deploy import DeployName
    from .options import Options
    from .tokens import LazySigner

logger = logging.getLogger("piggyback")

#: Commits what a page queued while it rendered.
Keep = t.Callable[[Page], None]
# A tuple, not ``list | tuple``: that union would be made anew by every response.
_IN_MEMORY = (list, tuple)


class PageRenderer:
    """Runs the app for a request that is not piggyback's own, with a new page.

    :param app: the WSGI app.
    :param options: the middleware's options (``inject``, ``mount``, ``poll``,
        ``transport``, ``timeout``).
    :param signer: gives the token signer.
    :param browsers: the cookie page tokens are bound to, or ``None``.
    :param script: the client's script, for its URL.
    :param deploy: gives this deploy's name.
    :param keep: commits what a page queued while it rendered.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        options: Options,
        signer: LazySigner,
        browsers: BrowserCookie | None,
        script: ClientScript,
        deploy: DeployName,
        keep: Keep,
    ) -> None:
        self.app = app
        self.options = options
        self.signer = signer
        self.browsers = browsers
        self.script = script
        self.deploy = deploy
        self.keep = keep

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        page = environ["piggyback.page"] = Page()  # the new page, while the app renders
        catcher = ResponseCatcher(start_response, environ, self.browsers)
        if not self.options.inject or environ.get("REQUEST_METHOD") == "HEAD":
            catcher.open = False  # nothing held back: every response passes as it starts
        body = self.app(environ, catcher)
        catcher.open = False
        if catcher.caught is None:
            return kept_when_done(body, page, environ, self.keep)
        return self._render(body, catcher, page, environ)

    def script_tag(self, environ: WSGIEnvironment, nonce: str | None = None) -> Markup:
        """The client's ``<script>`` tag for the page being rendered, with its token."""
        page: Page = environ["piggyback.page"]
        root = environ.get("SCRIPT_NAME", "").rstrip("/")
        browser = "" if self.browsers is None else self.browsers.for_page(environ)
        options = self.options
        return script_tag(
            src=self.script.url(root),
            token=self.signer().sign(page.id, browser=browser),
            endpoint=f"{root}{options.mount}/event",
            deploy=self.deploy(),
            nonce=nonce,
            poll=options.poll if page.poll_interval is None else page.poll_interval,
            transport=options.transport,
            timeout=None if options.timeout is None else max(1, round(options.timeout * 1000)),
        )

    def _render(
        self,
        body: t.Iterable[bytes],
        catcher: ResponseCatcher,
        page: Page,
        environ: WSGIEnvironment,
    ) -> t.Iterable[bytes]:
        """The app's HTML answer, with the client's tag when it can be edited."""
        body, why = held_body(body, catcher, environ)
        if why is not None:
            logger.debug("No client tag in the page at %r: %s.", environ.get("PATH_INFO"), why)
            write = catcher.release()
            for chunk in catcher.written:
                write(chunk)
            return kept_when_done(body, page, environ, self.keep)
        try:
            html = b"".join([*catcher.written, *body])
        finally:
            if hasattr(body, "close"):
                body.close()
        html = self._with_tag(html, catcher, environ)
        self.keep(page)
        catcher.release(html)
        return [html]

    def _with_tag(self, html: bytes, catcher: ResponseCatcher, environ: WSGIEnvironment) -> bytes:
        """``html`` with the client's tag before its real ``</body>``, if it needs one."""
        found = scan_page(html, self.script.path)
        if found.has_tag or found.body_end is None:
            why = "it has the tag already" if found.has_tag else "it has no </body>"
            logger.debug("No client tag in the page at %r: %s.", environ.get("PATH_INFO"), why)
            return html
        assert catcher.caught is not None
        tag = self.script_tag(environ, csp_nonce(catcher.caught[1])).encode()
        return html[: found.body_end] + tag + html[found.body_end :]


def kept_when_done(
    body: t.Iterable[bytes], page: Page, environ: WSGIEnvironment, keep: Keep
) -> t.Iterable[bytes]:
    """``body``, untouched; what ``page`` queued is kept now, or once a streamed body is
    closed (the app may still queue while it streams)."""
    if isinstance(body, _IN_MEMORY) or is_file(body, environ):
        keep(page)
        return body
    return ClosingIterator(body, lambda: keep(page))
