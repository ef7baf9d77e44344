"""The forms chosen for speed on the event path say what the plain forms say."""

from __future__ import annotations

import pytest

from piggyback.exceptions import BadToken
from piggyback.exceptions import PageExpired
from piggyback.runner import Outcome
from piggyback.runner import run_directly
from piggyback.runner import runner_outcome
from piggyback.tokens import TokenSigner


@pytest.mark.parametrize("age", [-300, 0, 50, 99, 100, 101, 500, 1000])
@pytest.mark.parametrize("browser", ["", "B" * 22])
def test_check_is_verify_and_is_young(age: float, browser: str) -> None:
    signer = TokenSigner(b"k", max_age=1000)
    token = signer.sign("A" * 22, now=50_000, browser=browser)
    now = 50_000 + age
    assert signer.check(token, now, browser=browser) == (
        signer.verify(token, now, browser=browser),
        signer.is_young(token, now),
    )


@pytest.mark.parametrize(("age", "error"), [(-301, BadToken), (1001, PageExpired)])
def test_check_refuses_as_verify_does(age: float, error: type[Exception]) -> None:
    signer = TokenSigner(b"k", max_age=1000)
    token = signer.sign("A" * 22, now=50_000)
    for read in (signer.verify, signer.check):
        with pytest.raises(error):
            read(token, 50_000 + age)


def test_runner_outcome_passes_the_empty_outcome_and_checks_others() -> None:
    empty = run_directly(lambda page, event: None, None, None)  # type: ignore[arg-type]
    assert runner_outcome(empty, None) is empty  # type: ignore[arg-type]
    assert runner_outcome(None, None) == Outcome()  # type: ignore[arg-type]
    assert runner_outcome(3, None) == Outcome(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Set-Cookie"):
        runner_outcome(Outcome(headers=(("Location", "/"),)), None)  # type: ignore[arg-type]
