"""``page.morph``: the live DOM becomes the new HTML and keeps what the user is doing.

Headless Chromium. The morph is a function of (old tree, new HTML), called here through
``piggyback.morph(element, html)`` without a server, and through the ``morph`` command
of a fake server (``test_client_js.py``) that re-renders a form every 100 ms while the
test types into it.
"""

# ruff: noqa: F811 (the fixtures are imported from test_client_js)

from __future__ import annotations

import itertools
import typing as t

import pytest
from markupsafe import Markup

from piggyback import Page

from .test_client_js import chromium  # noqa: F401
from .test_client_js import FakeServer
from .test_client_js import open_page
from .test_client_js import Params
from .test_client_js import pytestmark  # noqa: F401
from .test_client_js import seen
from .test_client_js import server  # noqa: F401
from .test_client_js import tab  # noqa: F401
from .test_client_js import Transport
from .test_client_js import transport  # noqa: F401
from .test_client_js import wait_seen
from .test_client_js import wait_until

ITEMS = "".join(f'<li id="item-{n}">item {n}</li>' for n in range(30))


def signup(count: int, hint: str = "") -> str:
    """The form as the server renders it: its input always empty, its hint counted."""
    keep = '<b id="keep">kept</b>'
    return (
        '<form id="signup" data-pb-submit="save">'
        + (keep if count % 2 else "")  # an id-matched element that moves about
        + '<label>Email <input id="email" name="email" value=""></label>'
        + f'<p id="hint" class="hint-{count}">{hint or count}</p>'
        + f'<ul id="list" style="height: 60px; overflow: auto">{ITEMS}</ul>'
        + ("" if count % 2 else keep)
        + "</form>"
    )


def test_typing_survives_a_morph_every_100_ms(
    tab: t.Any, server: FakeServer, transport: Transport
) -> None:
    counter = itertools.count(1)
    rendered: list[int] = []

    def configure(page: t.Any) -> None:
        def commands(params: Params) -> list[t.Any]:
            count = next(counter)
            rendered.append(count)
            return [["morph", "signup", signup(count)]]

        page.commands = commands

    page = open_page(tab, server, signup(0), configure, poll="0.1", **transport.attrs)
    tab.evaluate("""() => {
      document.getElementById("keep").mark = "set by a script";
      document.getElementById("list").scrollTop = 120;
    }""")
    tab.click("#email")
    tab.keyboard.type("alice@example.com", delay=40)
    wait_until(lambda: len(rendered) >= 8)
    tab.keyboard.press("ArrowLeft")
    tab.keyboard.press("ArrowLeft")
    tab.keyboard.press("Shift+ArrowLeft")
    morphed = len(rendered)
    wait_until(lambda: len(rendered) >= morphed + 3)
    wait_seen(tab, "done", len(rendered))

    state = tab.evaluate("""() => {
      const email = document.getElementById("email");
      return {
        value: email.value,
        focused: document.activeElement === email,
        selection: [email.selectionStart, email.selectionEnd],
        scroll: document.getElementById("list").scrollTop,
        mark: document.getElementById("keep").mark,
        hint: document.getElementById("hint").className,
        order: [...document.getElementById("signup").children].map(e => e.id || e.nodeName),
      };
    }""")
    last = seen(tab, "done")[-1]["seq"]
    assert state == {
        "value": "alice@example.com",
        "focused": True,
        "selection": [14, 15],
        "scroll": 120,
        "mark": "set by a script",
        "hint": f"hint-{rendered[last - 1]}",
        "order": ["keep", "LABEL", "hint", "list"]
        if rendered[last - 1] % 2
        else ["LABEL", "hint", "list", "keep"],
    }
    assert seen(tab, "error") == []
    transport.check(page)


MORPH = """(args) => {
  const [html, before, after] = args;
  const root = document.createElement("div");  // not in the document
  root.innerHTML = before;
  const old = root.firstElementChild;
  const nodes = [...root.querySelectorAll("*")];
  nodes.forEach((node, index) => { node.mark = index; });
  piggyback.morph(old, after);
  return {
    html: root.innerHTML,
    same: root.firstElementChild === old,
    marks: [...root.querySelectorAll("*")].map(node => node.mark === undefined ? null : node.mark),
  };
}"""


@pytest.mark.parametrize(
    ("before", "after", "html", "marks"),
    [
        pytest.param(
            '<div id="a" class="x"><p>one</p></div>',
            '<div id="a" title="t"><p>two</p></div>',
            '<div id="a" title="t"><p>two</p></div>',
            [0, 1],
            id="attributes-and-text",
        ),
        pytest.param(
            '<ul id="l"><li id="1">1</li><li id="2">2</li><li id="3">3</li></ul>',
            '<ul id="l"><li id="3">3</li><li id="1">1!</li><li id="4">4</li></ul>',
            '<ul id="l"><li id="3">3</li><li id="1">1!</li><li id="4">4</li></ul>',
            [0, 3, 1, None],
            id="ids-reordered-removed-added",
        ),
        pytest.param(
            '<div id="r"><section><input id="i"></section><section><b id="j"></b></section></div>',
            '<div id="r"><section><b id="j"></b></section><section><input id="i"></section></div>',
            '<div id="r"><section><b id="j"></b></section><section><input id="i"></section></div>',
            [0, 3, 4, 1, 2],
            id="id-sets-match-parents-without-ids",
        ),
        pytest.param(
            '<div id="r"><p><i id="deep">x</i></p><span></span></div>',
            '<div id="r"><span><i id="deep">x</i></span></div>',
            '<div id="r"><span><i id="deep">x</i></span></div>',
            [0, 3, 2],
            id="an-id-moves-to-another-parent",
        ),
        pytest.param(
            '<div id="r">a<!--c--><b>b</b></div>',
            '<div id="r">z<b>b</b>tail</div>',
            '<div id="r">z<b>b</b>tail</div>',
            [0, 1],
            id="text-and-comments",
        ),
        pytest.param(
            '<div id="r"><p>1</p></div>',
            '<section id="r">new</section>',
            '<section id="r">new</section>',
            [None],
            id="another-tag-is-replaced",
        ),
    ],
)
def test_morph_is_a_function_of_the_old_tree_and_the_new_html(
    tab: t.Any, server: FakeServer, before: str, after: str, html: str, marks: list[t.Any]
) -> None:
    open_page(tab, server, "<p>no server needed</p>")
    result = tab.evaluate(MORPH, [html, before, after])
    assert result["html"] == html
    assert result["marks"] == marks


def test_morph_keeps_typed_values_but_follows_untouched_ones(
    tab: t.Any, server: FakeServer
) -> None:
    open_page(
        tab,
        server,
        """<form id="f"><input id="typed" value="a"><input id="untouched" value="a">
        <input type="checkbox" id="ticked"><textarea id="area">old</textarea>
        <select id="pick"><option>x</option><option>y</option></select></form>""",
    )
    tab.fill("#typed", "typed by the user")
    tab.check("#ticked")
    tab.fill("#area", "written")
    tab.evaluate("""() => piggyback.morph(document.getElementById("f"),
      `<form id="f"><input id="typed" value="b"><input id="untouched" value="b">
        <input type="checkbox" id="ticked"><textarea id="area">new</textarea>
        <select id="pick"><option>x</option><option selected>y</option></select></form>`)""")

    values = tab.evaluate("""() => ["typed", "untouched", "ticked", "area", "pick"].map(id => {
      const e = document.getElementById(id);
      return e.type === "checkbox" ? e.checked : e.value;
    })""")
    assert values == ["typed by the user", "b", True, "written", "y"]


def test_a_str_stays_text_and_markup_becomes_html(tab: t.Any, server: FakeServer) -> None:
    live = Page()
    live.morph("a", "<b id='a'>bold?</b>")
    live.morph("b", Markup("<p id='b'><i>yes</i></p>"))

    def configure(page: t.Any) -> None:
        page.commands = lambda params: live.commands

    open_page(
        tab,
        server,
        '<p id="a">a</p><p id="b">b</p><button id="go" data-pb-click="go">go</button>',
        configure,
    )
    tab.click("#go")
    wait_seen(tab, "done", 1)

    assert tab.evaluate("document.body.firstChild.textContent").strip() == "<b id='a'>bold?</b>"
    assert tab.evaluate("document.querySelectorAll('b, #a').length") == 0
    assert tab.evaluate("document.querySelector('#b i').textContent") == "yes"


def test_a_sent_check_follows_the_server_but_an_unsent_one_stays(
    tab: t.Any, server: FakeServer
) -> None:
    """Another tab unchecked an item this tab checked (and sent): the morph unchecks it
    here too. A check the user made and has not sent yet stays."""
    body = (
        '<ul id="l"><li><input type="checkbox" id="a" data-pb-change="toggle"></li>'
        '<li><input type="checkbox" id="b"></li></ul>'
    )
    open_page(tab, server, body)
    tab.check("#a")
    wait_seen(tab, "done", 1)
    tab.check("#b")  # not sent: nothing listens
    tab.focus("body")
    tab.evaluate("""() => piggyback.morph(document.getElementById("l"),
      '<ul id="l"><li><input type="checkbox" id="a" data-pb-change="toggle" checked></li>'
      + '<li><input type="checkbox" id="b"></li></ul>')""")
    tab.evaluate("""() => piggyback.morph(document.getElementById("l"),
      '<ul id="l"><li><input type="checkbox" id="a" data-pb-change="toggle"></li>'
      + '<li><input type="checkbox" id="b"></li></ul>')""")
    checked = tab.evaluate("() => ['a', 'b'].map(id => document.getElementById(id).checked)")
    assert checked == [False, True]
