from __future__ import annotations

import base64
import re
import time
import typing as t

import pytest

from piggyback.exceptions import BadToken
from piggyback.exceptions import PageExpired
from piggyback.tokens import new_page_id
from piggyback.tokens import TokenSigner

NOW = 1_700_000_000
PAGE_ID = "AAAAAAAAAAAAAAAAAAAAAA"
MAX_AGE = 3600


def _signer(secret: bytes = b"secret") -> TokenSigner:
    return TokenSigner(secret, max_age=MAX_AGE)


def test_token_shape() -> None:
    token = _signer().sign(PAGE_ID, now=NOW)
    page_id, issued, signature = token.split(".")
    assert page_id == PAGE_ID
    # 1_700_000_000 in base 36.
    assert issued == "s44we8"
    assert int(issued, 36) == NOW
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", signature) is not None
    assert len(base64.urlsafe_b64decode(signature + "==")) == 16


def test_sign_then_verify() -> None:
    signer = _signer()
    token = signer.sign(PAGE_ID, now=NOW)
    assert signer.verify(token, now=NOW) == PAGE_ID


def test_sign_uses_the_clock() -> None:
    signer = _signer()
    before = int(time.time())
    issued = int(signer.sign(PAGE_ID).split(".")[1], 36)
    assert before <= issued <= int(time.time())
    assert signer.verify(signer.sign(PAGE_ID)) == PAGE_ID


def test_signing_is_deterministic() -> None:
    assert _signer().sign(PAGE_ID, now=NOW) == _signer().sign(PAGE_ID, now=NOW)
    assert _signer().sign(PAGE_ID, now=NOW) != _signer().sign(PAGE_ID, now=NOW + 1)


def _forge(token: str, part: int, value: str) -> str:
    parts = token.split(".")
    parts[part] = value
    return ".".join(parts)


def _flip_last(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda token: _forge(token, 2, _flip_last(token.split(".")[2])), id="sig"),
        pytest.param(lambda token: _forge(token, 2, "A" * 22), id="sig-zeros"),
        pytest.param(lambda token: _forge(token, 0, "B" * 22), id="page-id"),
        pytest.param(lambda token: _forge(token, 0, _flip_last(PAGE_ID)), id="page-id-one-char"),
        pytest.param(lambda token: _forge(token, 1, _base36(NOW - 10)), id="issued-earlier"),
        pytest.param(lambda token: _forge(token, 1, _base36(NOW + 10)), id="issued-later"),
        pytest.param(lambda token: _forge(token, 1, "0" + _base36(NOW)), id="issued-zero-pad"),
    ],
)
def test_tampered_token_is_refused(tamper: t.Callable[[str], str]) -> None:
    signer = _signer()
    forged = tamper(signer.sign(PAGE_ID, now=NOW))
    with pytest.raises(BadToken) as info:
        signer.verify(forged, now=NOW)
    assert info.value.reason == "The page token's signature is not valid."
    assert (info.value.code, info.value.status) == ("bad_token", 403)


def _base36(number: int) -> str:
    digits = ""
    while number:
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
    return digits or "0"


_GOOD = TokenSigner(b"secret", max_age=MAX_AGE).sign(PAGE_ID, now=NOW)


@pytest.mark.parametrize(
    ("token", "shown"),
    [
        pytest.param("", "", id="empty"),
        pytest.param("garbage", "garbage", id="garbage"),
        pytest.param(_GOOD[:-1], _GOOD[:-1], id="truncated-signature"),
        pytest.param(_GOOD.rsplit(".", 1)[0], _GOOD.rsplit(".", 1)[0], id="no-signature"),
        pytest.param(_GOOD[1:], _GOOD[1:], id="truncated-page-id"),
        pytest.param(_GOOD + "\n", _GOOD + "\n", id="trailing-newline"),
        pytest.param(_GOOD + ".x", _GOOD + ".x", id="extra-part"),
        pytest.param(" " + _GOOD, " " + _GOOD, id="leading-space"),
        pytest.param(_GOOD.replace(".", ":"), _GOOD.replace(".", ":"), id="wrong-separator"),
        pytest.param(_forge(_GOOD, 1, "S44WE8"), _forge(_GOOD, 1, "S44WE8"), id="upper-base36"),
        pytest.param(_forge(_GOOD, 1, ""), _forge(_GOOD, 1, ""), id="empty-issued"),
        pytest.param(_forge(_GOOD, 1, "1" * 13), _forge(_GOOD, 1, "1" * 13), id="long-issued"),
        pytest.param(_GOOD + "=" * 9, _GOOD + "=" * 8 + "…", id="over-60-shortened"),
        pytest.param(_forge(_GOOD, 0, "é" * 22), _forge(_GOOD, 0, "é" * 22), id="non-ascii"),
        pytest.param("x" * 1_000_000, "x" * 60 + "…", id="huge"),
    ],
)
def test_malformed_token_is_refused(token: str, shown: str) -> None:
    with pytest.raises(BadToken) as info:
        _signer().verify(token, now=NOW)
    assert info.value.reason == f"The page token {shown!r} is malformed."


def test_expired_token() -> None:
    signer = _signer()
    token = signer.sign(PAGE_ID, now=NOW)
    assert signer.verify(token, now=NOW + MAX_AGE) == PAGE_ID
    with pytest.raises(PageExpired) as info:
        signer.verify(token, now=NOW + MAX_AGE + 1)
    assert info.value.reason == "The page expired; reload it to go on."
    assert (info.value.code, info.value.status) == ("expired", 410)


def test_a_refused_token_is_refused_again() -> None:
    # Genuine tokens are remembered once checked; a forged one never is.
    signer = _signer()
    token = signer.sign(PAGE_ID, now=NOW)
    forged = _forge(token, 2, "A" * 22)
    for _ in range(2):
        assert signer.verify(token, now=NOW) == PAGE_ID
        with pytest.raises(BadToken):
            signer.verify(forged, now=NOW)


def test_remembered_tokens_are_bounded() -> None:
    signer = _signer()
    tokens = [signer.sign(new_page_id(), now=NOW) for _ in range(5000)]
    for token in tokens + tokens:
        signer.verify(token, now=NOW)
    assert 0 < len(signer._genuine) <= 4096


def test_forged_expired_token_is_bad_not_expired() -> None:
    signer = _signer()
    forged = _forge(signer.sign(PAGE_ID, now=NOW), 2, "A" * 22)
    with pytest.raises(BadToken):
        signer.verify(forged, now=NOW + MAX_AGE * 10)


def test_token_from_the_future() -> None:
    signer = _signer()
    # Clocks of machines sharing a store may be up to five minutes apart.
    assert signer.verify(signer.sign(PAGE_ID, now=NOW + 300), now=NOW) == PAGE_ID
    with pytest.raises(BadToken) as info:
        signer.verify(signer.sign(PAGE_ID, now=NOW + 301), now=NOW)
    assert info.value.reason == "The page token was issued in the future."


def test_other_secret_does_not_verify() -> None:
    one, other = _signer(b"one"), _signer(b"other")
    assert one.sign(PAGE_ID, now=NOW) != other.sign(PAGE_ID, now=NOW)
    with pytest.raises(BadToken) as info:
        other.verify(one.sign(PAGE_ID, now=NOW), now=NOW)
    assert info.value.reason == "The page token's signature is not valid."
    with pytest.raises(BadToken):
        one.verify(other.sign(PAGE_ID, now=NOW), now=NOW)


def test_page_ids() -> None:
    ids = [new_page_id() for _ in range(1000)]
    assert [i for i in ids if not re.fullmatch(r"[A-Za-z0-9_-]{22}", i)] == []
    assert len(set(ids)) == 1000
    assert {len(base64.urlsafe_b64decode(i + "==")) for i in ids} == {16}


def test_every_new_page_id_verifies() -> None:
    signer = _signer()
    ids = [new_page_id() for _ in range(200)]
    assert [signer.verify(signer.sign(i, now=NOW), now=NOW) for i in ids] == ids


@pytest.mark.parametrize(
    ("age_in_tenths", "young"),
    [
        pytest.param(0, True, id="new"),
        pytest.param(0.9, True, id="just-young"),
        pytest.param(1.1, False, id="just-old"),
        pytest.param(5, False, id="old"),
    ],
)
def test_a_token_is_young_for_a_tenth_of_its_life(age_in_tenths: float, young: bool) -> None:
    signer = TokenSigner(b"k", max_age=1000)
    token = signer.sign("A" * 22, now=50_000)
    assert signer.is_young(token, now=50_000 + age_in_tenths * 100) is young


# Bound to a browser (piggyback/browsers.py)

BROWSER = "B" * 22
IN_ANOTHER_BROWSER = (
    "The page token's signature is not valid in this browser: the page was rendered in"
    " another one, or the token is forged."
)


def test_a_bound_token_verifies_only_in_its_browser() -> None:
    signer = _signer()
    token = signer.sign(PAGE_ID, now=NOW, browser=BROWSER)
    assert token.split(".")[:2] == [PAGE_ID, "s44we8"]  # the same shape: the id is not in it
    assert token != signer.sign(PAGE_ID, now=NOW)
    assert signer.verify(token, now=NOW, browser=BROWSER) == PAGE_ID
    for other in ("C" * 22, BROWSER[:-1] + "C"):
        with pytest.raises(BadToken) as info:
            signer.verify(token, now=NOW, browser=other)
        assert info.value.reason == IN_ANOTHER_BROWSER
    with pytest.raises(BadToken) as info:  # a request without the cookie
        signer.verify(token, now=NOW)
    assert info.value.reason == "The page token's signature is not valid."


def test_an_unbound_token_works_in_no_browser_that_has_an_id() -> None:
    signer = _signer()
    token = signer.sign(PAGE_ID, now=NOW)
    assert signer.verify(token, now=NOW) == PAGE_ID
    with pytest.raises(BadToken):
        signer.verify(token, now=NOW, browser=BROWSER)


def test_a_remembered_token_is_remembered_for_its_browser_only() -> None:
    signer = _signer()
    token = signer.sign(PAGE_ID, now=NOW, browser=BROWSER)
    signer.verify(token, now=NOW, browser=BROWSER)  # remembered now
    with pytest.raises(BadToken):
        signer.verify(token, now=NOW, browser="C" * 22)
    with pytest.raises(BadToken):
        signer.verify(token, now=NOW)
