"""A plain werkzeug app with cookies of its own, under piggyback.

The page counts your visits in a ``visits`` cookie that the app sets on its own
responses: piggyback adds its script tag and leaves the app's headers alone. A handler
reads the browser's cookies from ``event.request`` (a werkzeug ``Request``) and sets
cookies on the event's answer by returning a ``Response`` that sets them.

Run it with ``python examples/werkzeug_app.py`` or ``gunicorn -w 4
examples.werkzeug_app:app``; then open http://127.0.0.1:8000/.
"""

from __future__ import annotations

import typing as t

from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

from piggyback import Event
from piggyback import Page
from piggyback import Piggyback

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>piggyback on werkzeug</title>
  <style>
    body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 32rem; margin: auto; }}
    .dark {{ background: #222; color: #eee; }}
  </style>
</head>
<body id="body" class="{theme}">
  <p>Visits, from the cookie this page set: <strong id="visits">{visits}</strong>
    <button id="recount" data-pb-click="recount">ask the server</button></p>
  <p>Theme: <span id="theme">{theme}</span>
    <button id="toggle" data-pb-click="toggle_theme">toggle</button></p>
</body>
</html>
"""

THEMES = ("light", "dark")


@Request.application
def index(request: Request) -> Response:
    """The page; it sets the ``visits`` cookie itself."""
    if request.path != "/":
        return Response("Not found", status=404)
    visits = _visits(request) + 1
    html = PAGE.format(visits=visits, theme=_theme(request))
    response = Response(html, mimetype="text/html")
    response.set_cookie("visits", str(visits), httponly=True, samesite="Lax")
    return response


def recount(page: Page, event: Event) -> None:
    """Shows the visits the browser's cookie says, as the event's request carried it."""
    page.set_text("visits", _visits(event.request))


def toggle_theme(page: Page, event: Event) -> Response:
    """Switches the theme, and keeps it in a cookie set by the event's answer."""
    theme = "light" if _theme(event.request) == "dark" else "dark"
    page.set_attr("body", "class", theme)
    page.set_text("theme", theme)
    response = Response()  # only its cookies reach the browser, with the answer
    response.set_cookie("theme", theme, httponly=True, samesite="Lax")
    return response


def create_app(**options: t.Any) -> Piggyback:
    """The page in piggyback's middleware; ``options`` go to :class:`Piggyback`."""
    live = Piggyback(index, **options)
    live.handler(recount)
    live.handler(toggle_theme)
    return live


def _visits(request: Request) -> int:
    text = request.cookies.get("visits", "")
    return int(text) if text.isdigit() and len(text) < 10 else 0


def _theme(request: Request) -> str:
    theme = request.cookies.get("theme", "")
    return theme if theme in THEMES else "light"


app = create_app()

if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", 8000, app, threaded=True)
