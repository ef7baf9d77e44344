"""Putting the client's ``<script>`` tag into the app's HTML responses.

Only bodies that are safe to edit are touched: ``text/html``, not compressed, with a
status that has a body, and small enough to hold in memory; a body of unknown length is
read into memory up to that size unless it says it streams. Everything else passes
through as the app produced it (streams, files, ``wsgi.file_wrapper``).

The tag goes before the page's real closing ``</body>``, found the way a browser finds
it: not one inside a comment, an attribute value, or the text of a ``<script>``,
``<style>``, ``<textarea>``, ``<title>`` and the other raw-text elements. A page that
already has piggyback's own tag (a ``<script>`` element whose ``src`` is the client's
path) is left alone; the same text anywhere else does not count.
"""

from __future__ import annotations

import html as _html
import itertools
import re
import sys
import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

from markupsafe import escape
from markupsafe import Markup
from werkzeug.wsgi import ClosingIterator

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

    from .browsers import BrowserCookie

Headers = list[tuple[str, str]]

#: HTML bodies larger than this are passed through without the client tag.
MAX_EDITED_BODY = 8 * 1024 * 1024

#: Headers of an edited page that would be wrong for it, or let a cache reuse it.
_REPLACED_HEADERS = {"content-length", "cache-control", "etag", "last-modified", "expires"}
_NONCE = re.compile(r"'nonce-([A-Za-z0-9+/=_-]+)'")
# A browser checks a script element against the first of these the policy has.
_SCRIPT_DIRECTIVES = ("script-src-elem", "script-src", "default-src")

# One token of HTML where text may hold markup: a comment, a bogus comment (doctype,
# "<?", "</ x>"), or a tag with its attributes (whose quoted values may hold anything).
_TOKEN = re.compile(
    rb"""
      (?P<comment> <!--(?: -?> | .*?(?: --!?> | \Z) ) )
    | (?P<bogus> <[!?][^>]*>? | </[^A-Za-z>][^>]*>? | </> )
    | < (?P<end>/)? (?P<name>[A-Za-z][^\s/>]*)
        (?P<attributes>(?: [\s/]+ | [^\s/>][^\s/>=]*(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]*))? )*+)
        (?P<close>>)?
    """,
    re.DOTALL | re.VERBOSE,
)
# Most of a page is tokens that change nothing scan_page looks for: text, comments,
# bogus comments, and tags other than </body> and the start tags of <script>,
# <plaintext> and the raw-text elements. This matches a run of them in one go, in C, so
# that scan_page reads only the others in Python. It cuts tokens where _TOKEN does (a
# "</body>" in a comment or an attribute value goes with its token), and stops before
# a token that the guard in front of each one turns away. A tag with no ">" runs to the
# end of the page, where _TOKEN's reading stops too. So an iteration never fails once it
# has consumed something, and nothing is ever matched twice. Before Python 3.11.5 a
# possessive repeat of a group can match wrongly (gh-106052): there the run is a greedy
# repeat instead, slower, bounded to keep the engine's backtracking stack small (a
# stopped run only costs scan_page one more turn).
_RUN_REPEAT = b"*+" if sys.version_info >= (3, 11, 5) else b"{0,1000}"
_BORING_RUN = re.compile(
    rb"""
    [^<]*+
    (?:
        (?! < (?: /(?i:body)                        # the guard: not </body>, nor a start tag
                | S(?i:cript|tyle)   | s(?i:cript|tyle)     # that _TOKEN must read; each
                | T(?i:extarea|itle) | t(?i:extarea|itle)   # first letter in both cases,
                | N(?i:o(?:embed|frames|script)) | n(?i:o(?:embed|frames|script))
                | I(?i:frame)        | i(?i:frame)          # so that the engine skips an
                | X(?i:mp)           | x(?i:mp)             # alternative by its first byte
                | P(?i:laintext)     | p(?i:laintext)
              ) [\s/>] )
        < (?: [A-Za-z] [^"'>]*+ >                   # a tag without quotes ends at its ">"
            | / [A-Za-z] [^"'>]*+ >
            | /? [A-Za-z] [^\s/>]*+                 # any other tag: its name, attributes
                [\s/]*+ (?: [^\s/>][^\s/>=]*+          # (as _TOKEN reads them) and ">"
                          (?: \s*+ = \s*+ (?: "[^"]*+" | '[^']*+' | [^\s>]*+ ) | )
                          [\s/]*+ )*+ >?
            | !--(?: -?> | .*?(?: --!?> | \Z) )     # a comment, as _TOKEN reads it
            | / (?: [^A-Za-z>][^>]*+ >? | > )       # a bogus comment: "</ x>", "</>",
            | [!?][^>]*+ >?                         # "<!x>", "<?x>"
            |                                       # a "<" that starts nothing: text
          )
        [^<]*+
    )"""
    + _RUN_REPEAT,
    re.DOTALL | re.VERBOSE,
)
_ATTRIBUTE = re.compile(rb"""([^\s/>][^\s/>=]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]*)))?""")
# Elements whose content is text up to their own end tag (``<script>`` has more rules),
# each with the search for that end tag.
_RAW_TEXT_END = {
    name: re.compile(rb"</" + name + rb"[\s/>]", re.I)
    for name in b"style xmp iframe noembed noframes noscript textarea title".split()
}
# What moves a <script>'s text between its states: "<!--" escapes, a "<script" inside
# an escape double-escapes (where "</script>" does not end it), "-->" ends both.
_SCRIPT_TEXT = re.compile(rb"<!--(?P<closed>-?>)?|-->|<(?P<end>/)?script(?=[\s/>])", re.I)


def script_tag(src: str, token: str, endpoint: str, deploy: str, **optional: t.Any) -> Markup:
    """The client's tag, carrying the page's token and configuration.

    :param optional: ``nonce``, ``poll`` (seconds), ``timeout`` (milliseconds, as the
        client reads it) and ``transport``; left out when empty.
    """
    attributes = {"src": src, "data-token": token, "data-endpoint": endpoint, "data-deploy": deploy}
    names = {
        "nonce": "nonce",
        "poll": "data-poll",
        "timeout": "data-timeout",
        "transport": "data-transport",
    }
    for key, value in optional.items():
        if value:
            attributes[names[key]] = f"{value:g}" if isinstance(value, float | int) else value
    html = " ".join(f'{name}="{escape(value)}"' for name, value in attributes.items())
    return Markup(f"<script {html}></script>")


def csp_nonce(headers: Headers) -> str | None:
    """The nonce the app's own ``Content-Security-Policy`` allows scripts with."""
    for name, value in headers:
        if name.lower() != "content-security-policy":
            continue
        directive = _script_directive(value)
        match = _NONCE.search(directive) if directive else None
        if match:
            return match.group(1)
    return None


def _script_directive(policy: str) -> str | None:
    """The directive of ``policy`` that governs script elements: the most specific one."""
    directives: dict[str, str] = {}
    for directive in policy.split(";"):
        parts = directive.split()
        if parts:
            directives.setdefault(parts[0].lower(), directive)  # a repeat is ignored
    for name in _SCRIPT_DIRECTIVES:
        if name in directives:
            return directives[name]
    return None


def is_html(status: str, headers: Headers) -> bool:
    """Whether the response is uncompressed HTML with a body."""
    html = False
    for name, value in headers:  # every response passes here: no dict, no copies
        lowered = name.lower()
        if lowered == "content-type":
            html = value.partition(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")
        elif lowered == "content-encoding" and value.lower() != "identity":
            return False
    # The status last: most responses are not HTML, and need no look at it.
    return html and not (status[:3] in ("204", "304") or status[:1] == "1")


@dataclass
class PageScan:
    """What :func:`scan_page` found in an HTML page."""

    #: Whether a ``<script>`` element loads the client already.
    has_tag: bool = False
    #: Where the real closing ``</body>`` starts, if there is one.
    body_end: int | None = None


def scan_page(html: bytes, script_path: str = "") -> PageScan:
    """Find piggyback's own tag and the real closing ``</body>`` of ``html``.

    :param html: the page, in any encoding that is a superset of ASCII.
    :param script_path: the client's path; a ``<script>`` whose ``src`` has a path
        ending with it is piggyback's tag. Empty: look for no tag.
    """
    found = PageScan()
    at = 0
    while skipped := _BORING_RUN.match(html, at):  # it always matches, if only ""
        if (start := skipped.end()) == len(html):
            break
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
        elif name in _RAW_TEXT_END:
            end = _RAW_TEXT_END[name].search(html, at)
            at = end.start() if end else len(html)
        elif name == b"plaintext":
            break
    return found


def insert_tag(body: bytes, tag: bytes) -> bytes | None:
    """``body`` with ``tag`` before its real closing ``</body>``; ``None`` if there is none."""
    at = scan_page(body).body_end
    if at is None:
        return None
    return body[:at] + tag + body[at:]


def _loads(attributes: bytes, script_path: str) -> bool:
    """Whether a ``<script>`` tag's attributes load the client from ``script_path``."""
    seen = set()
    for match in _ATTRIBUTE.finditer(attributes):
        name = match[1].lower()
        if name in seen:
            continue  # browsers keep the first of repeated attributes
        seen.add(name)
        if name == b"src":
            value = next((v for v in match.groups()[1:] if v is not None), b"")
            src = _html.unescape(value.decode("latin-1")).strip()
            return urlsplit(src).path.endswith(script_path)
    return False


def _script_end(html: bytes, at: int) -> int:
    """Where the text of a ``<script>`` that starts at ``at`` ends."""
    state = "text"
    for match in _SCRIPT_TEXT.finditer(html, at):
        token = match[0][:4].lower()
        if token == b"<!--":
            if state == "text" and match["closed"] is None:
                state = "escaped"
        elif token == b"-->":
            state = "text"
        elif match["end"]:
            if state != "double":
                return match.start()
            state = "escaped"
        elif state == "escaped":
            state = "double"
    return len(html)


def stream_reason(body: t.Iterable[bytes], headers: Headers) -> str | None:
    """Why an HTML body of unknown length must pass as the app sends it, or ``None``
    when it may be read into memory to get the tag.
    """
    if getattr(body, "streaming", False):
        return "it is a streaming response (Django's StreamingHttpResponse or FileResponse)"
    if isinstance(body, ClosingIterator):
        # werkzeug gives every response it holds in memory a Content-Length.
        return "it is a streamed werkzeug or Flask response"
    for name, value in headers:
        if name.lower() == "x-accel-buffering" and value.strip().lower() == "no":
            return "it says X-Accel-Buffering: no"
    return None


def held_body(
    body: t.Iterable[bytes], catcher: ResponseCatcher, environ: WSGIEnvironment
) -> tuple[t.Iterable[bytes], str | None]:
    """The HTML body to edit, in memory; or the body to pass on and why it must pass.

    A body of unknown length is read into memory, up to :data:`MAX_EDITED_BODY`,
    unless it streams (see :func:`stream_reason`).
    """
    assert catcher.caught is not None
    length = catcher.content_length()
    if is_file(body, environ):
        return body, "it is a file (wsgi.file_wrapper)"
    if length is not None:
        if length > MAX_EDITED_BODY:
            return body, f"it is larger than {MAX_EDITED_BODY} bytes"
        return body, None
    if isinstance(body, list | tuple):
        return body, None
    if catcher.written:
        return body, "the app streams it through write()"
    why = stream_reason(body, catcher.caught[1])
    if why is not None:
        return body, why
    body, whole = read_body(body, MAX_EDITED_BODY)
    return body, None if whole else f"it is larger than {MAX_EDITED_BODY} bytes"


def is_file(body: t.Iterable[bytes], environ: WSGIEnvironment) -> bool:
    """Whether ``body`` is the server's ``wsgi.file_wrapper``: never read, never edited."""
    wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(wrapper, type) and isinstance(body, wrapper)


def read_body(body: t.Iterable[bytes], limit: int) -> tuple[t.Iterable[bytes], bool]:
    """Read ``body`` into memory, up to ``limit`` bytes.

    :return: a list of the chunks and ``True`` when the whole body was read (and
        closed); else an iterable of the chunks read and the rest, which closes
        ``body``, and ``False``.
    """
    chunks: list[bytes] = []
    size = 0
    iterator = iter(body)
    for chunk in iterator:
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            closes = [body.close] if hasattr(body, "close") else []
            return ClosingIterator(itertools.chain(chunks, iterator), closes), False
    if hasattr(body, "close"):
        body.close()
    return chunks, True


class ResponseCatcher:
    """Holds back an HTML response's ``start_response`` so its body can be edited.

    Once the app has returned (``open`` is false), a late ``start_response`` from a
    streaming app passes straight through: such a body is never edited. An error
    response (``exc_info``) replaces a held-back one, which is then never sent.

    :param start_response: the server's.
    :param environ: the request's environ.
    :param browsers: adds the cookie of a browser id that the page gave out while it
        rendered, to whatever response starts; ``None`` when tokens are not bound.
    """

    def __init__(
        self,
        start_response: StartResponse,
        environ: WSGIEnvironment,
        browsers: BrowserCookie | None,
    ) -> None:
        self._start_response = start_response
        self._environ = environ
        self._browsers = browsers
        self.open = True
        self.released = False
        self.caught: tuple[str, Headers, t.Any] | None = None
        self.written: list[bytes] = []

    def __call__(
        self, status: str, headers: Headers, exc_info: t.Any = None
    ) -> t.Callable[[bytes], object]:
        if exc_info is not None and self.caught is not None and not self.released:
            # PEP 3333 lets the app replace a response whose headers were not sent;
            # these never were, so the real start_response sees only the new one.
            self.caught = None
            self.written.clear()
        if self.open and exc_info is None and is_html(status, headers):
            self.caught = (status, headers, exc_info)
            return self.written.append
        return self._start(status, headers, exc_info)

    def content_length(self) -> int | None:
        assert self.caught is not None
        for name, value in self.caught[1]:
            if name.lower() == "content-length" and value.isascii() and value.isdigit():
                return int(value)
        return None

    def release(self, body: bytes | None = None) -> t.Callable[[bytes], object]:
        """Call the real ``start_response``; for a new body, with its length and no
        caching: the body carries a page token, which no other tab may reuse.
        """
        assert self.caught is not None
        self.released = True
        status, headers, exc_info = self.caught
        if body is not None:
            headers = [(n, v) for n, v in headers if n.lower() not in _REPLACED_HEADERS]
            headers += [("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        return self._start(status, headers, exc_info)

    def _start(self, status: str, headers: Headers, exc_info: t.Any) -> t.Callable[[bytes], object]:
        """The real ``start_response``, with the cookie of a browser id given out meanwhile."""
        if self._browsers is not None:
            headers = self._browsers.with_cookie(headers, self._environ)
        return self._start_response(status, headers, exc_info)
