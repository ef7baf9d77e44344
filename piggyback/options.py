"""The options of :class:`~piggyback.Piggyback`: one frozen object, checked once.

``Piggyback(app, **options)`` builds an :class:`Options` from its keywords, and so do
the Flask extension (``PIGGYBACK_*`` config keys) and the Django ``wrap``
(``settings.PIGGYBACK_*``). Each option is checked when it is built; a value out of
range or of the wrong kind, or two options that contradict each other, raise
:class:`~piggyback.exceptions.OptionError` (a ``ValueError``) with the bad value and
what is allowed.

======================  ================  =============================================
option                  default           allowed
======================  ================  =============================================
``secret_key``          ``None``          a non-empty ``str`` or ``bytes``
``store``               ``None``          a :class:`~piggyback.stores.Store`, or a store
                                          URL: ``memory:``, ``sqlite:///<path>``,
                                          ``redis://…``
``mount``               ``"/_pb"``        a path of its own: segments of letters,
                                          digits, ``-``, ``.``, ``_``, ``~``; never ``/``
``inject``              ``True``          ``True`` or ``False``
``page_ttl``            ``None``          seconds, above 0 and at most 400 days; only
                                          for a store piggyback opens (not a Store)
``lease``               60                seconds, above 0 and at most 3,600; shorter
                                          than the store's ``page_ttl``
``lease_wait``          5                 seconds, from 0 to 600
``lock_wait``           ``None``          deprecated: the old name of ``lease_wait``
``max_query_bytes``     16 KiB            bytes, a whole number from 64 to 1 MiB
``max_body_bytes``      1 MiB             bytes, a whole number from 64 to 1 GiB
``runner``              call the handler  a callable ``runner(handler, page, event)``
``registry``            ``None``          a :class:`~piggyback.registry.Registry`
``transport``           ``None``          ``None`` (the best) or ``"iframe"``
``timeout``             ``None``          seconds, above 0 and at most 600
``poll``                ``None``          seconds, above 0 and at most 86,400
``bind_browser``        ``True``          ``True`` or ``False``
``browser_cookie``      ``None``          a cookie name (1 to 64 letters, digits, ``_``,
                                          ``-``); only with ``bind_browser``
======================  ================  =============================================

``None`` means "not given": the store comes from ``PIGGYBACK_STORE`` or the SQLite
default, the secret from ``PIGGYBACK_SECRET_KEY`` or the store, ``page_ttl`` is the
store's own, the browser cookie is ``pb_browser``, and the client keeps its own
``timeout`` and does not poll.

.. versionadded:: 0.1
"""

from __future__ import annotations

import math
import re
import sys
import typing as t
import warnings
from dataclasses import dataclass
from dataclasses import field
from dataclasses import fields

from .browsers import COOKIE_NAME
from .browsers import MAX_AGE
from .exceptions import OptionError
from .lease import DEFAULT_WAIT
from .registry import Registry
from .runner import run_directly
from .runner import Runner
from .stores import store_from_url
from .stores import store_kind
from .stores.base import DEFAULT_PAGE_TTL
from .stores.base import Store


class _NotGiven(float):
    """A ``lease_wait`` that is a number, and known as not given by this call: the
    default, or the checked value an :class:`Options` carries into its copies
    (``dataclasses.replace``). ``lock_wait``, its deprecated name, overrides it."""


#: ``lease_wait`` when it is not given: seconds an event waits for its busy page's lease.
DEFAULT_LEASE_WAIT = _NotGiven(DEFAULT_WAIT)

#: The longest a page may live: as long as a browser keeps the cookie its token is
#: bound to (400 days).
MAX_PAGE_TTL = float(MAX_AGE)
#: The longest one event may hold its page.
MAX_LEASE = 3600.0
#: The longest the client waits for one try of an event; no event waits longer for
#: its busy page's lease either (``lease_wait``).
MAX_TIMEOUT = 600.0
#: The longest interval between polls: a day.
MAX_POLL = 86400.0
#: The smallest size limit: a page token and a sequence number take about as much.
MIN_REQUEST_BYTES = 64
MAX_QUERY_BYTES = 1024 * 1024
#: The largest body limit. A form's fields are held in memory up to it.
MAX_BODY_BYTES = 1024 * 1024 * 1024

# A mount is a path of its own: one or more segments, none of them "." or "..".
_MOUNT = re.compile(r"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9._~-]+)+\Z")
_STORE_URLS = "'memory:', 'sqlite:///<path>' or 'redis://<host>:<port>/<db>'"


@dataclass(frozen=True)
class Options:
    """Every option of :class:`~piggyback.Piggyback`, checked; the module's doc has
    what each allows.

    .. code-block:: python

        Options(store="memory:", mount="live/").mount == "/live"

    :param secret_key: signs page tokens. Default: ``PIGGYBACK_SECRET_KEY`` from the
        environment, else a random key kept in the store and shared by every process.
    :param store: where pages live: a store, or a store URL (``"memory:"``,
        ``"sqlite:///path"``, ``"redis://…"``). Default: ``PIGGYBACK_STORE`` from the
        environment, else an SQLite file ``.piggyback/store.sqlite3`` in the working
        directory.
    :param mount: the path piggyback owns for its script and events; never ``/``.
    :param inject: put the client's tag into HTML responses; when false, place
        :meth:`~piggyback.Piggyback.script_tag` in your template yourself.
    :param page_ttl: seconds an unused page lives, for a store piggyback opens (from a
        URL or the default); a store object has its own. Default: a day.
    :param lease: seconds one event may hold its page before another takes over its
        lease (with the SQLite store, one in the holder's own process: another process
        waits until the holder lets go or its process ends); shorter than ``page_ttl``.
    :param lease_wait: seconds an event waits for its busy page's lease before
        answering busy.
    :param lock_wait: deprecated: the old name of ``lease_wait``.
    :param max_query_bytes: the largest event query string accepted.
    :param max_body_bytes: the largest event request body accepted.
    :param runner: calls each handler as ``runner(handler, page, event)`` and returns
        a :class:`~piggyback.runner.Outcome`; framework adapters use it to provide
        their request context.
    :param registry: the handlers, when they are registered before the app exists.
    :param transport: ``"iframe"`` makes every client use the hidden-iframe transport,
        even where ``fetch`` exists.
    :param timeout: seconds one try of an event may take before the client tries
        again (the tag's ``data-timeout``). Default: the client's, 10 seconds.
    :param poll: seconds between the polls every page sends from its first render
        (the tag's ``data-poll``); ``page.poll()`` while rendering overrides it.
        Default: no polling.
    :param bind_browser: bind each page's token to the browser that rendered the page,
        with a random id in an ``HttpOnly``, ``SameSite=Lax`` cookie set with the page
        (:mod:`piggyback.browsers`), so a token works in no other browser. It costs that
        one cookie; turn it off only for clients that keep no cookies (an API client).
    :param browser_cookie: that cookie's name (``__Host-`` is put before it over HTTPS).
        Default: ``pb_browser``.
    :raise OptionError: an option is out of range, of the wrong kind, or contradicts
        another one.
    """

    secret_key: str | bytes | None = field(default=None, repr=False)
    store: Store | str | None = None
    mount: str = "/_pb"
    inject: bool = True
    page_ttl: float | None = None
    lease: float = 60.0
    lease_wait: float = DEFAULT_LEASE_WAIT
    #: Deprecated: the old name of ``lease_wait``, which it sets; ``None`` once checked.
    lock_wait: float | None = None
    max_query_bytes: int = 16 * 1024
    max_body_bytes: int = 1024 * 1024
    runner: Runner = run_directly
    registry: Registry | None = None
    transport: str | None = None
    timeout: float | None = None
    poll: float | None = None
    bind_browser: bool = True
    browser_cookie: str | None = None

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            value = getattr(self, name)
            checked = check(name, value)
            if checked is not value:  # normalized: the mount "live/" is "/live"
                object.__setattr__(self, name, checked)
        _check_together(self)

    def open_store(self) -> Store:
        """The store: the one given, else the one its URL names, else the one
        ``PIGGYBACK_STORE`` names, else the SQLite file ``.piggyback/store.sqlite3``,
        opened with ``page_ttl``.
        """
        if isinstance(self.store, Store):
            return self.store
        page_ttl = DEFAULT_PAGE_TTL if self.page_ttl is None else self.page_ttl
        return store_from_url(self.store, page_ttl=page_ttl)


#: The option names, in the order of :class:`Options` and ``Piggyback(...)``.
NAMES = tuple(option.name for option in fields(Options))
#: The options a setting can give (``PIGGYBACK_<NAME>`` in Flask's config and Django's
#: settings): all but the two an adapter provides itself.
SETTINGS = tuple(name for name in NAMES if name not in ("runner", "registry"))


def check_names(options: t.Iterable[str], *, allowed: t.Iterable[str] = NAMES) -> None:
    """Refuse option names that are not options, early, with the ones there are.

    :raise TypeError: a name is not one of ``allowed``.
    """
    allowed = tuple(allowed)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"{unknown[0]!r} is not one of the options allowed here: {', '.join(allowed)}."
        )


def _refuse(name: str, value: t.Any, allowed: str) -> t.NoReturn:
    raise OptionError(name, value, f"The {name} option is {allowed}, not {value!r}.")


def _is_number(value: t.Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _seconds(most: float, *, zero: bool = False, optional: bool = False) -> _Check:
    """A number of seconds above 0 (from 0 when ``zero``) up to ``most``; ``None``
    too when ``optional``."""
    allowed = f"a number of seconds {'from 0 to' if zero else 'above 0 and at most'} {most:,.0f}"

    def check(name: str, value: t.Any) -> float | None:
        if value is None and optional:
            return None
        if not _is_number(value) or not (value >= 0 if zero else value > 0) or value > most:
            _refuse(name, value, allowed)
        return t.cast(float, value)

    return check


def _bytes(most: int) -> _Check:
    allowed = f"a whole number of bytes from {MIN_REQUEST_BYTES} to {most:,}"

    def check(name: str, value: t.Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            _refuse(name, value, allowed)
        if not MIN_REQUEST_BYTES <= value <= most:
            _refuse(name, value, allowed)
        return value

    return check


def _flag(name: str, value: t.Any) -> bool:
    if not isinstance(value, bool):
        _refuse(name, value, "True or False")
    return value


def _secret_key(name: str, value: t.Any) -> str | bytes | None:
    if value is None or (isinstance(value, str | bytes) and value):
        return value
    _refuse(
        name,
        value,
        "a non-empty str or bytes, or None (PIGGYBACK_SECRET_KEY, else a key kept in the store)",
    )


def _store(name: str, value: t.Any) -> Store | str | None:
    if value is None or isinstance(value, Store):
        return value
    if isinstance(value, str):
        try:
            store_kind(value)
        except ValueError:
            pass
        else:
            return value
    _refuse(name, value, f"a Store, a store URL ({_STORE_URLS}) or None")


def _mount(name: str, value: t.Any) -> str:
    mount = "/" + value.strip("/") if isinstance(value, str) else None
    if mount is None or not _MOUNT.match(mount):
        _refuse(
            name,
            value,
            "a path of its own such as '/_pb' (segments of letters, digits, '-', '.', '_'"
            " or '~'; the root '/' is the app's)",
        )
    return mount


def _runner(name: str, value: t.Any) -> Runner:
    if not callable(value):
        _refuse(name, value, "a callable, called as runner(handler, page, event)")
    return t.cast("Runner", value)


def _registry(name: str, value: t.Any) -> Registry | None:
    if value is not None and not isinstance(value, Registry):
        _refuse(name, value, "a piggyback.registry.Registry or None")
    return value


def _transport(name: str, value: t.Any) -> str | None:
    if value is not None and not (isinstance(value, str) and value == "iframe"):
        _refuse(name, value, "None (the best one) or 'iframe'")
    return value


def _browser_cookie(name: str, value: t.Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not COOKIE_NAME.match(value)):
        _refuse(name, value, "a cookie name of 1 to 64 letters, digits, '_' or '-', or None")
    return value


def _check_together(options: Options) -> None:
    """Refuse options that contradict each other."""
    _rename_lock_wait(options)
    store = options.store
    if options.page_ttl is not None and isinstance(store, Store):
        raise OptionError(
            "page_ttl",
            options.page_ttl,
            f"The page_ttl option ({options.page_ttl!r}) is for a store piggyback opens;"
            f" the store given is a {type(store).__name__} with its own page_ttl"
            f" ({store.page_ttl:g}): pass page_ttl to the store, or leave it out.",
        )
    page_ttl = store.page_ttl if isinstance(store, Store) else options.page_ttl
    page_ttl = DEFAULT_PAGE_TTL if page_ttl is None else page_ttl
    if options.lease >= page_ttl:
        raise OptionError(
            "lease",
            options.lease,
            f"The lease option ({options.lease!r}) must be shorter than the page_ttl"
            f" ({page_ttl:g} seconds): a page could expire while an event holds it.",
        )
    if options.browser_cookie is not None and not options.bind_browser:
        raise OptionError(
            "browser_cookie",
            options.browser_cookie,
            f"The browser_cookie option ({options.browser_cookie!r}) names the cookie page"
            " tokens are bound to, but bind_browser is False: leave one of them out.",
        )


def _rename_lock_wait(options: Options) -> None:
    """Make ``lock_wait``, the deprecated name of ``lease_wait``, set ``lease_wait``;
    giving both is refused. Either way ``lease_wait`` ends a number that a copy
    (``dataclasses.replace(options, lock_wait=2)``) does not count as given."""
    if options.lock_wait is None:
        object.__setattr__(options, "lease_wait", _NotGiven(options.lease_wait))
        return
    if not isinstance(options.lease_wait, _NotGiven):
        raise OptionError(
            "lock_wait",
            options.lock_wait,
            f"The lock_wait option ({options.lock_wait!r}) is the old name of lease_wait"
            f" ({options.lease_wait!r}): give only lease_wait.",
        )
    warnings.warn(
        "The lock_wait option is deprecated; it is called lease_wait now.",
        DeprecationWarning,
        stacklevel=_outside_piggyback(),
    )
    object.__setattr__(options, "lease_wait", _NotGiven(options.lock_wait))
    object.__setattr__(options, "lock_wait", None)


#: Each option that has two names, by either name: the other.
_OTHER_NAME = {"lease_wait": "lock_wait", "lock_wait": "lease_wait"}


def overlay(options: t.Mapping[str, t.Any], over: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """``options`` with the options of ``over``, a source that takes precedence, put
    over them: an option ``over`` gives replaces the one in ``options``, under either
    of its names (``lock_wait`` in ``over`` replaces ``lease_wait`` in ``options``).

    >>> overlay({"lease_wait": 1, "mount": "/live"}, {"lock_wait": 3})
    {'mount': '/live', 'lock_wait': 3}

    Both names in one source stay both, for :class:`Options` to refuse.
    """
    kept = {
        name: value
        for name, value in options.items()
        if name not in over and _OTHER_NAME.get(name) not in over
    }
    return {**kept, **over}


def _outside_piggyback() -> int:
    """The ``stacklevel`` of the first caller outside piggyback (and outside
    ``dataclasses.replace``, which builds a copy), for a warning."""
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and _is_ours(frame.f_globals.get("__name__", "")):
        frame, level = frame.f_back, level + 1
    return level


def _is_ours(module: str) -> bool:
    return module.startswith("piggyback.") or module in ("dataclasses", "copy")


_Check = t.Callable[[str, t.Any], t.Any]

_CHECKS: dict[str, _Check] = {
    "secret_key": _secret_key,
    "store": _store,
    "mount": _mount,
    "inject": _flag,
    "page_ttl": _seconds(MAX_PAGE_TTL, optional=True),
    "lease": _seconds(MAX_LEASE),
    "lease_wait": _seconds(MAX_TIMEOUT, zero=True),
    "lock_wait": _seconds(MAX_TIMEOUT, zero=True, optional=True),
    "max_query_bytes": _bytes(MAX_QUERY_BYTES),
    "max_body_bytes": _bytes(MAX_BODY_BYTES),
    "runner": _runner,
    "registry": _registry,
    "transport": _transport,
    "timeout": _seconds(MAX_TIMEOUT, optional=True),
    "poll": _seconds(MAX_POLL, optional=True),
    "bind_browser": _flag,
    "browser_cookie": _browser_cookie,
}
