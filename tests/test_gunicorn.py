"""Exactly once, in order, nothing lost: under a real ``gunicorn -w 4``, default store.

Pages are driven over HTTP by ``tests.http_client.RemotePage``, which behaves like the
browser client. Faults are injected: duplicated requests, dropped answers, and workers
killed with SIGKILL in the middle of handlers.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from piggyback.handles import GroupHandle
from piggyback.handles import PageHandle
from piggyback.stores import store_from_url

from .http_client import RemotePage
from .servers import gunicorn
from .servers import worker_pids

PAGES = 8
EVENTS = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[tuple[str, Path, t.Any]]:
    cwd = tmp_path_factory.mktemp("gunicorn")
    with gunicorn("tests.live_app:app", cwd, workers=4) as (url, process):
        yield url, cwd, process


def counts(page: RemotePage) -> list[str]:
    return [c[2] for c in page.applied_commands if c[:2] == ["text", "count"]]


def told(page: RemotePage) -> list[int]:
    return [c[2][0] for c in page.applied_commands if c[:2] == ["call", "told"]]


def handled_seqs(page: RemotePage) -> list[int]:
    page.fire("report")
    log = [c[2] for c in page.applied_commands if c[:2] == ["text", "log"]]
    return list(json.loads(log[-1]))


def run_all(function: t.Callable[[RemotePage], None], pages: list[RemotePage]) -> None:
    with ThreadPoolExecutor(len(pages)) as pool:
        list(pool.map(function, pages))


def test_many_pages_many_events_run_once_in_order(server: tuple[str, Path, t.Any]) -> None:
    pages = [RemotePage(server[0]).open() for _ in range(PAGES)]
    run_all(lambda page: [page.fire("increment") for _ in range(EVENTS)] and None, pages)
    for page in pages:
        assert counts(page) == [str(n) for n in range(1, EVENTS + 1)]
        assert handled_seqs(page) == list(range(1, EVENTS + 1))


def test_group_sends_reach_every_member_once_in_order(server: tuple[str, Path, t.Any]) -> None:
    members = [RemotePage(server[0]).open() for _ in range(6)]
    sender = members[0]
    sent = threading.Event()

    def poll_until_sent(page: RemotePage) -> None:
        while not sent.is_set():
            page.fire()
        page.fire()

    with ThreadPoolExecutor(len(members)) as pool:
        polling = [pool.submit(poll_until_sent, page) for page in members[1:]]
        for n in range(1, 31):
            sender.fire("tell", {"n": n})
        sent.set()
        for future in polling:
            future.result()
    sender.fire()
    for page in members:
        assert told(page) == list(range(1, 31))


def test_sends_from_another_process_arrive_once_in_order(
    server: tuple[str, Path, t.Any],
) -> None:
    url, cwd, _ = server
    store = store_from_url(f"sqlite:///{cwd}/.piggyback/store.sqlite3")
    page, member = RemotePage(url).open(), RemotePage(url).open()
    member.fire()  # the store now knows it; it joined "all" when rendered
    for n in range(1, 21):
        PageHandle(store, page.id).call("told", n)
        GroupHandle(store, "all").call("told", 100 + n)
        page.fire()
    for _ in range(3):
        page.fire()
        member.fire()
    assert told(page) == [n for m in range(1, 21) for n in (m, 100 + m)]
    assert told(member) == [100 + n for n in range(1, 21)]


def test_duplicated_requests_run_once(server: tuple[str, Path, t.Any]) -> None:
    page = RemotePage(server[0]).open()
    for _ in range(15):
        page.seq += 1
        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda _: retry_busy(page, page.seq), range(2)))
        assert replies[0] == {**replies[1], "token": replies[0]["token"]}
        page.apply(replies[0])
        page.apply(replies[1])
    assert counts(page) == [str(n) for n in range(1, 16)]
    assert page.redelivered == 15
    assert handled_seqs(page) == list(range(1, 16))


def retry_busy(page: RemotePage, seq: int) -> dict[str, t.Any]:
    for _ in range(100):
        status, reply = page.request(seq, "increment")
        if reply.get("code") != "busy":
            assert status == 200, reply
            return reply
        time.sleep(0.02)
    raise AssertionError("the page stayed busy")


def test_dropped_answers_are_redelivered_not_rerun(server: tuple[str, Path, t.Any]) -> None:
    page = RemotePage(server[0]).open()
    for n in range(1, 31):
        page.seq += 1
        status, reply = page.request(page.seq, "increment")
        assert status == 200
        if n % 3 == 0:
            continue  # the answer is lost on its way back: the client never saw it
        page.apply(reply)
    page.fire()
    assert counts(page) == [str(n) for n in range(1, 31)]
    assert handled_seqs(page) == [n for n in range(1, 31)]


def test_killed_workers_lose_and_duplicate_nothing(server: tuple[str, Path, t.Any]) -> None:
    url, _, process = server
    pages = [RemotePage(url).open() for _ in range(4)]
    done = threading.Event()

    def killer() -> None:
        for _ in range(3):
            time.sleep(0.7)
            if done.is_set():
                return
            os.kill(worker_pids(process.pid)[0], signal.SIGKILL)

    kills = threading.Thread(target=killer)
    kills.start()
    try:
        run_all(
            lambda page: [page.fire("slow_increment", retries=200) for _ in range(10)] and None,
            pages,
        )
    finally:
        done.set()
        kills.join()
    for page in pages:
        assert counts(page) == [str(n) for n in range(1, 11)]
        assert handled_seqs(page) == list(range(1, 11))
    lost = sum(page.lost for page in pages)
    assert lost > 0, "no request was cut: the test proved nothing"
    print(
        f"\nkilled workers: {len(pages) * 10} events, {lost} requests cut and retried,"
        f" 0 duplicated, 0 lost"
    )
