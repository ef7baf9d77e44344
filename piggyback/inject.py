"""Putting the client's ``<script>`` tag into the app's HTML responses.

Only bodies that are safe to edit are touched: ``text/html``, not compressed, with a
known length or already in memory, and a status that has a body. Everything else passes
through as the app produced it (streams, files, ``wsgi.file_wrapper``).
"""

from __future__ import annotations

import re
import typing as t

from markupsafe import escape
from markupsafe import Markup

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse

Headers = list[tuple[str, str]]

#: Headers of an edited page that would be wrong for it, or let a cache reuse it.
_REPLACED_HEADERS = {"content-length", "cache-control", "etag", "last-modified", "expires"}
_NONCE = re.compile(r"'nonce-([A-Za-z0-9+/=_-]+)'")
# A browser checks a script element against the first of these the policy has.
_SCRIPT_DIRECTIVES = ("script-src-elem", "script-src", "default-src")
_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)


def script_tag(src: str, token: str, endpoint: str, deploy: str, **optional: t.Any) -> Markup:
    """The client's tag, carrying the page's token and configuration.

    :param optional: ``nonce``, ``poll`` and ``transport``; left out when empty.
    """
    attributes = {"src": src, "data-token": token, "data-endpoint": endpoint, "data-deploy": deploy}
    names = {"nonce": "nonce", "poll": "data-poll", "transport": "data-transport"}
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
    if status[:3] in ("204", "304") or status[:1] == "1":
        return False
    html = False
    for name, value in headers:  # every response passes here: no dict, no copies
        lowered = name.lower()
        if lowered == "content-type":
            html = value.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")
        elif lowered == "content-encoding" and value.lower() != "identity":
            return False
    return html


def insert_tag(body: bytes, tag: bytes) -> bytes | None:
    """``body`` with ``tag`` before its last ``</body>``; ``None`` if there is none."""
    ends = list(_BODY_END.finditer(body))
    if not ends:
        return None
    at = ends[-1].start()
    return body[:at] + tag + body[at:]


class ResponseCatcher:
    """Holds back an HTML response's ``start_response`` so its body can be edited.

    Once the app has returned (``open`` is false), a late ``start_response`` from a
    streaming app passes straight through: such a body is never edited. An error
    response (``exc_info``) replaces a held-back one, which is then never sent.
    """

    def __init__(self, start_response: StartResponse) -> None:
        self._start_response = start_response
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
        return self._start_response(status, headers, exc_info)

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
        return self._start_response(status, headers, exc_info)
