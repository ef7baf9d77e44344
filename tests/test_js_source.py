"""Static checks of piggyback.js: ECMAScript 5 only, no string evaluation, size budget,
and a manual (docs/client.md) that names everything the client reads and does."""

from __future__ import annotations

import gzip
import re
import typing as t
from pathlib import Path

import pyjsparser
import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIENT_JS = ROOT / "piggyback" / "js" / "piggyback.js"
CLIENT_DOC = ROOT / "docs" / "client.md"
PROTOCOL_DOC = ROOT / "docs" / "protocol.md"
#: The hard budget, gzip -9, as shipped (comments and all).
GZIP_BUDGET = 6000


@pytest.fixture(scope="module")
def source() -> str:
    return CLIENT_JS.read_text(encoding="utf-8")


def es5_problems(code: str) -> list[str]:
    """What in ``code`` is not ECMAScript 5; raises ``JsSyntaxError`` if it does not parse.

    pyjsparser parses ES5.1 but lets ``let``/``const`` declarations and default
    parameters through, so the tree is checked for those too.
    """
    problems = []

    def visit(node: t.Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        if node.get("type") == "VariableDeclaration" and node.get("kind") != "var":
            problems.append(f"{node['kind']} declaration")
        if node.get("defaults"):
            problems.append("default parameter")
        for value in node.values():
            visit(value)

    visit(pyjsparser.parse(code))
    return problems


def test_the_client_is_ecmascript_5(source: str) -> None:
    assert es5_problems(source) == []


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("let x = () => 1;", id="arrow"),
        pytest.param("var s = `template`;", id="template"),
        pytest.param("class A {}", id="class"),
        pytest.param("for (var x of []) {}", id="for-of"),
        pytest.param("var {a} = {};", id="destructuring"),
        pytest.param("async function f() {}", id="async"),
    ],
)
def test_the_parser_rejects_es6(code: str) -> None:
    with pytest.raises(pyjsparser.JsSyntaxError):
        es5_problems(code)


@pytest.mark.parametrize(
    ("code", "problems"),
    [
        pytest.param("let x = 1;", ["let declaration"], id="let"),
        pytest.param("const x = 1;", ["const declaration"], id="const"),
        pytest.param("function f(a = 1) {}", ["default parameter"], id="default-parameter"),
        pytest.param("var x = 1; function f(a) { return a; }", [], id="es5"),
    ],
)
def test_the_tree_check_finds_what_the_parser_lets_through(code: str, problems: list[str]) -> None:
    assert es5_problems(code) == problems


def test_one_strict_iife_and_one_global(source: str) -> None:
    program = pyjsparser.parse(source)
    statements = [node for node in program["body"] if node["type"] != "EmptyStatement"]
    assert len(statements) == 1
    call = statements[0]["expression"]
    assert call["type"] == "CallExpression"
    function = call["callee"]
    assert function["type"] == "FunctionExpression"
    first = function["body"]["body"][0]["expression"]
    assert first == {"type": "Literal", "value": "use strict", "raw": '"use strict"'}
    assert re.findall(r"window\.piggyback = ", source) == ["window.piggyback = "]


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param(r"\beval\s*\(", id="eval"),
        pytest.param(r"\bnew\s+Function\b", id="new-Function"),
        pytest.param(r"\bset(Timeout|Interval)\s*\(\s*[\"'`]", id="timer-string"),
        pytest.param(r"\.src\s*=", id="iframe-src"),
        pytest.param(r"\b(alert|prompt)\s*\(", id="dialogs"),
        pytest.param(r"\b(let|const)\s", id="let-const"),
        pytest.param(r"=>", id="arrow"),
        pytest.param(r"\.closest\s*\(|\bclassList\b|new CustomEvent|\bPromise\b", id="unchecked"),
    ],
)
def test_forbidden_constructs_are_absent(source: str, pattern: str) -> None:
    assert re.findall(pattern, source) == []


def test_the_only_dialog_is_data_pb_confirm(source: str) -> None:
    """Expiry and errors are events, never dialogs; a confirm() is what the markup asks."""
    assert re.findall(r"\b\w*\.?confirm\s*\([^)]*\)", source) == ["window.confirm(question)"]


def test_one_listener_per_event_type_on_document(source: str) -> None:
    events = re.search(r'var EVENTS = "([a-z ]+)"\.split', source)
    assert events is not None
    assert events.group(1).split() == [
        "click",
        "dblclick",
        "change",
        "input",
        "submit",
        "keydown",
        "keyup",
        "focusin",
        "focusout",
    ]
    assert "EVENTS.forEach(function (type) {" in source
    assert re.findall(r"document\.addEventListener\(([^,]+),", source) == [
        "type",
        '"visibilitychange"',
    ]


def test_the_header_is_short_and_points_to_the_manual(source: str) -> None:
    header = source[: source.index("*/") + 2]
    assert header.startswith("/*! piggyback.js")
    assert "docs/client.md" in header
    assert header.count("\n") <= 2


def test_every_option_of_the_tag_is_in_the_manual(source: str) -> None:
    options = set(re.findall(r"\bconfig\.(\w+)", source))
    assert options == {"token", "endpoint", "deploy", "timeout", "transport", "poll"}
    manual = CLIENT_DOC.read_text(encoding="utf-8")
    assert [name for name in sorted(options) if f"`data-{name}`" not in manual] == []


def test_every_event_type_and_lifecycle_event_is_in_the_manual(source: str) -> None:
    manual = CLIENT_DOC.read_text(encoding="utf-8")
    events = re.search(r'var EVENTS = "([a-z ]+)"', source)
    assert events is not None
    assert [name for name in events.group(1).split() if f"`{name}`" not in manual] == []
    lifecycle = {"send", "done", "error", "expired", "progress"}
    assert [name for name in sorted(lifecycle) if f'"{name}"' not in source] == []
    assert [name for name in sorted(lifecycle) if f"`piggyback:{name}`" not in manual] == []


def test_every_command_is_in_the_protocol(source: str) -> None:
    start = source.index("var commands = {")
    table = source[start : source.index("};", start)]
    names = re.findall(r"^    (\w+):", table, flags=re.MULTILINE)
    assert len(names) == 16
    protocol = PROTOCOL_DOC.read_text(encoding="utf-8")
    assert [name for name in names if f'["{name}"' not in protocol] == []


def test_size_budget(source: str, capsys: pytest.CaptureFixture[str]) -> None:
    raw = source.encode("utf-8")
    packed = len(gzip.compress(raw, compresslevel=9, mtime=0))
    with capsys.disabled():
        print(f"\npiggyback.js: {len(raw)} bytes raw, {packed} bytes gzip -9")
    assert packed <= GZIP_BUDGET
