"""Memory and disk stay bounded under churn: pages come, work, and are abandoned.

Drives the real event path in process (``piggyback.testing.Client``) against the
default SQLite store with a simulated clock: each round opens new pages that join a
group, fire events, and leave out-of-band commands behind undelivered; then time moves
on by half the page TTL. Printed per round: the store's file size, its rows, and the
share of the record file's slots that its map marks (those whose pages' polls read the
database). All three must level off once pages start expiring.

    python -m benchmarks.churn [--rounds 12] [--pages 2000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import tempfile
import typing as t
from pathlib import Path

from piggyback import Piggyback
from piggyback.stores.record_slots import SLOTS
from piggyback.stores.sqlite import SQLiteStore
from piggyback.testing import Client

TTL = 600.0


def app(environ: t.Any, start_response: t.Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b""]


def build(path: Path, clock: t.Callable[[], float]) -> tuple[Piggyback, Client]:
    live = Piggyback(app, store=SQLiteStore(path, page_ttl=TTL, clock=clock), secret_key="c")

    @live.handler
    def work(page: t.Any, event: t.Any) -> None:
        page.state["n"] = page.state.get("n", 0) + 1
        page.state["notes"] = "x" * 200
        page.join("everyone")
        page.set_text("n", page.state["n"])

    return live, Client(live)


def rows(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        tables = [
            n for (n,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        return sum(connection.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in tables)


def marked(live: Piggyback) -> float:
    """The share of the record file's slots that its map marks."""
    return t.cast(SQLiteStore, live.store)._records().marked() / SLOTS


def disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--pages", type=int, default=2000)
    options = parser.parse_args()
    now = [1_000_000.0]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "store.sqlite3"
        live, client = build(path, lambda: now[0])
        print(
            f"page_ttl {TTL:g} s; {options.pages} new pages per round; time +{TTL / 2:g} s a round"
        )
        print("| round | pages so far | rows | disk KiB | slots marked | max RSS MiB |")
        print("|---|---|---|---|---|---|")
        for round_ in range(1, options.rounds + 1):
            for _ in range(options.pages):
                page = client.new_page()
                client.fire(page, "work")
                client.fire(page, "work")
                live.page(page.id).set_text("never", "delivered")
            live.group("everyone").set_text("news", f"round {round_}")
            now[0] += TTL / 2
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"| {round_} | {round_ * options.pages:,} | {rows(path):,} |"
                f" {disk(path) // 1024:,} | {marked(live):.1%} | {rss:.0f} |"
            )
        os.sync()


if __name__ == "__main__":
    main()
