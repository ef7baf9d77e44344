"""A counter and a greeting kept in the Flask session, updated live by piggyback.

Run it with ``python examples/flask_app.py`` or, with four workers sharing the default
SQLite store, ``gunicorn -w 4 examples.flask_app:app``; then open
http://127.0.0.1:8000/. Reload the page: the count and the name come back, because the
handlers wrote them to Flask's session cookie, which the event answers set.

The session is signed with ``SECRET_KEY``: set ``FLASK_SECRET_KEY`` to a real secret
outside of development.
"""

from __future__ import annotations

import typing as t

from flask import Flask
from flask import render_template_string
from flask import session

from piggyback import Event
from piggyback import Page
from piggyback.flask import FlaskPiggyback

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>piggyback on Flask</title>
  <style>
    body { font: 16px/1.5 system-ui, sans-serif; max-width: 32rem; margin: 2rem auto; }
    button, input { font: inherit; padding: .2rem .8rem; }
  </style>
</head>
<body>
  <h1 id="greeting">{{ greeting }}</h1>

  <p>Count: <strong id="count">{{ count }}</strong>
    <button id="increment" data-pb-click="increment">+1</button>
    <button id="reset" data-pb-click="reset">reset</button></p>

  <p><label>Your name: <input id="name" value="{{ name }}" data-pb-change="rename">
    </label> (type, then Enter)</p>
</body>
</html>
"""

live = FlaskPiggyback()


def create_app(config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """The app; ``config`` overrides its settings, e.g. ``PIGGYBACK_STORE``."""
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev")
    app.config.from_prefixed_env()
    app.config.update(config or {})
    app.add_url_rule("/", view_func=index)
    live.init_app(app)
    return app


def index() -> str:
    name = session.get("name", "")
    return render_template_string(
        PAGE, greeting=greeting(name), count=session.get("count", 0), name=name
    )


def greeting(name: str) -> str:
    return f"Hello, {name}!" if name else "Hello, stranger!"


@live.handler
def increment(page: Page, event: Event) -> None:
    session["count"] = session.get("count", 0) + 1
    page.set_text("count", session["count"])


@live.handler
def reset(page: Page, event: Event) -> None:
    session.pop("count", None)
    page.set_text("count", 0)


@live.handler
def rename(page: Page, event: Event) -> None:
    """Saves the name typed into the field: its value is ``event.value``."""
    name = (event.value or "").strip()[:40]
    session["name"] = name
    page.set_text("greeting", greeting(name))
    page.set_value("name", name)


app = create_app()

if __name__ == "__main__":
    app.run("127.0.0.1", 8000)
