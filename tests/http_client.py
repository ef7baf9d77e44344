"""A protocol client over real HTTP, for tests against a running server.

It behaves like ``piggyback.js`` in a browser: sequence numbers, acknowledgements,
fresh tokens, applying each batch once, and the cookies the server sets (the browser
cookie a page token is bound to, a session). Faults can be injected per request.
"""

from __future__ import annotations

import http.client
import json
import re
import typing as t
import uuid
from dataclasses import dataclass
from dataclasses import field
from http.cookies import SimpleCookie
from urllib.parse import urlencode
from urllib.parse import urlsplit

from piggyback.testing import read_reply

_TOKEN = re.compile(r'data-token="([^"]+)"')


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def cookies(self) -> dict[str, str]:
        """The cookies its ``Set-Cookie`` headers set, by name."""
        jar: SimpleCookie = SimpleCookie()
        for name, value in self.headers:
            if name.lower() == "set-cookie":
                jar.load(value)
        return {name: morsel.value for name, morsel in jar.items()}


def send(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Response:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return Response(response.status, response.getheaders(), response.read())
    finally:
        connection.close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    response = send(url, headers=headers)
    return response.status, response.text


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body of text fields, and its content type."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value.encode()
        + b"\r\n"
        for name, value in fields.items()
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}


@dataclass
class RemotePage:
    """One page of a live server, driven like the browser client drives it."""

    base: str
    path: str = "/"
    token: str = ""
    seq: int = 0
    applied: int = 0
    #: The browser's cookies for the server, as it keeps them.
    cookies: dict[str, str] = field(default_factory=dict)
    #: Every command applied, in order.
    applied_commands: list[list[t.Any]] = field(default_factory=list)
    #: Batches that arrived again after being applied (must be skipped, never rerun).
    redelivered: int = 0
    #: Requests whose answer never arrived.
    lost: int = 0
    #: The last answer, as it came.
    last: Response | None = None

    def open(self) -> RemotePage:
        response = send(self.base + self.path, headers=cookie_header(self.cookies))
        self.cookies.update(response.cookies())
        match = _TOKEN.search(response.text)
        assert response.status == 200 and match, (
            f"no piggyback page at {self.path!r} ({response.status})"
        )
        self.token = match.group(1)
        return self

    @property
    def id(self) -> str:
        return self.token.split(".")[0]

    def send(
        self,
        query: dict[str, t.Any],
        *,
        body: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
    ) -> Response:
        """One raw event request (a ``b=1`` POST when ``body`` is given), with the
        browser's cookies unless ``cookies`` says which; the cookies it sets are kept."""
        url = f"{self.base}/_pb/event?{urlencode(query)}"
        headers = cookie_header(self.cookies if cookies is None else cookies)
        if body is None:
            response = send(url, headers=headers)
        else:
            data, content_type = multipart(body)
            headers["Content-Type"] = content_type
            response = send(url, method="POST", headers=headers, body=data)
        if cookies is None:
            self.cookies.update(response.cookies())
        self.last = response
        return response

    def request(
        self,
        seq: int,
        handler: str = "",
        args: dict[str, t.Any] | None = None,
        value: str | None = None,
    ) -> tuple[int, dict[str, t.Any]]:
        """Send one event request with the given seq; return status and reply unapplied."""
        query = {"p": self.token, "s": seq, "a": self.applied, "h": handler, "e": "click"}
        if args:
            query["g"] = json.dumps(args)
        if value is not None:
            query["v"] = value
        response = self.send(query)
        return response.status, read_reply(response.text)

    def apply(self, reply: dict[str, t.Any]) -> None:
        self.token = reply.get("token", self.token)
        for batch in reply.get("batches", []):
            if batch["seq"] <= self.applied:
                self.redelivered += 1
                continue
            self.applied_commands.extend(batch["commands"])
            self.applied = batch["seq"]

    def fire(
        self, handler: str = "", args: dict[str, t.Any] | None = None, *, retries: int = 20
    ) -> dict[str, t.Any]:
        """Send the next event, retrying the same seq while the page is busy."""
        self.seq += 1
        for _ in range(retries):
            try:
                status, reply = self.request(self.seq, handler, args)
            except (OSError, http.client.HTTPException, ValueError):
                self.lost += 1  # a worker died or the answer was cut: try again
                continue
            if reply.get("code") != "busy":
                break
        assert status == 200, f"{status}: {reply}"
        self.apply(reply)
        return reply
