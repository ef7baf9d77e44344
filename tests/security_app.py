"""The app tests/test_security.py attacks, and the attacker's own little site.

``app`` serves, on one origin:

- ``/strict``: a page under a strict nonce-based Content-Security-Policy (a fresh nonce
  per response, on the page's own inline scripts only; piggyback finds it in the header);
- ``/plain``: the same page without any policy, so a payload that escaped its escaping
  would really run;
- ``/landed``: where the ``go`` handler redirects to;
- ``/cached``: the plain page, marked ``Cache-Control: public, max-age=3600``.

``?transport=iframe`` renders a page whose client is forced onto the hidden iframe;
``?expire=<key>`` renders the first page of that key with an expired token (a page left
open for longer than ``page_ttl``). Every event request is recorded in ``EVENTS`` and
every handler run in ``CALLS``: the server runs in the test's process.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import typing as t
from urllib.parse import parse_qs

from markupsafe import Markup

from piggyback import Event
from piggyback import literal
from piggyback import Page
from piggyback import Piggyback
from piggyback.stores import MemoryStore
from piggyback.testing import read_reply

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment

#: The policies ``/strict?policy=<name>`` is served with; ``{nonce}`` is per response.
POLICIES = {
    "nonce": "script-src 'nonce-{nonce}'; object-src 'none'; base-uri 'none'",
    "strict-dynamic": (
        "default-src 'self'; script-src 'strict-dynamic' 'nonce-{nonce}'; object-src 'none';"
        " base-uri 'none'; form-action 'self'"
    ),
}

# Listens from the very start: CSP violations, and piggyback's lifecycle events (an
# expiry is also kept in sessionStorage, which outlives the reload it causes).
HEAD = """<!doctype html>
<html><head><meta charset="utf-8"><title>security</title>
<script NONCE>
window.violations = [];
window.seen = [];
document.addEventListener("securitypolicyviolation", function (e) {
  violations.push(e.violatedDirective + " " + e.blockedURI + " " + e.sample);
});
["send", "done", "error", "expired"].forEach(function (type) {
  document.addEventListener("piggyback:" + type, function (e) {
    var record = {type: type, reason: e.detail.reason || null, code: e.detail.code || null,
      cancelable: e.cancelable};
    seen.push(record);
    if (type === "expired") {
      sessionStorage.setItem("expired", JSON.stringify(record));
    }
  });
});
window.recordCall = function () { window.called = Array.prototype.slice.call(arguments); };
window.setFromCall = function (value) {
  document.getElementById("as-call").textContent = value;
};
</script></head>
"""

BODY = """<body>
<p><button id="inc" data-pb-click="increment">+1</button> <span id="count">0</span></p>

<button id="helpers" data-pb-click="helpers">every helper</button>
<button id="go" data-pb-click="go">go</button>
<p id="text">-</p>
<div id="html"></div>
<div id="replace-box"><p id="replaced">old</p></div>
<ul id="list"><li id="one">one</li></ul>
<p id="gone">gone</p>
<a id="attr" href="#">attr</a>
<p id="classy" class="off">classy</p>
<input id="input" value="">

<textarea id="source" data-pb-change="xss"></textarea>
<div id="as-text"></div>
<div id="as-html"></div>
<div id="replace-target"><span id="as-replace"></span></div>
<div id="as-append"></div>
<a id="as-title" href="#">title</a>
<a id="as-href" href="#">href</a>
<img id="as-src" alt="">
<textarea id="as-value"></textarea>
<div id="as-call"></div>
<div id="as-literal"></div>
<div id="as-echo"></div>

<button id="bad-attr" data-pb-click="bad_attr">bad attribute</button>
<p id="marker">untouched</p>
<a id="link" href="/plain">link</a>
<svg width="160" height="30"><a id="svg-link"><animate id="svg-animate" attributeName="href"
  values="#" dur="1s" repeatCount="indefinite"/><text x="4" y="20">svg link</text></a></svg>
</body></html>
"""

#: Every handler run: (handler, page id, target, sequence number).
CALLS: list[tuple[str, str, str | None, int]] = []
#: Every event request: its page id, t= parameter, method, status, reply and headers.
EVENTS: list[dict[str, t.Any]] = []
#: How often each ?expire= key was rendered.
RENDERS: dict[str, int] = {}
_lock = threading.Lock()


def site(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    path = environ.get("PATH_INFO", "")
    if path not in ("/strict", "/plain", "/landed", "/cached"):
        start_response("204 No Content", [])  # /favicon.ico, /pixel: nothing, quietly
        return []
    headers = [("Content-Type", "text/html; charset=utf-8")]
    if path == "/cached":  # the same for everyone, says the app: any cache may keep it
        headers.append(("Cache-Control", "public, max-age=3600"))
    else:
        headers.append(("Set-Cookie", "sid=the-victims-session; Path=/; SameSite=Lax; HttpOnly"))
    nonce_attribute = ""
    if path in ("/strict", "/landed"):
        nonce = secrets.token_urlsafe(18)
        query = parse_qs(environ.get("QUERY_STRING", ""))
        policy = POLICIES[query.get("policy", ["nonce"])[0]]
        headers.append(("Content-Security-Policy", policy.format(nonce=nonce)))
        nonce_attribute = f' nonce="{nonce}"'
    body = (HEAD.replace(" NONCE", nonce_attribute) + BODY).encode()
    if path == "/landed":
        body = body.replace(b"<body>", b'<body><h1 id="landed">landed</h1>')
    headers.append(("Content-Length", str(len(body))))
    start_response("200 OK", headers)
    return [body]


live = Piggyback(site, store=MemoryStore())
#: The same handlers and pages, with every client forced onto the hidden iframe.
iframe_live = Piggyback(site, store=live.store, registry=live.registry, transport="iframe")


def _record(page: Page, event: Event) -> None:
    CALLS.append((t.cast(str, event.handler), page.id, event.target, event.seq))


@live.handler
def increment(page: Page, event: Event) -> None:
    _record(page, event)
    page.state["n"] = page.state.get("n", 0) + 1
    page.set_text("count", page.state["n"])


@live.handler
def helpers(page: Page, event: Event) -> None:
    """Every helper once, then raw JavaScript that reads what they did."""
    _record(page, event)
    page.set_text("text", "set by set_text")
    page.set_html("html", Markup('<b id="bold">bold</b> ') + "<i>escaped</i>")
    page.replace("replaced", Markup('<p id="replacement">new</p>'))
    page.append("list", Markup('<li id="two">two</li>'))
    page.remove("gone")
    page.set_attr("attr", "title", "set by set_attr")
    page.set_attr("attr", "href", "/plain?from=set_attr")
    page.add_class("classy", "on")
    page.remove_class("classy", "off")
    page.set_value("input", "set by set_value")
    page.focus("input")
    page.call("recordCall", 1, "two", {"three": [3]}, None)
    page.send_js(
        "window.fromJs = [document.getElementById('text').textContent,"
        f" document.activeElement.id, {literal('</script>')}];"
    )


@live.handler
def go(page: Page, event: Event) -> None:
    _record(page, event)
    page.redirect("/landed?policy=" + event.args.get("policy", "nonce"))


@live.handler
def xss(page: Page, event: Event) -> None:
    """The payload through every helper that carries data, and the value echoed."""
    _record(page, event)
    payload = event.args["payload"]
    page.set_text("as-text", payload)
    page.set_html("as-html", payload)
    page.replace("as-replace", payload)
    page.append("as-append", payload)
    page.set_attr("as-title", "title", payload)
    page.set_attr("as-href", "href", "http://example.invalid/?q=" + payload)
    page.set_attr("as-src", "src", "/pixel?q=" + payload)
    page.set_value("as-value", payload)
    page.call("setFromCall", payload)
    page.send_js(f"document.getElementById('as-literal').textContent = {literal(payload)};")
    page.set_text("as-echo", event.value)


@live.handler
def bad_attr(page: Page, event: Event) -> None:
    """Queues a harmless command, then an attribute that must be refused."""
    _record(page, event)
    page.set_text("marker", "touched")
    page.set_attr(event.args.get("id", "link"), event.args["name"], event.args["value"])


_TOKEN = re.compile(rb'data-token="([A-Za-z0-9_-]{22})\.[^"]*"')


class Site:
    """Routes pages to the default or the iframe-only middleware; records events."""

    def __init__(self, default: WSGIApplication, iframe: WSGIApplication) -> None:
        self.default = default
        self.iframe = iframe

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        app = self.iframe if query.get("transport") == ["iframe"] else self.default
        caught: list[t.Any] = []

        def catch(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
            caught[:] = [status, headers]
            return lambda data: None  # nothing here writes

        iterable = app(environ, catch)
        try:
            body = b"".join(iterable)
        finally:
            if hasattr(iterable, "close"):
                iterable.close()
        status, headers = caught
        if environ.get("PATH_INFO") == "/_pb/event":
            self._record(environ, query, int(status[:3]), body)
        elif "expire" in query:
            body = self._expire(query["expire"][0], body, live.browser_of(environ))
            headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    def _record(
        self, environ: WSGIEnvironment, query: dict[str, list[str]], status: int, body: bytes
    ) -> None:
        EVENTS.append(
            {
                "page": query.get("p", [""])[0].split(".")[0],
                "t": query.get("t", [None])[0],
                "method": environ["REQUEST_METHOD"],
                "status": status,
                "reply": read_reply(body.decode()),
                "site": environ.get("HTTP_SEC_FETCH_SITE"),
                "dest": environ.get("HTTP_SEC_FETCH_DEST"),
                "origin": environ.get("HTTP_ORIGIN"),
                "cookie": "the-victims-session" in environ.get("HTTP_COOKIE", ""),
                "browser": "pb_browser=" in environ.get("HTTP_COOKIE", ""),
            }
        )

    def _expire(self, key: str, body: bytes, browser: str) -> bytes:
        """The page as if rendered long ago: its token expired. Only a key's first one."""
        with _lock:
            RENDERS[key] = RENDERS.get(key, 0) + 1
            if RENDERS[key] > 1:
                return body
        match = _TOKEN.search(body)
        if match is None:
            raise RuntimeError("The page has no piggyback tag to expire.")
        page_id = match.group(1).decode()
        issued = time.time() - live.signer.max_age - 60
        expired = live.signer.sign(page_id, now=issued, browser=browser)
        return body[: match.start()] + f'data-token="{expired}"'.encode() + body[match.end() :]


app = Site(live, iframe_live)

#: The attacker's pages, by path; the tests write them.
ATTACKS: dict[str, str] = {}


def attacker(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """The attacker's site: whatever page a test put in ``ATTACKS``, without a policy."""
    page = ATTACKS.get(environ.get("PATH_INFO", ""))
    if page is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such attack"]
    body = page.encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]
