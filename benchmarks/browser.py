"""Browser round trips: click, then the DOM updated, in headless Debian Chromium.

Every variant is a page with ``<span id="count">`` and a ``<button id="go">`` whose click
changes the span through the server, all pages served by the same gunicorn. Variants
run interleaved (one click of each in turn, in a new random order every round, so that
no variant always follows the same one), each in its own browser context so they share
no connections.

Two kinds of click:

- programmatic: one ``evaluate`` takes ``performance.now()``, calls ``button.click()``
  and resolves when a ``MutationObserver`` on the span fires; the difference is the
  round trip, all in page time, with nothing of Playwright inside it.
- trusted: ``page.mouse.click`` sends real input events through the browser process
  (what a user's click does). The page cannot run code before such a click, so the
  start is the click event's own ``timeStamp``, read by a capturing listener on
  ``window`` (it runs before any listener of the page, and ``timeStamp`` is when the
  browser created the event, in the same clock as ``performance.now()``). The end is
  the observer's ``performance.now()``. Playwright's own round trips fall outside.
"""

from __future__ import annotations

import importlib.util
import os
import random
import statistics
import time
import typing as t
from dataclasses import dataclass
from dataclasses import field

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

#: One row per way of updating the page: (name, path). ``?transport=NAME`` puts
#: ``data-transport="NAME"`` on piggyback's tag: one row per real transport.
VARIANTS: list[tuple[str, str]] = [
    ("raw fetch()", "/bench/raw"),
    ("htmx", "/bench/htmx"),
    ("plain hidden iframe", "/bench/raw-iframe"),
    ("plain form POST into a spare hidden frame", "/bench/raw-post"),
    ("raw fetch() of a piggyback event", "/bench/raw-event"),
    ("piggyback (default transport)", "/bench/pb"),
    ("piggyback data-transport=fetch", "/bench/pb?transport=fetch"),
    ("piggyback data-transport=iframe", "/bench/pb?transport=iframe"),
    ("piggyback data-transport=iframe, form POST", "/bench/pb?transport=iframe&form=1"),
]

#: Which request of each variant is "the event", for its bytes on the wire.
EVENT_PATHS = ("/bench/bump", "/bench/frame", "/_pb/event")

_SETUP = """() => {
  const bench = window.__bench = {t0: null, t1: null, resolve: null, done: null};
  window.addEventListener("click", (event) => { bench.t0 = event.timeStamp; }, true);
  new MutationObserver(() => {
    if (bench.t1 === null) {
      bench.t1 = performance.now();
      if (bench.resolve) bench.resolve();
    }
  }).observe(document.getElementById("count"),
             {childList: true, characterData: true, subtree: true});
  return document.visibilityState;
}"""

_PROGRAMMATIC = """() => new Promise((resolve, reject) => {
  const bench = window.__bench;
  bench.t1 = null;
  const t0 = performance.now();
  bench.resolve = () => resolve(bench.t1 - t0);
  setTimeout(() => reject(new Error("no DOM update in 10 s")), 10000);
  document.getElementById("go").click();
})"""

_ARM = """() => {
  const bench = window.__bench;
  bench.t0 = null;
  bench.t1 = null;
  bench.done = new Promise((resolve) => { bench.resolve = resolve; });
}"""

_TRUSTED_RESULT = """() => Promise.race([
  window.__bench.done.then(() => window.__bench.t1 - window.__bench.t0),
  new Promise((_, reject) => setTimeout(() => reject(new Error("no DOM update in 10 s")), 10000)),
])"""


def missing() -> str:
    """Why the browser rows cannot run here, or an empty string."""
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install playwright)"
    return ""


@dataclass
class RoundTrips:
    """Milliseconds per click, by variant and kind of click."""

    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: Bytes on the wire of one event, as Chromium counted them, by variant.
    wire: dict[str, dict[str, int]] = field(default_factory=dict)
    chromium: str = ""
    skipped: dict[str, str] = field(default_factory=dict)

    def median(self, variant: str, kind: str) -> float:
        return statistics.median(self.times[variant, kind])

    def p90(self, variant: str, kind: str) -> float:
        values = sorted(self.times[variant, kind])
        return values[min(len(values) - 1, int(0.9 * len(values)))]


def measure(
    base_url: str,
    variants: list[tuple[str, str]],
    *,
    clicks: int,
    warmup: int,
    progress: t.Callable[[str], None] = print,
) -> RoundTrips:
    """Click every variant ``clicks`` times per kind, interleaved; see the module doc."""
    from playwright.sync_api import sync_playwright

    results = RoundTrips()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            results.chromium = browser.version
            tabs = _open_tabs(browser, base_url, variants, progress)
            for kind, click in (("programmatic", _click_programmatic), ("trusted", _click_trusted)):
                for _ in range(warmup):
                    for tab in tabs.values():
                        tab.bring_to_front()
                        click(tab)
                shuffler = random.Random(0)  # the same orders in every run
                for _ in range(clicks):
                    names = list(tabs)
                    shuffler.shuffle(names)
                    for name in names:
                        tab = tabs[name]
                        tab.bring_to_front()
                        results.times.setdefault((name, kind), []).append(click(tab))
                progress(f"  {kind} clicks done")
            for name, tab in tabs.items():
                results.wire[name] = _event_bytes(tab)
        finally:
            browser.close()
    return results


def _open_tabs(
    browser: t.Any,
    base_url: str,
    variants: list[tuple[str, str]],
    progress: t.Callable[[str], None],
) -> dict[str, t.Any]:
    tabs = {}
    for name, path in variants:
        tab = browser.new_context().new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
        tab.goto(base_url + path)
        visibility = tab.evaluate(_SETUP)
        if errors:
            raise RuntimeError(f"{name} ({path}) has script errors: {errors}")
        box = tab.locator("#go").bounding_box()
        tab.bench_point = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        tabs[name] = tab
        progress(f"  opened {name} ({path}, {visibility})")
    return tabs


def _click_programmatic(tab: t.Any) -> float:
    return float(tab.evaluate(_PROGRAMMATIC))


def _click_trusted(tab: t.Any) -> float:
    tab.evaluate(_ARM)
    tab.mouse.click(*tab.bench_point)
    return float(tab.evaluate(_TRUSTED_RESULT))


def _event_bytes(tab: t.Any) -> dict[str, int]:
    """One more click, capturing its request: Chromium's count of its bytes."""
    with tab.expect_request(lambda r: any(p in r.url for p in EVENT_PATHS)) as info:
        _click_programmatic(tab)
    request = info.value
    response = request.response()
    if response is not None:
        response.finished()
    deadline = time.monotonic() + 5
    sizes = request.sizes()
    while sizes.get("responseBodySize", 0) <= 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        sizes = request.sizes()
    return {
        "request_headers": sizes["requestHeadersSize"],
        "request_body": max(sizes["requestBodySize"], 0),
        "response_headers": sizes["responseHeadersSize"],
        "response_body": sizes["responseBodySize"],
    }
