"""The browser a page token belongs to: a random id in an ``HttpOnly`` cookie.

A page's token is signed together with the id of the browser that rendered the page
(:class:`~piggyback.tokens.TokenSigner`), and every event is checked against the id its
request carries. A token minted anywhere else, by a script or another browser, is
refused, whatever headers the browser sends.

The cookie is ``SameSite=Lax``: sent with top-level navigations from other sites, so a
page rendered from a link on another site keeps the browser's id (``Strict`` would not
be sent, a new id would be set, and the user's other open tabs would lose theirs), and
never with another site's subrequests (``<img>``, ``<iframe>``, ``fetch``), where an
event request would arrive without it. Over HTTPS its name has the ``__Host-`` prefix,
so no other host of the site can set it.
"""

from __future__ import annotations

import re
import secrets
import typing as t

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

Headers = list[tuple[str, str]]

_ID = re.compile(r"[A-Za-z0-9_-]{22}\Z")
#: What a cookie name may be: 1 to 64 letters, digits, ``_`` or ``-``.
COOKIE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
#: The cookie's name unless the ``browser_cookie`` option says otherwise.
DEFAULT_COOKIE = "pb_browser"
#: The longest a browser keeps a cookie (Chromium caps Max-Age at 400 days).
MAX_AGE = 400 * 24 * 3600
_NEW = "piggyback.new_browser"


class BrowserCookie:
    """Reads, and for a page being rendered sets, the browser's id.

    :param name: the cookie's name; over HTTPS it gets the ``__Host-`` prefix.
    """

    def __init__(self, name: str = DEFAULT_COOKIE) -> None:
        if not isinstance(name, str) or not COOKIE_NAME.match(name):
            raise ValueError(
                f"A browser cookie name is 1 to 64 letters, digits, '_' or '-', not {name!r}."
            )
        self.name = name

    def read(self, environ: WSGIEnvironment) -> str:
        """The id the request's cookie carries, or ``""`` without a valid one."""
        new: str | None = environ.get(_NEW)
        if new is not None:
            return new
        header: str | None = environ.get("HTTP_COOKIE")
        if not header:
            return ""
        name = self._name(environ)
        if name not in header:
            return ""
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name and _ID.match(value):
                return value
        return ""

    def for_page(self, environ: WSGIEnvironment) -> str:
        """The id for a page this request renders: the browser's, or a new one that
        :meth:`headers` then sets."""
        browser = self.read(environ)
        if not browser:
            browser = environ[_NEW] = secrets.token_urlsafe(16)
        return browser

    def headers(self, environ: WSGIEnvironment) -> Headers:
        """The ``Set-Cookie`` header for a new id given out by :meth:`for_page`, if any."""
        new = environ.get(_NEW)
        if new is None:
            return []
        secure = environ.get("wsgi.url_scheme") == "https"
        cookie = f"{self._name(environ)}={new}; Path=/; Max-Age={MAX_AGE}; HttpOnly; SameSite=Lax"
        return [("Set-Cookie", cookie + "; Secure" if secure else cookie)]

    def with_cookie(self, headers: Headers, environ: WSGIEnvironment) -> Headers:
        """``headers`` and the cookie of a new id that the page being rendered gave out
        (:meth:`headers`), as its response starts; ``headers`` itself when there is none."""
        if _NEW not in environ:  # most responses: no page's first token was made
            return headers
        return [*headers, *self.headers(environ)]

    def _name(self, environ: WSGIEnvironment) -> str:
        return f"__Host-{self.name}" if environ.get("wsgi.url_scheme") == "https" else self.name
