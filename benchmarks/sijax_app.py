"""The Flask-Sijax peer: one callback that updates one element, like ``apps.bump``.

Flask-Sijax 0.4.1 (2015) imports ``flask._request_ctx_stack``, which Flask 2.3 removed.
It uses it only to clean up after streaming (comet) responses, which this benchmark
never sends, so a stand-in is enough to import it under today's Flask.
"""

from __future__ import annotations

import typing as t

import flask
from flask import Flask
from flask import g

if not hasattr(flask, "_request_ctx_stack"):
    flask._request_ctx_stack = None  # type: ignore[attr-defined]

import flask_sijax

app = Flask(__name__)
flask_sijax.Sijax(app)


def bump(response: t.Any) -> None:
    response.html("#count", "1")


@flask_sijax.route(app, "/sijax")  # type: ignore[untyped-decorator]
def index() -> t.Any:
    if g.sijax.is_sijax_request:
        g.sijax.register_callback("bump", bump)
        return g.sijax.process_request()
    return "<span id='count'>0</span>"
