from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import logging
import time
import typing as t
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlencode

import pytest
from werkzeug.test import Client as HTTPClient
from werkzeug.test import TestResponse
from werkzeug.wrappers import Request

from piggyback import endpoint as endpoint_module
from piggyback import Event
from piggyback import Page
from piggyback import Piggyback
from piggyback.answer import Answerer
from piggyback.endpoint import DRAIN_BYTES
from piggyback.endpoint import EventEndpoint
from piggyback.registry import Registry
from piggyback.stores.memory import MemoryStore
from piggyback.testing import Client
from piggyback.testing import HandlerFailed
from piggyback.testing import read_reply
from piggyback.testing import Rejected
from piggyback.testing import TestPage
from piggyback.tokens import new_page_id
from piggyback.tokens import TokenSigner

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

SECRET = "endpoint-tests"
PAGE = b'<!doctype html><html><body><span id="count">0</span></body></html>'
FAILED = "The handler failed; the server logged the error."
PREFIX = b'<!doctype html><meta charset="utf-8"><script>'
SUFFIX = b"</script>"


def _index(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(PAGE)))])
    return [PAGE]


@dataclass
class Harness:
    """One app with counting handlers, a test client and raw HTTP."""

    live: Piggyback
    store: MemoryStore
    client: Client
    http: HTTPClient
    #: (handler, seq) of every handler run, in order.
    calls: list[tuple[str, int]] = field(default_factory=list)
    #: What the echo handler saw.
    seen: list[dict[str, t.Any]] = field(default_factory=list)

    def page(self) -> TestPage:
        return self.client.open("/")

    def send(
        self,
        token: str | None,
        s: t.Any = 1,
        a: t.Any = 0,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        data: t.Any = None,
        query: str | None = None,
        **params: t.Any,
    ) -> tuple[TestResponse, dict[str, t.Any]]:
        """One raw event request; the response and the reply it carries."""
        if query is None:
            fields = {"p": token, "s": s, "a": a, **params}
            query = urlencode({k: v for k, v in fields.items() if v is not None})
        response = self.http.open(
            f"/_pb/event?{query}", method=method, headers=headers or {}, data=data
        )
        return response, read_reply(response.get_data(as_text=True))

    @property
    def browser(self) -> str:
        """The browser id in the client's cookie, which page tokens are bound to."""
        cookie = self.http.get_cookie("pb_browser")
        return "" if cookie is None else cookie.value

    def sign(self, page_id: str, now: float | None = None) -> str:
        """A token for the page in the client's browser (it has one once it rendered)."""
        return self.live.signer.sign(page_id, now=now, browser=self.browser)

    def verify(self, token: str) -> str:
        return self.live.signer.verify(token, browser=self.browser)

    def state(self, page: TestPage) -> dict[str, t.Any]:
        record, _ = self.store.load(page.id)
        assert record is not None
        return record.state


def _harness(**options: t.Any) -> Harness:
    store = MemoryStore()
    live = Piggyback(_index, secret_key=SECRET, store=store, **options)
    client = Client(live)
    # Raw requests come from the same browser as the client's pages: its cookies.
    harness = Harness(live, store, client, client.http)
    calls, seen = harness.calls, harness.seen

    @live.handler
    def increment(page: Page, event: Event) -> None:
        calls.append(("increment", event.seq))
        page.state["n"] = page.state.get("n", 0) + 1
        page.set_text("count", page.state["n"])

    @live.handler
    def boom(page: Page, event: Event) -> None:
        calls.append(("boom", event.seq))
        page.state["n"] = 99
        page.set_text("count", "never")
        page.join("boomers")
        if "other" in event.args:
            live.page(event.args["other"]).set_text("note", "never")
        live.group("room").set_text("note", "never")
        raise RuntimeError("the secret detail")

    @live.handler
    def echo(page: Page, event: Event) -> None:
        calls.append(("echo", event.seq))
        seen.append(
            {
                "page": page,
                "event": event,
                "environ_page": event.request.environ.get("piggyback.page"),
                "form": event.form.to_dict(flat=False),
                "files": {k: (f.filename, f.read(), f.stream) for k, f in event.files.items()},
            }
        )

    @live.handler
    def notify(page: Page, event: Event) -> None:
        calls.append(("notify", event.seq))
        if "to" in event.args:
            live.page(event.args["to"]).set_text("note", event.args["text"])
        if "group" in event.args:
            live.group(event.args["group"]).set_text("note", event.args["text"])

    @live.handler
    def join(page: Page, event: Event) -> None:
        page.join(event.args["group"])

    @live.handler
    def leave(page: Page, event: Event) -> None:
        page.leave(event.args["group"])

    @live.handler("poll")
    def set_poll(page: Page, event: Event) -> None:
        page.poll(event.args["seconds"])

    @live.handler
    def bad_state(page: Page, event: Event) -> None:
        calls.append(("bad_state", event.seq))
        page.state["n"] = 5
        page.state["bad"] = (event.args.get("nan") and float("nan")) or object()
        page.set_text("count", "never")

    return harness


@pytest.fixture
def h() -> Harness:
    return _harness()


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> float:
    """Stop the clock at a whole second, so tokens signed now are all the same."""
    now = float(int(time.time()))
    monkeypatch.setattr(time, "time", lambda: now)
    return now


def _sha256_source(script: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"


def _expected_headers(body: bytes) -> list[tuple[str, str]]:
    assert body.startswith(PREFIX) and body.endswith(SUFFIX)
    script = body[len(PREFIX) : -len(SUFFIX)]
    return [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "SAMEORIGIN"),
        ("Referrer-Policy", "no-referrer"),
        (
            "Content-Security-Policy",
            f"default-src 'none'; script-src {_sha256_source(script)};"
            " frame-ancestors 'self';"
            " base-uri 'none'; form-action 'none'",
        ),
    ]


def _document(reply: dict[str, t.Any]) -> bytes:
    text = json.dumps(reply, separators=(",", ":"), ensure_ascii=False)
    return PREFIX + f"parent.piggyback.receive({text})".encode() + SUFFIX


# The answer document.


def test_answer_document_and_headers(h: Harness, frozen: float) -> None:
    page = h.page()
    response, reply = h.send(page.token, 1, 0, h="increment", e="click", t="inc")
    body = response.get_data()
    token = h.sign(page.id, now=frozen)
    assert reply == {
        "seq": 1,
        "batches": [{"seq": 1, "commands": [["text", "count", "1"]]}],
        "token": token,
    }
    assert response.status == "200 OK"
    assert body == _document(reply)
    assert response.headers.to_wsgi_list() == _expected_headers(body)


def test_rejected_document_and_headers(h: Harness) -> None:
    page = h.page()
    response, reply = h.send(page.token, 3, 0, h="nope")
    body = response.get_data()
    assert response.status == "404 Not Found"
    assert reply == {
        "seq": 3,
        "code": "unknown_handler",
        "error": "No handler is registered as 'nope'.",
    }
    assert body == _document(reply)
    assert response.headers.to_wsgi_list() == _expected_headers(body)


def test_commands_cannot_break_out_of_the_document(h: Harness) -> None:
    page = h.page()
    h.live.page(page.id).set_text("count", "</script><script>alert(1)</script>\u2028")
    response, reply = h.send(page.token, 1)
    body = response.get_data()
    assert body.count(b"<script") == 1
    assert body.count(b"</script>") == 1
    assert reply["batches"] == [
        {
            "seq": 1,
            "commands": [["text", "count", "</script><script>alert(1)</script>\u2028"]],
        }
    ]


# Bad input: a 4xx with a code and a reason, and no handler runs.


IN_THIS_BROWSER = (
    "The page token's signature is not valid in this browser: the page was rendered in"
    " another one, or the token is forged."
)


def _token(h: Harness, page_id: str, now: float | None = None) -> str:
    return h.sign(page_id, now=now)


def _forged(token: str) -> str:
    body, signature = token.rsplit(".", 1)
    return body + "." + ("B" if signature[0] == "A" else "A") + signature[1:]


def _multipart(name: str, filename: str, content: bytes) -> bytes:
    # Built here: werkzeug's test client spools large uploads to a file it never closes.
    return (
        b"--b0undary\r\n"
        + f'Content-Disposition: form-data; name="{name}"; '.encode()
        + f'filename="{filename}"\r\n'.encode()
        + b"Content-Type: application/octet-stream\r\n\r\n"
        + content
        + b"\r\n--b0undary--\r\n"
    )


_ORIGIN = "Events must come from the page's own origin, not {!r}."


@pytest.mark.parametrize(
    ("request_options", "status", "code", "reason"),
    [
        pytest.param(
            lambda h, p: {"token": None},
            400,
            "bad_request",
            "The event request has no page token (parameter 'p').",
            id="missing-token",
        ),
        pytest.param(
            lambda h, p: {"token": _forged(p.token)},
            403,
            "bad_token",
            IN_THIS_BROWSER,
            id="forged-token",
        ),
        pytest.param(
            lambda h, p: {"token": _token(h, new_page_id())[:-1] + "="},
            403,
            "bad_token",
            None,
            id="malformed-token",
        ),
        pytest.param(
            lambda h, p: {"token": _token(h, p.id, now=time.time() - 24 * 3600 - 60)},
            410,
            "expired",
            "The page expired; reload it to go on.",
            id="expired-token",
        ),
        pytest.param(
            lambda h, p: {"token": _token(h, p.id, now=time.time() + 3600)},
            403,
            "bad_token",
            "The page token was issued in the future.",
            id="future-token",
        ),
        pytest.param(
            lambda h, p: {"token": TokenSigner(b"another", 3600).sign(p.id, browser=h.browser)},
            403,
            "bad_token",
            IN_THIS_BROWSER,
            id="other-secret",
        ),
        pytest.param(
            lambda h, p: {"token": h.live.signer.sign(p.id, browser="B" * 22)},
            403,
            "bad_token",
            IN_THIS_BROWSER,
            id="other-browser",
        ),
        pytest.param(
            lambda h, p: {"token": h.live.signer.sign(p.id)},
            403,
            "bad_token",
            IN_THIS_BROWSER,
            id="unbound-token",
        ),
        pytest.param(
            lambda h, p: {"h": "incremnt"},
            404,
            "unknown_handler",
            "No handler is registered as 'incremnt'.",
            id="unknown-handler",
        ),
        pytest.param(
            lambda h, p: {"h": "increment", "g": "{"},
            400,
            "bad_request",
            "The arguments (parameter 'g') are not valid JSON: Expecting property name"
            " enclosed in double quotes: line 1 column 2 (char 1).",
            id="malformed-args",
        ),
        pytest.param(
            lambda h, p: {"h": "increment", "g": "[1]"},
            400,
            "bad_request",
            "The arguments (parameter 'g') must be a JSON object, not an array.",
            id="args-not-an-object",
        ),
        pytest.param(
            lambda h, p: {"query": f"p={p.token}&s=1&h=increment&g=" + "[" * 5000 + "]" * 5000},
            400,
            "bad_request",
            "The arguments nest deeper than 20 levels.",
            id="args-5000-deep",
        ),
        pytest.param(
            lambda h, p: {"s": 0},
            400,
            "bad_request",
            "The parameter 's' must be a whole number from 1 to 2**53, not '0'.",
            id="seq-zero",
        ),
        pytest.param(
            lambda h, p: {"s": 2, "a": 2},
            400,
            "bad_request",
            "The acknowledgement 2 is not below the sequence number 2.",
            id="ack-not-below-seq",
        ),
        pytest.param(
            lambda h, p: {"query": f"p={p.token}&s=1&h=increment&h=increment"},
            400,
            "bad_request",
            "The parameter 'h' appears more than once.",
            id="duplicate-parameter",
        ),
        pytest.param(
            lambda h, p: {"v": "x" * 17_000},
            414,
            "too_large",
            "The event's query string is longer than 16384 bytes.",
            id="oversize-query",
        ),
        pytest.param(
            lambda h, p: {"method": "POST", "data": {"text": "x" * (1024 * 1024 + 1)}},
            413,
            "too_large",
            "The event's body is larger than 1048576 bytes.",
            id="oversize-body",
        ),
        pytest.param(
            lambda h, p: {
                "method": "POST",
                "data": _multipart("doc", "big.bin", b"x" * (1024 * 1024 + 1)),
                "headers": {"Content-Type": "multipart/form-data; boundary=b0undary"},
            },
            413,
            "too_large",
            "The event's body is larger than 1048576 bytes.",
            id="oversize-upload",
        ),
        pytest.param(
            lambda h, p: {"method": "PUT"},
            405,
            "bad_request",
            "Event requests use GET or POST, not PUT.",
            id="wrong-method-put",
        ),
        pytest.param(
            lambda h, p: {"method": "DELETE"},
            405,
            "bad_request",
            "Event requests use GET or POST, not DELETE.",
            id="wrong-method-delete",
        ),
        pytest.param(
            lambda h, p: {"headers": {"Sec-Fetch-Site": "cross-site"}},
            403,
            "bad_request",
            _ORIGIN.format("cross-site"),
            id="sec-fetch-cross-site",
        ),
        pytest.param(
            lambda h, p: {"headers": {"Sec-Fetch-Site": "same-site"}},
            403,
            "bad_request",
            _ORIGIN.format("same-site"),
            id="sec-fetch-same-site",
        ),
        pytest.param(
            lambda h, p: {"headers": {"Origin": "https://evil.example"}},
            403,
            "bad_request",
            _ORIGIN.format("https://evil.example"),
            id="foreign-origin",
        ),
        pytest.param(
            lambda h, p: {"headers": {"Origin": "http://localhost.evil.example"}},
            403,
            "bad_request",
            _ORIGIN.format("http://localhost.evil.example"),
            id="foreign-origin-prefix",
        ),
        pytest.param(
            lambda h, p: {"headers": {"Origin": "http://localhost:8080"}},
            403,
            "bad_request",
            _ORIGIN.format("http://localhost:8080"),
            id="foreign-origin-port",
        ),
        pytest.param(
            lambda h, p: {
                "headers": {
                    "Origin": "https://evil.example",
                    "Sec-Fetch-Site": "same-origin",
                }
            },
            403,
            "bad_request",
            _ORIGIN.format("https://evil.example"),
            id="foreign-origin-same-origin-fetch",
        ),
    ],
)
def test_bad_input_is_rejected_and_runs_nothing(
    h: Harness,
    request_options: t.Callable[[Harness, TestPage], dict[str, t.Any]],
    status: int,
    code: str,
    reason: str | None,
) -> None:
    page = h.page()
    options: dict[str, t.Any] = {"token": page.token, "s": 1, "a": 0, "h": "increment"}
    options.update(request_options(h, page))
    token = options.pop("token")
    response, reply = h.send(token, **options)
    body = response.get_data()
    assert response.status_code == status
    assert (reply["code"], reply.get("token"), "batches" in reply) == (
        code,
        None,
        False,
    )
    if reason is not None:
        assert reply["error"] == reason
    assert reply["seq"] == (options["s"] if "query" not in options else 1)
    assert response.headers.to_wsgi_list()[: len(_expected_headers(body))] == _expected_headers(
        body
    )
    assert h.calls == []
    assert h.store.load(page.id)[0] is None


def test_malformed_token_reason(h: Harness) -> None:
    response, reply = h.send("not-a-token", h="increment")
    assert (response.status_code, reply) == (
        403,
        {
            "seq": 1,
            "code": "bad_token",
            "error": "The page token 'not-a-token' is malformed.",
        },
    )


def test_wrong_method_says_what_is_allowed(h: Harness) -> None:
    response, _ = h.send(h.page().token, method="PATCH", h="increment")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"
    assert h.calls == []


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_same_origin_is_accepted(h: Harness, method: str) -> None:
    page = h.page()
    headers = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    response, reply = h.send(page.token, h="increment", method=method, headers=headers)
    assert (response.status_code, reply["batches"]) == (
        200,
        [{"seq": 1, "commands": [["text", "count", "1"]]}],
    )
    assert h.calls == [("increment", 1)]


@pytest.mark.parametrize(
    ("s", "seq"),
    [
        pytest.param("x", None, id="word"),
        pytest.param("9" * 17, None, id="17-digits"),
        pytest.param("", None, id="empty"),
        pytest.param("-1", None, id="negative"),
    ],
)
def test_rejected_reply_without_a_usable_seq(h: Harness, s: str, seq: int | None) -> None:
    response, reply = h.send(None, query=f"p={h.page().token}&s={s}&h=increment")
    assert (response.status_code, reply["seq"], reply["code"]) == (
        400,
        seq,
        "bad_request",
    )
    assert h.calls == []


@pytest.mark.parametrize("s", ["%C2%B2", "%D9%A3"], ids=["superscript", "arabic-digit"])
def test_rejected_reply_for_a_non_ascii_digit_seq(h: Harness, s: str) -> None:
    response, reply = h.send(None, query=f"p={h.page().token}&s={s}&h=increment")
    assert (response.status_code, reply["seq"], reply["code"]) == (
        400,
        None,
        "bad_request",
    )


def test_smaller_limits() -> None:
    h = _harness(max_query_bytes=200, max_body_bytes=100)
    page = h.page()
    response, reply = h.send(page.token, h="increment", v="x" * 200)
    assert (response.status_code, reply["error"]) == (
        414,
        "The event's query string is longer than 200 bytes.",
    )
    response, reply = h.send(page.token, h="echo", method="POST", data={"v": "x" * 100})
    assert (response.status_code, reply["error"]) == (
        413,
        "The event's body is larger than 100 bytes.",
    )
    assert h.calls == []
    response, reply = h.send(page.token, h="echo", method="POST", data={"v": "x" * 10})
    assert (response.status_code, h.calls) == (200, [("echo", 1)])


def _post_body(
    h: Harness,
    stream: io.BytesIO,
    length: int | None,
    headers: dict[str, str] | None = None,
    **environ: t.Any,
) -> tuple[int, dict[str, t.Any]]:
    """POSTs a ``b=1`` event whose ``Content-Length`` is ``length`` (``None``: none) and
    whose body is ``stream``; ``environ`` is what the server puts there."""
    query = urlencode({"p": h.page().token, "s": 1, "h": "echo", "b": 1})
    if length is not None:
        # As the browser said it, whatever the stream holds (the builder would measure).
        environ["CONTENT_LENGTH"] = str(length)
    response = h.http.open(
        f"/_pb/event?{query}",
        method="POST",
        input_stream=stream,
        content_type="application/x-www-form-urlencoded",
        headers=headers or {},
        environ_overrides=environ,
    )
    return response.status_code, read_reply(response.get_data(as_text=True))


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(101, id="one-byte-over"),
        pytest.param(100 * 1024, id="many-times-over"),
        pytest.param(100 + DRAIN_BYTES, id="at-the-bound"),
    ],
)
def test_a_refused_body_is_read_to_its_end_before_the_answer(length: int) -> None:
    # A browser still sending a body the server never read may drop the answer.
    h = _harness(max_body_bytes=100)
    body = io.BytesIO(b"v=" + b"x" * (length - 2))
    status, reply = _post_body(h, body, length)
    assert (status, reply["code"], reply["error"]) == (
        413,
        "too_large",
        "The event's body is larger than 100 bytes.",
    )
    assert body.tell() == length
    assert h.calls == []


def test_a_body_past_the_bound_is_refused_unread() -> None:
    h = _harness(max_body_bytes=100)
    body = io.BytesIO(b"x" * 1000)  # only the first bytes of what the header promises
    status, reply = _post_body(h, body, 100 + DRAIN_BYTES + 1)
    assert (status, reply["code"]) == (413, "too_large")
    assert body.tell() == 0


def test_a_refused_body_cut_short_is_still_answered() -> None:
    h = _harness(max_body_bytes=100)
    body = io.BytesIO(b"x" * 150)  # the client went away after 150 of its 1000 bytes
    status, reply = _post_body(h, body, 1000)
    assert (status, reply["code"]) == (413, "too_large")
    assert body.tell() == 150


def test_a_body_cut_short_runs_nothing() -> None:
    """The browser promised 5,000 bytes and sent 9: refused, the handler never runs (a
    server that marks its input terminated would otherwise pass the 9 as the body)."""
    h = _harness()
    body = io.BytesIO(b"v=PARTIAL")
    status, reply = _post_body(h, body, 5000, **{"wsgi.input_terminated": True})
    assert (status, reply["error"]) == (
        400,
        "The event's body ended before its Content-Length; nothing ran.",
    )
    assert h.calls == []


def test_a_chunked_body_is_refused() -> None:
    h = _harness(max_body_bytes=100)
    body = io.BytesIO(b"v=" + b"x" * 1000)  # as the server dechunked it: no length
    headers = {"Transfer-Encoding": "chunked"}
    status, reply = _post_body(h, body, None, headers, **{"wsgi.input_terminated": True})
    assert (status, reply["error"]) == (
        411,
        "An event's body needs a Content-Length; a chunked body is refused.",
    )
    assert h.calls == []


def test_any_refused_body_is_read_to_its_end() -> None:
    """A POST refused for its origin, before its body was looked at, is drained too."""
    h = _harness()
    body = io.BytesIO(b"v=" + b"x" * 5000)
    status, _ = _post_body(h, body, 5002, {"Origin": "http://elsewhere.example"})
    assert status == 403
    assert body.tell() == 5002


@pytest.mark.parametrize("origin", ["http://[", "http://[bad]", "http://a:b:c"])
def test_an_origin_that_is_no_url_is_refused_not_a_500(h: Harness, origin: str) -> None:
    response, reply = h.send(h.page().token, h="increment", headers={"Origin": origin})
    assert (response.status_code, reply["error"]) == (
        403,
        f"Events must come from the page's own origin, not {origin!r}.",
    )
    assert h.calls == []


def test_a_request_without_the_browser_cookie_is_told_why(h: Harness) -> None:
    page = h.page()
    h.http.delete_cookie("pb_browser")
    response, reply = h.send(page.token, h="increment")
    assert (response.status_code, reply["code"], reply["error"]) == (
        403,
        "bad_token",
        "This request carries no 'pb_browser' cookie, and a page token works only in the"
        " browser that rendered the page: were its cookies cleared or blocked? Reload the"
        " page.",
    )
    assert h.calls == []


def test_busy_page_is_refused() -> None:
    h = _harness(lease_wait=0.01)
    page = h.page()
    owner = h.store.lock(page.id, 60)
    assert owner is not None
    response, reply = h.send(page.token, h="increment")
    assert (response.status_code, reply) == (
        409,
        {
            "seq": 1,
            "code": "busy",
            "error": "Another request of this page is still running.",
        },
    )
    assert h.calls == []
    h.store.unlock(page.id, owner)
    response, reply = h.send(page.token, h="increment")
    assert (response.status_code, h.calls) == (200, [("increment", 1)])


def test_rejected_event_leaves_the_page_usable(h: Harness) -> None:
    page = h.page()
    with pytest.raises(Rejected) as info:
        h.client.fire(page, "incremnt")
    assert (info.value.code, info.value.status) == ("unknown_handler", 404)
    # The rejected sequence number is a gap; the page goes on.
    assert h.client.fire(page, "increment") == [["text", "count", "1"]]
    assert h.calls == [("increment", 2)]


# The event reaches its handler.


def test_handler_sees_the_event(h: Harness) -> None:
    page = h.page()
    response, _ = h.send(
        page.token,
        4,
        0,
        h="echo",
        e="change",
        t="name",
        v="Ann",
        g=json.dumps({"id": 3}),
    )
    assert response.status_code == 200
    [seen] = h.seen
    event = seen["event"]
    assert (
        event.name,
        event.handler,
        event.target,
        event.args,
        event.value,
        event.seq,
    ) == (
        "change",
        "echo",
        "name",
        {"id": 3},
        "Ann",
        4,
    )
    assert (type(event.request), event.host_request, seen["form"], seen["files"]) == (
        Request,
        None,
        {},
        {},
    )
    assert (type(seen["page"]), seen["page"].id) == (Page, page.id)


def test_environ_page_is_the_sending_page(h: Harness) -> None:
    h.send(h.page().token, h="echo")
    [seen] = h.seen
    assert seen["environ_page"] is seen["page"]


def test_post_form_fields_and_files(h: Harness) -> None:
    page = h.page()
    data = {"title": "a</b>", "tag": ["x", "y"], "doc": (io.BytesIO(b"hello"), "a.txt")}
    response, _ = h.send(page.token, h="echo", e="submit", method="POST", data=data)
    assert response.status_code == 200
    [seen] = h.seen
    assert seen["form"] == {"title": ["a</b>"], "tag": ["x", "y"]}
    assert {k: v[:2] for k, v in seen["files"].items()} == {"doc": ("a.txt", b"hello")}


def test_uploaded_files_are_closed_after_the_event(h: Harness) -> None:
    page = h.page()
    data = {"doc": (io.BytesIO(b"hello"), "a.txt")}
    h.send(page.token, h="echo", method="POST", data=data)
    stream = h.seen[0]["files"]["doc"][2]
    try:
        assert stream.closed
    finally:
        stream.close()


# Exactly once.


def test_retry_returns_the_same_document_and_runs_nothing(h: Harness, frozen: float) -> None:
    page = h.page()
    first, reply = h.send(page.token, 1, 0, h="increment")
    again, _ = h.send(page.token, 1, 0, h="increment")
    assert again.get_data() == first.get_data()
    assert again.headers.to_wsgi_list() == first.headers.to_wsgi_list()
    assert reply["batches"] == [{"seq": 1, "commands": [["text", "count", "1"]]}]
    assert h.calls == [("increment", 1)]
    assert h.state(page) == {"n": 1}


def test_retry_with_a_fresh_token_runs_nothing(h: Harness) -> None:
    page = h.page()
    _, first = h.send(page.token, 1, 0, h="increment")
    _, again = h.send(first["token"], 1, 0, h="increment")
    assert again["batches"] == first["batches"]
    assert h.calls == [("increment", 1)]


def test_retry_of_a_poll_change_is_the_same_document(h: Harness, frozen: float) -> None:
    page = h.page()
    first, reply = h.send(page.token, 1, 0, h="poll", g=json.dumps({"seconds": 5}))
    again, _ = h.send(page.token, 1, 0, h="poll", g=json.dumps({"seconds": 5}))
    assert reply["poll"] == 5
    assert again.get_data() == first.get_data()


def test_retry_of_a_failed_handler_runs_nothing(
    h: Harness, frozen: float, caplog: pytest.LogCaptureFixture
) -> None:
    page = h.page()
    first, reply = h.send(page.token, 1, 0, h="boom")
    again, _ = h.send(page.token, 1, 0, h="boom")
    assert again.get_data() == first.get_data()
    assert reply["batches"] == [{"seq": 1, "commands": [], "error": FAILED}]
    assert h.calls == [("boom", 1)]
    assert [r.message for r in caplog.records if r.levelno == logging.ERROR] == [
        f"The handler 'boom' failed (page {page.id})."
    ]


def test_acknowledged_batches_are_dropped(h: Harness) -> None:
    page = h.page()
    _, reply = h.send(page.token, 1, 0, h="increment")
    assert [b["seq"] for b in reply["batches"]] == [1]
    _, reply = h.send(page.token, 2, 0, h="increment")
    assert [b["seq"] for b in reply["batches"]] == [1, 2]
    _, reply = h.send(page.token, 3, 2, h="increment")
    assert reply["batches"] == [{"seq": 3, "commands": [["text", "count", "3"]]}]
    _, reply = h.send(page.token, 4, 3, h="increment")
    assert reply["batches"] == [{"seq": 4, "commands": [["text", "count", "4"]]}]
    record, _ = h.store.load(page.id)
    assert record is not None
    assert (record.seq, [b.seq for b in record.batches]) == (4, [4])


def test_a_poll_that_finds_nothing_is_answered_without_a_write(h: Harness) -> None:
    page = h.page()
    h.send(page.token, 1, 0, h="increment")
    _, reply = h.send(page.token, 2, 0)  # a quiet poll: batch 1 was not acknowledged
    assert reply["batches"] == [{"seq": 1, "commands": [["text", "count", "1"]]}]
    _, reply = h.send(page.token, 3, 1)
    assert reply["batches"] == []
    record, _ = h.store.load(page.id)
    assert record is not None
    assert (record.seq, [b.seq for b in record.batches]) == (1, [1])
    h.live.page(page.id).set_text("news", "hi")
    _, reply = h.send(page.token, 4, 1)  # something waits: an ordinary committed answer
    assert reply["batches"] == [{"seq": 4, "commands": [["text", "news", "hi"]]}]
    record, _ = h.store.load(page.id)
    assert record is not None and record.seq == 4


def test_a_poll_with_an_old_token_writes_so_the_page_stays_alive(h: Harness) -> None:
    page = h.page()
    old = h.sign(page.id, now=time.time() - h.live.signer.max_age / 5)
    response, reply = h.send(old, 1, 0)
    assert response.status_code == 200
    assert reply["batches"] == [{"seq": 1, "commands": []}]
    assert reply["token"] != old
    record, _ = h.store.load(page.id)
    assert record is not None and record.seq == 1


def test_unacknowledged_batches_are_bounded(h: Harness) -> None:
    page = h.page()
    for seq in range(1, 21):
        _, reply = h.send(page.token, seq, 0, h="increment")
    assert [b["seq"] for b in reply["batches"]] == list(range(5, 21))


def test_lost_answer_is_redelivered_first(h: Harness) -> None:
    page = h.page()
    assert h.client.fire(page, "increment") == [["text", "count", "1"]]
    page.applied = 0  # the answer to event 1 never reached the page
    assert h.client.fire(page, "increment") == [
        ["text", "count", "1"],
        ["text", "count", "2"],
    ]
    assert h.client.reply["batches"] == [
        {"seq": 1, "commands": [["text", "count", "1"]]},
        {"seq": 2, "commands": [["text", "count", "2"]]},
    ]
    assert h.calls == [("increment", 1), ("increment", 2)]


def test_lost_answer_raw(h: Harness) -> None:
    page = h.page()
    h.send(page.token, 1, 0, h="increment")
    _, reply = h.send(page.token, 2, 0, h="increment")
    assert reply["seq"] == 2
    assert reply["batches"] == [
        {"seq": 1, "commands": [["text", "count", "1"]]},
        {"seq": 2, "commands": [["text", "count", "2"]]},
    ]


def test_retry_after_a_newer_event_still_replays(h: Harness) -> None:
    page = h.page()
    h.send(page.token, 1, 0, h="increment")
    h.send(page.token, 2, 0, h="increment")
    response, reply = h.send(page.token, 1, 0, h="increment")
    assert (
        response.status_code,
        reply["seq"],
        [b["seq"] for b in reply["batches"]],
    ) == (
        200,
        1,
        [1, 2],
    )
    assert h.calls == [("increment", 1), ("increment", 2)]


# It says nothing about the page: not even its last sequence number.
STALE = "The event {} was answered already, and its answer is no longer kept."


@pytest.mark.parametrize(
    ("history", "late", "reason"),
    [
        pytest.param(
            [(1, 0), (2, 1)],
            (1, 0),
            STALE.format(1),
            id="acknowledged",
        ),
        pytest.param(
            [(1, 0), (2, 1), (3, 2)],
            (2, 1),
            STALE.format(2),
            id="acknowledged-later",
        ),
        pytest.param(
            [(1, 0), (3, 1)],
            (2, 1),
            STALE.format(2),
            id="gap-filled-late",
        ),
        pytest.param(
            [(5, 0)],
            (4, 0),
            STALE.format(4),
            id="lower-than-answered",
        ),
    ],
)
def test_stale_and_out_of_order_events_are_refused(
    h: Harness, history: list[tuple[int, int]], late: tuple[int, int], reason: str
) -> None:
    page = h.page()
    for s, a in history:
        assert h.send(page.token, s, a, h="increment")[0].status_code == 200
    state = h.state(page)
    response, reply = h.send(page.token, *late, h="increment")
    assert (response.status_code, reply) == (
        409,
        {"seq": late[0], "code": "stale", "error": reason},
    )
    assert h.calls == [("increment", s) for s, _ in history]
    assert h.state(page) == state


def test_gaps_are_allowed(h: Harness) -> None:
    page = h.page()
    h.send(page.token, 3, 0, h="increment")
    _, reply = h.send(page.token, 10, 3, h="increment")
    assert reply["batches"] == [{"seq": 10, "commands": [["text", "count", "2"]]}]
    assert h.calls == [("increment", 3), ("increment", 10)]


# A handler that raises.


def test_failing_handler(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    page, other = h.page(), h.page()
    h.client.fire(page, "increment")
    h.client.fire(page, "join", {"group": "room"})
    h.live.page(page.id).set_text("mail", "waiting")
    h.live.group("room").set_text("mail", "for the room")
    with caplog.at_level(logging.INFO, logger="piggyback"):
        response, reply = h.send(page.token, 3, 2, h="boom", g=json.dumps({"other": other.id}))
    page.seq = page.applied = 3
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert reply["batches"] == [
        {
            "seq": 3,
            "commands": [["text", "mail", "waiting"], ["text", "mail", "for the room"]],
            "error": FAILED,
        }
    ]
    assert h.state(page) == {"n": 1}
    # The traceback is in the log only.
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (record.name, record.levelname, record.getMessage()) == (
        "piggyback",
        "ERROR",
        f"The handler 'boom' failed (page {page.id}).",
    )
    assert record.exc_info is not None
    assert (record.exc_info[0], str(record.exc_info[1])) == (
        RuntimeError,
        "the secret detail",
    )
    assert "secret" not in body and "Traceback" not in body and "RuntimeError" not in body
    # Its sends, joins and commands were dropped with its state.
    assert h.client.poll(other) == []
    assert h.client.poll(page) == []
    h.live.group("boomers").set_text("x", "y")
    assert h.client.poll(page) == []
    assert h.calls == [("increment", 1), ("boom", 3)]


def test_client_reports_a_failing_handler(h: Harness) -> None:
    page = h.page()
    h.live.page(page.id).set_text("mail", "1")
    with pytest.raises(HandlerFailed) as info:
        h.client.fire(page, "boom")
    assert str(info.value) == FAILED
    # The out-of-band commands of that batch were applied, and are not sent again.
    assert page.applied == 1
    assert h.client.poll(page) == []


@pytest.mark.parametrize("nan", [False, True], ids=["object", "nan"])
def test_state_that_is_not_json_fails_the_handler(h: Harness, nan: bool) -> None:
    page = h.page()
    h.client.fire(page, "increment")
    with pytest.raises(HandlerFailed):
        h.client.fire(page, "bad_state", {"nan": nan})
    assert h.client.reply["batches"] == [{"seq": 2, "commands": [], "error": FAILED}]
    assert h.state(page) == {"n": 1}
    assert h.client.fire(page, "increment") == [["text", "count", "2"]]


# Out-of-band commands.


def test_page_handle_from_outside_a_request(h: Harness) -> None:
    page = h.page()
    h.live.page(page.id).set_text("note", "one")
    h.live.page(page.id).send_js("two()")
    assert h.client.poll(page) == [["text", "note", "one"], ["js", "two()"]]
    assert h.client.poll(page) == []


def test_page_handle_before_the_first_event(h: Harness) -> None:
    page = h.client.new_page()
    h.live.page(page.id).set_text("note", "early")
    assert h.client.fire(page, "increment") == [
        ["text", "note", "early"],
        ["text", "count", "1"],
    ]


def test_out_of_band_commands_come_before_the_handlers(h: Harness) -> None:
    page = h.page()
    h.live.page(page.id).set_text("note", "first")
    assert h.client.fire(page, "increment") == [
        ["text", "note", "first"],
        ["text", "count", "1"],
    ]


def test_page_handle_inside_another_pages_handler(h: Harness) -> None:
    sender, receiver = h.page(), h.page()
    assert h.client.fire(sender, "notify", {"to": receiver.id, "text": "hi"}) == []
    assert h.client.poll(receiver) == [["text", "note", "hi"]]
    assert h.client.poll(receiver) == []


def test_page_handle_inside_its_own_handler_arrives_next_time(h: Harness) -> None:
    page = h.page()
    assert h.client.fire(page, "notify", {"to": page.id, "text": "later"}) == []
    assert h.client.poll(page) == [["text", "note", "later"]]


def test_failing_handler_drops_its_sends(h: Harness) -> None:
    sender, receiver = h.page(), h.page()
    h.client.fire(receiver, "join", {"group": "room"})
    with pytest.raises(HandlerFailed):
        h.client.fire(sender, "boom", {"other": receiver.id})
    assert h.client.poll(receiver) == []


def test_group_members_get_only_later_sends(h: Harness) -> None:
    early, late, outsider = h.page(), h.page(), h.page()
    h.live.group("room").set_text("chat", "nobody")
    h.client.fire(early, "join", {"group": "room"})
    h.live.group("room").set_text("chat", "1")
    h.client.fire(late, "join", {"group": "room"})
    h.client.fire(outsider, "notify", {"group": "room", "text": "2"})
    assert h.client.poll(early) == [["text", "chat", "1"], ["text", "note", "2"]]
    assert h.client.poll(late) == [["text", "note", "2"]]
    assert h.client.poll(outsider) == []
    assert (h.client.poll(early), h.client.poll(late)) == ([], [])


def test_group_leave(h: Harness) -> None:
    page = h.page()
    h.client.fire(page, "join", {"group": "room"})
    h.live.group("room").set_text("chat", "1")
    h.client.fire(page, "leave", {"group": "room"})
    h.live.group("room").set_text("chat", "2")
    assert h.client.poll(page) == []
    assert h.client.reply["batches"] == []  # a quiet poll: nothing waited for the page


def test_order_across_page_and_group_sends(h: Harness) -> None:
    page, sender = h.page(), h.page()
    h.client.fire(page, "join", {"group": "room"})
    h.live.page(page.id).set_text("x", "p1")
    h.live.group("room").set_text("x", "g1")
    h.client.fire(sender, "notify", {"to": page.id, "text": "p2"})
    h.live.group("room").set_text("x", "g2")
    h.client.fire(sender, "notify", {"group": "room", "text": "g3"})
    h.live.page(page.id).set_text("x", "p3")
    assert h.client.fire(page, "increment") == [
        ["text", "x", "p1"],
        ["text", "x", "g1"],
        ["text", "note", "p2"],
        ["text", "x", "g2"],
        ["text", "note", "g3"],
        ["text", "x", "p3"],
        ["text", "count", "1"],
    ]


def test_many_pages_in_a_group(h: Harness) -> None:
    pages = [h.page() for _ in range(5)]
    for page in pages:
        h.client.fire(page, "join", {"group": "all"})
    h.live.group("all").call("app.refresh", 1)
    assert [h.client.poll(page) for page in pages] == [[["call", "app.refresh", [1]]]] * 5


# Polls, poll intervals, tokens, expiry.


def test_poll_runs_no_handler_and_delivers(h: Harness) -> None:
    page = h.page()
    assert h.client.poll(page) == []
    h.live.page(page.id).remove("spinner")
    assert h.client.poll(page) == [["remove", "spinner"]]
    assert h.client.reply == {
        "seq": 2,
        "batches": [{"seq": 2, "commands": [["remove", "spinner"]]}],
        "token": h.client.reply["token"],
    }
    assert h.calls == []


@pytest.mark.parametrize("seconds", [5, 0, 0.5])
def test_handler_sets_the_poll_interval(h: Harness, seconds: float) -> None:
    page = h.page()
    h.client.fire(page, "poll", {"seconds": seconds})
    assert h.client.reply["poll"] == seconds
    h.client.fire(page, "increment")
    assert "poll" not in h.client.reply


def test_reply_token_is_fresh(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    page = h.page()
    issued = time.time() - h.live.signer.max_age / 5  # older than a tenth of the TTL
    old = h.sign(page.id, now=issued)
    now = float(int(time.time()))
    monkeypatch.setattr(time, "time", lambda: now)
    _, reply = h.send(old, 1, 0, h="increment")
    assert reply["token"] == h.sign(page.id, now=now)
    assert h.verify(reply["token"]) == page.id
    _, reply = h.send(reply["token"], 2, 1)
    assert reply["token"] == h.sign(page.id, now=now)


def test_a_young_token_is_reused(h: Harness) -> None:
    page = h.page()
    young = h.sign(page.id, now=time.time() - h.live.signer.max_age / 20)
    _, reply = h.send(young, 1, 0, h="increment")
    assert reply["token"] == young


def test_client_follows_fresh_tokens(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    page = h.page()
    later = time.time() + h.live.signer.max_age / 5
    monkeypatch.setattr(time, "time", lambda: later)
    h.client.fire(page, "increment")
    assert page.token == h.sign(page.id, now=later)


def test_page_unknown_to_the_store(h: Harness) -> None:
    page = h.client.new_page()
    response, reply = h.send(page.token, 2, 1, h="increment")
    assert (response.status_code, reply) == (
        410,
        {
            "seq": 2,
            "code": "expired",
            "error": "The server no longer knows this page; reload it.",
        },
    )
    assert h.calls == []


def test_page_unknown_to_the_store_without_ack_starts_fresh(h: Harness) -> None:
    page = h.client.new_page()
    response, reply = h.send(page.token, 7, 0, h="increment")
    assert (response.status_code, reply["batches"]) == (
        200,
        [{"seq": 7, "commands": [["text", "count", "1"]]}],
    )


def test_expired_token_after_use(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    page = h.page()
    h.client.fire(page, "increment")
    later = time.time() + h.store.page_ttl + 10
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(Rejected) as info:
        h.client.fire(page, "increment")
    assert (info.value.code, info.value.status, info.value.reason) == (
        "expired",
        410,
        "The page expired; reload it to go on.",
    )
    assert h.calls == [("increment", 1)]


def test_pages_do_not_share_state(h: Harness) -> None:
    one, two = h.page(), h.page()
    h.client.fire(one, "increment")
    h.client.fire(one, "increment")
    assert h.client.fire(two, "increment") == [["text", "count", "1"]]
    assert (h.state(one), h.state(two)) == ({"n": 2}, {"n": 1})


# The endpoint alone: built from its collaborators, without a Piggyback.


def _bare_endpoint(**limits: int) -> tuple[HTTPClient, TokenSigner, list[str]]:
    """An endpoint with one handler, ``hello``, of a deploy named ``"new"``; the
    deploys it was asked for are recorded."""
    signer = TokenSigner(b"bare", max_age=3600)
    registry = Registry()
    registry.add("hello", lambda page, event: page.set_text("out", f"hello {event.value}"))
    asked: list[str] = []

    def deploy() -> str:
        asked.append("new")
        return "new"

    endpoint = EventEndpoint(
        signer=lambda: signer,
        registry=registry,
        answerer=Answerer(MemoryStore()),
        browsers=None,
        deploy=deploy,
        max_query_bytes=limits.get("max_query_bytes", 1024),
        max_body_bytes=limits.get("max_body_bytes", 1024),
    )
    return HTTPClient(endpoint), signer, asked


def _bare_send(http: HTTPClient, **params: t.Any) -> tuple[int, dict[str, t.Any]]:
    with http.get(f"/_pb/event?{urlencode(params)}") as response:
        return response.status_code, read_reply(response.get_data(as_text=True))


def test_an_endpoint_without_a_middleware_answers() -> None:
    http, signer, asked = _bare_endpoint()
    token = signer.sign(new_page_id())
    status, reply = _bare_send(http, p=token, s=1, h="hello", v="you")
    assert (status, reply["batches"]) == (
        200,
        [{"seq": 1, "commands": [["text", "out", "hello you"]]}],
    )
    assert asked == []  # only an unknown handler makes it ask


@pytest.mark.parametrize(
    ("deploy", "code"),
    [
        pytest.param("old", "expired", id="older-deploy"),
        pytest.param("new", "unknown_handler", id="same-deploy"),
    ],
)
def test_an_endpoint_asks_its_deploy_for_an_unknown_handler(deploy: str, code: str) -> None:
    http, signer, asked = _bare_endpoint()
    status, reply = _bare_send(http, p=signer.sign(new_page_id()), s=1, h="gone", d=deploy)
    assert (status, reply["code"], asked) == ({"old": 410, "new": 404}[deploy], code, ["new"])


def test_an_endpoint_keeps_the_limits_it_is_given() -> None:
    http, signer, _ = _bare_endpoint(max_query_bytes=100)
    status, reply = _bare_send(http, p=signer.sign(new_page_id()), s=1, h="hello", v="x" * 100)
    assert (status, reply["error"]) == (414, "The event's query string is longer than 100 bytes.")


def test_the_endpoint_does_not_import_the_middleware() -> None:
    # Not even for types: the endpoint is given its collaborators, and the two modules
    # never import each other.
    source = Path(endpoint_module.__file__).read_text()
    imported = {
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    assert "middleware" not in imported
    assert all("middleware" not in name for name in imported)


def test_a_refusal_quotes_at_most_80_characters_of_a_bad_name(h: Harness) -> None:
    name = "x" * 60_000
    data = {name: "1"}
    response, reply = h.send(h.page().token, h="echo", b=1, method="POST", data=data)
    assert (response.status_code, reply["error"]) == (
        400,
        f"The body of a b=1 event carries only v and g, not {'x' * 80!r}.",
    )
    assert len(response.data) < 2000
