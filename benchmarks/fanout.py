"""Out-of-band fan-out, in process, on the default SQLite store (no HTTP).

For each group size: join that many pages; time ``live.group(name).send_js(...)`` (the
sender's cost, which must not grow with the group; the groups take turns), then time
each page's drain: one poll through :class:`piggyback.testing.Client`, which answers
through the real middleware (so a drain includes werkzeug's test client; the empty
poll of a page in no group, timed the same way, is the floor). Large groups drain a
random sample.
"""

from __future__ import annotations

import random
import secrets
import statistics
import tempfile
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path

from piggyback import Piggyback
from piggyback.stores import store_from_url
from piggyback.testing import Client
from piggyback.testing import TestPage


@dataclass
class FanOut:
    members: int
    join_seconds: float
    sends: list[float]
    drains: list[float]
    drained: int
    empty_polls: list[float]

    @property
    def send_us(self) -> float:
        return statistics.median(self.sends) * 1e6

    @property
    def drain_us(self) -> float:
        return statistics.median(self.drains) * 1e6

    @property
    def drain_p90_us(self) -> float:
        values = sorted(self.drains)
        return values[min(len(values) - 1, int(0.9 * len(values)))] * 1e6

    @property
    def empty_poll_us(self) -> float:
        return statistics.median(self.empty_polls) * 1e6


def _no_app(environ: t.Any, start_response: t.Any) -> list[bytes]:
    start_response("204 No Content", [])
    return []


def measure(
    sizes: list[int],
    *,
    sends: int,
    sample: int,
    secret_key: str,
    progress: t.Callable[[str], None] = print,
) -> list[FanOut]:
    """One fresh SQLite file: a group of each size, then ``sends`` group sends to each,
    the groups taking turns so that the machine's drift hits every size alike; then
    ``sample`` drains per size."""
    results = []
    with tempfile.TemporaryDirectory(prefix="pb-fanout-") as directory:
        store = store_from_url(f"sqlite:///{Path(directory) / 'store.sqlite3'}")
        live = Piggyback(_no_app, store=store, secret_key=secret_key)
        client = Client(live)
        client.poll(TestPage(token=live.signer.sign(secrets.token_urlsafe(16))))  # warm up
        try:
            joined = {size: _join(live, size) for size in sizes}
            send_times: dict[int, list[float]] = {size: [] for size in sizes}
            for number in range(sends):
                for size in sizes:
                    handle = live.group(f"group-{size}")
                    started = time.perf_counter()
                    handle.send_js(f"window.fanout = {number};")
                    send_times[size].append(time.perf_counter() - started)
            for size, (pages, join_seconds) in joined.items():
                drains, empty = _drain(live, client, size, pages, sends, sample)
                results.append(
                    FanOut(size, join_seconds, send_times[size], drains, len(drains), empty)
                )
                progress(f"  fan-out to {size:,} pages done")
        finally:
            store.close()
    return results


def _join(live: Piggyback, size: int) -> tuple[list[str], float]:
    """``size`` new pages in the group ``group-<size>``, and the seconds that took."""
    pages = [secrets.token_urlsafe(16) for _ in range(size)]
    started = time.perf_counter()
    for page_id in pages:
        live.store.join(page_id, f"group-{size}")
    return pages, time.perf_counter() - started


def _drain(
    live: Piggyback, client: Client, size: int, pages: list[str], sends: int, sample: int
) -> tuple[list[float], list[float]]:
    """The times of a sample of the pages' drains, each beside an empty poll's."""
    drains, empty = [], []
    for page_id in random.sample(pages, min(sample, size)):
        page = TestPage(token=live.signer.sign(page_id))
        started = time.perf_counter()
        commands = client.poll(page)
        drains.append(time.perf_counter() - started)
        if len(commands) != sends:
            raise RuntimeError(f"A page of {size} drained {len(commands)} commands, not {sends}.")
        loner = TestPage(token=live.signer.sign(secrets.token_urlsafe(16)))
        started = time.perf_counter()
        client.poll(loner)
        empty.append(time.perf_counter() - started)
    return drains, empty
