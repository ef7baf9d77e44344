"""A counter, an echo and a list: piggyback on a plain WSGI app, no framework.

Run it with ``python examples/counter.py`` or, with four workers sharing the default
SQLite store, ``gunicorn -w 4 examples.counter:app``; then open http://127.0.0.1:8000/.
"""

from __future__ import annotations

import typing as t

from markupsafe import Markup

from piggyback import Event
from piggyback import Page
from piggyback import Piggyback

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>piggyback counter</title>
  <style>
    body { font: 16px/1.5 system-ui, sans-serif; max-width: 32rem; margin: 2rem auto; }
    button { font: inherit; padding: .2rem .8rem; }
    .pb-busy { opacity: .6; }
  </style>
</head>
<body>
  <h1>piggyback</h1>

  <p>Count: <strong id="count">0</strong>
    <button id="increment" data-pb-click="increment">+1</button>
    <button id="reset" data-pb-click="reset">reset</button></p>

  <p><label>Say something: <input id="message" data-pb-input="echo"></label></p>
  <p>You said: <q id="echo"></q></p>

  <p><label>Add to the list: <input id="item" placeholder="type, then Enter"
    data-pb-change="add_item"></label></p>
  <ul id="items"></ul>
</body>
</html>
"""


def index(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """The only page of the app; piggyback adds its script tag before ``</body>``."""
    if environ["PATH_INFO"] != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found"]
    body = PAGE.encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


app = live = Piggyback(index)


@live.handler
def increment(page: Page, event: Event) -> None:
    page.state["count"] = page.state.get("count", 0) + 1
    page.set_text("count", page.state["count"])


@live.handler
def reset(page: Page, event: Event) -> None:
    page.state["count"] = 0
    page.set_text("count", 0)


@live.handler
def echo(page: Page, event: Event) -> None:
    page.set_text("echo", event.value)


ITEM = Markup(
    '<li id="item-{n}">{text} '
    '<button data-pb-click="remove_item" data-pb-args=\'{{"n": {n}}}\'>remove</button></li>'
)


@live.handler
def add_item(page: Page, event: Event) -> None:
    """Adds the typed item. It is data: ``Markup.format`` escapes it."""
    text = (event.value or "").strip()
    if text:
        n = page.state["items"] = page.state.get("items", 0) + 1
        page.append("items", ITEM.format(n=n, text=text))
    page.set_value("item", "")


@live.handler
def remove_item(page: Page, event: Event) -> None:
    page.remove(f"item-{int(event.args['n'])}")


if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", 8000, app, threaded=True)
