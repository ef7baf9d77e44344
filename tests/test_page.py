from __future__ import annotations

import math
import typing as t

import pytest
from markupsafe import Markup

from piggyback import limits
from piggyback import Page
from piggyback.commands import Commands
from piggyback.limits import TooMuchOutput


def test_new_page() -> None:
    page = Page("abc")
    assert (
        page.id,
        page.state,
        page.commands,
        page.memberships,
        page.poll_interval,
    ) == (
        "abc",
        {},
        [],
        [],
        None,
    )
    assert isinstance(page, Commands)
    assert repr(page) == "<Page 'abc'>"


def test_state_is_the_dict_given() -> None:
    state = {"n": 1}
    page = Page("abc", state=state)
    page.state["n"] += 1
    assert state == {"n": 2}
    assert page.state is state


def test_pages_do_not_share_state() -> None:
    one, two = Page("a"), Page("b")
    one.state["x"] = 1
    one.set_text("a", 1)
    assert (two.state, two.commands) == ({}, [])


def test_page_queues_commands_in_order() -> None:
    page = Page("abc")
    page.set_text("count", 1)
    page.send_js("document.title = 'x'")
    page.set_html("box", "<b>")
    page.set_html("box", Markup("<b>"))
    page.call("app.go", {"a": 1})
    page.redirect("/next")
    assert page.commands == [
        ["text", "count", "1"],
        ["js", "document.title = 'x'"],
        ["html", "box", "&lt;b&gt;"],
        ["html", "box", "<b>"],
        ["call", "app.go", [{"a": 1}]],
        ["redirect", "/next"],
    ]


def test_refused_command_is_not_queued() -> None:
    page = Page("abc")
    page.set_text("a", 1)
    with pytest.raises(ValueError):
        page.set_attr("a", "onclick", "x()")
    with pytest.raises(TypeError):
        page.set_text("", 2)
    page.focus("a")
    assert page.commands == [["text", "a", "1"], ["focus", "a"]]


def test_join_and_leave_are_kept_in_order() -> None:
    page = Page("abc")
    page.join("room:1")
    page.leave("room:2")
    page.join("room:2")
    page.leave("room:1")
    page.join("x" * 200)
    assert page.memberships == [
        ("join", "room:1"),
        ("leave", "room:2"),
        ("join", "room:2"),
        ("leave", "room:1"),
        ("join", "x" * 200),
    ]


@pytest.mark.parametrize(
    "group",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 201, id="201-chars"),
        pytest.param(None, id="none"),
        pytest.param(3, id="int"),
        pytest.param(b"room", id="bytes"),
        pytest.param(["room"], id="list"),
    ],
)
@pytest.mark.parametrize("method", ["join", "leave"])
def test_bad_group_names(method: str, group: t.Any) -> None:
    page = Page("abc")
    with pytest.raises(ValueError) as info:
        getattr(page, method)(group)
    assert str(info.value) == f"A group name must be a str of 1 to 200 characters, not {group!r}."
    assert page.memberships == []


@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(0, id="zero-stops"),
        pytest.param(5, id="int"),
        pytest.param(0.5, id="float"),
        pytest.param(86400, id="one-day"),
    ],
)
def test_poll(seconds: float) -> None:
    page = Page("abc")
    page.poll(seconds)
    assert page.poll_interval == seconds


def test_poll_last_call_wins() -> None:
    page = Page("abc")
    page.poll(5)
    page.poll(0)
    assert page.poll_interval == 0


@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(-1, id="negative"),
        pytest.param(-0.001, id="slightly-negative"),
        pytest.param(86401, id="over-a-day"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="infinity"),
        pytest.param("5", id="str"),
        pytest.param(None, id="none"),
        pytest.param(True, id="bool"),
    ],
)
def test_poll_refuses(seconds: t.Any) -> None:
    page = Page("abc")
    with pytest.raises(ValueError) as info:
        page.poll(seconds)
    assert str(info.value) == f"poll() takes seconds from 0 to 86400, not {seconds!r}."
    assert page.poll_interval is None


def test_group_changes_keep_the_last_word_per_group() -> None:
    page = Page("p")
    page.join("a")
    page.join("b")
    page.leave("a")
    page.leave("c")
    page.join("c")
    assert page.group_changes() == (["b", "c"], ["a"])


# Limits: raised where the command is queued, so the log points at the call


def test_a_command_over_its_limit_raises_and_is_not_queued() -> None:
    page = Page()
    page.set_text("a", "x")
    with pytest.raises(TooMuchOutput, match=r"The command \['text', 'b'\] is 262,15\d bytes"):
        page.set_text("b", "<" * (limits.MAX_COMMAND_BYTES // 6))  # \u003c: six bytes each
    assert page.commands == [["text", "a", "x"]]


def test_commands_over_the_batch_limit_raise() -> None:
    page = Page()
    for _ in range(4):
        page.set_text("a", "x" * 250_000)
    with pytest.raises(TooMuchOutput, match="one batch holds at most 1,048,576 bytes"):
        page.set_text("a", "x" * 250_000)
    assert len(page.commands) == 4


def test_joining_more_groups_than_the_limit_raises() -> None:
    page = Page()
    for n in range(limits.MAX_MEMBERSHIPS):
        page.join(f"g{n}")
    page.join("g0")  # again: still 100
    page.leave("g1")
    page.join("g100")  # one left, one joined
    with pytest.raises(TooMuchOutput) as info:
        page.join("g101")
    assert str(info.value) == (
        "The page would be in 101 groups; a page may be in at most 100. Leave some first."
    )
    assert ("join", "g101") not in page.memberships
