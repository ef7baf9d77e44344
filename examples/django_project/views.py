"""The views, and the handlers: a handler's ``event.host_request`` is an HttpRequest."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.contrib.auth import login
from django.contrib.auth import logout
from django.http import HttpRequest
from django.http import HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from piggyback import Event
from piggyback import Page

INDEX = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>piggyback on Django</title></head>
<body>
  <p>Signed in as <strong id="user">{user}</strong>. {account}</p>
  <p>Count, kept in your session: <strong id="count">{count}</strong>
    <button id="increment" data-pb-click="increment">+1</button>
    <button id="reset" data-pb-click="reset">reset</button></p>
</body>
</html>
"""

LOG_IN = """<a href="/login/">Sign in</a>"""

LOG_OUT = """<form method="post" action="/logout/">
    <input type="hidden" name="csrfmiddlewaretoken" value="{csrf}">
    <button>Sign out</button></form>"""

LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in</title></head>
<body>
  <form method="post">
    <input type="hidden" name="csrfmiddlewaretoken" value="{csrf}">
    <p><label>Username <input name="username" autofocus></label></p>
    <p><label>Password <input name="password" type="password"></label></p>
    <p><button>Sign in</button> <span id="error">{error}</span></p>
  </form>
</body>
</html>
"""


def index(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        account = format_html(LOG_OUT, csrf=get_token(request))
    else:
        account = mark_safe(LOG_IN)
    html = format_html(
        INDEX,
        user=user_name(request),
        account=account,
        count=request.session.get("count", 0),
    )
    return HttpResponse(html)


def log_in(request: HttpRequest) -> HttpResponse:
    error = ""
    if request.method == "POST":
        user = authenticate(
            request,
            username=request.POST.get("username", ""),
            password=request.POST.get("password", ""),
        )
        if user is not None:
            login(request, user)
            return redirect("/")
        error = "Wrong username or password."
    return HttpResponse(format_html(LOGIN_PAGE, csrf=get_token(request), error=error))


@require_POST
def log_out(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("/")


def user_name(request: HttpRequest) -> str:
    if request.user.is_authenticated:
        return request.user.get_username()
    return "nobody"


def increment(page: Page, event: Event) -> None:
    request = event.host_request
    request.session["count"] = request.session.get("count", 0) + 1
    page.set_text("count", request.session["count"])
    page.set_text("user", user_name(request))


def reset(page: Page, event: Event) -> None:
    request = event.host_request
    request.session.pop("count", None)
    page.set_text("count", 0)
    page.set_text("user", user_name(request))


#: The handlers ``wsgi.py`` registers.
HANDLERS = (increment, reset)
