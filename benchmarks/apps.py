"""The apps the benchmark servers run, one app per gunicorn.

- ``site``: a bare WSGI app. ``/asset`` (JSON, piggyback passes it through), ``/page``
  (HTML, piggyback injects its tag), the browser pages under ``/bench/``, and at every
  other path the exact bytes and headers of a one-command piggyback answer: the
  baseline for an event.
- ``live``: ``site`` wrapped in ``Piggyback``; its store comes from ``PIGGYBACK_STORE``
  (unset: the default SQLite file in the server's working directory).
- ``flask_app``: a bare Flask route returning the same answer bytes.
- ``store_floor``: not piggyback, the floor of its default store: an event does only the
  SQLite store's begin and save (a poll its one read) and writes the answer document.
- ``lease_floor``: a bound on every store that keeps a lease: an event takes and gives
  back the page's kernel lease and writes the answer document, storing nothing.
- ``redis_floor``: a bound on every store on a Redis server that keeps a lease: an event
  makes two round trips to the server (``PIGGYBACK_STORE``), one before its answer and
  one after, and stores nothing.

The Flask-Sijax peer lives in ``benchmarks/sijax_app.py``, imported only by its server.
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
import time
import typing as t
from urllib.parse import parse_qs
from urllib.parse import urlencode

from flask import Flask
from flask import Response
from markupsafe import escape
from werkzeug.test import Client as HTTPClient

from piggyback import Event
from piggyback import Page
from piggyback import Piggyback
from piggyback.endpoint import _CSP
from piggyback.endpoint import _HEADERS
from piggyback.reply import Batch
from piggyback.reply import Reply
from piggyback.script import answer_document
from piggyback.stores.base import Changes
from piggyback.stores.base import PageRecord
from piggyback.stores.file_lease import lease_file
from piggyback.stores.file_lease import LeaseFile
from piggyback.stores.memory import MemoryStore
from piggyback.stores.sqlite import SQLiteStore

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

Headers = list[tuple[str, str]]

#: Shared by the servers and the load generator, which mints page tokens with it.
SECRET_KEY = os.environ.get("PIGGYBACK_SECRET_KEY", "piggyback benchmark key")

#: A JSON answer piggyback passes through.
ASSET = (
    b'{"items": [' + b", ".join(b'{"id": %d, "name": "item %d"}' % (i, i) for i in range(8)) + b"]}"
)

#: A small but typical HTML page (about 2 kB) that piggyback injects its tag into.
PAGE = (
    b"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>A page</title>"
    b"<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto}</style>"
    b"</head><body><h1>A page</h1><nav><a href='/'>home</a> <a href='/page'>page</a></nav>"
    + b"".join(
        b"<p id='p%d'>Paragraph %d of an ordinary page, with a little text.</p>" % (i, i)
        for i in range(24)
    )
    + b"<p><span id='count'>0</span> <button id='go' data-pb-click='bump'>+1</button></p>"
    b"</body></html>"
)

#: One element changed by a click, for the browser round trips. The button comes first
#: so that a longer text never moves it from under the mouse.
_COUNTER = b"<p><button id='go'%s>go</button> <span id='count'>0</span></p>"

RAW_PAGE = (
    b"<!doctype html><html><head><meta charset='utf-8'><title>raw fetch</title></head><body>"
    + _COUNTER % b""
    + b"<script>document.getElementById('go').addEventListener('click', function () {"
    b" fetch('/bench/bump').then(function (r) { return r.text(); }).then(function (text) {"
    b" document.getElementById('count').textContent = text; }); });</script>"
    b"</body></html>"
)

#: The floor of the iframe transport: a plain hidden iframe, navigated without a history
#: entry, whose document sets the text in its parent.
RAW_IFRAME_PAGE = (
    b"<!doctype html><html><head><meta charset='utf-8'><title>raw iframe</title></head><body>"
    + _COUNTER % b""
    + b"<iframe id='frame' style='display:none'></iframe>"
    b"<script>document.getElementById('go').addEventListener('click', function () {"
    b" document.getElementById('frame').contentWindow.location.replace('/bench/frame'); });"
    b"</script></body></html>"
)

#: The floor of the iframe transport's POST path: a form posted into a spare hidden frame
#: made ahead of time (a frame never navigated, so no history entry), the next spare made
#: once the answer has loaded.
RAW_POST_PAGE = (
    b"<!doctype html><html><head><meta charset='utf-8'><title>raw post</title></head><body>"
    b"<form id='form' method='post' action='/bench/frame' target='plain'>"
    + (_COUNTER % b"")
    + b"</form><script>var form = document.getElementById('form'), frame = null;"
    b" function newFrame() { var made = document.createElement('iframe');"
    b" made.style.display = 'none'; return document.body.appendChild(made); }"
    b" var spare = newFrame();"
    b" form.addEventListener('submit', function (event) { event.preventDefault();"
    b" if (frame) { frame.parentNode.removeChild(frame); }"
    b" frame = spare || newFrame(); spare = null; frame.contentWindow.name = 'plain';"
    b" frame.onload = function () { spare = newFrame(); };"
    b" HTMLFormElement.prototype.submit.call(form); });</script></body></html>"
)

#: The floor of piggyback's default transport: a raw ``fetch()`` of a real event, its
#: answer read as the client reads it, with none of the client's work. The page carries
#: piggyback's tag only for the page token and the endpoint.
RAW_EVENT_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>raw event</title></head><body>"
    + (_COUNTER % b"").decode()
    + "{tag}<script>var seq = 0, tag = document.querySelector('script[data-token]');"
    " document.getElementById('go').addEventListener('click', function () {"
    " seq += 1; fetch(tag.dataset.endpoint + '?p=' + encodeURIComponent(tag.dataset.token)"
    " + '&s=' + seq + '&a=' + (seq - 1) + '&h=tick&e=click&t=go', {cache: 'no-store'})"
    ".then(function (r) { return r.text(); }).then(function (text) {"
    " var reply = JSON.parse(/receive\\(([\\s\\S]*)\\)<\\/script>/.exec(text)[1]);"
    " tag.dataset.token = reply.token;"
    " document.getElementById('count').textContent = reply.batches.pop().commands[0][2];"
    " }); });</script></body></html>"
)

HTMX_PAGE = (
    b"<!doctype html><html><head><meta charset='utf-8'><title>htmx</title>"
    b"<script src='/bench/htmx.min.js'></script></head><body>"
    + _COUNTER % b" hx-get='/bench/bump' hx-target='#count'"
    + b"</body></html>"
)

PIGGYBACK_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>piggyback</title></head><body>"
    "{counter}{tag}</body></html>"
)
PIGGYBACK_COUNTER = (_COUNTER % b" data-pb-click='tick'").decode()
#: The same counter in a form, so each click submits it: the POST path of a transport.
PIGGYBACK_FORM = f"<form data-pb-submit='tick'>{(_COUNTER % b'').decode()}</form>"


def _html(start_response: StartResponse, body: bytes, status: str = "200 OK") -> list[bytes]:
    start_response(
        status,
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _bytes(start_response: StartResponse, body: bytes, content_type: str) -> list[bytes]:
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def site(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """The bare app; every path it does not know answers like a piggyback event."""
    path = environ.get("PATH_INFO", "")
    if path == "/asset":
        return _bytes(start_response, ASSET, "application/json")
    if path == "/page":
        return _html(start_response, PAGE)
    if path.startswith("/bench/"):
        return _bench(environ, start_response, path[len("/bench/") :])
    start_response("200 OK", list(ANSWER_HEADERS))
    return [ANSWER_BODY]


def _bench(environ: WSGIEnvironment, start_response: StartResponse, name: str) -> list[bytes]:
    """The browser round-trip pages and what they fetch."""
    if name == "raw":
        return _html(start_response, RAW_PAGE)
    if name == "htmx":
        return _html(start_response, HTMX_PAGE)
    if name == "raw-iframe":
        return _html(start_response, RAW_IFRAME_PAGE)
    if name == "raw-post":
        return _html(start_response, RAW_POST_PAGE)
    if name == "frame":  # what the plain iframe loads: a new value every time
        script = b"parent.document.getElementById('count').textContent = '%s';"
        return _html(
            start_response, b"<script>" + script % secrets.token_hex(4).encode() + b"</script>"
        )
    if name == "bump":  # a new value every time, so every click changes the DOM
        return _bytes(start_response, secrets.token_hex(4).encode(), "text/html; charset=utf-8")
    if name == "htmx.min.js":
        with open(os.environ["PB_BENCH_HTMX"], "rb") as file:
            return _bytes(start_response, file.read(), "text/javascript; charset=utf-8")
    if name == "raw-event" and "piggyback.page" in environ:
        page = RAW_EVENT_PAGE.replace("{tag}", str(live.script_tag(environ)))
        return _html(start_response, page.encode())
    if name == "pb" and "piggyback.page" in environ:
        return _html(start_response, _piggyback_page(environ).encode())
    return _html(start_response, b"not found", "404 Not Found")


def _piggyback_page(environ: WSGIEnvironment) -> str:
    """The piggyback page, its tag placed here so it can carry ``data-transport``.

    ``?transport=NAME`` puts ``data-transport="NAME"`` on the tag; ``?form=1`` puts the
    counter in a form, so that each click is a submit.
    """
    query = parse_qs(environ.get("QUERY_STRING", ""))
    tag = str(live.script_tag(environ))
    if "transport" in query:
        tag = tag.replace(
            "<script ", f'<script data-transport="{escape(query["transport"][0])}" ', 1
        )
    counter = PIGGYBACK_FORM if "form" in query else PIGGYBACK_COUNTER
    return PIGGYBACK_PAGE.format(counter=counter, tag=tag)


def bump(page: Page, event: Event) -> None:
    """The trivial handler of the load runs: one command."""
    page.set_text("count", "1")


def tick(page: Page, event: Event) -> None:
    """The browser's handler: one command, a new value every click."""
    page.set_text("count", str(event.seq))


def _register(live: Piggyback) -> Piggyback:
    live.handler(bump)
    live.handler(tick)
    return live


def sample_answer() -> tuple[bytes, Headers]:
    """The body and headers of a real one-command answer (``bump``, first event)."""
    sampler = _register(Piggyback(site, secret_key=SECRET_KEY, store=MemoryStore()))
    token = sampler.signer.sign(secrets.token_urlsafe(16))
    query = urlencode({"p": token, "s": 1, "a": 0, "h": "bump", "e": "click", "t": "go"})
    response = HTTPClient(sampler).get(f"/_pb/event?{query}")
    if response.status_code != 200:
        raise RuntimeError(f"The sample event failed: {response.status} {response.get_data()!r}")
    headers = [(name, value) for name, value in response.headers.items()]
    return response.get_data(), headers


ANSWER_BODY, ANSWER_HEADERS = sample_answer()

live = app = _register(Piggyback(site, secret_key=SECRET_KEY))

flask_app = Flask(__name__)


@flask_app.get("/_pb/event")
def flask_event() -> Response:
    return Response(ANSWER_BODY, headers=ANSWER_HEADERS)


def store_floor(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """What any event through the default SQLite store costs at the least.

    An event takes the page's lease with its record and saves the next record, a poll
    reads the record and mail; then the answer document, with the endpoint's headers.
    Nothing is checked and no handler runs: this is not piggyback, it is its floor.
    """
    if environ.get("PATH_INFO") != "/_pb/event":
        return site(environ, start_response)
    token, page_id, seq, is_event = _floor_query(environ)
    batches: list[Batch] = []
    if is_event:
        batches = [Batch(seq, [["text", "count", "1"]])]
        begun = live.store.begin(page_id, 60.0)
        if begun is None:
            raise RuntimeError(f"page {page_id} was busy: the load sent two events at once")
        changes = Changes(record=PageRecord(seq=seq, batches=batches))
        live.store.save(page_id, begun[0], changes)
    else:
        live.store.load(page_id)
    return _floor_answer(start_response, token, seq, batches)


def lease_floor(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """The least an event can cost in any store that keeps a lease: the page's kernel
    lease, taken and given back as the SQLite store takes it, around the answer
    document. Nothing is read or written: not a store, a bound on every store."""
    if environ.get("PATH_INFO") != "/_pb/event":
        return site(environ, start_response)
    token, page_id, seq, is_event = _floor_query(environ)
    batches = [Batch(seq, [["text", "count", "1"]])] if is_event else []
    leases = _take_lease(page_id)
    try:
        return _floor_answer(start_response, token, seq, batches)
    finally:
        leases.release(page_id, "floor")


def redis_floor(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """The least an event can cost in any store on a Redis server that keeps a lease:
    one round trip before the answer (the lease, taken with the page's state) and one
    after it (the save), each a ``PING`` on a redis-py connection of the thread's own.
    Nothing is read or written: not a store, a bound on every Redis store."""
    if environ.get("PATH_INFO") != "/_pb/event":
        return site(environ, start_response)
    token, _, seq, is_event = _floor_query(environ)
    batches = [Batch(seq, [["text", "count", "1"]])] if is_event else []
    _ping()
    try:
        return _floor_answer(start_response, token, seq, batches)
    finally:
        _ping()


_redis_connections = threading.local()


def _ping() -> None:
    """One round trip to the Redis server, on this thread's connection."""
    connection = getattr(_redis_connections, "connection", None)
    if connection is None:
        import redis

        client = redis.Redis.from_url(os.environ["PIGGYBACK_STORE"])
        connection = _redis_connections.connection = client.connection_pool.get_connection()
    connection.send_packed_command([b"*1\r\n$4\r\nPING\r\n"])
    connection.read_response()


def _take_lease(page_id: str) -> LeaseFile:
    """Take the page's lease as the SQLite store does; give it back with ``release``."""
    leases = lease_file(_lease_path())
    now = time.time()
    if leases.take(page_id, "floor", now, now + 60.0) is None:
        raise RuntimeError(f"page {page_id} was busy: the load sent two events at once")
    return leases


def _floor_query(environ: WSGIEnvironment) -> tuple[str, str, int, bool]:
    """The token, page id and sequence number of an event or poll, read without checks,
    and whether it is an event."""
    query = dict(part.split("=", 1) for part in environ["QUERY_STRING"].split("&"))
    return query["p"], query["p"].split(".", 1)[0], int(query["s"]), "h" in query


def _floor_answer(
    start_response: StartResponse, token: str, seq: int, batches: list[Batch]
) -> list[bytes]:
    """The answer document with the endpoint's headers."""
    body, script_source = answer_document(Reply(seq, batches, token=token).for_client())
    headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *_HEADERS,
        ("Content-Security-Policy", _CSP % script_source),
    ]
    start_response("200 OK", headers)
    return [body]


@functools.cache
def _lease_path() -> str:
    """The default store's lock file, in the directory its database makes."""
    store = t.cast(SQLiteStore, live.store)
    store.load("")  # makes the directory
    return store._lease_path
