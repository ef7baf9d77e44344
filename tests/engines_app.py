"""The apps tests/test_engines.py drives, under one gunicorn, each on both transports.

``/<transport>/<app>/`` serves the app with its clients on that transport: ``fetch``
(the default, the best one the browser has) or ``iframe`` (forced). The apps:

- ``live``: tests/live_app.py (counter, rapid clicks, the XSS table, history);
- ``chat``: examples/chat.py;
- ``upload``: examples/upload.py (a form with a file; bodies over 64 kB refused);
- ``csp``: tests/security_app.py's pages, ``/strict`` under a strict nonce policy.

The two variants of an app share its handlers and its store: the default one (SQLite,
shared by the workers), so every page works under ``gunicorn -w 2``.
"""

from __future__ import annotations

import typing as t

from werkzeug.middleware.dispatcher import DispatcherMiddleware

from examples import chat
from examples import upload
from piggyback import Piggyback

from . import live_app
from . import security_app

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment


def not_found(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"Not found"]


def _both(live: Piggyback) -> dict[str, WSGIApplication]:
    """``live`` as it is (fetch where there is fetch) and forced onto the iframe."""
    iframe = Piggyback(
        live.app,
        registry=live.registry,
        store=live.store,
        max_body_bytes=live.max_body_bytes,
        transport="iframe",
    )
    return {"fetch": live, "iframe": iframe}


#: security_app's pages on a store every worker shares (its own lives in one process).
_csp = Piggyback(security_app.site, registry=security_app.live.registry, store=live_app.live.store)
_APPS = {
    "live": _both(live_app.live),
    "chat": _both(chat.live),
    "upload": _both(upload.live),
    "csp": _both(_csp),
}

app = DispatcherMiddleware(
    not_found,
    {
        f"/{transport}/{name}": variant
        for name, variants in _APPS.items()
        for transport, variant in variants.items()
    },
)
