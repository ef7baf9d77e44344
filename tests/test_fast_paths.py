"""The forms chosen for speed on the hot paths say what the plain forms say."""

from __future__ import annotations

import json
import typing as t

import pytest
from werkzeug.test import EnvironBuilder

from piggyback import Page
from piggyback import Piggyback
from piggyback.event import read_event_request
from piggyback.exceptions import BadToken
from piggyback.exceptions import PageExpired
from piggyback.inject import is_html
from piggyback.runner import Outcome
from piggyback.runner import run_directly
from piggyback.runner import runner_outcome
from piggyback.stores.memory import MemoryStore
from piggyback.testing import Client
from piggyback.testing import TestPage
from piggyback.tokens import TokenSigner

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment


@pytest.mark.parametrize("age", [-300, 0, 50, 99, 100, 101, 500, 1000])
@pytest.mark.parametrize("browser", ["", "B" * 22])
def test_check_is_verify_and_is_young(age: float, browser: str) -> None:
    signer = TokenSigner(b"k", max_age=1000)
    token = signer.sign("A" * 22, now=50_000, browser=browser)
    now = 50_000 + age
    assert signer.check(token, now, browser=browser) == (
        signer.verify(token, now, browser=browser),
        signer.is_young(token, now),
    )


@pytest.mark.parametrize(("age", "error"), [(-301, BadToken), (1001, PageExpired)])
def test_check_refuses_as_verify_does(age: float, error: type[Exception]) -> None:
    signer = TokenSigner(b"k", max_age=1000)
    token = signer.sign("A" * 22, now=50_000)
    for read in (signer.verify, signer.check):
        with pytest.raises(error):
            read(token, 50_000 + age)


def test_runner_outcome_passes_the_empty_outcome_and_checks_others() -> None:
    empty = run_directly(lambda page, event: None, None, None)  # type: ignore[arg-type]
    assert runner_outcome(empty, None) is empty  # type: ignore[arg-type]
    assert runner_outcome(None, None) == Outcome()  # type: ignore[arg-type]
    assert runner_outcome(3, None) == Outcome(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Set-Cookie"):
        runner_outcome(Outcome(headers=(("Location", "/"),)), None)  # type: ignore[arg-type]


# Pass-through: what the app answers without HTML skips the HTML work (rendering.py)


@pytest.mark.parametrize(
    ("status", "headers", "html"),
    [
        pytest.param("200 OK", [("Content-Type", "text/html")], True, id="html"),
        pytest.param("200 OK", [("content-type", " TEXT/HTML ; x")], True, id="case-space"),
        pytest.param("200 OK", [("Content-Type", "application/xhtml+xml")], True, id="xhtml"),
        pytest.param("200 OK", [("Content-Type", "application/json")], False, id="json"),
        pytest.param("200 OK", [], False, id="no-type"),
        pytest.param("204 No Content", [("Content-Type", "text/html")], False, id="204"),
        pytest.param("304 Not Modified", [("Content-Type", "text/html")], False, id="304"),
        pytest.param("101 Switching", [("Content-Type", "text/html")], False, id="1xx"),
        pytest.param("304 Not Modified", [("Content-Type", "text/plain")], False, id="304-plain"),
        pytest.param(
            "200 OK",
            [("Content-Encoding", "gzip"), ("Content-Type", "text/html")],
            False,
            id="gzip-first",
        ),
        pytest.param(
            "200 OK",
            [("Content-Type", "text/html"), ("Content-Encoding", "identity")],
            True,
            id="identity",
        ),
        pytest.param(
            "200 OK",
            [("Content-Type", "text/html"), ("Content-Type", "text/plain")],
            False,
            id="last-type-wins",
        ),
    ],
)
def test_is_html_looks_at_the_status_only_for_html(
    status: str, headers: list[tuple[str, str]], html: bool
) -> None:
    assert is_html(status, headers) is html


def _json_app(live: list[Piggyback], body: str = "streamed") -> WSGIApplication:
    """Answers JSON carrying the page's tag, after queueing for the page; ``body``:
    ``"list"`` or ``"streamed"`` (a generator, kept once closed)."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        page: Page = environ["piggyback.page"]
        page.state["user"] = "ann"
        page.set_text("status", "rendered")
        page.join("room")
        tag = json.dumps({"tag": str(live[0].script_tag(environ))}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [tag] if body == "list" else iter([tag])

    return app


@pytest.mark.parametrize("body", ["list", "streamed"])
@pytest.mark.parametrize(
    ("method", "inject"),
    [("GET", True), ("HEAD", True), ("GET", False)],
    ids=["get", "head", "no-inject"],
)
def test_a_non_html_answer_sets_the_new_browser_cookie_and_keeps_the_page(
    body: str, method: str, inject: bool
) -> None:
    live: list[Piggyback] = []
    live.append(Piggyback(_json_app(live, body), store=MemoryStore(), inject=inject))
    live[0].handler("show")(lambda page, event: page.set_text("user", page.state["user"]))
    client = Client(live[0])
    with client.http.open("/", method=method) as response:
        headers, data = response.headers.to_wsgi_list(), response.get_data(as_text=True)
    assert [name for name, _ in headers] == ["Content-Type", "Set-Cookie"]
    assert headers[1][1].startswith("pb_browser="), headers
    token = json.loads(data)["tag"].split('data-token="')[1].split('"')[0]
    live[0].group("room").set_text("chat", "hi")
    assert client.fire(TestPage(token=token), "show") == [
        ["text", "status", "rendered"],
        ["text", "chat", "hi"],
        ["text", "user", "ann"],
    ]
    with client.http.open("/", method=method) as response:  # the browser has its id now
        assert [name for name, _ in response.headers.to_wsgi_list()] == ["Content-Type"]


@pytest.mark.parametrize("escaped", ["%ED%A0%80", "%ED%BF%BF", "%F0%9F", "%80"])
def test_an_ascii_query_string_never_reads_as_a_lone_surrogate(escaped: str) -> None:
    # read_event_request skips its surrogate scan for ASCII query strings: unquoting
    # reads the UTF-8 form of a lone surrogate (or any broken UTF-8) as U+FFFD.
    environ = EnvironBuilder(path="/_pb/event").get_environ()
    environ["QUERY_STRING"] = f"p=tok&s=1&v=a{escaped}"
    value = read_event_request(environ).event.value
    assert value is not None and "\ufffd" in value
    assert not any("\ud800" <= c <= "\udfff" for c in value)
