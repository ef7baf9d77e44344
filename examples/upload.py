"""Uploading a file through ``data-pb-submit``: no page load, no history entry.

The form's file arrives in ``event.files``; the handler reports its name and size and
shows its text, escaped (it is data: ``set_text`` never makes markup of it). A body
larger than ``max_body_bytes`` is refused before any handler runs: the client gets a
``413`` answer and dispatches ``piggyback:error`` with the code ``too_large``, which this
page shows; the page keeps working.

Text pasted into the text area arrives as ``event.value``, however long: past about
2,000 bytes of URL the client sends it in a POST body instead of the query string.

Run it with ``gunicorn -w 4 examples.upload:app`` and open http://127.0.0.1:8000/.
"""

from __future__ import annotations

import hashlib
import typing as t

from piggyback import Event
from piggyback import Page
from piggyback import Piggyback

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

#: The largest event body accepted, in bytes: the file and the rest of the form.
MAX_BODY = 64 * 1024
#: How much of a file's text the page shows.
SHOWN = 4000

PAGE = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>piggyback upload</title>
  <style>
    body { font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
    input, button { font: inherit; }
    pre { background: #f4f4f4; padding: .5rem; white-space: pre-wrap; }
    #problem { color: #b00020; }
  </style>
</head>
<body>
  <h1>Upload a text file</h1>
  <form id="upload" data-pb-submit="upload">
    <input type="file" id="file" name="file">
    <label>Note <input id="note" name="note"></label>
    <button id="send">Upload</button>
  </form>
  <p>At most 64 kB.</p>
  <p id="result" role="status"></p>
  <p id="problem" role="alert"></p>
  <p><label for="text">Or paste some text:</label><br>
    <textarea id="text" rows="6" cols="60" data-pb-change="paste"></textarea></p>
  <pre id="content"></pre>
  <script>
    document.addEventListener("piggyback:send", function () {
      document.getElementById("problem").textContent = "";
    });
    document.addEventListener("piggyback:error", function (event) {
      var code = event.detail.code ? " (" + event.detail.code + ")" : "";
      document.getElementById("problem").textContent = event.detail.reason + code;
    });
  </script>
</body>
</html>
"""


def index(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """The only page of the app."""
    if environ["PATH_INFO"] != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found"]
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))],
    )
    return [PAGE]


app = live = Piggyback(index, max_body_bytes=MAX_BODY)


@live.handler
def upload(page: Page, event: Event) -> None:
    """Reports the file's name and size, and shows its text."""
    file = event.files.get("file")
    if file is None or not file.filename:
        page.set_text("result", "Choose a file first.")
        page.set_text("content", "")
        return
    data = file.read()
    note = event.form.get("note", "")
    page.set_text("result", f"{file.filename}: {len(data)} bytes" + (f" ({note})" if note else ""))
    page.set_text("content", data[:SHOWN].decode("utf-8", "replace"))


@live.handler
def paste(page: Page, event: Event) -> None:
    """Reports the pasted text's length and digest, and shows its start."""
    text = event.value or ""
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    page.set_text("result", f"pasted: {len(text)} characters, sha256 {digest}")
    page.set_text("content", text[:SHOWN])


if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", 8000, app, threaded=True)
