"""The Flask extension: handlers in the app's request context, sessions both ways."""

from __future__ import annotations

import gc
import json
import re
import threading
import typing as t
import urllib.error
import urllib.request
import warnings
import weakref
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import quote
from urllib.parse import urlencode

import flask
import pytest
from flask import Flask
from werkzeug.serving import make_server

from examples import flask_app
from piggyback import Event
from piggyback import Page
from piggyback import Piggyback
from piggyback.exceptions import OptionError
from piggyback.flask import FlaskPiggyback
from piggyback.stores import MemoryStore
from piggyback.testing import Client
from piggyback.testing import HandlerFailed
from piggyback.testing import read_reply
from piggyback.testing import Rejected

from .servers import gunicorn

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


@pytest.mark.parametrize(
    ("options", "config"),
    [
        pytest.param({"lock_wait": 1}, {"PIGGYBACK_LEASE_WAIT": 3}, id="lease-wait-over-lock-wait"),
        pytest.param({"lease_wait": 1}, {"PIGGYBACK_LOCK_WAIT": 3}, id="lock-wait-over-lease-wait"),
        pytest.param({"lease_wait": 1}, {"PIGGYBACK_LEASE_WAIT": 3}, id="same-name"),
    ],
)
def test_config_overrides_lease_wait_under_either_name(
    options: dict[str, t.Any], config: dict[str, t.Any]
) -> None:
    """One option with two names: the config's wins, whichever name each uses."""
    live = FlaskPiggyback(store=MemoryStore(), **options)
    app = Flask("configured")
    app.config.update(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # lock_wait's, tested elsewhere
        live.init_app(app)
    assert live.middleware(app).options.lease_wait == 3


def test_both_names_of_lease_wait_in_the_config_are_refused() -> None:
    live = FlaskPiggyback(store=MemoryStore(), lease_wait=1)
    app = Flask("configured")
    app.config.update(PIGGYBACK_LEASE_WAIT=3, PIGGYBACK_LOCK_WAIT=2)
    with pytest.raises(OptionError) as raised:
        live.init_app(app)
    assert str(raised.value) == (
        "The lock_wait option (2) is the old name of lease_wait (3): give only lease_wait."
    )


def test_config_reads_every_option_and_checks_them_together() -> None:
    app = Flask("configured")
    app.config.update(PIGGYBACK_STORE="memory:", PIGGYBACK_PAGE_TTL=600, PIGGYBACK_LEASE=30)
    live = FlaskPiggyback(app)
    middleware = live.middleware(app)
    assert (middleware.options.lease, middleware.store.page_ttl) == (30, 600)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            {"PIGGYBACK_MOUNT": "/"},
            "The mount option is a path of its own such as '/_pb' (segments of letters,"
            " digits, '-', '.', '_' or '~'; the root '/' is the app's), not '/'.",
            id="mount-root",
        ),
        pytest.param(
            {"PIGGYBACK_PAGE_TTL": 60},
            "The page_ttl option (60) is for a store piggyback opens; the store given is a"
            " MemoryStore with its own page_ttl (86400): pass page_ttl to the store, or"
            " leave it out.",
            id="page-ttl-with-the-extension-store",
        ),
    ],
)
def test_bad_config_is_refused_at_init_app(config: dict[str, t.Any], message: str) -> None:
    live = FlaskPiggyback(store=MemoryStore())
    app = Flask("configured")
    app.config.update(config)
    with pytest.raises(OptionError) as raised:
        live.init_app(app)
    assert str(raised.value) == message
    assert "piggyback" not in app.extensions


def test_unknown_options_are_refused_at_once() -> None:
    with pytest.raises(TypeError) as raised:
        FlaskPiggyback(mout="/live")
    assert str(raised.value) == (
        "'mout' is not one of the options allowed here: secret_key, store, mount, inject,"
        " page_ttl, lease, lease_wait, lock_wait, max_query_bytes, max_body_bytes, transport,"
        " timeout, poll, bind_browser, browser_cookie."
    )


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


def example_client() -> tuple[Flask, Client, Recorder]:
    app = flask_app.create_app({"PIGGYBACK_STORE": MemoryStore()})
    recorder = Recorder(app)
    return app, Client(flask_app.live.middleware(app), app=recorder), recorder


def sign_in(client: Client, name: str = "ada", password: str = "lovelace") -> None:
    response = client.http.post("/login", data={"username": name, "password": password})
    assert (response.status_code, response.headers["Location"]) == (302, "/")


def test_example_counter_and_greeting() -> None:
    app, client, recorder = example_client()
    sign_in(client)
    page = client.open("/")
    assert client.fire(page, "increment") == [["text", "count", "1"]]
    assert client.fire(page, "increment") == [["text", "count", "2"]]
    assert [session_of(app, c)["count"] for c in recorder.cookies()] == [2]
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


def test_example_note_is_the_templates_block_autoescaped() -> None:
    _, client, _ = example_client()
    sign_in(client)
    page = client.open("/")
    query = urlencode({"p": page.token, "s": 1, "h": "add_note", "e": "submit"})
    response = client.http.post(f"/_pb/event?{query}", data={"text": "<b>milk</b>"})
    batch = read_reply(response.get_data(as_text=True))["batches"][0]
    assert batch["commands"] == [
        ["append", "notes", "\n    <li>&lt;b&gt;milk&lt;/b&gt;</li>"],
        ["value", "add-note-text", ""],
    ]
    assert "<li>&lt;b&gt;milk&lt;/b&gt;</li>" in client.http.get("/").text


def test_example_handlers_require_login() -> None:
    app, client, recorder = example_client()
    sign_in(client)
    page = client.open("/")
    client.http.set_cookie("session", "", expires=0)  # as if signed out in another way
    # Flask-Login's next= would name the event endpoint; without a Referer naming the
    # page, piggyback drops it (the browser test shows it kept as the page's URL).
    assert client.fire(page, "increment") == [["redirect", "/login"]]
    # Flask-Login's flash message reaches the browser with the answer's session.
    flashes = [session_of(app, c) for c in recorder.cookies()]
    assert [f.get("_flashes") for f in flashes] == [
        [("message", "Please log in to access this page.")]
    ]


def test_example_logout_ends_every_page_of_the_user() -> None:
    app, client, _ = example_client()
    sign_in(client)
    one, two = client.open("/"), client.open("/")
    client.fire(one, "increment")
    client.http.post("/logout")
    flask_app.live.middleware(app).group("user:ada").set_text("news", "after logout")
    for page in (one, two):
        with pytest.raises(Rejected) as refused:
            client.fire(page, "increment")
        assert (refused.value.status, refused.value.code) == (410, "expired")


# The example in headless Chromium, served in a thread by werkzeug's server.


@pytest.fixture
def example_server() -> t.Iterator[tuple[str, Flask]]:
    app = flask_app.create_app({"PIGGYBACK_STORE": MemoryStore()})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def example_url(example_server: tuple[str, Flask]) -> str:
    return example_server[0]


def browser_sign_in(tab: t.Any, url: str) -> None:
    tab.goto(url)
    tab.fill("input[name=username]", "ada")
    tab.fill("input[name=password]", "lovelace")
    tab.click("button")
    tab.wait_for_selector("#increment")


def test_browser_session_counter_survives_a_reload(browser: t.Any, example_url: str) -> None:
    context = browser.new_context()
    try:
        tab = context.new_page()
        browser_sign_in(tab, example_url)
        tab.click("#increment")
        tab.wait_for_function("document.getElementById('count').textContent === '1'")
        tab.click("#increment")
        tab.wait_for_function("document.getElementById('count').textContent === '2'")
        tab.fill("#name", "Ada")
        tab.press("#name", "Enter")
        tab.wait_for_function("document.getElementById('greeting').textContent === 'Hello, Ada!'")
        tab.fill("#add-note-text", "<i>bread</i>")
        tab.press("#add-note-text", "Enter")
        tab.wait_for_function("document.querySelectorAll('#notes li').length === 1")
        assert tab.text_content("#notes li") == "<i>bread</i>"
        tab.reload()
        assert tab.text_content("#count") == "2"
        assert tab.text_content("#greeting") == "Hello, Ada!"
        assert tab.input_value("#name") == "Ada"
        assert tab.text_content("#notes li") == "<i>bread</i>"
        assert sorted((c["name"], c["httpOnly"], c["sameSite"]) for c in context.cookies()) == [
            ("pb_browser", True, "Lax"),  # the page token's browser id
            ("session", True, "Lax"),
        ]
    finally:
        context.close()


def test_browser_signed_out_click_goes_to_the_login_view(browser: t.Any, example_url: str) -> None:
    context = browser.new_context()
    try:
        tab = context.new_page()
        browser_sign_in(tab, example_url)
        context.clear_cookies(name="session")  # the session ends without the page knowing
        tab.click("#increment")
        tab.wait_for_url(f"{example_url}/login?next=/")
        assert tab.text_content(".flash") == "Please log in to access this page."
        browser_sign_in(tab, f"{example_url}/login?next=/")
        assert tab.url == f"{example_url}/"
        assert tab.text_content("#count") == "0"
    finally:
        context.close()


EXPIRED_WATCH = """() => {
  window.expired = 0;
  document.addEventListener("piggyback:expired", (event) => {
    window.expired += 1;
    event.preventDefault();  // stay, so the test can look at the page
  });
}"""


def test_browser_logout_ends_both_tabs(browser: t.Any, example_server: tuple[str, Flask]) -> None:
    url, app = example_server
    group = flask_app.live.middleware(app).group("user:ada")
    context = browser.new_context()
    try:
        one = context.new_page()
        browser_sign_in(one, url)
        two = context.new_page()
        two.goto(url)
        group.set_text("news", "before logout")
        for tab in (one, two):
            tab.evaluate(EXPIRED_WATCH)
            tab.click("#increment")
            tab.wait_for_function("document.getElementById('count').textContent !== '0'")
            assert tab.text_content("#news") == "before logout"
        response = context.request.post(f"{url}/logout", max_redirects=0)
        assert response.status == 302
        group.set_text("news", "after logout")
        for tab in (one, two):
            count = tab.text_content("#count")
            tab.click("#increment")
            tab.wait_for_function("window.expired === 1")
            assert (tab.text_content("#news"), tab.text_content("#count")) == (
                "before logout",
                count,
            )
    finally:
        context.close()


# Events through the app's request pipeline, as a view.


def test_before_request_refusing_anonymous_users_refuses_their_events() -> None:
    app, live = make_app()
    ran = []

    @app.before_request
    def require_user() -> None:
        if flask.request.path not in ("/", "/login") and "user" not in flask.session:
            flask.abort(401)

    @app.route("/login")
    def login() -> str:
        flask.session["user"] = "ada"
        return "ok"

    @live.handler
    def work(page: Page, event: Event) -> None:
        ran.append(flask.session["user"])

    client, _ = client_for(app, live)
    page = client.open("/")
    with pytest.raises(Rejected) as refused:
        client.fire(page, "work")
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    assert client.response is not None and client.response.status_code == 401
    assert ran == []
    client.http.get("/login")
    assert client.fire(page, "work") == []
    assert ran == ["ada"]


def test_before_request_redirect_takes_the_page_there() -> None:
    app, live = make_app()
    app.before_request(
        lambda: flask.redirect("/elsewhere") if "/_pb/" in flask.request.path else None
    )
    live.handler("work")(lambda page, event: pytest.fail("the handler ran"))
    client, _ = client_for(app, live)
    assert client.fire(client.open("/"), "work") == [["redirect", "/elsewhere"]]


def test_pipeline_steps_run_in_flasks_order() -> None:
    app, live = make_app()
    steps: list[t.Any] = []
    flask.request_started.connect(
        lambda sender, **kw: steps.append("request_started"), app, weak=False
    )
    flask.request_finished.connect(
        lambda sender, **kw: steps.append("request_finished"), app, weak=False
    )
    app.url_value_preprocessor(lambda endpoint, values: steps.append(("url", endpoint, values)))
    app.before_request(lambda: steps.append("before_request"))
    live.before_event(lambda page, event: steps.append("before_event"))

    @app.after_request
    def after(response: flask.Response) -> flask.Response:
        steps.append(("after_request", response.status_code))
        response.set_cookie("seen", "yes")
        return response

    app.teardown_request(lambda error: steps.append(("teardown", error)))
    live.handler("work")(lambda page, event: steps.append("handler"))
    client, recorder = client_for(app, live)
    page = client.open("/")
    steps.clear()
    client.fire(page, "work")
    assert steps == [
        "request_started",
        ("url", None, None),
        "before_request",
        "before_event",
        "handler",
        ("after_request", 200),
        "request_finished",
        ("teardown", None),
    ]
    assert recorder.cookies() == ["seen=yes; Path=/"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param(400, "bad_request", id="400"),
        pytest.param(401, "unauthorized", id="401"),
        pytest.param(403, "forbidden", id="403"),
        pytest.param(404, "not_found", id="404"),
        pytest.param(409, "conflict", id="409"),
    ],
)
def test_abort_is_a_clean_rejection(
    status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, live = make_app()
    received = []
    flask.got_request_exception.connect(lambda sender, **kw: received.append(kw), app, weak=False)

    @live.handler
    def guarded(page: Page, event: Event) -> None:
        page.set_text("count", "never sent")
        flask.session["count"] = 5
        flask.abort(status)

    client, _ = client_for(app, live)
    page = client.open("/")
    with pytest.raises(Rejected) as refused:
        client.fire(page, "guarded")
    assert (refused.value.status, refused.value.code) == (status, code)
    assert received == []
    assert [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
    assert client.poll(page) == []  # the handler's commands were not committed


def test_an_errorhandler_for_http_errors_decides_too() -> None:
    app, live = make_app()
    app.register_error_handler(403, lambda error: flask.redirect("/denied"))
    live.handler("guarded")(lambda page, event: flask.abort(403))
    client, _ = client_for(app, live)
    assert client.fire(client.open("/"), "guarded") == [["redirect", "/denied"]]


def test_an_exception_reaches_got_request_exception_and_app_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, live = make_app()
    received = []
    flask.got_request_exception.connect(
        lambda sender, exception, **kw: received.append(exception), app, weak=False
    )

    @live.handler
    def boom(page: Page, event: Event) -> None:
        raise LookupError("no such thing")

    client, _ = client_for(app, live)
    with pytest.raises(HandlerFailed):
        client.fire(client.open("/"), "boom")
    assert [type(e) for e in received] == [LookupError]
    logged = [r for r in caplog.records if r.name == app.logger.name]
    assert [r.getMessage() for r in logged] == ["Exception on /_pb/event [GET]"]
    assert logged[0].exc_info is not None and logged[0].exc_info[1] is received[0]


def test_an_exception_goes_to_the_apps_errorhandler_first() -> None:
    app, live = make_app()
    handled, received = [], []
    flask.got_request_exception.connect(lambda sender, **kw: received.append(kw), app, weak=False)

    @app.errorhandler(Exception)
    def oops(error: Exception) -> tuple[str, int]:
        handled.append(error)
        return "oops", 500

    @app.errorhandler(PermissionError)
    def denied(error: Exception) -> tuple[str, int]:
        return "denied", 403

    live.handler("boom")(lambda page, event: 1 / 0)

    @live.handler
    def private(page: Page, event: Event) -> None:
        raise PermissionError("not yours")

    client, _ = client_for(app, live)
    page = client.open("/")
    with pytest.raises(HandlerFailed):
        client.fire(page, "boom")
    assert [type(e) for e in handled] == [ZeroDivisionError]
    assert received == []  # handled by the app: no signal, as for a view
    with pytest.raises(Rejected) as refused:
        client.fire(page, "private")
    assert (refused.value.status, refused.value.code) == (403, "forbidden")


def test_login_required_on_one_handler() -> None:
    import flask_login

    app, live = make_app()
    manager = flask_login.LoginManager(app)
    manager.user_loader(lambda name: flask_login.UserMixin() if name == "ada" else None)
    app.add_url_rule("/login", "login", lambda: "sign in")

    @live.handler
    def open_to_all(page: Page, event: Event) -> None:
        page.set_text("count", "open")

    @live.handler
    @flask_login.login_required
    def members_only(page: Page, event: Event) -> None:
        page.set_text("count", "members")

    client, _ = client_for(app, live)
    page = client.open("/")
    assert client.fire(page, "open_to_all") == [["text", "count", "open"]]
    with pytest.raises(Rejected) as refused:  # no login view: 401, as Flask-Login does
        client.fire(page, "members_only")
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    manager.login_view = "login"
    assert client.fire(page, "members_only") == [["redirect", "/login"]]


def test_login_redirect_names_the_page_not_the_event_endpoint() -> None:
    app, live = make_app()
    app.before_request(
        lambda: (
            flask.redirect(f"/login?next={quote(flask.request.full_path)}&x=1")
            if "/_pb/" in flask.request.path
            else None
        )
    )
    live.handler("work")(lambda page, event: None)
    client, _ = client_for(app, live)
    page = client.open("/")
    query = urlencode({"p": page.token, "s": 1, "h": "work"})
    for referer, location in [
        ("http://localhost/todos?list=2", "/login?next=/todos%3Flist%3D2&x=1"),
        ("http://evil.invalid/", "/login?x=1"),
    ]:
        response = client.http.get(f"/_pb/event?{query}", headers={"Referer": referer})
        reply = read_reply(response.get_data(as_text=True))
        assert reply["batches"] == [{"seq": 1, "commands": [["redirect", location]]}]


def test_render_block_and_template() -> None:
    from jinja2 import DictLoader

    app, live = make_app()
    app.jinja_loader = DictLoader(  # type: ignore[assignment]
        {
            "todo.html": "<ul>{% for t in todos %}{% block item scoped %}"
            "<li>{{ t }} {{ mark }}</li>{% endblock %}{% endfor %}</ul>",
            "todo.txt": "{{ t }}",
        }
    )
    app.context_processor(lambda: {"mark": "✓"})

    @live.handler
    def add(page: Page, event: Event) -> None:
        page.append("todos", live.render_block("todo.html", "item", t=event.value))
        page.set_html("all", live.render_template("todo.html", todos=["a&b"]))

    client, _ = client_for(app, live)
    assert client.fire(client.open("/"), "add", value="<i>x</i>") == [
        ["append", "todos", "<li>&lt;i&gt;x&lt;/i&gt; ✓</li>"],
        ["html", "all", "<ul><li>a&amp;b ✓</li></ul>"],
    ]
    with app.test_request_context():
        with pytest.raises(ValueError) as raised:
            live.render_block("todo.html", "items")
        assert (
            str(raised.value)
            == "The template 'todo.html' has no block 'items'; its blocks: 'item'."
        )
        with pytest.raises(ValueError) as raised:
            live.render_template("todo.txt", t="<b>")
        assert str(raised.value).startswith("The template 'todo.txt' is not autoescaped")


def test_render_block_is_markup() -> None:
    from jinja2 import DictLoader
    from jinja2 import Environment
    from markupsafe import Markup

    from piggyback.templates import render_block

    jinja = Environment(loader=DictLoader({"a.html": "{% block b %}{{ v }}{% endblock %}"}))
    with pytest.raises(ValueError):
        render_block(jinja, "a.html", "b", v="<x>")
    jinja.autoescape = True
    block = render_block(jinja, "a.html", "b", v="<x>")
    assert (type(block), block) == (Markup, Markup("&lt;x&gt;"))


# The app's auth and error tools under a real gunicorn -w 4.


def test_host_pipeline_under_gunicorn(tmp_path: Path) -> None:
    log = tmp_path / "host.jsonl"
    log.touch()
    jar = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def get(url: str) -> tuple[int, str]:
        request = urllib.request.Request(url, headers={"Referer": f"{base}/"})
        try:
            with jar.open(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read().decode()

    def fire(seq: int, handler: str) -> tuple[int, dict[str, t.Any]]:
        """Send one event; the reply with only that event's own batch."""
        query = urlencode({"p": token, "s": seq, "h": handler})
        status, body = get(f"{base}/_pb/event?{query}")
        reply = read_reply(body)
        if "batches" in reply:
            reply["batches"] = [b for b in reply["batches"] if b["seq"] == seq]
        return status, reply

    with gunicorn("tests.flask_host_app:app", tmp_path, env={"HOST_APP_LOG": str(log)}) as (
        base,
        _,
    ):
        token = re.findall(r'data-token="([^"]+)"', get(f"{base}/")[1])[0]
        anonymous = [fire(1, "whoami"), fire(2, "members")]
        get(f"{base}/login")
        signed_in = [
            fire(seq, name)
            for seq, name in enumerate(
                ["whoami", "members", "forbidden", "boom", "lookup"], start=3
            )
        ]
    assert [(status, reply.get("code")) for status, reply in anonymous] == [
        (401, "unauthorized"),
        (200, None),
    ]
    assert anonymous[1][1]["batches"] == [{"seq": 2, "commands": [["redirect", "/login?next=/"]]}]
    assert [(s, r.get("code"), r.get("batches")) for s, r in signed_in] == [
        (200, None, [{"seq": 3, "commands": [["text", "out", "ada"]]}]),
        (200, None, [{"seq": 4, "commands": [["text", "out", "members only"]]}]),
        (403, "forbidden", None),
        (200, None, [{"seq": 6, "commands": [], "error": signed_in[3][1]["batches"][0]["error"]}]),
        (200, None, [{"seq": 7, "commands": [], "error": signed_in[4][1]["batches"][0]["error"]}]),
    ]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [{k: v for k, v in e.items() if k != "pid"} for e in entries] == [
        {"signal": "RuntimeError('boom in a handler')"},
        {"handled": "KeyError('nothing here')"},
    ]
    errors = (tmp_path / "gunicorn.log").read_text()
    assert "Exception on /_pb/event [GET]" in errors
    assert "RuntimeError: boom in a handler" in errors


def test_a_streamed_flask_page_passes_untouched(caplog: pytest.LogCaptureFixture) -> None:
    app, live = make_app()
    sent = []

    @app.route("/stream")
    def stream() -> flask.Response:
        def chunks() -> t.Iterator[str]:
            for chunk in ("<body>", "<p>live</p>", "</body>"):
                sent.append(chunk)
                yield chunk

        return flask.Response(flask.stream_with_context(chunks()), mimetype="text/html")

    caplog.set_level("DEBUG", logger="piggyback")
    client, _ = client_for(app, live)
    response = client.http.get("/stream", buffered=False)
    assert sent == ["<body>"]  # stream_with_context runs to its first chunk at once
    assert response.get_data() == b"<body><p>live</p></body>"
    assert [r.getMessage() for r in caplog.records if r.name == "piggyback"] == [
        "No client tag in the page at '/stream': it is a streamed werkzeug or Flask response."
    ]


def test_timeout_and_poll_from_the_config() -> None:
    app = Flask("configured")
    app.config.update(PIGGYBACK_TIMEOUT=4, PIGGYBACK_POLL=2.5)
    live = FlaskPiggyback(app, store=MemoryStore(), secret_key="tokens")
    app.route("/")(lambda: PAGE.format(0))
    html = app.test_client().get("/").text
    assert ' data-poll="2.5" data-timeout="4000"></script>' in html
    assert (live.middleware(app).timeout, live.middleware(app).poll) == (4.0, 2.5)


def test_a_replay_sends_the_session_cookie_again() -> None:
    app, live = make_app()

    @live.handler
    def increment(page: Page, event: Event) -> None:
        flask.session["count"] = flask.session.get("count", 0) + 1

    client, _ = client_for(app, live)
    page = client.open("/")
    query = urlencode({"p": page.token, "s": 1, "h": "increment"})
    first = client.http.get(f"/_pb/event?{query}")
    client.http.delete_cookie("session")  # the first answer was lost on its way
    retry = client.http.get(f"/_pb/event?{query}")
    cookies = [r.headers.getlist("Set-Cookie") for r in (first, retry)]
    assert cookies[0] == cookies[1]
    assert [session_of(app, c) for c in cookies[0]] == [{"count": 1}]


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        pytest.param("/notes?x=1", True, id="path"),
        pytest.param("//evil.example/", False, id="network-path"),
        pytest.param("/\\evil.example/", False, id="backslash"),
        pytest.param("/\t/evil.example/", False, id="tab"),
        pytest.param("/\r/evil.example", False, id="carriage-return"),
        pytest.param("https://evil.example/", False, id="absolute"),
        pytest.param("", False, id="empty"),
    ],
)
def test_the_examples_login_returns_only_to_its_own_paths(url: str, kept: bool) -> None:
    assert flask_app._local(url) == (url if kept else None)
