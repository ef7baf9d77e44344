"""The event endpoint: one event request in, one answer document out."""

from __future__ import annotations

import logging
import typing as t
from urllib.parse import urlsplit

from werkzeug.exceptions import ClientDisconnected
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request
from werkzeug.wsgi import get_content_length
from werkzeug.wsgi import get_host
from werkzeug.wsgi import LimitedStream

from .answer import refused
from .answer import Result
from .event import EventRequest
from .event import plain_seq
from .event import read_event_request
from .exceptions import BadSignature
from .exceptions import EventRejected
from .exceptions import PageExpired
from .exceptions import TooLarge
from .exceptions import UnknownHandler

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

    from .answer import Answerer
    from .browsers import BrowserCookie
    from .registry import Handler
    from .registry import Registry
    from .tokens import TokenSigner

logger = logging.getLogger("piggyback")

#: Every answer's headers between its length and its policy (which allows its script).
_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "no-referrer"),
)
_CSP = (
    "default-src 'none'; script-src %s; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
_STATUS = {code: f"{code} {reason}" for code, reason in HTTP_STATUS_CODES.items()}


def status_line(code: int) -> str:
    """The status line for an HTTP status code, as ``start_response`` takes it:
    ``status_line(404) == "404 Not Found"``."""
    return _STATUS[code]


#: How far past ``max_body_bytes`` a refused body may go and still be read (and
#: discarded) before its 413 is written. Some browsers (WebKit, Firefox) drop an answer
#: that arrives while they are still sending a body the server stopped reading; a file
#: picked by mistake is rarely larger than this. Draining holds no memory. A body longer
#: still is refused unread, the rest left to the server (which closes the connection or
#: reads it), and the browser may lose the answer. No ``Connection: close``: WSGI
#: forbids hop-by-hop headers to applications.
DRAIN_BYTES = 16 * 1024 * 1024


class EventEndpoint:
    """Answers ``<mount>/event``: checks every field, runs the handler, writes the
    document. Every outcome, rejections included, is the same one-script document.

    It is given what it works with; the middleware builds it from its options:

    .. code-block:: python

        endpoint = EventEndpoint(
            signer=lambda: signer,
            registry=registry,
            answerer=Answerer(store),
            browsers=BrowserCookie(),
            deploy=lambda: "",
            max_query_bytes=16 * 1024,
            max_body_bytes=1024 * 1024,
        )

    :param signer: gives the token signer, on every event (the middleware makes it on
        first use, from the store's secret).
    :param registry: the handlers an event may name.
    :param answerer: answers a checked event against the store.
    :param browsers: the cookie page tokens are bound to, or ``None`` when they are not.
    :param deploy: gives the name of this deploy, to tell a page of an older one
        (asked only for an event naming an unknown handler).
    :param max_query_bytes: the largest query string accepted (414 past it).
    :param max_body_bytes: the largest body accepted (413 past it).
    """

    def __init__(
        self,
        *,
        signer: t.Callable[[], TokenSigner],
        registry: Registry,
        answerer: Answerer,
        browsers: BrowserCookie | None,
        deploy: t.Callable[[], str],
        max_query_bytes: int,
        max_body_bytes: int,
    ) -> None:
        self.signer = signer
        self.registry = registry
        self.answerer = answerer
        self.browsers = browsers
        self.deploy = deploy
        self.max_query_bytes = max_query_bytes
        self.max_body_bytes = max_body_bytes

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        # Only a POST's body needs werkzeug's parsing; a GET is read from the environ.
        post = self._post(environ) if environ.get("REQUEST_METHOD") == "POST" else None
        try:
            result = self._respond(environ, post)
        except EventRejected as rejection:  # the request itself, before its page
            result = refused(plain_seq(environ), rejection)
        if result.refusal is not None:
            logger.info("Rejected an event: %s", result.refusal.reason)
        if post is not None:
            if result.refusal is not None:
                _drain(post, self.max_body_bytes)
            post.close()
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(result.document))),
            *_HEADERS,
            ("Content-Security-Policy", _CSP % result.script_source),
        ]
        if result.status == 405:
            headers.append(("Allow", "GET, POST"))
        headers.extend(result.headers)  # e.g. the session cookie the handler's runner set
        start_response(_STATUS[result.status], headers)  # status_line(), one call less
        return [result.document]

    def _post(self, environ: WSGIEnvironment) -> Request:
        # Read exactly Content-Length bytes, and fail on fewer: a server that marks its
        # input terminated (gunicorn) would otherwise let a cut body pass as whole.
        environ.pop("wsgi.input_terminated", None)  # werkzeug reads its presence
        request = Request(environ)
        request.max_content_length = self.max_body_bytes
        request.max_form_memory_size = self.max_body_bytes
        return request

    def _respond(self, environ: WSGIEnvironment, post: Request | None) -> Result:
        """Check the request, then answer it against its page.

        :raise EventRejected: the request itself is refused (origin, size, fields,
            token, handler); refusals that concern the page are results.
        """
        _check_origin(environ)
        if len(environ.get("QUERY_STRING", "")) > self.max_query_bytes:
            raise TooLarge(
                f"The event's query string is longer than {self.max_query_bytes} bytes.",
                status=414,
            )
        incoming = self._read(environ, post)
        signer = self.signer()
        browser = "" if self.browsers is None else self.browsers.read(environ)
        page_id, young = self._verify(signer, incoming.token, browser)
        handler = self._find_handler(incoming)
        token = incoming.token if young else signer.sign(page_id, browser=browser)
        return self.answerer.respond(
            page_id, incoming.event, handler, ack=incoming.ack, token=token, young=young
        )

    def _read(self, environ: WSGIEnvironment, post: Request | None) -> EventRequest:
        """Every field of the request, its body read whole or refused."""
        if (
            post is not None
            and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
            and get_content_length(environ) is None
        ):
            raise EventRejected(
                "An event's body needs a Content-Length; a chunked body is refused.", status=411
            )
        try:
            return read_event_request(environ, post)
        except RequestEntityTooLarge:
            raise TooLarge(
                f"The event's body is larger than {self.max_body_bytes} bytes."
            ) from None
        except ClientDisconnected:
            raise EventRejected(
                "The event's body ended before its Content-Length; nothing ran."
            ) from None

    def _verify(self, signer: TokenSigner, token: str, browser: str) -> tuple[str, bool]:
        """The page id of a genuine token of this browser, and whether the token is
        young (:meth:`~piggyback.tokens.TokenSigner.check`); a missing cookie is named."""
        try:
            return signer.check(token, browser=browser)
        except BadSignature:
            if self.browsers is None or browser:
                raise
        raise BadSignature(
            f"This request carries no {self.browsers.name!r} cookie, and a page token works"
            " only in the browser that rendered the page: were its cookies cleared or"
            " blocked? Reload the page."
        )

    def _find_handler(self, incoming: EventRequest) -> Handler | None:
        """The event's handler; a page of an older deploy naming a gone one is expired."""
        name = incoming.event.handler
        if name is None:
            return None
        try:
            return self.registry.find(name)
        except UnknownHandler:
            if incoming.deploy is None or incoming.deploy == self.deploy():
                raise
        raise PageExpired("The app was updated since this page was rendered; reload it.")


def _drain(post: Request, max_body_bytes: int) -> None:
    """Read and discard what is left of a refused body, so that the browser still
    sending it reads the answer; only of one at most :data:`DRAIN_BYTES` over the limit.

    werkzeug refuses a body over the limit before reading any of it; other refusals
    (origin, query, fields) may leave all of it unread.
    """
    length = post.content_length
    if length is None or length > max_body_bytes + DRAIN_BYTES:
        return
    # Within the limit, werkzeug's stream knows what it read already.
    stream: t.IO[bytes] | LimitedStream = (
        post.stream
        if length <= max_body_bytes
        else LimitedStream(post.environ["wsgi.input"], length)
    )
    try:
        while stream.read(64 * 1024):
            pass
    except (ClientDisconnected, OSError):
        pass  # the browser went away: nobody is left to lose the answer


def _check_origin(environ: WSGIEnvironment) -> None:
    """Refuse events sent by pages of other origins, where the browser says so.

    Browsers send ``Sec-Fetch-Site``, and ``Origin`` with POSTs (``null`` under some
    referrer policies, which proves nothing). The page token is the real capability.
    """
    site = environ.get("HTTP_SEC_FETCH_SITE")
    if site not in (None, "same-origin"):
        raise EventRejected(
            f"Events must come from the page's own origin, not {site!r}.", status=403
        )
    origin = environ.get("HTTP_ORIGIN")
    if origin not in (None, "null") and _host_of(origin) != get_host(environ):
        raise EventRejected(
            f"Events must come from the page's own origin, not {origin[:200]!r}.", status=403
        )


def _host_of(origin: str) -> str | None:
    """The host of an ``Origin`` header, or ``None`` for one that is not a URL."""
    try:
        return urlsplit(origin).netloc
    except ValueError:  # e.g. "http://[": an unclosed IPv6 address
        return None
