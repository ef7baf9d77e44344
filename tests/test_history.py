"""History: ``push_url``/``replace_url`` commands and ``data-pb-popstate`` in Chromium.

Against the fake server of ``test_client_js.py``, on both transports: the address bar
follows the commands, back and forward send a ``popstate`` event with the URL, and the
transports add no history entries of their own.
"""

# ruff: noqa: F811 (the fixtures are imported from test_client_js)

from __future__ import annotations

import typing as t

from .test_client_js import chromium  # noqa: F401
from .test_client_js import FakeServer
from .test_client_js import open_page
from .test_client_js import Params
from .test_client_js import pytestmark  # noqa: F401
from .test_client_js import seen
from .test_client_js import server  # noqa: F401
from .test_client_js import tab  # noqa: F401
from .test_client_js import Transport
from .test_client_js import transport  # noqa: F401
from .test_client_js import wait_seen

BODY = """
  <button id="one" data-pb-click="show" data-pb-args='{"n": 1}'>one</button>
  <button id="two" data-pb-click="show" data-pb-args='{"n": 2}'>two</button>
  <button id="go" data-pb-click="go">go</button>
  <p id="out"></p>
  <script nonce="abc">document.body.setAttribute("data-pb-popstate", "navigate");</script>
"""


def test_push_back_back_forward(tab: t.Any, server: FakeServer, transport: Transport) -> None:
    def commands(params: Params) -> list[t.Any]:
        if params.get("h") == "show":
            n = params["g"][-2]
            return [["pushUrl", f"?filter={n}"], ["text", "out", n]]
        if params.get("h") == "navigate":
            return [["text", "out", params["v"]]]
        return []

    def configure(page: t.Any) -> None:
        page.commands = commands

    page = open_page(tab, server, BODY, configure, **transport.attrs)
    start = server.url(page)
    before = tab.evaluate("history.length")
    for count, button in enumerate(["#go", "#one", "#go", "#two", "#go"], 1):
        tab.click(button)
        wait_seen(tab, "done", count)
    assert tab.url == start + "?filter=2"
    assert tab.evaluate("history.length") == before + 2  # the two pushes, nothing else

    tab.go_back()
    wait_seen(tab, "done", 6)
    assert tab.url == start + "?filter=1"
    tab.go_back()
    wait_seen(tab, "done", 7)
    assert tab.url == start
    tab.go_forward()
    wait_seen(tab, "done", 8)

    assert tab.url == start + "?filter=1"
    assert tab.text_content("#out") == start + "?filter=1"
    assert [(r["h"], r.get("e"), r.get("v")) for r in page.requests[5:]] == [
        ("navigate", "popstate", start + "?filter=1"),
        ("navigate", "popstate", start),
        ("navigate", "popstate", start + "?filter=1"),
    ]
    # No frame of the iframe transport was taken back to an old answer's URL.
    assert [r["s"] for r in page.requests] == [str(n) for n in range(1, 9)]
    assert tab.evaluate("history.length") == before + 2
    assert page.loads == 1
    assert seen(tab, "error") == []
    transport.check(page)


def test_replace_url_and_other_origins(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, BODY)
    page.commands = lambda params: [
        ["replaceUrl", "/elsewhere?x=1#top"],
        ["pushUrl", "http://example.invalid/"],
        ["pushUrl", "//example.invalid/x"],
        ["replaceUrl", "javascript:alert(1)"],
    ]
    before = tab.evaluate("history.length")
    tab.click("#go")
    wait_seen(tab, "done", 1)

    assert tab.url == server.base + "/elsewhere?x=1#top"
    assert tab.evaluate("history.length") == before
    assert [e["reason"] for e in seen(tab, "error")] == [
        "not a URL of this site: http://example.invalid/",
        "not a URL of this site: //example.invalid/x",
        "not a URL of this site: javascript:alert(1)",
    ]
    assert page.loads == 1


def test_without_data_pb_popstate_back_sends_nothing(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, '<button id="go" data-pb-click="go">go</button>')
    page.commands = lambda params: [["pushUrl", "?pushed"]]
    tab.click("#go")
    wait_seen(tab, "done", 1)
    tab.go_back()
    tab.wait_for_function("!location.search")
    tab.click("#go")
    wait_seen(tab, "done", 2)

    assert [r["h"] for r in page.requests] == ["go", "go"]
