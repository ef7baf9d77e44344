"""A chat room: messages reach every open tab by polling and piggybacking.

The tab that posts a message sees it at once, in the answer to its post: a group send
made by a handler reaches the handler's own page in the same answer, never again later.

Run it with ``gunicorn -w 4 examples.chat:app`` (the default SQLite store) and open
http://127.0.0.1:8000/ in two tabs. ``python -m examples.chat_bot "hello"`` posts into
the room from another process. For several machines, point every process at one Redis:
``PIGGYBACK_STORE=redis://127.0.0.1:6379/0 gunicorn -w 4 examples.chat:app``.

The room keeps no history: a tab sees what is said after it opened.
"""

from __future__ import annotations

import secrets
import typing as t

from markupsafe import Markup

from piggyback import Event
from piggyback import Page
from piggyback import Piggyback

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

ROOM = "lobby"
#: Seconds between polls: how long a message takes at most to reach an idle tab.
POLL = 1

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>piggyback chat</title>
  <style>
    body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 36rem; margin: 2rem auto; }}
    #messages {{ list-style: none; padding: 0; min-height: 10rem; }}
    input {{ font: inherit; width: 100%; }}
  </style>
</head>
<body>
  <h1>#{room}</h1>
  <p>You are <b id="name">{name}</b>.</p>
  <ul id="messages"></ul>
  <input id="message" placeholder="Say something, then Enter" autocomplete="off"
         data-pb-change="say" autofocus>
</body>
</html>
"""

MESSAGE = Markup('<li class="message"><b>{name}</b>: {text}</li>')


def index(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """The room's page: the page joins the room and polls while it renders."""
    if environ["PATH_INFO"] != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found"]
    page: Page = environ["piggyback.page"]
    name = page.state["name"] = f"guest-{secrets.randbelow(10000):04d}"
    page.join(ROOM)
    page.poll(POLL)
    body = PAGE.format(room=ROOM, name=name).encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


app = live = Piggyback(index)


def post(name: str, text: str) -> None:
    """Put a message into the room: one store write, however many tabs are open.

    From a handler, the posting tab gets the message with its answer, before the
    input is cleared.
    """
    live.group(ROOM).append("messages", MESSAGE.format(name=name, text=text))


@live.handler
def say(page: Page, event: Event) -> None:
    text = (event.value or "").strip()[:500]
    if text:
        post(page.state["name"], text)
    page.set_value("message", "")
