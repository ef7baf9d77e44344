"""A Flask app whose auth and error tools guard piggyback's handlers, for gunicorn tests.

What its ``got_request_exception`` receiver and error handler see is appended, one JSON
line each, to the file named by ``HOST_APP_LOG``: the test reads it across workers.
"""

from __future__ import annotations

import json
import os
import typing as t

from flask import abort
from flask import Flask
from flask import got_request_exception
from flask import request
from flask_login import current_user
from flask_login import login_required
from flask_login import login_user
from flask_login import LoginManager
from flask_login import UserMixin

from piggyback import Event
from piggyback import Page
from piggyback.flask import FlaskPiggyback

app = Flask(__name__)
app.secret_key = "host app"
live = FlaskPiggyback(app, secret_key="host app tokens")
login_manager = LoginManager(app)
login_manager.login_view = "login"


class User(UserMixin):
    id = "ada"


@login_manager.user_loader
def load_user(name: str) -> User | None:
    return User() if name == "ada" else None


def record(**entry: t.Any) -> None:
    with open(os.environ["HOST_APP_LOG"], "a") as log:
        log.write(json.dumps({**entry, "pid": os.getpid()}) + "\n")


@app.route("/")
def index() -> str:
    return "<!doctype html><html><body><p id='out'></p></body></html>"


@app.route("/login")
def login() -> str:
    login_user(User())
    return "signed in"


@app.before_request
def refuse_anonymous_events() -> None:
    """Events need a signed-in user, but for the handlers that ask Flask-Login."""
    event = request.path.startswith("/_pb/") and not request.args.get("h", "").startswith("m")
    if event and not current_user.is_authenticated:
        abort(401)


@app.errorhandler(KeyError)
def missing(error: KeyError) -> tuple[str, int]:
    record(handled=repr(error))
    return "missing", 500


def received(sender: Flask, exception: Exception, **extra: t.Any) -> None:
    record(signal=repr(exception))


got_request_exception.connect(received, app)


@live.handler
def whoami(page: Page, event: Event) -> None:
    page.set_text("out", current_user.id)


@live.handler
@login_required
def members(page: Page, event: Event) -> None:
    page.set_text("out", "members only")


@live.handler
def forbidden(page: Page, event: Event) -> None:
    page.set_text("out", "never")
    abort(403)


@live.handler
def boom(page: Page, event: Event) -> None:
    raise RuntimeError("boom in a handler")


@live.handler
def lookup(page: Page, event: Event) -> None:
    raise KeyError("nothing here")
