"""The chat example under every server model: processes, threads, greenlets, forks.

Pages in one room poll while a bot in another process posts into the room and exits,
again and again, as ``python -m examples.chat_bot`` does. Every page must receive every
post exactly once and in order, with nothing wrong in the server's log. Each process
that closes its connection to the SQLite file (the bot, on exit) checks whether it is
the last one using it; a server that holds the file without SQLite's locks loses
messages there, or corrupts the file.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from piggyback.testing import read_reply

from .http_client import RemotePage
from .servers import gunicorn
from .servers import ROOT
from .servers import server

APP = "examples.chat:app"
#: The same app, its store used while it is imported: a server that imports it once and
#: then forks its workers hands each one a connection opened before the fork.
PRELOADED = "tests.matrix_app:app"
PAGES = 3
POSTS = 12
BIN = Path(sys.executable).parent

Start = t.Callable[[Path], t.ContextManager[tuple[str, subprocess.Popen[bytes]]]]


def _waitress(cwd: Path) -> t.ContextManager[tuple[str, subprocess.Popen[bytes]]]:
    return server(
        lambda port: [
            sys.executable,
            "-m",
            "waitress",
            f"--listen=127.0.0.1:{port}",
            "--threads=4",
            APP,
        ],
        cwd,
    )


def _uwsgi(app: str, *options: str) -> Start:
    """uWSGI imports the app in its master process, then forks its workers."""

    def start(cwd: Path) -> t.ContextManager[tuple[str, subprocess.Popen[bytes]]]:
        return server(
            lambda port: [
                *(str(BIN / "uwsgi"), "--http-socket", f"127.0.0.1:{port}"),
                *("--module", app, "--pythonpath", str(ROOT), "--need-app"),
                *("--master", "--die-on-term", *options),
            ],
            cwd,
        )

    return start


def _werkzeug(cwd: Path) -> t.ContextManager[tuple[str, subprocess.Popen[bytes]]]:
    return server(lambda port: [sys.executable, "-m", "tests.matrix_app", str(port)], cwd)


SERVERS = [
    pytest.param(lambda cwd: gunicorn(APP, cwd, workers=2), id="gunicorn-sync"),
    pytest.param(
        lambda cwd: gunicorn(PRELOADED, cwd, workers=2, preload=True), id="gunicorn-preload"
    ),
    pytest.param(
        lambda cwd: gunicorn(APP, cwd, workers=2, worker_class="gthread", threads=4),
        id="gunicorn-gthread",
    ),
    pytest.param(
        lambda cwd: gunicorn(APP, cwd, workers=2, worker_class="gevent"), id="gunicorn-gevent"
    ),
    pytest.param(_waitress, id="waitress"),
    pytest.param(_uwsgi(PRELOADED, "--processes", "2"), id="uwsgi-processes"),
    pytest.param(_uwsgi(APP, "--processes", "1", "--threads", "4"), id="uwsgi-threads"),
    pytest.param(_werkzeug, id="werkzeug-threaded"),
]

_POST = re.compile(r"<b>bot</b>: (post \d+)</li>")
_ERROR = re.compile(r"sqlite3|disk I/O|malformed|Traceback|database is locked", re.IGNORECASE)


class Room:
    """Pages polling a room, and every HTTP status their requests got."""

    def __init__(self, url: str) -> None:
        self.pages = [RemotePage(url).open() for _ in range(PAGES)]
        self.statuses: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()

    def poll(self, page: RemotePage) -> None:
        page.seq += 1
        response = page.send({"p": page.token, "s": page.seq, "a": page.applied})
        with self._lock:
            self.statuses[response.status] += 1
        if response.status == 200:
            page.apply(read_reply(response.text))

    def poll_until(self, done: threading.Event, page: RemotePage) -> None:
        while not done.wait(0.01):
            self.poll(page)

    def received(self) -> list[list[str]]:
        return [
            [post for command in page.applied_commands for post in _POST.findall(str(command))]
            for page in self.pages
        ]


def bot(cwd: Path, text: str) -> int:
    """Post into the room from a process of its own, which then exits."""
    command = [sys.executable, "-m", "examples.chat_bot", text]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, cwd=cwd, env=env, timeout=30, check=False).returncode


@pytest.mark.parametrize("start", SERVERS)
def test_every_page_gets_every_post_once_in_order(
    start: Start, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with start(tmp_path) as (url, _):
        room = Room(url)
        done = threading.Event()
        with ThreadPoolExecutor(PAGES) as pool:
            polling = [pool.submit(room.poll_until, done, page) for page in room.pages]
            exits = [bot(tmp_path, f"post {n}") for n in range(1, POSTS + 1)]
            done.set()
            for future in polling:
                future.result()
        for page in room.pages:
            room.poll(page)
    log = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
    errors = [line for line in log.splitlines() if _ERROR.search(line)]
    received = room.received()
    print(
        f"\n{request.node.callspec.id}: delivered {sum(map(len, received))}/{PAGES * POSTS},"
        f" {len(errors)} error lines in the log, {room.statuses.total()} polls,"
        f" statuses {dict(room.statuses)}, bot exits {collections.Counter(exits)}"
    )
    expected = [f"post {n}" for n in range(1, POSTS + 1)]
    assert received == [expected] * PAGES
    assert [status for status in room.statuses if status != 200] == []
    assert errors == []
    assert exits == [0] * POSTS
