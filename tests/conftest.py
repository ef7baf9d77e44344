from __future__ import annotations

import typing as t

import pytest

from .engines import Browser
from .engines import CHROMIUM
from .engines import CHROMIUM_ARGS
from .engines import ENGINES
from .engines import launch
from .engines import Window


@pytest.fixture(scope="session")
def browser() -> t.Iterator[t.Any]:
    """One headless Chromium (Debian's) for the whole run."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> t.Iterator[Browser]:
    """Each engine in turn (Chromium, Firefox ESR, WebKitGTK), one per module."""
    # Chromium's windows open in the run's one Playwright Chromium.
    chromium = request.getfixturevalue("browser") if request.param == "chromium" else None
    with launch(request.param, chromium) as engine:
        yield engine


@pytest.fixture
def windows(engine: Browser) -> t.Iterator[t.Callable[[], Window]]:
    """Opens windows on the engine; every one is closed after the test."""
    opened: list[Window] = []

    def open_window() -> Window:
        opened.append(engine.new_window())
        return opened[-1]

    yield open_window
    for window in reversed(opened):
        window.close()


@pytest.fixture
def window(windows: t.Callable[[], Window]) -> Window:
    """A fresh window on the engine."""
    return windows()
