"""Running a handler: what a runner's or a handler's return value means."""

from __future__ import annotations

import typing as t

import pytest
from werkzeug.wrappers import Response

from piggyback import Piggyback
from piggyback.event import Event
from piggyback.exceptions import EventRedirected
from piggyback.exceptions import EventRejected
from piggyback.page import Page
from piggyback.runner import Outcome
from piggyback.runner import read_outcome
from piggyback.runner import run_directly
from piggyback.stores.memory import MemoryStore
from piggyback.testing import Client
from piggyback.testing import HandlerFailed


def _event() -> Event:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/_pb/event", "HTTP_HOST": "localhost"}
    return Event(name="click", handler="h", target=None, args={}, value=None, environ=environ)


def _response(status: int = 200, **headers: str) -> Response:
    response = Response(status=status)
    response.headers.add("Set-Cookie", "s=1")
    for name, value in headers.items():
        response.headers[name] = value
    return response


@pytest.mark.parametrize(
    ("returned", "result", "headers", "refusal"),
    [
        # (what the handler returned, the result, headers, the refusal's type)
        pytest.param(None, None, (), None, id="nothing"),
        pytest.param(42, 42, (), None, id="a-value"),
        pytest.param(_response(), None, (("Set-Cookie", "s=1"),), None, id="a-response"),
        pytest.param(_response(403), None, (("Set-Cookie", "s=1"),), EventRejected, id="a-refusal"),
        pytest.param(
            _response(302, Location="/login"),
            None,
            (("Set-Cookie", "s=1"),),
            EventRedirected,
            id="a-redirect",
        ),
    ],
)
def test_a_return_value_is_read_as_an_outcome(
    returned: t.Any, result: t.Any, headers: tuple[t.Any, ...], refusal: type | None
) -> None:
    outcome = read_outcome(returned, _event())
    assert (outcome.result, outcome.headers) == (result, headers)
    assert type(outcome.refusal) is (type(None) if refusal is None else refusal)


def test_an_outcome_is_read_as_itself() -> None:
    outcome = Outcome(1, (("X-A", "b"),))
    assert read_outcome(outcome, _event()) is outcome


def test_run_directly_calls_the_handler_and_writes_nothing_into_the_event() -> None:
    event = _event()
    before = vars(event).copy()

    def handler(page: Page, event: Event) -> Response:
        page.set_text("a", "b")
        return _response()

    page = Page("P" * 22)
    outcome = run_directly(handler, page, event)
    assert outcome == Outcome(None, (("Set-Cookie", "s=1"),))
    assert page.commands == [["text", "a", "b"]]
    assert vars(event) == before


def test_a_hosts_event_is_a_copy_with_its_request() -> None:
    event = _event()
    hosted = event.for_host("the host's request")
    assert (hosted.host_request, event.host_request) == ("the host's request", None)
    assert (hosted.handler, hosted.environ, hosted.seq) == (event.handler, event.environ, 0)


def test_an_events_request_is_made_once() -> None:
    event = _event()
    assert event.request is event.request


def _index(environ: t.Any, start_response: t.Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/html")])
    return [b"<!doctype html><html><body><p id='n'>0</p></body></html>"]


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(Outcome(headers=(("Content-Length", "0"),)), id="not-a-cookie"),
        pytest.param(Outcome(headers=(("Connection", "close"),)), id="hop-by-hop"),
        pytest.param(Outcome(headers=(("Set-Cookie", "a=1\r\nX-B: c"),)), id="crlf"),
        pytest.param(Outcome(headers=(("Set-Cookie", "a=1\x00"),)), id="nul"),
        pytest.param(Outcome(headers=(("Set-Cookie", 1),)), id="not-text"),
        pytest.param(Outcome(headers=("Set-Cookie: a=1",)), id="not-a-pair"),  # type: ignore[arg-type]
        pytest.param(Outcome(refusal="nope"), id="refusal-not-rejected"),  # type: ignore[arg-type]
    ],
)
def test_an_outcome_the_answer_cannot_carry_is_a_failed_handler(outcome: Outcome) -> None:
    """Bad headers would be stored with the batch and break every replay of it (or
    double the answer's Content-Length): the handler failed, and nothing it did stays."""
    live = Piggyback(_index, store=MemoryStore(), secret_key="runner")

    @live.handler
    def odd(page: Page, event: Event) -> Outcome:
        page.state["n"] = 1
        page.set_text("n", "1")
        return outcome

    client = Client(live)
    page = client.open("/")
    with pytest.raises(HandlerFailed):
        client.fire(page, "odd")
    record, _ = live.store.load(page.id)
    assert record is not None and record.state == {}
    assert [batch.headers for batch in record.batches] == [[]]


def test_an_outcome_with_a_cookie_reaches_the_answer() -> None:
    live = Piggyback(_index, store=MemoryStore(), secret_key="runner")

    @live.handler
    def cookie(page: Page, event: Event) -> Outcome:
        return Outcome(headers=(("Set-Cookie", "flavour=plain; HttpOnly"),))

    client = Client(live)
    page = client.open("/")
    client.fire(page, "cookie")
    record, _ = live.store.load(page.id)
    assert record is not None
    assert record.batches[-1].headers == [("Set-Cookie", "flavour=plain; HttpOnly")]
