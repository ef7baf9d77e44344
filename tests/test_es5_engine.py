"""piggyback.js's core logic in an ECMAScript 5 engine: Debian's mujs, with a DOM stub.

mujs implements ES5 and nothing later (no ``let``, no ``Promise``, no ``Object.assign``,
no ``String.prototype.includes``), and the stub (``tests/es5/dom_stub.js``) has no
``fetch``, so the real client file runs here the way it runs in an old browser: on the
hidden-iframe transport. The stub's timers run on a fake clock the test advances; its
iframes record every navigation as a request and load the answer document the test
hands over, built by the real ``piggyback.script.answer_document``, whose script calls
``parent.piggyback.receive`` as it does in a browser.

A test adds steps to a :class:`StubBrowser` and calls :meth:`StubBrowser.run`, which
runs a fresh engine through every step so far (the stub is deterministic) and returns
what the page saw.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import typing as t
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl
from urllib.parse import urlsplit

import pytest

from piggyback.script import answer_document

ROOT = Path(__file__).resolve().parent.parent
CLIENT_JS = ROOT / "piggyback" / "js" / "piggyback.js"
DOM_STUB = ROOT / "tests" / "es5" / "dom_stub.js"
DRIVER = ROOT / "tests" / "es5" / "driver.js"
ENGINE = "mujs"
TIMEOUT_MS = 1000
ERROR_PAGE = "<!doctype html><title>502 Bad Gateway</title><h1>Bad Gateway</h1>"

Reply = dict[str, t.Any]


@dataclass
class Request:
    """One request the client made, as the stub's iframe carried it."""

    method: str
    #: ``"replace"``: the frame's ``location.replace``; ``"submit"``: a form post.
    via: str
    path: str
    query: dict[str, str]
    #: The number of the frame that carried it, and that frame's window name.
    frame: int
    name: str
    fields: dict[str, str] | None
    #: The frame was removed or navigated again before an answer came.
    stopped: bool


@dataclass
class Seen:
    """What the page saw: requests, ``piggyback:*`` events, commands' effects."""

    fetch: str
    api: list[str]
    requests: list[Request]
    events: list[dict[str, t.Any]]
    calls: list[list[t.Any]]
    console: list[str]
    reloads: int
    frames: list[dict[str, t.Any]]
    forms: int
    texts: dict[str, str]
    busy: list[str]
    listeners: list[str]

    def sent(self, key: str) -> list[str | None]:
        """Parameter ``key`` of each request, in order (None where absent)."""
        return [request.query.get(key) for request in self.requests]

    def of_type(self, name: str) -> list[dict[str, t.Any]]:
        """The details of the ``piggyback:<name>`` events, in order."""
        return [event["detail"] for event in self.events if event["type"] == name]


def _request(raw: dict[str, t.Any]) -> Request:
    url = urlsplit(raw["url"])
    pairs = parse_qsl(url.query, keep_blank_values=True)
    names = [name for name, _ in pairs]
    # protocol.md: each parameter appears at most once.
    assert len(names) == len(set(names)), raw["url"]
    return Request(
        method=raw["method"],
        via=raw["via"],
        path=url.path,
        query=dict(pairs),
        frame=raw["frame"],
        name=raw["name"],
        fields=raw.get("fields"),
        stopped=raw["stopped"],
    )


class StubBrowser:
    """A page with piggyback.js in the stub browser, driven step by step."""

    def __init__(self, engine: str, plan_file: Path) -> None:
        self.engine = engine
        self.plan_file = plan_file
        self.data = {
            "token": "t0",
            "endpoint": "/_pb/event",
            "deploy": "d1",
            "timeout": str(TIMEOUT_MS),
        }
        self.elements: list[dict[str, t.Any]] = []
        self.loads = 1
        #: Whether the browser has ``document.currentScript`` (Internet Explorer has not).
        self.current_script = True
        self.steps: list[list[t.Any]] = []

    def element(self, tag: str, **attributes: str) -> None:
        """Put an element in the page's body (before the client loads)."""
        self.elements.append({"tag": tag, "attributes": attributes})

    def send(
        self, handler: str | None, args: dict[str, t.Any] | None = None, element: str = ""
    ) -> None:
        """``piggyback.send(handler, args, element)``, the element given by its id."""
        self.steps.append(["send", handler, args, element])

    def dom_event(self, name: str, element: str) -> None:
        """A DOM event ``name`` on the element with id ``element``, bubbling to ``document``."""
        self.steps.append(["dom", name, element])

    def advance(self, ms: int) -> None:
        """Move the fake clock on by ``ms``, running the timers due."""
        self.steps.append(["advance", ms])

    def answer(self, reply: Reply, request: int = -1) -> None:
        """Load the answer document of ``reply`` into the frame of ``request``."""
        document, _ = answer_document(reply)
        self.steps.append(["deliver", request, document.decode()])

    def load_error_page(self, request: int = -1) -> None:
        """Load a page that does not report back (a proxy's error page)."""
        self.steps.append(["deliver", request, ERROR_PAGE])

    def receive(self, reply: Reply) -> None:
        """Hand ``reply`` to ``piggyback.receive`` directly."""
        self.steps.append(["receive", reply])

    def keep_expired(self) -> None:
        """A listener that cancels ``piggyback:expired`` (the app handles it)."""
        self.steps.append(["keepExpired"])

    def run(self) -> Seen:
        """Run a fresh engine through every step so far; what the page saw."""
        page = {
            "loads": self.loads,
            "currentScript": self.current_script,
            "nonce": "n0",
            "data": self.data,
            "elements": self.elements,
        }
        plan = {"page": page, "steps": self.steps}
        self.plan_file.write_text(json.dumps(plan), encoding="utf-8")
        command = [self.engine, str(DRIVER), str(DOM_STUB), str(CLIENT_JS), str(self.plan_file)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"{ENGINE} failed ({done.returncode}):\n{done.stderr}")
        try:
            raw = json.loads(done.stdout)
        except ValueError:
            raise AssertionError(f"{ENGINE} printed more than the page:\n{done.stdout}") from None
        return Seen(
            fetch=raw["fetch"],
            api=raw["api"],
            requests=[_request(request) for request in raw["requests"]],
            events=raw["seen"],
            calls=raw["calls"],
            console=raw["console"],
            reloads=raw["reloads"],
            frames=raw["frames"],
            forms=raw["forms"],
            texts=dict(raw["texts"]),
            busy=raw["busy"],
            listeners=raw["listeners"],
        )


@pytest.fixture(scope="session")
def engine() -> str:
    """The mujs binary; missing, every test here fails (CI installs it: ``.ci/run``)."""
    path = shutil.which(ENGINE)
    if path is None:
        pytest.fail(f"{ENGINE!r} is not installed: apt-get install mujs (.ci/run does)")
    return path


@pytest.fixture
def page(engine: str, tmp_path: Path) -> StubBrowser:
    return StubBrowser(engine, tmp_path / "plan.json")


def reply(seq: int, *batches: dict[str, t.Any], **extra: t.Any) -> Reply:
    """An answered event's reply (protocol.md, REPLY)."""
    return {"seq": seq, "token": f"t{seq}", "batches": list(batches), **extra}


def batch(seq: int, *commands: list[t.Any]) -> dict[str, t.Any]:
    return {"seq": seq, "commands": list(commands)}


def record(*args: t.Any) -> list[t.Any]:
    """A command that calls the page's ``record`` function, to see what ran and when."""
    return ["call", "record", list(args)]


def test_the_engine_is_es5_only(engine: str, tmp_path: Path) -> None:
    # What makes the engine worth running: code from after ES5 fails in it.
    probe = tmp_path / "probe.js"
    probe.write_text(
        "print([typeof Promise, typeof Object.assign, typeof ''.includes, typeof Symbol]);"
    )
    done = subprocess.run([engine, str(probe)], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["undefined,undefined,undefined,undefined"]
    probe.write_text("let x = 1;")
    done = subprocess.run([engine, str(probe)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "SyntaxError" in done.stderr


def test_without_fetch_the_hidden_iframe_carries_the_event(page: StubBrowser) -> None:
    page.element("button", id="go", **{"data-pb-click": "go", "data-pb-args": '{"by": 2}'})
    page.dom_event("click", "go")
    seen = page.run()
    assert seen.fetch == "undefined"
    assert seen.api == ["morph", "receive", "send", "transport"]
    [request] = seen.requests
    assert (request.method, request.via, request.path) == ("GET", "replace", "/_pb/event")
    assert request.query == {
        "p": "t0",
        "s": "1",
        "a": "0",
        "h": "go",
        "d": "d1",
        "e": "click",
        "t": "go",
        "g": '{"by":2}',
    }
    # One hidden frame, a child of <html>, named for form posts.
    assert seen.frames == [{"number": request.frame, "name": "piggyback", "display": "none"}]
    assert seen.busy == ["go"]
    assert [event["type"] for event in seen.events] == ["send"]


def test_without_current_script_the_client_finds_its_tag_by_the_token(page: StubBrowser) -> None:
    page.current_script = False  # Internet Explorer 11
    page.send("one")
    seen = page.run()
    assert [(request.path, request.query["p"]) for request in seen.requests] == [
        ("/_pb/event", "t0")
    ]


def test_events_go_one_at_a_time_in_order(page: StubBrowser) -> None:
    for handler in ("one", "two", "three"):
        page.send(handler)
    assert page.run().sent("h") == ["one"]
    page.answer(reply(1, batch(1, record("one"))))
    assert page.run().sent("h") == ["one", "two"]
    page.answer(reply(2, batch(2, record("two"))))
    page.answer(reply(3, batch(3, record("three"))))
    seen = page.run()
    assert seen.sent("h") == ["one", "two", "three"]
    assert seen.sent("s") == ["1", "2", "3"]
    assert seen.calls == [["one"], ["two"], ["three"]]
    assert [(event["type"], event["detail"]["seq"]) for event in seen.events] == [
        ("send", 1),
        ("done", 1),
        ("send", 2),
        ("done", 2),
        ("send", 3),
        ("done", 3),
    ]
    # The next GET reuses the frame: one frame carried all three.
    assert len({request.frame for request in seen.requests}) == 1


def test_each_request_acknowledges_the_highest_batch_applied(page: StubBrowser) -> None:
    for handler in ("one", "two", "three", "four"):
        page.send(handler)
    page.answer(reply(1))  # no batch: nothing to acknowledge yet
    page.answer(reply(2, batch(1, record(1)), batch(2, record(2))))
    page.answer(reply(3, batch(3)))
    seen = page.run()
    assert seen.sent("s") == ["1", "2", "3", "4"]
    assert seen.sent("a") == ["0", "0", "2", "3"]
    # Each answer's token replaces the one the page was rendered with.
    assert seen.sent("p") == ["t0", "t1", "t2", "t3"]
    # A redelivered batch runs before the newer one.
    assert seen.calls == [[1], [2]]


def test_a_batch_is_never_applied_twice(page: StubBrowser) -> None:
    page.element("p", id="out")
    for handler in ("one", "two", "three"):
        page.send(handler)
    page.answer(reply(1, batch(1, record("one"), ["text", "out", "1"])))
    # A late copy of answer 1 while 2 is in flight: another seq, ignored.
    page.receive(reply(1, batch(1, record("one again"))))
    # A reply that carries the applied batch again, before the new one.
    page.answer(reply(2, batch(1, record("one again")), batch(2, record("two"))))
    page.answer(reply(3, batch(3, record("three"))))
    # The same answer again, once the event it answered is over.
    page.receive(reply(3, batch(3, record("three again"))))
    seen = page.run()
    assert seen.calls == [["one"], ["two"], ["three"]]
    assert seen.texts == {"out": "1"}
    assert [(event["type"], event["detail"]["seq"]) for event in seen.events] == [
        ("send", 1),
        ("done", 1),
        ("send", 2),
        ("done", 2),
        ("send", 3),
        ("done", 3),
    ]
    assert seen.sent("a") == ["0", "1", "2"]


# The ways a try fails, each then tried again after 500 ms with the same sequence number.
FAILURES = [
    pytest.param("timeout", id="no-answer"),
    pytest.param("error page", id="error-page"),
    pytest.param("busy", id="busy"),
]


def fail_try(page: StubBrowser, how: str, seq: int) -> None:
    if how == "timeout":
        page.advance(TIMEOUT_MS)
    elif how == "error page":
        page.load_error_page()
    else:
        page.answer({"seq": seq, "code": "busy", "error": "Another request is running."})


@pytest.mark.parametrize("how", FAILURES)
def test_a_failed_try_is_sent_again_with_the_same_seq(page: StubBrowser, how: str) -> None:
    page.send("one", {"x": 1})
    page.send("two")
    fail_try(page, how, 1)
    page.advance(499)
    assert len(page.run().requests) == 1
    page.advance(1)
    seen = page.run()
    first, second = seen.requests
    assert second.query == first.query
    assert second.query["s"] == "1"
    assert second.name == "piggyback"
    # A try given up has its frame removed (which stops a pending one); busy was answered.
    assert first.stopped == (how == "timeout")
    assert (second.frame == first.frame) == (how == "busy")
    page.answer(reply(1, batch(1, record("one"))))
    seen = page.run()
    assert seen.sent("h") == ["one", "one", "two"]
    assert seen.sent("s") == ["1", "1", "2"]
    assert seen.sent("a") == ["0", "0", "1"]
    assert seen.calls == [["one"]]
    assert seen.of_type("error") == []
    assert len(seen.frames) == 1


@pytest.mark.parametrize(
    ("how", "reason", "code"),
    [
        pytest.param("timeout", f"no answer in {TIMEOUT_MS} ms", None, id="no-answer"),
        pytest.param("error page", "the response did not report back", None, id="error-page"),
        pytest.param("busy", "Another request is running.", "busy", id="busy"),
    ],
)
def test_three_failed_tries_give_up_with_an_error(
    page: StubBrowser, how: str, reason: str, code: str | None
) -> None:
    page.element("button", id="go")
    page.send("one", {}, "go")
    page.send("two")
    fail_try(page, how, 1)
    page.advance(500)  # the second try
    fail_try(page, how, 1)
    page.advance(999)
    assert len(page.run().requests) == 2
    page.advance(1)  # the third try, 1,000 ms later
    assert page.run().sent("s") == ["1", "1", "1"]
    fail_try(page, how, 1)
    seen = page.run()
    error = {"reason": reason, "seq": 1, "element": "#go"}
    if code:
        error["code"] = code
    assert seen.of_type("error") == [error]
    assert seen.console == [f"piggyback: {reason} [object Object]"]
    # The queue goes on at once with the next number; no fourth try, ever.
    assert seen.sent("h") == ["one", "one", "one", "two"]
    assert seen.sent("s") == ["1", "1", "1", "2"]
    assert seen.busy == []
    page.advance(60_000)
    assert page.run().sent("s") == ["1", "1", "1", "2", "2", "2"]


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("unknown_handler", id="unknown-handler"),
        pytest.param("bad_request", id="bad-request"),
        pytest.param("stale", id="stale"),
    ],
)
def test_a_rejection_is_reported_and_never_retried(page: StubBrowser, code: str) -> None:
    page.send("one")
    page.send("two")
    page.answer({"seq": 1, "code": code, "error": "No."})
    page.answer(reply(2))
    page.advance(60_000)
    seen = page.run()
    assert seen.of_type("error") == [{"reason": "No.", "code": code, "seq": 1}]
    assert seen.sent("h") == ["one", "two"]
    assert seen.sent("s") == ["1", "2"]
    assert seen.reloads == 0


def test_expired_is_a_cancelable_event_whose_default_reloads(page: StubBrowser) -> None:
    page.data["poll"] = "5"
    page.advance(5000)
    page.answer({"seq": 1, "code": "expired", "error": "The page expired."})
    page.advance(60_000)
    seen = page.run()
    [event] = [event for event in seen.events if event["type"] == "expired"]
    assert event == {
        "type": "expired",
        "cancelable": True,
        "bubbles": True,
        "detail": {"reason": "The page expired.", "code": "expired", "seq": 1},
    }
    assert seen.of_type("error") == []
    assert seen.reloads == 1
    assert seen.sent("h") == [None]  # the poll that learnt it; polling stopped


def test_a_canceled_expired_does_not_reload(page: StubBrowser) -> None:
    page.keep_expired()
    page.send("one")
    page.answer({"seq": 1, "code": "expired", "error": "The page expired."})
    seen = page.run()
    assert [event["type"] for event in seen.events] == ["send", "expired"]
    assert seen.reloads == 0


def test_commands_that_throw_are_reported_and_the_batch_acknowledged(page: StubBrowser) -> None:
    page.send("one")
    page.send("two")
    page.answer(
        reply(
            1,
            batch(1, ["text", "missing", "x"], ["js", "record('js'); nope()"], record("last")),
        )
    )
    seen = page.run()
    assert [(error["reason"], error["command"][0]) for error in seen.of_type("error")] == [
        ("no element #missing", "text"),
        ("'nope' is not defined", "js"),
    ]
    assert seen.calls == [["js"], ["last"]]
    assert seen.sent("a") == ["0", "1"]


def test_a_poll_names_no_handler_and_a_reply_can_stop_it(page: StubBrowser) -> None:
    page.data["poll"] = "5"
    page.advance(4999)
    assert page.run().requests == []
    page.advance(1)
    page.answer(reply(1, poll=0))
    page.advance(60_000)
    seen = page.run()
    [request] = seen.requests
    assert request.query == {"p": "t0", "s": "1", "a": "0"}


def test_a_long_payload_is_posted_into_the_named_frame(page: StubBrowser) -> None:
    long = "x" * 2100
    page.send("paste", {"text": long})
    seen = page.run()
    [post] = seen.requests
    assert (post.method, post.via, post.name) == ("POST", "submit", "piggyback")
    assert post.query == {"p": "t0", "s": "1", "a": "0", "h": "paste", "d": "d1", "b": "1"}
    assert post.fields == {"g": '{"text":"' + long + '"}'}
    assert seen.forms == 0  # the hidden form is gone once posted
    page.answer(reply(1, batch(1)))
    page.send("after")
    seen = page.run()
    post, get = seen.requests
    # Once the POST's answer loaded, a spare frame waits for the next POST; the next
    # GET goes through the frame in use.
    assert [frame["number"] for frame in seen.frames] == [post.frame, post.frame + 1]
    assert (get.method, get.frame, get.query["h"], get.query["a"]) == (
        "GET",
        post.frame,
        "after",
        "1",
    )


def test_loading_the_client_twice_keeps_the_first(page: StubBrowser) -> None:
    page.loads = 2
    page.send("one")
    seen = page.run()
    assert "click=1" in seen.listeners
    assert "visibilitychange=1" in seen.listeners
    assert len(seen.requests) == 1
