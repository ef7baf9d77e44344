"""A property-based fuzz of the event endpoint.

Thousands of generated requests, most of them nearly valid with one field broken:
never a 5xx, never a handler run by a rejected request, never a store changed by one.
"""

from __future__ import annotations

import copy
import json
import typing as t
from urllib.parse import urlencode

from hypothesis import event
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from werkzeug.test import Client as HTTPClient

from piggyback import Piggyback
from piggyback.stores import MemoryStore
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


def snapshot() -> t.Any:
    return copy.deepcopy((store._records, store._inboxes, store._logs, store._members))


def empty_store() -> None:
    for table in (store._records, store._inboxes, store._logs, store._members):
        table.clear()


texts = st.text(max_size=40) | st.sampled_from(["", "0", "-1", "1e3", " 1", "9" * 17, "\x00"])
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
    "t": texts,
    "v": texts,
    "g": json_args | texts | st.just("[" * 3000),
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
    raw = urlencode(query)
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
