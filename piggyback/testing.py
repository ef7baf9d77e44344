"""Fire events at a piggyback app from pytest, without a browser.

.. code-block:: python

    from piggyback.testing import Client

    def test_increment():
        client = Client(live)
        page = client.open("/")
        assert client.fire(page, "increment") == [["text", "count", "1"]]

The client speaks the real protocol through :class:`werkzeug.test.Client`: sequence
numbers, acknowledgements and tokens, like ``piggyback.js``, and it keeps the cookies
the app sets, like a browser (page tokens are bound to one).
"""

from __future__ import annotations

import json
import re
import secrets
import typing as t
from dataclasses import dataclass
from urllib.parse import urlencode

from werkzeug.test import Client as HTTPClient
from werkzeug.test import TestResponse

from .commands import Command
from .exceptions import EventRejected
from .exceptions import PiggybackError
from .reply import Reply
from .script import read_answer_document

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from .middleware import Piggyback

_TOKEN_ATTRIBUTE = re.compile(r'data-token="([^"]+)"')


class Rejected(EventRejected):
    """The server refused the event; ``code``, ``reason`` and ``status`` say why."""


class HandlerFailed(PiggybackError):
    """The handler raised; the server logged the traceback (see pytest's ``caplog``)."""


@dataclass
class TestPage:
    """A page as the test client tracks it."""

    __test__ = False  # not a test class, despite its name

    token: str
    seq: int = 0
    applied: int = 0

    @property
    def id(self) -> str:
        return self.token.split(".")[0]


class Client:
    """A browser stand-in for one piggyback app.

    :param live: the middleware, for its mount path and tokens.
    :param app: the WSGI app to send requests to, if not ``live`` itself (e.g. when
        another middleware wraps it).
    """

    __test__ = False

    def __init__(self, live: Piggyback, app: WSGIApplication | None = None) -> None:
        self.live = live
        self.http = HTTPClient(app or live)
        #: The last reply, and its HTTP response.
        self.last_reply: Reply | None = None
        self.response: TestResponse | None = None

    @property
    def reply(self) -> dict[str, t.Any]:
        """The last reply as the protocol's JSON object (``{}`` before the first)."""
        return {} if self.last_reply is None else self.last_reply.for_client()

    def open(self, path: str = "/", **options: t.Any) -> TestPage:
        """Render a page through the app and take its token from the client tag."""
        with self.http.get(path, **options) as response:
            match = _TOKEN_ATTRIBUTE.search(response.get_data(as_text=True))
        if match is None:
            raise AssertionError(f"{path!r} rendered no piggyback tag ({response.status}).")
        return TestPage(token=match.group(1))

    def new_page(self) -> TestPage:
        """A fresh page without rendering anything, bound to this client's browser
        cookie like a rendered one (the cookie is set first if the client has none)."""
        from .tokens import new_page_id

        browser = ""
        if self.live.browsers is not None:
            cookie = self.http.get_cookie(self.live.browsers.name)
            browser = cookie.value if cookie is not None else secrets.token_urlsafe(16)
            self.http.set_cookie(self.live.browsers.name, browser)
        return TestPage(token=self.live.signer.sign(new_page_id(), browser=browser))

    def fire(
        self,
        page: TestPage,
        handler: str,
        args: dict[str, t.Any] | None = None,
        *,
        value: str | None = None,
        target: str | None = None,
        event: str = "click",
    ) -> list[Command]:
        """Send one event and return the commands the page would run, in order.

        :raise Rejected: the server refused the event.
        :raise HandlerFailed: the handler raised.
        """
        params = {"h": handler, "e": event, "t": target, "v": value}
        if args:
            params["g"] = json.dumps(args)
        return self._send(page, params)

    def poll(self, page: TestPage) -> list[Command]:
        """Send a poll: no handler runs; returns the out-of-band commands delivered."""
        return self._send(page, {})

    def _send(self, page: TestPage, params: dict[str, t.Any]) -> list[Command]:
        page.seq += 1
        query = {"p": page.token, "s": page.seq, "a": page.applied}
        query.update((k, v) for k, v in params.items() if v is not None)
        self.response = response = self.http.get(f"{self.live.mount}/event?{urlencode(query)}")
        with response:
            reply = self.last_reply = Reply.from_document(response.get_data())
        if reply.code is not None:
            raise Rejected(reply.error or "", code=reply.code, status=response.status_code)
        if reply.token is not None:
            page.token = reply.token
        commands: list[Command] = []
        for batch in reply.batches:
            if batch.seq > page.applied:  # as the client applies them: each once
                commands.extend(batch.commands)
                page.applied = batch.seq
        own = next((batch for batch in reply.batches if batch.seq == page.seq), None)
        if own is not None and own.error is not None:
            raise HandlerFailed(own.error)
        return commands


def read_reply(document: str) -> dict[str, t.Any]:
    """The reply an answer document carries, as the protocol's JSON object, read the way
    the fetch transport does (:func:`~piggyback.script.read_answer_document`)."""
    reply: dict[str, t.Any] = read_answer_document(document)
    return reply
