"""The chat example in headless Chromium under ``gunicorn -w 4``, and lost answers.

Two tabs in one room see each other's messages through polling, and each its own in the
answer to its post; a bot in another process posts into the room from outside any
request; an answer lost on its way to the browser is retried and applied once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest

from .http_client import RemotePage
from .redis_server import redis_server
from .servers import gunicorn
from .servers import ROOT


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[tuple[str, Path]]:
    cwd = tmp_path_factory.mktemp("chat")
    with gunicorn("examples.chat:app", cwd) as (url, _):
        yield url, cwd


@pytest.fixture(scope="module", params=["app", "iframe_app"])
def live_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> t.Iterator[str]:
    """The live app, with the default transport and forced onto the iframe."""
    app = f"tests.live_app:{request.param}"
    with gunicorn(app, tmp_path_factory.mktemp("lost")) as (url, _):
        yield url


def messages(tab: t.Any) -> list[str]:
    return list(tab.eval_on_selector_all("#messages li", "items => items.map(i => i.textContent)"))


def say(tab: t.Any, text: str) -> None:
    tab.fill("#message", text)
    tab.press("#message", "Enter")


def test_two_tabs_see_each_others_messages(browser: t.Any, chat: tuple[str, Path]) -> None:
    url, _ = chat
    context = browser.new_context()
    try:
        alice, bob = context.new_page(), context.new_page()
        alice.goto(url)
        bob.goto(url)
        alice_name, bob_name = alice.inner_text("#name"), bob.inner_text("#name")
        say(alice, "hello <b>bob</b>")
        bob.wait_for_function("document.querySelectorAll('#messages li').length === 1")
        say(bob, "hi alice")
        alice.wait_for_function("document.querySelectorAll('#messages li').length === 2")
        bob.wait_for_function("document.querySelectorAll('#messages li').length === 2")
        expected = [f"{alice_name}: hello <b>bob</b>", f"{bob_name}: hi alice"]
        assert messages(alice) == expected
        assert messages(bob) == expected
    finally:
        context.close()


# Which request each applied answer belonged to, and how many messages the page then had.
RECORD_ANSWERS = """() => {
  var handlers = {};
  window.answers = [];
  document.addEventListener("piggyback:send", function (event) {
    handlers[event.detail.seq] = event.detail.handler || "poll";
  });
  document.addEventListener("piggyback:done", function (event) {
    var count = document.querySelectorAll("#messages li").length;
    window.answers.push([handlers[event.detail.seq], count]);
  });
}"""


def test_the_sender_sees_its_own_message_in_its_answer_once(
    browser: t.Any, chat: tuple[str, Path]
) -> None:
    """Counted in requests, not time: the message is in the page when the answer to
    the post has been applied, before any poll; no later poll brings it again."""
    url, _ = chat
    context = browser.new_context()
    try:
        alice, bob = context.new_page(), context.new_page()
        for tab in (alice, bob):
            tab.goto(url)
            tab.evaluate(RECORD_ANSWERS)
        say(alice, "first")
        alice.wait_for_function("window.answers.some(a => a[0] === 'say')")
        answers = alice.evaluate("window.answers")
        said = [handler for handler, _ in answers].index("say")
        assert answers[said] == ["say", 1]
        assert all(count == 0 for _, count in answers[:said])
        two_polls_after = "window.answers.filter(a => a[0] === 'poll' && a[1] > 0).length >= 2"
        for tab in (alice, bob):
            tab.wait_for_function(two_polls_after)
        expected = [f"{alice.inner_text('#name')}: first"]
        assert messages(alice) == expected
        assert messages(bob) == expected
    finally:
        context.close()


def test_a_bot_in_another_process_reaches_every_tab(browser: t.Any, chat: tuple[str, Path]) -> None:
    url, cwd = chat
    context = browser.new_context()
    try:
        tabs = [context.new_page() for _ in range(2)]
        for tab in tabs:
            tab.goto(url)
        bot = [sys.executable, "-m", "examples.chat_bot", "the bot", "speaks"]
        env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
        subprocess.run(bot, cwd=cwd, env=env, check=True, timeout=30)
        for tab in tabs:
            tab.wait_for_function("document.querySelectorAll('#messages li').length === 1")
            assert messages(tab) == ["bot: the bot speaks"]
    finally:
        context.close()


def test_a_lost_answer_is_retried_and_applied_once(browser: t.Any, live_url: str) -> None:
    context = browser.new_context()
    tab = context.new_page()
    lost: list[str] = []

    def lose_the_first_answer(route: t.Any) -> None:
        response = route.fetch()  # the server answers: the handler runs
        if not lost:
            lost.append(route.request.url)
            route.abort("connectionreset")  # ... but the answer never arrives
        else:
            route.fulfill(response=response)

    try:
        tab.goto(live_url)
        tab.route("**/_pb/event?*", lose_the_first_answer)
        tab.click("#inc")
        tab.wait_for_function("document.getElementById('count').textContent === '1'")
        tab.unroute("**/_pb/event?*")
        tab.click("#report")
        tab.wait_for_function("document.getElementById('log').textContent !== ''")
        assert json.loads(tab.inner_text("#log")) == [1]
        assert len(lost) == 1
        assert tab.inner_text("#count") == "1"
    finally:
        context.close()


def test_the_same_chat_runs_on_redis_when_the_deployment_says_so(tmp_path: Path) -> None:
    """``PIGGYBACK_STORE=redis://…``: workers and the bot share Redis, not a file."""
    with redis_server() as redis_url:
        env = {"PIGGYBACK_STORE": redis_url}
        with gunicorn("examples.chat:app", tmp_path, env=env) as (url, _):
            speaker, listener = RemotePage(url).open(), RemotePage(url).open()
            speaker.seq += 1
            status, _ = speaker.request(speaker.seq, "say", value="hello over redis")
            assert status == 200
            bot = [sys.executable, "-m", "examples.chat_bot", "beep"]
            bot_env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **env}
            subprocess.run(bot, cwd=tmp_path, env=bot_env, check=True, timeout=30)
            listener.fire()
    appended = [c[2] for c in listener.applied_commands if c[0] == "append"]
    assert [text.split("</b>: ")[1] for text in appended] == ["hello over redis</li>", "beep</li>"]
    assert not (tmp_path / ".piggyback").exists()
