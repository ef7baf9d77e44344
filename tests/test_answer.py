"""Answering: replays give back the same commands and the same extra headers."""

from __future__ import annotations

import typing as t
from urllib.parse import urlencode

from werkzeug.test import Client as HTTPClient

from piggyback import Piggyback
from piggyback.stores import MemoryStore
from piggyback.testing import read_reply


def _app(environ: t.Any, start_response: t.Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b""]


def test_a_replay_sends_the_handlers_headers_again_but_not_to_the_client() -> None:
    live = Piggyback(_app, store=MemoryStore(), secret_key="answer")
    runs = []

    @live.handler
    def login(page: t.Any, event: t.Any) -> None:
        runs.append(event.seq)
        event.headers.append(("Set-Cookie", "session=abc; HttpOnly"))
        page.set_text("who", "ada")

    http = HTTPClient(live)
    query = urlencode({"p": live.signer.sign("A" * 22), "s": 1, "h": "login"})
    first, retry = http.get(f"/_pb/event?{query}"), http.get(f"/_pb/event?{query}")
    assert runs == [1]
    for response in (first, retry):
        assert response.headers.getlist("Set-Cookie") == ["session=abc; HttpOnly"]
        reply = read_reply(response.get_data(as_text=True))
        assert reply["batches"] == [{"seq": 1, "commands": [["text", "who", "ada"]]}]
