"""``scan_page`` against the scanner it replaced, on every input this can think of.

``scan_page`` skips runs of the tokens it has no use for in one regex match. The
scanner before it (``reference_scan_page`` below) looked at every ``<`` in Python:
slow, but plain to read and to check against the HTML tokenizer. The fast one must
find exactly what the plain one finds: the same ``has_tag`` and ``body_end`` on the
pages of ``test_inject.py``, on thousands of pages made of nasty fragments, and on
big hostile ones.
"""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from piggyback.inject import _loads
from piggyback.inject import _script_end
from piggyback.inject import _TOKEN
from piggyback.inject import PageScan
from piggyback.inject import scan_page

from . import test_inject

SCRIPT = "/_pb/piggyback.js"
SCRIPT_PATHS = [pytest.param("", id="no-script-path"), pytest.param(SCRIPT, id="script-path")]


# The reference: a verbatim copy of scan_page's loop as it was before the skipping
# scanner (only renamed), kept to prove the new one equivalent. The helpers it calls
# (_TOKEN, _loads, _script_end) did not change and are shared: the loop is what did.
# Do not "fix" it: a change of behaviour belongs in both, deliberately.

# Elements whose content is text up to their own end tag (``<script>`` has more rules).
_RAW_TEXT = frozenset(b"style xmp iframe noembed noframes noscript textarea title".split())


def reference_scan_page(html: bytes, script_path: str = "") -> PageScan:
    """Find piggyback's own tag and the real closing ``</body>`` of ``html``.

    :param html: the page, in any encoding that is a superset of ASCII.
    :param script_path: the client's path; a ``<script>`` whose ``src`` has a path
        ending with it is piggyback's tag. Empty: look for no tag.
    """
    found = PageScan()
    at = 0
    while (start := html.find(b"<", at)) >= 0:
        token = _TOKEN.match(html, start)
        if token is None:  # a "<" that starts nothing is text
            at = start + 1
            continue
        if token["name"] is not None and token["close"] is None:
            break  # the rest of the page is inside an unfinished tag
        at = token.end()
        name = (token["name"] or b"").lower()
        if token["end"]:
            if name == b"body":
                found.body_end = start
        elif name == b"script":
            if script_path and _loads(token["attributes"], script_path):
                found.has_tag = True
            at = _script_end(html, at)
        elif name in _RAW_TEXT:
            end = re.compile(rb"</" + name + rb"[\s/>]", re.I).search(html, at)
            at = end.start() if end else len(html)
        elif name == b"plaintext":
            break
    return found


# End of the reference.


def _assert_same(page: bytes, script_path: str) -> None:
    assert scan_page(page, script_path) == reference_scan_page(page, script_path), page


def _pages_of_test_inject() -> list[bytes]:
    """Every page (and edited page) the tests of ``test_inject.py`` are parametrized with."""
    pages = []
    tests = [
        test_inject.test_the_tag_goes_before_the_real_closing_body,
        test_inject.test_no_real_closing_body,
        test_inject.test_only_piggybacks_own_tag_counts,
    ]
    for test in tests:
        for mark in test.pytestmark:  # type: ignore[attr-defined]
            for case in mark.args[1]:
                pages += [value for value in case.values if isinstance(value, bytes)]
    return pages


PAGES_OF_TEST_INJECT = _pages_of_test_inject()


def test_the_pages_of_test_inject_are_all_here() -> None:
    assert len(PAGES_OF_TEST_INJECT) == 20 * 2 + 4 + 12


@pytest.mark.parametrize("script_path", SCRIPT_PATHS)
def test_same_on_the_pages_of_test_inject(script_path: str) -> None:
    for page in PAGES_OF_TEST_INJECT:
        _assert_same(page, script_path)
        _assert_same(page.upper(), script_path)


# What a generated page is made of: the fragments where tokenizers go wrong.
FRAGMENTS = [
    *(b"<", b"</", b"<!--", b"-->", b"--!>", b"<!", b"<?", b"</ x>", b"</>", b"<!-->", b"<!--->"),
    *(b"-", b"--", b"!", b"/", b"?", b"=", b'"', b"'", b">", b"/>", b" ", b"\t", b"\n", b"\r"),
    *(b"\x0b", b"\x0c", b"\x00", b"\xe9", b"\xc3\xa9", b"\xff", b"&amp;", b"&#47;", b"x", b"Q"),
    *(b"<script>", b"</script>", b"</script >", b"</SCRIPT/>", b"<script/>", b"<scriptx>"),
    *(b'<SCRIPT src="/_pb/piggyback.js">', b"<script src=/_pb/piggyback.js?v=1&amp;x=2>"),
    *(b"<script src='/x/_pb/piggyback.js' src=/a.js>", b"<script data-src=/_pb/piggyback.js>"),
    *(b"<script src='/_pb/piggyback.js.map'>", b"src=", b"/_pb/piggyback.js", b"<script "),
    *(b"<!--<script>", b"<script><!--", b"<!--<script>-->", b"<script", b"script", b"SCRIPT"),
    *(b"<style>", b"</style>", b"<STYLE a=b>", b"</style/", b"<textarea>", b"</textarea>"),
    *(b"<title>", b"</TITLE >", b"<xmp>", b"</xmp>", b"<iframe>", b"</iframe>", b"<noscript>"),
    *(b"</noscript>", b"<noembed>", b"<noframes>", b"</noframes>", b"<plaintext>", b"<Plaintext"),
    *(b"<body>", b"</body>", b"</BODY >", b"</body/>", b"</bodyx>", b"</body", b"</Body\t"),
    *(b"</body\x0b>", b"</body a='>'>", b"body", b"BoDy", b"<bod", b"y>", b"</b", b"ody>"),
    *(b'<div title="</body>">', b"<a b='>'>", b"<a b=c>", b"<a b='", b'<a b="', b"<p ", b"<p>"),
    *(b"<a", b"<A HREF=/x>", b"<br/>", b"<img src=x alt='<!--'>", b"<!doctype html>", b"<?x?>"),
]


def _page(rng: random.Random) -> bytes:
    """A page of up to 30 fragments, now and then with a random byte among them."""
    parts = []
    for _ in range(rng.randrange(1, 31)):
        if rng.random() < 0.1:
            parts.append(bytes([rng.randrange(256)]))
        else:
            parts.append(rng.choice(FRAGMENTS))
    return b"".join(parts)


@pytest.mark.parametrize("script_path", SCRIPT_PATHS)
def test_same_on_generated_pages(script_path: str) -> None:
    rng = random.Random(20261203)
    for _ in range(8000):
        _assert_same(_page(rng), script_path)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=3), max_size=40))
def test_same_on_hypothesis_pages(parts: list[bytes]) -> None:
    for script_path in ("", SCRIPT):
        _assert_same(b"".join(parts), script_path)


# Big pages of one hostile pattern (about 200 kB each), alone and around a real page.
HOSTILE = [
    b"<",
    b"</",
    b"<a",
    b'<a b="',
    b"<a b='",
    b"<a b=",
    b"<a b ",
    b"<!--",
    b"<!",
    b"<?",
    b"</ x",
    b"<script>",
    b"<script><!--<script>",
    b"<style>",
    b"</body>",
    b"</body",
    b"<p>x</p>",
    b"<div title='</body>'>",
    b"-->",
    b"a",
]


@pytest.mark.parametrize("pattern", HOSTILE, ids=[repr(pattern)[2:-1] for pattern in HOSTILE])
@pytest.mark.parametrize("script_path", SCRIPT_PATHS)
def test_same_on_big_hostile_pages(pattern: bytes, script_path: str) -> None:
    flood = pattern * (200_000 // len(pattern))
    for page in (flood, b"<body>" + flood + b"</body>", b"<body>x</body>" + flood + b"</body>"):
        _assert_same(page, script_path)
