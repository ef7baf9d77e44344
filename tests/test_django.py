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
from http.cookiejar import CookieJar
from pathlib import Path

import pytest
from django.conf import settings

from examples.django_project import settings as example_settings
from piggyback import Event
from piggyback import Page
from piggyback import Piggyback
from piggyback.django import DjangoRunner
from piggyback.django import wrap
from piggyback.stores import MemoryStore
from piggyback.testing import Client
from piggyback.testing import HandlerFailed
from piggyback.testing import read_reply

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
    for handler in views.HANDLERS:
        live.handler(handler)
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
    page = client.open("/")
    assert client.fire(page, "increment") == [
        ["text", "count", "1"],
        ["text", "user", "nobody"],
    ]
    assert recorder.cookie_names() == ["sessionid"]
    assert client.fire(page, "increment")[0] == ["text", "count", "2"]
    assert shown(client.http.get("/").text, "count") == "2"


def test_handler_sees_the_logged_in_user(django_app: WSGIApplication) -> None:
    client = Client(example(django_app))
    log_in(client, "ada", "lovelace")
    page = client.open("/")
    assert client.fire(page, "increment") == [
        ["text", "count", "1"],
        ["text", "user", "ada"],
    ]
    html = client.http.get("/").text
    assert (shown(html, "user"), shown(html, "count")) == ("ada", "1")
    client.http.post("/logout/", data={"csrfmiddlewaretoken": _CSRF.findall(html)[0]})
    assert client.fire(page, "reset") == [
        ["text", "count", "0"],
        ["text", "user", "nobody"],
    ]


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
    client.fire(client.open("/"), "look")
    assert seen == [WSGIRequest, ("/_pb/event", "look", "AnonymousUser"), None]


def test_failed_handler_saves_no_session(django_app: WSGIApplication) -> None:
    live = example(django_app)

    @live.handler
    def boom(page: Page, event: Event) -> None:
        event.host_request.session["count"] = 99
        raise RuntimeError("boom")

    recorder = Recorder(live)
    client = Client(live, app=recorder)
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
    page = client.open("/")
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

    live = example(django_app)

    @live.handler
    def sign_in(page: Page, event: Event) -> None:
        login(event.host_request, User.objects.get(username="ada"))

    client = Client(live)
    page = client.open("/")
    client.fire(page, "increment")
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
    client.fire(client.open("/"), "look")
    assert seen == [(True, False)]


def test_middleware_that_answers_fails_the_event(
    django_app: WSGIApplication, caplog: pytest.LogCaptureFixture
) -> None:
    live = wrap(django_app, store=MemoryStore(), middleware=[f"{__name__}.Refuse"])
    ran = []

    @live.handler
    def never(page: Page, event: Event) -> None:
        ran.append(event)

    client = Client(live)
    with pytest.raises(HandlerFailed):
        client.fire(client.open("/"), "never")
    assert ran == []
    assert caplog.records[-1].exc_info is not None
    assert str(caplog.records[-1].exc_info[1]) == (
        "A middleware answered the event with status 403 instead of running its"
        " handler; middleware: ('tests.test_django.Refuse',)."
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
            assert reply["batches"] == [
                {
                    "seq": seq,
                    "commands": [["text", "count", str(seq)], ["text", "user", "ada"]],
                }
            ]
        html = get(f"{url}/")
    assert (shown(html, "user"), shown(html, "count")) == ("ada", "8")
