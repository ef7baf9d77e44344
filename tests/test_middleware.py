from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import io
import re
import sys
import typing as t
from dataclasses import dataclass
from dataclasses import field

import pytest
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import EnvironBuilder
from werkzeug.wsgi import FileWrapper

from piggyback import Event
from piggyback import Page
from piggyback import Piggyback
from piggyback.exceptions import BadToken
from piggyback.stores.memory import MemoryStore
from piggyback.testing import Client
from piggyback.testing import Rejected
from piggyback.testing import TestPage

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment

SECRET = "middleware-tests"
SCRIPT = importlib.resources.files("piggyback").joinpath("js/piggyback.js").read_bytes()
VERSION = hashlib.sha256(SCRIPT).hexdigest()[:12]
# The deploy of an app with no handlers: the script's version and no names.
NO_HANDLERS = hashlib.sha256(b"").hexdigest()[:10]
DEPLOY = hashlib.sha256(f"{VERSION} {NO_HANDLERS}".encode()).hexdigest()[:10]
TOKEN = re.compile(rb'data-token="([^"]+)"')

PAGE = b"<!doctype html><html><body><p>hello</p></body></html>"


def _live(app: WSGIApplication, *, lint: bool = True, **options: t.Any) -> Piggyback:
    """The middleware around ``app``, which runs under the WSGI linter when ``lint``.

    Its tokens are not bound to a browser unless ``bind_browser=True``: these requests
    carry no cookies (the binding has its own tests, at the end).
    """
    options.setdefault("store", MemoryStore())
    options.setdefault("bind_browser", False)
    return Piggyback(LintMiddleware(app) if lint else app, secret_key=SECRET, **options)


@dataclass
class Served:
    status: str
    headers: list[tuple[str, str]]
    #: What went through ``write()``, then the body's chunks, as the server got them.
    written: list[bytes]
    chunks: list[bytes]
    body_object: t.Any = None
    log: list[t.Any] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.written + self.chunks)

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, values
        return values[0] if values else None


def _serve(
    app: WSGIApplication,
    path: str = "/",
    *,
    lint: bool = True,
    log: list[t.Any] | None = None,
    environ: dict[str, t.Any] | None = None,
    **builder: t.Any,
) -> Served:
    """Run one request the way a WSGI server does, under the linter when ``lint``."""
    env = EnvironBuilder(path=path, **builder).get_environ()
    env.update(environ or {})
    started: list[tuple[str, list[tuple[str, str]]]] = []
    written: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Callable[[bytes], object]:
        started.append((status, headers))
        return written.append

    body = (LintMiddleware(app) if lint else app)(env, start_response)
    chunks: list[bytes] = []
    try:
        for chunk in body:
            if log is not None:
                log.append(("sent", chunk))
            chunks.append(chunk)
    finally:
        if hasattr(body, "close"):
            body.close()
    assert len(started) == 1, started
    status, headers = started[0]
    return Served(status, list(headers), written, chunks, body, log or [])


def _open(live: Piggyback, path: str = "/") -> TestPage:
    """Render a page through ``live`` under the linter, as the test client's page."""
    return TestPage(token=_token_of(live, _serve(live, path).body))


def _tag(token: str, root: str = "", mount: str = "/_pb", nonce: str | None = None) -> bytes:
    attributes = (
        f'src="{root}{mount}/piggyback.js?v={VERSION}" data-token="{token}"'
        f' data-endpoint="{root}{mount}/event" data-deploy="{DEPLOY}"'
    )
    if nonce is not None:
        attributes += f' nonce="{nonce}"'
    return f"<script {attributes}></script>".encode()


def _token_of(live: Piggyback, body: bytes) -> str:
    tokens = TOKEN.findall(body)
    assert len(tokens) == 1, body
    token = tokens[0].decode()
    live.signer.verify(token)
    return token


class Body:
    """A response body that logs how it is iterated and closed."""

    def __init__(self, chunks: list[bytes], log: list[t.Any]) -> None:
        self.chunks = chunks
        self.log = log

    def __iter__(self) -> t.Iterator[bytes]:
        for chunk in self.chunks:
            self.log.append(("yield", chunk))
            yield chunk

    def close(self) -> None:
        self.log.append("close")


def _html_app(
    body: bytes = PAGE,
    *,
    content_type: str = "text/html; charset=utf-8",
    status: str = "200 OK",
    extra: list[tuple[str, str]] | None = None,
    length: bool = True,
) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        headers = [("Content-Type", content_type), *(extra or [])]
        if length:
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    return app


# Pass-through: bodies piggyback must not touch.


@pytest.mark.parametrize(
    "content_type",
    ["text/html; charset=utf-8", "text/plain", "application/json"],
)
def test_streaming_body_is_not_buffered(content_type: str) -> None:
    log: list[t.Any] = []
    chunks = [b"<html><body>", b"<p>1</p>", b"</body></html>"]

    # An HTML body of unknown length is read whole unless it says it streams.
    headers = [("Content-Type", content_type), ("X-Accel-Buffering", "no")]

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Body:
        start_response("200 OK", headers)
        return Body(chunks, log)

    served = _serve(_live(app), log=log)
    assert log == [
        ("yield", chunks[0]),
        ("sent", chunks[0]),
        ("yield", chunks[1]),
        ("sent", chunks[1]),
        ("yield", chunks[2]),
        ("sent", chunks[2]),
        "close",
    ]
    assert (served.status, served.headers, served.written) == ("200 OK", headers, [])


def test_generator_body_is_closed_once_when_abandoned() -> None:
    log: list[t.Any] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/html"), ("X-Accel-Buffering", "no")])
        return Body([b"<p>", b"</p>"], log)

    live = _live(app)
    env = EnvironBuilder(path="/").get_environ()
    body = live(env, lambda status, headers, exc_info=None: lambda data: None)
    assert next(iter(body)) == b"<p>"
    body.close()  # type: ignore[attr-defined]
    assert log == [("yield", b"<p>"), "close"]


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "no-length"])
def test_start_response_called_inside_the_generator(length: bool) -> None:
    log: list[t.Any] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterator[bytes]:
        try:
            log.append("start")
            headers = [("Content-Type", "text/html")]
            if length:
                headers.append(("Content-Length", str(len(PAGE))))
            start_response("200 OK", headers)
            log.append(("yield", PAGE))
            yield PAGE
        finally:
            log.append("close")

    served = _serve(_live(app), log=log)
    # The app had returned before it started its response: the body passes untouched.
    assert served.body == PAGE
    assert served.chunks == [PAGE]
    assert log == ["start", ("yield", PAGE), ("sent", PAGE), "close"]


def test_write_callable_html_is_edited() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        write = start_response(
            "200 OK",
            [("Content-Type", "text/html"), ("Content-Length", str(len(PAGE)))],
        )
        write(PAGE[:20])
        write(PAGE[20:30])
        return [PAGE[30:]]

    live = _live(app)
    served = _serve(live)
    token = _token_of(live, served.body)
    expected = PAGE.replace(b"</body>", _tag(token) + b"</body>")
    assert (served.written, served.chunks) == ([], [expected])
    assert served.header("Content-Length") == str(len(expected))


@pytest.mark.parametrize(
    "content_type", ["text/html", "text/plain"], ids=["html-stream", "non-html"]
)
def test_write_callable_passes_through(content_type: str) -> None:
    log: list[t.Any] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Body:
        write = start_response("200 OK", [("Content-Type", content_type)])
        write(b"<body>")
        write(b"a")
        return Body([b"b", b"</body>"], log)

    served = _serve(_live(app), log=log)
    assert (served.written, served.chunks) == ([b"<body>", b"a"], [b"b", b"</body>"])
    assert log[-1] == "close"
    assert log.count("close") == 1


@pytest.mark.parametrize("content_type", ["image/png", "text/html"])
def test_file_wrapper_passes_through_as_the_same_object(content_type: str) -> None:
    data = b"<html><body>file</body></html>"
    wrappers: list[t.Any] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> t.Any:
        start_response(
            "200 OK",
            [("Content-Type", content_type), ("Content-Length", str(len(data)))],
        )
        wrappers.append(environ["wsgi.file_wrapper"](io.BytesIO(data)))
        return wrappers[0]

    live = _live(app, lint=False)
    env = EnvironBuilder(path="/").get_environ()
    env["wsgi.file_wrapper"] = FileWrapper
    body = live(env, lambda status, headers, exc_info=None: lambda data: None)
    try:
        assert body is wrappers[0]
    finally:
        if hasattr(body, "close"):
            body.close()


def test_file_wrapper_body_arrives_whole() -> None:
    data = b"\x89PNG" + bytes(range(256)) * 100

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> t.Any:
        start_response(
            "200 OK",
            [("Content-Type", "image/png"), ("Content-Length", str(len(data)))],
        )
        return environ["wsgi.file_wrapper"](io.BytesIO(data), 1000)

    served = _serve(_live(app))
    assert served.body == data
    assert [len(c) for c in served.chunks] == [1000] * 25 + [len(data) - 25000]


@pytest.mark.parametrize("content_type", ["text/plain", "text/html"], ids=["to-text", "to-html"])
def test_error_response_replaces_a_held_back_one(content_type: str) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        try:
            raise ValueError("rendering failed")
        except ValueError:
            start_response(
                "500 Internal Server Error",
                [("Content-Type", content_type), ("Content-Length", "6")],
                sys.exc_info(),
            )
        return [b"failed"]

    served = _serve(_live(app))
    assert (served.status, served.headers, served.written, served.chunks) == (
        "500 Internal Server Error",
        [("Content-Type", content_type), ("Content-Length", "6")],
        [],
        [b"failed"],
    )


def test_head_is_untouched() -> None:
    served = _serve(_live(_html_app()), method="HEAD")
    assert (served.status, served.body) == ("200 OK", PAGE)
    assert served.headers == [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(PAGE))),
    ]


@pytest.mark.parametrize(
    ("content_type", "status", "extra"),
    [
        pytest.param("text/plain", "200 OK", [], id="text-plain"),
        pytest.param("application/json", "200 OK", [], id="json"),
        pytest.param("text/htmlx", "200 OK", [], id="not-quite-html"),
        pytest.param("text/html", "200 OK", [("Content-Encoding", "gzip")], id="gzip"),
        pytest.param("text/html", "200 OK", [("Content-Encoding", "br")], id="brotli"),
        pytest.param("text/html", "204 No Content", [], id="204"),
    ],
)
def test_responses_left_alone(content_type: str, status: str, extra: list[tuple[str, str]]) -> None:
    body = b"" if status.startswith("204") else PAGE
    headers = [
        ("Content-Type", content_type),
        *extra,
        ("Content-Length", str(len(body))),
    ]
    served = _serve(_live(_html_app(body, content_type=content_type, status=status, extra=extra)))
    assert (served.status, served.headers, served.body) == (status, headers, body)


def test_gzip_encoded_html_is_untouched() -> None:
    compressed = gzip.compress(PAGE, mtime=0)
    app = _html_app(compressed, extra=[("Content-Encoding", "gzip")])
    served = _serve(_live(app))
    assert served.body == compressed
    assert gzip.decompress(served.body) == PAGE
    assert served.header("Content-Length") == str(len(compressed))


@pytest.mark.parametrize(
    ("page", "before"),
    [
        pytest.param(PAGE, b"<p>hello</p>", id="simple"),
        pytest.param(
            b"<html><body><script>var s = '</body>';</script><!-- </body> --><p>x</p>"
            b"</body></html>",
            b"<p>x</p>",
            id="last-of-several",
        ),
        pytest.param(b"<HTML><BODY>x</BODY ></HTML>", b"x", id="upper-case"),
        pytest.param(b"<body>\xc3\xa9</body>\n", b"\xc3\xa9", id="utf-8"),
    ],
)
def test_tag_goes_before_the_last_body_end(page: bytes, before: bytes) -> None:
    live = _live(_html_app(page))
    served = _serve(live)
    token = _token_of(live, served.body)
    at = page.rindex(before) + len(before)
    assert served.body == page[:at] + _tag(token) + page[at:]
    assert served.header("Content-Length") == str(len(served.body))
    assert served.status == "200 OK"


def test_html_error_page_gets_the_tag_too() -> None:
    live = _live(_html_app(status="404 NOT FOUND"))
    served = _serve(live)
    assert served.status == "404 NOT FOUND"
    assert served.body == PAGE.replace(b"</body>", _tag(_token_of(live, served.body)) + b"</body>")


@pytest.mark.parametrize("lint", [False, True], ids=["list", "linted-iterable"])
def test_html_list_body_without_length(lint: bool) -> None:
    live = _live(_html_app(length=False), lint=lint)
    served = _serve(live, lint=False)
    # The linter's iterable is no list, of unknown length: it is read into memory.
    token = _token_of(live, served.body)
    assert served.body == PAGE.replace(b"</body>", _tag(token) + b"</body>")
    assert served.header("Content-Length") == str(len(served.body))


def test_html_without_body_end_is_unchanged() -> None:
    fragment = b"<p>a fragment</p>"
    served = _serve(_live(_html_app(fragment)))
    assert served.body == fragment
    assert served.header("Content-Length") == str(len(fragment))


def test_tag_is_not_injected_twice() -> None:
    live: Piggyback

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        body = f"<body><p>x</p>{live.script_tag(environ)}</body>".encode()
        start_response(
            "200 OK",
            [("Content-Type", "text/html"), ("Content-Length", str(len(body)))],
        )
        return [body]

    live = _live(app)
    served = _serve(live)
    token = _token_of(live, served.body)
    assert served.body == b"<body><p>x</p>" + _tag(token) + b"</body>"


def test_inject_false_and_script_tag() -> None:
    live: Piggyback
    seen: list[Page] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        page = environ["piggyback.page"]
        seen.append(page)
        page.poll(2.5)
        body = f"<body>{live.script_tag(environ, nonce='n1')}</body><p>after</p>".encode()
        start_response(
            "200 OK",
            [("Content-Type", "text/html"), ("Content-Length", str(len(body)))],
        )
        return [body]

    live = _live(app, inject=False)
    served = _serve(live)
    token = _token_of(live, served.body)
    assert token.split(".")[0] == seen[0].id
    tag = _tag(token)[:-10] + b' nonce="n1" data-poll="2.5"></script>'
    assert served.body == b"<body>" + tag + b"</body><p>after</p>"


def test_inject_false_leaves_html_alone() -> None:
    served = _serve(_live(_html_app(), inject=False))
    assert served.body == PAGE


@pytest.mark.parametrize(
    ("policies", "nonce"),
    [
        pytest.param([], None, id="no-policy"),
        pytest.param(["default-src 'self'"], None, id="no-nonce"),
        pytest.param(["script-src 'nonce-abc123' 'strict-dynamic'"], "abc123", id="script-src"),
        pytest.param(["default-src 'self'; script-src 'nonce-r4nd+/='"], "r4nd+/=", id="base64"),
        pytest.param(["img-src *; SCRIPT-SRC 'self' 'nonce-x_y-z'"], "x_y-z", id="upper-case"),
        pytest.param(["default-src 'nonce-dflt'"], "dflt", id="default-src"),
        pytest.param(["style-src 'nonce-style'; script-src 'self'"], None, id="style-only"),
        pytest.param(
            ["default-src 'nonce-dflt'; script-src 'nonce-scr'"],
            "scr",
            id="script-over-default",
        ),
        pytest.param(
            ["script-src 'nonce-scr'; script-src-elem 'nonce-elem'"],
            "elem",
            id="elem-over-script",
        ),
        pytest.param(
            ["default-src 'nonce-dflt'; script-src 'self'"],
            None,
            id="script-without-nonce",
        ),
        pytest.param(["frame-ancestors 'none'", "script-src 'nonce-second'"], "second", id="two"),
    ],
)
def test_csp_nonce_goes_on_the_tag(policies: list[str], nonce: str | None) -> None:
    extra = [("Content-Security-Policy", p) for p in policies]
    live = _live(_html_app(extra=extra))
    served = _serve(live)
    token = _token_of(live, served.body)
    assert served.body == PAGE.replace(b"</body>", _tag(token, nonce=nonce) + b"</body>")
    assert served.headers[: len(extra) + 1] == [
        ("Content-Type", "text/html; charset=utf-8"),
        *extra,
    ]


def test_nonce_that_is_not_base64_is_ignored() -> None:
    policy = "script-src 'nonce-a\"><script>x()</script>'"
    live = _live(_html_app(extra=[("Content-Security-Policy", policy)]))
    served = _serve(live)
    token = _token_of(live, served.body)
    assert served.body == PAGE.replace(b"</body>", _tag(token) + b"</body>")


def test_html_generator_with_length_is_edited_and_closed_once() -> None:
    log: list[t.Any] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Body:
        start_response(
            "200 OK",
            [("Content-Type", "text/html"), ("Content-Length", str(len(PAGE)))],
        )
        return Body([PAGE[:10], PAGE[10:]], log)

    live = _live(app)
    served = _serve(live, log=log)
    expected = PAGE.replace(b"</body>", _tag(_token_of(live, served.body)) + b"</body>")
    assert served.chunks == [expected]
    assert log == [
        ("yield", PAGE[:10]),
        ("yield", PAGE[10:]),
        "close",
        ("sent", expected),
    ]


@pytest.mark.parametrize(
    ("script_name", "mount", "root", "expected_mount"),
    [
        pytest.param("", "/_pb", "", "/_pb", id="root"),
        pytest.param("/app", "/_pb", "/app", "/_pb", id="script-name"),
        pytest.param("/app/", "/_pb", "/app", "/_pb", id="script-name-slash"),
        pytest.param("/a/b", "live/", "/a/b", "/live", id="custom-mount"),
    ],
)
def test_tag_urls(script_name: str, mount: str, root: str, expected_mount: str) -> None:
    live = _live(_html_app(), mount=mount)
    served = _serve(live, environ={"SCRIPT_NAME": script_name})
    token = _token_of(live, served.body)
    expected_tag = _tag(token, root=root, mount=expected_mount)
    assert served.body == PAGE.replace(b"</body>", expected_tag + b"</body>")


def test_environ_page_while_rendering() -> None:
    seen: list[t.Any] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        seen.append(environ["piggyback.page"])
        return _html_app()(environ, start_response)

    live = _live(app)
    served = _serve(live)
    _serve(live)
    assert [type(page) for page in seen] == [Page, Page]
    assert seen[0].id != seen[1].id
    assert _token_of(live, served.body).split(".")[0] == seen[0].id


def _rendering_app(body: bytes = PAGE) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        page: Page = environ["piggyback.page"]
        page.state["user"] = "ann"
        page.set_text("status", "rendered")
        page.join("room")
        return _html_app(body)(environ, start_response)

    return app


def _show(page: Page, event: Event) -> None:
    page.set_text("user", page.state["user"])


@pytest.mark.parametrize("inject", [True, False], ids=["injected", "not-injected"])
def test_rendering_is_kept_for_the_first_event(inject: bool) -> None:
    live: Piggyback

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        tag = b"" if inject else str(live.script_tag(environ)).encode()
        return _rendering_app(PAGE.replace(b"</body>", tag + b"</body>"))(environ, start_response)

    live = _live(app, inject=inject)
    live.handler("show")(_show)
    client = Client(live)
    page = _open(live)
    live.group("room").set_text("chat", "hi")
    assert client.fire(page, "show") == [
        ["text", "status", "rendered"],
        ["text", "chat", "hi"],
        ["text", "user", "ann"],
    ]


def test_rendering_of_a_streamed_page_is_kept_when_it_closes() -> None:
    live: Piggyback

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        yield b"<body>"
        page: Page = environ["piggyback.page"]
        page.state["user"] = "bob"
        page.set_text("status", "streamed")
        yield str(live.script_tag(environ)).encode()
        yield b"</body>"

    live = _live(app)
    live.handler("show")(_show)
    page = _open(live)
    assert Client(live).fire(page, "show") == [
        ["text", "status", "streamed"],
        ["text", "user", "bob"],
    ]


def test_client_open_closes_the_response() -> None:
    log: list[t.Any] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/html")])
        tag = str(live.script_tag(environ)).encode()
        return Body([b"<body>", tag, b"</body>"], log)

    live = _live(app)
    Client(live).open("/")
    assert log[-1] == "close"


def test_group_joined_while_rendering_gets_only_later_sends() -> None:
    live = _live(_rendering_app())
    live.handler("show")(_show)
    client = Client(live, app=LintMiddleware(live))
    live.group("room").set_text("chat", "before")
    page = client.open("/")
    live.group("room").set_text("chat", "after")
    assert client.fire(page, "show") == [
        ["text", "status", "rendered"],
        ["text", "chat", "after"],
        ["text", "user", "ann"],
    ]


def test_rendering_without_changes_stores_nothing() -> None:
    store = MemoryStore()
    live = _live(_html_app(), store=store)
    served = _serve(live)
    page_id = _token_of(live, served.body).split(".")[0]
    record, mail = store.load(page_id)
    assert (record, mail.inbox, mail.groups) == (None, [], {})


# Requests for the app: never read, never changed.


@pytest.mark.parametrize(
    "path", ["/_pbx", "/_pb.js", "/_pbevent", "/x/_pb/event", "/_PB/event", "/"]
)
def test_paths_outside_the_mount_reach_the_app(path: str) -> None:
    seen: list[tuple[str, bytes]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        length = int(environ["CONTENT_LENGTH"])
        seen.append((environ["PATH_INFO"], environ["wsgi.input"].read(length)))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    served = _serve(_live(app), path, method="POST", data=b"p=1&s=2")
    assert (served.status, served.body) == ("200 OK", b"ok")
    assert seen == [(path, b"p=1&s=2")]


# The mount: the client script and nothing else.


def test_script_versioned() -> None:
    served = _serve(_live(_html_app()), "/_pb/piggyback.js", query_string=f"v={VERSION}")
    assert (served.status, served.body) == ("200 OK", SCRIPT)
    assert served.headers == [
        ("ETag", f'"{VERSION}"'),
        ("Cache-Control", "public, max-age=31536000, immutable"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Type", "text/javascript; charset=utf-8"),
        ("Content-Length", str(len(SCRIPT))),
    ]


@pytest.mark.parametrize(
    "query",
    ["", "v=0123456789ab", f"v={VERSION}x", f"v={VERSION}&x=1", f"x=1&v={VERSION}"],
    ids=["none", "other-version", "longer", "extra-after", "extra-before"],
)
def test_script_unversioned_is_revalidated(query: str) -> None:
    served = _serve(_live(_html_app()), "/_pb/piggyback.js", query_string=query)
    assert (served.status, served.body) == ("200 OK", SCRIPT)
    assert served.header("Cache-Control") == "no-cache"
    assert served.header("ETag") == f'"{VERSION}"'


@pytest.mark.parametrize(
    "if_none_match",
    [f'"{VERSION}"', f'"other", "{VERSION}"', f'W/"{VERSION}"'],
    ids=["exact", "in-list", "weak"],
)
def test_script_not_modified(if_none_match: str) -> None:
    served = _serve(
        _live(_html_app()),
        "/_pb/piggyback.js",
        query_string=f"v={VERSION}",
        headers={"If-None-Match": if_none_match},
    )
    assert (served.status, served.body) == ("304 Not Modified", b"")
    assert served.headers == [
        ("ETag", f'"{VERSION}"'),
        ("Cache-Control", "public, max-age=31536000, immutable"),
        ("X-Content-Type-Options", "nosniff"),
    ]


def test_script_modified() -> None:
    served = _serve(
        _live(_html_app()),
        "/_pb/piggyback.js",
        headers={"If-None-Match": '"0123456789ab"'},
    )
    assert (served.status, served.body) == ("200 OK", SCRIPT)


def test_script_head() -> None:
    # A HEAD answer keeps the GET's Content-Length, so the linter would object here.
    served = _serve(_live(_html_app()), "/_pb/piggyback.js", method="HEAD", lint=False)
    assert (served.status, served.body) == ("200 OK", b"")
    assert served.header("Content-Length") == str(len(SCRIPT))


def test_script_under_a_custom_mount() -> None:
    live = _live(_html_app(b"app", content_type="text/plain"), mount="/live/")
    assert _serve(live, "/live/piggyback.js").body == SCRIPT
    assert _serve(live, "/_pb/piggyback.js").body == b"app"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        pytest.param("/_pb", "", id="mount-itself"),
        pytest.param("/_pb/", "", id="mount-slash"),
        pytest.param("/_pb/nope", "nope", id="unknown"),
        pytest.param("/_pb/piggyback.js/x", "piggyback.js/x", id="below-script"),
        pytest.param("/_pb/event/", "event/", id="event-slash"),
        pytest.param("/_pb/Event", "Event", id="case"),
        pytest.param("/_pb/%3Cb%3E", "<b>", id="markup-in-name"),
    ],
)
def test_unknown_paths_under_the_mount(path: str, name: str) -> None:
    calls: list[str] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        return _html_app()(environ, start_response)

    served = _serve(_live(app), path)
    text = f"piggyback has nothing at {name!r}.".encode()
    assert (served.status, served.body, calls) == ("404 Not Found", text, [])
    assert served.headers == [  # a browser must not sniff the echoed path as HTML
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(text))),
        ("X-Content-Type-Options", "nosniff"),
    ]


def test_an_edited_page_is_never_cached() -> None:
    # The body carries a page token: a cache must not hand it to another tab.
    cacheable = [
        ("Cache-Control", "public, max-age=3600"),
        ("ETag", '"v1"'),
        ("Last-Modified", "Tue, 24 Nov 2026 00:00:00 GMT"),
        ("Expires", "Tue, 24 Nov 2026 01:00:00 GMT"),
        ("X-Kept", "yes"),
    ]
    served = _serve(_live(_html_app(extra=cacheable)))
    names = [name for name, _ in served.headers]
    assert served.header("Cache-Control") == "no-store"
    assert (served.header("ETag"), served.header("Last-Modified"), served.header("Expires")) == (
        None,
        None,
        None,
    )
    assert served.header("X-Kept") == "yes"
    assert names.count("Content-Length") == 1


def test_transport_iframe_is_put_on_the_tag() -> None:
    served = _serve(_live(_html_app(), transport="iframe"))
    (tag,) = re.findall(rb"<script [^>]*></script>", served.chunks[0])
    assert tag.endswith(b' data-transport="iframe"></script>')


def test_the_default_transport_leaves_the_tag_alone() -> None:
    served = _serve(_live(_html_app()))
    assert b"data-transport" not in served.chunks[0]


# Bodies of unknown length: read into memory to get the tag, unless they stream.


def test_generator_html_page_gets_the_tag() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        return iter([PAGE[:20], PAGE[20:]])

    live = _live(app)
    served = _serve(live)
    assert served.body == PAGE.replace(b"</body>", _tag(_token_of(live, served.body)) + b"</body>")
    assert served.header("Content-Length") == str(len(served.body))


def test_too_large_generator_passes_whole_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from piggyback import inject

    monkeypatch.setattr(inject, "MAX_EDITED_BODY", 10)
    log: list[t.Any] = []
    chunks = [b"<html><body>", b"<p>1</p>", b"</body></html>"]

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/html")])
        return Body(chunks, log)

    caplog.set_level("DEBUG", logger="piggyback")
    served = _serve(_live(app), log=log)
    assert served.body == b"".join(chunks)
    assert log.count("close") == 1
    assert [r.getMessage() for r in caplog.records if r.name == "piggyback"] == [
        "No client tag in the page at '/': it is larger than 10 bytes."
    ]


@pytest.mark.parametrize(
    ("page", "extra", "why"),
    [
        pytest.param(b"<p>a fragment</p>", [], "it has no </body>", id="fragment"),
        pytest.param(
            b"<body><script src='/_pb/piggyback.js'></script></body>",
            [],
            "it has the tag already",
            id="has-tag",
        ),
        pytest.param(
            PAGE, [("X-Accel-Buffering", "no")], "it says X-Accel-Buffering: no", id="says"
        ),
    ],
)
def test_a_page_without_a_tag_says_why(
    page: bytes, extra: list[tuple[str, str]], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/html"), *extra])
        return iter([page])

    caplog.set_level("DEBUG", logger="piggyback")
    assert _serve(_live(app)).body == page
    assert [r.getMessage() for r in caplog.records if r.name == "piggyback"] == [
        f"No client tag in the page at '/': {why}."
    ]


def test_page_text_naming_the_client_does_not_keep_the_tag_out() -> None:
    page = (
        b"<!doctype html><html><body><p>Load /_pb/piggyback.js yourself?</p>"
        b"<textarea><script src='/_pb/piggyback.js'></script></textarea>"
        b"</body><script>if (a </body> b) {}</script></html>"
    )
    live = _live(_html_app(page))
    served = _serve(live)
    tag = _tag(_token_of(live, served.body))
    assert served.body == page.replace(b"</textarea></body>", b"</textarea>" + tag + b"</body>")


# The client's options from Python, in seconds: the tag carries them as the client reads.


@pytest.mark.parametrize(
    ("options", "attributes"),
    [
        pytest.param({}, b"", id="none"),
        pytest.param({"timeout": 2.5}, b' data-timeout="2500"', id="timeout-in-ms"),
        pytest.param({"timeout": 30}, b' data-timeout="30000"', id="timeout-int"),
        pytest.param({"poll": 5}, b' data-poll="5"', id="poll"),
        pytest.param(
            {"poll": 0.5, "timeout": 600}, b' data-poll="0.5" data-timeout="600000"', id="both"
        ),
    ],
)
def test_timeout_and_poll_reach_the_tag(options: dict[str, t.Any], attributes: bytes) -> None:
    live = _live(_html_app(), **options)
    body = _serve(live).body
    tag = _tag(_token_of(live, body))
    assert body == PAGE.replace(
        b"</body>", tag.replace(b"></script>", attributes + b"></script>") + b"</body>"
    )


def test_page_poll_while_rendering_overrides_the_option() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        environ["piggyback.page"].poll(0)  # this page does not poll
        start_response("200 OK", [("Content-Type", "text/html")])
        return [PAGE]

    body = _serve(_live(app, poll=5)).body
    assert b"data-poll" not in body


# Tokens bound to the browser that rendered the page (piggyback/browsers.py)

BROWSER_COOKIE = re.compile(
    r"pb_browser=([A-Za-z0-9_-]{22}); Path=/; Max-Age=34560000; HttpOnly; SameSite=Lax\Z"
)


def test_a_page_gives_a_new_browser_its_id_and_binds_its_token_to_it() -> None:
    live = _live(_html_app(), bind_browser=True)
    served = _serve(live)
    cookies = [v for n, v in served.headers if n == "Set-Cookie"]
    assert len(cookies) == 1, served.headers
    match = BROWSER_COOKIE.match(cookies[0])
    assert match is not None, cookies[0]
    browser = match.group(1)
    token = TOKEN.findall(served.body)[0].decode()
    assert live.signer.verify(token, browser=browser) == token.split(".")[0]
    with pytest.raises(BadToken, match="not valid in this browser"):
        live.signer.verify(token, browser="B" * 22)
    with pytest.raises(BadToken, match="signature is not valid"):
        live.signer.verify(token)  # a request without the cookie


def test_a_browser_keeps_its_id_across_pages() -> None:
    live = _live(_html_app(), bind_browser=True)
    browser = "C" * 22
    served = _serve(live, headers={"Cookie": f"theme=dark; pb_browser={browser}"})
    assert served.header("Set-Cookie") is None
    token = TOKEN.findall(served.body)[0].decode()
    assert live.signer.verify(token, browser=browser) == token.split(".")[0]


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param("pb_browser=short", id="malformed"),
        pytest.param("pb_browser=" + "D" * 23, id="too-long"),
        pytest.param("xpb_browser=" + "D" * 22, id="other-name"),
    ],
)
def test_a_bad_browser_cookie_is_replaced(cookie: str) -> None:
    served = _serve(_live(_html_app(), bind_browser=True), headers={"Cookie": cookie})
    assert BROWSER_COOKIE.match(served.header("Set-Cookie") or "")


def test_over_https_the_browser_cookie_is_secure_and_host_only() -> None:
    live = _live(_html_app(), bind_browser=True)
    served = _serve(live, base_url="https://example.test/")
    cookie = served.header("Set-Cookie") or ""
    assert re.match(r"__Host-pb_browser=[A-Za-z0-9_-]{22}; Path=/; .*; Secure\Z", cookie)
    browser = cookie.split(";")[0].split("=")[1]
    again = _serve(
        live, base_url="https://example.test/", headers={"Cookie": f"__Host-pb_browser={browser}"}
    )
    assert again.header("Set-Cookie") is None


def test_responses_without_a_page_token_set_no_cookie() -> None:
    plain = _html_app(b"plain", content_type="text/plain")
    assert _serve(_live(plain, bind_browser=True)).header("Set-Cookie") is None
    served = _serve(_live(_html_app(), bind_browser=True), "/_pb/piggyback.js")
    assert served.header("Set-Cookie") is None


def test_unbound_tokens_set_no_cookie() -> None:
    live = _live(_html_app(), bind_browser=False)
    served = _serve(live)
    assert served.header("Set-Cookie") is None
    token = TOKEN.findall(served.body)[0].decode()
    assert live.signer.verify(token) == token.split(".")[0]


def test_the_test_client_carries_the_browser_cookie_like_a_browser() -> None:
    live = _live(_html_app(), bind_browser=True)
    live.handler("hello")(lambda page, event: page.set_text("x", "hi"))
    client = Client(live)
    page = client.open("/")
    assert client.fire(page, "hello") == [["text", "x", "hi"]]
    assert client.fire(client.new_page(), "hello") == [["text", "x", "hi"]]
    other = Client(live)  # another browser, with its own cookie
    other.open("/")
    with pytest.raises(Rejected) as info:
        other.fire(page, "hello")
    assert (info.value.code, info.value.status) == ("bad_token", 403)
