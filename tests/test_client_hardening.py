"""piggyback.js against hostile or accidental page content (issue 12, client side).

Markup cannot switch the client off, ``data-pb-ignore`` fences off user HTML, and a value
with a lone surrogate (half an emoji) is sent safely instead of wedging the queue. Headless
Chromium against the fake server of ``test_client_js.py``.
"""

# ruff: noqa: F811 (the fixtures are imported from test_client_js)

from __future__ import annotations

import typing as t

from .test_client_js import chromium  # noqa: F401
from .test_client_js import FakePage
from .test_client_js import FakeServer
from .test_client_js import GO
from .test_client_js import open_page
from .test_client_js import pytestmark  # noqa: F401
from .test_client_js import seen
from .test_client_js import server  # noqa: F401
from .test_client_js import tab  # noqa: F401
from .test_client_js import Transport
from .test_client_js import transport  # noqa: F401
from .test_client_js import wait_seen
from .test_client_js import wait_until_quiet


def test_an_element_named_piggyback_does_not_switch_the_client_off(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = open_page(
        tab,
        server,
        '<a id="piggyback" href="#x">clobber</a>'
        '<form id="piggyback"><input name="receive"><input name="send"></form>' + GO,
        **transport.attrs,
    )
    tab.wait_for_function("typeof window.piggyback.receive === 'function'")
    tab.click("#go")
    wait_seen(tab, "done", 1)

    assert [r["h"] for r in page.requests] == ["go"]
    transport.check(page)


def test_an_image_named_current_script_cannot_take_the_client_over(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    """User HTML before the tag names an ``<img>`` ``currentScript`` (DOM clobbering), with
    its own endpoint and token: the client still reads its own tag."""
    page = open_page(
        tab,
        server,
        '<div data-pb-ignore><img name="currentScript" data-endpoint="/elsewhere"'
        ' data-token="planted" data-transport="iframe"></div>' + GO,
        **transport.attrs,
    )
    tab.click("#go")
    wait_seen(tab, "done", 1)

    assert [(r["h"], r["p"]) for r in page.requests] == [("go", page.token)]
    transport.check(page)


IGNORED = (
    """
  <div data-pb-ignore>
    <button id="planted" data-pb-click="delete_all" data-pb-args='{"all": true}'>win</button>
    <input id="typed" data-pb-input="steal" data-pb-keydown="steal">
    <span id="ticking" data-pb-click="steal" data-pb-every="0.1">tick</span>
  </div>
  <div id="card" data-pb-click="open_card">
    <p data-pb-ignore><b id="comment">user comment</b></p>
    <b id="title">title</b>
  </div>
  <form id="form" action="/landing" data-pb-submit="save" data-pb-ignore>
    <input name="x" value="1"><button id="save">save</button>
  </form>
"""
    + GO
)


def test_data_pb_ignore_switches_piggyback_off_inside(tab: t.Any, server: FakeServer) -> None:
    page = open_page(tab, server, IGNORED)
    tab.click("#planted")
    tab.type("#typed", "ab")
    tab.click("#comment")  # inside an ignored part of a live element
    tab.click("#title")
    wait_seen(tab, "done", 1)
    tab.click("#go")
    wait_seen(tab, "done", 2)
    wait_until_quiet(page, 0.4)  # the ignored data-pb-every would have ticked by now

    assert [(r["h"], r.get("t")) for r in page.requests] == [("open_card", "card"), ("go", "go")]
    # An ignored form is an ordinary form: it navigates, and piggyback sends nothing.
    with tab.expect_navigation():
        tab.click("#save")
    assert tab.url.endswith("/landing?x=1")
    assert len(page.requests) == 2


def surrogate_page(tab: t.Any, server: FakeServer, transport: Transport) -> FakePage:
    page = open_page(
        tab,
        server,
        '<input id="field" data-pb-change="echo"><p id="out"></p>' + GO,
        **transport.attrs,
    )
    page.commands = lambda params: [["text", "out", params.get("v", "")]]
    return page


def test_a_lone_surrogate_in_a_value_is_sent_as_a_replacement_character(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = surrogate_page(tab, server, transport)
    # "ab" and half of an emoji, as String.slice leaves it; then a whole emoji.
    tab.evaluate("""() => {
      const field = document.getElementById("field");
      field.value = "ab" + "\\ud83d\\ude00".slice(0, 1);
      field.dispatchEvent(new Event("change", {bubbles: true}));
      field.value = "\\udc00x\\ud83d\\ude00";
      field.dispatchEvent(new Event("change", {bubbles: true}));
      piggyback.send("args", {text: "\\ud800", list: ["\\udfff"]});
    }""")
    wait_seen(tab, "done", 3)
    tab.click("#go")  # the page keeps working
    wait_seen(tab, "done", 4)

    assert [(r["h"], r.get("v"), r.get("g")) for r in page.requests] == [
        ("echo", "ab\ufffd", "{}"),
        ("echo", "\ufffdx\U0001f600", "{}"),
        ("args", None, '{"text":"\ufffd","list":["\ufffd"]}'),
        ("go", None, "{}"),
    ]
    assert seen(tab, "error") == []
    transport.check(page)


def test_a_long_value_with_a_lone_surrogate_goes_in_a_post_body(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    page = surrogate_page(tab, server, transport)
    tab.evaluate("""() => {
      const field = document.getElementById("field");
      field.value = "x".repeat(3000) + "\\ud83d";
      field.dispatchEvent(new Event("change", {bubbles: true}));
    }""")
    wait_seen(tab, "done", 1)
    tab.click("#go")
    wait_seen(tab, "done", 2)

    assert [carried.form.get("v") for carried in page.carried] == [["x" * 3000 + "\ufffd"], None]
    assert tab.text_content("#out") == ""  # the go event echoed no value
    assert seen(tab, "error") == []
    transport.check(page)


def test_a_queued_submit_carries_the_fields_of_its_own_moment(
    tab: t.Any, server: FakeServer
) -> None:
    """Submits queued behind a slow event each send what the form held when submitted,
    not what it holds when their request leaves (a lost or doubled todo otherwise)."""
    body = '<form id="f" data-pb-submit="save"><input id="t" name="t"></form>' + GO

    def configure(page: FakePage) -> None:
        def answer(params: t.Any) -> t.Any:
            if params.get("h") == "go":
                page.release.wait(10)
            return page.protocol_answer(params)

        page.answer = answer

    page = open_page(tab, server, body, configure)
    try:
        tab.click("#go")
        tab.evaluate("""() => {
          const form = document.getElementById("f"), input = document.getElementById("t");
          for (const text of ["one", "two", "three"]) {
            input.value = text;
            form.requestSubmit();
          }
          input.value = "typed after";
        }""")
    finally:
        page.release.set()
    wait_seen(tab, "done", 4)
    assert [c.form.get("t") for c in page.carried] == [None, ["one"], ["two"], ["three"]]


def test_a_form_field_named_style_does_not_hold_the_queue(tab: t.Any, server: FakeServer) -> None:
    """``form.style`` is that field then; the form is still posted at once and the next
    event follows it without waiting for a timeout."""
    page = open_page(
        tab,
        server,
        '<form id="f" data-pb-submit="save"><input name="style" value="bold"></form>' + GO,
    )
    tab.evaluate("document.getElementById('f').requestSubmit()")
    tab.click("#go")
    wait_seen(tab, "done", 2)

    assert [r["h"] for r in page.requests] == ["save", "go"]
    assert page.carried[0].form == {"style": ["bold"]}
