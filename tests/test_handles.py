"""Out-of-band handles: group sends reach their own page at once, and ``exclude``.

Each test runs on the three stores: the sender's copy and the marker that keeps it (and
an excluded page) from getting the stored message need nothing of a store but storage.
"""

from __future__ import annotations

import typing as t
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis

from piggyback import GroupHandle
from piggyback import Piggyback
from piggyback.limits import MAX_MESSAGE_BYTES
from piggyback.limits import TOO_MUCH_OUTPUT
from piggyback.stores import MemoryStore
from piggyback.stores import store_from_url
from piggyback.stores.base import Store
from piggyback.testing import Client
from piggyback.testing import HandlerFailed
from piggyback.testing import read_reply
from piggyback.testing import Rejected
from piggyback.testing import TestPage

from .redis_server import redis_server

APPEND = ["append", "log", "hi"]


def _app(environ: t.Any, start_response: t.Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b""]


@pytest.fixture(scope="module")
def redis_url() -> t.Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[Store]:
    if request.param == "memory":
        opened: Store = MemoryStore()
    elif request.param == "sqlite":
        opened = store_from_url(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    else:
        url = request.getfixturevalue("redis_url")
        with redis.Redis.from_url(url) as client:
            client.flushdb()
        opened = store_from_url(url)
    yield opened
    opened.close()


def _group(live: Piggyback, name: str, exclude: str | None = None) -> GroupHandle:
    return live.group(name, exclude=exclude)


def _room(store: Store) -> tuple[Piggyback, Client]:
    """An app whose ``steps`` handler does what its arguments list, in order."""
    live = Piggyback(_app, store=store, secret_key="groups")

    @live.handler
    def steps(page: t.Any, event: t.Any) -> None:
        for step, *args in event.args["steps"]:
            if step == "text":
                page.set_text("a", "1")
            elif step == "focus":
                page.focus("b")
            elif step == "join":
                page.join(args[0])
            elif step == "leave":
                page.leave(args[0])
            elif step == "send":  # ["send", group] or ["send", group, excluded page]
                _group(live, args[0], *args[1:]).append("log", "hi")
            elif step == "big":
                live.group("room").set_text("big", "a" * (MAX_MESSAGE_BYTES - 100))
            elif step == "expire":
                _group(live, args[0], *args[1:]).expire()
            elif step == "fail":
                raise RuntimeError("the handler failed after sending")

    return live, Client(live)


def _members(client: Client, count: int, group: str = "room") -> list[TestPage]:
    pages = [client.new_page() for _ in range(count)]
    for page in pages:
        client.fire(page, "steps", {"steps": [["join", group]]})
    return pages


def test_a_group_send_reaches_the_sender_in_the_same_answer_in_order(store: Store) -> None:
    _, client = _room(store)
    sender, other = _members(client, 2)
    steps = [["text"], ["send", "room"], ["focus"]]
    assert client.fire(sender, "steps", {"steps": steps}) == [
        ["text", "a", "1"],
        APPEND,
        ["focus", "b"],
    ]
    assert client.poll(sender) == []  # not again
    assert client.poll(other) == [APPEND]
    assert client.response is not None and b"skip" not in client.response.data  # the marker
    assert client.poll(other) == []


def test_the_senders_copy_arrives_once_across_a_retry_and_later_polls(store: Store) -> None:
    live, client = _room(store)
    sender, other = _members(client, 2)
    seq, acked = sender.seq + 1, sender.applied
    query = {"p": sender.token, "s": seq, "a": acked, "h": "steps"}
    query["g"] = '{"steps": [["send", "room"], ["text"]]}'
    url = f"{live.mount}/event?{urlencode(query)}"
    first = read_reply(client.http.get(url).text)  # the answer was lost ...
    retry = read_reply(client.http.get(url).text)  # ... so the client sends it again
    answered = [{"seq": seq, "commands": [APPEND, ["text", "a", "1"]]}]
    assert first["batches"] == answered
    assert retry["batches"] == answered
    sender.seq = seq  # the client applied the retry's answer
    assert client.poll(sender) == [APPEND, ["text", "a", "1"]]
    assert client.poll(sender) == []
    assert client.poll(other) == [APPEND]


def test_a_failing_handler_sends_nothing_to_anyone(store: Store) -> None:
    _, client = _room(store)
    sender, other = _members(client, 2)
    with pytest.raises(HandlerFailed):
        client.fire(sender, "steps", {"steps": [["send", "room"], ["fail"]]})
    assert client.reply["batches"][-1]["commands"] == []
    assert client.poll(sender) == []
    assert client.poll(other) == []
    assert client.fire(sender, "steps", {"steps": [["send", "room"]]}) == [APPEND]
    assert client.poll(other) == [APPEND]


@pytest.mark.parametrize(
    ("steps", "now", "later"),
    [
        pytest.param([["join", "new"], ["send", "new"]], [APPEND], [], id="join-then-send"),
        pytest.param([["send", "new"], ["join", "new"]], [], [], id="send-then-join"),
        pytest.param([["send", "room"], ["leave", "room"]], [APPEND], [], id="send-then-leave"),
        pytest.param([["leave", "room"], ["send", "room"]], [], [], id="leave-then-send"),
        pytest.param([["send", "other"]], [], [], id="not-a-member"),
    ],
)
def test_the_sender_gets_what_it_sends_while_it_is_a_member(
    store: Store, steps: list[list[str]], now: list[t.Any], later: list[t.Any]
) -> None:
    """Membership at the moment of the send decides, as if the send were delivered
    then: a page receives what a group gets after it joined and before it left."""
    _, client = _room(store)
    (sender,) = _members(client, 1)
    assert client.fire(sender, "steps", {"steps": steps}) == now
    assert client.poll(sender) == later


def test_exclude_leaves_one_page_out_of_sends_from_outside(store: Store) -> None:
    live, client = _room(store)
    one, two, three = _members(client, 3)
    room = _group(live, "room", exclude=two.id)
    room.set_text("a", "1")
    room.append("log", "hi")
    live.group("room").focus("b")  # a handle without exclude leaves nobody out
    for page in (one, three):
        assert client.poll(page) == [["text", "a", "1"], APPEND, ["focus", "b"]]
        assert client.poll(page) == []
    assert client.poll(two) == [["focus", "b"]]
    assert client.poll(two) == []


@pytest.mark.parametrize(
    ("excluded", "sender_gets"),
    [
        pytest.param(0, [], id="exclude-the-sender"),
        pytest.param(1, [APPEND], id="exclude-another"),
    ],
)
def test_exclude_in_a_handler(store: Store, excluded: int, sender_gets: list[t.Any]) -> None:
    _, client = _room(store)
    pages = _members(client, 3)
    left_out = pages[excluded]
    steps = [["send", "room", left_out.id]]
    assert client.fire(pages[0], "steps", {"steps": steps}) == sender_gets
    for page in pages:
        assert client.poll(page) == ([] if page in (pages[0], left_out) else [APPEND])


def test_exclude_spares_one_page_of_an_expiring_group(store: Store) -> None:
    """``live.group(user, exclude=page.id).expire()``: log out everywhere else."""
    _, client = _room(store)
    here, elsewhere = _members(client, 2, group="user:7")
    client.fire(here, "steps", {"steps": [["expire", "user:7", here.id]]})
    assert client.poll(here) == []
    with pytest.raises(Rejected) as info:
        client.poll(elsewhere)
    assert info.value.code == "expired"


def test_a_group_expire_sent_by_a_member_ends_it_on_its_next_request(store: Store) -> None:
    _, client = _room(store)
    (here,) = _members(client, 1, group="user:7")
    assert client.fire(here, "steps", {"steps": [["expire", "user:7"], ["text"]]}) == [
        ["text", "a", "1"]
    ]
    with pytest.raises(Rejected) as info:
        client.poll(here)
    assert info.value.code == "expired"


def test_the_senders_copies_count_toward_its_batch(store: Store) -> None:
    """Each send is within its own limit, but a member's answer would hold them all."""
    _, client = _room(store)
    member, other = _members(client, 2)
    outsider = client.new_page()
    many = [["big"]] * 17  # 17 x 64 KiB: over the 1 MiB of one batch
    with pytest.raises(HandlerFailed) as info:
        client.fire(member, "steps", {"steps": many})
    assert str(info.value) == TOO_MUCH_OUTPUT
    assert client.poll(other) == []  # nothing was published
    assert client.fire(outsider, "steps", {"steps": many}) == []


@pytest.mark.parametrize(
    "exclude",
    [
        pytest.param("", id="empty"),
        pytest.param(42, id="int"),
        pytest.param("x" * 201, id="too-long"),
    ],
)
def test_exclude_takes_a_page_id(exclude: t.Any) -> None:
    live, _ = _room(MemoryStore())
    with pytest.raises(ValueError) as info:
        _group(live, "room", exclude=exclude)
    assert str(info.value) == (
        f"exclude takes a page id (page.id): a str of 1 to 200 characters, not {exclude!r}."
    )


def test_a_handle_shows_what_it_excludes() -> None:
    store = MemoryStore()
    assert repr(GroupHandle(store, "room")) == "<GroupHandle 'room'>"
    assert repr(GroupHandle(store, "room", exclude="p1")) == "<GroupHandle 'room' exclude='p1'>"
