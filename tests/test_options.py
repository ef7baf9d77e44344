from __future__ import annotations

import dataclasses
import inspect
import typing as t

import pytest

from piggyback import Event
from piggyback import Page
from piggyback import Piggyback
from piggyback.exceptions import OptionError
from piggyback.options import NAMES
from piggyback.options import Options
from piggyback.options import overlay
from piggyback.options import SETTINGS
from piggyback.registry import Registry
from piggyback.stores.memory import MemoryStore
from piggyback.testing import Client

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

PAGE = b"<!doctype html><html><body><p id='out'>-</p></body></html>"
STORE = MemoryStore()
SHORT_STORE = MemoryStore(page_ttl=30)
URLS = "'memory:', 'sqlite:///<path>' or 'redis://<host>:<port>/<db>'"
MOUNT = (
    "a path of its own such as '/_pb' (segments of letters, digits, '-', '.', '_' or '~';"
    " the root '/' is the app's)"
)


def _app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/html")])
    return [PAGE]


def _seconds(option: str, value: t.Any, most: str, *, zero: bool = False) -> str:
    low = "from 0 to" if zero else "above 0 and at most"
    return f"The {option} option is a number of seconds {low} {most}, not {value!r}."


def _bytes(option: str, value: t.Any, most: str) -> str:
    return f"The {option} option is a whole number of bytes from 64 to {most}, not {value!r}."


# (options, the option named, the exact message)
REFUSED = [
    # Each option alone.
    pytest.param(
        {"secret_key": ""},
        "secret_key",
        "The secret_key option is a non-empty str or bytes, or None (PIGGYBACK_SECRET_KEY,"
        " else a key kept in the store), not ''.",
        id="secret-key-empty",
    ),
    pytest.param(
        {"store": "redis:/host"},
        "store",
        f"The store option is a Store, a store URL ({URLS}) or None, not 'redis:/host'.",
        id="store-url-unknown",
    ),
    pytest.param(
        {"store": ""},
        "store",
        f"The store option is a Store, a store URL ({URLS}) or None, not ''.",
        id="store-url-empty",
    ),
    pytest.param(
        {"store": {"url": "memory:"}},
        "store",
        f"The store option is a Store, a store URL ({URLS}) or None, not {{'url': 'memory:'}}.",
        id="store-dict",
    ),
    pytest.param(
        {"mount": "/"}, "mount", f"The mount option is {MOUNT}, not '/'.", id="mount-root"
    ),
    pytest.param({"mount": ""}, "mount", f"The mount option is {MOUNT}, not ''.", id="mount-empty"),
    pytest.param(
        {"mount": "/a//b"}, "mount", f"The mount option is {MOUNT}, not '/a//b'.", id="mount-gap"
    ),
    pytest.param(
        {"mount": "/pb/.."}, "mount", f"The mount option is {MOUNT}, not '/pb/..'.", id="mount-dots"
    ),
    pytest.param(
        {"mount": "/_pb?x"},
        "mount",
        f"The mount option is {MOUNT}, not '/_pb?x'.",
        id="mount-query",
    ),
    pytest.param(
        {"mount": None}, "mount", f"The mount option is {MOUNT}, not None.", id="mount-none"
    ),
    pytest.param(
        {"inject": "no"}, "inject", "The inject option is True or False, not 'no'.", id="inject-str"
    ),
    pytest.param(
        {"page_ttl": 0}, "page_ttl", _seconds("page_ttl", 0, "34,560,000"), id="page-ttl-zero"
    ),
    pytest.param(
        {"page_ttl": -5}, "page_ttl", _seconds("page_ttl", -5, "34,560,000"), id="page-ttl-negative"
    ),
    pytest.param(
        {"page_ttl": 401 * 86400},
        "page_ttl",
        _seconds("page_ttl", 401 * 86400, "34,560,000"),
        id="page-ttl-past-the-cookie",
    ),
    pytest.param({"lease": 0}, "lease", _seconds("lease", 0, "3,600"), id="lease-zero"),
    pytest.param({"lease": 3601}, "lease", _seconds("lease", 3601, "3,600"), id="lease-too-long"),
    pytest.param({"lease": "60"}, "lease", _seconds("lease", "60", "3,600"), id="lease-str"),
    pytest.param(
        {"lease_wait": -0.5},
        "lease_wait",
        _seconds("lease_wait", -0.5, "600", zero=True),
        id="lease-wait-negative",
    ),
    pytest.param(
        {"lease_wait": 601},
        "lease_wait",
        _seconds("lease_wait", 601, "600", zero=True),
        id="lease-wait-too-long",
    ),
    pytest.param(
        {"lock_wait": 601},
        "lock_wait",
        _seconds("lock_wait", 601, "600", zero=True),
        id="lock-wait-too-long",
    ),
    pytest.param(
        {"lease_wait": 5, "lock_wait": 2},
        "lock_wait",
        "The lock_wait option (2) is the old name of lease_wait (5): give only lease_wait.",
        id="lock-wait-and-lease-wait",
    ),
    pytest.param(
        {"max_query_bytes": 63},
        "max_query_bytes",
        _bytes("max_query_bytes", 63, "1,048,576"),
        id="max-query-bytes-too-small",
    ),
    pytest.param(
        {"max_query_bytes": 2**20 + 1},
        "max_query_bytes",
        _bytes("max_query_bytes", 2**20 + 1, "1,048,576"),
        id="max-query-bytes-too-large",
    ),
    pytest.param(
        {"max_body_bytes": 1e6},
        "max_body_bytes",
        _bytes("max_body_bytes", 1e6, "1,073,741,824"),
        id="max-body-bytes-float",
    ),
    pytest.param(
        {"max_body_bytes": True},
        "max_body_bytes",
        _bytes("max_body_bytes", True, "1,073,741,824"),
        id="max-body-bytes-bool",
    ),
    pytest.param(
        {"max_body_bytes": 2**30 + 1},
        "max_body_bytes",
        _bytes("max_body_bytes", 2**30 + 1, "1,073,741,824"),
        id="max-body-bytes-too-large",
    ),
    pytest.param(
        {"runner": "flask"},
        "runner",
        "The runner option is a callable, called as runner(handler, page, event), not 'flask'.",
        id="runner-not-callable",
    ),
    pytest.param(
        {"registry": {}},
        "registry",
        "The registry option is a piggyback.registry.Registry or None, not {}.",
        id="registry-dict",
    ),
    # The client's options (these cases were test_middleware's).
    *(
        pytest.param(
            {"transport": transport},
            "transport",
            f"The transport option is None (the best one) or 'iframe', not {transport!r}.",
            id=f"transport-{transport!r}",
        )
        for transport in ["fetch", "IFRAME", "", 1]
    ),
    pytest.param({"timeout": 0}, "timeout", _seconds("timeout", 0, "600"), id="timeout-zero"),
    pytest.param({"timeout": -1}, "timeout", _seconds("timeout", -1, "600"), id="timeout-negative"),
    pytest.param(
        {"timeout": 601}, "timeout", _seconds("timeout", 601, "600"), id="timeout-too-long"
    ),
    pytest.param({"timeout": "10"}, "timeout", _seconds("timeout", "10", "600"), id="timeout-str"),
    pytest.param(
        {"poll": float("nan")}, "poll", _seconds("poll", float("nan"), "86,400"), id="poll-nan"
    ),
    pytest.param(
        {"poll": float("inf")}, "poll", _seconds("poll", float("inf"), "86,400"), id="poll-inf"
    ),
    pytest.param({"poll": True}, "poll", _seconds("poll", True, "86,400"), id="poll-bool"),
    pytest.param(
        {"bind_browser": 1},
        "bind_browser",
        "The bind_browser option is True or False, not 1.",
        id="bind-browser-int",
    ),
    pytest.param(
        {"browser_cookie": "pb browser"},
        "browser_cookie",
        "The browser_cookie option is a cookie name of 1 to 64 letters, digits, '_' or '-',"
        " or None, not 'pb browser'.",
        id="browser-cookie-space",
    ),
    pytest.param(
        {"browser_cookie": "x" * 65},
        "browser_cookie",
        "The browser_cookie option is a cookie name of 1 to 64 letters, digits, '_' or '-',"
        f" or None, not {'x' * 65!r}.",
        id="browser-cookie-too-long",
    ),
    # Options that contradict each other.
    pytest.param(
        {"store": STORE, "page_ttl": 60},
        "page_ttl",
        "The page_ttl option (60) is for a store piggyback opens; the store given is a"
        " MemoryStore with its own page_ttl (86400): pass page_ttl to the store, or leave it"
        " out.",
        id="page-ttl-with-a-store",
    ),
    pytest.param(
        {"store": "memory:", "page_ttl": 30},
        "lease",
        "The lease option (60.0) must be shorter than the page_ttl (30 seconds): a page could"
        " expire while an event holds it.",
        id="lease-past-page-ttl",
    ),
    pytest.param(
        {"store": SHORT_STORE, "lease": 45},
        "lease",
        "The lease option (45) must be shorter than the page_ttl (30 seconds): a page could"
        " expire while an event holds it.",
        id="lease-past-the-store-page-ttl",
    ),
    pytest.param(
        {"bind_browser": False, "browser_cookie": "sid"},
        "browser_cookie",
        "The browser_cookie option ('sid') names the cookie page tokens are bound to, but"
        " bind_browser is False: leave one of them out.",
        id="browser-cookie-unbound",
    ),
]


@pytest.mark.parametrize(("options", "option", "message"), REFUSED)
def test_bad_options_are_refused(options: dict[str, t.Any], option: str, message: str) -> None:
    with pytest.raises(OptionError) as raised:
        Piggyback(_app, **options)
    assert str(raised.value) == message
    assert raised.value.option == option
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("options", "field", "expected"),
    [
        pytest.param({"mount": "live/"}, "mount", "/live", id="mount-slashes"),
        pytest.param({"mount": "/a/b.c~d"}, "mount", "/a/b.c~d", id="mount-deep"),
        pytest.param({"lease_wait": 0}, "lease_wait", 0, id="lease-wait-zero"),
        pytest.param({}, "lease_wait", 5, id="lease-wait-default"),
        pytest.param({"max_query_bytes": 64}, "max_query_bytes", 64, id="smallest-query"),
        pytest.param({"max_body_bytes": 2**30}, "max_body_bytes", 2**30, id="largest-body"),
        pytest.param({"page_ttl": 400 * 86400}, "page_ttl", 400 * 86400, id="longest-page-ttl"),
        pytest.param({"secret_key": b"k"}, "secret_key", b"k", id="secret-key-bytes"),
        pytest.param({"store": "sqlite:///x.db"}, "store", "sqlite:///x.db", id="store-url"),
        pytest.param({"transport": "iframe"}, "transport", "iframe", id="transport"),
    ],
)
def test_good_options_are_kept(options: dict[str, t.Any], field: str, expected: t.Any) -> None:
    assert getattr(Options(**options), field) == expected


def test_lock_wait_is_the_deprecated_name_of_lease_wait() -> None:
    with pytest.warns(DeprecationWarning, match="called lease_wait now") as warned:
        live = Piggyback(_app, store=MemoryStore(), lock_wait=0.5)
    assert warned[0].filename == __file__  # the warning names the caller's line
    assert (live.options.lease_wait, live.options.lock_wait) == (0.5, None)
    assert live.answerer.lease_wait == 0.5


@pytest.mark.parametrize(
    ("given", "changes", "lease_wait"),
    [
        pytest.param({}, {"lease_wait": 2}, 2, id="lease-wait-over-default"),
        pytest.param({"lease_wait": 3}, {"lease_wait": 2}, 2, id="lease-wait-over-lease-wait"),
        pytest.param({"lease_wait": 3}, {"mount": "/live"}, 3, id="kept"),
        pytest.param({}, {"mount": "/live"}, 5, id="default-kept"),
    ],
)
def test_replace_with_lease_wait(
    given: dict[str, t.Any], changes: dict[str, t.Any], lease_wait: float
) -> None:
    copy = dataclasses.replace(Options(store="memory:", **given), **changes)
    assert (copy.lease_wait, copy.lock_wait) == (lease_wait, None)
    # and a copy of the copy: what a checked Options carries never counts as given
    assert dataclasses.replace(copy, lease_wait=1).lease_wait == 1


@pytest.mark.parametrize(
    "given",
    [
        pytest.param({}, id="over-default"),
        pytest.param({"lease_wait": 3}, id="over-lease-wait"),
    ],
)
def test_replace_with_lock_wait_sets_lease_wait_and_warns(given: dict[str, t.Any]) -> None:
    """The name given to replace wins over the value the options carry."""
    options = Options(store="memory:", **given)
    with pytest.warns(DeprecationWarning, match="called lease_wait now") as warned:
        copy = dataclasses.replace(options, lock_wait=2)
    assert warned[0].filename == __file__  # the caller of replace, not dataclasses
    assert (copy.lease_wait, copy.lock_wait) == (2, None)


def test_replace_keeps_what_lock_wait_set() -> None:
    with pytest.warns(DeprecationWarning):
        options = Options(store="memory:", lock_wait=2)
    assert dataclasses.replace(options, mount="/live").lease_wait == 2
    assert dataclasses.replace(options, lease_wait=1).lease_wait == 1


def test_replace_with_both_names_is_refused() -> None:
    with pytest.raises(OptionError) as raised:
        dataclasses.replace(Options(store="memory:"), lease_wait=1, lock_wait=2)
    assert str(raised.value) == (
        "The lock_wait option (2) is the old name of lease_wait (1): give only lease_wait."
    )


@pytest.mark.parametrize(
    ("options", "over", "expected"),
    [
        pytest.param(
            {"mount": "/a", "lease": 9}, {"mount": "/b"}, {"mount": "/b", "lease": 9}, id="wins"
        ),
        pytest.param({"lease_wait": 1}, {"lock_wait": 3}, {"lock_wait": 3}, id="old-name-wins"),
        pytest.param({"lock_wait": 1}, {"lease_wait": 3}, {"lease_wait": 3}, id="new-name-wins"),
        pytest.param({"lease_wait": 1}, {}, {"lease_wait": 1}, id="kept"),
        # Both names in one source: kept both, for Options to refuse.
        pytest.param(
            {},
            {"lease_wait": 1, "lock_wait": 2},
            {"lease_wait": 1, "lock_wait": 2},
            id="both-names-over",
        ),
        pytest.param(
            {"lease_wait": 1, "lock_wait": 2}, {"lock_wait": 3}, {"lock_wait": 3}, id="both-under"
        ),
    ],
)
def test_overlay(
    options: dict[str, t.Any], over: dict[str, t.Any], expected: dict[str, t.Any]
) -> None:
    assert overlay(options, over) == expected


def test_a_store_url_is_opened_with_page_ttl() -> None:
    live = Piggyback(_app, store="memory:", page_ttl=120, secret_key="s")

    @live.handler
    def hello(page: Page, event: Event) -> None:
        page.set_text("out", "hello")

    assert type(live.store) is MemoryStore
    assert live.store.page_ttl == 120
    assert live.options.store == "memory:"
    client = Client(live)
    assert client.fire(client.open("/"), "hello") == [["text", "out", "hello"]]


def test_options_are_frozen() -> None:
    live = Piggyback(_app, store=MemoryStore(), mount="live/")
    with pytest.raises(dataclasses.FrozenInstanceError):
        live.options.mount = "/other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        live.mount = "/other"  # type: ignore[misc]
    assert (live.mount, live.options.mount) == ("/live", "/live")


def test_the_secret_key_is_not_in_the_repr() -> None:
    assert "hush" not in repr(Options(secret_key="hush"))


def test_piggyback_takes_exactly_the_options() -> None:
    parameters = inspect.signature(Piggyback.__init__).parameters
    keywords = {
        name: parameter.default
        for name, parameter in parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    defaults = {field.name: field.default for field in dataclasses.fields(Options)}
    assert keywords == defaults
    assert tuple(keywords) == NAMES
    assert tuple(name for name in NAMES if name not in ("runner", "registry")) == SETTINGS


def test_a_registry_is_shared() -> None:
    registry = Registry()
    live = Piggyback(_app, store=MemoryStore(), registry=registry)
    assert live.registry is registry
