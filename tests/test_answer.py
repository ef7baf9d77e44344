"""Answering: the exactly-once rules, through HTTP and without it."""

from __future__ import annotations

import collections
import time
import typing as t
from urllib.parse import urlencode

import pytest
from werkzeug.test import Client as HTTPClient
from werkzeug.wrappers import Response

from piggyback import Piggyback
from piggyback.answer import Answerer
from piggyback.answer import ENDED_SEQ
from piggyback.answer import MAX_UNACKED
from piggyback.answer import MAX_WAITING
from piggyback.answer import Result
from piggyback.event import Event
from piggyback.exceptions import EventRedirected
from piggyback.exceptions import EventRejected
from piggyback.exceptions import PageExpired
from piggyback.exceptions import StaleEvent
from piggyback.handles import PageHandle
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
from piggyback.page import Page
from piggyback.reply import Batch
from piggyback.reply import Reply
from piggyback.runner import Outcome
from piggyback.runner import run_directly
from piggyback.script import answer_document
from piggyback.script import CALL_PREFIX
from piggyback.script import CALL_SUFFIX
from piggyback.script import DOCUMENT_PREFIX
from piggyback.script import DOCUMENT_SUFFIX
from piggyback.stores import MemoryStore
from piggyback.stores.base import Changes
from piggyback.stores.base import dump_record
from piggyback.stores.base import LeaseLost
from piggyback.stores.base import load_record
from piggyback.stores.base import Mail
from piggyback.stores.base import PageRecord
from piggyback.testing import Client
from piggyback.testing import HandlerFailed
from piggyback.testing import read_reply
from piggyback.testing import Rejected


def _app(environ: t.Any, start_response: t.Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b""]


def _setting_cookie(cookie: str) -> Response:
    """What a handler returns to set a cookie with the event's answer."""
    response = Response()
    response.headers.add("Set-Cookie", cookie)
    return response


def test_a_replay_sends_the_handlers_headers_again_but_not_to_the_client() -> None:
    """A retry after a lost answer carries the cookies the first request carried."""
    live = Piggyback(_app, store=MemoryStore(), secret_key="answer")
    runs = []

    @live.handler
    def login(page: t.Any, event: t.Any) -> Response:
        runs.append(event.seq)
        page.set_text("who", "ada")
        return _setting_cookie("session=abc; HttpOnly")

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
    live.handler("login")(lambda page, event: _setting_cookie("session=abc; HttpOnly"))
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


# The answering rules without HTTP: an Answerer on a store that counts its leases


class CountingStore(MemoryStore):
    """A memory store that counts how each lease was taken and ended, and can make the
    next save find its lease taken over."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()
        self.take_over = False

    def begin(self, page_id: str, lease: float) -> t.Any:
        begun = super().begin(page_id, lease)
        self.calls["take" if begun is not None else "busy"] += 1
        return begun

    def save(self, page_id: str, owner: str, changes: Changes) -> None:
        if self.take_over:
            self._leases[page_id] = ("another", time.time() + 60)
        try:
            super().save(page_id, owner, changes)
        except LeaseLost:
            self.calls["lost"] += 1
            raise
        self.calls["save"] += 1

    def unlock(self, page_id: str, owner: str) -> None:
        self.calls["release"] += 1
        super().unlock(page_id, owner)

    def ended_once(self) -> bool:
        """Every lease taken was saved, released or lost exactly once; none is held."""
        ends = self.calls["save"] + self.calls["release"] + self.calls["lost"]
        return ends == self.calls["take"] and not self._leases


PAGE = "P" * 22


def _event(seq: int, handler: str | None = "h", cookie: str = "b=1") -> Event:
    environ = {"REQUEST_METHOD": "GET", "HTTP_COOKIE": cookie, "PATH_INFO": "/_pb/event"}
    return Event(
        name="click", handler=handler, target=None, args={}, value=None, environ=environ, seq=seq
    )


def _counter(page: Page, event: Event) -> None:
    page.state["n"] = page.state.get("n", 0) + 1
    page.set_text("n", page.state["n"])


def _respond(
    answerer: Answerer, seq: int, ack: int = 0, handler: t.Any = _counter, **kw: t.Any
) -> Result:
    event = _event(seq, None if handler is None else "h", **kw)
    return answerer.respond(PAGE, event, handler, ack=ack, token="tok")


def _commands(result: Result) -> list[list[t.Any]]:
    return [command for batch in result.reply.batches for command in batch.commands]


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def answerer(store: CountingStore) -> Answerer:
    return Answerer(store, lease_wait=0)


def test_an_event_commits_its_sequence_number_state_and_batch(
    answerer: Answerer, store: CountingStore
) -> None:
    result = _respond(answerer, 1)
    assert (result.status, result.refusal) == (200, None)
    assert result.reply.for_client() == {
        "seq": 1,
        "batches": [{"seq": 1, "commands": [["text", "n", "1"]]}],
        "token": "tok",
    }
    assert result.document == answer_document(result.reply.for_client())[0]
    record, _ = store.load(PAGE)
    assert record == PageRecord(seq=1, state={"n": 1}, batches=[Batch(1, [["text", "n", "1"]])])
    assert store.calls == {"take": 1, "save": 1}


def test_a_replay_runs_nothing_and_answers_the_same(
    answerer: Answerer, store: CountingStore
) -> None:
    first = _respond(answerer, 1)
    again = _respond(answerer, 1)
    assert again.reply == first.reply and again.document == first.document
    assert store.load(PAGE)[0] == PageRecord(
        seq=1, state={"n": 1}, batches=[Batch(1, [["text", "n", "1"]])]
    )
    assert store.calls == {"take": 2, "save": 1, "release": 1}


def test_sequence_numbers_may_skip(answerer: Answerer, store: CountingStore) -> None:
    _respond(answerer, 1)
    result = _respond(answerer, 5, ack=1)
    assert [b.seq for b in result.reply.batches] == [5]
    assert _commands(result) == [["text", "n", "2"]]
    assert _respond(answerer, 3, ack=1).refusal is not None  # below 5: never run


def test_an_acknowledged_event_is_stale(answerer: Answerer, store: CountingStore) -> None:
    _respond(answerer, 1)
    _respond(answerer, 2, ack=1)
    result = _respond(answerer, 1, ack=1)
    assert isinstance(result.refusal, StaleEvent)
    assert (result.status, result.reply.for_client()) == (
        409,
        {
            "seq": 1,
            "code": "stale",
            "error": "The event 1 was answered already, and its answer is no longer kept.",
        },
    )
    assert store.load(PAGE)[0].state == {"n": 2}  # type: ignore[union-attr]


def test_unacknowledged_batches_are_redelivered_first_in_order(
    answerer: Answerer, store: CountingStore
) -> None:
    for seq in (1, 2, 3):
        _respond(answerer, seq)
    result = _respond(answerer, 4, ack=1)
    assert [b.seq for b in result.reply.batches] == [2, 3, 4]
    assert _commands(result) == [["text", "n", str(n)] for n in (2, 3, 4)]
    record = store.load(PAGE)[0]
    assert record is not None and [b.seq for b in record.batches] == [2, 3, 4]


def test_out_of_band_mail_comes_before_the_handlers_commands(
    answerer: Answerer, store: CountingStore
) -> None:
    store.push(PAGE, [["text", "a", "out"]])
    result = _respond(answerer, 1)
    assert _commands(result) == [["text", "a", "out"], ["text", "n", "1"]]
    assert store.load(PAGE)[1].inbox == []


def test_a_failing_handler_commits_its_batch_but_not_its_effects(
    answerer: Answerer, store: CountingStore, caplog: pytest.LogCaptureFixture
) -> None:
    _respond(answerer, 1)
    store.push(PAGE, [["text", "a", "out"]])

    def broken(page: Page, event: Event) -> None:
        page.state["n"] = 99
        page.set_text("lost", "x")
        raise RuntimeError("broken")

    result = _respond(answerer, 2, ack=1, handler=broken)
    failed = "The handler failed; the server logged the error."
    assert result.reply.batches == [Batch(2, [["text", "a", "out"]], error=failed)]
    record = store.load(PAGE)[0]
    assert record is not None and (record.seq, record.state) == (2, {"n": 1})
    assert "broken" in caplog.text


@pytest.mark.parametrize(
    ("hook", "status"),
    [
        pytest.param(EventRejected("No.", code="forbidden", status=403), 403, id="rejected"),
        pytest.param(PageExpired("Gone."), 410, id="expired"),
        pytest.param(EventRedirected("/login"), 200, id="redirected"),
    ],
)
def test_a_hooks_refusal_commits_nothing(
    store: CountingStore, hook: EventRejected, status: int
) -> None:
    def refuse(page: Page, event: Event) -> None:
        if event.seq == 1:
            return
        page.state["n"] = 99
        raise hook

    def host(handler: t.Any, page: Page, event: Event) -> Outcome:
        """A host framework, which set a cookie while the hook refused the event."""
        try:
            return run_directly(handler, page, event)
        except EventRejected as refusal:
            return Outcome(headers=(("Set-Cookie", "session=changed"),), refusal=refusal)

    answerer = Answerer(store, lease_wait=0, hooks=[refuse], runner=host)
    _respond(answerer, 1, handler=lambda page, event: None)
    store.push(PAGE, [["text", "a", "waits"]])
    before = store.load(PAGE)
    result = _respond(answerer, 2, ack=1)
    assert result.status == status
    assert result.headers == [("Set-Cookie", "session=changed")]
    assert store.load(PAGE) == before  # the mail still waits, nothing else changed
    assert store.calls == {"take": 2, "save": 1, "release": 1}
    if isinstance(hook, EventRedirected):
        assert result.reply.batches == [Batch(2, [["redirect", "/login"]])]
    else:
        assert result.refusal is hook


def test_a_page_the_app_ended_is_expired_and_forgotten_once(
    answerer: Answerer, store: CountingStore
) -> None:
    _respond(answerer, 1)
    store.join(PAGE, "room")
    PageHandle(store, PAGE).expire()
    first = _respond(answerer, 2, ack=1)
    assert (first.status, first.reply.code) == (410, "expired")
    assert store.load(PAGE)[1] == Mail()  # left its groups, inbox dropped
    second = _respond(answerer, 3, ack=1)
    assert second.reply == Reply(3, code="expired", error=first.reply.error)
    assert store.calls == {"take": 3, "save": 2, "release": 1}  # ended once, then read
    assert store.ended_once()


def test_an_unknown_page_that_acknowledged_something_is_expired(
    answerer: Answerer, store: CountingStore
) -> None:
    result = _respond(answerer, 2, ack=1)
    assert result.reply.error == "The server no longer knows this page; reload it."
    assert store.load(PAGE)[0] is None
    assert store.calls == {"take": 1, "release": 1}


def test_a_page_too_far_behind_is_expired_and_its_mail_dropped(
    answerer: Answerer, store: CountingStore
) -> None:
    for n in range(MAX_WAITING + 1):
        store.push(PAGE, [["text", "n", str(n)]])
    result = _respond(answerer, 1)
    assert (
        result.reply.error == f"More than {MAX_WAITING} commands waited for this page; reload it."
    )
    assert store.load(PAGE) == (PageRecord(seq=ENDED_SEQ), Mail())  # ended
    assert store.calls == {"take": 1, "save": 1}


def test_a_young_pages_empty_poll_takes_no_lease(answerer: Answerer, store: CountingStore) -> None:
    _respond(answerer, 1)
    event = _event(2, handler=None)
    result = answerer.respond(PAGE, event, None, ack=0, token="tok", young=True)
    assert [b.seq for b in result.reply.batches] == [1]  # not acknowledged yet
    assert store.calls == {"take": 1, "save": 1}
    store.push(PAGE, [["text", "a", "1"]])  # mail waits: it needs the lease
    result = answerer.respond(PAGE, _event(3, None), None, ack=1, token="tok", young=True)
    assert result.reply.batches == [Batch(3, [["text", "a", "1"]])]
    assert store.calls == {"take": 2, "save": 2}


def test_a_lease_taken_over_meanwhile_answers_busy_and_saves_nothing(
    answerer: Answerer, store: CountingStore
) -> None:
    store.take_over = True
    result = _respond(answerer, 1)
    assert (result.status, result.reply.code) == (409, "busy")
    assert store.calls == {"take": 1, "lost": 1}  # nothing left to release
    assert store.load(PAGE)[0] is None


def test_a_busy_page_answers_busy_and_takes_nothing(
    answerer: Answerer, store: CountingStore
) -> None:
    owner = store.lock(PAGE, 60)
    result = _respond(answerer, 1)
    assert (result.status, result.reply.code) == (409, "busy")
    assert store.calls == {"busy": 1}
    assert owner is not None and store._leases[PAGE][0] == owner


def test_the_lease_is_released_when_the_document_cannot_be_written(
    answerer: Answerer, store: CountingStore
) -> None:
    with pytest.raises(TypeError, match="cannot be written"):
        _respond(answerer, 1, handler=lambda page, event: page.commands.append([{1}]))
    assert store.calls == {"take": 1, "release": 1}
    assert store.load(PAGE)[0] is None


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([(1, 0, _counter)], id="event"),
        pytest.param([(1, 0, _counter), (1, 0, _counter)], id="replay"),
        pytest.param([(1, 0, None), (2, 1, _counter)], id="poll-then-event"),
        pytest.param([(2, 1, _counter)], id="unknown"),
        pytest.param([(1, 0, _counter), (1, 1, _counter)], id="stale"),
        pytest.param(
            [(1, 0, lambda page, event: (_ for _ in ()).throw(KeyError("x")))], id="failed"
        ),
    ],
)
def test_every_lease_ends_exactly_once(
    answerer: Answerer, store: CountingStore, steps: list[tuple[int, int, t.Any]]
) -> None:
    for seq, ack, handler in steps:
        _respond(answerer, seq, ack, handler)
    assert store.calls["take"] == len(steps)
    assert store.ended_once()


def test_an_acknowledgement_drops_the_batches_up_to_it(
    answerer: Answerer, store: CountingStore
) -> None:
    for seq in (1, 2, 3):
        _respond(answerer, seq)
    result = _respond(answerer, 4, ack=3)
    assert [b.seq for b in result.reply.batches] == [4]
    record = store.load(PAGE)[0]
    assert record is not None and [b.seq for b in record.batches] == [4]


def test_at_most_max_unacked_batches_are_kept(answerer: Answerer, store: CountingStore) -> None:
    for seq in range(1, MAX_UNACKED + 3):
        result = _respond(answerer, seq)
    expected = list(range(3, MAX_UNACKED + 3))
    assert [b.seq for b in result.reply.batches] == expected
    record = store.load(PAGE)[0]
    assert record is not None and [b.seq for b in record.batches] == expected


def test_mail_is_delivered_in_send_order_across_inbox_and_groups(
    answerer: Answerer, store: CountingStore
) -> None:
    store.join(PAGE, "a")
    store.join(PAGE, "b")
    store.publish("a", [["text", "x", "1"]])
    store.push(PAGE, [["text", "x", "2"]])
    store.publish("b", [["text", "x", "3"]])
    store.publish("a", [["text", "x", "4"]])
    store.push(PAGE, [["text", "x", "5"], ["text", "x", "6"]])
    result = _respond(answerer, 1)
    assert _commands(result) == [["text", "x", str(n)] for n in range(1, 7)] + [["text", "n", "1"]]
    _, mail = store.load(PAGE)
    assert mail.inbox == [] and mail.groups == {"a": [], "b": []}  # delivered once
    assert _commands(_respond(answerer, 2, ack=1)) == [["text", "n", "2"]]


def test_a_poll_delivers_the_mail_and_runs_nothing(
    answerer: Answerer, store: CountingStore
) -> None:
    store.push(PAGE, [["text", "a", "out"]])
    result = _respond(answerer, 1, handler=None)
    assert result.reply.batches == [Batch(1, [["text", "a", "out"]])]
    assert store.load(PAGE)[0] == PageRecord(seq=1, batches=result.reply.batches)


def test_a_runners_headers_are_kept_and_replayed_to_the_same_requester_only(
    store: CountingStore,
) -> None:
    cookie = ("Set-Cookie", "session=abc")

    def host(handler: t.Any, page: Page, event: Event) -> Outcome:
        return Outcome(run_directly(handler, page, event).result, (cookie,))

    answerer = Answerer(store, lease_wait=0, runner=host)
    first = _respond(answerer, 1, cookie="b=1")
    assert first.headers == [cookie]
    assert _respond(answerer, 1, cookie="b=1").headers == [cookie]
    assert _respond(answerer, 1, cookie="b=2").headers == []
    assert "headers" not in str(first.reply.for_client())


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(KeyboardInterrupt(), id="interrupted"),
        pytest.param(SystemExit(1), id="exiting"),
    ],
)
def test_the_lease_is_released_when_the_runner_is_interrupted(
    store: CountingStore, error: BaseException
) -> None:
    def runner(handler: t.Any, page: Page, event: Event) -> t.Any:
        raise error

    answerer = Answerer(store, lease_wait=0, runner=runner)
    with pytest.raises(type(error)):
        _respond(answerer, 1)
    assert store.calls == {"take": 1, "release": 1}
    assert store.ended_once() and store.load(PAGE)[0] is None


def test_the_lease_is_released_when_the_store_fails_to_save(
    answerer: Answerer, store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(page_id: str, owner: str, changes: Changes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        _respond(answerer, 1)
    assert store.calls == {"take": 1, "release": 1}
    assert not store._leases  # the next event of the page need not wait


def test_what_a_page_queued_while_rendering_commits_through_its_lease(
    answerer: Answerer, store: CountingStore
) -> None:
    page = Page(PAGE)
    page.state["n"] = 5
    page.set_text("hello", "1")
    page.join("room")
    answerer.keep(page)
    record, mail = store.load(PAGE)
    assert record == PageRecord(state={"n": 5})
    assert [commands for _, commands in mail.inbox] == [[["text", "hello", "1"]]]
    assert list(mail.groups) == ["room"]
    assert store.calls == {"take": 1, "save": 1}
    result = _respond(answerer, 1)
    assert _commands(result) == [["text", "hello", "1"], ["text", "n", "6"]]


def test_a_render_keeps_the_record_of_an_event_that_committed_first(
    answerer: Answerer, store: CountingStore
) -> None:
    _respond(answerer, 1)
    page = Page(PAGE, state={"n": 0})
    page.set_text("late", "1")
    answerer.keep(page)
    record, mail = store.load(PAGE)
    assert record is not None and (record.seq, record.state) == (1, {"n": 1})
    assert len(mail.inbox) == 1


def test_a_render_of_a_busy_page_keeps_nothing_and_says_so(
    answerer: Answerer, store: CountingStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.lock(PAGE, 60)
    answerer.keep(Page(PAGE, state={"n": 1}))
    assert "was busy while it rendered" in caplog.text
    assert store.calls == {"busy": 1}


def test_a_render_that_queued_nothing_takes_no_lease(
    answerer: Answerer, store: CountingStore
) -> None:
    answerer.keep(Page(PAGE))
    assert store.calls == {}


# The stored form of batches: records written before batches were typed still load

#: A record as the dict-based code wrote it: a batch with headers, a failed one that asked to poll.
OLD_RECORD = (
    '{"seq":3,"state":{"n":2},"batches":['
    '{"seq":2,"commands":[["text","n","2"]],"headers":[["Set-Cookie","s=1"]],'
    '"requester":"3f1c"},'
    '{"seq":3,"commands":[],"error":"The handler failed.","poll":5}]}'
)


def test_a_record_written_before_batches_were_typed_loads() -> None:
    record = load_record(OLD_RECORD)
    assert record == PageRecord(
        seq=3,
        state={"n": 2},
        batches=[
            Batch(2, [["text", "n", "2"]], headers=[("Set-Cookie", "s=1")], requester="3f1c"),
            Batch(3, [], error="The handler failed.", poll=5),
        ],
    )
    assert dump_record(record) == OLD_RECORD  # and is written back the same


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param('{"commands":[]}', id="no-seq"),
        pytest.param('{"seq":"1","commands":[]}', id="text-seq"),
        pytest.param('{"seq":1,"commands":{}}', id="commands-not-a-list"),
        pytest.param('{"seq":1,"commands":[],"headers":[["a"]]}', id="bad-header"),
        pytest.param("[1]", id="not-an-object"),
        pytest.param('{"seq":1,"commands":[5]}', id="command-not-a-list"),
        pytest.param('{"seq":1,"commands":[],"error":["x"]}', id="error-not-text"),
        pytest.param('{"seq":1,"commands":[],"poll":"5"}', id="poll-text"),
        pytest.param('{"seq":1,"commands":[],"poll":NaN}', id="poll-nan"),
    ],
)
def test_a_damaged_batch_damages_the_record(batch: str) -> None:
    assert load_record(f'{{"seq":1,"state":{{}},"batches":[{batch}]}}').damaged


def test_the_client_never_sees_a_batchs_headers() -> None:
    batch = Batch(1, [["js", "x"]], headers=[("Set-Cookie", "s=1")], requester="r")
    assert batch.for_client() == {"seq": 1, "commands": [["js", "x"]]}
    assert Reply(1, [batch], poll=0, token="t").for_client() == {
        "seq": 1,
        "batches": [{"seq": 1, "commands": [["js", "x"]]}],
        "poll": 0,
        "token": "t",
    }


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(1, [Batch(1, [["text", "a", "<&>"]])], token="t"), id="answered"),
        pytest.param(
            Reply(3, [Batch(2, [], error="failed"), Batch(3, [], poll=5)], poll=5, token="t"),
            id="failed-and-polling",
        ),
        pytest.param(Reply(None, code="bad_token", error="Forged."), id="refused"),
        pytest.param(Reply(7, code="busy"), id="refused-without-reason"),
        pytest.param(Reply(2), id="no-batches"),
        pytest.param(Reply(2**53, poll=0), id="largest-seq-and-poll-stopped"),
        pytest.param(
            Reply(9, [Batch(8, [["js", "x()"], ["text", "a", "\u2028</script>"]], poll=0.25)]),
            id="fractional-poll-and-escaped-text",
        ),
    ],
)
def test_a_reply_reads_back_from_its_document(reply: Reply) -> None:
    """One parser of the answer document: what the test client reads is the Reply."""
    document, _ = answer_document(reply.for_client())
    assert Reply.from_document(document) == reply
    assert read_reply(document.decode()) == reply.for_client()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param([], id="not-an-object"),
        pytest.param({"batches": []}, id="no-seq"),
        pytest.param({"seq": 1, "batches": [{"seq": 1}]}, id="batch-without-commands"),
        pytest.param(
            {"seq": 1, "batches": [{"seq": 1, "commands": [], "headers": [["a", "b"]]}]},
            id="batch-with-headers",
        ),
    ],
)
def test_what_is_not_a_reply_is_refused(data: t.Any) -> None:
    with pytest.raises(ValueError, match="Not a reply"):
        Reply.from_client(data)


def _batch_refused(index: int, batch: str) -> str:
    return (
        f"Not a reply: its batch {index} is not one (an object with an int seq, a list of"
        " commands, each a list, and perhaps a str error and a poll of seconds from 0):"
        f" {batch}."
    )


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        pytest.param("{}", "Not a reply: it has no seq: {}.", id="empty"),
        pytest.param('{"batches":[]}', "Not a reply: it has no seq: {'batches': []}.", id="no-seq"),
        pytest.param(
            '{"seq":"1","batches":[]}',
            "Not a reply: its seq must be an int, not '1'.",
            id="text-seq",
        ),
        pytest.param(
            '{"seq":true,"batches":[]}',
            "Not a reply: its seq must be an int, not True.",
            id="bool-seq",
        ),
        pytest.param(
            '{"seq":null,"batches":[]}',
            "Not a reply: its seq must be an int, not None.",
            id="answered-null-seq",
        ),
        pytest.param(
            '{"seq":1.5,"code":"busy"}',
            "Not a reply: a refused reply's seq must be an int or null, not 1.5.",
            id="refused-float-seq",
        ),
        pytest.param(
            '{"seq":1,"code":[1]}',
            "Not a reply: its code must be a str, not [1].",
            id="code-not-str",
        ),
        pytest.param(
            '{"seq":1,"code":null,"error":"x"}',
            "Not a reply: its code must be a str, not None.",
            id="code-null",
        ),
        pytest.param(
            '{"seq":1,"code":"busy","error":{}}',
            "Not a reply: its error must be a str, not {}.",
            id="error-not-str",
        ),
        pytest.param(
            '{"seq":1,"batches":5}',
            "Not a reply: its batches must be a list, not 5.",
            id="batches-a-number",
        ),
        pytest.param(
            '{"seq":1,"batches":null}',
            "Not a reply: its batches must be a list, not None.",
            id="batches-null",
        ),
        pytest.param(
            '{"seq":1,"batches":[{"seq":1,"commands":[]},7]}',
            _batch_refused(1, "7"),
            id="batch-not-an-object",
        ),
        pytest.param(
            '{"seq":1,"batches":[{"seq":false,"commands":[]}]}',
            _batch_refused(0, "{'commands': [], 'seq': False}"),
            id="batch-bool-seq",
        ),
        pytest.param(
            '{"seq":1,"batches":[{"seq":1,"commands":[5]}]}',
            _batch_refused(0, "{'commands': [5], 'seq': 1}"),
            id="command-not-a-list",
        ),
        pytest.param(
            '{"seq":1,"batches":[{"seq":1,"commands":[],"error":1}]}',
            _batch_refused(0, "{'commands': [], 'error': 1, 'seq': 1}"),
            id="batch-error-not-str",
        ),
        pytest.param(
            '{"seq":1,"batches":[{"seq":1,"commands":[],"poll":-1}]}',
            _batch_refused(0, "{'commands': [], 'poll': -1, 'seq': 1}"),
            id="batch-poll-negative",
        ),
        pytest.param(
            '{"seq":1,"batches":[{"seq":1,"commands":[],"headers":[]}]}',
            _batch_refused(0, "{'commands': [], 'headers': [], 'seq': 1}"),
            id="batch-with-headers-key",
        ),
        pytest.param(
            '{"seq":1,"batches":[],"poll":"5"}',
            "Not a reply: its poll must be a finite number of seconds from 0, not '5'.",
            id="poll-text",
        ),
        pytest.param(
            '{"seq":1,"batches":[],"poll":false}',
            "Not a reply: its poll must be a finite number of seconds from 0, not False.",
            id="poll-bool",
        ),
        pytest.param(
            '{"seq":1,"batches":[],"poll":1e999}',
            "Not a reply: its poll must be a finite number of seconds from 0, not inf.",
            id="poll-overflows-to-infinity",
        ),
        pytest.param(
            '{"seq":1,"batches":[],"token":7}',
            "Not a reply: its token must be a str, not 7.",
            id="token-not-str",
        ),
    ],
)
def test_a_document_with_a_malformed_reply_is_refused(reply: str, message: str) -> None:
    """Whatever the document carries, reading it raises ValueError, saying what is wrong."""
    document = f"{DOCUMENT_PREFIX}{CALL_PREFIX}{reply}{CALL_SUFFIX}{DOCUMENT_SUFFIX}"
    with pytest.raises(ValueError) as info:
        Reply.from_document(document.encode())
    assert (type(info.value), str(info.value)) == (ValueError, message)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            12, "Not an answer document: it must be a str or bytes, not int.", id="not-text"
        ),
        pytest.param(
            DOCUMENT_PREFIX + CALL_PREFIX + '{"seq":NaN}' + CALL_SUFFIX + DOCUMENT_SUFFIX,
            "Not an answer document: its reply is not JSON (NaN is not JSON): '{\"seq\":NaN}'.",
            id="nan-seq",
        ),
        pytest.param(
            DOCUMENT_PREFIX + CALL_PREFIX + "[" * 5000 + "]" * 5000 + CALL_SUFFIX + DOCUMENT_SUFFIX,
            f"Not an answer document: its reply is nested too deeply: {'[' * 5000!r:.200}.",
            id="nested-too-deeply",
        ),
    ],
)
def test_what_is_not_an_answer_document_is_refused(document: t.Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Reply.from_document(document)
    assert (type(info.value), str(info.value)) == (ValueError, message)


def test_a_reply_nested_too_deeply_is_refused_with_a_short_message() -> None:
    """Not a RecursionError from showing it: repr() of it would recurse that deep."""
    nested: list[t.Any] = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(ValueError) as info:
        Reply.from_client({"seq": nested})
    assert str(info.value) == "Not a reply: its seq must be an int, not [[[[[[[[[...]]]]]]]]]."
