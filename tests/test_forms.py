"""Forms, uploads and long payloads in headless Chromium against a real ``gunicorn -w 4``.

``examples/todo.py`` and ``examples/upload.py`` on the default store. Each test runs on
the default transport (fetch) and on the hidden iframe, forced the way a deployment
forces it: ``data-transport="iframe"`` on the client's tag (put there by rewriting the
page as it arrives).
"""

from __future__ import annotations

import hashlib
import typing as t

import pytest

from .servers import gunicorn

#: The resource type Chromium gives each transport's requests, by method: the default
#: transport fetches a GET and posts by XMLHttpRequest (it alone reports upload progress).
RESOURCE_TYPES = {
    ("fetch", "GET"): "fetch",
    ("fetch", "POST"): "xhr",
    ("iframe", "GET"): "document",
    ("iframe", "POST"): "document",
}


@pytest.fixture(scope="module")
def todo_url(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[str]:
    with gunicorn("examples.todo:app", tmp_path_factory.mktemp("todo")) as (url, _):
        yield url + "/"


@pytest.fixture(scope="module")
def upload_url(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[str]:
    with gunicorn("examples.upload:app", tmp_path_factory.mktemp("upload")) as (url, _):
        yield url + "/"


@pytest.fixture(params=["fetch", "iframe"])
def transport(request: pytest.FixtureRequest) -> str:
    return t.cast(str, request.param)


@pytest.fixture
def context(browser: t.Any) -> t.Iterator[t.Any]:
    context = browser.new_context()
    yield context
    context.close()


def open_tab(context: t.Any, url: str, transport: str) -> t.Any:
    """A new tab on ``url``, its client on ``transport``; it records events and requests."""
    tab = context.new_page()
    tab.events = []
    tab.on("request", lambda request: record_event(tab, request))
    if transport == "iframe":
        tab.route(url, force_iframe)
    tab.goto(url)
    tag = tab.locator("script[data-endpoint]")
    assert tag.get_attribute("data-transport") == (None if transport == "fetch" else "iframe")
    tab.evaluate("""() => {
      window.marker = "not reloaded";
      window.seen = [];
      ["done", "error", "expired"].forEach(type => document.addEventListener(
        "piggyback:" + type, event => window.seen.push([type, event.detail.code || null])));
    }""")
    return tab


def record_event(tab: t.Any, request: t.Any) -> None:
    if "/_pb/event" in request.url:
        tab.events.append((request.method, request.resource_type, request.url))


def force_iframe(route: t.Any) -> None:
    response = route.fetch()
    body = response.text().replace("<script src=", '<script data-transport="iframe" src=', 1)
    route.fulfill(response=response, body=body)


def settle(tab: t.Any, count: int) -> None:
    """Wait until ``count`` events have finished, one way or another."""
    tab.wait_for_function("count => window.seen.length >= count", arg=count)


def check_carried_by(tab: t.Any, transport: str) -> None:
    """Every event went by ``transport``, and the page never navigated."""
    assert tab.events
    kinds = {(method, kind) for method, kind, _ in tab.events}
    assert kinds == {(method, RESOURCE_TYPES[transport, method]) for method, _ in kinds}
    assert tab.evaluate("window.marker") == "not reloaded"


def add(tab: t.Any, title: str, count: int) -> None:
    tab.fill("#add-title", title)
    tab.click("#add button")
    settle(tab, count)


def items(tab: t.Any) -> list[str]:
    """The titles of the list's items."""
    return list(tab.eval_on_selector_all("#items li > span", "all => all.map(s => s.textContent)"))


# The to-do list


def test_items_are_added_edited_and_deleted(context: t.Any, todo_url: str, transport: str) -> None:
    tab = open_tab(context, todo_url, transport)
    before = tab.evaluate("history.length")
    add(tab, "  Buy milk ", 1)
    add(tab, "<b>eggs</b> & ham", 2)
    assert items(tab) == ["Buy milk", "<b>eggs</b> & ham"]
    assert tab.locator("#items b").count() == 0
    assert tab.input_value("#add-title") == ""

    tab.fill("#item-1-edit input", "Buy oat milk")
    tab.click("#item-1-edit button >> text=Save")
    settle(tab, 3)
    tab.click("#item-2-edit button >> text=Delete")
    settle(tab, 4)

    assert items(tab) == ["Buy oat milk"]
    assert tab.evaluate("window.seen") == [["done", None]] * 4
    assert [method for method, _, _ in tab.events] == ["POST", "POST", "POST", "GET"]
    assert tab.evaluate("history.length") == before
    check_carried_by(tab, transport)


@pytest.mark.parametrize(
    ("title", "error"),
    [
        pytest.param("", "Write a title first.", id="empty"),
        pytest.param("   ", "Write a title first.", id="blank"),
        pytest.param("x" * 81, "Keep it to 80 characters; this one has 81.", id="too-long"),
    ],
)
def test_a_refused_title_shows_why_next_to_its_field(
    context: t.Any, todo_url: str, transport: str, title: str, error: str
) -> None:
    tab = open_tab(context, todo_url, transport)
    add(tab, "first", 1)
    add(tab, title, 2)
    assert tab.text_content("#add-error") == error
    assert items(tab) == ["first"]

    tab.fill("#item-1-edit input", title)
    tab.click("#item-1-edit button >> text=Save")
    settle(tab, 3)
    assert tab.text_content("#item-1-error") == error
    assert items(tab) == ["first"]

    add(tab, "x" * 80, 4)  # the longest title accepted; the error goes
    assert tab.text_content("#add-error") == ""
    assert items(tab) == ["first", "x" * 80]
    check_carried_by(tab, transport)


def test_each_page_has_its_own_list(context: t.Any, todo_url: str, transport: str) -> None:
    first, second = open_tab(context, todo_url, transport), open_tab(context, todo_url, transport)
    add(first, "only in the first", 1)
    add(second, "only in the second", 1)
    assert items(first) == ["only in the first"]
    assert items(second) == ["only in the second"]
    assert second.locator("#item-1").count() == 1  # its own numbering
    first.reload()
    assert items(first) == []


def test_twenty_submits_leave_history_alone(context: t.Any, todo_url: str, transport: str) -> None:
    tab = open_tab(context, todo_url, transport)
    before = tab.evaluate("history.length")
    for count in range(1, 21):
        add(tab, f"item {count}", count)
    assert len(items(tab)) == 20
    assert tab.evaluate("history.length") == before
    # The iframe transport posts each submit into a frame never navigated before, which
    # replaces the last; once its answer has loaded, it makes a spare for the next
    # submit. The frame in use and that spare are all there is.
    frames = 2 if transport == "iframe" else 0
    tab.wait_for_function(
        "count => document.querySelectorAll('iframe').length === count", arg=frames
    )
    check_carried_by(tab, transport)


# Uploads


def test_an_upload_reports_the_file_and_shows_its_text_escaped(
    context: t.Any, upload_url: str, transport: str
) -> None:
    tab = open_tab(context, upload_url, transport)
    before = tab.evaluate("history.length")
    text = "<img src=x onerror=window.pwned=1> Zoë & co\n".encode()
    tab.set_input_files("#file", {"name": "notes.txt", "mimeType": "text/plain", "buffer": text})
    tab.fill("#note", "hello")
    tab.click("#send")
    settle(tab, 1)

    assert tab.text_content("#result") == f"notes.txt: {len(text)} bytes (hello)"
    assert tab.text_content("#content") == text.decode()
    assert tab.locator("#content *").count() == 0
    assert tab.evaluate("window.pwned") is None
    assert tab.evaluate("history.length") == before
    assert [method for method, _, _ in tab.events] == ["POST"]
    check_carried_by(tab, transport)


def test_an_upload_over_the_limit_is_too_large_and_the_page_goes_on(
    context: t.Any, upload_url: str, transport: str
) -> None:
    tab = open_tab(context, upload_url, transport)
    big = b"x" * (200 * 1024)
    tab.set_input_files("#file", {"name": "big.txt", "mimeType": "text/plain", "buffer": big})
    tab.click("#send")
    settle(tab, 1)

    assert tab.evaluate("window.seen") == [["error", "too_large"]]
    reason = "The event's body is larger than 65536 bytes."
    assert tab.text_content("#problem") == f"{reason} (too_large)"
    assert tab.text_content("#result") == ""
    assert len(tab.events) == 1  # a rejection is not retried

    small = b"small"
    tab.set_input_files("#file", {"name": "small.txt", "mimeType": "text/plain", "buffer": small})
    tab.click("#send")
    settle(tab, 2)
    assert tab.text_content("#result") == "small.txt: 5 bytes"
    assert tab.text_content("#problem") == ""
    check_carried_by(tab, transport)


# Long payloads


def test_a_long_value_reaches_the_handler_in_a_post_body(
    context: t.Any, upload_url: str, transport: str
) -> None:
    tab = open_tab(context, upload_url, transport)
    text = ("Zoë's <b>long</b> text & more,\nline after line. " * 500)[:20000]
    tab.evaluate(
        """text => {
          const area = document.getElementById("text");
          area.value = text;
          area.dispatchEvent(new Event("change", {bubbles: true}));
        }""",
        text,
    )
    settle(tab, 1)

    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    assert tab.text_content("#result") == f"pasted: 20000 characters, sha256 {digest}"
    assert tab.text_content("#content") == text[:4000]
    [(method, _, url)] = tab.events
    assert method == "POST"
    assert "&b=1" in url
    assert "&v=" not in url
    check_carried_by(tab, transport)
