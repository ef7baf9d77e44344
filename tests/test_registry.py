from __future__ import annotations

import typing as t

import pytest

from piggyback import Event
from piggyback import HandlerError
from piggyback import Page
from piggyback import Piggyback
from piggyback import UnknownHandler
from piggyback.registry import Registry
from piggyback.stores.memory import MemoryStore

HERE = __name__


def _app(environ: t.Any, start_response: t.Any) -> list[bytes]:
    start_response("204 No Content", [])
    return []


@pytest.fixture
def live() -> Piggyback:
    return Piggyback(_app, secret_key="test", store=MemoryStore())


def increment(page: Page, event: Event) -> None:
    page.set_text("n", 1)


def decrement(page: Page, event: Event) -> None:
    page.set_text("n", -1)


def test_bare_decorator_uses_the_function_name(live: Piggyback) -> None:
    registered = live.handler(increment)
    assert registered is increment
    assert live.registry.find("increment") is increment
    assert len(live.registry) == 1


def test_decorator_with_a_name(live: Piggyback) -> None:
    registered = live.handler("inc")(increment)
    assert registered is increment
    assert live.registry.find("inc") is increment
    assert "increment" not in live.registry
    assert len(live.registry) == 1


def test_decorator_with_empty_parentheses(live: Piggyback) -> None:
    assert live.handler()(decrement) is decrement
    assert live.registry.find("decrement") is decrement


def test_decorator_syntax(live: Piggyback) -> None:
    @live.handler
    def one(page: Page, event: Event) -> None:
        pass

    @live.handler("two")
    def second(page: Page, event: Event) -> None:
        pass

    assert (live.registry.find("one"), live.registry.find("two")) == (one, second)
    assert (
        "one" in live.registry,
        "two" in live.registry,
        "second" in live.registry,
    ) == (
        True,
        True,
        False,
    )


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a", id="one-letter"),
        pytest.param("_private", id="underscore"),
        pytest.param("todo.add", id="dotted"),
        pytest.param("todo:add-item_2", id="colon-dash"),
        pytest.param("A" * 128, id="128-chars"),
    ],
)
def test_valid_names(name: str) -> None:
    registry = Registry()
    registry.add(name, increment)
    assert registry.find(name) is increment


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("1st", id="digit-first"),
        pytest.param("-x", id="dash-first"),
        pytest.param(".x", id="dot-first"),
        pytest.param("a b", id="space"),
        pytest.param("a/b", id="slash"),
        pytest.param("a&b=c", id="query-characters"),
        pytest.param("é", id="non-ascii"),
        pytest.param("x\n", id="trailing-newline"),
        pytest.param("A" * 129, id="129-chars"),
        pytest.param(None, id="none"),
        pytest.param(3, id="int"),
    ],
)
def test_invalid_names(name: t.Any) -> None:
    registry = Registry()
    with pytest.raises(HandlerError) as info:
        registry.add(name, increment)
    assert str(info.value) == (
        f"{name!r} is not a valid handler name: use up to 128 letters, digits and"
        " _ . : -, starting with a letter or _."
    )
    assert len(registry) == 0


def test_invalid_name_through_the_decorator(live: Piggyback) -> None:
    with pytest.raises(HandlerError) as info:
        live.handler("no spaces")(increment)
    assert str(info.value) == (
        "'no spaces' is not a valid handler name: use up to 128 letters, digits"
        " and _ . : -, starting with a letter or _."
    )
    assert len(live.registry) == 0


def test_non_str_name_through_the_decorator(live: Piggyback) -> None:
    with pytest.raises(HandlerError) as info:
        live.handler(3)(increment)
    assert str(info.value).startswith("3 is not a valid handler name")


def test_empty_name_through_the_decorator(live: Piggyback) -> None:
    with pytest.raises(HandlerError):
        live.handler("")(increment)


def test_duplicate_names_both_handlers(live: Piggyback) -> None:
    live.handler(increment)
    with pytest.raises(HandlerError) as info:
        live.handler("increment")(decrement)
    assert str(info.value) == (
        f"Cannot register {HERE}.decrement as 'increment': 'increment' is already"
        f" registered to {HERE}.increment; pick another name."
    )
    assert live.registry.find("increment") is increment
    assert len(live.registry) == 1


def test_duplicate_same_function_twice(live: Piggyback) -> None:
    live.handler(increment)
    with pytest.raises(HandlerError) as info:
        live.handler(increment)
    assert str(info.value) == (
        f"Cannot register {HERE}.increment as 'increment': 'increment' is already"
        f" registered to {HERE}.increment; pick another name."
    )


def test_duplicate_nested_functions_show_qualified_names(live: Piggyback) -> None:
    @live.handler("save")
    def first(page: Page, event: Event) -> None:
        pass

    with pytest.raises(HandlerError) as info:

        @live.handler("save")
        def second(page: Page, event: Event) -> None:
            pass

    local = f"{HERE}.test_duplicate_nested_functions_show_qualified_names.<locals>"
    assert str(info.value) == (
        f"Cannot register {local}.second as 'save': 'save' is already registered to"
        f" {local}.first; pick another name."
    )


def test_unknown_handler_does_not_list_the_registered_names(live: Piggyback) -> None:
    live.handler(increment)
    live.handler("secret_admin_action")(decrement)
    with pytest.raises(UnknownHandler) as info:
        live.registry.find("incremnt")
    assert info.value.reason == "No handler is registered as 'incremnt'."
    assert str(info.value) == "No handler is registered as 'incremnt'."
    assert (info.value.code, info.value.status) == ("unknown_handler", 404)


def test_unknown_in_an_empty_registry() -> None:
    with pytest.raises(UnknownHandler) as info:
        Registry().find("x")
    assert info.value.reason == "No handler is registered as 'x'."


def test_contains_and_len() -> None:
    registry = Registry()
    registry.add("a", increment)
    registry.add("b", increment)
    assert ("a" in registry, "b" in registry, "c" in registry, 3 in registry) == (
        True,
        True,
        False,
        False,
    )
    assert len(registry) == 2


def test_the_middleware_and_the_flask_extension_share_the_registry_decorator(
    live: Piggyback,
) -> None:
    from piggyback.flask import FlaskPiggyback

    extension = FlaskPiggyback()
    assert live.handler is live.registry.decorator
    assert extension.handler is extension.registry.decorator
    extension.handler("inc")(increment)
    assert extension.registry.find("inc") is increment
