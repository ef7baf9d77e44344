"""A to-do list: forms submitted with ``data-pb-submit``, checked on the server.

Each form sends its fields (``event.form``) and never navigates. A title that is empty
or too long is refused by the server, which puts the reason next to the field; nothing
is added or changed. The list lives in ``page.state``: each open page has its own.

Run it with ``gunicorn -w 4 examples.todo:app`` (the default SQLite store) and open
http://127.0.0.1:8000/.
"""

from __future__ import annotations

import typing as t

from markupsafe import Markup

from piggyback import Event
from piggyback import Page
from piggyback import Piggyback

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

#: The longest title accepted, in characters.
MAX_TITLE = 80
#: Items one page keeps: ``page.state`` is read and written with every event.
MAX_ITEMS = 100

PAGE = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>piggyback to-do</title>
  <style>
    body { font: 16px/1.5 system-ui, sans-serif; max-width: 36rem; margin: 2rem auto; }
    input, button { font: inherit; }
    form { display: inline; }
    .error { color: #b00020; margin-left: .5rem; }
    .pb-busy { opacity: .6; }
  </style>
</head>
<body>
  <h1>To do</h1>
  <form id="add" data-pb-submit="add_item">
    <input id="add-title" name="title" placeholder="Something to do" autocomplete="off"
           aria-describedby="add-error">
    <button>Add</button>
    <span id="add-error" class="error" role="alert"></span>
  </form>
  <ul id="items"></ul>
</body>
</html>
"""

ITEM = Markup(
    '<li id="item-{id}"><span id="item-{id}-title">{title}</span>\n'
    '  <form id="item-{id}-edit" data-pb-submit="edit_item" data-pb-args=\'{{"id": {id}}}\'>'
    '<input name="title" value="{title}" aria-label="New title"'
    ' aria-describedby="item-{id}-error"> <button>Save</button>'
    ' <button type="button" data-pb-click="delete_item" data-pb-args=\'{{"id": {id}}}\'>'
    "Delete</button>"
    ' <span id="item-{id}-error" class="error" role="alert"></span></form></li>'
)


def index(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """The only page of the app; a new page starts with an empty list."""
    if environ["PATH_INFO"] != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found"]
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))],
    )
    return [PAGE]


app = live = Piggyback(index)


def check_title(event: Event) -> tuple[str, str]:
    """The submitted title, stripped, and why it is refused (empty when it is fine)."""
    title = event.form.get("title", "").strip()
    if not title:
        return title, "Write a title first."
    if len(title) > MAX_TITLE:
        return title, f"Keep it to {MAX_TITLE} characters; this one has {len(title)}."
    return title, ""


def items(page: Page) -> dict[str, str]:
    """The page's items, by id (a string: ``page.state`` holds JSON)."""
    return t.cast("dict[str, str]", page.state.setdefault("items", {}))


@live.handler
def add_item(page: Page, event: Event) -> None:
    title, problem = check_title(event)
    if not problem and len(items(page)) >= MAX_ITEMS:
        problem = f"A list holds at most {MAX_ITEMS} items."
    page.set_text("add-error", problem)
    if problem:
        page.focus("add-title")
        return
    item_id = page.state["next"] = page.state.get("next", 0) + 1
    items(page)[str(item_id)] = title
    page.append("items", ITEM.format(id=item_id, title=title))
    page.set_value("add-title", "")


@live.handler
def edit_item(page: Page, event: Event) -> None:
    item_id = str(int(event.args["id"]))
    if item_id not in items(page):
        return
    title, problem = check_title(event)
    page.set_text(f"item-{item_id}-error", problem)
    if not problem:
        items(page)[item_id] = title
        page.set_text(f"item-{item_id}-title", title)


@live.handler
def delete_item(page: Page, event: Event) -> None:
    item_id = str(int(event.args["id"]))
    if items(page).pop(item_id, None) is not None:
        page.remove(f"item-{item_id}")


if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", 8000, app, threaded=True)
