"""The Redis store's cost per event, redis-server's CPU included, beside the SQLite store's.

    python -m benchmarks.redis_events                   # 3 rounds of 4,000 events per store
    python -m benchmarks.redis_events --events 10000 --rounds 5
    python -m benchmarks.redis_events --unix   # also a redis-server on a Unix socket

Two worker processes at once run events over 256 pages (each process its own half), as
``benchmarks.store_events`` does them: begin (lease + record + mail), then save (the
next record, one answered batch). In the *mail* load each event also sends one command to
the process's next page, so every begin finds one message waiting and every save sends
one. Per event it prints the workers' CPU (their own ``process_time``), the CPU of the
redis-server it started on 127.0.0.1 (``utime + stime`` from ``/proc``), their sum, and
that sum over the SQLite store's worker CPU in the same round. Rounds alternate the
stores; figures are medians. With ``--unix``, a second redis-server listening on a Unix
socket only shows what TCP on the loopback costs. Beside each server, a floor: an event of
two ``PING`` round trips (the least a store on Redis with a lease makes, its begin and its
save) on a redis-py connection, reading and writing nothing. Timing only: nothing here is
asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
from functools import partial
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks.servers import cpu_seconds
from benchmarks.servers import REDIS_SERVER
from benchmarks.servers import start_redis
from benchmarks.store_events import next_changes
from piggyback.stores import store_from_url
from piggyback.stores.base import Store

if t.TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.synchronize import Barrier

PROCESSES = 2
LOADS = ("plain", "mail")


def event(store: Store, page_id: str, send_to: str | None) -> None:
    taken = store.begin(page_id, 60)
    assert taken is not None, "a page is used by one process only"
    owner, record, mail = taken
    store.save(page_id, owner, next_changes(record, mail, send_to))


#: Put before a Redis URL: its events are the floor's two round trips, not the store's.
FLOOR = "floor+"


def round_trips(url: str) -> t.Callable[[str, str | None], None]:
    """An event of the floor: two ``PING`` round trips on one redis-py connection."""
    import redis

    connection: t.Any = redis.Redis.from_url(url).connection_pool.get_connection()

    def event(page_id: str, send_to: str | None) -> None:
        for _ in range(2):
            connection.send_packed_command([b"*1\r\n$4\r\nPING\r\n"])
            connection.read_response()

    return event


def _worker(
    url: str, pages: list[str], events: int, mail: bool, barrier: Barrier, out: Connection
) -> None:
    store = None if url.startswith(FLOOR) else store_from_url(url)
    run = round_trips(url.removeprefix(FLOOR)) if store is None else partial(event, store)
    following = {p: pages[(n + 1) % len(pages)] for n, p in enumerate(pages)}
    for page_id in pages:  # every page known, connections open, scripts loaded
        run(page_id, None)
    barrier.wait()
    start = time.process_time()
    for n in range(events):
        page_id = pages[n % len(pages)]
        run(page_id, following[page_id] if mail else None)
    out.send(time.process_time() - start)
    if store is not None:
        store.close()


def measure(
    url: str, server_pid: int | None, pages: int, events: int, mail: bool
) -> tuple[float, float]:
    """Workers' and the server's CPU µs per event, for ``events`` events in all."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(PROCESSES + 1)
    ids = [f"page-{n}" for n in range(pages)]
    workers, pipes = [], []
    for number in range(PROCESSES):
        receiver, sender = context.Pipe(duplex=False)
        share = ids[number::PROCESSES]
        args = (url, share, events // PROCESSES, mail, barrier, sender)
        workers.append(context.Process(target=_worker, args=args))
        pipes.append(receiver)
    for worker in workers:
        worker.start()
    barrier.wait()
    server_start = 0.0 if server_pid is None else cpu_seconds(server_pid)
    worker_cpu = sum(pipe.recv() for pipe in pipes)
    server_cpu = 0.0 if server_pid is None else cpu_seconds(server_pid) - server_start
    for worker in workers:
        worker.join()
    done = events // PROCESSES * PROCESSES
    return worker_cpu / done * 1e6, server_cpu / done * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=4000, help="per store, load and round")
    parser.add_argument("--pages", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--unix", action="store_true", help="also Redis on a Unix socket")
    args = parser.parse_args(argv)
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="pb-redis-events-"))
        redis = start_redis(Path(directory) / "redis")
        stack.callback(redis.stop)
        servers = [("Redis", f"redis://127.0.0.1:{redis.port}/", redis.process.pid)]
        if args.unix:
            unix_url, unix_pid = stack.enter_context(_unix_redis(Path(directory) / "unix"))
            servers.append(("Redis, Unix socket", f"{unix_url}?db=", unix_pid))
        servers += [
            (f"{name}: two round trips, the floor", FLOOR + url, pid) for name, url, pid in servers
        ]
        for round_ in range(args.rounds):
            for load in LOADS:
                sqlite = f"sqlite:///{directory}/store-{round_}-{load}.sqlite3"
                runs: list[tuple[str, str, int | None]] = [("SQLite", sqlite, None)]
                runs += [(name, f"{url}{round_ % 16}", pid) for name, url, pid in servers]
                for name, url, pid in runs if round_ % 2 == 0 else runs[::-1]:
                    figure = measure(url, pid, args.pages, args.events, load == "mail")
                    figures.setdefault((name, load), []).append(figure)
    _report(figures, ["SQLite", *(name for name, _, _ in servers)], args)
    return 0


@contextlib.contextmanager
def _unix_redis(directory: Path) -> t.Iterator[tuple[str, int]]:
    """A redis-server on a Unix socket only, keeping nothing on disk: its URL and PID."""
    directory.mkdir(parents=True)
    path = directory / "redis.sock"
    command = [REDIS_SERVER, "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
    with open(directory / "redis.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not listen on {path}.")
            time.sleep(0.05)
        yield f"unix://{path}", process.pid
    finally:
        process.terminate()
        process.wait(10)


def _report(
    figures: dict[tuple[str, str], list[tuple[float, float]]], names: list[str], args: t.Any
) -> None:
    print(
        f"{PROCESSES} processes, {args.pages} pages, {args.events} events per store and load,"
        f" median of {args.rounds} rounds"
    )
    print("| store | load | worker CPU µs/event | redis-server µs/event | total | ÷ SQLite |")
    print("|---|---|---|---|---|---|")
    for load in LOADS:
        baseline = statistics.median(w for w, _ in figures["SQLite", load])
        for name in names:
            runs = figures[name, load]
            worker = statistics.median(w for w, _ in runs)
            server = statistics.median(s for _, s in runs)
            total = statistics.median(w + s for w, s in runs)
            print(
                f"| {name} | {load} | {worker:.0f} | {server:.0f} | {total:.0f}"
                f" | {total / baseline:.2f}x |"
            )


if __name__ == "__main__":
    sys.exit(main())
