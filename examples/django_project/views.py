"""The views, and the handlers: a handler's ``event.host_request`` is an HttpRequest.

- **Login-protected handlers**: the ``require_login`` hook runs before every handler
  and sends a signed-out page to the login view, as ``@login_required`` does for
  ``index``.
- **A rendered block**: ``add_note`` appends ``templates/note.html``, rendered by
  ``render_to_string``, whose result is a safe string: ``page.append`` inserts it as
  HTML, with the note autoescaped by Django's templates.
- **Logout ends the pages**: each page joins the group ``user:<pk>`` when it is
  rendered; Django's ``user_logged_out`` signal expires that group, so every open tab
  of the user gets ``piggyback:expired`` and receives nothing more.
"""

from __future__ import annotations

import typing as t

from django.contrib.auth import authenticate
from django.contrib.auth import login
from django.contrib.auth import logout
from django.contrib.auth import user_logged_out
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest
from django.http import HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.utils.html import format_html
from django.utils.html import format_html_join
from django.views.decorators.http import require_POST

from piggyback import Event
from piggyback import Page
from piggyback import Piggyback

#: Notes kept per session, at most.
MAX_NOTES = 20

INDEX = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>piggyback on Django</title></head>
<body>
  <p>Signed in as <strong id="user">{user}</strong>.
    <form method="post" action="/logout/">
    <input type="hidden" name="csrfmiddlewaretoken" value="{csrf}">
    <button id="log-out">Sign out</button></form></p>
  <p>Count, kept in your session: <strong id="count">{count}</strong>
    <button id="increment" data-pb-click="increment">+1</button>
    <button id="reset" data-pb-click="reset">reset</button></p>
  <form id="add-note" data-pb-submit="add_note">
    <input id="note-text" name="text" placeholder="A note" autocomplete="off">
    <button>Add</button></form>
  <ul id="notes">{notes}</ul>
</body>
</html>
"""

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


def user_group(user: t.Any) -> str:
    return f"user:{user.pk}"


@login_required
def index(request: HttpRequest) -> HttpResponse:
    request.environ["piggyback.page"].join(user_group(request.user))
    notes = request.session.get("notes", [])
    html = format_html(
        INDEX,
        user=request.user.get_username(),
        csrf=get_token(request),
        count=request.session.get("count", 0),
        notes=format_html_join(
            "", "{}", ((render_to_string("note.html", {"note": n}),) for n in notes)
        ),
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
            return redirect(_local(request.GET.get("next")) or "/")
        error = "Wrong username or password."
    return HttpResponse(format_html(LOGIN_PAGE, csrf=get_token(request), error=error))


@require_POST
def log_out(request: HttpRequest) -> HttpResponse:
    logout(request)  # sends user_logged_out: see install()
    return redirect("/login/")


def _local(url: str | None) -> str | None:
    """``url`` if it stays on this site, else ``None``."""
    if url and url.startswith("/") and not url.startswith(("//", "/\\")):
        return url
    return None


def require_login(page: Page, event: Event) -> HttpResponse | None:
    """Every handler requires a signed-in user: the others go to the login view."""
    from django.contrib.auth.views import redirect_to_login  # needs the apps loaded

    if event.host_request.user.is_authenticated:
        return None
    return redirect_to_login("/")


def increment(page: Page, event: Event) -> None:
    request = event.host_request
    request.session["count"] = request.session.get("count", 0) + 1
    page.set_text("count", request.session["count"])


def reset(page: Page, event: Event) -> None:
    request = event.host_request
    request.session.pop("count", None)
    page.set_text("count", 0)


def add_note(page: Page, event: Event) -> None:
    """Appends the note, rendered by ``templates/note.html``: a safe string."""
    request = event.host_request
    text = event.form.get("text", "").strip()[:200]
    if not text:
        return
    request.session["notes"] = [*request.session.get("notes", []), text][-MAX_NOTES:]
    page.append("notes", render_to_string("note.html", {"note": text}))
    page.set_value("note-text", "")


#: The handlers :func:`install` registers.
HANDLERS = (increment, reset, add_note)


def install(live: Piggyback) -> None:
    """Register the handlers and the login hook, and end a user's pages at logout."""
    live.before_event(require_login)
    for handler in HANDLERS:
        live.handler(handler)

    def end_pages(sender: t.Any, request: HttpRequest, user: t.Any, **kwargs: t.Any) -> None:
        if user is not None:
            live.group(user_group(user)).expire()

    user_logged_out.connect(end_pages, weak=False)
