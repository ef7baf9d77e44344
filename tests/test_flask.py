"""The Flask extension: handlers in the app's request context, sessions both ways."""

from __future__ import annotations

import gc
import re
import threading
import typing as t
import weakref
from urllib.parse import urlencode

import flask
import pytest
from flask import Flask
from werkzeug.serving import make_server

from examples import flask_app
from piggyback import Event
from piggyback import Page
from piggyback import Piggyback
from piggyback.flask import FlaskPiggyback
from piggyback.stores import MemoryStore
from piggyback.testing import Client
from piggyback.testing import HandlerFailed
from piggyback.testing import read_reply

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment

PAGE = "<!doctype html><html><body><p id='count'>{}</p></body></html>"


class Recorder:
    """Passes requests to an app and keeps the headers of its last response."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.headers: list[tuple[str, str]] = []

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        def record(status: str, headers: list[tuple[str, str]], *args: t.Any) -> t.Any:
            self.headers = headers
            return start_response(status, headers, *args)

        return self.app(environ, record)

    def cookies(self) -> list[str]:
        return [value for name, value in self.headers if name == "Set-Cookie"]


def make_app() -> tuple[Flask, FlaskPiggyback]:
    """An app whose page shows the session's count; a fresh extension serves it."""
    app = Flask(__name__)
    app.secret_key = "test secret"
    live = FlaskPiggyback(app, store=MemoryStore(), secret_key="tokens")

    @app.route("/")
    def index() -> str:
        return PAGE.format(flask.session.get("count", 0))

    return app, live


def client_for(app: Flask, live: FlaskPiggyback) -> tuple[Client, Recorder]:
    recorder = Recorder(app)
    return Client(live.middleware(app), app=recorder), recorder


def shown_count(client: Client) -> str:
    """The count the page at ``/`` shows, rendered by a normal request."""
    match = re.search(r"<p id='count'>([^<]*)</p>", client.http.get("/").text)
    assert match is not None
    return match.group(1)


def session_of(app: Flask, cookie: str) -> dict[str, t.Any]:
    """The session a ``Set-Cookie`` header value carries."""
    value = cookie.split(";")[0].removeprefix("session=")
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    data: dict[str, t.Any] = serializer.loads(value)
    return data


def test_session_write_reaches_the_next_request() -> None:
    app, live = make_app()

    @live.handler
    def increment(page: Page, event: Event) -> None:
        flask.session["count"] = flask.session.get("count", 0) + 1
        page.set_text("count", flask.session["count"])

    client, recorder = client_for(app, live)
    page = client.open("/")
    assert client.fire(page, "increment") == [["text", "count", "1"]]
    assert [session_of(app, c) for c in recorder.cookies()] == [{"count": 1}]
    assert client.fire(page, "increment") == [["text", "count", "2"]]
    assert shown_count(client) == "2"


def test_session_set_by_a_view_reaches_the_handler() -> None:
    app, live = make_app()
    seen = []

    @app.route("/login")
    def login() -> str:
        flask.session["user"] = "ada"
        return "ok"

    @live.handler
    def whoami(page: Page, event: Event) -> None:
        seen.append(flask.session.get("user"))

    client, recorder = client_for(app, live)
    page = client.open("/")
    client.http.get("/login")
    assert client.fire(page, "whoami") == []
    assert seen == ["ada"]
    assert recorder.cookies() == []  # read, not written: no new cookie


def test_handler_runs_in_the_request_context() -> None:
    app, live = make_app()
    app.config["GREETING"] = "hello"
    seen: dict[str, t.Any] = {}

    @app.route("/items/<int:n>")
    def item(n: int) -> str:
        return str(n)

    @app.teardown_request
    def teardown(error: BaseException | None) -> None:
        seen["teardown"] = flask.g.get("mark")

    @live.handler
    def look(page: Page, event: Event) -> None:
        flask.g.mark = "set in the handler"
        seen["app"] = flask.current_app.name
        seen["config"] = flask.current_app.config["GREETING"]
        seen["url"] = flask.url_for("item", n=3)
        seen["host_request"] = event.host_request
        seen["request"] = flask.request._get_current_object()  # type: ignore[attr-defined]
        seen["environ_page"] = flask.request.environ["piggyback.page"] is page

    client, _ = client_for(app, live)
    client.fire(client.open("/"), "look")
    assert type(seen.pop("host_request")) is flask.Request
    assert seen.pop("request").path == "/_pb/event"
    assert seen == {
        "app": "tests.test_flask",
        "config": "hello",
        "url": "/items/3",
        "environ_page": True,
        "teardown": "set in the handler",
    }


def test_host_request_is_the_request_of_the_context() -> None:
    app, live = make_app()
    same = []

    @live.handler
    def look(page: Page, event: Event) -> None:
        same.append(event.host_request is flask.request._get_current_object())  # type: ignore[attr-defined]

    client, _ = client_for(app, live)
    client.fire(client.open("/"), "look")
    assert same == [True]


def test_failed_handler_saves_no_session() -> None:
    app, live = make_app()

    @live.handler
    def increment(page: Page, event: Event) -> None:
        flask.session["count"] = 1

    @live.handler
    def boom(page: Page, event: Event) -> None:
        flask.session["count"] = 99
        raise RuntimeError("boom")

    client, recorder = client_for(app, live)
    page = client.open("/")
    client.fire(page, "increment")
    with pytest.raises(HandlerFailed):
        client.fire(page, "boom")
    assert recorder.cookies() == []
    assert shown_count(client) == "1"


def test_app_without_secret_key() -> None:
    app = Flask("keyless")
    live = FlaskPiggyback(app, store=MemoryStore())

    @live.handler
    def reads(page: Page, event: Event) -> None:
        page.set_text("out", repr(flask.session.get("count")))

    @live.handler
    def writes(page: Page, event: Event) -> None:
        flask.session["count"] = 1

    client = Client(live.middleware(app), app=app)
    page = client.new_page()
    assert client.fire(page, "reads") == [["text", "out", "None"]]
    with pytest.raises(HandlerFailed):
        client.fire(page, "writes")


def test_form_comes_from_the_event() -> None:
    app, live = make_app()
    seen = []

    @live.handler
    def save(page: Page, event: Event) -> None:
        seen.append((event.form.to_dict(), flask.request.form is event.form))

    client, _ = client_for(app, live)
    page = client.open("/")
    query = urlencode({"p": page.token, "s": 1, "h": "save", "e": "submit"})
    response = client.http.post(f"/_pb/event?{query}", data={"name": "Ada"})
    assert "error" not in read_reply(response.get_data(as_text=True))["batches"][0]
    assert seen == [({"name": "Ada"}, True)]


def test_app_responses_keep_their_cookies_and_headers() -> None:
    app, live = make_app()

    @app.route("/hello")
    def hello() -> flask.Response:
        response = flask.make_response("<html><body>hi</body></html>")
        response.set_cookie("theme", "dark")
        response.headers["X-Example"] = "kept"
        return response

    client, _ = client_for(app, live)
    response = client.http.get("/hello")
    theme, browser = response.headers.getlist("Set-Cookie")  # the page token's browser id
    assert theme == "theme=dark; Path=/"
    assert browser.startswith("pb_browser=")
    assert response.headers["X-Example"] == "kept"
    body = response.get_data(as_text=True)
    assert body.startswith('<html><body>hi<script src="/_pb/piggyback.js?v=')
    assert body.endswith("</script></body></html>")


def test_handler_registered_before_init_app() -> None:
    live = FlaskPiggyback(store=MemoryStore())

    @live.handler("named")
    def handler(page: Page, event: Event) -> None:
        page.set_text("out", flask.current_app.name)

    app = Flask("early")
    live.init_app(app)
    client = Client(live.middleware(app), app=app)
    assert client.fire(client.new_page(), "named") == [["text", "out", "early"]]


def test_one_extension_serves_two_apps() -> None:
    live = FlaskPiggyback(store=MemoryStore())

    @live.handler
    def name(page: Page, event: Event) -> None:
        page.set_text("out", flask.current_app.name)

    first, second = Flask("first"), Flask("second")
    second.config["PIGGYBACK_MOUNT"] = "/live"
    live.init_app(first)
    live.init_app(second)
    assert first.extensions["piggyback"] is second.extensions["piggyback"] is live
    assert live.middleware(first) is not live.middleware(second)
    assert live.middleware(second).mount == "/live"
    for app in (first, second):
        client = Client(live.middleware(app), app=app)
        assert client.fire(client.new_page(), "name") == [["text", "out", app.name]]


def test_extension_keeps_no_app_alive() -> None:
    live = FlaskPiggyback(store=MemoryStore())
    app = Flask("short-lived")
    live.init_app(app)
    gone = weakref.ref(app)
    del app
    gc.collect()
    assert gone() is None


def test_init_app_twice_raises() -> None:
    app, _ = make_app()
    with pytest.raises(RuntimeError) as error:
        FlaskPiggyback(app)
    assert str(error.value) == (
        "The app 'tests.test_flask' is already initialized for piggyback;"
        " use its app.extensions['piggyback'] instead of another extension."
    )


def test_runner_option_is_refused() -> None:
    with pytest.raises(TypeError) as error:
        FlaskPiggyback(runner=print)
    assert str(error.value) == (
        "FlaskPiggyback runs handlers in Flask's request context itself; it takes no"
        " 'runner' option."
    )


def test_config_overrides_options() -> None:
    live = FlaskPiggyback(mount="/from-options", store=MemoryStore())
    app = Flask("configured")
    app.config.update(PIGGYBACK_STORE="memory:", PIGGYBACK_MOUNT="/from-config")
    live.init_app(app)
    middleware = live.middleware(app)
    assert isinstance(middleware, Piggyback)
    assert app.wsgi_app is middleware
    assert middleware.mount == "/from-config"
    assert type(middleware.store) is MemoryStore
    assert middleware.store is not live.options["store"]


def test_page_and_group_handles_use_the_current_app() -> None:
    app, live = make_app()

    @live.handler
    def join(page: Page, event: Event) -> None:
        page.join("room")

    client, _ = client_for(app, live)
    page = client.open("/")
    client.fire(page, "join")
    with app.app_context():
        live.page(page.id).set_text("count", "to the page")
        live.group("room").set_text("count", "to the room")
    assert client.poll(page) == [
        ["text", "count", "to the page"],
        ["text", "count", "to the room"],
    ]


def test_handles_need_an_app() -> None:
    _, live = make_app()
    with pytest.raises(RuntimeError) as error:
        live.page("some-page")
    assert str(error.value).startswith("Working outside of application context.")
    with pytest.raises(RuntimeError) as error, Flask("other").app_context():
        live.group("room")
    assert str(error.value) == (
        "This FlaskPiggyback is not initialized for the app 'other'; call init_app(app) first."
    )


def test_example_counter_and_greeting() -> None:
    app = flask_app.create_app({"PIGGYBACK_STORE": MemoryStore()})
    recorder = Recorder(app)
    client = Client(flask_app.live.middleware(app), app=recorder)
    page = client.open("/")
    assert client.fire(page, "increment") == [["text", "count", "1"]]
    assert client.fire(page, "increment") == [["text", "count", "2"]]
    assert [session_of(app, c) for c in recorder.cookies()] == [{"count": 2}]
    html = client.http.get("/").text
    assert '<strong id="count">2</strong>' in html
    assert '<h1 id="greeting">Hello, stranger!</h1>' in html
    assert client.fire(page, "reset") == [["text", "count", "0"]]
    assert client.fire(page, "rename", value=" <Ada> ") == [
        ["text", "greeting", "Hello, <Ada>!"],
        ["value", "name", "<Ada>"],
    ]
    html = client.http.get("/").text
    assert '<strong id="count">0</strong>' in html
    assert '<h1 id="greeting">Hello, &lt;Ada&gt;!</h1>' in html
    assert 'value="&lt;Ada&gt;"' in html


# The example in headless Chromium, served in a thread by werkzeug's server.


@pytest.fixture
def example_url() -> t.Iterator[str]:
    app = flask_app.create_app({"PIGGYBACK_STORE": MemoryStore()})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_browser_session_counter_survives_a_reload(browser: t.Any, example_url: str) -> None:
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(example_url)
        tab.click("#increment")
        tab.wait_for_function("document.getElementById('count').textContent === '1'")
        tab.click("#increment")
        tab.wait_for_function("document.getElementById('count').textContent === '2'")
        tab.fill("#name", "Ada")
        tab.press("#name", "Enter")
        tab.wait_for_function("document.getElementById('greeting').textContent === 'Hello, Ada!'")
        tab.reload()
        assert tab.text_content("#count") == "2"
        assert tab.text_content("#greeting") == "Hello, Ada!"
        assert tab.input_value("#name") == "Ada"
        assert sorted((c["name"], c["httpOnly"], c["sameSite"]) for c in context.cookies()) == [
            ("pb_browser", True, "Lax"),  # the page token's browser id
            ("session", True, "Lax"),
        ]
    finally:
        context.close()
