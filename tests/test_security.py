"""Safe by default, proven in headless Chromium against a real server (SECURITY.md).

The app (``tests/security_app.py``) runs on 127.0.0.1 under werkzeug's threaded server
in this process, so the tests can read what its handlers did; the attacker's site runs
on a second port, and as ``localhost`` on that port it is another site altogether.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
import time
import typing as t
import urllib.error
import urllib.request
from urllib.parse import quote
from urllib.parse import urlencode

import pytest
from markupsafe import escape
from werkzeug.serving import make_server
from werkzeug.serving import WSGIRequestHandler
from werkzeug.test import Client as HTTPClient

from piggyback.testing import read_reply
from piggyback.tokens import TokenSigner

from . import security_app
from .security_app import CALLS
from .security_app import EVENTS

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

TRANSPORTS = [pytest.param("", id="default"), pytest.param("iframe", id="iframe")]
ORIGIN_REFUSED = "Events must come from the page's own origin, not {!r}."
IN_ANOTHER_BROWSER = (
    "The page token's signature is not valid in this browser: the page was rendered in"
    " another one, or the token is forged."
)


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: t.Any) -> None:
        pass


@contextlib.contextmanager
def _serve(app: WSGIApplication) -> t.Iterator[int]:
    """Serve ``app`` on a free loopback port from a thread; yields the port."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def base() -> t.Iterator[str]:
    """The app's origin."""
    with _serve(security_app.app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def attacker_port() -> t.Iterator[int]:
    with _serve(security_app.attacker) as port:
        yield port


@pytest.fixture
def context(browser: t.Any) -> t.Iterator[t.Any]:
    context = browser.new_context()
    yield context
    context.close()


@pytest.fixture
def tab(context: t.Any) -> t.Any:
    return _watched(context.new_page())


def _watched(tab: t.Any) -> t.Any:
    """A tab that records its dialogs, console errors and uncaught exceptions."""
    tab.set_default_timeout(10_000)
    tab.dialogs, tab.errors = [], []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    tab.on("console", lambda m: m.type == "error" and tab.errors.append(m.text))
    tab.on("pageerror", lambda error: tab.errors.append(f"uncaught: {error}"))
    return tab


def _page_url(base: str, path: str, transport: str, **query: str) -> str:
    if transport:
        query["transport"] = transport
    return f"{base}{path}?{urlencode(query)}" if query else base + path


def _nonce(policy: str) -> str:
    match = re.search(r"'nonce-([^']+)'", policy)
    assert match is not None, policy
    return match.group(1)


def _token(tab: t.Any) -> str:
    return str(tab.evaluate("document.querySelector('script[data-token]').dataset.token"))


def _events_of(page_id: str) -> list[dict[str, t.Any]]:
    return [event for event in EVENTS if event["page"] == page_id]


def _calls_of(page_id: str) -> list[tuple[str, str, str | None, int]]:
    return [call for call in CALLS if call[1] == page_id]


def _wait_for_seen(tab: t.Any, type: str, count: int = 1) -> None:
    """Until the tab has seen ``count`` piggyback events of ``type`` (e.g. "done")."""
    tab.wait_for_function(
        "([type, n]) => window.seen.filter(e => e.type === type).length >= n", arg=[type, count]
    )


def _wait_for_text(tab: t.Any, id: str, text: str) -> None:
    # Functions, not expressions: Playwright would eval() an expression, which a strict
    # policy refuses (and reports as a violation).
    tab.wait_for_function(
        "([id, text]) => document.getElementById(id).textContent === text", arg=[id, text]
    )


def _get(url: str, cookie: str | None = None) -> tuple[int, dict[str, str], str]:
    """A plain HTTP GET, as a script or curl sends it: no Origin, no Sec-Fetch-*."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read().decode()


def _rendered_token(base: str) -> tuple[str, str]:
    """A page's token, and the cookie of the browser it belongs to."""
    with urllib.request.urlopen(base + "/plain", timeout=10) as response:
        html, set_cookies = response.read().decode(), response.headers.get_all("Set-Cookie")
    match = re.search(r'data-token="([^"]+)"', html)
    assert match is not None
    cookies = [c.split(";")[0] for c in set_cookies if c.startswith("pb_browser=")]
    assert len(cookies) == 1, set_cookies
    return match.group(1), cookies[0]


def _browser_cookie(context: t.Any) -> str:
    (cookie,) = [c for c in context.cookies() if c["name"] == "pb_browser"]
    return f"pb_browser={cookie['value']}"


# 1. A strict Content-Security-Policy, with no configuration


@pytest.mark.parametrize("policy", ["nonce", "strict-dynamic"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_strict_csp_page_works_without_configuration(
    tab: t.Any, base: str, transport: str, policy: str
) -> None:
    response = tab.goto(_page_url(base, "/strict", transport, policy=policy))
    header = response.headers["content-security-policy"]
    nonce = _nonce(header)
    assert header == security_app.POLICIES[policy].format(nonce=nonce)
    # piggyback read the nonce from the header: its own tag carries it.
    assert tab.evaluate("document.querySelector('script[data-token]').nonce") == nonce
    page_id = _token(tab).split(".")[0]

    tab.click("#inc")
    _wait_for_text(tab, "count", "1")
    tab.click("#helpers")
    _wait_for_seen(tab, "done", 2)
    assert tab.evaluate(
        """() => {
      const $ = id => document.getElementById(id);
      return {text: $('text').textContent, html: $('html').innerHTML,
        replaced: $('replace-box').innerHTML, list: $('list').innerHTML, gone: $('gone'),
        title: $('attr').getAttribute('title'), href: $('attr').getAttribute('href'),
        classes: $('classy').className, value: $('input').value,
        focused: document.activeElement.id, called: window.called, fromJs: window.fromJs};
    }"""
    ) == {
        "text": "set by set_text",
        "html": '<b id="bold">bold</b> &lt;i&gt;escaped&lt;/i&gt;',
        "replaced": '<p id="replacement">new</p>',
        "list": '<li id="one">one</li><li id="two">two</li>',
        "gone": None,
        "title": "set by set_attr",
        "href": "/plain?from=set_attr",
        "classes": "on",
        "value": "set by set_value",
        "focused": "input",
        "called": [1, "two", {"three": [3]}, None],
        "fromJs": ["set by set_text", "input", "</script>"],
    }
    assert [e["type"] for e in tab.evaluate("window.seen")] == ["send", "done"] * 2
    assert tab.evaluate("window.violations") == []

    tab.evaluate(
        "p => { document.getElementById('go').dataset.pbArgs = JSON.stringify(p); }",
        {"policy": policy},
    )
    with tab.expect_navigation(url=f"{base}/landed?policy={policy}") as landing:
        tab.click("#go")  # redirect(): a same-origin URL
    landed_nonce = _nonce(landing.value.headers["content-security-policy"])
    assert landed_nonce != nonce
    assert tab.evaluate("document.querySelector('script[data-token]').nonce") == landed_nonce
    tab.click("#inc")  # the landed page works too: a fresh page, a fresh nonce
    _wait_for_text(tab, "count", "1")
    assert tab.evaluate("window.violations") == []
    assert tab.errors == []
    assert tab.dialogs == []
    assert [call[0] for call in _calls_of(page_id)] == ["increment", "helpers", "go"]
    if transport == "iframe":
        assert [event["dest"] for event in _events_of(page_id)] == ["iframe"] * 3


def test_answer_document_has_its_own_strict_policy(base: str) -> None:
    token, cookie = _rendered_token(base)
    answered = _get(f"{base}/_pb/event?p={quote(token)}&s=1&h=increment", cookie)
    rejected = _get(f"{base}/_pb/event?p=forged.0.forged&s=1&h=increment")
    for (status, headers, body), expected_status in ((answered, 200), (rejected, 403)):
        assert status == expected_status
        scripts = re.findall(r"<script>(.*?)</script>", body)
        assert len(scripts) == 1
        assert body.count("<") == 4  # <!doctype>, <meta>, <script>, </script>: no other tag
        digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
        policy = {
            directive.split()[0]: directive.split()[1:]
            for directive in headers["Content-Security-Policy"].split(";")
        }
        assert policy == {
            "default-src": ["'none'"],
            "script-src": [f"'sha256-{digest}'"],
            "frame-ancestors": ["'self'"],
            "base-uri": ["'none'"],
            "form-action": ["'none'"],
        }
        assert headers["X-Frame-Options"] == "SAMEORIGIN"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store"
        assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert read_reply(rejected[2])["code"] == "bad_token"


def test_answer_document_cannot_be_framed_by_another_origin(
    context: t.Any, base: str, attacker_port: int
) -> None:
    victim = _watched(context.new_page())
    victim.goto(base + "/plain")
    token = _token(victim)
    url = f"{base}/_pb/event?p={quote(token)}&s=9&h=increment&t=framed"
    security_app.ATTACKS["/frame"] = f'<!doctype html><iframe name="framed" src="{url}"></iframe>'
    attacker = _watched(context.new_page())
    attacker.goto(f"http://localhost:{attacker_port}/frame")
    deadline = time.monotonic() + 5
    # Chromium reports the refusal on the console and shows its error page instead.
    while not (
        any("frame-ancestors 'self'" in error for error in attacker.errors)
        and [frame.url for frame in attacker.main_frame.child_frames]
        == ["chrome-error://chromewebdata/"]
    ):
        assert time.monotonic() < deadline, (attacker.frames, attacker.errors)
        attacker.wait_for_timeout(20)
    assert [(e["t"], e["status"]) for e in _events_of(token.split(".")[0])] == [("framed", 403)]
    assert _calls_of(token.split(".")[0]) == []


# 2. Data never becomes script or markup

XSS = [
    pytest.param("</script><script>window.pwned=1</script>", id="script-end"),
    pytest.param("</SCRIPT ><script>window.pwned=1</script></script\t>", id="script-end-cased"),
    pytest.param("<!--<script>", id="comment-script"),
    pytest.param("<!--<script>window.pwned=1</script>-->", id="comment"),
    pytest.param("<img src=x onerror=window.pwned=1>", id="img-onerror"),
    pytest.param("<svg onload=alert(1)><svg/onload=window.pwned=1>", id="svg-onload"),
    pytest.param('" onmouseover="window.pwned=1" x="', id="attribute-double"),
    pytest.param("' onmouseover='window.pwned=1' x='", id="attribute-single"),
    pytest.param("</textarea><img src=x onerror=window.pwned=1>", id="textarea-end"),
    pytest.param("\u2028\u2029\";window.pwned=1;//'", id="line-separators"),
    pytest.param("\u0000<script>window.pwned=1</script>\u0000", id="nul"),
    pytest.param("&lt;b&gt; &amp;amp; &#60;img src=x onerror=window.pwned=1&#62;", id="entities"),
    pytest.param("\\u003c/script\\u003e \\x3c ${alert(1)} `${window.pwned=1}` \\", id="escapes"),
    pytest.param("javascript:window.pwned=1", id="javascript-text"),
    pytest.param("\U0001f600 \u202e \u540d \ufeff \ud7ff", id="unicode"),
    # Too long for a URL (max_query_bytes): the client must carry it in a POST body.
    pytest.param("<img src=x onerror=window.pwned=1>" * 300, id="long-post-body"),
]

# What every data helper left in the page, read back.
READ_BACK = """() => {
  const $ = id => document.getElementById(id);
  return {text: $('as-text').textContent, html: $('as-html').textContent,
    replace: $('replace-target').textContent, append: $('as-append').textContent,
    title: $('as-title').getAttribute('title'), href: $('as-href').getAttribute('href'),
    src: $('as-src').getAttribute('src'), value: $('as-value').value,
    call: $('as-call').textContent, literal: $('as-literal').textContent,
    echo: $('as-echo').textContent};
}"""
ELEMENTS = (
    "() => [...document.body.querySelectorAll('*:not(iframe)')].map(e => e.tagName + '#' + e.id)"
)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("payload", XSS)
def test_helper_data_is_shown_exactly_and_never_runs(
    tab: t.Any, base: str, transport: str, payload: str
) -> None:
    tab.goto(_page_url(base, "/plain", transport))
    page_id = _token(tab).split(".")[0]
    before = tab.evaluate(ELEMENTS)
    # The payload travels as data-pb-args JSON and as the form control's value.
    tab.evaluate(
        """payload => {
      const source = document.getElementById('source');
      source.setAttribute('data-pb-args', JSON.stringify({payload: payload}));
      source.value = payload;
      source.dispatchEvent(new Event('change', {bubbles: true}));
    }""",
        payload,
    )
    _wait_for_seen(tab, "done")
    assert tab.evaluate("window.seen.map(e => e.type)") == ["send", "done"]
    assert [e["method"] for e in _events_of(page_id)] == ["POST" if len(payload) > 9000 else "GET"]
    # The HTML parser drops U+0000 from text, and no character reference stands for
    # it: the HTML helpers show the payload without its NULs (SECURITY.md).
    as_html = payload.replace("\0", "")
    assert tab.evaluate(READ_BACK) == {
        "text": payload,
        "html": as_html,
        "replace": as_html,
        "append": as_html,
        "title": payload,
        "href": "http://example.invalid/?q=" + payload,
        "src": "/pixel?q=" + payload,
        "value": payload,
        "call": payload,
        "literal": payload,
        "echo": payload,
    }
    # No element was made from data: only the replaced span is gone (for its text).
    after = tab.evaluate(ELEMENTS)
    before.remove("SPAN#as-replace")
    assert after == before
    tab.evaluate(
        """() => document.querySelectorAll('body *').forEach(element =>
          ['mouseover', 'focus'].forEach(type =>
            element.dispatchEvent(new Event(type, {bubbles: true}))))"""
    )
    tab.wait_for_timeout(100)  # for an image error or an svg load that should not exist
    assert tab.evaluate("window.pwned") is None
    assert tab.dialogs == []


REFUSED_ATTRIBUTES = [
    ("href", "javascript:window.pwned=1"),
    ("href", " \x00JaVaScRiPt:window.pwned=1"),
    ("href", "java\tscript:window.pwned=1"),
    ("href", "java\nscript:window.pwned=1"),
    ("href", "data:text/html,<script>window.pwned=1</script>"),
    ("href", "vbscript:window.pwned=1"),
    ("HREF", "javascript:window.pwned=1"),
    ("xlink:href", "javascript:window.pwned=1"),
    ("formaction", "javascript:window.pwned=1"),
    ("src", "javascript:window.pwned=1"),
    ("onclick", "window.pwned=1"),
    ("ONMOUSEOVER", "window.pwned=1"),
    ("srcdoc", "<script>window.pwned=1</script>"),
    ('x" onclick="window.pwned=1', "1"),
]


def test_refused_attributes_fail_the_handler_and_set_nothing(
    tab: t.Any, base: str, caplog: pytest.LogCaptureFixture
) -> None:
    tab.goto(base + "/plain")
    for n, (name, value) in enumerate(REFUSED_ATTRIBUTES, start=1):
        tab.evaluate(
            "args => document.getElementById('bad-attr').dataset.pbArgs = JSON.stringify(args)",
            {"name": name, "value": value},
        )
        tab.click("#bad-attr")
        _wait_for_seen(tab, "done", n)
    failed = "The handler failed; the server logged the error."
    # Each event was answered (done), and its handler's failure reported (error).
    assert tab.evaluate("window.seen") == [
        {"type": "send", "reason": None, "code": None, "cancelable": True},
        {"type": "error", "reason": failed, "code": None, "cancelable": False},
        {"type": "done", "reason": None, "code": None, "cancelable": False},
    ] * len(REFUSED_ATTRIBUTES)
    # The batch of a failed handler carries none of its commands.
    assert tab.text_content("#marker") == "untouched"
    assert tab.evaluate(
        "[...document.getElementById('link').attributes].map(a => [a.name, a.value])"
    ) == [["id", "link"], ["href", "/plain"]]
    assert tab.evaluate("window.pwned") is None
    assert tab.dialogs == []
    raised = [r.exc_info[1] for r in caplog.records if r.exc_info and r.name == "piggyback"]
    assert [type(error) for error in raised] == [ValueError] * len(REFUSED_ATTRIBUTES)


def test_svg_animation_values_cannot_become_a_javascript_link(tab: t.Any, base: str) -> None:
    tab.goto(base + "/plain")
    args = {"id": "svg-animate", "name": "values", "value": "javascript:void(window.pwned=1)"}
    tab.evaluate(
        "args => document.getElementById('bad-attr').dataset.pbArgs = JSON.stringify(args)", args
    )
    tab.click("#bad-attr")
    _wait_for_seen(tab, "done")
    tab.click("#svg-link text")
    tab.wait_for_timeout(200)  # a javascript: URL runs as a task after the click
    assert tab.evaluate("window.pwned") is None
    assert tab.evaluate("window.seen.map(e => e.type)") == ["send", "error", "done"]
    assert tab.get_attribute("#svg-animate", "values") == "#"


# 3. Other origins cannot trigger handlers


@pytest.mark.parametrize(
    ("host", "site"),
    [
        pytest.param("127.0.0.1", "same-site", id="same-site-other-port"),
        pytest.param("localhost", "cross-site", id="cross-site"),
    ],
)
def test_other_origins_cannot_trigger_handlers(
    context: t.Any, base: str, attacker_port: int, host: str, site: str
) -> None:
    victim = _watched(context.new_page())
    victim.goto(base + "/plain")
    victim.wait_for_function("() => window.piggyback !== undefined")
    token = _token(victim)  # leaked to the attacker on purpose: the stronger test
    page_id, issued, _ = token.split(".")
    forged = f"{page_id}.{issued}.{'A' * 22}"

    def event(seq: int, target: str, token: str = token) -> str:
        return f"{base}/_pb/event?p={quote(token)}&s={seq}&h=increment&t={target}"

    # A sandboxed frame's requests say "Origin: null", which the Origin check lets by.
    sandboxed = f"""<form id="f" method="post" action="{event(111, "sandboxed-post")}">
  <input name="v" value="1"></form><script>document.getElementById("f").submit()</script>"""
    security_app.ATTACKS["/attack"] = f"""<!doctype html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe><iframe name="sink3"></iframe>
<form id="post" method="post" target="sink1" action="{event(101, "form-post")}">
  <input name="v" value="1"></form>
<form id="forged" method="post" target="sink2" action="{event(102, "form-forged", forged)}">
  <input name="v" value="1"></form>
<form id="get" method="get" target="sink3" action="{base}/_pb/event">
  <input name="p" value="{token}"><input name="s" value="103">
  <input name="h" value="increment"><input name="t" value="form-get"></form>
<iframe src="{event(104, "iframe")}"></iframe>
<iframe sandbox="allow-forms allow-scripts" srcdoc="{escape(sandboxed)}"></iframe>
<img src="{event(105, "img")}">
<script src="{event(106, "script")}"></script>
<script>
  document.getElementById("post").submit();
  document.getElementById("forged").submit();
  document.getElementById("get").submit();
  fetch("{event(107, "fetch")}", {{mode: "no-cors", credentials: "include"}});
  fetch("{event(108, "fetch-post")}", {{method: "POST", mode: "no-cors",
    credentials: "include", body: new URLSearchParams({{v: "1"}})}});
  navigator.sendBeacon("{event(109, "beacon")}", "v=1");
</script></body>"""
    attacker = context.new_page()
    attacker.goto(f"http://{host}:{attacker_port}/attack")
    # Last, a top-level navigation: the one kind that carries SameSite=Lax cookies.
    with attacker.expect_navigation():
        attacker.evaluate("url => { location.href = url; }", event(110, "navigate"))
    vectors = [  # (t, method, s)
        ("form-post", "POST", 101),
        ("form-forged", "POST", 102),
        ("form-get", "GET", 103),
        ("iframe", "GET", 104),
        ("img", "GET", 105),
        ("script", "GET", 106),
        ("fetch", "GET", 107),
        ("fetch-post", "POST", 108),
        ("beacon", "POST", 109),
        ("navigate", "GET", 110),
    ]
    opaque = [("sandboxed-post", "POST", 111)]  # an opaque origin is another site
    deadline = time.monotonic() + 10
    while len(_events_of(page_id)) < len(vectors) + len(opaque):
        assert time.monotonic() < deadline, [e["t"] for e in _events_of(page_id)]
        time.sleep(0.02)

    def refused(seq: int, site: str) -> dict[str, t.Any]:
        return {"seq": seq, "code": "bad_request", "error": ORIGIN_REFUSED.format(site)}

    assert sorted(
        (e["t"], e["method"], e["status"], e["site"], e["reply"]) for e in _events_of(page_id)
    ) == sorted(
        [(t, method, 403, site, refused(s, site)) for t, method, s in vectors]
        + [(t, method, 403, "cross-site", refused(s, "cross-site")) for t, method, s in opaque]
    )
    assert {e["origin"] for e in _events_of(page_id) if e["t"] == "sandboxed-post"} == {"null"}
    assert _calls_of(page_id) == []
    # Same-site requests carried the victim's SameSite=Lax cookie, and were refused all
    # the same; cross-site, only the top-level navigation carried it.
    carried = sorted(e["t"] for e in _events_of(page_id) if e["cookie"])
    assert carried == (sorted(t for t, _, _ in vectors) if site == "same-site" else ["navigate"])

    # The token was valid: the victim's own page goes on, and a request without a
    # browser's Origin and Sec-Fetch-Site headers (curl) is not refused.
    victim.click("#inc")
    _wait_for_text(victim, "count", "1")
    status, _, body = _get(event(500, "curl"), _browser_cookie(context))
    assert status == 200
    assert read_reply(body)["batches"][-1]["commands"] == [["text", "count", "2"]]
    assert [call[2:] for call in _calls_of(page_id)] == [("inc", 1), ("curl", 500)]
    assert victim.errors == []


# 4. Tokens


def test_page_ids_are_128_random_bits() -> None:
    http = HTTPClient(security_app.app)
    ids = []
    for _ in range(1000):
        html = http.get("/plain").get_data(as_text=True)
        match = re.search(r'data-token="([^".]+)\.', html)
        assert match is not None
        ids.append(match.group(1))
    assert len(set(ids)) == 1000
    assert {len(page_id) for page_id in ids} == {22}
    raw = [base64.urlsafe_b64decode(page_id + "==") for page_id in ids]
    assert {len(bits) for bits in raw} == {16}
    ones = sum(bin(byte).count("1") for bits in raw for byte in bits)
    assert 0.49 < ones / (1000 * 128) < 0.51  # 7 standard deviations: not a counter


def test_a_token_drives_only_its_own_page(base: str) -> None:
    (a_token, a_cookie), (b_token, b_cookie) = _rendered_token(base), _rendered_token(base)
    a_id, a_issued, a_signature = a_token.split(".")
    b_id = b_token.split(".")[0]

    def send(token: str, s: int, cookie: str = b_cookie) -> tuple[int, dict[str, t.Any]]:
        url = f"{base}/_pb/event?p={quote(token)}&s={s}&h=increment&t=swap"
        status, _, body = _get(url, cookie)
        return status, read_reply(body)

    bad_signature = {"code": "bad_token", "error": IN_ANOTHER_BROWSER}
    # Page B's id under page A's signature, and B's id signed by another app's key.
    assert send(f"{b_id}.{a_issued}.{a_signature}", 1) == (403, {"seq": 1, **bad_signature})
    other_app = TokenSigner(b"another app's key", max_age=86400).sign(b_id)
    assert send(other_app, 2) == (403, {"seq": 2, **bad_signature})
    assert _calls_of(b_id) == []

    status, reply = send(a_token, 1, a_cookie)
    assert (status, reply["batches"]) == (200, [{"seq": 1, "commands": [["text", "count", "1"]]}])
    status, reply = send(b_token, 1)  # B's count starts from zero: A's event did not touch it
    assert (status, reply["batches"]) == (200, [{"seq": 1, "commands": [["text", "count", "1"]]}])
    assert [call[:2] for call in CALLS if call[1] in (a_id, b_id)] == [
        ("increment", a_id),
        ("increment", b_id),
    ]


_BROWSER_HEADERS = ("origin", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest")


def _without_browser_headers(route: t.Any) -> None:
    """Send the request as an old browser would: its cookies, no Origin, no Sec-Fetch-*."""
    headers = route.request.all_headers()
    kept = {k: v for k, v in headers.items() if k.lower() not in _BROWSER_HEADERS}
    route.fulfill(response=route.fetch(headers=kept))


@pytest.mark.parametrize("stripped", [False, True], ids=["browser-headers", "no-origin-headers"])
def test_a_token_from_another_browser_is_refused(browser: t.Any, base: str, stripped: bool) -> None:
    """A token minted in one browser (the attacker's: anyone can render a page) does
    nothing in another that has its own cookies, even when that browser sends no
    ``Origin`` and no ``Sec-Fetch-Site`` (Safari before 16.4 on an ``<img>``)."""
    theirs, ours = browser.new_context(), browser.new_context()
    try:
        minting = _watched(theirs.new_page())
        minting.goto(base + "/plain")
        token = _token(minting)
        page_id = token.split(".")[0]
        victim = _watched(ours.new_page())
        victim.goto(base + "/plain")  # the victim's own browser id and session
        if stripped:  # sent by Playwright instead: Chromium would put them back
            ours.route("**/_pb/event?**", _without_browser_headers)
        url = f"{base}/_pb/event?p={quote(token)}&h=increment"
        victim.evaluate(
            """url => {
              new Image().src = url + "&s=1&t=img";
              fetch(url + "&s=2&t=fetch", {credentials: "include"});
              var form = document.createElement("form");
              form.method = "post"; form.action = url + "&s=3&t=form"; form.target = "sink";
              var sink = document.createElement("iframe"); sink.name = "sink";
              document.body.append(sink, form); form.submit();
            }""",
            url,
        )
        deadline = time.monotonic() + 10
        while len(_events_of(page_id)) < 3:
            assert time.monotonic() < deadline, _events_of(page_id)
            victim.wait_for_timeout(20)  # Playwright runs the route handler meanwhile
        refused = {"code": "bad_token", "error": IN_ANOTHER_BROWSER}
        events = {e["t"]: e for e in _events_of(page_id)}
        assert sorted(events) == ["fetch", "form", "img"]
        for e in events.values():  # each carried the victim's cookies, and was refused
            assert (e["status"], e["cookie"], e["browser"]) == (403, True, True), e
            assert e["reply"] == {"seq": e["reply"]["seq"], **refused}
        for e in events.values():
            if stripped:
                assert (e["site"], e["origin"]) == (None, None)
            else:
                assert e["site"] == "same-origin"
        assert _calls_of(page_id) == []
        minting.click("#inc")  # the token was genuine: in its own browser it works
        _wait_for_text(minting, "count", "1")
        assert [call[0] for call in _calls_of(page_id)] == ["increment"]
    finally:
        theirs.close()
        ours.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tabs_of_one_browser_share_its_id_and_each_keeps_working(
    context: t.Any, base: str, transport: str
) -> None:
    """The browser id is set once, with the first page: later pages and other tabs keep
    it, so no tab's token is lost, on either transport."""
    first = _watched(context.new_page())
    first.goto(_page_url(base, "/plain", transport))
    first_cookie = _browser_cookie(context)
    second = _watched(context.new_page())
    second.goto(_page_url(base, "/plain", transport))
    first.reload()  # and a reload of the first tab
    assert _browser_cookie(context) == first_cookie
    for tab in (first, second, first, second):
        tab.click("#inc")
    _wait_for_text(first, "count", "2")
    _wait_for_text(second, "count", "2")
    assert first.errors == second.errors == []


def test_a_cached_page_is_not_shared_with_another_tab(context: t.Any, base: str) -> None:
    first = _watched(context.new_page())
    first.goto(base + "/cached")
    first.click("#inc")
    _wait_for_text(first, "count", "1")
    second = _watched(context.new_page())
    second.goto(base + "/cached")
    second_id = _token(second).split(".")[0]
    assert second_id != _token(first).split(".")[0]
    second.click("#inc")
    _wait_for_text(second, "count", "1")
    assert [call[0] for call in _calls_of(second_id)] == ["increment"]


# Chromium's own console line for a 4xx answer, whichever transport carried it.
GONE = "Failed to load resource: the server responded with a status of 410 (Gone)"
EXPIRED = {
    "type": "expired",
    "reason": "The page expired; reload it to go on.",
    "code": "expired",
    "cancelable": True,
}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_expired_page_reloads_by_default(
    tab: t.Any, base: str, transport: str, request: pytest.FixtureRequest
) -> None:
    key = request.node.name
    tab.goto(_page_url(base, "/plain", transport, expire=key))
    old_id = _token(tab).split(".")[0]
    with tab.expect_navigation():
        tab.click("#inc")
    assert json.loads(tab.evaluate("sessionStorage.getItem('expired')")) == EXPIRED
    assert security_app.RENDERS[key] == 2
    assert [(e["status"], e["reply"]["code"]) for e in _events_of(old_id)] == [(410, "expired")]
    assert _calls_of(old_id) == []
    tab.click("#inc")  # the reloaded page has a fresh token
    _wait_for_text(tab, "count", "1")
    assert tab.errors == [GONE]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_expired_page_stays_when_the_app_prevents_the_reload(
    tab: t.Any, base: str, transport: str, request: pytest.FixtureRequest
) -> None:
    key = request.node.name
    tab.goto(_page_url(base, "/plain", transport, expire=key))
    navigations: list[str] = []
    tab.on(
        "framenavigated", lambda frame: frame == tab.main_frame and navigations.append(frame.url)
    )
    tab.evaluate(
        """() => { window.stayed = true;
        document.addEventListener('piggyback:expired', e => e.preventDefault()); }"""
    )
    tab.click("#inc")
    _wait_for_seen(tab, "expired")
    assert tab.evaluate("window.seen.filter(e => e.type !== 'send')") == [EXPIRED]
    tab.wait_for_timeout(500)  # a reload would have started by now
    assert tab.evaluate("window.stayed") is True
    assert navigations == []
    assert security_app.RENDERS[key] == 1
    assert tab.errors == [GONE]
