"""Answering: replays give back the same commands and the same extra headers."""

from __future__ import annotations

import typing as t
from urllib.parse import urlencode

import pytest
from werkzeug.test import Client as HTTPClient

from piggyback import Piggyback
from piggyback.answer import MAX_WAITING
from piggyback.stores import MemoryStore
from piggyback.testing import read_reply


def _app(environ: t.Any, start_response: t.Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b""]


def test_a_replay_sends_the_handlers_headers_again_but_not_to_the_client() -> None:
    """A retry after a lost answer carries the cookies the first request carried."""
    live = Piggyback(_app, store=MemoryStore(), secret_key="answer")
    runs = []

    @live.handler
    def login(page: t.Any, event: t.Any) -> None:
        runs.append(event.seq)
        event.headers.append(("Set-Cookie", "session=abc; HttpOnly"))
        page.set_text("who", "ada")

    http = HTTPClient(live, use_cookies=False)  # the first answer never arrived
    query = urlencode({"p": live.signer.sign("A" * 22), "s": 1, "h": "login"})
    cookie = {"Cookie": "theme=dark"}
    first = http.get(f"/_pb/event?{query}", headers=cookie)
    retry = http.get(f"/_pb/event?{query}", headers=cookie)
    assert runs == [1]
    for response in (first, retry):
        assert response.headers.getlist("Set-Cookie") == ["session=abc; HttpOnly"]
        reply = read_reply(response.get_data(as_text=True))
        assert reply["batches"] == [{"seq": 1, "commands": [["text", "who", "ada"]]}]


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param(None, id="no-cookies"),
        pytest.param("theme=light", id="other-cookies"),
        pytest.param("theme=dark; session=mine", id="more-cookies"),
    ],
)
def test_a_replay_with_other_cookies_gets_no_stored_headers(cookie: str | None) -> None:
    """Whoever replays a page's event without its cookies (its token came from a log)
    gets the commands again, never the session cookie made for the page's browser."""
    live = Piggyback(_app, store=MemoryStore(), secret_key="answer", bind_browser=False)
    live.handler("login")(
        lambda page, event: event.headers.append(("Set-Cookie", "session=abc; HttpOnly"))
    )
    http = HTTPClient(live, use_cookies=False)
    query = urlencode({"p": live.signer.sign("A" * 22), "s": 1, "h": "login"})
    first = http.get(f"/_pb/event?{query}", headers={"Cookie": "theme=dark"})
    assert first.headers.getlist("Set-Cookie") == ["session=abc; HttpOnly"]
    replay = http.get(f"/_pb/event?{query}", headers={"Cookie": cookie} if cookie else {})
    assert replay.status_code == 200
    assert replay.headers.getlist("Set-Cookie") == []


def test_a_page_of_an_older_deploy_naming_a_gone_handler_is_expired() -> None:
    live = Piggyback(_app, store=MemoryStore(), secret_key="answer")
    live.handler("kept")(lambda page, event: None)
    http = HTTPClient(live)
    token = live.signer.sign("B" * 22)

    def send(seq: int, **params: str) -> tuple[int, dict[str, t.Any]]:
        query = urlencode({"p": token, "s": seq, "h": "renamed", **params})
        response = http.get(f"/_pb/event?{query}")
        return response.status_code, read_reply(response.get_data(as_text=True))

    reason = "The app was updated since this page was rendered; reload it."
    assert send(1, d="0123456789") == (410, {"seq": 1, "code": "expired", "error": reason})
    unknown = "No handler is registered as 'renamed'."
    assert send(2, d=live.deploy) == (404, {"seq": 2, "code": "unknown_handler", "error": unknown})
    assert send(3) == (404, {"seq": 3, "code": "unknown_handler", "error": unknown})


def test_the_deploy_changes_with_the_handler_names() -> None:
    live = Piggyback(_app, store=MemoryStore(), secret_key="answer")
    before = live.deploy
    live.handler("one")(lambda page, event: None)
    assert live.deploy != before
    other = Piggyback(_app, store=MemoryStore(), secret_key="answer")
    other.handler("one")(lambda page, event: None)
    assert other.deploy == live.deploy


def test_a_page_that_fell_too_far_behind_is_expired_and_its_mail_dropped() -> None:
    store = MemoryStore()
    live = Piggyback(_app, store=store, secret_key="answer")
    http = HTTPClient(live)
    token = live.signer.sign("C" * 22)
    for n in range(MAX_WAITING + 1):
        live.page("C" * 22).set_text("n", n)
    response = http.get(f"/_pb/event?{urlencode({'p': token, 's': 1})}")
    reason = f"More than {MAX_WAITING} commands waited for this page; reload it."
    assert response.status_code == 410
    assert read_reply(response.get_data(as_text=True)) == {
        "seq": 1,
        "code": "expired",
        "error": reason,
    }
    _, mail = store.load("C" * 22)
    assert mail.inbox == []


def test_a_page_just_within_the_limit_gets_everything() -> None:
    live = Piggyback(_app, store=MemoryStore(), secret_key="answer")
    http = HTTPClient(live)
    token = live.signer.sign("D" * 22)
    for n in range(MAX_WAITING):
        live.page("D" * 22).set_text("n", n)
    response = http.get(f"/_pb/event?{urlencode({'p': token, 's': 1})}")
    reply = read_reply(response.get_data(as_text=True))
    assert [c[2] for c in reply["batches"][0]["commands"]] == [str(n) for n in range(MAX_WAITING)]
