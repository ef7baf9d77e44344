"""The checks that matter most, in Chromium, Firefox ESR and WebKitGTK, on both transports.

Each test runs once per engine (tests/engines.py: one browser per engine for this module)
and per transport (fetch, and the hidden iframe forced by the app), against a real
``gunicorn -w 2`` serving tests/engines_app.py with the default store.
"""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest

from .engines import Window
from .servers import gunicorn
from .test_browser import XSS_PAYLOADS

#: Seconds the upload page's client waits for an answer before it retries: 3 tries.
CLIENT_TIMEOUT = 10
#: Longer than the client's own give-up (three tries, their timeouts and back-offs).
GIVE_UP = 3 * CLIENT_TIMEOUT + 10


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[str]:
    with gunicorn("tests.engines_app:app", tmp_path_factory.mktemp("engines"), workers=2) as (
        url,
        _,
    ):
        yield url


@pytest.fixture(params=["fetch", "iframe"])
def transport(request: pytest.FixtureRequest) -> str:
    return t.cast(str, request.param)


def open_page(window: Window, server: str, transport: str, app: str, path: str = "/") -> None:
    """Load ``app``'s page for ``transport``; record piggyback's events and attempts.

    ``window.seen`` collects ``[type, code]`` of each finished event, ``window.tries``
    counts the requests the client hands to its transport (a retry is one more).
    """
    window.goto(f"{server}/{transport}/{app}{path}")
    window.eval("""(function () {
      window.marker = "not reloaded";
      window.seen = [];
      window.tries = 0;
      ["done", "error", "expired"].forEach(function (type) {
        document.addEventListener("piggyback:" + type, function (event) {
          window.seen.push([type, event.detail.code || null]);
        });
      });
      var carry = window.piggyback.transport;
      window.piggyback.transport = function (request) {
        window.tries += 1;
        return carry.apply(this, arguments);
      };
    })()""")


def settle(window: Window, count: int, timeout: float = 20) -> list[list[t.Any]]:
    """Wait until ``count`` events have finished, one way or another; their outcomes."""
    done = "window.seen.length >= arguments[0] && window.seen"
    seen = window.wait_for(done, count, timeout=timeout)
    return t.cast(list[list[t.Any]], seen)


def check_carried_by(window: Window, transport: str) -> None:
    """The events went by ``transport`` (only the iframe one makes frames); no reload."""
    frames = window.eval("document.querySelectorAll('iframe').length")
    assert (frames > 0) == (transport == "iframe")
    assert window.eval("window.marker") == "not reloaded"


def wait_for_text(window: Window, id: str, text: str) -> None:
    window.wait_for("document.getElementById(arguments[0]).textContent === arguments[1]", id, text)


def test_counter(window: Window, server: str, transport: str) -> None:
    open_page(window, server, transport, "live")
    for n in range(1, 4):
        window.click("#inc")
        wait_for_text(window, "count", str(n))
    assert settle(window, 3) == [["done", None]] * 3
    check_carried_by(window, transport)


def test_fifty_rapid_clicks_run_fifty_times_in_order(
    window: Window, server: str, transport: str
) -> None:
    open_page(window, server, transport, "live")
    for _ in range(50):
        window.click("#inc")
    wait_for_text(window, "count", "50")
    window.click("#report")
    window.wait_for("document.getElementById('log').textContent !== ''")
    seqs = json.loads(window.text("#log"))
    assert len(seqs) == 50
    assert seqs == sorted(set(seqs))
    assert window.text("#count") == "50"
    check_carried_by(window, transport)


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_helper_data_never_runs(window: Window, server: str, transport: str, payload: str) -> None:
    open_page(window, server, transport, "live")
    window.eval("window.piggyback.send('xss', {payload: arguments[0]}, null)", payload)
    window.wait_for("document.getElementById('as-call').textContent !== ''")
    shown = window.eval(
        "['as-text', 'as-html', 'as-literal', 'as-call'].map(function (id) {"
        " return document.getElementById(id).textContent; })"
    )
    assert shown == [payload] * 4
    assert window.eval("document.getElementById('as-attr').getAttribute('title')") == payload
    assert window.eval("document.querySelectorAll('#as-html *').length") == 0
    assert window.eval("window.pwned === undefined")
    check_carried_by(window, transport)


def test_chat_between_two_windows(
    windows: t.Callable[[], Window], server: str, transport: str
) -> None:
    alice, bob = windows(), windows()
    for window in (alice, bob):
        open_page(window, server, transport, "chat")
    names = {window: window.text("#name") for window in (alice, bob)}

    def say(window: Window, text: str) -> None:
        window.fill("#message", text)
        window.press("#message", "Enter")

    def messages(window: Window, count: int) -> list[str]:
        items = "document.querySelectorAll('#messages li')"
        window.wait_for(f"{items}.length >= arguments[0]", count)
        return t.cast(
            list[str], window.eval(f"Array.prototype.map.call({items}, li => li.textContent)")
        )

    say(alice, "hello <b>bob</b>")
    messages(bob, 1)
    say(bob, "hi alice")
    expected = [f"{names[alice]}: hello <b>bob</b>", f"{names[bob]}: hi alice"]
    assert messages(alice, 2) == expected
    assert messages(bob, 2) == expected
    for window in (alice, bob):
        check_carried_by(window, transport)


def test_form_with_a_file(window: Window, server: str, transport: str, tmp_path: Path) -> None:
    text = "<img src=x onerror=window.pwned=1> Zoë & co\n".encode()
    path = tmp_path / "notes.txt"
    path.write_bytes(text)
    open_page(window, server, transport, "upload")
    before = window.eval("history.length")
    window.set_input_files("#file", path)
    window.fill("#note", "hello")
    window.click("#send")
    assert settle(window, 1) == [["done", None]]
    assert window.text("#result") == f"notes.txt: {len(text)} bytes (hello)"
    assert window.text("#content") == text.decode()
    assert window.eval("document.querySelectorAll('#content *').length") == 0
    assert window.eval("window.pwned === undefined")
    assert window.eval("history.length") == before
    check_carried_by(window, transport)


def test_too_large_upload_is_refused_at_once(
    window: Window, server: str, transport: str, tmp_path: Path
) -> None:
    """The 413 answer reaches the page on the first try, before the client gives up.

    The server reads the refused body to its end before answering: a browser still
    sending a body the server stopped reading may drop the answer (WebKit, Firefox).
    """
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (1024 * 1024))
    open_page(window, server, transport, "upload")
    window.set_input_files("#file", big)
    window.click("#send")
    assert settle(window, 1, timeout=GIVE_UP) == [["error", "too_large"]]
    assert window.eval("window.tries") == 1  # answered, not retried after a lost answer
    reason = "The event's body is larger than 65536 bytes."
    assert window.text("#problem") == f"{reason} (too_large)"
    assert window.text("#result") == ""

    small = tmp_path / "small.txt"
    small.write_bytes(b"small")
    window.set_input_files("#file", small)
    window.click("#send")
    assert settle(window, 2)[1] == ["done", None]
    assert window.text("#result") == "small.txt: 5 bytes"
    assert window.text("#problem") == ""
    check_carried_by(window, transport)


def test_events_add_no_history_entries(window: Window, server: str, transport: str) -> None:
    open_page(window, server, transport, "live")
    before = window.eval("history.length")
    for n in range(1, 11):
        window.click("#inc")
        wait_for_text(window, "count", str(n))
    assert window.eval("history.length") == before
    check_carried_by(window, transport)


def test_strict_csp_page_keeps_working(window: Window, server: str, transport: str) -> None:
    # The page records its own events and policy violations from its first script.
    window.goto(f"{server}/{transport}/csp/strict")
    window.click("#inc")
    wait_for_text(window, "count", "1")
    window.click("#helpers")
    window.wait_for("window.seen.filter(function (e) { return e.type === 'done'; }).length >= 2")
    assert window.eval(
        "[document.getElementById('text').textContent,"
        " document.getElementById('html').innerHTML, window.fromJs]"
    ) == [
        "set by set_text",
        '<b id="bold">bold</b> &lt;i&gt;escaped&lt;/i&gt;',
        ["set by set_text", "input", "</script>"],
    ]
    assert [e["type"] for e in window.eval("window.seen")] == ["send", "done"] * 2
    assert window.eval("window.violations") == []
    frames = window.eval("document.querySelectorAll('iframe').length")
    assert (frames > 0) == (transport == "iframe")
