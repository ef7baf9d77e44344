"""The event endpoint: one event request in, one answer document out."""

from __future__ import annotations

import logging
import re
import typing as t
from urllib.parse import urlsplit

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request

from .event import EventRequest
from .event import read_event_request
from .exceptions import EventRejected
from .exceptions import PageExpired
from .exceptions import TooLarge
from .exceptions import UnknownHandler
from .script import answer_document

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

    from .middleware import Piggyback
    from .registry import Handler

logger = logging.getLogger("piggyback")

_DECIMAL = re.compile(r"[0-9]{1,16}")


class EventEndpoint:
    """Answers ``<mount>/event``: checks every field, runs the handler, writes the
    document. Every outcome, rejections included, is the same one-script document.

    :param live: the middleware, for its handlers, tokens, store and limits.
    """

    def __init__(self, live: Piggyback) -> None:
        self.live = live

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = self.live.max_body_bytes
        request.max_form_memory_size = self.live.max_body_bytes
        extra: list[tuple[str, str]] = []
        try:
            reply, extra = self._answer(request)
            status = 200
        except EventRejected as rejection:
            logger.info("Rejected an event: %s", rejection.reason)
            reply = {"seq": _seq_of(request), "code": rejection.code, "error": rejection.reason}
            status = rejection.status
        finally:
            request.close()
        body, script_source = answer_document(reply)
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "SAMEORIGIN"),
            ("Referrer-Policy", "no-referrer"),
            (
                "Content-Security-Policy",
                f"default-src 'none'; script-src {script_source}; frame-ancestors 'self';"
                " base-uri 'none'; form-action 'none'",
            ),
        ]
        if status == 405:
            headers.append(("Allow", "GET, POST"))
        headers.extend(extra)
        start_response(f"{status} {HTTP_STATUS_CODES[status]}", headers)
        return [body]

    def _answer(self, request: Request) -> tuple[dict[str, t.Any], list[tuple[str, str]]]:
        """The reply, and the headers the handler's runner added (e.g. ``Set-Cookie``)."""
        _check_origin(request)
        if len(request.environ.get("QUERY_STRING", "")) > self.live.max_query_bytes:
            raise TooLarge(
                f"The event's query string is longer than {self.live.max_query_bytes} bytes.",
                status=414,
            )
        try:
            incoming = read_event_request(request)
        except RequestEntityTooLarge:
            raise TooLarge(
                f"The event's body is larger than {self.live.max_body_bytes} bytes."
            ) from None
        page_id = self.live.signer.verify(incoming.token)
        handler = self._find_handler(incoming)
        event, young = incoming.event, self.live.signer.is_young(incoming.token)
        reply = self.live.answerer.answer(
            page_id, incoming.seq, incoming.ack, handler, event, quiet=young
        )
        reply["token"] = incoming.token if young else self.live.signer.sign(page_id)
        return reply, event.headers

    def _find_handler(self, incoming: EventRequest) -> Handler | None:
        """The event's handler; a page of an older deploy naming a gone one is expired."""
        name = incoming.event.handler
        if name is None:
            return None
        try:
            return self.live.registry.find(name)
        except UnknownHandler:
            if incoming.deploy is None or incoming.deploy == self.live.deploy:
                raise
        raise PageExpired("The app was updated since this page was rendered; reload it.")


def _check_origin(request: Request) -> None:
    """Refuse events sent by pages of other origins, where the browser says so.

    Browsers send ``Sec-Fetch-Site``, and ``Origin`` with POSTs (``null`` under some
    referrer policies, which proves nothing). The page token is the real capability.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site not in (None, "same-origin"):
        raise EventRejected(
            f"Events must come from the page's own origin, not {site!r}.", status=403
        )
    origin = request.headers.get("Origin")
    if origin not in (None, "null") and urlsplit(origin).netloc != request.host:
        raise EventRejected(
            f"Events must come from the page's own origin, not {origin!r}.", status=403
        )


def _seq_of(request: Request) -> int | None:
    text = request.args.get("s", "")
    return int(text) if _DECIMAL.fullmatch(text) else None
