from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import piggyback
from piggyback.exceptions import LeaseLost
from piggyback.exceptions import LockLost
from piggyback.exceptions import PiggybackError
from piggyback.stores import base


def _exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in a module of piggyback (optional extras too, but
    the Django adapter, which needs configured settings to be imported; it defines none).
    """
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(piggyback.__path__, "piggyback."):
        if module_info.name == "piggyback.django":
            continue
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__.startswith("piggyback"):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


@pytest.mark.parametrize("error", _exception_classes(), ids=lambda error: error.__qualname__)
def test_every_exception_is_a_piggyback_error(error: type[BaseException]) -> None:
    assert issubclass(error, PiggybackError)


def test_the_stores_raise_the_one_lease_lost() -> None:
    assert base.LeaseLost is LeaseLost
    assert LockLost is LeaseLost  # its name before 0.3
    assert str(LockLost("p1")) == (
        "The lease on page 'p1' is no longer held by this owner; nothing was saved."
    )
