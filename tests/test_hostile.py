"""Hostile input against a real ``gunicorn -w 2`` (SECURITY.md, "Hostile input").

Each test is an attack of issue 12, sent as an attacker sends it, over HTTP: on the
default store, and where many machines matter, on Redis too. Each asserts the bound
piggyback promises, and that every page goes on working afterwards.
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlencode

import pytest

from piggyback import limits
from piggyback.handles import GroupHandle
from piggyback.stores import store_from_url
from piggyback.testing import read_reply

from .http_client import RemotePage
from .http_client import send
from .redis_server import redis_server
from .servers import gunicorn

STORES = [pytest.param("default", id="default"), pytest.param("redis", id="redis")]
REDIS_DBS = {"examples.counter:app": 1, "tests.live_app:app": 2}


@pytest.fixture(scope="module")
def redis_url() -> t.Iterator[str]:
    with redis_server() as url:
        yield url


def _serve(
    app: str, store: str, tmp_path_factory: pytest.TempPathFactory, request: t.Any
) -> t.Iterator[tuple[str, str]]:
    """``gunicorn -w 2 app`` on the store named; yields its URL and the store's URL."""
    cwd = tmp_path_factory.mktemp("hostile")
    env, store_url = {}, f"sqlite:///{cwd}/.piggyback/store.sqlite3"
    if store == "redis":  # a database of its own for each app
        store_url = request.getfixturevalue("redis_url").replace("/0", f"/{REDIS_DBS[app]}")
        env["PIGGYBACK_STORE"] = store_url
    with gunicorn(app, cwd, workers=2, env=env) as (url, _):
        yield url, store_url
    if store == "redis":  # the attacks really went to Redis
        used = store_from_url(store_url)
        assert used.client.exists("piggyback:secret")  # type: ignore[attr-defined]
        used.close()


@pytest.fixture(scope="module", params=STORES)
def counter(request: t.Any, tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[str]:
    for url, _ in _serve("examples.counter:app", request.param, tmp_path_factory, request):
        yield url


@pytest.fixture(scope="module", params=STORES)
def live_app(
    request: t.Any, tmp_path_factory: pytest.TempPathFactory
) -> t.Iterator[tuple[str, str]]:
    yield from _serve("tests.live_app:app", request.param, tmp_path_factory, request)


@pytest.fixture(scope="module")
def flask_app(tmp_path_factory: pytest.TempPathFactory, request: t.Any) -> t.Iterator[str]:
    for url, _ in _serve("examples.flask_app:app", "default", tmp_path_factory, request):
        yield url


def _echo(page: RemotePage, seq: int, value: str) -> t.Any:
    """The counter's ``echo`` with ``value`` in a ``b=1`` POST body; acknowledges nothing."""
    query = {"p": page.token, "s": seq, "a": 0, "h": "echo", "e": "input", "t": "message"}
    return page.send({**query, "b": 1}, body={"v": value})


def _count(page: RemotePage) -> str:
    page.fire("increment")
    return str([c[2] for c in page.applied_commands if c[:2] == ["text", "count"]][-1])


# 12.1: a page that never acknowledges


def test_megabytes_never_acknowledged_are_never_sent_back(counter: str) -> None:
    """16 x 1 MB of ``<`` (six bytes each in the answer), always with ``a=0``."""
    page = RemotePage(counter).open()
    answers = [_echo(page, seq, "<" * 1_000_000) for seq in range(1, 17)]
    poll = page.send({"p": page.token, "s": 17, "a": 0})
    sizes = [len(answer.body) for answer in [*answers, poll]]
    print(
        f"\n16 x 1 MB unacknowledged: statuses {sorted({a.status for a in answers})},"
        f" largest answer {max(sizes):,} bytes, poll {sizes[-1]:,} bytes"
    )
    assert [answer.status for answer in answers] == [200] * 16
    assert max(sizes) < 64 * 1024  # every echo failed on the command limit: no output kept
    assert poll.status == 200
    for answer in answers:  # the page is told its handler failed, and why in general
        batch = read_reply(answer.text)["batches"][-1]
        assert batch["commands"] == []
        assert batch["error"] == limits.TOO_MUCH_OUTPUT
    page.seq, page.applied = 17, 16
    assert _count(page) == "1"
    assert _count(RemotePage(counter).open()) == "1"


def test_a_backlog_that_is_never_acknowledged_expires(counter: str) -> None:
    """Echoes under the command limit pile up unacknowledged until the page expires."""
    page = RemotePage(counter).open()
    size = limits.MAX_COMMAND_BYTES - 1024
    answers = [_echo(page, seq, "a" * size) for seq in range(1, 17)]
    statuses = [answer.status for answer in answers]
    largest = max(len(answer.body) for answer in answers)
    print(
        f"\n16 x {size:,} bytes unacknowledged: statuses {statuses}, largest answer"
        f" {largest:,} bytes"
    )
    assert 500 not in statuses
    assert largest <= limits.MAX_ANSWER_BYTES
    expired = statuses.index(410)
    kept = limits.MAX_UNACKED_BYTES // size + 1
    assert statuses[:expired] == [200] * kept
    assert read_reply(answers[expired].text)["code"] == "expired"
    assert _count(RemotePage(counter).open()) == "1"


# 12.2: a lone surrogate, echoed to a page and published to its group


def test_a_lone_surrogate_breaks_no_page_of_the_group(live_app: tuple[str, str]) -> None:
    url, store_url = live_app
    members = [RemotePage(url).open() for _ in range(3)]  # each joins "all" when rendered
    sender = members[0]
    sender.seq += 1
    response = sender.send(
        {"p": sender.token, "s": sender.seq, "h": "shout", "g": '{"text": "\\ud800"}'}
    )
    reply = read_reply(response.text)
    print(f"\nlone surrogate in g: {response.status} {reply.get('error')}")
    assert (response.status, reply["code"]) == (400, "bad_request")
    assert "lone surrogate" in reply["error"]

    # Published from outside a request (a job, a CLI), it reaches every member intact.
    store = store_from_url(store_url)
    GroupHandle(store, "all").set_text("shout", "cut \ud83d emoji")
    store.close()
    statuses = []
    for member in members:
        for _ in range(2):
            member.seq += 1
            response = member.send({"p": member.token, "s": member.seq, "a": member.applied})
            statuses.append(response.status)
            member.apply(read_reply(response.text))
        assert ["text", "shout", "cut \ud83d emoji"] in member.applied_commands
        assert _count(member) == "1"
    print(f"members' later requests: {statuses}")
    assert set(statuses) == {200}


# 12.3: stored Set-Cookie headers


def _session(response: t.Any) -> str | None:
    return t.cast("str | None", response.cookies().get("session"))


def _signed_in(url: str) -> RemotePage:
    """A page of the Flask example, opened by a browser that signed in first."""
    body = urlencode({"username": "ada", "password": "lovelace"}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    response = send(f"{url}/login", method="POST", headers=headers, body=body)
    assert response.status == 302, response.status
    return RemotePage(url, cookies=response.cookies()).open()


def test_a_replay_never_carries_anothers_cookies(flask_app: str) -> None:
    victim = _signed_in(flask_app)
    victim.fire("increment")  # the victim's browser has a session from now on
    sent_with = dict(victim.cookies)
    second = victim.send({"p": victim.token, "s": 2, "a": 1, "h": "increment", "e": "click"})
    assert second.status == 200 and _session(second) is not None

    # The victim's token alone (from an access log): refused, and no session.
    replay = victim.send({"p": victim.token, "s": 2, "a": 1}, cookies={})
    print(f"\nreplay with the token alone: {replay.status}, session {_session(replay)!r}")
    assert (replay.status, _session(replay)) == (403, None)
    # Even with the victim's browser cookie (were it stolen), but not the cookies the
    # event was sent with: answered, without the session.
    browser = {k: v for k, v in sent_with.items() if k != "session"}
    replay = victim.send({"p": victim.token, "s": 2, "a": 1}, cookies=browser)
    assert replay.status == 200 and _session(replay) is None
    # The victim's own retry of a lost answer carries what the event carried: it gets
    # its session cookie again.
    retry = victim.send({"p": victim.token, "s": 2, "a": 1}, cookies=sent_with)
    assert retry.status == 200 and _session(retry) == _session(second)


def test_nobody_can_plant_a_session_in_anothers_answer(flask_app: str) -> None:
    attacker = _signed_in(flask_app)
    for _ in range(5):
        attacker.fire("increment")
    victim = _signed_in(flask_app)
    victim.fire("increment")
    # The attacker sends the victim's next event first, with its own cookies.
    planted = victim.send(
        {"p": victim.token, "s": 2, "a": 1, "h": "increment", "e": "click"},
        cookies=attacker.cookies,
    )
    print(f"\nplanting with the victim's token: {planted.status}")
    victim.seq = 1
    victim.fire("increment")
    assert [c for c in victim.applied_commands if c[:2] == ["text", "count"]][-1][2] == "2"
    assert victim.cookies["session"] != attacker.cookies["session"]
    assert planted.status == 403
