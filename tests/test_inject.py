"""Finding piggyback's own tag and the real closing </body>, in hostile pages too."""

from __future__ import annotations

import pytest

from piggyback.inject import insert_tag
from piggyback.inject import scan_page
from piggyback.inject import script_tag

SCRIPT = "/_pb/piggyback.js"
TAG = b"<TAG>"


@pytest.mark.parametrize(
    ("page", "edited"),
    [
        # The plain case, and case and spacing that browsers accept.
        pytest.param(b"<body>a</body>", b"<body>a<TAG></body>", id="plain"),
        pytest.param(b"<BODY>a</BODY >", b"<BODY>a<TAG></BODY >", id="upper"),
        pytest.param(b"<body>a</body/>", b"<body>a<TAG></body/>", id="slash"),
        # Only the last real one counts.
        pytest.param(b"<body></body>x</body>", b"<body></body>x<TAG></body>", id="last"),
        # Look-alikes after the real one, where a browser sees no tag.
        pytest.param(
            b"<body>a</body><!-- </body> -->",
            b"<body>a<TAG></body><!-- </body> -->",
            id="comment",
        ),
        pytest.param(
            b"<body>a</body><!--> </body>",
            b"<body>a</body><!--> <TAG></body>",
            id="empty-comment-ends-at-once",
        ),
        pytest.param(
            b"<body>a</body><!-- </body>", b"<body>a<TAG></body><!-- </body>", id="open-comment"
        ),
        pytest.param(
            b"<body>a</body><script>var s = '</body>';</script>",
            b"<body>a<TAG></body><script>var s = '</body>';</script>",
            id="script-string",
        ),
        pytest.param(
            b"<body></body><script><!-- <script> </script> </body> --></script>",
            b"<body><TAG></body><script><!-- <script> </script> </body> --></script>",
            id="script-double-escaped",
        ),
        pytest.param(
            b"<body></body><script><!-- </script></body>",
            b"<body></body><script><!-- </script><TAG></body>",
            id="script-escaped-still-ends",
        ),
        pytest.param(
            b"<body>a</body><textarea></body></textarea>",
            b"<body>a<TAG></body><textarea></body></textarea>",
            id="textarea",
        ),
        pytest.param(
            b"<body>a</body><TEXTAREA>x</textarea/></body>",
            b"<body>a</body><TEXTAREA>x</textarea/><TAG></body>",
            id="textarea-ends",
        ),
        pytest.param(
            b"<body>a</body><style>/*</body>*/</style>",
            b"<body>a<TAG></body><style>/*</body>*/</style>",
            id="style",
        ),
        pytest.param(
            b"<body>a</body><title></body></title>",
            b"<body>a<TAG></body><title></body></title>",
            id="title",
        ),
        pytest.param(
            b"<body>a</body><a title='</body>' href=\"</body>\">",
            b"<body>a<TAG></body><a title='</body>' href=\"</body>\">",
            id="attributes",
        ),
        pytest.param(
            b"<body>a</body><a title=x</body>",
            b"<body>a<TAG></body><a title=x</body>",
            id="unquoted-attribute",
        ),
        pytest.param(
            b"<body>a</body><p </body>",
            b"<body>a<TAG></body><p </body>",
            id="unfinished-tag",
        ),
        pytest.param(
            b"<body>a</body><plaintext></body>",
            b"<body>a<TAG></body><plaintext></body>",
            id="plaintext",
        ),
        pytest.param(b"<body>a < b</body>", b"<body>a < b<TAG></body>", id="lone-less-than"),
        pytest.param(
            b"<!doctype html><?x </body>?><body>a</body>",
            b"<!doctype html><?x </body>?><body>a<TAG></body>",
            id="bogus-comment",
        ),
    ],
)
def test_the_tag_goes_before_the_real_closing_body(page: bytes, edited: bytes) -> None:
    assert insert_tag(page, TAG) == edited


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(b"<p>a fragment</p>", id="fragment"),
        pytest.param(b"<body>a<!-- </body> -->", id="only-in-a-comment"),
        pytest.param(b"<body><script>'</body>'</script>", id="only-in-a-script"),
        pytest.param(b"<body><textarea></body>", id="only-in-an-open-textarea"),
    ],
)
def test_no_real_closing_body(page: bytes) -> None:
    assert insert_tag(page, TAG) is None


OWN = script_tag(src=f"{SCRIPT}?v=1", token="t", endpoint="/_pb/event", deploy="d").encode()


@pytest.mark.parametrize(
    ("page", "has_tag"),
    [
        pytest.param(b"<body>" + OWN + b"</body>", True, id="own"),
        pytest.param(
            b"<body><SCRIPT SRC='/app/_pb/piggyback.js'></SCRIPT></body>", True, id="root"
        ),
        pytest.param(
            b"<body><script src=/_pb/piggyback.js?v=1&amp;x=2></script></body>", True, id="unquoted"
        ),
        # The text anywhere else is not the tag.
        pytest.param(b"<body><p>/_pb/piggyback.js</p></body>", False, id="text"),
        pytest.param(b"<body><p>&#47;_pb&#47;piggyback.js</p></body>", False, id="escaped-text"),
        pytest.param(b"<body><!-- " + OWN + b" --></body>", False, id="commented"),
        pytest.param(b"<body><textarea>" + OWN + b"</textarea></body>", False, id="in-textarea"),
        pytest.param(
            b"<body><script>document.write('<script src=/_pb/piggyback.js>')</script></body>",
            False,
            id="in-a-script",
        ),
        pytest.param(b"<body><a href='/_pb/piggyback.js'>js</a></body>", False, id="a-link"),
        pytest.param(
            b"<body><script data-src='/_pb/piggyback.js' src='/app.js'></script></body>",
            False,
            id="other-attribute",
        ),
        pytest.param(
            b"<body><script src='/app.js' src='/_pb/piggyback.js'></script></body>",
            False,
            id="repeated-src",
        ),
        pytest.param(
            b"<body><script src='/_pb/piggyback.js.map'></script></body>", False, id="other-file"
        ),
    ],
)
def test_only_piggybacks_own_tag_counts(page: bytes, has_tag: bool) -> None:
    assert scan_page(page, SCRIPT).has_tag is has_tag
