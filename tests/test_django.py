"""The Django adapter: handlers get an HttpRequest with the session and the user.

Django's settings are global to the process: the first test that needs them configures
them once, from the example project's settings with a database in a temporary
directory, and every test here uses those.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing as t
import urllib.parse
import urllib.request
import warnings
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings

from examples.django_project import settings as example_settings
from piggyback import Event
from piggyback import Page
from piggyback import Piggyback
from piggyback.django import DEFAULT_MIDDLEWARE
from piggyback.django import DjangoRunner
from piggyback.django import wrap
from piggyback.exceptions import OptionError
from piggyback.stores import MemoryStore
from piggyback.testing import Client
from piggyback.testing import HandlerFailed
from piggyback.testing import read_reply
from piggyback.testing import Rejected

from .servers import gunicorn
from .servers import ROOT

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment

_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the ORM run although Playwright's sync API runs an event loop here.

    Once the session's ``browser`` fixture has started, this thread has a running
    asyncio loop and Django refuses ORM calls as if from async code. No loop runs in
    a WSGI server's worker.
    """
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def django_app(tmp_path_factory: pytest.TempPathFactory) -> WSGIApplication:
    """The example project's Django WSGI app, with a user ``ada``."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        return _set_up_django(tmp_path_factory)


def _set_up_django(tmp_path_factory: pytest.TempPathFactory) -> WSGIApplication:
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    if not settings.configured:
        database = tmp_path_factory.mktemp("django") / "db.sqlite3"
        options = {k: getattr(example_settings, k) for k in dir(example_settings)}
        options = {k: v for k, v in options.items() if k.isupper()}
        options["DATABASES"] = {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database}
        }
        options["PASSWORD_HASHERS"] = ["django.contrib.auth.hashers.MD5PasswordHasher"]
        settings.configure(**options)
    application: WSGIApplication = get_wsgi_application()
    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import User

    User.objects.create_user("ada", password="lovelace")
    return application


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

    def cookie_names(self) -> list[str]:
        return [v.split("=")[0] for k, v in self.headers if k == "Set-Cookie"]


def example(django_app: WSGIApplication, **options: t.Any) -> Piggyback:
    """The project wrapped the way its wsgi.py does, with a memory store."""
    from examples.django_project import views

    live = wrap(django_app, store=MemoryStore(), secret_key="test", **options)
    views.install(live)
    return live


def log_in(client: Client, username: str, password: str) -> None:
    """Sign in through the project's own login view, CSRF token and all."""
    form = client.http.get("/login/").text
    match = _CSRF.search(form)
    assert match is not None
    data = {"csrfmiddlewaretoken": match[1], "username": username, "password": password}
    response = client.http.post("/login/", data=data)
    assert (response.status_code, response.headers["Location"]) == (302, "/")


def shown(html: str, element_id: str) -> str:
    match = re.search(f'<strong id="{element_id}">([^<]*)</strong>', html)
    assert match is not None
    return match[1]


def test_session_write_reaches_the_next_request(django_app: WSGIApplication) -> None:
    live = example(django_app)
    recorder = Recorder(live)
    client = Client(live, app=recorder)
    log_in(client, "ada", "lovelace")
    page = client.open("/")
    assert client.fire(page, "increment") == [["text", "count", "1"]]
    assert recorder.cookie_names() == ["sessionid"]
    assert client.fire(page, "increment") == [["text", "count", "2"]]
    assert shown(client.http.get("/").text, "count") == "2"


def test_example_handlers_require_login(django_app: WSGIApplication) -> None:
    client = Client(example(django_app))
    log_in(client, "ada", "lovelace")
    page = client.open("/")
    client.http.delete_cookie("sessionid")  # the session ends without the page knowing
    assert client.fire(page, "increment") == [["redirect", "/login/?next=/"]]


def test_example_note_is_rendered_by_a_template(django_app: WSGIApplication) -> None:
    client = Client(example(django_app))
    log_in(client, "ada", "lovelace")
    page = client.open("/")
    query = urlencode({"p": page.token, "s": 1, "h": "add_note", "e": "submit"})
    response = client.http.post(f"/_pb/event?{query}", data={"text": "<b>milk</b>"})
    assert read_reply(response.get_data(as_text=True))["batches"] == [
        {
            "seq": 1,
            "commands": [
                ["append", "notes", "<li>&lt;b&gt;milk&lt;/b&gt;</li>\n"],
                ["value", "note-text", ""],
            ],
        }
    ]
    assert "<li>&lt;b&gt;milk&lt;/b&gt;</li>" in client.http.get("/").text


def test_example_logout_ends_every_page_of_the_user(django_app: WSGIApplication) -> None:
    live = example(django_app)
    client = Client(live)
    log_in(client, "ada", "lovelace")
    one, two = client.open("/"), client.open("/")
    client.fire(one, "increment")
    html = client.http.get("/").text
    client.http.post("/logout/", data={"csrfmiddlewaretoken": _CSRF.findall(html)[0]})
    from django.contrib.auth.models import User

    ada = User.objects.get(username="ada")
    live.group(f"user:{ada.pk}").set_text("count", "after logout")
    for page in (one, two):
        with pytest.raises(Rejected) as refused:
            client.fire(page, "increment")
        assert (refused.value.status, refused.value.code) == (410, "expired")


def test_host_request_is_the_django_request(django_app: WSGIApplication) -> None:
    from django.core.handlers.wsgi import WSGIRequest

    live = wrap(django_app, store=MemoryStore())
    seen: list[t.Any] = []

    @live.handler
    def look(page: Page, event: Event) -> None:
        request = event.host_request
        seen.append(type(request))
        seen.append((request.path, request.GET.get("h"), str(request.user)))
        seen.append(request.session.session_key)

    client = Client(live)
    client.fire(client.open("/login/"), "look")
    assert seen == [WSGIRequest, ("/_pb/event", "look", "AnonymousUser"), None]


def test_failed_handler_saves_no_session(django_app: WSGIApplication) -> None:
    live = example(django_app)

    @live.handler
    def boom(page: Page, event: Event) -> None:
        event.host_request.session["count"] = 99
        raise RuntimeError("boom")

    recorder = Recorder(live)
    client = Client(live, app=recorder)
    log_in(client, "ada", "lovelace")
    page = client.open("/")
    client.fire(page, "increment")
    with pytest.raises(HandlerFailed):
        client.fire(page, "boom")
    assert recorder.cookie_names() == []
    assert shown(client.http.get("/").text, "count") == "1"


def test_each_event_is_a_django_request(django_app: WSGIApplication) -> None:
    from django.contrib.auth.models import User
    from django.core import signals
    from django.db import connection

    live = wrap(django_app, store=MemoryStore())
    seen: list[t.Any] = []

    @live.handler
    def count_users(page: Page, event: Event) -> None:
        users = User.objects.filter(username="ada").count()
        seen.append(("handler", users, connection.connection is not None))

    def started(sender: t.Any, environ: dict[str, t.Any], **_: t.Any) -> None:
        seen.append(("started", sender, environ["PATH_INFO"]))

    def finished(sender: t.Any, **_: t.Any) -> None:
        seen.append(("finished", sender))

    client = Client(live)
    page = client.open("/login/")
    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        client.fire(page, "count_users")
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert seen == [
        ("started", DjangoRunner, "/_pb/event"),
        ("handler", 1, True),
        ("finished", DjangoRunner),
    ]
    assert connection.connection is None  # closed after the event: CONN_MAX_AGE=0


def test_login_in_a_handler_sets_the_new_session_cookie(
    django_app: WSGIApplication,
) -> None:
    from django.contrib.auth import login
    from django.contrib.auth.models import User

    live = wrap(django_app, store=MemoryStore())

    @live.handler
    def remember(page: Page, event: Event) -> None:
        event.host_request.session["count"] = 1

    @live.handler
    def sign_in(page: Page, event: Event) -> None:
        login(event.host_request, User.objects.get(username="ada"))

    client = Client(live)
    page = client.open("/login/")
    client.fire(page, "remember")
    before = client.http.get_cookie("sessionid")
    assert before is not None
    client.fire(page, "sign_in")
    after = client.http.get_cookie("sessionid")
    assert after is not None and after.value != before.value  # login rotates the key
    html = client.http.get("/").text
    assert (shown(html, "user"), shown(html, "count")) == ("ada", "1")


def test_wrapped_app_keeps_its_cookies_and_headers(
    django_app: WSGIApplication,
) -> None:
    from werkzeug.test import Client as HTTPClient

    def headers(app: WSGIApplication) -> tuple[list[str], list[tuple[str, str]]]:
        response = HTTPClient(app).get("/login/")
        assert response.status_code == 200
        cookies = [c.split("=")[0] for c in response.headers.getlist("Set-Cookie")]
        others = [(k, v) for k, v in response.headers if k != "Set-Cookie"]
        return cookies, others

    wrapped, unwrapped = headers(example(django_app)), headers(django_app)
    assert unwrapped[0] == [" csrftoken"]  # Django's own leading space
    assert wrapped[0] == [" csrftoken", "pb_browser"]  # the page token's browser id
    # All kept but the two an edited page must replace: its length, and its caching.
    replaced = ("Content-Length", "Cache-Control")
    assert [h for h in wrapped[1] if h[0] not in replaced] == [
        h for h in unwrapped[1] if h[0] not in replaced
    ]
    assert ("Cache-Control", "no-store") in wrapped[1]
    assert ("X-Frame-Options", "DENY") in wrapped[1]
    response = Client(example(django_app)).http.get("/login/")
    assert response.headers["Content-Length"] == str(len(response.data))
    assert response.text.count('<script src="/_pb/piggyback.js?v=') == 1


class Refuse:
    """A middleware that answers every request itself."""

    def __init__(self, get_response: t.Any) -> None:
        self.get_response = get_response

    def __call__(self, request: t.Any) -> t.Any:
        from django.http import HttpResponseForbidden

        return HttpResponseForbidden()


def test_middleware_is_configurable(django_app: WSGIApplication) -> None:
    sessions = "django.contrib.sessions.middleware.SessionMiddleware"
    live = wrap(django_app, store=MemoryStore(), middleware=[sessions])
    seen = []

    @live.handler
    def look(page: Page, event: Event) -> None:
        request = event.host_request
        seen.append((hasattr(request, "session"), hasattr(request, "user")))

    client = Client(live)
    client.fire(client.open("/login/"), "look")
    assert seen == [(True, False)]


def test_middleware_that_answers_refuses_the_event(django_app: WSGIApplication) -> None:
    live = wrap(django_app, store=MemoryStore(), middleware=[f"{__name__}.Refuse"])
    ran = []

    @live.handler
    def never(page: Page, event: Event) -> None:
        ran.append(event)

    client = Client(live)
    with pytest.raises(Rejected) as refused:
        client.fire(client.open("/login/"), "never")
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert ran == []


SEEN: list[t.Any] = []


class Watch:
    """A middleware that records what Django shows it of an event."""

    def __init__(self, get_response: t.Any) -> None:
        self.get_response = get_response

    def __call__(self, request: t.Any) -> t.Any:
        SEEN.append(("call", request.path))
        response = self.get_response(request)
        SEEN.append(("response", response.status_code))
        return response

    def process_view(self, request: t.Any, view: t.Any, args: t.Any, kwargs: t.Any) -> None:
        SEEN.append(("view", view.__name__, getattr(view, "marked", None)))
        SEEN.append(("resolver_match", request.resolver_match.url_name))

    def process_exception(self, request: t.Any, exception: Exception) -> t.Any:
        SEEN.append(("exception", repr(exception)))
        if isinstance(exception, LookupError):
            from django.http import HttpResponseForbidden

            return HttpResponseForbidden()
        return None


def test_process_view_and_process_exception_see_events(django_app: WSGIApplication) -> None:
    live = wrap(
        django_app, store=MemoryStore(), middleware=[*DEFAULT_MIDDLEWARE, f"{__name__}.Watch"]
    )

    @live.handler
    def marked(page: Page, event: Event) -> None:
        page.set_text("out", "ran")

    marked.marked = "yes"  # type: ignore[attr-defined]

    @live.handler
    def boom(page: Page, event: Event) -> None:
        raise RuntimeError("boom")

    @live.handler
    def missing(page: Page, event: Event) -> None:
        raise LookupError("mapped to 403 by the middleware")

    client = Client(live)
    page = client.open("/login/")
    SEEN.clear()
    assert client.fire(page, "marked") == [["text", "out", "ran"]]
    assert SEEN == [
        ("call", "/_pb/event"),
        ("view", "marked", "yes"),
        ("resolver_match", "marked"),
        ("response", 200),
    ]
    SEEN.clear()
    with pytest.raises(HandlerFailed):
        client.fire(page, "boom")
    assert SEEN[3:] == [("exception", "RuntimeError('boom')"), ("response", 500)]
    SEEN.clear()
    with pytest.raises(Rejected) as refused:
        client.fire(page, "missing")
    assert refused.value.code == "forbidden"
    assert SEEN[3:] == [
        ("exception", "LookupError('mapped to 403 by the middleware')"),
        ("response", 403),
    ]


@pytest.mark.parametrize("atomic", [True, False])
def test_atomic_requests_roll_back_a_failing_handler(
    django_app: WSGIApplication, monkeypatch: pytest.MonkeyPatch, atomic: bool
) -> None:
    from django.contrib.auth.models import Group
    from django.db import connections

    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", atomic)
    live = wrap(django_app, store=MemoryStore())
    name = f"written then failed ({atomic})"

    @live.handler
    def write_then_fail(page: Page, event: Event) -> None:
        Group.objects.create(name=name)
        raise RuntimeError("after the write")

    client = Client(live)
    with pytest.raises(HandlerFailed):
        client.fire(client.open("/login/"), "write_then_fail")
    assert Group.objects.filter(name=name).exists() is not atomic


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        pytest.param("PermissionDenied", 403, "forbidden", id="PermissionDenied"),
        pytest.param("Http404", 404, "not_found", id="Http404"),
    ],
)
def test_django_http_errors_are_clean_rejections(
    django_app: WSGIApplication, error: str, status: int, code: str
) -> None:
    from django.core.exceptions import PermissionDenied
    from django.core.signals import got_request_exception
    from django.http import Http404

    live = wrap(django_app, store=MemoryStore())
    exceptions = {"PermissionDenied": PermissionDenied, "Http404": Http404}
    signalled = []

    @live.handler
    def refuse(page: Page, event: Event) -> None:
        page.set_text("out", "never sent")
        raise exceptions[error]()

    def received(sender: t.Any, **kwargs: t.Any) -> None:
        signalled.append(sender)

    got_request_exception.connect(received)
    try:
        with pytest.raises(Rejected) as refused:
            client = Client(live)
            client.fire(client.open("/login/"), "refuse")
    finally:
        got_request_exception.disconnect(received)
    assert (refused.value.status, refused.value.code) == (status, code)
    assert signalled == []


def test_got_request_exception_is_sent_for_a_failing_handler(
    django_app: WSGIApplication, caplog: pytest.LogCaptureFixture
) -> None:
    from django.core.signals import got_request_exception

    live = wrap(django_app, store=MemoryStore())
    signalled = []
    live.handler("boom")(lambda page, event: 1 / 0)

    def received(sender: t.Any, request: t.Any, **kwargs: t.Any) -> None:
        signalled.append(request.path)

    got_request_exception.connect(received)
    try:
        with pytest.raises(HandlerFailed):
            client = Client(live)
            client.fire(client.open("/login/"), "boom")
    finally:
        got_request_exception.disconnect(received)
    assert signalled == ["/_pb/event"]
    logged = [r for r in caplog.records if r.name == "django.request"]
    assert [r.getMessage() for r in logged] == ["Internal Server Error: /_pb/event"]


def test_login_required_middleware_redirects_and_login_not_required_opens(
    django_app: WSGIApplication,
) -> None:
    from django.contrib.auth.decorators import login_not_required

    live = wrap(
        django_app,
        store=MemoryStore(),
        middleware=[
            *DEFAULT_MIDDLEWARE,
            "django.contrib.auth.middleware.LoginRequiredMiddleware",
        ],
    )
    live.handler("private")(lambda page, event: page.set_text("out", "private"))

    @live.handler
    @login_not_required
    def public(page: Page, event: Event) -> None:
        page.set_text("out", "public")

    client = Client(live)
    page = client.open("/login/")
    assert client.fire(page, "public") == [["text", "out", "public"]]
    # No Referer names the page, so the next= that named the endpoint is dropped.
    assert client.fire(page, "private") == [["redirect", "/login/"]]
    log_in(client, "ada", "lovelace")
    assert client.fire(page, "private") == [["text", "out", "private"]]


def test_wrap_reads_piggyback_settings(django_app: WSGIApplication) -> None:
    from django.test import override_settings

    with override_settings(
        PIGGYBACK_STORE="memory:",
        PIGGYBACK_MOUNT="/live",
        PIGGYBACK_SECRET_KEY="from settings",
        PIGGYBACK_TIMEOUT=3,
        PIGGYBACK_POLL=20,
        PIGGYBACK_SKIP_MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
    ):
        live = wrap(django_app)
        assert (live.mount, live.timeout, live.poll) == ("/live", 3.0, 20.0)
        assert live.signer.verify(live.signer.sign("A" * 22)) == "A" * 22
        assert type(live.store).__name__ == "MemoryStore"
        assert "django.middleware.csrf.CsrfViewMiddleware" not in live.answerer.runner.middleware
        assert wrap(django_app, mount="/given").mount == "/given"


def test_middleware_keywords_given_override_their_settings(django_app: WSGIApplication) -> None:
    from django.test import override_settings

    csrf = "django.middleware.csrf.CsrfViewMiddleware"
    with override_settings(PIGGYBACK_STORE="memory:", PIGGYBACK_MIDDLEWARE=[csrf]):
        assert wrap(django_app).answerer.runner.middleware == (csrf,)
        assert wrap(django_app, middleware=[]).answerer.runner.middleware == ()
    with override_settings(PIGGYBACK_STORE="memory:", PIGGYBACK_SKIP_MIDDLEWARE=[csrf]):
        assert csrf not in wrap(django_app).answerer.runner.middleware
        assert csrf in wrap(django_app, skip_middleware=[]).answerer.runner.middleware


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        pytest.param({"lease_wait": 3}, {"PIGGYBACK_LOCK_WAIT": 1}, id="lease-wait-over-lock-wait"),
        pytest.param({"lock_wait": 3}, {"PIGGYBACK_LEASE_WAIT": 1}, id="lock-wait-over-lease-wait"),
        pytest.param({}, {"PIGGYBACK_LOCK_WAIT": 3}, id="setting-when-not-given"),
    ],
)
def test_options_given_override_lease_wait_settings_under_either_name(
    django_app: WSGIApplication, options: dict[str, t.Any], setting: dict[str, t.Any]
) -> None:
    """One option with two names: the keyword's wins, whichever name each uses."""
    from django.test import override_settings

    with override_settings(PIGGYBACK_STORE="memory:", **setting), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # lock_wait's, tested elsewhere
        assert wrap(django_app, **options).options.lease_wait == 3


def test_settings_are_checked_like_options(django_app: WSGIApplication) -> None:
    from django.test import override_settings

    with (
        override_settings(PIGGYBACK_STORE="memory:", PIGGYBACK_LEASE=0),
        pytest.raises(OptionError) as raised,
    ):
        wrap(django_app)
    assert str(raised.value) == (
        "The lease option is a number of seconds above 0 and at most 3,600, not 0."
    )
    with override_settings(PIGGYBACK_STORE="memory:", PIGGYBACK_PAGE_TTL=90):
        assert wrap(django_app).store.page_ttl == 90


def test_skipping_middleware_that_is_not_there_is_an_error(django_app: WSGIApplication) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured) as raised:
        wrap(django_app, store=MemoryStore(), skip_middleware=["project.middleware.Gone"])
    assert str(raised.value).startswith(
        "PIGGYBACK_SKIP_MIDDLEWARE names 'project.middleware.Gone', which is not in"
        " settings.MIDDLEWARE: ['django.middleware.security.SecurityMiddleware',"
    )


# The example project under a real gunicorn -w 4: sessions in its SQLite database,
# each request on whichever worker takes it.


def test_example_project_under_gunicorn(tmp_path: Path) -> None:
    env = {
        "DJANGO_SETTINGS_MODULE": "examples.django_project.settings",
        "PYTHONPATH": str(ROOT),
        "DJANGO_SUPERUSER_PASSWORD": "lovelace",
    }
    for command in (
        ["migrate"],
        ["createsuperuser", "--noinput", "--username=ada", "--email=ada@example.com"],
    ):
        subprocess.run(
            [sys.executable, "-m", "django", *command],
            cwd=tmp_path,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
    cookies = urllib.request.HTTPCookieProcessor(CookieJar())
    browser = urllib.request.build_opener(cookies)

    def get(url: str, data: dict[str, str] | None = None) -> str:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        with browser.open(url, body, timeout=30) as response:
            return t.cast(str, response.read().decode())

    with gunicorn("examples.django_project.wsgi:application", tmp_path, env=env) as (
        url,
        _,
    ):
        csrf = _CSRF.findall(get(f"{url}/login/"))[0]
        home = get(
            f"{url}/login/",
            {"csrfmiddlewaretoken": csrf, "username": "ada", "password": "lovelace"},
        )
        token = re.findall(r'data-token="([^"]+)"', home)[0]
        for seq in range(1, 9):
            query = {"p": token, "s": seq, "a": seq - 1, "h": "increment"}
            reply = read_reply(get(f"{url}/_pb/event?{urllib.parse.urlencode(query)}"))
            token = reply["token"]
            assert reply["batches"] == [{"seq": seq, "commands": [["text", "count", str(seq)]]}]
        html = get(f"{url}/")
    assert (shown(html, "user"), shown(html, "count")) == ("ada", "8")


# The client's tag in a project without CommonMiddleware: no Content-Length.


def _project_without_common_middleware(django_app: WSGIApplication) -> WSGIApplication:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    common = "django.middleware.common.CommonMiddleware"
    assert common in settings.MIDDLEWARE
    with override_settings(MIDDLEWARE=[m for m in settings.MIDDLEWARE if m != common]):
        return WSGIHandler()  # loads its middleware now


def test_a_page_without_content_length_gets_the_tag(django_app: WSGIApplication) -> None:
    from werkzeug.test import Client as HTTPClient

    bare = _project_without_common_middleware(django_app)
    assert "Content-Length" not in HTTPClient(bare).get("/login/").headers
    for app in (bare, django_app):
        response = HTTPClient(wrap(app, store=MemoryStore())).get("/login/")
        assert response.text.count('<script src="/_pb/piggyback.js?v=') == 1
        assert response.headers["Content-Length"] == str(len(response.data))


def test_a_streaming_response_passes_untouched(django_app: WSGIApplication) -> None:
    from django.http import StreamingHttpResponse
    from werkzeug.test import Client as HTTPClient

    def stream(environ: WSGIEnvironment, start_response: StartResponse) -> t.Any:
        response = StreamingHttpResponse(iter([b"<body>", b"live", b"</body>"]))
        start_response("200 OK", [("Content-Type", "text/html")])
        return response

    response = HTTPClient(wrap(stream, store=MemoryStore())).get("/")
    assert response.data == b"<body>live</body>"


def test_browser_project_without_common_middleware(
    browser: t.Any, django_app: WSGIApplication
) -> None:
    import threading

    from werkzeug.serving import make_server

    live = wrap(_project_without_common_middleware(django_app), store=MemoryStore())
    live.handler("hello")(lambda page, event: page.set_text("error", "hello from an event"))
    server = make_server("127.0.0.1", 0, live, threaded=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(f"http://127.0.0.1:{server.server_port}/login/")
        tab.evaluate(
            "() => { const b = document.createElement('button'); b.id = 'go';"
            " b.setAttribute('data-pb-click', 'hello'); document.body.append(b); }"
        )
        tab.click("#go")
        tab.wait_for_function(
            "document.getElementById('error').textContent === 'hello from an event'"
        )
    finally:
        context.close()
        server.shutdown()
        server.server_close()
        thread.join()
