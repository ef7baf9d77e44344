"""The event a handler receives, and the strict reading of an event request."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing as t
from dataclasses import dataclass
from dataclasses import field
from urllib.parse import unquote_plus

from werkzeug.datastructures import FileStorage
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request

from .exceptions import EventRejected

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

#: What a handler's name may be: the names an event request can carry, so every
#: registered handler (:class:`~piggyback.registry.Registry` checks its names with this)
#: can be invoked.
HANDLER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}\Z")
#: The largest sequence number: the largest integer JavaScript counts exactly.
MAX_SEQ = 2**53
#: How deeply ``data-pb-args`` JSON may nest.
MAX_ARGS_DEPTH = 20

_PARAMETERS = frozenset("psahetvgbd")
#: What a POST with ``b=1`` carries in its body: values too long for a URL.
_BODY_PARAMETERS = frozenset("vg")
_DOM_EVENT = re.compile(r"[a-z][a-z0-9_:.-]{0,63}\Z")
# Half of a UTF-16 pair alone: valid in JSON and JavaScript, but no UTF-8 text has one.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: The form and files of an event that submitted none.
_NOTHING: ImmutableMultiDict[t.Any, t.Any] = ImmutableMultiDict()


@dataclass(eq=False)
class Event:
    """One browser event, as a handler sees it: what the browser sent, input only.

    Nothing in piggyback writes into it: a framework adapter hands the handler a copy
    with its own request (:meth:`for_host`), and what a handler gives back for the
    answer (headers, a refusal) it returns (:mod:`piggyback.runner`). (Not a frozen
    dataclass: that would cost every event a microsecond and a half.)
    """

    #: The DOM event, e.g. ``"click"``; ``None`` for a script's ``piggyback.send``.
    name: str | None
    #: The handler's name; ``None`` for a poll.
    handler: str | None
    #: The id of the element the event came from, or ``None``.
    target: str | None
    #: ``data-pb-args`` and the arguments of ``piggyback.send``.
    args: dict[str, t.Any]
    #: The target's value, for form controls.
    value: str | None
    #: The WSGI environ of the request that carried the event.
    environ: WSGIEnvironment
    #: A submitted form's fields.
    form: MultiDict[str, str] = field(default=_NOTHING)
    #: A submitted form's files.
    files: MultiDict[str, FileStorage] = field(default=_NOTHING)
    #: The host framework's request, where an adapter provides one.
    host_request: t.Any = None
    #: The event's sequence number within its page.
    seq: int = 0
    _request: Request | None = field(default=None, repr=False)

    @property
    def request(self) -> Request:
        """The request that carried the event, as a werkzeug ``Request``.

        A GET event's is made on first use: most handlers never ask for it.
        """
        if self._request is None:
            self._request = Request(self.environ)
        return self._request

    def for_host(self, host_request: t.Any) -> Event:
        """This event as a framework adapter hands it to the handler: the same event,
        with the host framework's request as :attr:`host_request`.

        A handler that wants to add headers (a cookie) to the answer returns a response
        (see :func:`piggyback.runner.read_outcome`).
        """
        return dataclasses.replace(self, host_request=host_request)


@dataclass
class EventRequest:
    """The protocol fields of an event request (see ``docs/protocol.md``)."""

    token: str
    ack: int
    #: The event; its ``seq`` is the request's sequence number.
    event: Event
    #: The deploy the page was rendered by (``data-deploy``), if the client said.
    deploy: str | None = None

    @property
    def seq(self) -> int:
        """The request's sequence number: the event's."""
        return self.event.seq


def read_event_request(environ: WSGIEnvironment, post: Request | None = None) -> EventRequest:
    """Read and check every field of an event request.

    :param environ: the request's WSGI environ.
    :param post: a POST's werkzeug ``Request`` (with its body limits), whose body is
        read from it; ``None`` for a GET.
    :raise EventRejected: with a sentence naming the bad field.
    """
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "POST"):
        raise EventRejected(f"Event requests use GET or POST, not {method}.", status=405)
    raw = environ.get("QUERY_STRING", "")
    query = _query_values(raw)
    if not query.keys() <= _PARAMETERS:
        unknown = sorted(set(query) - _PARAMETERS)
        raise EventRejected(
            f"Unknown parameter {_safe(unknown[0])!r} in the event request; the parameters are"
            " p, s, a, h, e, t, v, g, b and d."
        )
    in_body = "b" in query
    if in_body:
        query.update(_body_parameters(post, query))
    # An ASCII query string holds none: unquoting reads broken UTF-8 as U+FFFD.
    if in_body or not raw.isascii():
        _refuse_surrogates_in_query(query)
    if not query.get("p"):
        raise EventRejected("The event request has no page token (parameter 'p').")
    seq = _number(query, "s", low=1)
    ack = _number(query, "a", low=0, default=0)
    if ack >= seq:
        raise EventRejected(f"The acknowledgement {ack} is not below the sequence number {seq}.")
    name = _match(query, "e", _DOM_EVENT, "a DOM event name")
    handler = _match(query, "h", HANDLER_NAME, "a handler name")
    args = _args(query.get("g"))
    form: MultiDict[str, str] = _NOTHING
    files: MultiDict[str, FileStorage] = _NOTHING
    if post is not None and not in_body:
        form, files = post.form, post.files
        _refuse_surrogates_in_form(form, files)
    # Classes are called with positional arguments here: keywords cost more.
    # Event(name, handler, target, args, value, environ, form, files, host_request, seq, _request)
    target, value = query.get("t") or None, query.get("v")
    event = Event(name, handler, target, args, value, environ, form, files, None, seq, post)
    token, deploy = query["p"], query.get("d")
    return EventRequest(token, ack, event, deploy)


def plain_seq(environ: WSGIEnvironment) -> int | None:
    """The request's sequence number if it carries a plain one, for the answer to a
    request that was rejected (its other fields may be anything)."""
    for part in environ.get("QUERY_STRING", "").split("&"):
        if part.startswith("s="):
            text = part[2:]
            return int(text) if _is_decimal(text) else None
    return None


def _refuse_surrogates(where: str, text: str) -> None:
    """Refuse text that holds a lone surrogate: it could never be written back."""
    match = _SURROGATE.search(text)
    if match is not None:
        raise EventRejected(
            f"{where} holds a lone surrogate ({match.group()!r}) at index {match.start()};"
            " text must be whole Unicode characters (was an emoji cut in half?)."
        )


def _refuse_surrogates_in_query(query: dict[str, str]) -> None:
    text = "".join(query.values())
    if text.isascii() or _SURROGATE.search(text) is None:  # the usual cases, in one scan
        return
    for key, text in query.items():
        _refuse_surrogates(f"The parameter {key!r}", text)


def _refuse_surrogates_in_form(
    form: MultiDict[str, str], files: MultiDict[str, FileStorage]
) -> None:
    for name, value in form.items(multi=True):
        _refuse_surrogates("A form field's name", name)
        _refuse_surrogates(f"The form field {_safe(name)!r}", value)
    for name, storage in files.items(multi=True):
        _refuse_surrogates("A file field's name", name)
        _refuse_surrogates(f"The file name in {_safe(name)!r}", storage.filename or "")


def _safe(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)[:80]


def _body_parameters(request: Request | None, query: dict[str, str]) -> dict[str, str]:
    """``v`` and ``g`` from the body of a ``b=1`` POST, for payloads too long for a URL."""
    if query["b"] != "1" or request is None:
        raise EventRejected("The parameter 'b' must be '1', and only on a POST.")
    body = _single_values(request.form.items(multi=True))
    unknown = sorted(set(body) - _BODY_PARAMETERS)
    if unknown or request.files:
        name = unknown[0] if unknown else next(iter(request.files))
        raise EventRejected(f"The body of a b=1 event carries only v and g, not {_safe(name)!r}.")
    both = sorted(set(body) & set(query))
    if both:
        raise _repeated(both[0])
    if "v" in body:  # form encoding turned the control's LF line breaks into CRLF
        body["v"] = body["v"].replace("\r\n", "\n")
    return body


def _query_values(query: str) -> dict[str, str]:
    """The query string's parameters, read as ``parse_qsl`` reads them (in a third of its
    time), each at most once."""
    escaped = "%" in query or "+" in query  # usually not: nothing to unquote
    values: dict[str, str] = {}
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            if escaped:
                key, value = _unquote(key), _unquote(value)
            if key in values:
                raise _repeated(key)
            values[key] = value
    return values


def _unquote(text: str) -> str:
    return unquote_plus(text) if "%" in text or "+" in text else text


def _single_values(pairs: t.Iterable[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            raise _repeated(key)
        values[key] = value
    return values


def _repeated(key: str) -> EventRejected:
    return EventRejected(f"The parameter {_safe(key)!r} appears more than once.")


def _number(query: dict[str, str], key: str, *, low: int, default: int | None = None) -> int:
    text = query.get(key)
    if text is None and default is not None:
        return default
    if text is None:
        raise EventRejected(
            f"The parameter {key!r} is missing; it must be a whole number from {low} to 2**53."
        )
    # _is_decimal(text), inline: two of these run for every event.
    number = int(text) if len(text) <= 16 and text.isascii() and text.isdigit() else -1
    if not low <= number <= MAX_SEQ:
        raise EventRejected(
            f"The parameter {key!r} must be a whole number from {low} to 2**53, not {text[:80]!r}."
        )
    return number


def _is_decimal(text: str) -> bool:
    """Whether ``text`` is 1 to 16 digits 0-9: str's tests, faster than a regex (isdigit
    alone would take other scripts' digits too)."""
    return len(text) <= 16 and text.isascii() and text.isdigit()


def _match(query: dict[str, str], key: str, pattern: re.Pattern[str], what: str) -> str | None:
    text = query.get(key)
    if not text:
        return None
    if not pattern.match(text):
        raise EventRejected(f"The parameter {key!r} is not {what}: {text[:80]!r}.")
    return text


def _args(text: str | None) -> dict[str, t.Any]:
    if not text:
        return {}
    try:
        args = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        too_deep = _depth(args) > MAX_ARGS_DEPTH
    except RecursionError:
        too_deep = True
    except ValueError as error:
        raise EventRejected(f"The arguments (parameter 'g') are not valid JSON: {error}.") from None
    if too_deep:
        raise EventRejected(f"The arguments nest deeper than {MAX_ARGS_DEPTH} levels.")
    if not isinstance(args, dict):
        raise EventRejected(
            f"The arguments (parameter 'g') must be a JSON object, not {_json_type(args)}."
        )
    _refuse_surrogates_in_json(args)
    return args


def _refuse_surrogates_in_json(value: t.Any) -> None:
    """``\\ud800`` is valid JSON: look in every string of the arguments, keys too."""
    if isinstance(value, str):
        _refuse_surrogates("A string in the arguments (parameter 'g')", value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_surrogates("A key in the arguments (parameter 'g')", key)
            _refuse_surrogates_in_json(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_surrogates_in_json(item)


def _refuse_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # Python reads 1e400 as inf, which no JSON writer (literal() included) accepts.
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the number {text[:40]} is too large")
    return number


def _json_type(value: t.Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else "a number"


def _depth(value: t.Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0
