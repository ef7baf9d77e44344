"""Upload progress in headless Chromium: ``piggyback:progress`` and ``--pb-progress``.

A 5 MB file goes through a connection throttled with the DevTools protocol
(``Network.emulateNetworkConditions``) to the fake server of ``test_client_js.py``. The
try's timeout (``data-timeout``, 1 s here) is shorter than the upload: it counts from the
last progress, so the file arrives once. Events wait behind an upload (one event at a
time, in order). The iframe transport cannot report progress.
"""

# ruff: noqa: F811 (the fixtures are imported from test_client_js)

from __future__ import annotations

import typing as t

from .test_client_js import chromium  # noqa: F401
from .test_client_js import FakeServer
from .test_client_js import open_page
from .test_client_js import pytestmark  # noqa: F401
from .test_client_js import seen
from .test_client_js import server  # noqa: F401
from .test_client_js import tab  # noqa: F401
from .test_client_js import wait_seen
from .test_client_js import wait_until

SIZE = 5 * 1024 * 1024
#: Bytes per second: the upload takes a few seconds, longer than the 1 s timeout.
THROUGHPUT = 2 * 1024 * 1024

UPLOAD = """
  <form id="form" data-pb-submit="upload">
    <input type="file" id="file" name="file"><input name="note" value="big">
    <button id="send">send</button>
  </form>
  <button id="go" data-pb-click="go">go</button>
  <script nonce="abc">
    window.progress = [];
    window.bars = [];  // each --pb-progress the form is given
    new MutationObserver(function () {
      window.bars.push(document.getElementById("form").style.getPropertyValue("--pb-progress"));
    }).observe(document.getElementById("form"), {attributes: true, attributeFilter: ["style"]});
    document.addEventListener("piggyback:progress", function (event) {
      window.progress.push([event.target.id, event.detail.loaded, event.detail.total,
        Number(event.target.style.getPropertyValue("--pb-progress"))]);
    });
  </script>
"""


def test_a_throttled_upload_reports_progress_and_arrives_once(
    tab: t.Any, server: FakeServer
) -> None:
    page = open_page(tab, server, UPLOAD, timeout="1000")
    payload = bytes(range(256)) * (SIZE // 256)
    tab.set_input_files(
        "#file", {"name": "big.bin", "mimeType": "application/octet-stream", "buffer": payload}
    )
    cdp = tab.context.new_cdp_session(tab)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": THROUGHPUT,
        },
    )
    tab.evaluate("document.getElementById('form').style.setProperty('--pb-progress', 1)")
    tab.click("#send")
    tab.wait_for_function("() => window.progress.length >= 2")
    tab.click("#go")  # waits behind the upload
    wait_seen(tab, "done", 2, timeout=30000)

    assert [r["h"] for r in page.requests] == ["upload", "go"]
    assert page.max_active == 1
    assert page.carried[0].files == {"file": [("big.bin", payload)]}
    assert page.carried[0].form == {"note": ["big"]}
    progress = tab.evaluate("window.progress")
    assert len(progress) >= 3
    assert {target for target, *_ in progress} == {"form"}
    loaded = [item[1] for item in progress]
    assert loaded == sorted(loaded) and loaded[0] < loaded[-1]
    total = progress[-1][2]
    assert total > SIZE and loaded[-1] == total
    assert [item[3] for item in progress] == [item[1] / item[2] for item in progress]
    assert progress[-1][3] == 1
    # An earlier upload's 1 goes back to 0 first.
    assert tab.evaluate("window.bars")[:2] == ["1", "0"]
    assert seen(tab, "error") == []


def test_the_iframe_transport_reports_no_progress(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, UPLOAD, transport="iframe")
    tab.set_input_files(
        "#file", {"name": "a.txt", "mimeType": "text/plain", "buffer": b"x" * 100_000}
    )
    tab.click("#send")
    wait_seen(tab, "done", 1)

    wait_until(lambda: len(page.requests) == 1)
    assert page.carried[0].files == {"file": [("a.txt", b"x" * 100_000)]}
    assert page.carried[0].dest == "iframe"
    assert tab.evaluate("window.progress") == []
