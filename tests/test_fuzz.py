"""A property-based fuzz of the event endpoint.

Thousands of generated requests, most of them nearly valid with one field broken:
never a 5xx, never a handler run by a rejected request, never a store changed by one.
Then, over every store, sequences of hostile events (lone surrogates, huge and withheld
acknowledgements, many joins, big outputs and sends): never a 5xx, every answer within
``MAX_ANSWER_BYTES``, never more than ``MAX_MEMBERSHIPS`` groups, and pages keep working.
"""

from __future__ import annotations

import copy
import json
import typing as t
from urllib.parse import quote_plus
from urllib.parse import urlencode

import pytest
from hypothesis import event
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from werkzeug.test import Client as HTTPClient

from piggyback import limits
from piggyback import Piggyback
from piggyback.stores import MemoryStore
from piggyback.stores import store_from_url
from piggyback.stores.base import Store
from piggyback.testing import read_reply
from piggyback.tokens import new_page_id
from piggyback.tokens import TokenSigner

RUNS: list[str] = []


def app(environ: t.Any, start_response: t.Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app"]


store = MemoryStore()
live = Piggyback(app, store=store, secret_key="fuzz")
http = HTTPClient(live)


@live.handler
def run(page: t.Any, event: t.Any) -> None:
    RUNS.append(event.handler)
    page.state["runs"] = page.state.get("runs", 0) + 1
    page.set_text("x", event.value)
    for value in event.args.values():  # echoed: text the answer must be able to write
        if isinstance(value, str):
            page.set_text("arg", value)


def _quote(text: str, safe: str, encoding: str, errors: str) -> str:
    # A lone surrogate has no UTF-8 form; sent as its three bytes, the server reads them
    # as invalid UTF-8 (the replacement character), as it would from a real client.
    return quote_plus(text, safe, encoding, "surrogatepass")


def snapshot() -> t.Any:
    return copy.deepcopy((store._records, store._inboxes, store._logs, store._members))


def empty_store() -> None:
    for table in (store._records, store._inboxes, store._logs, store._members):
        table.clear()


texts = st.text(max_size=40) | st.sampled_from(["", "0", "-1", "1e3", " 1", "9" * 17, "\x00"])
# Lone surrogates: every boundary of the range, and halves of a cut emoji.
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d", "\ude00"]
surrogate_texts = st.lists(
    st.sampled_from(SURROGATES) | st.text(max_size=3), min_size=1, max_size=4
).map("".join)
# JSON is ASCII here: a lone surrogate travels as a \ud800 escape, which is valid JSON.
surrogate_args = st.dictionaries(surrogate_texts, surrogate_texts, min_size=1, max_size=2).map(
    json.dumps
)
# Token kinds, made for each example's own fresh page.
TOKEN_KINDS = {
    "forged": lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),
    "other secret": lambda token: TokenSigner(b"other", 3600).sign(token.split(".")[0]),
    "expired": lambda token: TokenSigner(b"fuzz", 3600).sign(token.split(".")[0], now=0),
    "truncated": lambda token: token[:30],
}
tokens = st.sampled_from(sorted(TOKEN_KINDS)) | texts
json_args = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
).map(json.dumps)
FIELDS = {
    "p": tokens,
    "s": st.integers(-2, 2**54).map(str) | texts,
    "a": st.integers(-2, 2**54).map(str) | texts,
    "h": st.sampled_from(["run", "nope", "", "r un", "run\x00"]) | texts,
    "e": st.sampled_from(["click", "CLICK", "x" * 70]) | texts,
    "t": texts | surrogate_texts,
    "v": texts | surrogate_texts,
    "g": json_args | texts | st.just("[" * 3000) | surrogate_args,
    "zz": texts,
}
# Up to two fields set to generated values (often valid ones for e, t, v and g).
fields = st.lists(st.sampled_from(sorted(FIELDS)), max_size=2, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({key: FIELDS[key] for key in keys})
)
methods = st.sampled_from(["GET"] * 12 + ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])


@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    broken=fields,
    dropped=st.sets(st.sampled_from("psah"), max_size=1),
    method=methods,
    body=st.binary(max_size=200),
    repeat=st.booleans(),
)
def test_endpoint_never_fails_and_rejections_change_nothing(
    broken: dict[str, str], dropped: set[str], method: str, body: bytes, repeat: bool
) -> None:
    # A valid event of a fresh page, then some fields broken or dropped.
    empty_store()
    page_id = new_page_id()
    store.push(page_id, [["text", "waiting", "for the page"]])
    token = live.signer.sign(page_id)
    query = {"p": token, "s": "1", "h": "run", **broken}
    if query["p"] in TOKEN_KINDS:
        query["p"] = TOKEN_KINDS[query["p"]](token)
    query = {key: value for key, value in query.items() if key not in dropped}
    raw = urlencode(query, quote_via=_quote)
    if repeat and query:  # a duplicated parameter
        raw += "&" + raw.split("&")[0]
    before, runs = snapshot(), len(RUNS)
    response = http.open(f"/_pb/event?{raw}", method=method, data=body)
    assert response.status_code < 500
    event(f"status {response.status_code}")
    reply = read_reply(response.get_data(as_text=True))
    if response.status_code >= 400:
        assert set(reply) == {"seq", "code", "error"}
        assert len(RUNS) == runs
        assert snapshot() == before
    else:
        assert query.get("p") == token
        assert set(reply) >= {"seq", "batches", "token"}
        assert reply["batches"][0]["commands"][0] == ["text", "waiting", "for the page"]


# Hostile sequences, over every store


def _hostile_app(store: Store) -> tuple[Piggyback, HTTPClient]:
    # Its tokens are unbound, and its requests carry no browser cookie: they match.
    hostile = Piggyback(app, store=store, secret_key="fuzz")

    @hostile.handler
    def say(page: t.Any, event: t.Any) -> None:
        page.set_text("out", event.args["char"] * event.args["size"])

    @hostile.handler
    def shout(page: t.Any, event: t.Any) -> None:
        hostile.group("room").set_text("out", event.args["char"] * event.args["size"])

    @hostile.handler
    def join(page: t.Any, event: t.Any) -> None:
        page.join("room")
        for n in range(event.args["count"]):
            page.join(f"{event.args['prefix']}{n}")

    @hostile.handler
    def count(page: t.Any, event: t.Any) -> None:
        page.state["n"] = page.state.get("n", 0) + 1
        page.set_text("n", page.state["n"])

    return hostile, HTTPClient(hostile)


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def hostile(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> t.Iterator[tuple[Piggyback, HTTPClient]]:
    if request.param == "redis":
        from .redis_server import redis_server

        with redis_server() as url:
            store = store_from_url(url)
            yield _hostile_app(store)
            store.close()
        return
    path = tmp_path_factory.mktemp("fuzz") / "store.sqlite3"
    store = MemoryStore() if request.param == "memory" else store_from_url(f"sqlite:///{path}")
    yield _hostile_app(store)
    store.close()


steps = st.one_of(
    st.tuples(
        st.just("say"),
        st.fixed_dictionaries(
            {
                "size": st.sampled_from([0, 1, 1000, 40_000, 50_000, 200_000]),
                "char": st.sampled_from(["a", "<", "&", "\u2028", "\U0001f600"]),
            }
        ),
    ),
    st.tuples(
        st.just("shout"),
        st.fixed_dictionaries(
            {"size": st.sampled_from([1, 10_000, 60_000, 70_000]), "char": st.just("<")}
        ),
    ),
    st.tuples(
        st.just("join"),
        st.fixed_dictionaries(
            {"count": st.integers(0, 120), "prefix": st.sampled_from(["a", "b"])}
        ),
    ),
    st.tuples(st.just(""), st.just({})),  # a poll
    st.tuples(st.just("say"), surrogate_args.map(json.loads)),  # refused: 400
)
acks = st.sampled_from(["honest", "withheld", "huge", "old"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(st.tuples(steps, acks), min_size=1, max_size=12))
def test_hostile_sequences_stay_bounded_and_pages_keep_working(
    hostile: tuple[Piggyback, HTTPClient], sequence: list[t.Any]
) -> None:
    live_app, client = hostile
    page_id = new_page_id()
    token = live_app.signer.sign(page_id)
    applied = 0
    for seq, ((handler, args), ack_kind) in enumerate(sequence, start=1):
        ack = {"honest": applied, "withheld": 0, "huge": 2**53, "old": applied // 2}[ack_kind]
        query = {"p": token, "s": seq, "a": ack, "h": handler, "g": json.dumps(args)}
        response = client.get(f"/_pb/event?{urlencode(query)}")
        assert response.status_code < 500
        assert len(response.data) <= limits.MAX_ANSWER_BYTES
        event(f"{handler or 'poll'} {response.status_code}")
        reply = read_reply(response.get_data(as_text=True))
        if response.status_code == 200:
            token = reply["token"]
            applied = max([applied, *(b["seq"] for b in reply["batches"])])
        _, mail = live_app.store.load(page_id)
        assert len(mail.groups) <= limits.MAX_MEMBERSHIPS
    # The page goes on (after an expiry, as a fresh page), and so does another one.
    for page in (page_id, new_page_id()):
        query = {"p": live_app.signer.sign(page), "s": 2**50, "a": 0, "h": "count"}
        response = client.get(f"/_pb/event?{urlencode(query)}")
        assert response.status_code == 200, response.get_data(as_text=True)
