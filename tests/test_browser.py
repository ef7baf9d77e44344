"""The whole loop in headless Chromium against a real ``gunicorn -w 4``, default store."""

from __future__ import annotations

import json
import typing as t

import pytest

from .servers import gunicorn

XSS_PAYLOADS = [
    pytest.param("</script><img src=x onerror=window.pwned=1>", id="script-end"),
    pytest.param("<!--<script>window.pwned=1</script>", id="comment"),
    pytest.param('" onmouseover="window.pwned=1" x="', id="attribute-breakout"),
    pytest.param("\u2028\u2029');window.pwned=1;//", id="line-separators"),
    pytest.param("<svg onload=window.pwned=1>&amp;&lt;", id="svg-entities"),
]


@pytest.fixture(scope="module")
def counter_url(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[str]:
    with gunicorn("examples.counter:app", tmp_path_factory.mktemp("counter")) as (url, _):
        yield url


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[tuple[str, t.Any]]:
    cwd = tmp_path_factory.mktemp("live")
    with gunicorn("tests.live_app:app", cwd) as (url, _):
        yield url, cwd / "gunicorn.log"


@pytest.fixture
def tab(browser: t.Any) -> t.Iterator[t.Any]:
    context = browser.new_context()
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def record_events(tab: t.Any, *names: str) -> None:
    """Collect piggyback's lifecycle events into ``window.seen``."""
    tab.evaluate(
        """names => { window.seen = [];
        names.forEach(name => document.addEventListener(name, e => window.seen.push(
          {type: e.type, detail: JSON.stringify(e.detail && {reason: e.detail.reason,
           code: e.detail.code})})));
        }""",
        list(names),
    )


def test_click_changes_the_page(tab: t.Any, counter_url: str) -> None:
    tab.goto(counter_url)
    tab.click("#increment")
    tab.wait_for_function("document.getElementById('count').textContent === '1'")
    tab.click("#increment")
    tab.wait_for_function("document.getElementById('count').textContent === '2'")
    tab.click("#reset")
    tab.wait_for_function("document.getElementById('count').textContent === '0'")


def test_input_value_reaches_the_handler(tab: t.Any, counter_url: str) -> None:
    tab.goto(counter_url)
    tab.fill("#message", "hello <b>world</b>")
    tab.wait_for_function("document.getElementById('echo').textContent === 'hello <b>world</b>'")
    assert tab.locator("#echo b").count() == 0


def test_inserted_html_is_live(tab: t.Any, counter_url: str) -> None:
    tab.goto(counter_url)
    tab.fill("#item", "milk")
    tab.press("#item", "Enter")
    tab.wait_for_selector("#item-1")
    tab.fill("#item", "<i>eggs</i>")
    tab.press("#item", "Enter")
    tab.wait_for_selector("#item-2")
    assert tab.inner_text("#items") == "milk remove\n<i>eggs</i> remove"
    tab.click("#item-1 button")
    tab.wait_for_selector("#item-1", state="detached")
    assert tab.locator("#items li").count() == 1


def test_fifty_rapid_clicks_run_fifty_times_in_order(
    tab: t.Any, live_server: tuple[str, t.Any]
) -> None:
    tab.goto(live_server[0])
    for _ in range(50):
        tab.click("#inc", delay=0)
    tab.wait_for_function("document.getElementById('count').textContent === '50'")
    tab.click("#report")
    tab.wait_for_function("document.getElementById('log').textContent !== ''")
    seqs = json.loads(tab.inner_text("#log"))
    assert len(seqs) == 50
    assert seqs == sorted(set(seqs))


def test_twenty_events_add_no_history_entries(tab: t.Any, live_server: tuple[str, t.Any]) -> None:
    tab.goto(live_server[0])
    before = tab.evaluate("history.length")
    for n in range(1, 21):
        tab.click("#inc")
        tab.wait_for_function(f"document.getElementById('count').textContent === '{n}'")
    assert tab.evaluate("history.length") == before


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_helper_data_never_runs(tab: t.Any, live_server: tuple[str, t.Any], payload: str) -> None:
    tab.goto(live_server[0])
    tab.evaluate("p => piggyback.send('xss', {payload: p}, null)", payload)
    tab.wait_for_function("document.getElementById('as-call').textContent !== ''")
    for target in ("as-text", "as-html", "as-literal", "as-call"):
        assert tab.evaluate(f"document.getElementById('{target}').textContent") == payload
    assert tab.get_attribute("#as-attr", "title") == payload
    tab.hover("#as-html")
    assert tab.evaluate("window.pwned") is None
    assert tab.locator("#as-html *").count() == 0
    assert tab.dialogs == []


def test_failing_handler_is_reported_and_page_keeps_working(
    tab: t.Any, live_server: tuple[str, t.Any]
) -> None:
    url, log = live_server
    tab.goto(url)
    record_events(tab, "piggyback:error")
    tab.click("#boom")
    tab.wait_for_function("window.seen.length === 1")
    seen = tab.evaluate("window.seen")
    assert seen[0]["type"] == "piggyback:error"
    assert "ZeroDivisionError" not in seen[0]["detail"]
    assert "secret detail" not in tab.content()
    tab.click("#inc")
    tab.wait_for_function("document.getElementById('count').textContent === '1'")
    text = log.read_text()
    assert "Traceback" in text
    assert "ZeroDivisionError: the secret detail of a failure" in text
