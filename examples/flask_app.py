"""A counter, a greeting and notes kept in the Flask session, for signed-in users only.

Run it with ``python examples/flask_app.py`` or, with four workers sharing the default
SQLite store, ``gunicorn -w 4 examples.flask_app:app``; then open
http://127.0.0.1:8000/ and sign in as ``ada`` (password ``lovelace``).

What it shows:

- **Login-protected handlers**: one ``@live.before_event`` hook makes every handler
  require a signed-in user, with Flask-Login's own ``unauthorized()``: an event of a
  user who signed out elsewhere takes the page to the login view.
- **A rendered block**: ``add_note`` appends ONE block of ``templates/flask_app.html``,
  rendered with autoescaping by ``live.render_block``.
- **Logout ends the pages**: every page of a user joins the group ``user:<id>`` when
  it is rendered; at logout, Flask-Login's ``user_logged_out`` signal expires that
  group, so every open tab of the user gets ``piggyback:expired`` (and reloads to the
  login view) instead of receiving anything more.

Reload the page: the count, the name and the notes come back, because the handlers
wrote them to Flask's session cookie, which the event answers set. The session is
signed with ``SECRET_KEY``: set ``FLASK_SECRET_KEY`` to a real secret outside of
development.
"""

from __future__ import annotations

import typing as t

from flask import Flask
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask_login import current_user
from flask_login import login_required
from flask_login import login_user
from flask_login import LoginManager
from flask_login import logout_user
from flask_login import user_logged_out
from flask_login import UserMixin
from werkzeug.wrappers import Response

from piggyback import Event
from piggyback import Page
from piggyback.flask import FlaskPiggyback

#: The demo's only account: name -> password.
USERS = {"ada": "lovelace"}
#: Notes kept per session, at most.
MAX_NOTES = 20

live = FlaskPiggyback()
login_manager = LoginManager()
login_manager.login_view = "log_in"


class User(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name


@login_manager.user_loader
def load_user(name: str) -> User | None:
    return User(name) if name in USERS else None


def create_app(config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """The app; ``config`` overrides its settings, e.g. ``PIGGYBACK_STORE``."""
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev")
    app.config.from_prefixed_env()
    app.config.update(config or {})
    app.add_url_rule("/", view_func=index)
    app.add_url_rule("/login", view_func=log_in, methods=["GET", "POST"])
    app.add_url_rule("/logout", view_func=log_out, methods=["POST"])
    login_manager.init_app(app)
    live.init_app(app)
    user_logged_out.connect(end_pages, app)
    return app


def user_group(user: User) -> str:
    return f"user:{user.id}"


@login_required
def index() -> str:
    request.environ["piggyback.page"].join(user_group(current_user))
    name = session.get("name", "")
    return render_template(
        "flask_app.html",
        greeting=greeting(name),
        count=session.get("count", 0),
        name=name,
        notes=session.get("notes", []),
    )


def log_in() -> str | Response:
    error = ""
    if request.method == "POST":
        name = request.form.get("username", "")
        if USERS.get(name) == request.form.get("password"):
            login_user(User(name))
            return redirect(_local(request.args.get("next")) or url_for("index"))
        error = "Wrong name or password."
    return render_template("flask_login.html", error=error)


def log_out() -> Response:
    logout_user()
    return redirect(url_for("log_in"))


def end_pages(app: Flask, user: User) -> None:
    """Flask-Login's ``user_logged_out``: every open page of the user ends."""
    live.group(user_group(user)).expire()


def _local(url: str | None) -> str | None:
    """``url`` if it is a path of this site, else ``None``: browsers drop tabs and
    newlines and read a backslash as a slash, so ``/<tab>/host`` would leave the site."""
    if not url or not url.isprintable() or "\\" in url:
        return None
    return url if url.startswith("/") and not url.startswith("//") else None


def greeting(name: str) -> str:
    return f"Hello, {name}!" if name else "Hello, stranger!"


@live.before_event
def require_login(page: Page, event: Event) -> Response | None:
    """Every handler requires a signed-in user, as Flask-Login's views do."""
    return None if current_user.is_authenticated else login_manager.unauthorized()


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


@live.handler
def add_note(page: Page, event: Event) -> None:
    """Appends the note, rendered by the template's own ``note`` block."""
    text = event.form.get("text", "").strip()[:200]
    if not text:
        return
    session["notes"] = [*session.get("notes", []), text][-MAX_NOTES:]
    page.append("notes", live.render_block("flask_app.html", "note", note=text))
    page.set_value("add-note-text", "")


app = create_app()

if __name__ == "__main__":
    app.run("127.0.0.1", 8000)
