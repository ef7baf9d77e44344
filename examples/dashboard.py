"""A dashboard that needs no JavaScript of its own: piggyback's markup does it all.

- **Live validation with morphing**: the sign-up form sends its fields as you type
  (``data-pb-input`` on the form, ``data-pb-debounce``); the server renders the whole form
  again with its messages and ``page.morph`` fits it into the page, so what you type, the
  focus and the caret stay.
- **A debounced search** over the tasks, and a **filter synced with the URL**:
  ``page.push_url`` adds a history entry, and back and forward send ``navigate`` (named by
  ``data-pb-popstate`` on ``<body>``), which shows the filter of that URL. Reloading a
  pushed URL renders the same list: it is the app's ordinary GET.
- **A confirm** before a task is deleted (``data-pb-confirm``).
- **An upload with a progress bar**: the form's ``--pb-progress`` property drives the bar.
- **A clock** that refreshes every 5 seconds (``data-pb-every``) while the tab is shown.

Run it with ``gunicorn -w 4 examples.dashboard:app`` and open http://127.0.0.1:8000/.
"""

from __future__ import annotations

import re
import time
import typing as t
from urllib.parse import parse_qs
from urllib.parse import urlsplit

from markupsafe import Markup

from piggyback import Event
from piggyback import Page
from piggyback import Piggyback

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

#: The largest upload accepted, in bytes.
MAX_BODY = 20 * 1024 * 1024
FILTERS = ("all", "open", "done")
TASKS = [
    {"id": 1, "title": "Write the release notes", "done": False},
    {"id": 2, "title": "Review the morphing code", "done": True},
    {"id": 3, "title": "Benchmark the iframe transport", "done": False},
    {"id": 4, "title": "Answer the upload question", "done": True},
    {"id": 5, "title": "Plan the next round", "done": False},
]
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>piggyback dashboard</title>
  <style>
    body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }}
    input, button {{ font: inherit; }}
    [aria-invalid="true"] {{ border-color: #b00020; }}
    .error {{ color: #b00020; }}
    .done {{ text-decoration: line-through; }}
    nav a[aria-current] {{ font-weight: bold; }}
    .track {{ height: .5rem; background: #eee; }}
    .bar {{ height: 100%; background: #2a7; width: calc(var(--pb-progress, 0) * 100%); }}
    #upload.pb-busy button {{ opacity: .5; }}
  </style>
</head>
<body data-pb-popstate="navigate">
  <h1>Dashboard</h1>
  <p id="clock" data-pb-click="clock" data-pb-every="5">{clock}</p>
  <h2>Sign up</h2>
  {signup}
  <h2>Tasks</h2>
  <input id="search" type="search" placeholder="Search" aria-label="Search tasks"
         data-pb-input="search" data-pb-debounce="300">
  {tasks}
  <h2>Upload</h2>
  <form id="upload" data-pb-submit="upload">
    <input type="file" id="file" name="file"> <button id="send">Upload</button>
    <div class="track"><div class="bar"></div></div>
    <p id="uploaded" role="status"></p>
  </form>
</body>
</html>
"""


def render_signup(fields: dict[str, str], check: bool) -> Markup:
    """The sign-up form; with ``check``, each field's problem next to it."""
    problems = problems_of(fields) if check else {}
    rows = Markup("").join(
        Markup(
            '<p><label>{label} <input id="signup-{name}" name="{name}" value="{value}"'
            ' aria-invalid="{invalid}"></label> <span class="error" id="signup-{name}-error">'
            "{problem}</span></p>"
        ).format(
            label=label,
            name=name,
            value=fields.get(name, ""),
            invalid="true" if name in problems else "false",
            problem=problems.get(name, ""),
        )
        for name, label in (("name", "Name"), ("email", "Email"))
    )
    done = check and not problems and all(fields.get(name) for name in ("name", "email"))
    return Markup(
        '<form id="signup" data-pb-input="validate" data-pb-debounce="200"'
        ' data-pb-submit="register">{rows}<button{disabled}>Sign up</button></form>'
    ).format(rows=rows, disabled="" if done else Markup(" disabled"))


def problems_of(fields: dict[str, str]) -> dict[str, str]:
    """What is wrong with each field that has been filled in."""
    problems = {}
    name, email = fields.get("name", "").strip(), fields.get("email", "").strip()
    if name and len(name) < 2:
        problems["name"] = "At least two letters."
    if email and not EMAIL.match(email):
        problems["email"] = "That is not an email address yet."
    return problems


def render_tasks(page: Page, filter: str, query: str = "") -> Markup:
    """The filter links and the tasks that pass the filter and the search."""
    deleted = set(page.state.get("deleted", []))
    links = Markup(" ").join(
        Markup(
            '<a href="?filter={name}" data-pb-click="set_filter" data-pb-args=\'{{"filter":'
            ' "{name}"}}\'{current}>{name}</a>'
        ).format(name=name, current=Markup(' aria-current="page"') if name == filter else "")
        for name in FILTERS
    )
    items = Markup("").join(
        Markup(
            '<li id="task-{id}" class="{state}">{title} <button data-pb-click="delete_task"'
            ' data-pb-args=\'{{"id": {id}}}\' data-pb-confirm="Delete “{title}”?">'
            "Delete</button></li>"
        ).format(id=task["id"], title=task["title"], state="done" if task["done"] else "open")
        for task in TASKS
        if task["id"] not in deleted
        and (filter == "all" or (filter == "done") == task["done"])
        and query.lower() in str(task["title"]).lower()
    )
    return Markup('<section id="tasks"><nav>{links}</nav><ul>{items}</ul></section>').format(
        links=links, items=items or Markup("<li>Nothing here.</li>")
    )


def filter_of(url: str) -> str:
    """The filter a URL's query names, or ``all``."""
    name = parse_qs(urlsplit(url).query).get("filter", ["all"])[0]
    return name if name in FILTERS else "all"


def index(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """The page, showing the filter of its URL."""
    if environ["PATH_INFO"] != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found"]
    page: Page = environ["piggyback.page"]
    filter = filter_of("?" + environ.get("QUERY_STRING", ""))
    page.state["filter"] = filter
    body = PAGE.format(
        clock=time.strftime("%H:%M:%S"),
        signup=render_signup({}, check=False),
        tasks=render_tasks(page, filter),
    ).encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


app = live = Piggyback(index, max_body_bytes=MAX_BODY)


@live.handler("validate")
def validate_signup(page: Page, event: Event) -> None:
    """Shows each field's problem as the user types; what they typed stays."""
    page.morph("signup", render_signup(event.form.to_dict(), check=True))


@live.handler
def register(page: Page, event: Event) -> None:
    fields = event.form.to_dict()
    if problems_of(fields) or not all(fields.get(name) for name in ("name", "email")):
        page.morph("signup", render_signup(fields, check=True))
        return
    welcome = Markup('<form id="signup"><p id="welcome">Welcome, {}!</p></form>')
    page.morph("signup", welcome.format(fields["name"]))


@live.handler
def search(page: Page, event: Event) -> None:
    page.state["query"] = event.value or ""
    page.morph("tasks", render_tasks(page, page.state.get("filter", "all"), event.value or ""))


@live.handler
def set_filter(page: Page, event: Event) -> None:
    """A filter link: the list, and a history entry for its URL."""
    filter = str(event.args.get("filter"))
    if filter not in FILTERS:
        return
    page.state["filter"] = filter
    page.morph("tasks", render_tasks(page, filter, page.state.get("query", "")))
    page.push_url(f"/?filter={filter}")


@live.handler
def navigate(page: Page, event: Event) -> None:
    """Back or forward: show the filter of the URL the browser went to."""
    filter = page.state["filter"] = filter_of(event.value or "")
    page.morph("tasks", render_tasks(page, filter, page.state.get("query", "")))


@live.handler
def delete_task(page: Page, event: Event) -> None:
    task_id = int(event.args["id"])
    if task_id not in {task["id"] for task in TASKS}:
        return  # only the ids this page shows: the state stays small, whatever is sent
    deleted = page.state.setdefault("deleted", [])
    if task_id not in deleted:
        deleted.append(task_id)
    page.remove(f"task-{task_id}")


@live.handler
def upload(page: Page, event: Event) -> None:
    file = event.files.get("file")
    if file is None or not file.filename:
        page.set_text("uploaded", "Choose a file first.")
        return
    size = len(file.read())
    page.set_text("uploaded", f"{file.filename}: {size:,} bytes")


@live.handler
def clock(page: Page, event: Event) -> None:
    page.set_text("clock", time.strftime("%H:%M:%S"))


if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", 8000, app, threaded=True)
