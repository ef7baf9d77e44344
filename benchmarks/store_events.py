"""The store's share of an event, alone: begin (lease + record + mail), then save.

    python -m benchmarks.store_events                    # memory and SQLite, 10,000 events each
    python -m benchmarks.store_events --redis            # and Redis (starts a redis-server)
    python -m benchmarks.store_events --count 20000

Each event does what ``piggyback.answer`` does with the store: take the page's lease and
load it, build the next record (sequence number, state, one answered batch), save. Three
loads: one page over and over; 1,000 pages round robin; and 1,000 pages each with one
pushed command waiting (the mail path: the push is made outside the timing); and the
newest 2,000 of 10,000 live pages (where the record file's slots are crowded: the
SQLite store keeps the records of pages that found both their slots taken in database
rows). Prints CPU and wall-clock µs per event. A store without ``begin`` (an older piggyback on
``PYTHONPATH``) is driven with ``lock`` + ``load``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import typing as t
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from piggyback.reply import Batch
from piggyback.stores.base import Changes
from piggyback.stores.base import PageRecord
from piggyback.stores.base import Store
from piggyback.stores.memory import MemoryStore
from piggyback.stores.sqlite import SQLiteStore

COMMANDS = [["text", "count", "1"]]


def begin(store: Store, page_id: str) -> tuple[str, PageRecord | None, t.Any]:
    if hasattr(store, "begin"):
        taken = store.begin(page_id, 60)
        assert taken is not None
        return taken
    owner = store.lock(page_id, 60)
    assert owner is not None
    return (owner, *store.load(page_id))


def event(store: Store, page_id: str) -> None:
    owner, record, mail = begin(store, page_id)
    store.save(page_id, owner, next_changes(record, mail))


def next_changes(record: PageRecord | None, mail: t.Any, send_to: str | None = None) -> Changes:
    """What an event commits: the next record, its inbox delivered, maybe one send."""
    record = record or PageRecord()
    seq = record.seq + 1
    delivered = [c for _, commands in mail.inbox for c in commands]
    return Changes(
        record=PageRecord(
            seq=seq,
            state={"n": record.state.get("n", 0) + 1},
            batches=[Batch(seq, delivered + COMMANDS)],
        ),
        inbox_upto=mail.inbox[-1][0] if mail.inbox else 0,
        pushes=[] if send_to is None else [(send_to, COMMANDS)],
    )


def measure(store: Store, count: int, pages: int, mail: bool, live: int = 0) -> tuple[float, float]:
    """CPU and wall-clock µs per event, over the newest ``pages`` of ``live`` pages."""
    ids = [f"page-{n}" for n in range(max(pages, live))]
    for page_id in ids:  # every page known, connections open
        event(store, page_id)
    ids = ids[-pages:]
    cpu = wall = 0.0
    for start in range(0, count, pages):
        batch = ids[: min(pages, count - start)]
        if mail:
            for page_id in batch:
                store.push(page_id, COMMANDS)
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for page_id in batch:
            event(store, page_id)
        cpu += time.process_time() - cpu_start
        wall += time.perf_counter() - wall_start
    return cpu / count * 1e6, wall / count * 1e6


LOADS = [
    ("one page", 1, False, 0),
    ("1,000 pages", 1000, False, 0),
    ("1,000 pages, mail", 1000, True, 0),
    ("the newest 2,000 of 10,000 live pages", 2000, False, 10_000),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--redis", action="store_true", help="also a Redis store")
    args = parser.parse_args(argv)
    print("| store | load | CPU µs/event | wall µs/event |")
    print("|---|---|---|---|")
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="pb-store-"))
        makers: list[tuple[str, t.Callable[[int], Store]]] = [
            ("memory", lambda n: MemoryStore()),
            ("SQLite", lambda n: SQLiteStore(f"{directory}/store{n}.sqlite3")),
        ]
        if args.redis:
            makers.append(("Redis", _redis(stack)))
        for name, make in makers:
            for number, (load, pages, mail, live) in enumerate(LOADS):
                store = make(number)
                cpu, wall = measure(store, args.count, pages, mail, live)
                store.close()
                print(f"| {name} | {load} | {cpu:.1f} | {wall:.1f} |")
    return 0


def _redis(stack: contextlib.ExitStack) -> t.Callable[[int], Store]:
    from piggyback.stores.redis import RedisStore
    from tests.redis_server import redis_server

    url = stack.enter_context(redis_server())
    return lambda n: RedisStore.from_url(url, prefix=f"bench{n}:")


if __name__ == "__main__":
    sys.exit(main())
