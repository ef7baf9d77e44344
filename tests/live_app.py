"""The app the browser tests drive under a real gunicorn: handlers that record calls."""

from __future__ import annotations

import json
import time
import typing as t

from piggyback import Event
from piggyback import literal
from piggyback import Page
from piggyback import Piggyback

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>live</title></head>
<body>
  <p><span id="count">0</span> <button id="inc" data-pb-click="increment">+1</button></p>
  <button id="report" data-pb-click="report">report</button> <pre id="log"></pre>
  <button id="boom" data-pb-click="boom">boom</button>
  <button id="xss" data-pb-click="xss">xss</button>
  <div id="as-text"></div><div id="as-html"></div><div id="as-literal"></div>
  <div id="as-call"></div><a id="as-attr" href="#">link</a>
  <script nonce="n0nce">window.setFromCall = function (value) {
    document.getElementById("as-call").textContent = value;
  };</script>
</body></html>
"""


def index(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    environ["piggyback.page"].join("all")
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))],
    )
    return [PAGE]


app = live = Piggyback(index)
#: The same app and handlers, with clients forced onto the hidden-iframe transport.
iframe_app = Piggyback(index, registry=live.registry, transport="iframe")


@live.handler
def increment(page: Page, event: Event) -> None:
    page.state["count"] = page.state.get("count", 0) + 1
    page.state.setdefault("seqs", []).append(event.seq)
    page.set_text("count", page.state["count"])


@live.handler
def tell(page: Page, event: Event) -> None:
    """Sends out of band, committed with this event: to a page, or to a group."""
    if "page" in event.args:
        live.page(event.args["page"]).call("told", event.args["n"])
    else:
        live.group("all").call("told", event.args["n"])


@live.handler
def shout(page: Page, event: Event) -> None:
    """Echoes the text to the page and publishes it to every page of the group."""
    text = event.args["text"]
    page.set_text("as-text", text)
    live.group("all").set_text("shout", text)


@live.handler
def slow_increment(page: Page, event: Event) -> None:
    """Slow enough that a worker killed during a run is likely inside it."""
    time.sleep(0.2)
    increment(page, event)


@live.handler
def report(page: Page, event: Event) -> None:
    page.set_text("log", json.dumps(page.state.get("seqs", [])))


@live.handler
def boom(page: Page, event: Event) -> None:
    raise ZeroDivisionError("the secret detail of a failure")


@live.handler
def xss(page: Page, event: Event) -> None:
    payload = event.args["payload"]
    page.set_text("as-text", payload)
    page.set_html("as-html", payload)
    page.send_js(f"document.getElementById('as-literal').textContent = {literal(payload)};")
    page.call("setFromCall", payload)
    page.set_attr("as-attr", "title", payload)
