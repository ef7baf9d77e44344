"""Answering: replays give back the same commands and the same extra headers."""

from __future__ import annotations

import time
import typing as t
from urllib.parse import urlencode

import pytest
from werkzeug.test import Client as HTTPClient

from piggyback import Piggyback
from piggyback.answer import MAX_WAITING
from piggyback.limits import MAX_ANSWER_BYTES
from piggyback.limits import MAX_BATCH_BYTES
from piggyback.limits import MAX_COMMAND_BYTES
from piggyback.limits import MAX_MAIL_BYTES
from piggyback.limits import MAX_MEMBERSHIPS
from piggyback.limits import MAX_MESSAGE_BYTES
from piggyback.limits import MAX_STATE_BYTES
from piggyback.limits import MAX_UNACKED_BYTES
from piggyback.limits import TOO_MUCH_OUTPUT
from piggyback.limits import TooMuchOutput
from piggyback.stores import MemoryStore
from piggyback.stores.base import Mail
from piggyback.testing import Client
from piggyback.testing import HandlerFailed
from piggyback.testing import read_reply
from piggyback.testing import Rejected


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


# Limits (piggyback/limits.py): whatever a handler does, an answer stays bounded


def _limited() -> tuple[Piggyback, MemoryStore, Client]:
    store = MemoryStore()
    live = Piggyback(_app, store=store, secret_key="answer")

    @live.handler
    def say(page: t.Any, event: t.Any) -> None:
        page.state["said"] = page.state.get("said", 0) + 1
        for _ in range(event.args.get("times", 1)):
            page.set_text("out", "<" * event.args["size"])
        live.group("room").set_text("note", "said")
        live.page("E" * 22).set_text("note", "said")
        page.join("said")

    @live.handler
    def join(page: t.Any, event: t.Any) -> None:
        for n in range(event.args["first"], event.args["last"] + 1):
            page.join(f"g{n}")
        for n in event.args.get("leave", []):
            page.leave(f"g{n}")

    return live, store, Client(live)


@pytest.mark.parametrize(
    ("args", "logged"),
    [
        pytest.param(
            {"size": MAX_COMMAND_BYTES // 6},  # each "<" is six bytes: \u003c
            f"The command ['text', 'out'] is 262,157 bytes encoded; the limit is"
            f" {MAX_COMMAND_BYTES:,} bytes.",
            id="one-command",
        ),
        pytest.param(
            {"size": 40_000, "times": 5},
            f"The handler queued 1,200,085 bytes of commands; one batch holds at most"
            f" {MAX_BATCH_BYTES:,} bytes.",
            id="one-batch",
        ),
    ],
)
def test_output_over_a_limit_fails_the_handler_and_commits_nothing(
    args: dict[str, int], logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, store, client = _limited()
    page = client.new_page()
    client.fire(page, "say", {"size": 1})
    with pytest.raises(HandlerFailed) as info:
        client.fire(page, "say", args)
    assert str(info.value) == TOO_MUCH_OUTPUT
    assert client.reply["batches"] == [{"seq": 2, "commands": [], "error": TOO_MUCH_OUTPUT}]
    assert logged in caplog.text
    record, mail = store.load(page.id)
    assert record is not None and record.state == {"said": 1}
    assert list(mail.groups) == ["said"]
    assert len(store.load("E" * 22)[1].inbox) == 1  # from the first event only
    assert client.fire(page, "say", {"size": 1}) == [["text", "out", "<"]]


def test_an_out_of_band_send_over_the_message_limit_raises_where_it_is_made() -> None:
    live, store, _ = _limited()
    with pytest.raises(TooMuchOutput, match=r"The group command \['text', 'x'\] is 65,"):
        live.group("room").set_text("x", "a" * MAX_MESSAGE_BYTES)
    with pytest.raises(TooMuchOutput, match=r"The out-of-band command \['text', 'x'\] is"):
        live.page("F" * 22).set_text("x", "a" * MAX_MESSAGE_BYTES)
    assert store.load("F" * 22)[1].inbox == []
    live.group("room").set_text("x", "a" * (MAX_MESSAGE_BYTES - 100))


def test_memberships_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    _, store, client = _limited()
    page = client.new_page()
    with pytest.raises(HandlerFailed):  # all at once
        client.fire(page, "join", {"first": 1, "last": MAX_MEMBERSHIPS + 1})
    assert f"a page may be in at most {MAX_MEMBERSHIPS}" in caplog.text
    assert store.load(page.id)[1].groups == {}
    client.fire(page, "join", {"first": 1, "last": MAX_MEMBERSHIPS})
    with pytest.raises(HandlerFailed):  # one more, later
        client.fire(page, "join", {"first": MAX_MEMBERSHIPS + 1, "last": MAX_MEMBERSHIPS + 1})
    assert len(store.load(page.id)[1].groups) == MAX_MEMBERSHIPS
    client.fire(page, "join", {"first": 0, "last": 0, "leave": [1]})  # leave one, join one
    assert sorted(store.load(page.id)[1].groups)[:2] == ["g0", "g10"]


def test_a_page_that_never_acknowledges_is_told_it_expired() -> None:
    _, store, client = _limited()
    page = client.new_page()
    size = 40_000  # 240 kB of \u003c: under the command limit, kept until acknowledged
    replies = []
    for seq in range(1, 13):
        query = {"p": page.token, "s": seq, "a": 0, "h": "say", "g": f'{{"size": {size}}}'}
        response = client.http.get(f"/_pb/event?{urlencode(query)}")
        assert len(response.data) <= MAX_ANSWER_BYTES
        replies.append((response.status_code, read_reply(response.text)))
    kept = MAX_UNACKED_BYTES // (size * 6) + 1
    assert [status for status, _ in replies[: kept + 1]] == [200] * kept + [410]
    assert replies[kept][1]["error"] == (
        "This page did not acknowledge more than 2,097,152 bytes of answers; reload it."
    )
    record, _ = store.load(page.id)
    assert record is not None and record.batches == []  # the backlog is gone
    assert {status for status, _ in replies[kept:]} == {410}  # and the page ended


def test_an_expire_behind_a_flood_still_ends_the_page() -> None:
    """1,001 messages and then ``expire()``: the page is told it fell behind, and it has
    ended all the same: no later event of it runs (and no later expire must reach it)."""
    live, store, client = _limited()
    page = client.new_page()
    client.fire(page, "join", {"first": 1, "last": 1})
    for n in range(MAX_WAITING + 1):
        live.group("g1").set_text("n", n)
    live.group("g1").expire()
    for _ in range(3):
        with pytest.raises(Rejected) as info:
            client.fire(page, "say", {"size": 1})
        assert info.value.code == "expired"
    record, _ = store.load(page.id)
    assert record is not None and record.state == {}  # "say" never ran


def test_state_larger_than_the_limit_fails_the_handler_and_commits_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    live = Piggyback(_app, store=store, secret_key="answer")

    @live.handler
    def grow(page: t.Any, event: t.Any) -> None:
        page.state["big"] = "x" * event.args["size"]

    client = Client(live)
    page = client.new_page()
    client.fire(page, "grow", {"size": MAX_STATE_BYTES - 20})
    with pytest.raises(HandlerFailed):
        client.fire(page, "grow", {"size": MAX_STATE_BYTES})
    record, _ = store.load(page.id)
    assert record is not None and len(record.state["big"]) == MAX_STATE_BYTES - 20
    assert f"bytes as JSON; the limit is {MAX_STATE_BYTES:,} bytes" in caplog.text


def test_a_page_with_too_many_bytes_waiting_is_told_it_expired() -> None:
    live, store, client = _limited()
    page = client.new_page()
    for _ in range(MAX_MAIL_BYTES // 60_000 + 1):
        live.page(page.id).set_text("x", "a" * 60_000)
    with pytest.raises(Rejected) as info:
        client.poll(page)
    assert (info.value.status, info.value.code) == (410, "expired")
    assert info.value.reason == (
        "More than 1,048,576 bytes of commands waited for this page; reload it."
    )
    assert store.load(page.id)[1] == Mail()


def test_a_page_with_damaged_data_is_told_it_expired_and_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, store, client = _limited()
    page = client.new_page()
    client.fire(page, "say", {"size": 1})
    store._records[page.id] = (time.time(), "{damaged")  # as an older release might
    with pytest.raises(Rejected) as info:
        client.poll(page)
    assert (info.value.status, info.value.code) == (410, "expired")
    assert info.value.reason == "This page's stored data is damaged; reload it."
    assert "damaged data" in caplog.text
    assert store.load(page.id)[1].groups == {}
    with pytest.raises(Rejected) as info:  # the page ended; its reload is a new page
        client.fire(page, "say", {"size": 2})
    assert info.value.code == "expired"
    assert client.fire(client.new_page(), "say", {"size": 2}) == [["text", "out", "<<"]]


def test_a_damaged_group_message_ends_each_member() -> None:
    live, store, client = _limited()
    pages = [client.new_page() for _ in range(3)]
    for page in pages:
        client.fire(page, "say", {"size": 1})  # each joins "said"
    live.group("said").set_text("x", "fine")
    at, n, _ = store._logs["said"][-1]
    store._logs["said"][-1] = (at, n, "[[")
    for page in pages:
        with pytest.raises(Rejected) as info:
            client.poll(page)
        assert info.value.status == 410
        with pytest.raises(Rejected) as info:  # no 5xx, ever: the page ended
            client.poll(page)
        assert info.value.status == 410


def test_a_lone_surrogate_sent_out_of_band_reaches_the_page() -> None:
    live, _, client = _limited()
    page = client.new_page()
    live.page(page.id).set_text("x", "cut \ud83d")
    assert client.poll(page) == [["text", "x", "cut \ud83d"]]
    assert b"cut \\ud83d" in client.response.data if client.response else False


def test_a_batch_that_cannot_be_written_is_never_stored() -> None:
    live, store, client = _limited()
    live.handler("broken")(lambda page, event: page.commands.append(["text", "x", {1, 2}]))
    page = client.new_page()
    with pytest.raises(TypeError, match="cannot be written as a JavaScript literal"):
        client.fire(page, "broken")
    assert store.load(page.id)[0] is None  # nothing committed, and the lease is free
    assert client.fire(page, "say", {"size": 1}) == [["text", "out", "<"]]
