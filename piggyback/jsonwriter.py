"""JSON writers made once, for the hot path.

``JSONEncoder.encode`` builds a new C encoder for every call, which costs more than
encoding a small value; an event writes several (its commands, its state, its answer).
"""

from __future__ import annotations

import json
import typing as t

# What JSONEncoder.encode builds for every call; None without CPython's accelerator.
_make_encoder: t.Any = getattr(json.encoder, "c_make_encoder", None)

#: Writes a value as JSON text.
Writer = t.Callable[[t.Any], str]


def writer(encoder: json.JSONEncoder) -> Writer:
    """``encoder.encode``, the same text and the same errors, built once.

    It skips the circular check, whose markers threads would share: a circular value
    recurses until :class:`RecursionError`, then ``encoder`` encodes it again and names it.
    """
    if _make_encoder is None or encoder.indent is not None:
        return encoder.encode
    strings = (
        json.encoder.encode_basestring_ascii
        if encoder.ensure_ascii
        else json.encoder.encode_basestring
    )
    try:
        made = _make_encoder(
            None,
            encoder.default,
            strings,
            None,
            encoder.key_separator,
            encoder.item_separator,
            encoder.sort_keys,
            encoder.skipkeys,
            encoder.allow_nan,
        )
    except TypeError:  # another Python's accelerator, called otherwise
        return encoder.encode

    def write(value: t.Any) -> str:
        try:
            return "".join(made(value, 0))
        except RecursionError:  # nested too deeply, or circular: the encoder says which
            return encoder.encode(value)

    return write
