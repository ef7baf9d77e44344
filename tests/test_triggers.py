"""Trigger attributes of piggyback.js in headless Chromium: debounce, throttle, key,
confirm, every; a page listener's ``preventDefault()`` and a canceled ``piggyback:send``.

Against the fake server of ``test_client_js.py``. Nothing here asserts on elapsed time:
the tests count requests and compare their order, and the debounce and throttle tests
run the page's timers on Playwright's fake clock, so a busy machine cannot change them.
"""

# ruff: noqa: F811 (the fixtures are imported from test_client_js)

from __future__ import annotations

import time
import typing as t

from .test_client_js import chromium  # noqa: F401
from .test_client_js import FakeServer
from .test_client_js import GO
from .test_client_js import open_page
from .test_client_js import Params
from .test_client_js import pytestmark  # noqa: F401
from .test_client_js import seen
from .test_client_js import server  # noqa: F401
from .test_client_js import tab  # noqa: F401
from .test_client_js import Transport
from .test_client_js import transport  # noqa: F401
from .test_client_js import wait_seen
from .test_client_js import wait_until
from .test_client_js import wait_until_quiet


def stop_the_clock(tab: t.Any) -> None:
    """From now on the page's time moves only as the test moves it (after ``install``
    it still flows with real time, which a loaded machine stretches)."""
    tab.clock.pause_at(tab.evaluate("Date.now()") + 1000)


def test_debounce_sends_once_with_the_last_value(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    tab.clock.install()
    page = open_page(
        tab,
        server,
        '<input id="q" data-pb-input="search" data-pb-debounce="300">',
        **transport.attrs,
    )
    stop_the_clock(tab)
    tab.focus("#q")
    for key in "abcdef":  # six keys, 40 ms apart
        tab.keyboard.press(key)
        tab.clock.run_for(40)
    assert page.requests == []
    tab.clock.run_for(300)
    wait_until(lambda: len(page.requests) == 1)
    wait_until_quiet(page)

    assert [(r["h"], r["e"], r["v"]) for r in page.requests] == [("search", "input", "abcdef")]
    transport.check(page)


def test_throttle_bounds_the_count_and_the_last_value_arrives(
    tab: t.Any, server: FakeServer
) -> None:
    tab.clock.install()
    page = open_page(tab, server, '<input id="q" data-pb-input="search" data-pb-throttle="300">')
    stop_the_clock(tab)
    tab.focus("#q")
    for _ in range(50):  # 50 keys, 20 ms apart: one second
        tab.keyboard.press("x")
        tab.clock.run_for(20)
    tab.clock.run_for(300)
    wait_until(lambda: any(r["v"] == "x" * 50 for r in page.requests))
    wait_until_quiet(page)

    values = [r["v"] for r in page.requests]
    # One at once, then at most one per 300 ms: at 300, 600, 900 and 1,200 ms. (Fewer
    # when a slow answer lets queued input events merge.)
    assert 2 <= len(values) <= 5
    assert values[0] == "x"
    assert values[-1] == "x" * 50
    assert values == sorted(values, key=len)


def test_key_sends_only_for_that_key(tab: t.Any, server: FakeServer) -> None:
    page = open_page(
        tab,
        server,
        """<input id="k" data-pb-keydown="enter" data-pb-key="Enter">
        <button id="b" data-pb-click="clicked" data-pb-key="Enter">b</button>""",
    )
    tab.focus("#k")
    for key in ["a", "Escape", "Shift", "Enter", "b"]:
        tab.keyboard.press(key)
    wait_seen(tab, "done", 1)
    tab.click("#b")  # data-pb-key filters key events only
    wait_seen(tab, "done", 2)

    assert [(r["h"], r.get("v"), r["g"]) for r in page.requests] == [
        ("enter", "a", '{"key":"Enter"}'),
        ("clicked", None, "{}"),
    ]


CONFIRM = (
    """
  <button id="del" data-pb-click="delete" data-pb-confirm="Delete it?">delete</button>
  <form id="form" action="/landing" data-pb-submit="save" data-pb-confirm="Save it?">
    <input name="x" value="1"><button id="save">save</button>
  </form>
"""
    + GO
)


def test_a_dismissed_confirm_sends_nothing(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, CONFIRM)  # the tab dismisses every dialog
    tab.click("#del")
    tab.click("#save")
    tab.click("#go")
    wait_seen(tab, "done", 1)

    assert tab.dialogs == ["Delete it?", "Save it?"]
    assert [r["h"] for r in page.requests] == ["go"]
    assert tab.url == server.url(page)  # the form did not navigate either


def test_an_accepted_confirm_sends(chromium: t.Any, server: FakeServer) -> None:
    context = chromium.new_context()
    try:
        tab = context.new_page()
        tab.on("dialog", lambda dialog: dialog.accept())
        page = open_page(tab, server, CONFIRM)
        tab.click("#del")
        wait_seen(tab, "done", 1)
        tab.click("#save")
        wait_seen(tab, "done", 2)

        assert [(r["h"], r["e"]) for r in page.requests] == [
            ("delete", "click"),
            ("save", "submit"),
        ]
        assert page.carried[1].form == {"x": ["1"]}
        assert tab.url == server.url(page)
    finally:
        context.close()


PREVENTED = (
    """
  <button id="b" data-pb-click="blocked">b</button>
  <form id="form" data-pb-submit="save"><button id="save">save</button></form>
  <button id="c" data-pb-click="canceled">c</button>
  <script nonce="abc">
    document.getElementById("b").addEventListener("click", e => e.preventDefault());
    document.getElementById("form").addEventListener("submit", e => e.preventDefault());
    document.addEventListener("piggyback:send", e => {
      if (e.detail.handler === "canceled") e.preventDefault();
    });
  </script>
"""
    + GO
)


def test_prevented_dom_events_and_canceled_sends_send_nothing(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(tab, server, PREVENTED, **transport.attrs)
    tab.click("#b")
    tab.click("#save")
    tab.click("#c")
    tab.click("#go")
    wait_seen(tab, "done", 1)
    tab.click("#go")
    wait_seen(tab, "done", 2)

    assert [(r["h"], r["s"]) for r in page.requests] == [("go", "1"), ("go", "2")]
    sends = [(e["handler"], e["seq"], e["cancelable"]) for e in seen(tab, "send")]
    assert sends == [("canceled", 1, True), ("go", 1, True), ("go", 2, True)]
    assert tab.evaluate("document.getElementById('c').className") == ""
    transport.check(page)


EVERY = (
    """
  <span id="clock" data-pb-click="tick" data-pb-every="0.2" data-pb-args='{"n": 1}'>0</span>
"""
    + GO
)


def test_every_never_piles_up_behind_a_long_event(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(tab, server, EVERY, **transport.attrs)

    def answer(params: Params) -> t.Any:
        if params["s"] == "1":
            page.release.wait(10)  # a 2 s handler, at least
        return page.protocol_answer(params)

    page.answer = answer
    try:
        wait_until(lambda: len(page.requests) == 1)
        time.sleep(2)  # ten periods pass while the first tick is in flight
        tab.click("#go")
        time.sleep(0.2)
        assert len(page.requests) == 1
    finally:
        page.release.set()
    wait_until(lambda: len(page.requests) >= 4)

    # The click waited behind the long tick, and no tick piled up before it.
    assert [(r["h"], r.get("e")) for r in page.requests[:3]] == [
        ("tick", "every"),
        ("go", "click"),
        ("tick", "every"),
    ]
    assert page.requests[0]["g"] == '{"n":1}' and page.requests[0]["t"] == "clock"
    assert page.max_active == 1
    transport.check(page)


def test_every_stops_with_its_element_and_pauses_while_hidden(
    tab: t.Any, server: FakeServer
) -> None:
    page = open_page(tab, server, EVERY)
    wait_until(lambda: len(page.requests) >= 2)
    tab.evaluate("""() => {
      Object.defineProperty(document, "hidden", {value: true, configurable: true});
    }""")
    count = wait_until_quiet(page, 0.6)
    tab.evaluate("""() => {
      Object.defineProperty(document, "hidden", {value: false, configurable: true});
    }""")
    wait_until(lambda: len(page.requests) > count)
    tab.evaluate("document.getElementById('clock').remove()")
    count = wait_until_quiet(page, 0.6)
    time.sleep(0.6)

    assert len(page.requests) == count
    assert {r["h"] for r in page.requests} == {"tick"}
