"""examples/dashboard.py in headless Chromium against a real ``gunicorn -w 2``: live
validation with morphing, a debounced search, a URL-synced filter, a confirm, an upload
with progress, on the default store."""

from __future__ import annotations

import typing as t
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest

from .servers import gunicorn


@pytest.fixture(scope="module")
def dashboard_url(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[str]:
    with gunicorn("examples.dashboard:app", tmp_path_factory.mktemp("dash"), workers=2) as (
        url,
        _,
    ):
        yield url + "/"


@pytest.fixture
def tab(browser: t.Any, dashboard_url: str) -> t.Iterator[t.Any]:
    context = browser.new_context()
    tab = context.new_page()
    tab.handlers = []
    tab.dialogs = []

    def on_request(request: t.Any) -> None:
        if "/_pb/event" in request.url:
            tab.handlers.append(parse_qs(urlsplit(request.url).query).get("h", [None])[0])

    def on_dialog(dialog: t.Any) -> None:
        tab.dialogs.append(dialog.message)
        dialog.accept()

    tab.on("request", on_request)
    tab.on("dialog", on_dialog)
    tab.goto(dashboard_url)
    tab.evaluate("""() => {
      window.done = 0;
      window.errors = [];
      document.addEventListener("piggyback:done", () => { window.done += 1; });
      document.addEventListener("piggyback:error", e => window.errors.push(e.detail.reason));
    }""")
    yield tab
    context.close()


def settle(tab: t.Any, count: int) -> None:
    tab.wait_for_function("count => window.done >= count", arg=count, timeout=10000)


def titles(tab: t.Any) -> list[str]:
    return list(tab.eval_on_selector_all("#tasks li[id]", "all => all.map(li => li.id)"))


def test_live_validation_keeps_what_is_typed(tab: t.Any) -> None:
    tab.click("#signup-email")
    tab.keyboard.type("alice", delay=60)
    tab.wait_for_function("() => document.getElementById('signup-email-error').textContent !== ''")
    assert tab.text_content("#signup-email-error") == "That is not an email address yet."
    tab.keyboard.type("@example.com", delay=60)
    tab.wait_for_function("() => document.getElementById('signup-email-error').textContent === ''")
    state = tab.evaluate("""() => {
      const email = document.getElementById("signup-email");
      return [email.value, document.activeElement === email, email.selectionStart];
    }""")
    assert state == ["alice@example.com", True, 17]
    tab.fill("#signup-name", "Al")
    tab.wait_for_function("() => !document.querySelector('#signup button').disabled")
    tab.click("#signup button")
    tab.wait_for_selector("#welcome")
    assert tab.text_content("#welcome") == "Welcome, Al!"
    assert tab.evaluate("window.errors") == []


def test_search_filter_history_confirm_and_upload(tab: t.Any, dashboard_url: str) -> None:
    tab.type("#search", "ans", delay=30)
    tab.wait_for_function("() => document.querySelectorAll('#tasks li[id]').length === 2")
    assert titles(tab) == ["task-3", "task-4"]
    # Debounced: one request for three keys (the clock may have ticked meanwhile).
    assert [name for name in tab.handlers if name != "clock"] == ["search"]
    tab.fill("#search", "")
    tab.wait_for_function("() => document.querySelectorAll('#tasks li[id]').length === 5")

    tab.click("text=done")
    tab.wait_for_url("**/?filter=done")
    assert titles(tab) == ["task-2", "task-4"]
    tab.click("text=open")
    tab.wait_for_url("**/?filter=open")
    assert titles(tab) == ["task-1", "task-3", "task-5"]
    tab.go_back()
    tab.wait_for_function("() => document.querySelectorAll('#tasks li[id]').length === 2")
    assert tab.url == dashboard_url + "?filter=done"

    done = tab.evaluate("window.done")
    tab.click("#task-2 button")
    settle(tab, done + 1)
    assert tab.dialogs == ["Delete “Review the morphing code”?"]
    assert titles(tab) == ["task-4"]

    tab.set_input_files(
        "#file", {"name": "a.bin", "mimeType": "application/octet-stream", "buffer": b"x" * 300_000}
    )
    tab.click("#send")
    tab.wait_for_function("() => document.getElementById('uploaded').textContent !== ''")
    assert tab.text_content("#uploaded") == "a.bin: 300,000 bytes"
    assert (
        tab.evaluate("document.getElementById('upload').style.getPropertyValue('--pb-progress')")
        == "1"
    )
    assert tab.evaluate("window.errors") == []


def test_a_pushed_url_renders_its_filter_on_reload(tab: t.Any, dashboard_url: str) -> None:
    tab.goto(dashboard_url + "?filter=done")
    assert titles(tab) == ["task-2", "task-4"]
