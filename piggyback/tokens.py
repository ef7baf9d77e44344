"""Page ids and the signed tokens that carry them.

A token is ``<page id>.<issued, base 36 seconds>.<signature>``; the signature is
HMAC-SHA256 over the first two parts and the id of the browser the page was rendered in
(:mod:`piggyback.browsers`), truncated to 16 bytes. The page id is 16 random bytes, so
pages can be neither guessed nor forged, and a token works only in its own browser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import typing as t

from .exceptions import BadSignature
from .exceptions import BadToken
from .exceptions import PageExpired

if t.TYPE_CHECKING:
    from .stores.base import Store

_TOKEN = re.compile(r"([A-Za-z0-9_-]{22})\.([0-9a-z]{1,12})\.([A-Za-z0-9_-]{22})\Z")
# Machines sharing a store may disagree a little about the time.
_CLOCK_SKEW = 300
# Genuine tokens remembered per signer (a page sends the same one for hours).
_REMEMBERED = 4096


def new_page_id() -> str:
    """An unguessable page id: 16 random bytes, base64url."""
    return secrets.token_urlsafe(16)


class TokenSigner:
    """Signs and verifies page tokens.

    :param secret: the key shared by every process serving the app.
    :param max_age: seconds a token stays valid after it was issued.
    """

    def __init__(self, secret: bytes, max_age: float) -> None:
        key = hmac.new(secret, b"piggyback.page-token", hashlib.sha256).digest()
        self._mac = hmac.new(key, digestmod=hashlib.sha256)  # copied per token: faster
        self.max_age = max_age
        #: token -> (page id, issued): signatures already checked; their age is not.
        self._genuine: dict[str, tuple[str, int]] = {}

    def sign(self, page_id: str, now: float | None = None, *, browser: str = "") -> str:
        """A fresh token for ``page_id``.

        :param browser: the id of the browser the token belongs to; ``""`` for a token
            that works in any (for clients that keep no cookies).
        """
        issued = _base36(int(time.time() if now is None else now))
        payload = f"{page_id}.{issued}"
        return f"{payload}.{self._signature(_bound(payload, browser))}"

    def verify(self, token: str, now: float | None = None, *, browser: str = "") -> str:
        """The page id a valid token carries.

        :param browser: the id of the browser the request came from (``""``: none).
        :raise BadToken: the token is malformed, or its signature is wrong for this
            browser (it was made for another one, or forged).
        :raise PageExpired: the token is genuine but older than ``max_age``.
        """
        return self.check(token, now, browser=browser)[0]

    def check(self, token: str, now: float | None = None, *, browser: str = "") -> tuple[str, bool]:
        """:meth:`verify` and :meth:`is_young` in one (one clock read, the token's time
        parsed once): the page id a valid token carries, and whether the token is young.

        :raise BadToken: as :meth:`verify`.
        :raise PageExpired: as :meth:`verify`.
        """
        remembered = self._genuine.get(_bound(token, browser))
        page_id, issued = remembered or self._check_signature(token, browser)
        age = (time.time() if now is None else now) - issued
        if age > self.max_age:
            raise PageExpired("The page expired; reload it to go on.")
        if age < -_CLOCK_SKEW:
            raise BadToken("The page token was issued in the future.")
        return page_id, self._is_young(age)

    def _check_signature(self, token: str, browser: str) -> tuple[str, int]:
        """The page id and issue time of a genuine token, remembered for next time."""
        match = _TOKEN.match(token)
        if match is None:
            raise BadToken(f"The page token {_shorten(token)!r} is malformed.")
        page_id, issued, signature = match.groups()
        expected = self._signature(_bound(f"{page_id}.{issued}", browser))
        if not hmac.compare_digest(signature, expected):
            if browser:
                raise BadSignature(
                    "The page token's signature is not valid in this browser: the page was"
                    " rendered in another one, or the token is forged."
                )
            raise BadSignature("The page token's signature is not valid.")
        if len(self._genuine) >= _REMEMBERED:
            self._genuine.clear()
        genuine = self._genuine[_bound(token, browser)] = (page_id, int(issued, 36))
        return genuine

    def is_young(self, token: str, now: float | None = None) -> bool:
        """Whether a verified token is young enough (a tenth of ``max_age``) to reuse.

        Answers reuse young tokens instead of signing new ones, and a page whose token
        is young was written to the store recently, so its data cannot expire yet.
        """
        issued = int(token.split(".")[1], 36)
        return self._is_young((time.time() if now is None else now) - issued)

    def _is_young(self, age: float) -> bool:
        return age < self.max_age / 10

    def _signature(self, payload: str) -> str:
        mac = self._mac.copy()
        mac.update(payload.encode())
        return base64.urlsafe_b64encode(mac.digest()[:16]).rstrip(b"=").decode()


def _bound(text: str, browser: str) -> str:
    # Page ids, times and browser ids have no dots: an unbound payload never equals a
    # bound one.
    return f"{text}.{browser}" if browser else text


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if not number:
            return digits


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


class LazySigner:
    """Gives the app's :class:`TokenSigner`, made on first use: from the secret key
    given, else from the store's shared secret (which the store may have to create).

    :param store: the store; its ``page_ttl`` is how long tokens stay valid.
    :param secret_key: the secret key, or ``None`` for the store's.
    """

    def __init__(self, store: Store, secret_key: str | bytes | None) -> None:
        self.store = store
        self.secret_key = secret_key.encode() if isinstance(secret_key, str) else secret_key
        self._signer: TokenSigner | None = None

    def __call__(self) -> TokenSigner:
        if self._signer is None:
            secret = self.secret_key or self.store.secret()
            self._signer = TokenSigner(secret, max_age=self.store.page_ttl)
        return self._signer
