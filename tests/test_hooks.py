"""before_event hooks, requires(), responses as outcomes, and ending pages with expire()."""

from __future__ import annotations

import typing as t

import pytest
from werkzeug.utils import redirect

import piggyback
from piggyback import Event
from piggyback import EventRedirected
from piggyback import EventRejected
from piggyback import Page
from piggyback import PageExpired
from piggyback import Piggyback
from piggyback import requires
from piggyback.exceptions import rejection_code
from piggyback.stores import MemoryStore
from piggyback.testing import Client
from piggyback.testing import HandlerFailed
from piggyback.testing import Rejected

# The store contract suite's stores: memory, SQLite and Redis.
from .test_stores import backend as backend
from .test_stores import redis_client as redis_client
from .test_stores import redis_url as redis_url
from .test_stores import store as store

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment


def _index(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/html")])
    return [b"<!doctype html><html><body><p id='n'>0</p></body></html>"]


def _live() -> tuple[Piggyback, Client]:
    live = Piggyback(_index, store=MemoryStore(), secret_key="hooks")
    return live, Client(live)


def test_hooks_run_in_order_before_the_handler() -> None:
    live, client = _live()
    calls: list[tuple[str, str | None]] = []

    @live.before_event
    def first(page: Page, event: Event) -> None:
        calls.append(("first", event.handler))

    live.before_event(lambda page, event: calls.append(("second", page.id)))

    @live.handler
    def work(page: Page, event: Event) -> None:
        calls.append(("work", event.handler))

    page = client.open("/")
    client.fire(page, "work")
    assert calls == [("first", "work"), ("second", page.id), ("work", "work")]


def test_a_refusing_hook_commits_nothing_and_loses_no_mail() -> None:
    live, client = _live()
    allowed = False
    ran = []

    @live.before_event
    def signed_in(page: Page, event: Event) -> None:
        if not allowed:
            raise EventRejected("Sign in first.", code="unauthorized", status=401)

    @live.handler
    def work(page: Page, event: Event) -> None:
        page.state["n"] = page.state.get("n", 0) + 1
        ran.append(page.state["n"])
        page.set_text("n", page.state["n"])

    page = client.open("/")
    live.page(page.id).set_text("mail", "waiting")
    with pytest.raises(Rejected) as refused:
        client.fire(page, "work")
    assert (refused.value.status, refused.value.code, refused.value.reason) == (
        401,
        "unauthorized",
        "Sign in first.",
    )
    assert client.response is not None and client.response.status_code == 401
    assert ran == []
    allowed = True
    # The mail waited; the state was not touched; the gap in sequence numbers is fine.
    assert client.fire(page, "work") == [["text", "mail", "waiting"], ["text", "n", "1"]]
    assert ran == [1]


def test_a_hook_refuses_with_a_redirect_and_keeps_the_mail() -> None:
    live, client = _live()
    live.before_event(lambda page, event: redirect("/login?next=%2F"))
    live.handler("work")(lambda page, event: page.set_text("n", "ran"))
    page = client.open("/")
    live.page(page.id).set_text("mail", "waiting")
    assert client.fire(page, "work") == [["redirect", "/login?next=%2F"]]
    record, mail = live.store.load(page.id)
    assert record is None  # nothing committed
    assert [commands for _, commands in mail.inbox] == [[["text", "mail", "waiting"]]]


def test_event_redirected_from_a_hook() -> None:
    live, client = _live()

    @live.before_event
    def elsewhere(page: Page, event: Event) -> None:
        raise EventRedirected("/login")

    live.handler("work")(lambda page, event: page.set_text("n", "ran"))
    page = client.open("/")
    assert client.fire(page, "work") == [["redirect", "/login"]]
    assert client.response is not None and client.response.status_code == 200


def test_a_redirect_answer_brings_the_unacknowledged_batches_first() -> None:
    live, client = _live()
    refuse = False

    @live.before_event
    def maybe(page: Page, event: Event) -> None:
        if refuse:
            raise EventRedirected("/login")

    live.handler("work")(lambda page, event: page.set_text("n", "ran"))
    page = client.open("/")
    client.fire(page, "work")
    page.applied = 0  # as if that answer was lost
    refuse = True
    assert client.fire(page, "work") == [["text", "n", "ran"], ["redirect", "/login"]]


def test_a_hook_can_expire_the_page() -> None:
    live, client = _live()

    @live.before_event
    def gone(page: Page, event: Event) -> None:
        raise PageExpired("Your session ended; reload.")

    live.handler("work")(lambda page, event: None)
    with pytest.raises(Rejected) as refused:
        client.fire(client.open("/"), "work")
    assert (refused.value.status, refused.value.code) == (410, "expired")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param(401, "unauthorized", id="401"),
        pytest.param(403, "forbidden", id="403"),
        pytest.param(404, "not_found", id="404"),
        pytest.param(418, "i_m_a_teapot", id="418"),
        pytest.param(429, "too_many_requests", id="429"),
        pytest.param(503, "service_unavailable", id="503"),
    ],
)
def test_a_response_from_a_handler_refuses_with_its_status(status: int, code: str) -> None:
    from werkzeug.wrappers import Response

    live, client = _live()
    live.handler("work")(lambda page, event: Response("no", status=status))
    with pytest.raises(Rejected) as refused:
        client.fire(client.open("/"), "work")
    assert (refused.value.status, refused.value.code) == (status, code)


def test_an_ok_response_from_a_handler_changes_nothing() -> None:
    from werkzeug.wrappers import Response

    live, client = _live()

    @live.handler
    def work(page: Page, event: Event) -> Response:
        page.set_text("n", "1")
        return Response("fine")

    assert client.fire(client.open("/"), "work") == [["text", "n", "1"]]


def test_a_hook_returning_something_else_fails_loudly(caplog: pytest.LogCaptureFixture) -> None:
    live, client = _live()
    ran = []
    live.before_event(lambda page, event: True)
    live.handler("work")(lambda page, event: ran.append(1))
    with pytest.raises(HandlerFailed):
        client.fire(client.open("/"), "work")
    assert ran == []
    assert caplog.records[-1].exc_info is not None
    assert "returned True; a hook returns None to let the event through" in str(
        caplog.records[-1].exc_info[1]
    )


def test_requires_guards_one_handler() -> None:
    live, client = _live()
    checked = []

    def admin_only(page: Page, event: Event) -> None:
        checked.append(event.handler)
        if event.args.get("admin") is not True:
            raise EventRejected("Admins only.", code="forbidden", status=403)

    @live.handler
    @requires(admin_only)
    def delete(page: Page, event: Event) -> None:
        page.set_text("n", "deleted")

    live.handler("read")(lambda page, event: page.set_text("n", "read"))
    page = client.open("/")
    assert client.fire(page, "read") == [["text", "n", "read"]]
    with pytest.raises(Rejected) as refused:
        client.fire(page, "delete")
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert client.fire(page, "delete", {"admin": True}) == [["text", "n", "deleted"]]
    assert checked == ["delete", "delete"]
    assert delete.__name__ == "delete"


def test_requires_and_before_event_refuse_what_is_not_callable() -> None:
    live, _ = _live()
    with pytest.raises(TypeError) as raised:
        requires("admin")  # type: ignore[arg-type]
    assert str(raised.value) == ("requires() takes hooks called as hook(page, event), not 'admin'.")
    with pytest.raises(TypeError) as raised:
        live.before_event(None)  # type: ignore[type-var]
    assert str(raised.value) == (
        "A before_event hook is called as hook(page, event); None is not callable."
    )


def test_polls_run_no_hooks() -> None:
    live, client = _live()
    live.before_event(lambda page, event: pytest.fail("a hook ran for a poll"))
    page = client.open("/")
    live.page(page.id).set_text("n", "mail")
    assert client.poll(page) == [["text", "n", "mail"]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"status": 200},
            "An event's rejection status is a 4xx or 5xx HTTP status, not 200.",
            id="ok-status",
        ),
        pytest.param(
            {"status": 499},
            "An event's rejection status is a 4xx or 5xx HTTP status, not 499.",
            id="unknown-status",
        ),
        pytest.param(
            {"code": "Not Allowed"},
            "An event's rejection code is a lowercase word such as 'forbidden', not"
            " 'Not Allowed': a letter, then up to 63 letters, digits or _.",
            id="code",
        ),
    ],
)
def test_event_rejected_checks_its_code_and_status(kwargs: dict[str, t.Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        EventRejected("no", **kwargs)
    assert str(raised.value) == message


def test_event_redirected_refuses_other_schemes() -> None:
    with pytest.raises(ValueError) as raised:
        EventRedirected("javascript:alert(1)")
    assert "Refusing the URL 'javascript:alert(1)'" in str(raised.value)


def test_rejection_codes() -> None:
    assert [rejection_code(s) for s in (400, 401, 403, 404, 405)] == [
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "method_not_allowed",
    ]


# Ending pages: live.page(id).expire() and live.group(name).expire().


def _pages(live: Piggyback, client: Client, group: str, n: int) -> list[t.Any]:
    if "enter" not in live.registry:

        @live.handler
        def enter(page: Page, event: Event) -> None:
            page.join(event.args["group"])

    pages = []
    for _ in range(n):
        page = client.open("/")
        client.fire(page, "enter", {"group": group})
        pages.append(page)
    return pages


def test_group_expire_ends_every_member_and_nothing_more_arrives() -> None:
    live, client = _live()
    live.handler("work")(lambda page, event: page.set_text("n", "ran"))
    ada1, ada2 = _pages(live, client, "user:7", 2)
    (bob,) = _pages(live, client, "user:8", 1)
    live.group("user:7").set_text("n", "before")
    live.group("user:7").expire()
    live.group("user:7").set_html("secret", "after")
    for page in (ada1, ada2):
        for _ in range(2):  # the next request, and every one after it
            with pytest.raises(Rejected) as refused:
                client.fire(page, "work")
            assert (refused.value.status, refused.value.code) == (410, "expired")
        with pytest.raises(Rejected):
            client.poll(page)
    assert client.fire(bob, "work") == [["text", "n", "ran"]]
    # A page of the same user rendered later is not ended.
    (later,) = _pages(live, client, "user:7", 1)
    live.group("user:7").set_text("n", "new")
    assert client.poll(later) == [["text", "n", "new"]]


def test_page_expire_before_any_event() -> None:
    live, client = _live()
    live.handler("work")(lambda page, event: None)
    page, other = client.open("/"), client.open("/")
    live.page(page.id).expire()
    with pytest.raises(Rejected) as refused:
        client.poll(page)
    assert refused.value.code == "expired"
    assert client.fire(other, "work") == []


def test_expire_from_a_handler_takes_effect_when_it_commits() -> None:
    live, client = _live()

    @live.handler
    def log_out(page: Page, event: Event) -> None:
        live.group("user:7").expire()
        page.redirect("/")

    @live.handler
    def failing_log_out(page: Page, event: Event) -> None:
        live.group("user:7").expire()
        raise RuntimeError("no")

    (one, two) = _pages(live, client, "user:7", 2)
    with pytest.raises(HandlerFailed):
        client.fire(one, "failing_log_out")
    assert client.poll(two) == []  # the failed handler's expire() was dropped
    assert client.fire(one, "log_out") == [["redirect", "/"]]
    for page in (one, two):
        with pytest.raises(Rejected) as refused:
            client.poll(page)
        assert refused.value.code == "expired"


def test_an_ended_page_replays_nothing() -> None:
    live, client = _live()
    live.handler("work")(lambda page, event: page.set_text("n", "ran"))
    page = client.open("/")
    client.fire(page, "work")
    live.page(page.id).expire()
    with pytest.raises(Rejected):
        client.poll(page)
    page.seq, page.applied = 0, 0  # a retry of the first event
    with pytest.raises(Rejected) as refused:
        client.fire(page, "work")
    assert refused.value.code == "expired"


def test_expire_is_public_on_both_handles() -> None:
    live, _ = _live()
    assert isinstance(live.page("x"), piggyback.PageHandle)
    assert callable(live.page("x").expire) and callable(live.group("g").expire)


def test_expire_works_on_every_store(store: t.Any) -> None:
    live = Piggyback(_index, store=store, secret_key="hooks")
    client = Client(live)
    live.handler("work")(lambda page, event: page.set_text("n", "ran"))
    ada1, ada2 = _pages(live, client, "user:7", 2)
    (bob,) = _pages(live, client, "user:8", 1)
    lone = client.open("/")
    live.group("user:7").expire()
    live.page(lone.id).expire()
    live.group("user:7").set_text("n", "after")
    for page in (ada1, ada2, lone, ada1):
        with pytest.raises(Rejected) as refused:
            client.fire(page, "work")
        assert refused.value.code == "expired"
    assert client.fire(bob, "work") == [["text", "n", "ran"]]


@pytest.mark.parametrize(
    "location",
    ["/_pb/event/?p=x", "http://localhost/_pb/event", "https://localhost/_pb/event?s=1"],
)
def test_a_redirect_to_the_event_endpoint_is_refused(
    location: str, caplog: pytest.LogCaptureFixture
) -> None:
    live, client = _live()
    live.handler("work")(lambda page, event: redirect(location))
    with pytest.raises(Rejected) as refused:
        client.fire(client.open("/"), "work")
    assert (refused.value.status, refused.value.code) == (500, "internal_server_error")
    assert refused.value.reason == (
        f"The app redirected the event to the event endpoint itself ({location!r}):"
        " a middleware that cannot apply to events answered it."
    )
    assert next(r.levelname for r in caplog.records if r.name == "piggyback") == "WARNING"
