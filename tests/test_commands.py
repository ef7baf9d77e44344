from __future__ import annotations

import math
import typing as t

import pytest
from markupsafe import Markup

from piggyback.commands import Command
from piggyback.commands import Commands


class Recorder(Commands):
    """Keeps what the helpers queue."""

    def __init__(self) -> None:
        self.queued: list[Command] = []

    def _queue(self, command: Command) -> None:
        self.queued.append(command)


def _queued(call: t.Callable[[Recorder], None]) -> list[Command]:
    recorder = Recorder()
    call(recorder)
    return recorder.queued


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        pytest.param(lambda c: c.send_js("f(1)"), [["js", "f(1)"]], id="send_js"),
        pytest.param(lambda c: c.send_js(""), [["js", ""]], id="send_js-empty"),
        pytest.param(lambda c: c.set_text("n", 3), [["text", "n", "3"]], id="set_text-int"),
        pytest.param(
            lambda c: c.set_text("n", "<b>&</b>"),
            [["text", "n", "<b>&</b>"]],
            id="set_text-raw",
        ),
        pytest.param(lambda c: c.set_text("n", None), [["text", "n", ""]], id="set_text-none"),
        pytest.param(
            lambda c: c.set_text("n", Markup("<b>")),
            [["text", "n", "<b>"]],
            id="set_text-markup",
        ),
        pytest.param(
            lambda c: c.set_html("box", "<b>Hi</b> & 'you'"),
            [["html", "box", "&lt;b&gt;Hi&lt;/b&gt; &amp; &#39;you&#39;"]],
            id="set_html-str-escaped",
        ),
        pytest.param(
            lambda c: c.set_html("box", Markup("<b>Hi</b> &amp;")),
            [["html", "box", "<b>Hi</b> &amp;"]],
            id="set_html-markup-kept",
        ),
        pytest.param(
            lambda c: c.set_html("box", Markup("<b>Hi</b> ") + "<i>"),
            [["html", "box", "<b>Hi</b> &lt;i&gt;"]],
            id="set_html-markup-plus-str",
        ),
        pytest.param(lambda c: c.set_html("box", 5), [["html", "box", "5"]], id="set_html-int"),
        pytest.param(
            lambda c: c.replace("row", '<tr id="row">"x"</tr>'),
            [["replace", "row", "&lt;tr id=&#34;row&#34;&gt;&#34;x&#34;&lt;/tr&gt;"]],
            id="replace-str-escaped",
        ),
        pytest.param(
            lambda c: c.replace("row", Markup('<tr id="row"></tr>')),
            [["replace", "row", '<tr id="row"></tr>']],
            id="replace-markup-kept",
        ),
        pytest.param(
            lambda c: c.morph("form", '<form id="form">"x"</form>'),
            [["morph", "form", "&lt;form id=&#34;form&#34;&gt;&#34;x&#34;&lt;/form&gt;"]],
            id="morph-str-escaped",
        ),
        pytest.param(
            lambda c: c.morph("form", Markup('<form id="form"><input value="&amp;"></form>')),
            [["morph", "form", '<form id="form"><input value="&amp;"></form>']],
            id="morph-markup-kept",
        ),
        pytest.param(lambda c: c.morph("form", None), [["morph", "form", ""]], id="morph-none"),
        pytest.param(
            lambda c: c.push_url("/items?page=2#top"),
            [["pushUrl", "/items?page=2#top"]],
            id="push_url",
        ),
        pytest.param(lambda c: c.push_url("?q=a b"), [["pushUrl", "?q=a b"]], id="push_url-query"),
        pytest.param(
            lambda c: c.replace_url("page/2"), [["replaceUrl", "page/2"]], id="replace_url"
        ),
        pytest.param(
            lambda c: c.replace_url("#part"), [["replaceUrl", "#part"]], id="replace_url-hash"
        ),
        pytest.param(
            lambda c: c.append("log", "<li>"),
            [["append", "log", "&lt;li&gt;"]],
            id="append-str",
        ),
        pytest.param(
            lambda c: c.append("log", Markup("<li>x</li>")),
            [["append", "log", "<li>x</li>"]],
            id="append-markup",
        ),
        pytest.param(lambda c: c.remove("row"), [["remove", "row"]], id="remove"),
        pytest.param(
            lambda c: c.set_attr("a", "title", "<x>"),
            [["attr", "a", "title", "<x>"]],
            id="attr",
        ),
        pytest.param(
            lambda c: c.set_attr("a", "data-n", 4),
            [["attr", "a", "data-n", "4"]],
            id="attr-int",
        ),
        pytest.param(
            lambda c: c.set_attr("a", "hidden", None),
            [["attr", "a", "hidden", None]],
            id="attr-none-removes",
        ),
        pytest.param(
            lambda c: c.set_attr("svg", "viewBox", "0 0 10 10"),
            [["attr", "svg", "viewBox", "0 0 10 10"]],
            id="attr-keeps-case",
        ),
        pytest.param(
            lambda c: c.set_attr("a", "href", None),
            [["attr", "a", "href", None]],
            id="attr-url-removed",
        ),
        pytest.param(lambda c: c.add_class("a", "on"), [["addClass", "a", "on"]], id="add_class"),
        pytest.param(
            lambda c: c.remove_class("a", "is-open"),
            [["removeClass", "a", "is-open"]],
            id="remove_class",
        ),
        pytest.param(lambda c: c.set_value("q", 12), [["value", "q", "12"]], id="set_value"),
        pytest.param(lambda c: c.set_value("q", None), [["value", "q", ""]], id="set_value-none"),
        pytest.param(lambda c: c.focus("q"), [["focus", "q"]], id="focus"),
        pytest.param(lambda c: c.call("refresh"), [["call", "refresh", []]], id="call-no-args"),
        pytest.param(
            lambda c: c.call("app.chart.update", 3, "</script>", {"a": [None]}),
            [["call", "app.chart.update", [3, "</script>", {"a": [None]}]]],
            id="call-args",
        ),
        pytest.param(
            lambda c: c.call("$.fn_1", (1, 2)),
            [["call", "$.fn_1", [(1, 2)]]],
            id="call-dollar",
        ),
        pytest.param(lambda c: c.redirect("/next"), [["redirect", "/next"]], id="redirect"),
        pytest.param(
            lambda c: c.redirect("https://example.com/a?b=1#c", external=True),
            [["redirect", "https://example.com/a?b=1#c"]],
            id="redirect-absolute",
        ),
    ],
)
def test_helper_output(call: t.Callable[[Recorder], None], expected: list[Command]) -> None:
    assert _queued(call) == expected


def test_helpers_queue_in_order() -> None:
    def calls(c: Recorder) -> None:
        c.set_text("a", 1)
        c.send_js("x()")
        c.remove("b")
        c.set_text("a", 2)

    assert _queued(calls) == [
        ["text", "a", "1"],
        ["js", "x()"],
        ["remove", "b"],
        ["text", "a", "2"],
    ]


def test_base_class_has_no_destination() -> None:
    with pytest.raises(NotImplementedError):
        Commands().focus("x")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("onclick", id="onclick"),
        pytest.param("onClick", id="mixed-case"),
        pytest.param("ONLOAD", id="upper-case"),
        pytest.param("onerror", id="onerror"),
        pytest.param("on", id="bare-on"),
        pytest.param("srcdoc", id="srcdoc"),
        pytest.param("SrcDoc", id="srcdoc-mixed-case"),
    ],
)
def test_set_attr_refuses_code_attributes(name: str) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError) as info:
        recorder.set_attr("a", name, "alert(1)")
    assert str(info.value) == (
        f"set_attr() refuses {name!r}: it would run its value as code. Use send_js()"
        " for"
        " code, or a data-pb-* attribute for events."
    )
    assert recorder.queued == []


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("a b", id="space"),
        pytest.param("x=y", id="equals"),
        pytest.param("1st", id="digit-first"),
        pytest.param('a"', id="quote"),
        pytest.param("a>", id="angle"),
        pytest.param("a\n", id="trailing-newline"),
        pytest.param(None, id="none"),
        pytest.param(3, id="int"),
    ],
)
def test_set_attr_refuses_bad_names(name: t.Any) -> None:
    with pytest.raises(ValueError) as info:
        Recorder().set_attr("a", name, "v")
    assert str(info.value) == f"{name!r} is not a valid attribute name."


# The values a browser would run as script, or would load as a document of its own.
_REFUSED_URLS = [
    pytest.param("javascript:alert(1)", id="javascript"),
    pytest.param("JAVASCRIPT:alert(1)", id="upper-case"),
    pytest.param(" jAvAscript:alert(1)", id="leading-space-mixed-case"),
    pytest.param("java\tscript:alert(1)", id="tab-inside"),
    pytest.param("java\nscr\ript:alert(1)", id="newlines-inside"),
    pytest.param("\x01javascript:alert(1)", id="leading-control"),
    pytest.param("\x00 \x1f\tjavascript:alert(1)", id="leading-mixed-controls"),
    pytest.param("vbscript:msgbox(1)", id="vbscript"),
    pytest.param("VBScript:msgbox(1)", id="vbscript-mixed-case"),
    pytest.param("data:text/html,<script>alert(1)</script>", id="data"),
    pytest.param("  Data:image/svg+xml;base64,AAAA", id="data-space-mixed-case"),
    pytest.param("blob:https://example.com/uuid", id="blob"),
]

# Values that can only navigate or load, never run script.
_ALLOWED_URLS = [
    pytest.param("http://example.com/", id="http"),
    pytest.param("HTTPS://example.com/x?javascript:1", id="https-upper"),
    pytest.param("/relative/path", id="absolute-path"),
    pytest.param("relative?q=javascript:x", id="relative-with-colon-later"),
    pytest.param("./javascript:x", id="dot-slash"),
    pytest.param("//example.com/x", id="scheme-relative"),
    pytest.param("#top", id="fragment"),
    pytest.param("?page=2", id="query"),
    pytest.param("", id="empty"),
    pytest.param("mailto:someone@example.com", id="mailto"),
    pytest.param("tel:+123", id="tel"),
]


@pytest.mark.parametrize("url", _REFUSED_URLS)
@pytest.mark.parametrize("name", ["href", "SRC", "action", "formaction", "xlink:href", "data"])
def test_set_attr_refuses_script_urls(name: str, url: str) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError) as info:
        recorder.set_attr("a", name, url)
    assert str(info.value) == (
        f"Refusing the URL {url!r}: only http, https, mailto, tel and relative URLs are allowed."
    )
    assert recorder.queued == []


@pytest.mark.parametrize("url", _ALLOWED_URLS)
def test_set_attr_allows_safe_urls(url: str) -> None:
    assert _queued(lambda c: c.set_attr("a", "href", url)) == [["attr", "a", "href", url]]


def test_set_attr_leaves_other_attributes_alone() -> None:
    # "title" is not a URL, so text that looks like one is only text.
    assert _queued(lambda c: c.set_attr("a", "title", "javascript:x")) == [
        ["attr", "a", "title", "javascript:x"]
    ]


@pytest.mark.parametrize("url", [*_REFUSED_URLS, "mailto:someone@example.com", "tel:+123"])
def test_redirect_refuses_urls_that_leave_the_web(url: str) -> None:
    # A redirect replaces the page: only what the client will follow, http(s).
    recorder = Recorder()
    with pytest.raises(ValueError) as info:
        recorder.redirect(url)
    assert str(info.value) == (
        f"Refusing the URL {url!r}: only http, https and relative URLs are allowed."
    )
    assert recorder.queued == []


@pytest.mark.parametrize("url", [u for u in _ALLOWED_URLS if u.id not in ("mailto", "tel")])
def test_redirect_allows_web_urls_when_external(url: str) -> None:
    assert _queued(lambda c: c.redirect(url, external=True)) == [["redirect", url]]


# What a browser resolves against the page's own origin, and what only looks like it.
_SAME_ORIGIN = [
    pytest.param("/next", id="path"),
    pytest.param("next?javascript:x", id="relative"),
    pytest.param("./a//b", id="dot-slash"),
    pytest.param("/a//b", id="slashes-later"),
    pytest.param("?page=2", id="query"),
    pytest.param("#top", id="fragment"),
    pytest.param("", id="empty"),
]
_LEAVING = [
    pytest.param("https://evil.example/", id="absolute"),
    pytest.param("HTTP://evil.example/", id="absolute-upper"),
    pytest.param("http:evil.example", id="scheme-no-slashes"),  # another origin all the same
    pytest.param("//evil.example", id="scheme-relative"),
    pytest.param("/\\evil.example", id="slash-backslash"),  # Chromium reads \ as /
    pytest.param("\\\\evil.example", id="backslashes"),
    pytest.param("\\/evil.example", id="backslash-slash"),
    pytest.param("/\t/evil.example", id="tab-inside"),  # tabs and newlines are dropped
    pytest.param("/\n/evil.example", id="newline-inside"),
    pytest.param(" //evil.example", id="leading-space"),  # and spaces trimmed
    pytest.param("\x01//evil.example", id="leading-control"),
]


@pytest.mark.parametrize("url", _SAME_ORIGIN)
def test_redirect_stays_on_the_site_by_default(url: str) -> None:
    assert _queued(lambda c: c.redirect(url)) == [["redirect", url]]


@pytest.mark.parametrize("url", _LEAVING)
def test_redirect_refuses_to_leave_the_site_unless_external(url: str) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError) as info:
        recorder.redirect(url)
    assert str(info.value) == (
        f"redirect() refuses {url!r}: it may leave the site. Use a path such as '/next',"
        " or pass external=True to go to another site."
    )
    assert recorder.queued == []
    assert _queued(lambda c: c.redirect(url, external=True)) == [["redirect", url]]


@pytest.mark.parametrize("method", ["push_url", "replace_url"])
@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://example.com/", id="absolute"),
        pytest.param("HTTP://localhost/x", id="absolute-upper"),
        pytest.param("//example.com/x", id="network-path"),
        pytest.param("/\\example.com", id="slash-backslash"),
        pytest.param("\\\\example.com", id="backslashes"),
        pytest.param(" \t//example.com", id="leading-space-and-tab"),
        pytest.param("/\n/example.com", id="newline-inside"),
        pytest.param("javascript:alert(1)", id="javascript"),
        pytest.param("data:text/html,x", id="data"),
    ],
)
def test_history_helpers_refuse_other_sites(method: str, url: str) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError) as info:
        getattr(recorder, method)(url)
    assert str(info.value) == (
        f"{method}() takes a URL of this site, such as '/items?page=2', not {url!r}:"
        " a scheme or a leading '//' could leave it."
    )
    assert recorder.queued == []


def test_history_helpers_take_only_str() -> None:
    with pytest.raises(TypeError) as info:
        Recorder().push_url(b"/x")  # type: ignore[arg-type]
    assert str(info.value) == "push_url() takes a URL as str, not b'/x'."


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("", id="empty"),
        pytest.param("a..b", id="double-dot"),
        pytest.param(".a", id="leading-dot"),
        pytest.param("a.", id="trailing-dot"),
        pytest.param("a()", id="call"),
        pytest.param("a[0]", id="index"),
        pytest.param("1a", id="digit-first"),
        pytest.param("a b", id="space"),
        pytest.param("alert(1);x", id="code"),
        pytest.param("é", id="non-ascii"),
        pytest.param("a\n", id="trailing-newline"),
        pytest.param(None, id="none"),
    ],
)
def test_call_refuses_bad_paths(path: t.Any) -> None:
    with pytest.raises(ValueError) as info:
        Recorder().call(path, 1)
    assert str(info.value) == (
        f"call() takes a dotted path of JavaScript names like 'app.refresh', not {path!r}."
    )


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        pytest.param((math.nan,), "(nan,)", id="nan"),
        pytest.param((1, {2}), "(1, {2})", id="set"),
        pytest.param(({"a": b"x"},), "({'a': b'x'},)", id="nested-bytes"),
    ],
)
def test_call_refuses_arguments_that_are_not_json(args: tuple[t.Any, ...], shown: str) -> None:
    recorder = Recorder()
    with pytest.raises(TypeError) as info:
        recorder.call("f", *args)
    assert str(info.value).startswith(f"{shown} cannot be written as a JavaScript literal: ")
    assert recorder.queued == []


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c, v: c.set_text(v, "x"), id="set_text"),
        pytest.param(lambda c, v: c.set_html(v, "x"), id="set_html"),
        pytest.param(lambda c, v: c.replace(v, "x"), id="replace"),
        pytest.param(lambda c, v: c.morph(v, "x"), id="morph"),
        pytest.param(lambda c, v: c.append(v, "x"), id="append"),
        pytest.param(lambda c, v: c.remove(v), id="remove"),
        pytest.param(lambda c, v: c.set_attr(v, "title", "x"), id="set_attr"),
        pytest.param(lambda c, v: c.add_class(v, "x"), id="add_class"),
        pytest.param(lambda c, v: c.remove_class(v, "x"), id="remove_class"),
        pytest.param(lambda c, v: c.set_value(v, "x"), id="set_value"),
        pytest.param(lambda c, v: c.focus(v), id="focus"),
    ],
)
@pytest.mark.parametrize("bad_id", ["", None, 3, b"x"], ids=["empty", "none", "int", "bytes"])
def test_helpers_refuse_bad_ids(call: t.Callable[[Recorder, t.Any], None], bad_id: t.Any) -> None:
    recorder = Recorder()
    with pytest.raises(TypeError) as info:
        call(recorder, bad_id)
    assert str(info.value) == f"An element id must be a non-empty str, not {bad_id!r}."
    assert recorder.queued == []


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("a b", id="two-words"),
        pytest.param(" a", id="leading-space"),
        pytest.param("a\t", id="tab"),
        pytest.param("a\u2003b", id="unicode-space"),
        pytest.param(None, id="none"),
        pytest.param(1, id="int"),
    ],
)
@pytest.mark.parametrize("method", ["add_class", "remove_class"])
def test_class_helpers_refuse_bad_names(method: str, name: t.Any) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError) as info:
        getattr(recorder, method)("a", name)
    assert str(info.value) == f"A class name must be one non-empty word, not {name!r}."
    assert recorder.queued == []


@pytest.mark.parametrize("code", [None, 1, b"x()"], ids=["none", "int", "bytes"])
def test_send_js_takes_only_str(code: t.Any) -> None:
    with pytest.raises(TypeError) as info:
        Recorder().send_js(code)
    assert str(info.value) == f"send_js() takes JavaScript source as str, not {code!r}."


def test_out_of_band_handles_morph_and_change_the_url() -> None:
    from piggyback import Piggyback
    from piggyback.stores import MemoryStore
    from piggyback.testing import Client

    def app(environ: t.Any, start_response: t.Any) -> list[bytes]:
        environ["piggyback.page"].join("room")
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<html><body></body></html>"]

    live = Piggyback(app, store=MemoryStore(), secret_key="k" * 32)
    client = Client(live)
    page = client.open("/")
    live.page(page.id).morph("box", Markup('<div id="box">new</div>'))
    live.group("room").morph("box", "<b>text</b>")
    live.group("room").push_url("/?filter=open")
    live.page(page.id).replace_url("/?filter=all")
    assert client.poll(page) == [
        ["morph", "box", '<div id="box">new</div>'],
        ["morph", "box", "&lt;b&gt;text&lt;/b&gt;"],
        ["pushUrl", "/?filter=open"],
        ["replaceUrl", "/?filter=all"],
    ]
