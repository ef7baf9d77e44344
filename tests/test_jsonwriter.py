"""The JSON writers made once: the text and the errors of ``JSONEncoder.encode``."""

from __future__ import annotations

import json
import re
import typing as t

import pytest
from markupsafe import Markup

from piggyback.jsonwriter import writer

ENCODERS = [
    json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False),
    json.JSONEncoder(allow_nan=False),
]
VALUES: list[t.Any] = [
    ["text", "count", "1"],
    "</script>\u2028\ud800é",
    Markup("<b>"),
    {"a": [1.5, None, True, False, {"b": "é", "1": 2**70}], "z": [], "y": {}},
    {7: "int key", 2.5: "float key", False: "bool key", None: "null key"},
    (1, 2),
    3,
    -0.0,
    None,
]


def _circular() -> list[t.Any]:
    value: list[t.Any] = []
    value.append(value)
    return value


BAD: list[t.Any] = [_circular(), {1j: 1}, float("nan"), float("inf"), object(), {"a": {1, 2}}]


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("value", VALUES)
def test_writes_what_the_encoder_writes(encoder: json.JSONEncoder, value: t.Any) -> None:
    assert writer(encoder)(value) == encoder.encode(value)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("value", BAD)
def test_raises_what_the_encoder_raises(encoder: json.JSONEncoder, value: t.Any) -> None:
    with pytest.raises(Exception) as expected:
        encoder.encode(value)
    with pytest.raises(type(expected.value), match=f"^{re.escape(str(expected.value))}$"):
        writer(encoder)(value)


def test_too_deep_a_value_raises_recursion_error() -> None:
    deep: list[t.Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        writer(ENCODERS[0])(deep)


def test_an_accelerator_called_otherwise_leaves_the_encoder_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def other_signature(*args: t.Any) -> t.Any:
        raise TypeError("c_make_encoder() takes other arguments")

    monkeypatch.setattr("piggyback.jsonwriter._make_encoder", other_signature)
    encoder = ENCODERS[0]
    assert writer(encoder) == encoder.encode
