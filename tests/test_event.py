from __future__ import annotations

import io
import json
import typing as t
from urllib.parse import quote

import pytest
from werkzeug.datastructures import FileStorage
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from piggyback import EventRejected
from piggyback.event import EventRequest
from piggyback.event import MAX_ARGS_DEPTH
from piggyback.event import MAX_SEQ
from piggyback.event import read_event_request


def _request(query: str, method: str = "GET", **options: t.Any) -> Request:
    builder = EnvironBuilder(path="/_pb/event", query_string=query, method=method, **options)
    return Request(builder.get_environ())


def _read(request: Request) -> EventRequest:
    """What the endpoint does: the environ, and the Request for a POST's body."""
    return read_event_request(request.environ, request if request.method == "POST" else None)


def _g(value: t.Any) -> str:
    return "g=" + quote(json.dumps(value))


def _nested(depth: int) -> str:
    """A JSON object ``depth`` levels deep: ``{"a":{"a":...{}}}``."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(
            "p=tok&s=1",
            ("tok", 1, 0, None, None, None, {}, None),
            id="poll-minimal",
        ),
        pytest.param(
            "p=tok&s=7&a=6&h=increment&e=click&t=count&v=hi&" + _g({"id": 3, "x": [1, None]}),
            (
                "tok",
                7,
                6,
                "click",
                "increment",
                "count",
                {"id": 3, "x": [1, None]},
                "hi",
            ),
            id="everything",
        ),
        pytest.param(
            "a=2&s=5&p=tok&h=x",
            ("tok", 5, 2, None, "x", None, {}, None),
            id="any-order",
        ),
        pytest.param(
            "p=tok&s=1&h=&e=&t=&g=",
            ("tok", 1, 0, None, None, None, {}, None),
            id="empty-means-absent",
        ),
        pytest.param(
            "p=tok&s=1&h=x&v=",
            ("tok", 1, 0, None, "x", None, {}, ""),
            id="empty-value-is-kept",
        ),
        pytest.param(
            "p=tok&s=1&v=%3C%2Fscript%3E%20%C3%A9",
            ("tok", 1, 0, None, None, None, {}, "</script> é"),
            id="value-decoded",
        ),
        pytest.param(
            f"p=tok&s={MAX_SEQ}&a={MAX_SEQ - 1}",
            ("tok", MAX_SEQ, MAX_SEQ - 1, None, None, None, {}, None),
            id="largest-seq",
        ),
        pytest.param(
            "p=tok&s=0000000000000012",
            ("tok", 12, 0, None, None, None, {}, None),
            id="leading-zeros-16-digits",
        ),
        pytest.param(
            "p=tok&s=2&h=todo.add:item-2_x&e=my-event:v1.2_x",
            ("tok", 2, 0, "my-event:v1.2_x", "todo.add:item-2_x", None, {}, None),
            id="name-characters",
        ),
        pytest.param(
            "p=tok&s=1&h=" + "h" * 128 + "&e=" + "e" * 64,
            ("tok", 1, 0, "e" * 64, "h" * 128, None, {}, None),
            id="longest-names",
        ),
        pytest.param(
            "p=tok&s=1&t=a%20b%22%3C",
            ("tok", 1, 0, None, None, 'a b"<', {}, None),
            id="target-any-text",
        ),
        pytest.param(
            "p=tok&s=1&" + _g({"k": "\u2028", "n": 1.5, "t": True, "e": {}}),
            (
                "tok",
                1,
                0,
                None,
                None,
                None,
                {"k": "\u2028", "n": 1.5, "t": True, "e": {}},
                None,
            ),
            id="args-types",
        ),
        pytest.param(
            "p=tok&s=1&g=" + quote(_nested(MAX_ARGS_DEPTH)),
            ("tok", 1, 0, None, None, None, json.loads(_nested(MAX_ARGS_DEPTH)), None),
            id="args-20-deep",
        ),
    ],
)
def test_good_requests(query: str, expected: tuple[t.Any, ...]) -> None:
    request = _request(query)
    incoming = _read(request)
    event = incoming.event
    assert (
        incoming.token,
        incoming.seq,
        incoming.ack,
        event.name,
        event.handler,
        event.target,
        event.args,
        event.value,
    ) == expected
    assert event.seq == incoming.seq
    assert event.environ is request.environ
    assert type(event.request) is Request and event.request.environ is request.environ
    assert (event.form, event.files, event.host_request) == (
        MultiDict(),
        MultiDict(),
        None,
    )


_SEQ_RULE = "must be a whole number from 1 to 2**53"
_ACK_RULE = "must be a whole number from 0 to 2**53"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        # The page token.
        pytest.param("s=1", "The event request has no page token (parameter 'p').", id="no-p"),
        pytest.param(
            "p=&s=1",
            "The event request has no page token (parameter 'p').",
            id="p-empty",
        ),
        # Parameters: each known one at most once.
        pytest.param(
            "p=tok&s=1&x=2",
            "Unknown parameter 'x' in the event request; the parameters are p, s, a,"
            " h, e, t, v, g, b and d.",
            id="unknown",
        ),
        pytest.param(
            "p=tok&s=1&P=2&z=1",
            "Unknown parameter 'P' in the event request; the parameters are p, s, a,"
            " h, e, t, v, g, b and d.",
            id="unknown-upper-case",
        ),
        pytest.param(
            "p=tok&s=1&p=tok",
            "The parameter 'p' appears more than once.",
            id="duplicate-p",
        ),
        pytest.param(
            "p=tok&s=1&s=2",
            "The parameter 's' appears more than once.",
            id="duplicate-s",
        ),
        pytest.param(
            "p=tok&s=1&h=a&h=a",
            "The parameter 'h' appears more than once.",
            id="duplicate-h",
        ),
        pytest.param(
            "p=tok&s=1&g={}&g={}",
            "The parameter 'g' appears more than once.",
            id="duplicate-g",
        ),
        pytest.param(
            "p=tok&s=1&v=&v=",
            "The parameter 'v' appears more than once.",
            id="duplicate-empty",
        ),
        # The sequence number.
        pytest.param(
            "p=tok",
            "The parameter 's' is missing; it must be a whole number from 1 to 2**53.",
            id="no-s",
        ),
        pytest.param("p=tok&s=", f"The parameter 's' {_SEQ_RULE}, not ''.", id="s-empty"),
        pytest.param("p=tok&s=one", f"The parameter 's' {_SEQ_RULE}, not 'one'.", id="s-word"),
        pytest.param("p=tok&s=0", f"The parameter 's' {_SEQ_RULE}, not '0'.", id="s-zero"),
        pytest.param("p=tok&s=-1", f"The parameter 's' {_SEQ_RULE}, not '-1'.", id="s-negative"),
        pytest.param("p=tok&s=%2B1", f"The parameter 's' {_SEQ_RULE}, not '+1'.", id="s-plus"),
        pytest.param("p=tok&s=1.0", f"The parameter 's' {_SEQ_RULE}, not '1.0'.", id="s-float"),
        pytest.param("p=tok&s=1e3", f"The parameter 's' {_SEQ_RULE}, not '1e3'.", id="s-exp"),
        pytest.param("p=tok&s=1_0", f"The parameter 's' {_SEQ_RULE}, not '1_0'.", id="s-under"),
        pytest.param("p=tok&s=0x1", f"The parameter 's' {_SEQ_RULE}, not '0x1'.", id="s-hex"),
        pytest.param("p=tok&s=%201", f"The parameter 's' {_SEQ_RULE}, not ' 1'.", id="s-space"),
        pytest.param(
            "p=tok&s=1%20",
            f"The parameter 's' {_SEQ_RULE}, not '1 '.",
            id="s-space-after",
        ),
        pytest.param(
            "p=tok&s=1%0A",
            f"The parameter 's' {_SEQ_RULE}, not '1\\n'.",
            id="s-newline",
        ),
        pytest.param(
            "p=tok&s=%D9%A3",
            f"The parameter 's' {_SEQ_RULE}, not '\u0663'.",
            id="s-arabic-digit",
        ),
        pytest.param(
            "p=tok&s=%C2%B2",
            f"The parameter 's' {_SEQ_RULE}, not '\u00b2'.",
            id="s-superscript",
        ),
        pytest.param(
            f"p=tok&s={MAX_SEQ + 1}",
            f"The parameter 's' {_SEQ_RULE}, not '{MAX_SEQ + 1}'.",
            id="s-above-2**53",
        ),
        pytest.param(
            "p=tok&s=9999999999999999",
            f"The parameter 's' {_SEQ_RULE}, not '9999999999999999'.",
            id="s-16-digits-too-big",
        ),
        pytest.param(
            "p=tok&s=00000000000000001",
            f"The parameter 's' {_SEQ_RULE}, not '00000000000000001'.",
            id="s-17-digits",
        ),
        pytest.param(
            "p=tok&s=" + "9" * 100,
            f"The parameter 's' {_SEQ_RULE}, not '{'9' * 80}'.",
            id="s-100-digits-shown-shortened",
        ),
        # The acknowledgement.
        pytest.param("p=tok&s=2&a=", f"The parameter 'a' {_ACK_RULE}, not ''.", id="a-empty"),
        pytest.param(
            "p=tok&s=2&a=-1",
            f"The parameter 'a' {_ACK_RULE}, not '-1'.",
            id="a-negative",
        ),
        pytest.param("p=tok&s=2&a=x", f"The parameter 'a' {_ACK_RULE}, not 'x'.", id="a-word"),
        pytest.param(
            "p=tok&s=2&a=2",
            "The acknowledgement 2 is not below the sequence number 2.",
            id="a=s",
        ),
        pytest.param(
            "p=tok&s=2&a=9",
            "The acknowledgement 9 is not below the sequence number 2.",
            id="a>s",
        ),
        # Handler names.
        pytest.param(
            "p=tok&s=1&h=1x",
            "The parameter 'h' is not a handler name: '1x'.",
            id="h-digit",
        ),
        pytest.param(
            "p=tok&s=1&h=a%20b",
            "The parameter 'h' is not a handler name: 'a b'.",
            id="h-space",
        ),
        pytest.param(
            "p=tok&s=1&h=a%2Fb",
            "The parameter 'h' is not a handler name: 'a/b'.",
            id="h-slash",
        ),
        pytest.param(
            "p=tok&s=1&h=%C3%A9",
            "The parameter 'h' is not a handler name: 'é'.",
            id="h-non-ascii",
        ),
        pytest.param(
            "p=tok&s=1&h=x%0A",
            "The parameter 'h' is not a handler name: 'x\\n'.",
            id="h-newline",
        ),
        pytest.param(
            "p=tok&s=1&h=__import__('os')",
            "The parameter 'h' is not a handler name: \"__import__('os')\".",
            id="h-code",
        ),
        pytest.param(
            "p=tok&s=1&h=" + "h" * 129,
            f"The parameter 'h' is not a handler name: '{'h' * 80}'.",
            id="h-129-chars",
        ),
        # DOM event names.
        pytest.param(
            "p=tok&s=1&e=Click",
            "The parameter 'e' is not a DOM event name: 'Click'.",
            id="e-upper",
        ),
        pytest.param(
            "p=tok&s=1&e=on%20click",
            "The parameter 'e' is not a DOM event name: 'on click'.",
            id="e-space",
        ),
        pytest.param(
            "p=tok&s=1&e=1click",
            "The parameter 'e' is not a DOM event name: '1click'.",
            id="e-digit",
        ),
        pytest.param(
            "p=tok&s=1&e=%3Cx%3E",
            "The parameter 'e' is not a DOM event name: '<x>'.",
            id="e-angle",
        ),
        pytest.param(
            "p=tok&s=1&e=" + "e" * 65,
            f"The parameter 'e' is not a DOM event name: '{'e' * 65}'.",
            id="e-65-chars",
        ),
        # The arguments.
        pytest.param(
            "p=tok&s=1&g={",
            "The arguments (parameter 'g') are not valid JSON: Expecting property"
            " name enclosed in double quotes: line 1 column 2 (char 1).",
            id="g-broken",
        ),
        pytest.param(
            "p=tok&s=1&g={'a':1}",
            "The arguments (parameter 'g') are not valid JSON: Expecting property"
            " name enclosed in double quotes: line 1 column 2 (char 1).",
            id="g-single-quotes",
        ),
        pytest.param(
            "p=tok&s=1&g={}x",
            "The arguments (parameter 'g') are not valid JSON: Extra data: line 1"
            " column 3 (char 2).",
            id="g-trailing-data",
        ),
        pytest.param(
            "p=tok&s=1&g=NaN",
            "The arguments (parameter 'g') are not valid JSON: NaN is not JSON.",
            id="g-nan",
        ),
        pytest.param(
            "p=tok&s=1&g=" + quote('{"a":[Infinity]}'),
            "The arguments (parameter 'g') are not valid JSON: Infinity is not JSON.",
            id="g-nested-infinity",
        ),
        pytest.param(
            "p=tok&s=1&g=" + quote('{"a":-Infinity}'),
            "The arguments (parameter 'g') are not valid JSON: -Infinity is not JSON.",
            id="g-minus-infinity",
        ),
        pytest.param(
            "p=tok&s=1&g=" + quote('{"a":1e400}'),
            "The arguments (parameter 'g') are not valid JSON: the number 1e400 is too large.",
            id="g-overflowing-float",
        ),
        pytest.param(
            "p=tok&s=1&g=[1]",
            "The arguments (parameter 'g') must be a JSON object, not an array.",
            id="g-array",
        ),
        pytest.param(
            "p=tok&s=1&g=null",
            "The arguments (parameter 'g') must be a JSON object, not null.",
            id="g-null",
        ),
        pytest.param(
            "p=tok&s=1&g=true",
            "The arguments (parameter 'g') must be a JSON object, not a boolean.",
            id="g-boolean",
        ),
        pytest.param(
            "p=tok&s=1&g=3",
            "The arguments (parameter 'g') must be a JSON object, not a number.",
            id="g-number",
        ),
        pytest.param(
            "p=tok&s=1&g=%22x%22",
            "The arguments (parameter 'g') must be a JSON object, not a string.",
            id="g-string",
        ),
        pytest.param(
            "p=tok&s=1&g=" + quote(_nested(MAX_ARGS_DEPTH + 1)),
            "The arguments nest deeper than 20 levels.",
            id="g-21-deep",
        ),
        pytest.param(
            "p=tok&s=1&g=" + quote(_nested(25)),
            "The arguments nest deeper than 20 levels.",
            id="g-25-deep",
        ),
        pytest.param(
            "p=tok&s=1&g=" + quote('{"a":' + "[" * 24 + "]" * 24 + "}"),
            "The arguments nest deeper than 20 levels.",
            id="g-25-deep-arrays",
        ),
        pytest.param(
            "p=tok&s=1&g=" + quote(_nested(5000)),
            "The arguments nest deeper than 20 levels.",
            id="g-5000-deep",
        ),
        pytest.param(
            "p=tok&s=1&g=" + "[" * 5000 + "]" * 5000,
            "The arguments nest deeper than 20 levels.",
            id="g-5000-deep-arrays",
        ),
        pytest.param(
            "p=tok&s=1&g=" + "[" * 100_000,
            "The arguments nest deeper than 20 levels.",
            id="g-100000-unclosed",
        ),
        # A lone surrogate is valid JSON (as an escape) but no UTF-8 text has one: it
        # could never be written back, so it is refused wherever it hides.
        pytest.param(
            "p=tok&s=1&" + _g({"text": "\ud800"}),
            "A string in the arguments (parameter 'g') holds a lone surrogate ('\\ud800') at"
            " index 0; text must be whole Unicode characters (was an emoji cut in half?).",
            id="g-lone-surrogate",
        ),
        pytest.param(
            "p=tok&s=1&" + _g({"x": [1, {"y": "ok \udfff"}]}),
            "A string in the arguments (parameter 'g') holds a lone surrogate ('\\udfff') at"
            " index 3; text must be whole Unicode characters (was an emoji cut in half?).",
            id="g-nested-lone-surrogate",
        ),
        pytest.param(
            "p=tok&s=1&" + _g({"\udc00": 1}),
            "A key in the arguments (parameter 'g') holds a lone surrogate ('\\udc00') at"
            " index 0; text must be whole Unicode characters (was an emoji cut in half?).",
            id="g-key-lone-surrogate",
        ),
    ],
)
def test_bad_requests(query: str, reason: str) -> None:
    with pytest.raises(EventRejected) as info:
        _read(_request(query))
    assert info.value.reason == reason
    assert (type(info.value), info.value.code, info.value.status) == (
        EventRejected,
        "bad_request",
        400,
    )


@pytest.mark.parametrize("key", ["p", "t", "v", "d"])
@pytest.mark.parametrize("surrogate", ["\ud800", "\udbff", "\udc00", "\udfff"])
def test_a_lone_surrogate_in_any_parameter_is_refused(key: str, surrogate: str) -> None:
    # Only a server that hands over such text could: a percent-encoded one is read as
    # invalid UTF-8 (U+FFFD). Refused all the same.
    environ = _request("").environ
    query = {"p": "tok", "s": "1", key: f"a{surrogate}"}
    environ["QUERY_STRING"] = "&".join(f"{k}={v}" for k, v in query.items())
    with pytest.raises(EventRejected) as info:
        read_event_request(environ)
    assert info.value.reason == (
        f"The parameter {key!r} holds a lone surrogate ({surrogate!r}) at index 1; text must"
        " be whole Unicode characters (was an emoji cut in half?)."
    )


@pytest.mark.parametrize(
    ("form", "files", "reason"),
    [
        pytest.param(
            [("title", "a\ud800")], [], "The form field 'title' holds a lone surrogate", id="value"
        ),
        pytest.param([("\udfff", "a")], [], "A form field's name holds", id="name"),
        pytest.param(
            [], [("doc", "cut\ud83d.txt")], "The file name in 'doc' holds", id="file-name"
        ),
    ],
)
def test_a_lone_surrogate_in_a_form_is_refused(
    form: list[tuple[str, str]], files: list[tuple[str, str]], reason: str
) -> None:
    request = _request("p=tok&s=1&h=save", method="POST", data={"x": "1"})
    # As a server that decoded them so would hand them over (werkzeug replaces them).
    request.__dict__["form"] = MultiDict(form)
    request.__dict__["files"] = MultiDict(
        (name, FileStorage(io.BytesIO(b"x"), filename)) for name, filename in files
    )
    with pytest.raises(EventRejected) as info:
        _read(request)
    assert info.value.reason.startswith(reason)
    assert info.value.status == 400


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"])
def test_wrong_method(method: str) -> None:
    with pytest.raises(EventRejected) as info:
        _read(_request("p=tok&s=1&h=x", method=method))
    assert info.value.reason == f"Event requests use GET or POST, not {method}."
    assert (info.value.code, info.value.status) == ("bad_request", 405)


def test_wrong_method_is_checked_first() -> None:
    with pytest.raises(EventRejected) as info:
        _read(_request("x=1", method="PUT"))
    assert info.value.status == 405


def test_post_form_and_files() -> None:
    request = _request(
        "p=tok&s=3&a=1&h=save&e=submit&t=form",
        method="POST",
        data={
            "title": "a</b>",
            "tag": ["x", "y"],
            "doc": (io.BytesIO(b"hello"), "a.txt"),
        },
    )
    with request:
        incoming = _read(request)
        event = incoming.event
        assert (event.files["doc"].filename, event.files["doc"].read()) == (
            "a.txt",
            b"hello",
        )
    assert (incoming.seq, incoming.ack, event.handler, event.name, event.target) == (
        3,
        1,
        "save",
        "submit",
        "form",
    )
    assert event.form.to_dict(flat=False) == {"title": ["a</b>"], "tag": ["x", "y"]}
    assert list(event.files) == ["doc"]


def test_post_parameters_come_from_the_query_only() -> None:
    # Protocol fields in a form body are just form fields.
    request = _request("p=tok&s=1&h=save", method="POST", data={"h": "other", "s": "9"})
    incoming = _read(request)
    assert (incoming.seq, incoming.event.handler) == (1, "save")
    assert incoming.event.form.to_dict() == {"h": "other", "s": "9"}


def test_get_does_not_read_a_body() -> None:
    request = _request(
        "p=tok&s=1&h=x",
        data="title=a",
        content_type="application/x-www-form-urlencoded",
    )
    incoming = _read(request)
    assert (incoming.event.form, incoming.event.files) == (MultiDict(), MultiDict())
    assert request.stream.read() == b"title=a"


def test_a_b1_post_carries_value_and_args_in_its_body() -> None:
    long_value = "x" * 20_000
    request = _request(
        "p=tok&s=1&h=save&b=1", method="POST", data={"v": long_value, "g": '{"n": 3}'}
    )
    incoming = _read(request)
    assert (incoming.event.value, incoming.event.args) == (long_value, {"n": 3})
    assert incoming.event.form == MultiDict()


@pytest.mark.parametrize(
    ("query", "method", "data", "reason"),
    [
        pytest.param(
            "p=tok&s=1&b=1",
            "GET",
            None,
            "The parameter 'b' must be '1', and only on a POST.",
            id="b-on-get",
        ),
        pytest.param(
            "p=tok&s=1&b=2",
            "POST",
            {"v": "x"},
            "The parameter 'b' must be '1', and only on a POST.",
            id="b-not-1",
        ),
        pytest.param(
            "p=tok&s=1&b=1",
            "POST",
            {"v": "x", "title": "t"},
            "The body of a b=1 event carries only v and g, not 'title'.",
            id="b-with-form-field",
        ),
        pytest.param(
            "p=tok&s=1&b=1&v=a",
            "POST",
            {"v": "x"},
            "The parameter 'v' appears more than once.",
            id="b-value-twice",
        ),
        pytest.param(
            "p=tok&s=1&b=1",
            "POST",
            {"g": "[1]"},
            "The arguments (parameter 'g') must be a JSON object, not an array.",
            id="b-args-checked-too",
        ),
    ],
)
def test_bad_b1_posts_are_rejected(
    query: str, method: str, data: dict[str, str] | None, reason: str
) -> None:
    with pytest.raises(EventRejected) as caught:
        _read(_request(query, method=method, data=data))
    assert caught.value.reason == reason


def test_a_b1_value_keeps_the_controls_line_breaks() -> None:
    # Form encoding sends CRLF; the control's value (and a GET's) has LF.
    request = _request("p=tok&s=1&b=1", method="POST", data={"v": "one\r\ntwo\nthree"})
    assert _read(request).event.value == "one\ntwo\nthree"


def test_an_event_names_handlers_as_the_registry_does() -> None:
    # One pattern: every name that can be registered can be invoked, and no other.
    from piggyback import event
    from piggyback import registry

    assert event.HANDLER_NAME is registry.HANDLER_NAME
