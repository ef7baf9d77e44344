"""A protocol client over real HTTP, for tests against a running server.

It behaves like ``piggyback.js``: sequence numbers, acknowledgements, fresh tokens, and
applying each batch once. Faults can be injected per request.
"""

from __future__ import annotations

import http.client
import json
import re
import typing as t
from dataclasses import dataclass
from dataclasses import field
from urllib.parse import urlencode
from urllib.parse import urlsplit

from piggyback.testing import read_reply

_TOKEN = re.compile(r'data-token="([^"]+)"')


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@dataclass
class RemotePage:
    """One page of a live server, driven like the browser client drives it."""

    base: str
    path: str = "/"
    token: str = ""
    seq: int = 0
    applied: int = 0
    #: Every command applied, in order.
    applied_commands: list[list[t.Any]] = field(default_factory=list)
    #: Batches that arrived again after being applied (must be skipped, never rerun).
    redelivered: int = 0
    #: Requests whose answer never arrived.
    lost: int = 0

    def open(self) -> RemotePage:
        status, html = get(self.base + self.path)
        match = _TOKEN.search(html)
        assert status == 200 and match, f"no piggyback page at {self.path!r} ({status})"
        self.token = match.group(1)
        return self

    @property
    def id(self) -> str:
        return self.token.split(".")[0]

    def request(
        self,
        seq: int,
        handler: str = "",
        args: dict[str, t.Any] | None = None,
        value: str | None = None,
    ) -> tuple[int, dict[str, t.Any]]:
        """Send one event request with the given seq; return status and reply unapplied."""
        status, body = self.send(seq, handler, args, value)
        return status, read_reply(body)

    def send(
        self,
        seq: int,
        handler: str = "",
        args: dict[str, t.Any] | None = None,
        value: str | None = None,
    ) -> tuple[int, str]:
        """Send one event request with the given seq; return status and body as they came."""
        query = {"p": self.token, "s": seq, "a": self.applied, "h": handler, "e": "click"}
        if args:
            query["g"] = json.dumps(args)
        if value is not None:
            query["v"] = value
        return get(f"{self.base}/_pb/event?{urlencode(query)}")

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
