"""piggyback.js in headless Chromium, against a fake server that speaks docs/protocol.md.

The fake server is a small werkzeug app in this file. Each test gets its own page
(``FakePage``): its HTML at ``/page/<name>`` (under a strict nonce-based CSP) and its
event endpoint at ``/event/<name>``, which records every request (its query, and what
carried it: method, ``Sec-Fetch-Dest``, body fields and files) and answers with
documents in the protocol's exact grammar. By default it behaves like the real server
(it keeps the batch it answered for each seq and sends every batch above the request's
``a``); a test replaces ``answer``, ``commands`` or ``extra`` to script it.

Tests that take the ``transport`` fixture run twice: on the default transport (fetch,
in Chromium) and with ``data-transport="iframe"``; they check which one carried them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import threading
import time
import typing as t
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import parse_qsl
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CLIENT_JS = Path(__file__).resolve().parent.parent / "piggyback" / "js" / "piggyback.js"
NONCE = "abc"
DID_NOT_REPORT = "the response did not report back"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's Chromium")

Params = dict[str, str]
Answer = tuple[int, t.Any]


@dataclass
class Carried:
    """How one event request travelled."""

    method: str
    #: ``Sec-Fetch-Dest``: ``"empty"`` for fetch, ``"iframe"`` for the hidden iframe.
    dest: str | None
    #: The media type of the body, without its parameters.
    body_type: str = ""
    form: dict[str, list[str]] = field(default_factory=dict)
    #: Each file field: (file name, content).
    files: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)


# The test page. Its own script records piggyback's events (``window.seen``) and CSP
# violations (``window.violations``) before the client loads.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>piggyback test</title>
<script nonce="abc">
window.seen = [];
window.violations = [];
window.calls = [];
window.recorder = {record: function () {
  window.calls.push({args: [].slice.call(arguments), self: this === window.recorder});
}};
["send", "done", "error", "expired"].forEach(function (type) {
  document.addEventListener("piggyback:" + type, function (event) {
    var detail = event.detail || {};
    window.seen.push({type: type, reason: detail.reason, code: detail.code, seq: detail.seq,
      handler: detail.handler, command: detail.command,
      element: detail.element ? detail.element.id : null, bubbles: event.bubbles,
      cancelable: event.cancelable});
    if (type === "expired" && window.preventExpiry) {
      event.preventDefault();
    }
  });
});
document.addEventListener("securitypolicyviolation", function (event) {
  window.violations.push(event.violatedDirective);
});
</script></head>
<body>
BODY
<script src="/piggyback.js" data-token="TOKEN" data-endpoint="/event/NAME" nonce="abc"ATTRS>
</script>
</body></html>
"""

GO = '<button id="go" data-pb-click="go">go</button>'
NOT_PROTOCOL = "<!doctype html><title>502 Bad Gateway</title><h1>Bad Gateway</h1>"


def answer_document(reply: dict[str, t.Any]) -> str:
    """The protocol's answer document: one script handing REPLY to the client."""
    payload = json.dumps(reply)  # ensure_ascii escapes U+2028 and U+2029
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        payload = payload.replace(char, escape)
    return (
        f'<!doctype html><meta charset="utf-8"><script>parent.piggyback.receive({payload})</script>'
    )


def script_hash(document: str) -> str:
    script = document.split("<script>", 1)[1].rsplit("</script>", 1)[0]
    digest = hashlib.sha256(script.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


class FakePage:
    """One test page and the server's side of the protocol for it."""

    def __init__(self, name: str, body: str, attrs: dict[str, str]) -> None:
        self.name = name
        self.token = f"{name}.0"
        self.html = (
            PAGE.replace("BODY", body)
            .replace("TOKEN", self.token)
            .replace("NAME", name)
            .replace("ATTRS", "".join(f' data-{key}="{value}"' for key, value in attrs.items()))
        )
        self.requests: list[Params] = []
        self.queries: list[str] = []
        self.carried: list[Carried] = []
        self.loads = 0
        self.active = 0
        self.max_active = 0
        self.batches: dict[int, dict[str, t.Any]] = {}
        self.issued = 0
        self.lock = threading.Lock()
        self.release = threading.Event()  # set to let held or hanging answers go
        self.commands: t.Callable[[Params], list[t.Any]] = lambda params: []
        self.extra: t.Callable[[Params], dict[str, t.Any]] = lambda params: {}
        self.answer: t.Callable[[Params], Answer] = self.protocol_answer

    def protocol_answer(self, params: Params) -> Answer:
        """Answer like the real server: keep each seq's batch, send all above ``a``."""
        seq, ack = int(params["s"]), int(params.get("a", "0"))
        with self.lock:
            if seq not in self.batches:
                self.batches[seq] = {"seq": seq, "commands": self.commands(params)}
            batches = [self.batches[key] for key in sorted(self.batches) if key > ack]
            self.issued += 1
            token = f"{self.name}.{self.issued}"
        return 200, {"seq": seq, "token": token, "batches": batches, **self.extra(params)}

    @staticmethod
    def carry(request: Request) -> Carried:
        files = request.files
        return Carried(
            method=request.method,
            dest=request.headers.get("Sec-Fetch-Dest"),
            body_type=request.mimetype,
            form={key: request.form.getlist(key) for key in request.form},
            files={
                key: [(f.filename or "", f.read()) for f in files.getlist(key)] for key in files
            },
        )

    def event(self, request: Request) -> Response:
        params = dict(parse_qsl(request.query_string.decode(), keep_blank_values=True))
        with request:  # closes the files it parsed
            carried = self.carry(request)
        with self.lock:
            self.requests.append(params)
            self.queries.append(request.query_string.decode())
            self.carried.append(carried)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            status, reply = self.answer(params)
        finally:
            with self.lock:
                self.active -= 1
        if not isinstance(reply, dict):
            return Response(reply, status, content_type="text/html; charset=utf-8")
        document = answer_document(reply)
        headers = {
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "SAMEORIGIN",
            "Content-Security-Policy": (
                f"default-src 'none'; script-src {script_hash(document)}; frame-ancestors 'self'"
            ),
        }
        return Response(document, status, headers, content_type="text/html; charset=utf-8")


class FakeServer:
    """The werkzeug app serving the client, the test pages and their endpoints."""

    def __init__(self) -> None:
        self.pages: dict[str, FakePage] = {}
        self.names = itertools.count(1)
        self.base = ""

    def add(self, body: str, **attrs: str) -> FakePage:
        page = FakePage(f"page{next(self.names)}", body, attrs)
        self.pages[page.name] = page
        return page

    def url(self, page: FakePage) -> str:
        return f"{self.base}/page/{page.name}"

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        return self.respond(Request(environ))(environ, start_response)

    def respond(self, request: Request) -> Response:
        kind, _, name = request.path.strip("/").partition("/")
        if request.path == "/piggyback.js":
            return Response(CLIENT_JS.read_bytes(), content_type="text/javascript")
        if request.path == "/landing":
            return Response(
                "<!doctype html><title>landing</title><p id='landed'>landed</p>",
                content_type="text/html",
            )
        page = self.pages.get(name)
        if page is None:
            return Response("not found", 404)
        if kind == "event":
            return page.event(request)
        page.loads += 1
        csp = f"script-src 'nonce-{NONCE}'; object-src 'none'; base-uri 'none'"
        return Response(
            page.html,
            content_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"},
        )


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: t.Any, **kwargs: t.Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> t.Iterator[FakeServer]:
    fake = FakeServer()
    httpd = make_server("127.0.0.1", 0, fake, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    fake.base = f"http://127.0.0.1:{httpd.server_port}"
    yield fake
    for page in fake.pages.values():
        page.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _playwright_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture(scope="module")
def chromium(request: pytest.FixtureRequest) -> t.Iterator[t.Any]:
    """One headless Chromium for this module.

    Playwright's sync API allows one instance per thread: when the suite has already
    started one (a session-wide ``browser`` fixture), its browser is shared.
    """
    if _playwright_running():
        yield request.getfixturevalue("browser")
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def tab(chromium: t.Any) -> t.Iterator[t.Any]:
    """A fresh page that records console errors and dialogs (there must be none)."""
    context = chromium.new_context()
    page = context.new_page()
    page.console_errors = []
    page.dialogs = []

    def on_console(message: t.Any) -> None:
        if message.type == "error":
            page.console_errors.append(message.text)

    def on_dialog(dialog: t.Any) -> None:
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("console", on_console)
    page.on("dialog", on_dialog)
    yield page
    context.close()


def open_page(
    tab: t.Any,
    server: FakeServer,
    body: str,
    configure: t.Callable[[FakePage], None] | None = None,
    **attrs: str,
) -> FakePage:
    """Open a new test page; ``configure`` scripts its server before it loads."""
    page = server.add(body, **attrs)
    if configure is not None:
        configure(page)
    tab.goto(server.url(page))
    tab.wait_for_function("() => window.piggyback !== undefined")
    return page


def wait_until(condition: t.Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not become true in time")
        time.sleep(0.01)


def wait_until_quiet(page: FakePage, quiet: float = 0.5) -> int:
    """Wait until ``page`` got no request for ``quiet`` seconds; its request count."""
    count = -1
    while count != len(page.requests):
        count = len(page.requests)
        time.sleep(quiet)
    return count


def seen(tab: t.Any, kind: str | None = None) -> list[dict[str, t.Any]]:
    events: list[dict[str, t.Any]] = tab.evaluate("window.seen")
    return [event for event in events if kind is None or event["type"] == kind]


def wait_seen(tab: t.Any, kind: str, count: int, timeout: float = 5000) -> None:
    tab.wait_for_function(
        "([kind, count]) => window.seen.filter(e => e.type === kind).length >= count",
        arg=[kind, count],
        timeout=timeout,
    )


@dataclass
class Transport:
    """A transport under test: the tag's attributes that choose it, what it looks like."""

    name: str
    attrs: dict[str, str]
    #: The ``Sec-Fetch-Dest`` of its requests.
    dest: str

    def check(self, page: FakePage) -> None:
        """Every request of ``page`` went by this transport."""
        assert page.carried, "no request reached the server"
        assert {carried.dest for carried in page.carried} == {self.dest}


@pytest.fixture(
    params=[
        pytest.param(Transport("fetch", {}, "empty"), id="fetch"),
        pytest.param(Transport("iframe", {"transport": "iframe"}, "iframe"), id="iframe"),
    ]
)
def transport(request: pytest.FixtureRequest) -> Transport:
    """The default transport (fetch, in Chromium), then the forced hidden iframe."""
    return t.cast(Transport, request.param)


def without_token(params: Params) -> Params:
    return {key: value for key, value in params.items() if key != "p"}


def rejection(code: str, status: int = 400) -> t.Callable[[Params], Answer]:
    def answer(params: Params) -> Answer:
        return status, {"seq": int(params["s"]), "code": code, "error": f"Rejected: {code}."}

    return answer


# The event request


def test_click_sends_the_event_and_the_token_of_each_answer(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(
        tab,
        server,
        """
      <button id="go" data-pb-click="increment" data-pb-args='{"n": 3, "s": "x y"}'>
        Go <b id="inner">!</b></button>
      <input id="name" data-pb-change="rename" value="">
    """,
        **transport.attrs,
    )
    tab.click("#inner")  # a child of the element: found by walking up
    wait_seen(tab, "done", 1)
    tab.fill("#name", "Zoë & <b>")
    tab.locator("#name").dispatch_event("change")
    wait_seen(tab, "done", 2)

    assert page.requests == [
        {
            "p": page.token,
            "s": "1",
            "a": "0",
            "h": "increment",
            "e": "click",
            "t": "go",
            "g": '{"n":3,"s":"x y"}',
        },
        {
            "p": f"{page.name}.1",
            "s": "2",
            "a": "1",
            "h": "rename",
            "e": "change",
            "t": "name",
            "v": "Zoë & <b>",
            "g": "{}",
        },
    ]
    for query in page.queries:  # each parameter at most once
        names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
        assert len(names) == len(set(names))
    assert [(e["type"], e["seq"], e["handler"], e["element"]) for e in seen(tab)] == [
        ("send", 1, "increment", "go"),
        ("done", 1, None, "go"),
        ("send", 2, "rename", "name"),
        ("done", 2, None, "name"),
    ]
    # Only piggyback:send (and piggyback:expired) can be canceled.
    assert [(e["bubbles"], e["cancelable"]) for e in seen(tab)] == [(True, True), (True, False)] * 2
    transport.check(page)
    assert {carried.method for carried in page.carried} == {"GET"}


def test_checkbox_value_only_when_checked_and_link_click_does_not_navigate(
    tab: t.Any, server: FakeServer
) -> None:
    page = open_page(
        tab,
        server,
        """
      <input type="checkbox" id="box" value="yes" data-pb-change="tick">
      <select id="pick" data-pb-change="pick"><option>a</option><option>b</option></select>
      <a id="link" href="/landing" data-pb-click="follow">link</a>
    """,
    )
    tab.check("#box")
    wait_seen(tab, "done", 1)
    tab.uncheck("#box")
    wait_seen(tab, "done", 2)
    tab.select_option("#pick", "b")
    wait_seen(tab, "done", 3)
    tab.click("#link")
    wait_seen(tab, "done", 4)

    assert [(r["h"], r.get("v")) for r in page.requests] == [
        ("tick", "yes"),
        ("tick", None),
        ("pick", "b"),
        ("follow", None),
    ]
    assert tab.url == server.url(page)
    assert page.loads == 1


def test_keydown_adds_the_key_to_the_args(tab: t.Any, server: FakeServer) -> None:
    page = open_page(
        tab,
        server,
        """
      <input id="field" value="hi" data-pb-keydown="key" data-pb-args='{"x": 1}'>
    """,
    )
    tab.focus("#field")
    tab.keyboard.press("Enter")
    wait_seen(tab, "done", 1)

    assert [without_token(r) for r in page.requests] == [
        {
            "s": "1",
            "a": "0",
            "h": "key",
            "e": "keydown",
            "t": "field",
            "v": "hi",
            "g": '{"x":1,"key":"Enter"}',
        },
    ]


def test_invalid_args_are_an_error_and_send_nothing(tab: t.Any, server: FakeServer) -> None:
    page = open_page(
        tab,
        server,
        """
      <button id="bad" data-pb-click="bad" data-pb-args='{"oops'>bad</button>
      <button id="list" data-pb-click="list" data-pb-args='3'>list</button>
      <button id="good" data-pb-click="good">good</button>
    """,
    )
    tab.click("#bad")
    tab.click("#list")
    tab.click("#good")
    wait_seen(tab, "done", 1)

    errors = [(e["reason"], e["element"]) for e in seen(tab, "error")]
    assert errors == [
        ("data-pb-args is not a JSON object", "bad"),
        ("data-pb-args is not a JSON object", "list"),
    ]
    assert [(r["h"], r["s"]) for r in page.requests] == [("good", "1")]


def test_send_from_script(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, '<input id="name" value="Ada">')
    tab.evaluate("""() => {
      piggyback.send("hello", {x: [1, "two"]}, document.getElementById("name"));
      piggyback.send("bare");
    }""")
    wait_seen(tab, "done", 2)

    assert [without_token(r) for r in page.requests] == [
        {"s": "1", "a": "0", "h": "hello", "t": "name", "v": "Ada", "g": '{"x":[1,"two"]}'},
        {"s": "2", "a": "1", "h": "bare"},
    ]


def test_the_deploy_goes_with_each_event_that_names_a_handler(
    tab: t.Any, server: FakeServer
) -> None:
    page = open_page(tab, server, GO, deploy="3f2a 9", poll="60")
    tab.click("#go")
    wait_seen(tab, "done", 1)
    tab.evaluate("document.dispatchEvent(new Event('visibilitychange'))")  # a poll
    wait_seen(tab, "done", 2)
    tab.evaluate("piggyback.send('bare')")
    wait_seen(tab, "done", 3)

    assert [(r.get("h"), r.get("d")) for r in page.requests] == [
        ("go", "3f2a 9"),
        (None, None),
        ("bare", "3f2a 9"),
    ]


def test_elements_inserted_later_are_live(tab: t.Any, server: FakeServer) -> None:
    page = open_page(
        tab,
        server,
        """
      <button id="add" data-pb-click="add">add</button><div id="box"></div>
    """,
    )
    page.commands = lambda params: (
        [
            [
                "append",
                "box",
                """<p><button id="later" data-pb-click="later"
         data-pb-args='{"k": 1}'>later</button></p>""",
            ],
        ]
        if params["h"] == "add"
        else []
    )
    tab.click("#add")
    wait_seen(tab, "done", 1)
    tab.click("#later")
    wait_seen(tab, "done", 2)

    assert [(r["h"], r["t"], r["g"]) for r in page.requests] == [
        ("add", "add", "{}"),
        ("later", "later", '{"k":1}'),
    ]


def test_the_client_loaded_twice_stays_one_client(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, GO)
    tab.evaluate("""() => new Promise(resolve => {
      window.first = window.piggyback;
      const script = document.createElement("script");
      script.src = "/piggyback.js";
      script.nonce = "abc";
      script.dataset.token = "other";
      script.dataset.endpoint = document.querySelector("script[data-endpoint]").dataset.endpoint;
      script.onload = resolve;
      document.body.appendChild(script);
    })""")
    tab.click("#go")
    wait_seen(tab, "done", 1)
    time.sleep(0.2)

    assert tab.evaluate("window.first === window.piggyback")
    assert [r["h"] for r in page.requests] == ["go"]


# Forms


FORM = """
  <form id="form" action="/landing" data-pb-submit="save" data-pb-args='{"k": 1}'>
    <input name="title" value="Zoë &amp; <b>">
    <textarea name="notes">one
two</textarea>
    <select name="pick" multiple><option selected>x</option><option>y</option>
      <option selected>z</option></select>
    <input type="checkbox" name="done" value="yes" checked>
    <input type="checkbox" name="skip" value="no">
    <input name="submit" value="shadows form.submit">
    <input type="file" id="upload" name="upload" multiple>
    <button id="save">Save</button>
  </form>
"""

FORM_ATTRIBUTES = """() => ["action", "method", "enctype", "target"].map(
  name => document.getElementById("form").getAttribute(name))"""


def test_a_submit_sends_the_form_and_its_files_and_does_not_navigate(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(tab, server, FORM, **transport.attrs)
    tab.set_input_files(
        "#upload",
        [
            {"name": "a.txt", "mimeType": "text/plain", "buffer": b"hello <b>\n"},
            {"name": "b.bin", "mimeType": "application/octet-stream", "buffer": bytes(range(256))},
        ],
    )
    tab.click("#save")
    wait_seen(tab, "done", 1)

    assert [without_token(r) for r in page.requests] == [
        {"s": "1", "a": "0", "h": "save", "e": "submit", "t": "form", "g": '{"k":1}'},
    ]
    [carried] = page.carried
    assert (carried.method, carried.body_type) == ("POST", "multipart/form-data")
    assert carried.form == {
        "title": ["Zoë & <b>"],
        "notes": ["one\r\ntwo"],  # a form's line breaks are sent as CRLF
        "pick": ["x", "z"],
        "done": ["yes"],
        "submit": ["shadows form.submit"],
    }
    assert carried.files == {
        "upload": [("a.txt", b"hello <b>\n"), ("b.bin", bytes(range(256)))],
    }
    assert tab.url == server.url(page)
    assert page.loads == 1
    assert tab.evaluate(FORM_ATTRIBUTES) == ["/landing", None, None, None]
    transport.check(page)


def test_twenty_submits_add_no_history_entries(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(tab, server, FORM + '<p id="out"></p>', **transport.attrs)
    page.commands = lambda params: [["text", "out", params["s"]]]
    before = tab.evaluate("history.length")
    for count in range(1, 21):
        tab.fill("[name=title]", f"title {count}")
        tab.click("#save")
        wait_seen(tab, "done", count)

    assert tab.text_content("#out") == "20"
    assert tab.evaluate("history.length") == before
    assert [carried.form["title"] for carried in page.carried] == [
        [f"title {count}"] for count in range(1, 21)
    ]
    # Each submit posts into a frame never navigated before, which replaces the one
    # before; once its answer has loaded, a spare is made for the next submit. The frame
    # in use and that spare are all there is.
    frames = 2 if transport.name == "iframe" else 0
    tab.wait_for_function(
        "count => document.querySelectorAll('iframe').length === count", arg=frames
    )
    assert tab.url == server.url(page)
    assert tab.evaluate(FORM_ATTRIBUTES) == ["/landing", None, None, None]
    transport.check(page)


# An observer of the page's iframes: ``window.frameLog`` gets one entry per iframe added
# (the number of submits dispatched so far, and whether one was being dispatched then),
# ``window.mostFrames`` the most iframes in the document at any time.
WATCH_FRAMES = """() => {
  window.frameLog = [];
  window.mostFrames = 0;
  let submits = 0;
  let submitting = false;
  window.addEventListener("submit", () => {
    submits += 1;
    submitting = true;
    setTimeout(() => { submitting = false; });
  }, true);
  new MutationObserver(records => {
    records.forEach(record => record.addedNodes.forEach(node => {
      if (node.nodeName === "IFRAME") window.frameLog.push([submits, submitting]);
    }));
    const count = document.querySelectorAll("iframe").length;
    window.mostFrames = Math.max(window.mostFrames, count);
  }).observe(document.documentElement, {childList: true, subtree: true});
}"""

#: Whether the frame that carried event ``seq`` was in the document before the click.
CARRIED_BY_AN_OLD_FRAME = """seq => window.framesBefore.includes([...document.querySelectorAll(
  "iframe")].find(frame => new URL(frame.contentDocument.URL).searchParams.get("s") === seq))"""


def test_iframe_submits_after_the_first_go_into_a_spare_frame_made_before_the_click(
    tab: t.Any, server: FakeServer
) -> None:
    """Making an iframe at the click costs about 7 ms in Chromium: a page that posts
    on the iframe transport gets a spare, made once the answer of a post has loaded."""
    page = open_page(tab, server, FORM + GO + '<p id="out"></p>', transport="iframe")
    page.commands = lambda params: [["text", "out", params["s"]]]
    tab.evaluate(WATCH_FRAMES)
    before = tab.evaluate("history.length")
    for count in range(1, 11):
        tab.evaluate("window.framesBefore = [...document.querySelectorAll('iframe')]")
        tab.fill("[name=title]", f"title {count}")
        tab.click("#save")
        wait_seen(tab, "done", count)
        assert tab.evaluate(CARRIED_BY_AN_OLD_FRAME, str(count)) == (count > 1)
        # The answer has loaded: the spare for the next submit is there.
        tab.wait_for_function("document.querySelectorAll('iframe').length === 2")

    # GETs then navigate the frame in use again; they make no frame.
    for count in range(11, 14):
        tab.evaluate("window.framesBefore = [...document.querySelectorAll('iframe')]")
        tab.click("#go")
        wait_seen(tab, "done", count)
        assert tab.evaluate(CARRIED_BY_AN_OLD_FRAME, str(count))

    assert tab.text_content("#out") == "13"
    assert tab.evaluate("history.length") == before
    # One frame made during a submit (the first one's), one after each answer.
    assert tab.evaluate("window.frameLog") == [[1, True]] + [[n, False] for n in range(1, 11)]
    assert tab.evaluate("window.mostFrames") == 2
    assert [(carried.method, carried.dest) for carried in page.carried] == [
        ("POST", "iframe")
    ] * 10 + [("GET", "iframe")] * 3
    assert [carried.form["title"] for carried in page.carried[:10]] == [
        [f"title {count}"] for count in range(1, 11)
    ]
    assert tab.evaluate(FORM_ATTRIBUTES) == ["/landing", None, None, None]


def test_an_iframe_submit_whose_try_fails_is_retried_in_a_new_frame(
    tab: t.Any, server: FakeServer
) -> None:
    page = open_page(tab, server, FORM + '<p id="out"></p>', transport="iframe")
    page.commands = lambda params: [["text", "out", params["s"]]]
    tab.evaluate(WATCH_FRAMES)
    before = tab.evaluate("history.length")
    tab.click("#save")
    wait_seen(tab, "done", 1)
    tab.wait_for_function("document.querySelectorAll('iframe').length === 2")
    cut: list[str] = []

    def cut_once(route: t.Any) -> None:
        if not cut:
            cut.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    tab.route(f"**/event/{page.name}?*", cut_once)
    tab.click("#save")  # its first try fails: the frame goes, the retry gets another
    wait_seen(tab, "done", 2)
    tab.click("#save")
    wait_seen(tab, "done", 3)

    assert [(r["s"], r["a"]) for r in page.requests] == [("1", "0"), ("2", "1"), ("3", "2")]
    assert len(cut) == 1
    assert tab.text_content("#out") == "3"
    assert tab.evaluate("history.length") == before
    assert tab.evaluate("window.mostFrames") <= 2
    tab.wait_for_function("document.querySelectorAll('iframe').length === 2")


@pytest.mark.parametrize(
    "swap",
    [
        pytest.param("document.body.innerHTML = document.body.innerHTML", id="innerHTML"),
        pytest.param("document.body.replaceWith(document.body.cloneNode(true))", id="new-body"),
    ],
)
def test_iframe_frames_outlive_a_swap_of_the_body(
    tab: t.Any, server: FakeServer, swap: str
) -> None:
    """A turbolinks-style swap of the body keeps the iframe transport working at once:
    its frames (the one in use and the spare) are not inside the body."""
    page = open_page(tab, server, FORM + GO + '<p id="out"></p>', transport="iframe")
    page.commands = lambda params: [["text", "out", params["s"]]]
    before = tab.evaluate("history.length")
    tab.click("#save")
    wait_seen(tab, "done", 1)
    tab.wait_for_function("document.querySelectorAll('iframe').length === 2")

    tab.evaluate(swap)
    tab.click("#go")
    wait_seen(tab, "done", 2)
    tab.click("#save")
    wait_seen(tab, "done", 3)

    assert tab.text_content("#out") == "3"
    assert [seen["type"] for seen in tab.evaluate("window.seen")] == ["send", "done"] * 3
    assert tab.evaluate("history.length") == before
    assert tab.evaluate("document.querySelectorAll('body iframe').length") == 0
    assert [(carried.method, carried.dest) for carried in page.carried] == [
        ("POST", "iframe"),
        ("GET", "iframe"),
        ("POST", "iframe"),
    ]


def test_a_form_given_to_send_sends_its_fields(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, '<form id="form"><input name="q" value="v"></form>')
    tab.evaluate("piggyback.send('search', {}, document.getElementById('form'))")
    wait_seen(tab, "done", 1)

    assert [(r["h"], r["t"]) for r in page.requests] == [("search", "form")]
    assert page.carried[0].form == {"q": ["v"]}


# Long payloads

LONG = "Zoë & <b> 20 kB, line\nbreaks and all. " * 520


def test_a_long_value_goes_in_a_post_body(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(
        tab, server, '<textarea id="text" data-pb-change="save"></textarea>', **transport.attrs
    )
    tab.evaluate(
        """value => {
          const text = document.getElementById("text");
          text.value = value;
          text.dispatchEvent(new Event("change", {bubbles: true}));
        }""",
        LONG,
    )
    wait_seen(tab, "done", 1)

    assert len(LONG.encode()) > 20000
    assert [without_token(r) for r in page.requests] == [
        {"s": "1", "a": "0", "h": "save", "e": "change", "t": "text", "b": "1"},
    ]
    [carried] = page.carried
    assert carried.method == "POST"
    assert carried.form == {"v": [LONG.replace("\n", "\r\n")], "g": ["{}"]}
    assert carried.files == {}
    transport.check(page)


def test_long_args_go_in_a_post_body_and_short_ones_in_the_url(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(tab, server, "<p>send</p>", **transport.attrs)
    tab.evaluate("piggyback.send('short', {text: 'x'.repeat(1500)})")
    wait_seen(tab, "done", 1)
    tab.evaluate("piggyback.send('long', {text: 'x'.repeat(2000)})")
    wait_seen(tab, "done", 2)

    short, long = page.requests
    assert (short["h"], "b" in short) == ("short", False)
    assert short["g"] == '{"text":"%s"}' % ("x" * 1500)
    assert (long["h"], "g" in long, long["b"]) == ("long", False, "1")
    assert [carried.method for carried in page.carried] == ["GET", "POST"]
    assert page.carried[1].form == {"g": ['{"text":"%s"}' % ("x" * 2000)]}
    transport.check(page)


# Commands


def test_commands_apply_in_order(tab: t.Any, server: FakeServer, transport: Transport) -> None:
    page = open_page(
        tab,
        server,
        """
      <button id="go" data-pb-click="go">go</button>
      <p id="text">old</p><div id="html"></div><ul id="list"><li>a</li></ul>
      <a id="link" href="#top">link</a><div id="classes" class="one two"></div>
      <input id="value" value="old"><p id="gone">bye</p><input id="focus">
      <div id="replaced">old</div>
    """,
        **transport.attrs,
    )
    page.commands = lambda params: [
        ["text", "text", "<i>not markup</i>"],
        ["html", "html", "<b>bold</b>"],
        ["append", "list", "<li>b</li>"],
        ["attr", "link", "title", "hello"],
        ["attr", "link", "href", None],
        ["addClass", "classes", "three"],
        ["removeClass", "classes", "one"],
        ["value", "value", "new"],
        ["remove", "gone"],
        ["focus", "focus"],
        ["call", "recorder.record", [1, "two", {"three": 3}]],
        ["replace", "replaced", '<section id="replacement">new</section>'],
    ]
    tab.click("#go")
    wait_seen(tab, "done", 1)

    state = tab.evaluate("""() => {
      const byId = id => document.getElementById(id);
      return {
        text: byId("text").innerHTML, html: byId("html").innerHTML,
        list: byId("list").innerHTML, title: byId("link").getAttribute("title"),
        href: byId("link").hasAttribute("href"), classes: byId("classes").className,
        value: byId("value").value, gone: byId("gone"), focus: document.activeElement.id,
        calls: window.calls, replaced: byId("replaced"),
        replacement: byId("replacement").outerHTML,
      };
    }""")
    assert state == {
        "text": "&lt;i&gt;not markup&lt;/i&gt;",
        "html": "<b>bold</b>",
        "list": "<li>a</li><li>b</li>",
        "title": "hello",
        "href": False,
        "classes": "two three",
        "value": "new",
        "gone": None,
        "focus": "focus",
        "calls": [{"args": [1, "two", {"three": 3}], "self": True}],
        "replaced": None,
        "replacement": '<section id="replacement">new</section>',
    }
    assert seen(tab, "error") == []
    transport.check(page)


def test_redirect_allows_only_http_and_relative_urls(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, GO)
    page.commands = lambda params: (
        [["redirect", " JavaScript:alert('hacked')"], ["redirect", "data:text/html,x"]]
        if params["s"] == "1"
        else [["redirect", "/landing"]]
    )
    tab.click("#go")
    wait_seen(tab, "done", 1)

    assert [(e["reason"], e["command"]) for e in seen(tab, "error")] == [
        (
            "not an http(s) URL:  JavaScript:alert('hacked')",
            ["redirect", " JavaScript:alert('hacked')"],
        ),
        ("not an http(s) URL: data:text/html,x", ["redirect", "data:text/html,x"]),
    ]
    assert tab.dialogs == []
    assert tab.url == server.url(page)

    with tab.expect_navigation():
        tab.click("#go")
    assert tab.url == f"{server.base}/landing"


def test_js_command_runs_in_global_scope_under_strict_csp(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, GO + '<p id="out"></p>')
    # The CSP is in force, and the violation listener sees what it blocks.
    tab.evaluate("""() => {
      const script = document.createElement("script");
      script.text = "window.unsafe = 1";
      document.body.appendChild(script);
    }""")
    tab.wait_for_function("window.violations.length === 1")
    assert tab.evaluate("window.unsafe") is None
    tab.evaluate("window.violations = []")

    page.commands = lambda params: [
        ["js", "var declared = 42; function helper() { return 'ok'; } window.topThis = this;"],
        ["js", "document.getElementById('out').textContent = helper() + declared;"],
    ]
    tab.click("#go")
    wait_seen(tab, "done", 1)
    assert tab.evaluate("[window.declared, window.topThis === window]") == [42, True]
    assert tab.text_content("#out") == "ok42"
    assert tab.evaluate("[...document.scripts].filter(s => s.text.includes('declared'))") == []

    # Violations are reported in order: one more blocked script flushes any earlier.
    tab.evaluate("""() => {
      const script = document.createElement("script");
      script.text = "window.unsafe = 2";
      document.body.appendChild(script);
    }""")
    tab.wait_for_function("window.violations.length >= 1")
    time.sleep(0.05)
    assert tab.evaluate("window.violations") == ["script-src-elem"]
    assert seen(tab, "error") == []


def test_throwing_commands_are_reported_and_the_rest_still_run(
    tab: t.Any, server: FakeServer
) -> None:
    page = open_page(tab, server, GO + '<p id="out"></p>')
    commands = [
        ["text", "missing", "x"],
        ["js", "throw new Error('boom')"],
        ["js", "this is not javascript"],
        ["call", "nowhere.to.be.found", []],
        ["nosuch", "out"],
        ["text", "out", "after"],
    ]
    page.commands = lambda params: commands
    tab.click("#go")
    wait_seen(tab, "done", 1)

    errors = seen(tab, "error")
    assert [e["command"] for e in errors] == commands[:5]
    assert [e["seq"] for e in errors] == [1] * 5
    assert [e["reason"] for e in errors][:2] == ["no element #missing", "boom"]
    assert "Unexpected" in errors[2]["reason"]
    assert errors[4]["reason"].startswith("Cannot read properties of undefined")
    assert tab.text_content("#out") == "after"
    assert len([m for m in tab.console_errors if m.startswith("piggyback:")]) == 5
    # The error listener of a js command is gone: a later error is left alone.
    prevented = tab.evaluate("""() => new Promise(resolve => {
      window.addEventListener("error", event => resolve(event.defaultPrevented));
      setTimeout(() => { throw new Error("later"); });
    })""")
    assert prevented is False
    assert len(seen(tab, "error")) == 5


def test_a_handler_error_is_reported_and_its_batch_still_applies(
    tab: t.Any, server: FakeServer
) -> None:
    page = open_page(tab, server, GO + '<p id="out"></p>')

    def answer(params: Params) -> Answer:
        return 200, {
            "seq": 1,
            "token": "t2",
            "batches": [
                {"seq": 1, "commands": [["text", "out", "queued"]], "error": "The handler failed."},
            ],
        }

    page.answer = answer
    tab.click("#go")
    wait_seen(tab, "done", 1)

    assert [(e["type"], e["reason"], e["seq"], e["element"]) for e in seen(tab)[1:]] == [
        ("error", "The handler failed.", 1, "go"),
        ("done", None, 1, "go"),
    ]
    assert tab.text_content("#out") == "queued"


# Sequence numbers, acknowledgements, replays


def test_a_batch_is_never_applied_twice_and_late_replies_are_ignored(
    tab: t.Any, server: FakeServer
) -> None:
    page = open_page(tab, server, GO + '<p id="out"></p>')
    batch = {n: {"seq": n, "commands": [["append", "out", "ABC"[n - 1]]]} for n in (1, 2, 3)}
    batch[4] = {"seq": 4, "commands": [["append", "out", "D"]]}
    replies = {  # the server repeats batches the client already applied
        1: [batch[1]],
        2: [batch[1], batch[2]],
        3: [batch[2], batch[3]],
        4: [batch[4]],
    }

    def answer(params: Params) -> Answer:
        seq = int(params["s"])
        if seq == 4:
            page.release.wait(10)
        return 200, {"seq": seq, "token": f"t{seq}", "batches": replies[seq]}

    page.answer = answer
    for count in (1, 2, 3):
        tab.click("#go")
        wait_seen(tab, "done", count)
    assert tab.text_content("#out") == "ABC"
    assert [r["a"] for r in page.requests] == ["0", "1", "2"]

    try:
        tab.click("#go")
        wait_until(lambda: len(page.requests) == 4)
        # While seq 4 is in flight, a late answer to 3 and a stray one change nothing.
        tab.evaluate("""() => {
          piggyback.receive({seq: 3, batches: [{seq: 4, commands: [["append", "out", "late"]]}]});
          piggyback.receive({seq: 99, batches: [{seq: 99, commands: [["append", "out", "X"]]}]});
        }""")
        assert tab.text_content("#out") == "ABC"
    finally:
        page.release.set()
    wait_seen(tab, "done", 4)
    assert tab.text_content("#out") == "ABCD"
    assert [(r["s"], r["a"], r["p"]) for r in page.requests][-1] == ("4", "3", "t3")


def test_a_lost_answer_is_retried_then_given_up_and_redelivered_later(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    """A body without the document's grammar (a proxy's error page) is a failed try."""
    page = open_page(tab, server, GO + '<ul id="out"></ul>', **transport.attrs)
    page.commands = lambda params: [["append", "out", f"<li>{params['s']}</li>"]]

    def answer(params: Params) -> Answer:
        reply = page.protocol_answer(params)  # the handler ran; its answer is lost
        if params["s"] == "1":
            return 502, NOT_PROTOCOL
        return reply

    page.answer = answer
    tab.click("#go")
    wait_seen(tab, "error", 1)
    assert [(e["reason"], e["seq"], e["code"]) for e in seen(tab, "error")] == [
        (DID_NOT_REPORT, 1, None),
    ]
    assert page.requests == [page.requests[0]] * 3  # the same seq, the same request
    assert tab.evaluate("document.getElementById('go').className") == ""

    tab.click("#go")
    wait_seen(tab, "done", 1)
    tab.click("#go")
    wait_seen(tab, "done", 2)
    # Seq 1 was given up: the next events carry 2 and 3, and batch 1 arrives
    # before batch 2.
    assert [(r["s"], r["a"]) for r in page.requests] == [
        ("1", "0"),
        ("1", "0"),
        ("1", "0"),
        ("2", "0"),
        ("3", "2"),
    ]
    assert tab.inner_html("#out") == "<li>1</li><li>2</li><li>3</li>"
    transport.check(page)


def test_a_server_that_never_answers_is_retried_then_an_error(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(tab, server, GO + '<p id="out"></p>', timeout="300", **transport.attrs)
    page.commands = lambda params: [["text", "out", params["s"]]]

    def answer(params: Params) -> Answer:
        if params["s"] == "1":
            page.release.wait(10)
        return page.protocol_answer(params)

    page.answer = answer
    try:
        tab.click("#go")
        wait_seen(tab, "error", 1)
        tab.click("#go")
        wait_seen(tab, "done", 1)
    finally:
        page.release.set()

    assert [(e["reason"], e["seq"]) for e in seen(tab, "error")] == [("no answer in 300 ms", 1)]
    assert [(r["s"], r["a"]) for r in page.requests] == [("1", "0")] * 3 + [("2", "0")]
    assert tab.text_content("#out") == "2"
    transport.check(page)


def test_busy_is_retried_with_the_same_seq(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(tab, server, GO + '<p id="out"></p>', **transport.attrs)
    page.commands = lambda params: [["text", "out", "done"]]
    busy = rejection("busy", 409)
    page.answer = lambda params: (
        busy(params) if len(page.requests) == 1 else page.protocol_answer(params)
    )
    tab.click("#go")
    wait_seen(tab, "done", 1)

    assert len(page.requests) == 2
    assert page.requests[0] == page.requests[1]
    assert seen(tab, "error") == []
    assert tab.text_content("#out") == "done"
    transport.check(page)


def test_busy_every_time_is_an_error_after_three_tries(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, GO)
    page.answer = rejection("busy", 409)
    tab.click("#go")
    wait_seen(tab, "error", 1)

    assert [(e["reason"], e["code"], e["seq"]) for e in seen(tab, "error")] == [
        ("Rejected: busy.", "busy", 1),
    ]
    assert len(page.requests) == 3


@pytest.mark.parametrize(
    "code", ["bad_request", "bad_token", "unknown_handler", "too_large", "stale"]
)
def test_rejections_are_reported_and_not_retried(
    tab: t.Any, server: FakeServer, transport: Transport, code: str
) -> None:
    """A 4xx answer that is a protocol document is a rejection, on fetch too."""
    page = open_page(tab, server, GO, **transport.attrs)
    page.answer = rejection(code)
    tab.click("#go")
    wait_seen(tab, "error", 1)
    page.answer = page.protocol_answer
    tab.click("#go")
    wait_seen(tab, "done", 1)

    assert [(e["reason"], e["code"], e["seq"], e["element"]) for e in seen(tab, "error")] == [
        (f"Rejected: {code}.", code, 1, "go"),
    ]
    assert [r["s"] for r in page.requests] == ["1", "2"]
    transport.check(page)


def test_expired_reloads_the_page(tab: t.Any, server: FakeServer, transport: Transport) -> None:
    page = open_page(tab, server, GO, **transport.attrs)
    page.answer = rejection("expired", 410)
    with tab.expect_navigation():
        tab.click("#go")
    wait_until(lambda: page.loads == 2)
    assert tab.url == server.url(page)
    transport.check(page)


def test_expired_can_be_prevented_and_stops_polling(tab: t.Any, server: FakeServer) -> None:
    def configure(page: FakePage) -> None:
        page.answer = rejection("expired", 410)

    page = open_page(
        tab,
        server,
        """
      <script nonce="abc">window.preventExpiry = true; window.marker = "still here";</script>
      <button id="go" data-pb-click="go">go</button>
    """,
        configure,
        poll="0.5",
    )
    wait_seen(tab, "expired", 1)  # the first poll
    time.sleep(1.2)  # two more intervals: no more polls, and no reload
    assert len(page.requests) == 1
    tab.click("#go")
    wait_seen(tab, "expired", 2)

    assert [(e["type"], e["handler"], e["code"], e["seq"], e["cancelable"]) for e in seen(tab)] == [
        ("send", None, None, 1, True),
        ("expired", None, "expired", 1, True),
        ("send", "go", None, 2, True),
        ("expired", None, "expired", 2, True),
    ]
    assert [e["reason"] for e in seen(tab, "expired")] == ["Rejected: expired."] * 2
    assert tab.evaluate("window.marker") == "still here"
    assert tab.evaluate("document.getElementById('go').className") == ""
    assert tab.dialogs == []
    assert page.loads == 1
    assert [(r["s"], r.get("h")) for r in page.requests] == [("1", None), ("2", "go")]


# One event in flight


def test_rapid_clicks_are_sent_one_at_a_time_in_order(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(tab, server, GO + '<ol id="out"></ol>', **transport.attrs)
    page.commands = lambda params: [["append", "out", f"<li>{params['s']}</li>"]]

    def answer(params: Params) -> Answer:
        time.sleep(0.005)  # widen the window in which an overlap would show
        return page.protocol_answer(params)

    page.answer = answer
    tab.evaluate("() => { for (let i = 0; i < 30; i++) document.getElementById('go').click(); }")
    wait_seen(tab, "done", 30, timeout=20000)

    assert page.max_active == 1
    assert [r["s"] for r in page.requests] == [str(n) for n in range(1, 31)]
    assert [r["a"] for r in page.requests] == [str(n) for n in range(30)]
    assert tab.evaluate("[...document.querySelectorAll('#out li')].map(li => li.textContent)") == [
        str(n) for n in range(1, 31)
    ]
    transport.check(page)


def test_twenty_events_add_no_history_entries(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(tab, server, GO, **transport.attrs)
    tab.evaluate("""() => {
      window.frameStyles = [];
      new MutationObserver(records => records.forEach(record => record.addedNodes.forEach(
        node => node.nodeName === "IFRAME" && window.frameStyles.push(node.style.display)
      ))).observe(document.documentElement, {childList: true, subtree: true});
    }""")
    before = tab.evaluate("history.length")
    for count in range(1, 21):
        tab.click("#go")
        wait_seen(tab, "done", count)

    assert tab.evaluate("history.length") == before
    # The iframe path navigates one hidden frame again and again: one made, one left
    # (a spare frame is only for pages that post).
    frames = 1 if transport.name == "iframe" else 0
    assert tab.evaluate("window.frameStyles") == ["none"] * frames
    assert tab.evaluate("document.querySelectorAll('iframe').length") == frames
    transport.check(page)


def test_typing_coalesces_queued_input_events(tab: t.Any, server: FakeServer) -> None:
    page = open_page(
        tab,
        server,
        """
      <input id="q" data-pb-input="search"><button id="go" data-pb-click="go">go</button>
    """,
    )

    def answer(params: Params) -> Answer:
        if params["s"] == "1":
            page.release.wait(10)
        return page.protocol_answer(params)

    page.answer = answer
    try:
        tab.type("#q", "abc")  # "a" is in flight; "ab" is queued, then replaced by "abc"
        tab.click("#go")
        tab.press("#q", "End")
        tab.keyboard.type("de")  # behind the click: not merged with "abc"
        wait_until(lambda: len(page.requests) == 1)
    finally:
        page.release.set()
    wait_seen(tab, "done", 4)

    assert [(r["h"], r["s"], r.get("v")) for r in page.requests] == [
        ("search", "1", "a"),
        ("search", "2", "abc"),
        ("go", "3", None),
        ("search", "4", "abcde"),
    ]


def test_pb_busy_marks_queued_and_in_flight_elements(tab: t.Any, server: FakeServer) -> None:
    page = open_page(
        tab,
        server,
        """
      <button id="a" class="btn" data-pb-click="a">a</button>
      <button id="b" data-pb-click="b">b</button>
    """,
    )

    def answer(params: Params) -> Answer:
        if params["s"] == "1":
            page.release.wait(10)
        return page.protocol_answer(params)

    page.answer = answer
    classes = "() => ['a', 'b'].map(id => document.getElementById(id).className)"
    try:
        tab.click("#a")
        tab.click("#b")
        wait_until(lambda: len(page.requests) == 1)
        assert tab.evaluate(classes) == ["btn pb-busy", "pb-busy"]
    finally:
        page.release.set()
    wait_seen(tab, "done", 2)
    assert tab.evaluate(classes) == ["btn", ""]


# Polling


def test_polling_starts_from_data_poll_and_stops_on_poll_0(tab: t.Any, server: FakeServer) -> None:
    def configure(page: FakePage) -> None:
        page.extra = lambda params: {"poll": 0} if params["s"] == "3" else {}

    page = open_page(tab, server, "<p>polling</p>", configure, poll="0.1")
    wait_until(lambda: len(page.requests) >= 3)
    # A poll the interval queued while 3 was in flight may still go; then none.
    count = wait_until_quiet(page)

    assert count in (3, 4)
    assert [without_token(r) for r in page.requests] == [
        {"s": str(n), "a": str(n - 1)} for n in range(1, count + 1)
    ]
    assert [e["handler"] for e in seen(tab, "send")] == [None] * count


def test_polling_starts_from_a_reply(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, GO)
    page.extra = lambda params: (
        {"poll": 0.1} if params.get("h") == "go" else {"poll": 0} if params["s"] == "3" else {}
    )
    time.sleep(0.3)
    assert page.requests == []
    tab.click("#go")
    wait_until(lambda: len(page.requests) >= 3)
    count = wait_until_quiet(page)

    assert count in (3, 4)
    assert [(r["s"], r.get("h")) for r in page.requests] == [("1", "go")] + [
        (str(n), None) for n in range(2, count + 1)
    ]


def test_at_most_one_poll_waits_in_the_queue(tab: t.Any, server: FakeServer) -> None:
    def configure(page: FakePage) -> None:
        def answer(params: Params) -> Answer:
            if params["s"] == "1":
                page.release.wait(0.6)  # a dozen ticks pass while it is in flight
            return page.protocol_answer(params)

        page.extra = lambda params: {"poll": 0} if params["s"] == "1" else {}
        page.answer = answer

    page = open_page(tab, server, "<p>polling</p>", configure, poll="0.05")
    wait_seen(tab, "done", 2)
    time.sleep(0.3)

    assert [r["s"] for r in page.requests] == ["1", "2"]


def test_polling_pauses_while_hidden(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, "<p>polling</p>", poll="0.1")
    wait_until(lambda: len(page.requests) >= 1)
    tab.evaluate("""() => {
      Object.defineProperty(document, "hidden", {value: true, configurable: true});
      document.dispatchEvent(new Event("visibilitychange"));
    }""")
    count = wait_until_quiet(page, 0.3)  # a poll queued before may still go
    time.sleep(0.5)
    assert len(page.requests) == count

    tab.evaluate("""() => {
      Object.defineProperty(document, "hidden", {value: false, configurable: true});
      document.dispatchEvent(new Event("visibilitychange"));
    }""")
    wait_until(lambda: len(page.requests) > count)


def test_becoming_visible_sends_one_poll(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, "<p>polling</p>", poll="60")
    time.sleep(0.2)
    assert page.requests == []
    tab.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    wait_seen(tab, "done", 1)
    time.sleep(0.2)

    assert [without_token(r) for r in page.requests] == [{"s": "1", "a": "0"}]


def test_no_polling_without_data_poll(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, "<p>quiet</p>")
    tab.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    time.sleep(0.3)
    assert page.requests == []


# The transport


def test_the_transport_can_be_replaced(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, GO + '<p id="out"></p>')
    tab.evaluate("""() => {
      window.requests = [];
      piggyback.transport = function (request) {
        window.requests.push({url: request.url, seq: request.seq});
        setTimeout(function () {
          piggyback.receive({seq: request.seq, token: "faked", batches: [
            {seq: request.seq, commands: [["text", "out", "faked " + request.seq]]}]});
        });
      };
    }""")
    tab.click("#go")
    wait_seen(tab, "done", 1)
    tab.click("#go")
    wait_seen(tab, "done", 2)

    assert tab.text_content("#out") == "faked 2"
    assert tab.evaluate("window.requests") == [
        {"url": f"/event/{page.name}?p={page.token}&s=1&a=0&h=go&e=click&t=go&g=%7B%7D", "seq": 1},
        {"url": f"/event/{page.name}?p=faked&s=2&a=1&h=go&e=click&t=go&g=%7B%7D", "seq": 2},
    ]
    assert page.requests == []
    assert tab.evaluate("document.querySelectorAll('iframe').length") == 0


def test_a_transport_failure_is_retried_then_an_error(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, GO)
    tab.evaluate("""() => {
      window.tries = [];
      piggyback.transport = function (request) {
        window.tries.push(request.seq);
        request.fail("offline");
      };
    }""")
    tab.click("#go")
    wait_seen(tab, "error", 1)

    assert tab.evaluate("window.tries") == [1, 1, 1]
    errors = [(e["reason"], e["seq"], e["element"]) for e in seen(tab, "error")]
    assert errors == [("offline", 1, "go")]
    assert page.requests == []


@pytest.mark.parametrize(
    ("attrs", "script", "dest"),
    [
        pytest.param({}, "", "empty", id="default-fetch"),
        pytest.param({"transport": "fetch"}, "", "empty", id="fetch"),
        pytest.param({"transport": "iframe"}, "", "iframe", id="forced-iframe"),
        pytest.param({}, "delete window.fetch;", "iframe", id="no-fetch"),
    ],
)
def test_fetch_carries_events_where_it_exists_unless_the_tag_says_iframe(
    tab: t.Any, server: FakeServer, attrs: dict[str, str], script: str, dest: str
) -> None:
    tab.add_init_script(script)
    page = open_page(tab, server, GO + '<p id="out"></p>', **attrs)
    page.commands = lambda params: [["text", "out", "applied"]]
    tab.click("#go")
    wait_seen(tab, "done", 1)

    assert tab.text_content("#out") == "applied"
    assert [(carried.method, carried.dest) for carried in page.carried] == [("GET", dest)]


def test_the_reply_is_read_from_the_first_receive_to_the_last_script_end(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(tab, server, GO + '<p id="out"></p>', **transport.attrs)
    text = "parent.piggyback.receive({}) ) </script> \u2028 & done"
    page.commands = lambda params: [["text", "out", text]]
    tab.click("#go")
    wait_seen(tab, "done", 1)

    assert tab.text_content("#out") == text
    transport.check(page)


def test_a_network_error_is_retried_then_an_error(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(tab, server, GO + '<p id="out"></p>', **transport.attrs)
    page.commands = lambda params: [["text", "out", params["s"]]]
    cut: list[str] = []

    def cut_four(route: t.Any) -> None:
        if len(cut) < 4:
            cut.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    tab.route(f"**/event/{page.name}?*", cut_four)
    tab.click("#go")  # three tries cut: given up
    wait_seen(tab, "error", 1)
    tab.click("#go")  # one try cut, the next one answered
    wait_seen(tab, "done", 1)

    first = f"p={page.token}&s=1&a=0&h=go&e=click&t=go&g=%7B%7D"
    second = first.replace("s=1", "s=2")  # seq 1 was given up: never sent again
    assert [urlsplit(url).query for url in cut] == [first] * 3 + [second]
    assert page.queries == [second]
    # Neither transport can tell a network error from a body without the grammar.
    assert [(e["reason"], e["seq"], e["element"]) for e in seen(tab, "error")] == [
        (DID_NOT_REPORT, 1, "go"),
    ]
    assert tab.text_content("#out") == "2"
    assert tab.evaluate("document.getElementById('go').className") == ""
    transport.check(page)
