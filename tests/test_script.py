from __future__ import annotations

import base64
import hashlib
import json
import math
import typing as t

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from markupsafe import Markup

from piggyback.script import _SCRIPT_ESCAPES
from piggyback.script import answer_document
from piggyback.script import CALL_PREFIX
from piggyback.script import CALL_SUFFIX
from piggyback.script import DOCUMENT_PREFIX
from piggyback.script import DOCUMENT_SUFFIX
from piggyback.script import literal
from piggyback.script import read_answer_document


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Plain JSON values, written compactly.
        pytest.param(None, "null", id="none"),
        pytest.param(True, "true", id="true"),
        pytest.param(0, "0", id="zero"),
        pytest.param(-12, "-12", id="negative"),
        pytest.param(2**53, "9007199254740992", id="max-seq"),
        pytest.param(1.5, "1.5", id="float"),
        pytest.param("", '""', id="empty-string"),
        pytest.param([1, "a", None], '[1,"a",null]', id="list"),
        pytest.param((1, 2), "[1,2]", id="tuple-is-array"),
        pytest.param({"a": 1, "b": [2]}, '{"a":1,"b":[2]}', id="object"),
        # Ending the script element: "<" and ">" never appear literally.
        pytest.param("</script>", '"\\u003c/script\\u003e"', id="end-script"),
        pytest.param("</SCRIPT >", '"\\u003c/SCRIPT \\u003e"', id="end-script-upper"),
        # Opening an HTML comment inside a script changes how the parser ends it.
        pytest.param("<!--", '"\\u003c!--"', id="open-comment"),
        pytest.param("-->", '"--\\u003e"', id="close-comment"),
        # "&" is escaped too, so the text means the same in XHTML.
        pytest.param("a&b", '"a\\u0026b"', id="ampersand"),
        pytest.param("&lt;", '"\\u0026lt;"', id="entity-stays-text"),
        # Line and paragraph separators end string literals in older engines.
        pytest.param("a\u2028b", '"a\\u2028b"', id="line-separator"),
        pytest.param("a\u2029b", '"a\\u2029b"', id="paragraph-separator"),
        # JSON's own escapes still apply.
        pytest.param('say "hi"\\', '"say \\"hi\\"\\\\"', id="quote-backslash"),
        pytest.param("a\nb\x00", '"a\\nb\\u0000"', id="control-characters"),
        # Other non-ASCII text is kept as it is (the document is UTF-8).
        pytest.param("héllo ☃ 日本", '"héllo ☃ 日本"', id="non-ascii-kept"),
        pytest.param("\U0001f600", '"\U0001f600"', id="astral-kept"),
        # Escaping reaches every level, keys included.
        pytest.param(
            {"</script>": ["<!--", {"&": "\u2028"}]},
            '{"\\u003c/script\\u003e":["\\u003c!--",{"\\u0026":"\\u2028"}]}',
            id="nested",
        ),
        # A lone surrogate (half a UTF-16 pair, e.g. an emoji cut by String.slice) has no
        # UTF-8 form: it is written as a \u escape, which means the same in JavaScript,
        # so the document always encodes. Every boundary of the range:
        pytest.param("\ud800", '"\\ud800"', id="high-surrogate-first"),
        pytest.param("\udbff", '"\\udbff"', id="high-surrogate-last"),
        pytest.param("\udc00", '"\\udc00"', id="low-surrogate-first"),
        pytest.param("\udfff", '"\\udfff"', id="low-surrogate-last"),
        pytest.param("a\ud83d<", '"a\\ud83d\\u003c"', id="cut-emoji-then-escape"),
        pytest.param("\ud83d\ude00", '"\\ud83d\\ude00"', id="pair-of-halves"),  # 😀 in JS
        pytest.param({"\udc00": ["\ud800"]}, '{"\\udc00":["\\ud800"]}', id="surrogate-key"),
        # Next to the range, and the other odd characters: kept or escaped as JSON says.
        pytest.param("\ud7ff\ue000", '"\ud7ff\ue000"', id="around-the-range"),
        pytest.param("\x00", '"\\u0000"', id="nul"),
        pytest.param("\ufffe\uffff", '"\ufffe\uffff"', id="noncharacters"),
        pytest.param("\U0010ffff", '"\U0010ffff"', id="last-code-point"),
        # Markup is just a string here: a script block is not HTML.
        pytest.param(Markup("<b>hi</b>"), '"\\u003cb\\u003ehi\\u003c/b\\u003e"', id="markup"),
        pytest.param([Markup("&amp;")], '["\\u0026amp;"]', id="markup-in-list"),
    ],
)
def test_literal(value: t.Any, expected: str) -> None:
    assert literal(value) == expected


# Any code point, lone surrogates included (st.characters() leaves them out by default).
ANY_CHARACTER = st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


@settings(max_examples=500)
@given(st.text(ANY_CHARACTER))
def test_literal_and_the_document_never_fail_on_any_str(text: str) -> None:
    written = literal({"text": text})
    assert json.loads(written) == {"text": text}  # the same text, lone surrogates too
    assert [c for c in written if c in "<>&\u2028\u2029" or "\ud800" <= c <= "\udfff"] == []
    document, _ = answer_document({"seq": 1, "batches": [{"commands": [["text", "x", text]]}]})
    assert document.decode("utf-8")  # strict UTF-8


def test_literal_markup_becomes_a_plain_str() -> None:
    written = json.loads(literal({"html": Markup("<i>x</i>")}))
    assert type(written["html"]) is str
    assert written == {"html": "<i>x</i>"}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("</script><!--<script>", id="script-and-comment"),
        pytest.param({"k\u2028": ["\u2029", "&", ">"]}, id="nested-separators"),
        pytest.param(["".join(map(chr, range(0x80))), "é\u2028"], id="all-ascii"),
    ],
)
def test_literal_reads_back_and_has_no_dangerous_characters(value: t.Any) -> None:
    text = literal(value)
    assert [c for c in text if c in "<>&\u2028\u2029"] == []
    assert json.loads(text) == json.loads(json.dumps(value))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(math.nan, "nan", id="nan"),
        pytest.param(math.inf, "inf", id="infinity"),
        pytest.param(-math.inf, "-inf", id="minus-infinity"),
        pytest.param({"x": math.nan}, "{'x': nan}", id="nan-nested"),
        pytest.param({1, 2}, "{1, 2}", id="set"),
        pytest.param(b"bytes", "b'bytes'", id="bytes"),
        pytest.param({"when": ...}, "{'when': Ellipsis}", id="nested-object"),
        pytest.param({(1, 2): "tuple key"}, "{(1, 2): 'tuple key'}", id="tuple-key"),
    ],
)
def test_literal_refuses_what_is_not_json(value: t.Any, shown: str) -> None:
    with pytest.raises(TypeError) as info:
        literal(value)
    message = str(info.value)
    assert message.startswith(f"{shown} cannot be written as a JavaScript literal: ")


def test_literal_refuses_an_arbitrary_object_showing_it() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<Thing 7>"

    with pytest.raises(TypeError) as info:
        literal([Thing()])
    assert str(info.value) == (
        "[<Thing 7>] cannot be written as a JavaScript literal:"
        " Object of type Thing is not JSON serializable"
    )


def test_literal_refuses_a_circular_value() -> None:
    value: list[t.Any] = []
    value.append(value)
    with pytest.raises(TypeError) as info:
        literal(value)
    assert str(info.value) == (
        "[[...]] cannot be written as a JavaScript literal: Circular reference detected"
    )


def _sha256_source(script: bytes) -> str:
    digest = hashlib.sha256(script).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(
            {"seq": 1, "token": "t", "batches": []},
            b'<!doctype html><meta charset="utf-8"><script>'
            b'parent.piggyback.receive({"seq":1,"token":"t","batches":[]})'
            b"</script>",
            id="answered",
        ),
        pytest.param(
            {
                "seq": 7,
                "code": "unknown_handler",
                "error": "No handler is registered as 'x'.",
            },
            b'<!doctype html><meta charset="utf-8"><script>'
            b'parent.piggyback.receive({"seq":7,"code":"unknown_handler",'
            b'"error":"No handler is registered as \'x\'."})'
            b"</script>",
            id="rejected",
        ),
        pytest.param(
            {"seq": None, "code": "bad_request", "error": "no"},
            b'<!doctype html><meta charset="utf-8"><script>'
            b'parent.piggyback.receive({"seq":null,"code":"bad_request","error":"no"})'
            b"</script>",
            id="no-seq",
        ),
        pytest.param(
            {
                "seq": 2,
                "batches": [{"seq": 2, "commands": [["html", "x", "</script>é"]]}],
            },
            b'<!doctype html><meta charset="utf-8"><script>'
            b'parent.piggyback.receive({"seq":2,"batches":[{"seq":2,"commands":'
            b'[["html","x","\\u003c/script\\u003e\xc3\xa9"]]}]})'
            b"</script>",
            id="escaped-utf8",
        ),
    ],
)
def test_answer_document(reply: dict[str, t.Any], expected: bytes) -> None:
    document, source = answer_document(reply)
    assert document == expected
    prefix = b'<!doctype html><meta charset="utf-8"><script>'
    script = document[len(prefix) : -len(b"</script>")]
    assert source == _sha256_source(script)


def test_answer_document_is_the_same_for_the_same_reply() -> None:
    reply = {
        "seq": 3,
        "token": "abc",
        "batches": [{"seq": 3, "commands": [["js", "x()"]]}],
    }
    first = answer_document(reply)
    again = answer_document(json.loads(json.dumps(reply)))
    assert first == again


def test_answer_document_reply_reads_back_as_json() -> None:
    reply = {
        "seq": 4,
        "batches": [{"seq": 4, "commands": [["text", "a", ")</script>"]]}],
    }
    document = answer_document(reply)[0].decode()
    start = document.index("receive(") + len("receive(")
    end = document.rindex(")</script>")
    assert json.loads(document[start:end]) == reply
    assert document.count("<script>") == 1
    assert document.count("</script>") == 1


def test_answer_document_refuses_what_is_not_json() -> None:
    with pytest.raises(TypeError) as info:
        answer_document({"seq": math.nan})
    assert str(info.value).startswith("{'seq': nan} cannot be written as a JavaScript literal: ")


def test_read_answer_document_reads_what_answer_document_wrote() -> None:
    reply = {"seq": 4, "batches": [{"seq": 4, "commands": [["text", "a", ")</script>\u2028"]]}]}
    document, _ = answer_document(reply)
    assert read_answer_document(document) == reply
    assert read_answer_document(document.decode()) == reply


def _document(carried: str) -> bytes:
    return f"{DOCUMENT_PREFIX}{CALL_PREFIX}{carried}{CALL_SUFFIX}{DOCUMENT_SUFFIX}".encode()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            12, "Not an answer document: it must be a str or bytes, not int.", id="not-text"
        ),
        pytest.param(
            b"<p>Bad Gateway</p>",
            "Not an answer document: no 'parent.piggyback.receive(' followed by ')</script>'"
            " in '<p>Bad Gateway</p>'.",
            id="no-receive",
        ),
        pytest.param(
            ")</script>parent.piggyback.receive({})",
            "Not an answer document: no 'parent.piggyback.receive(' followed by ')</script>'"
            " in ')</script>parent.piggyback.receive({})'.",
            id="end-before-receive",
        ),
        pytest.param(
            _document('{"seq":1}') + b"\xff",
            "Not an answer document: it is not UTF-8 ('utf-8' codec can't decode byte 0xff"
            " in position 89: invalid start byte).",
            id="not-utf8",
        ),
        pytest.param(
            _document("{seq:1}"),
            "Not an answer document: its reply is not JSON (Expecting property name enclosed"
            " in double quotes: line 1 column 2 (char 1)): '{seq:1}'.",
            id="not-json",
        ),
        # json.loads reads these three; JSON.parse, which the client uses, does not.
        pytest.param(
            _document('{"seq":NaN}'),
            "Not an answer document: its reply is not JSON (NaN is not JSON): '{\"seq\":NaN}'.",
            id="nan",
        ),
        pytest.param(
            _document('{"seq":1,"poll":Infinity}'),
            "Not an answer document: its reply is not JSON (Infinity is not JSON):"
            ' \'{"seq":1,"poll":Infinity}\'.',
            id="infinity",
        ),
        pytest.param(
            _document('{"seq":-Infinity}'),
            "Not an answer document: its reply is not JSON (-Infinity is not JSON):"
            " '{\"seq\":-Infinity}'.",
            id="minus-infinity",
        ),
        pytest.param(
            _document("[1]"),
            "Not an answer document: its reply is not a JSON object: [1].",
            id="not-an-object",
        ),
    ],
)
def test_read_answer_document_refuses_what_is_not_one(document: t.Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        read_answer_document(document)
    assert (type(info.value), str(info.value)) == (ValueError, message)


def test_read_answer_document_refuses_a_reply_nested_too_deeply() -> None:
    """json.loads raises RecursionError for it, which is no ValueError."""
    carried = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError) as info:
        read_answer_document(_document(carried))
    assert (
        str(info.value)
        == f"Not an answer document: its reply is nested too deeply: {carried!r:.200}."
    )


@pytest.mark.parametrize("character", [chr(c) for c in _SCRIPT_ESCAPES])
@pytest.mark.parametrize("around", ["ab", "é"], ids=["ascii", "not-ascii"])
def test_literal_escapes_every_character_of_the_table(character: str, around: str) -> None:
    """The fast checks before the table (str search for ASCII, a regex otherwise) let no
    character of it through."""
    assert character not in literal(around + character + around)
