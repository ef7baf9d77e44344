"""The one writer of data into a ``<script>`` block.

Everything piggyback puts inside a script element goes through :func:`literal`, which
writes JSON that cannot end the element, open a comment, or break a JavaScript string.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
import typing as t

from .jsonwriter import writer

# Characters that would let data end the script element (``</script>``), start an HTML
# comment (``<!--``), or end a JavaScript string literal in older engines (U+2028/9).
_SCRIPT_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
# A lone surrogate (half of a cut emoji) is a valid JavaScript string but has no UTF-8
# form: written as a \u escape, it reaches the page as it was and the document encodes.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Any character that needs one of the two. Most texts are ASCII, where only three of
# them can be, found faster by str's own search than by a regex (see _is_safe).
_UNSAFE = re.compile("[" + re.escape("".join(map(chr, _SCRIPT_ESCAPES))) + "\ud800-\udfff]")

#: What the answer document's script says before and after the reply (protocol.md).
DOCUMENT_PREFIX = '<!doctype html><meta charset="utf-8"><script>'
CALL_PREFIX = "parent.piggyback.receive("
CALL_SUFFIX = ")"
DOCUMENT_SUFFIX = "</script>"
_DOCUMENT_START, _DOCUMENT_END = DOCUMENT_PREFIX.encode(), DOCUMENT_SUFFIX.encode()


# One writer for every literal, made once (see piggyback.jsonwriter).
_WRITE = writer(json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False))


def literal(value: t.Any) -> str:
    """Write ``value`` as a JavaScript literal that is safe inside a ``<script>`` block.

    >>> literal("</script>")
    '"\\\\u003c/script\\\\u003e"'

    Never raises for a ``str``, whatever it holds (NUL, lone surrogates, noncharacters):
    the result always encodes as UTF-8.

    :param value: anything :func:`json.dumps` accepts (``str`` subclasses such as
        ``markupsafe.Markup`` become plain strings).
    :raise TypeError: the value has no JSON form.
    """
    try:
        text = _WRITE(value)
    except (TypeError, ValueError, RecursionError) as error:
        raise TypeError(f"{value!r} cannot be written as a JavaScript literal: {error}") from None
    if _is_safe(text):
        return text
    text = text.translate(_SCRIPT_ESCAPES)
    return _SURROGATE.sub(_escape_surrogate, text)


def _is_safe(text: str) -> bool:
    if text.isascii():
        return "<" not in text and ">" not in text and "&" not in text
    return _UNSAFE.search(text) is None


def _escape_surrogate(match: re.Match[str]) -> str:
    # Only inside a JSON string can a surrogate be: the escape means the same there.
    return f"\\u{ord(match.group()):04x}"


def answer_document(reply: dict[str, t.Any]) -> tuple[bytes, str]:
    """The answer document for ``reply`` and the CSP ``script-src`` source allowing it.

    The document has exactly one script, so the CSP allows it by its hash; the same
    reply always gives the same bytes.
    """
    script = (CALL_PREFIX + literal(reply) + CALL_SUFFIX).encode()
    # base64.b64encode's own call of binascii, without the Python function around it.
    digest = binascii.b2a_base64(hashlib.sha256(script).digest(), newline=False)
    source = "'sha256-" + digest.decode() + "'"
    return _DOCUMENT_START + script + _DOCUMENT_END, source


def read_answer_document(document: str | bytes) -> dict[str, t.Any]:
    """The reply JSON an answer document carries, read the way the fetch transport reads
    it: the text between the first ``receive(`` and the last ``)</script>``, as
    ``JSON.parse`` reads it (no ``NaN`` or ``Infinity``).

    :raise ValueError: ``document`` is not an answer document, or what it carries is
        not a JSON object.
    """
    text = _document_text(document)
    start = text.find(CALL_PREFIX)
    end = text.rfind(CALL_SUFFIX + DOCUMENT_SUFFIX)
    if start < 0 or end < start + len(CALL_PREFIX):
        raise ValueError(
            f"Not an answer document: no {CALL_PREFIX!r} followed by"
            f" {CALL_SUFFIX + DOCUMENT_SUFFIX!r} in {text!r:.200}."
        )
    carried = text[start + len(CALL_PREFIX) : end]
    try:
        reply = json.loads(carried, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(
            f"Not an answer document: its reply is nested too deeply: {carried!r:.200}."
        ) from None
    except ValueError as error:
        raise ValueError(
            f"Not an answer document: its reply is not JSON ({error}): {carried!r:.200}."
        ) from None
    if not isinstance(reply, dict):
        raise ValueError(f"Not an answer document: its reply is not a JSON object: {reply!r:.200}.")
    return reply


def _document_text(document: t.Any) -> str:
    if isinstance(document, str):
        return document
    if not isinstance(document, bytes):
        raise ValueError(
            f"Not an answer document: it must be a str or bytes, not {type(document).__name__}."
        )
    try:
        return document.decode()
    except UnicodeDecodeError as error:
        raise ValueError(f"Not an answer document: it is not UTF-8 ({error}).") from None


def _refuse_constant(name: str) -> t.NoReturn:
    # json.loads reads NaN, Infinity and -Infinity; JSON.parse, and literal(), do not.
    raise ValueError(f"{name} is not JSON")
