"""piggyback measured against the field: one command, one table.

Run from the repository root::

    python -m benchmarks.run            # the full run, about 12 minutes
    python -m benchmarks.run --quick    # every load tiny: a smoke run, under a minute

It starts its own gunicorn servers and a redis-server on 127.0.0.1, drives them with
wrk and headless Chromium, stops everything it started (by PID), and prints one
markdown table of absolute figures and ratios to baselines measured in the same run.
See ``benchmarks/README.md`` for what each row measures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import platform
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import browser
from benchmarks import fanout
from benchmarks import peers
from benchmarks import sizes
from benchmarks.load import find_wrk
from benchmarks.load import Load
from benchmarks.load import mint_tokens
from benchmarks.load import Results
from benchmarks.load import Runner
from benchmarks.servers import http_get
from benchmarks.servers import ROOT
from benchmarks.servers import Server
from benchmarks.servers import start_gunicorn
from benchmarks.servers import start_redis
from benchmarks.servers import stop_all
from benchmarks.servers import wait_ready

SECRET_KEY = "piggyback benchmark " + secrets.token_hex(8)
WORKER_CLASSES = ("sync", "gthread")
THREADS = 4
#: The server the browser pages and the minimal-client exchanges use.
BROWSER_SERVER = "sqlite-gthread"


@dataclass
class Settings:
    rounds: int
    seconds: float
    warmup_seconds: float
    clicks: int
    click_warmup: int
    fanout_sizes: list[int]
    fanout_sends: int
    fanout_sample: int


FULL = Settings(
    rounds=5, seconds=2, warmup_seconds=1, clicks=300, click_warmup=20,
    fanout_sizes=[10, 1_000, 100_000], fanout_sends=20, fanout_sample=200,
)  # fmt: skip
QUICK = Settings(
    rounds=1, seconds=0.3, warmup_seconds=0, clicks=5, click_warmup=2,
    fanout_sizes=[10, 100, 1_000], fanout_sends=5, fanout_sample=10,
)  # fmt: skip


_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:5.1f} s] {message}", file=sys.stderr, flush=True)


# -- servers ---------------------------------------------------------------------------


def start_servers(
    workdir: Path, redis: Server | None, htmx: peers.Peer, sijax: peers.Peer
) -> dict[str, Server]:
    """Every app under every worker class, each gunicorn in its own fresh directory."""
    env = {"PIGGYBACK_SECRET_KEY": SECRET_KEY}
    if htmx.path:
        env["PB_BENCH_HTMX"] = str(htmx.path)
    apps: list[tuple[str, str, dict[str, str], list[str]]] = [
        ("site", "benchmarks.apps:site", {}, []),
        ("flask", "benchmarks.apps:flask_app", {}, []),
        ("memory", "benchmarks.apps:live", {"PIGGYBACK_STORE": "memory:"}, []),
        ("sqlite", "benchmarks.apps:live", {}, []),  # the default store, in the cwd
        ("floor", "benchmarks.apps:store_floor", {}, []),
        ("lease", "benchmarks.apps:lease_floor", {}, []),
    ]
    if redis is not None:
        redis_env = {"PIGGYBACK_STORE": f"redis://127.0.0.1:{redis.port}/0"}
        apps.append(("redis", "benchmarks.apps:live", redis_env, []))
        apps.append(("rfloor", "benchmarks.apps:redis_floor", redis_env, []))
    if sijax.path:
        apps.append(("sijax", "benchmarks.sijax_app:app", {}, [str(sijax.path)]))
    servers = {}
    for worker_class in WORKER_CLASSES:
        for name, app, extra_env, path in apps:
            key = f"{name}-{worker_class}"
            servers[key] = start_gunicorn(
                key, app, workdir / key, worker_class=worker_class, threads=THREADS,
                env={**env, **extra_env}, pythonpath=path,
            )  # fmt: skip
    return servers


def check_servers(servers: dict[str, Server], workdir: Path) -> None:
    """Each server answers what its loads will ask, before anything is timed."""
    tokens = mint_tokens(SECRET_KEY, 1, workdir / "check-token.txt").read_text().split()
    for key, server in servers.items():
        if key.startswith("sijax"):
            continue
        status, body = http_get(f"{server.url}/_pb/event?p={tokens[0]}&s=1&a=0&h=bump&e=click&t=go")
        if status != 200 or b'["text","count","1"]' not in body:
            raise RuntimeError(f"{key} answered an event with {status}: {body[:300]!r}")
        if key.startswith(("flask", "floor", "lease", "rfloor")):
            continue
        status, body = http_get(f"{server.url}/page")
        injected = b"/_pb/piggyback.js" in body
        if status != 200 or injected == key.startswith("site"):
            raise RuntimeError(f"{key} rendered /page with {status}, tag injected: {injected}")


def loads(servers: dict[str, Server]) -> list[Load]:
    """The requests of sections 1 and 2, for each worker class."""
    result = []
    for w in WORKER_CLASSES:
        candidates = [
            Load(f"{w}/event/bare", f"site-{w}", "event"),
            Load(f"{w}/event/flask", f"flask-{w}", "event"),
            Load(f"{w}/event/memory", f"memory-{w}", "fresh"),
            Load(f"{w}/event/sqlite", f"sqlite-{w}", "event"),
            Load(f"{w}/event/floor", f"floor-{w}", "event"),
            Load(f"{w}/event/lease", f"lease-{w}", "event"),
            Load(f"{w}/event/redis", f"redis-{w}", "event", extra="redis"),
            Load(f"{w}/event/rfloor", f"rfloor-{w}", "event", extra="redis"),
            Load(f"{w}/event/sijax", f"sijax-{w}", "sijax", "/sijax"),
            Load(f"{w}/poll/sqlite", f"sqlite-{w}", "poll"),
            Load(f"{w}/poll/floor", f"floor-{w}", "poll"),
            Load(f"{w}/pass/bare", f"site-{w}", "get", "/asset"),
            Load(f"{w}/pass/piggyback", f"sqlite-{w}", "get", "/asset"),
            Load(f"{w}/html/bare", f"site-{w}", "get", "/page"),
            Load(f"{w}/html/piggyback", f"sqlite-{w}", "get", "/page"),
        ]
        result += [load for load in candidates if load.server in servers]
    return result


def run_loads(runner: Runner, servers: dict[str, Server], settings: Settings) -> Results:
    """Every load, ``rounds`` times, interleaved: a new random order every round, so that
    no load always follows the same one."""
    all_loads = loads(servers)
    results = Results()
    if settings.warmup_seconds:
        log(f"warm-up round ({len(all_loads)} loads of {settings.warmup_seconds} s)")
        for load in all_loads:
            runner.run(load, servers, settings.warmup_seconds)
    shuffler = random.Random(0)  # the same orders in every run
    for number in range(settings.rounds):
        log(
            f"round {number + 1}/{settings.rounds} ({len(all_loads)} loads of {settings.seconds} s)"
        )
        order = list(all_loads)
        shuffler.shuffle(order)
        for load in order:
            sample = runner.run(load, servers, settings.seconds)
            results.samples.setdefault(load.key, []).append(sample)
    return results


def minimal_exchanges(
    servers: dict[str, Server], workdir: Path, sijax: bool
) -> dict[str, sizes.Exchange]:
    """Section 6 with a minimal client (request line and Host, as wrk sends)."""
    token = mint_tokens(SECRET_KEY, 1, workdir / "wire-token.txt").read_text().strip()
    port = servers[BROWSER_SERVER].port
    found = {
        "piggyback event": sizes.exchange(
            port, "GET", f"/_pb/event?p={token}&s=1&a=0&h=bump&e=click&t=go"
        ),
        "raw fetch() endpoint": sizes.exchange(port, "GET", "/bench/bump"),
    }
    if sijax:
        found["Flask-Sijax call"] = sizes.exchange(
            servers["sijax-gthread"].port, "POST", "/sijax",
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"sijax_rq=bump&sijax_args=%5B%5D",
        )  # fmt: skip
    return found


# -- the report ------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    #: Rows of the targets table: name, goal, measured, status.
    targets: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

        def line(cells: list[str]) -> str:
            return (
                "| "
                + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))
                + " |"
            )

        self.lines.append(line(headers))
        self.lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        self.lines.extend(line(row) for row in rows)
        self.lines.append("")

    def target(
        self, name: str, goal: str, value: float | None, ok: bool | None, unit: str = "x"
    ) -> None:
        bound = re.search(r"\d+(\.\d+)?", goal)
        # A value at the goal in two places shows a third, which the status turns on.
        at_goal = value is not None and bound and round(value, 2) == float(bound.group())
        places = 3 if at_goal else 2
        shown = (
            "n/a"
            if value is None
            else (f"{value:.{places}f}{unit}" if unit == "x" else f"{value:,.0f}{unit}")
        )
        status = "n/a" if ok is None else ("met" if ok else "**missed**")
        self.targets.append((name, goal, shown, status))

    def bound(self, name: str, value: float) -> None:
        """A row beside a target: what code other than piggyback's reaches on the same
        measure, so that the target can be read against what is possible."""
        self.targets.append((name, "—", f"{value:.2f}x", "a bound, not piggyback"))


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def environment(
    chromium: str, htmx: peers.Peer, sijax: peers.Peer, load_before: tuple[float, ...]
) -> list[str]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    def command(*args: str) -> str:
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=10)
        except OSError:
            return "missing"
        return (
            (done.stdout or done.stderr).strip().splitlines()[0]
            if (done.stdout or done.stderr)
            else "?"
        )

    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown",
    )  # fmt: skip
    commit = command("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    dirty = command("git", "-C", str(ROOT), "status", "--porcelain", "piggyback")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    wrk = command("wrk", "-v").split(" [")[0]
    redis = command("redis-server", "--version").split(" sha=")[0]
    return [
        f"- date: {now}; nproc: {len(os.sched_getaffinity(0))}; CPU: {model}",
        f"- Python {platform.python_version()}; gunicorn {version('gunicorn')};"
        f" Flask {version('flask')}; Werkzeug {version('werkzeug')};"
        f" Chromium {chromium or 'not run'}; {wrk}; {redis}",
        f"- htmx {htmx.version or '— ' + htmx.skipped};"
        f" Flask-Sijax {sijax.version or '— ' + sijax.skipped}",
        f"- piggyback at {commit}{' with local changes' if dirty not in ('', '?') else ''};"
        f" load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}"
        " (anything above 2 means other work shared these cores)",
    ]


def report_events(report: Report, results: Results, settings: Settings, sijax: peers.Peer) -> None:
    report.add(
        "### 1. Events through `gunicorn -w 2`",
        "",
        f"wrk -t8 -c8 (a connection per thread, each with its own pages), {settings.rounds}"
        f" interleaved rounds of {settings.seconds} s, medians; a ratio is the median of"
        " the rounds' own ratios (both of its loads ran in the same round)."
        " CPU = the workers' utime+stime (/proc) ÷ requests served. Every row answers"
        " the same bytes (one `text` command); the bare rows are the baselines.",
        "",
    )
    names = [
        ("event/bare", "bare WSGI app (baseline)"),
        ("event/flask", "bare Flask route"),
        ("event/memory", "piggyback, memory store¹"),
        ("event/sqlite", "piggyback, SQLite store (default)"),
        ("event/floor", "the SQLite store alone: its floor³"),
        ("event/lease", "the page's lease alone: any store's floor⁴"),
        ("event/redis", "piggyback, Redis store²"),
        ("event/rfloor", "two round trips to Redis: its floor²⁵"),
        ("event/sijax", "Flask-Sijax"),
        ("poll/sqlite", "piggyback empty poll, SQLite"),
        ("poll/floor", "empty poll, the SQLite store alone³"),
    ]
    rows = []
    for w in WORKER_CLASSES:
        bare_key = f"{w}/event/bare"
        for name, label in names:
            key = f"{w}/{name}"
            if not results.has(key):
                continue
            rate, cpu = results.median(key, "rate"), results.median(key, "cpu_us")
            extra = ""
            if name in ("event/redis", "event/rfloor"):
                extra = f" (+{results.median(key, 'extra_us'):.0f} in redis-server)"
            rows.append([
                f"{w}{f' x{THREADS} threads' if w == 'gthread' else ''}", label, f"{rate:,.0f}",
                f"{cpu:.0f}{extra}", f"{results.ratio(key, bare_key, 'rate'):.2f}x",
                f"{results.ratio(key, bare_key, 'cpu_us'):.2f}x",
                f"{results.median(key, 'p50_us') / 1000:.1f}",
            ])  # fmt: skip
        target_peers(report, results, w)
        poll = results.ratio(f"{w}/poll/sqlite", bare_key, "cpu_us")
        report.target(f"{w}: empty poll CPU ÷ bare WSGI", "≤ 1.3x", poll, poll <= 1.3)
        if results.has(f"{w}/poll/floor"):
            bound = results.ratio(f"{w}/poll/floor", bare_key, "cpu_us")
            report.bound(f"{w}: empty poll, the SQLite store's floor³, CPU ÷ bare WSGI", bound)
        polls = results.median(f"{w}/poll/sqlite", "rate")
        report.target(
            f"{w}: empty polls/s with wrk on the same cores (10,000 pages every 5 s: 2,000)",
            "≥ 2,000/s",
            polls,
            polls >= 2000,
            unit="/s",
        )
    report.table(
        [
            "workers",
            "variant",
            "events/s",
            "CPU µs/event",
            "events/s ÷ bare",
            "CPU ÷ bare",
            "p50 ms",
        ],
        rows,
    )
    report.add(
        "¹ Each worker has its own memory store and a page's next event may reach the other"
        " worker, so this row sends every page's events with `a=0` over a pool of about one"
        " new page per request (mostly first events).",
        "² Worker CPU only; redis-server's own CPU per event is in parentheses.",
        "³ Not piggyback: what any event through the SQLite store costs at the least. An"
        " event only takes the page's lease with its record and saves the next one (a poll"
        " only reads), then writes the answer document: no checks, no handler"
        " (`benchmarks.apps.store_floor`). From the bare row to this one is what the store"
        " and the answer cost; from this one to piggyback's, everything else piggyback does.",
        "⁴ Not a store: a bound on every store that keeps a lease. An event takes and gives"
        " back the page's kernel lock, as the SQLite store takes it, around the same answer"
        " document, and reads and writes nothing (`benchmarks.apps.lease_floor`). From this"
        " row to the SQLite floor is what reading and writing the page's record costs.",
        "⁵ Not a store: a bound on every store on a Redis server that keeps a lease. An"
        " event makes one round trip to redis-server before the answer document (the"
        " lease, taken with the page's state) and one after it (the save), each a `PING`"
        " on a redis-py connection, and reads and writes nothing"
        " (`benchmarks.apps.redis_floor`).",
    )
    if sijax.skipped:
        report.add(f"Flask-Sijax skipped: {sijax.skipped}")
    else:
        report.add(
            "Flask-Sijax 0.4.1 needs a stand-in for `flask._request_ctx_stack` (gone since"
            " Flask 2.3; used only by its streaming responses, not exercised here)."
        )
    report.add("")


def target_peers(report: Report, results: Results, w: str) -> None:
    """The targets of the default store against Flask-Sijax, sync against gthread, and
    Redis against SQLite (the issue on one write per event)."""
    sqlite, sijax = f"{w}/event/sqlite", f"{w}/event/sijax"
    if results.has(sijax):
        rate = results.ratio(sqlite, sijax, "rate")
        report.target(f"{w}: SQLite events/s ÷ Flask-Sijax", "≥ 1.2x", rate, rate >= 1.2)
        bounds = (
            ("floor", "the SQLite store's floor³"),
            ("lease", "the lease alone⁴"),
        )
        for key, what in bounds:
            if results.has(f"{w}/event/{key}"):
                bound = results.ratio(f"{w}/event/{key}", sijax, "rate")
                report.bound(f"{w}: {what}, events/s ÷ Flask-Sijax", bound)
        cpu = results.ratio(sqlite, sijax, "cpu_us")
        report.target(f"{w}: SQLite CPU/event ÷ Flask-Sijax", "≤ 1x", cpu, cpu <= 1)
    else:
        report.target(f"{w}: SQLite events/s ÷ Flask-Sijax", "≥ 1.2x", None, None)
        report.target(f"{w}: SQLite CPU/event ÷ Flask-Sijax", "≤ 1x", None, None)
    if w == "gthread":
        relative = results.per_round(
            lambda g, g_bare, s, s_bare: g.cpu_us / g_bare.cpu_us / (s.cpu_us / s_bare.cpu_us),
            "gthread/event/sqlite",
            "gthread/event/bare",
            "sync/event/sqlite",
            "sync/event/bare",
        )
        name = "gthread ÷ sync: SQLite CPU/event, each ÷ its bare WSGI"
        report.target(name, "≤ 1x", relative, relative <= 1)
    if results.has(f"{w}/event/redis"):
        key = f"{w}/event/redis"
        redis = results.per_round(lambda r, s: (r.cpu_us + r.extra_us) / s.cpu_us, key, sqlite)
        report.target(
            f"{w}: Redis CPU/event (worker + redis-server) ÷ SQLite's", "≤ 1x", redis, redis <= 1
        )
        floor = f"{w}/event/rfloor"
        if results.has(floor):
            bound = results.per_round(
                lambda r, s: (r.cpu_us + r.extra_us) / s.cpu_us, floor, sqlite
            )
            report.bound(f"{w}: two round trips to Redis⁵ (+ redis-server) ÷ SQLite's", bound)


def report_passthrough(report: Report, results: Results) -> None:
    report.add(
        "### 2. Requests piggyback does not own",
        "",
        "The same app unwrapped and wrapped (SQLite store); `/asset` is 0.3 kB of JSON"
        " (passed through), `/page` 2.2 kB of HTML (tag injected: a new page id and a"
        " signed token). The CPU ratio is the median of the rounds' own ratios.",
        "",
    )
    rows = []
    for w in WORKER_CLASSES:
        for kind, label in (("pass", "pass-through JSON"), ("html", "HTML + tag injection")):
            bare, wrapped = f"{w}/{kind}/bare", f"{w}/{kind}/piggyback"
            cpu_bare, cpu_wrapped = (
                results.median(bare, "cpu_us"),
                results.median(wrapped, "cpu_us"),
            )
            rate_bare, rate_wrapped = results.median(bare, "rate"), results.median(wrapped, "rate")
            cpu_ratio = results.ratio(wrapped, bare, "cpu_us")
            rows.append([
                w, label, f"{rate_bare:,.0f}", f"{rate_wrapped:,.0f}",
                f"{cpu_bare:.0f}", f"{cpu_wrapped:.0f}", f"{cpu_ratio:.2f}x",
            ])  # fmt: skip
            if kind == "pass":
                report.target(
                    f"{w}: pass-through CPU ÷ unwrapped", "≤ 1.05x", cpu_ratio, cpu_ratio <= 1.05
                )
    report.table(
        [
            "workers",
            "request",
            "req/s unwrapped",
            "req/s wrapped",
            "CPU µs unwrapped",
            "CPU µs wrapped",
            "CPU ratio",
        ],
        rows,
    )


def report_browser(
    report: Report, trips: browser.RoundTrips | None, settings: Settings, why: str
) -> None:
    report.add("### 3. Browser round trip: click → DOM updated", "")
    if trips is None:
        report.add(f"Skipped: {why}", "")
        return
    report.add(
        f"Headless Chromium {trips.chromium}, pages from `gunicorn -w 2 -k gthread` (SQLite"
        f" store), {settings.clicks} clicks per variant and kind after {settings.click_warmup}"
        " warm-up clicks, variants interleaved. Programmatic: `button.click()` to the"
        " MutationObserver, in page time. Trusted: `page.mouse.click`, from the click event's"
        " `timeStamp` to the MutationObserver.",
        "",
    )
    rows = []
    for kind in ("programmatic", "trusted"):
        raw = trips.median("raw fetch()", kind)
        htmx = trips.median("htmx", kind) if ("htmx", kind) in trips.times else None
        for name, _ in browser.VARIANTS:
            if (name, kind) not in trips.times:
                continue
            median = trips.median(name, kind)
            rows.append([
                name, kind, f"{median:.2f}", f"{trips.p90(name, kind):.2f}",
                str(len(trips.times[name, kind])), ratio(median, raw),
                ratio(median, htmx) if htmx else "n/a",
            ])  # fmt: skip
        default = trips.median("piggyback (default transport)", kind)
        report.target(
            f"default transport ÷ raw fetch ({kind})",
            "≤ 1.05x",
            default / raw,
            default / raw <= 1.05,
        )
        if htmx:
            report.target(
                f"default transport ÷ htmx ({kind})", "≤ 1x", default / htmx, default <= htmx
            )
        same_event = trips.median("raw fetch() of a piggyback event", kind)
        report.target(
            f"default transport ÷ raw fetch of the same event ({kind}): the client's cost",
            "≈ 1x",
            default / same_event,
            default / same_event <= 1.05,
        )
        if kind == "trusted":
            iframe = trips.median("piggyback data-transport=iframe", kind)
            report.target(
                "iframe transport ÷ raw fetch (trusted)",
                "≤ 1.5x",
                iframe / raw,
                iframe / raw <= 1.5,
            )
            form = trips.median("piggyback data-transport=iframe, form POST", kind)
            report.target(
                "iframe transport: form POST ÷ GET (trusted)", "≤ 1x", form / iframe, form <= iframe
            )
            plain = trips.median("plain hidden iframe", kind)
            report.target(
                "iframe transport ÷ a plain hidden iframe (trusted): the browser's floor",
                "≈ 1x",
                iframe / plain,
                iframe / plain <= 1.1,
            )
            plain_post = trips.median("plain form POST into a spare hidden frame", kind)
            report.target(
                "iframe form POST ÷ a plain form POST into a spare frame (trusted): its floor",
                "≈ 1x",
                form / plain_post,
                form / plain_post <= 1.1,
            )
    report.table(
        ["variant", "click", "median ms", "p90 ms", "clicks", "÷ raw fetch", "÷ htmx"], rows
    )
    if trips.skipped:
        report.add(*(f"{name} skipped: {why}" for name, why in trips.skipped.items()), "")


def report_fanout(report: Report, results: list[fanout.FanOut], settings: Settings) -> None:
    report.add(
        "### 4. Out-of-band fan-out (SQLite store, in process)",
        "",
        f"{settings.fanout_sends} `live.group(g).send_js(...)` per size, the sizes taking"
        " turns (median); then each drained page (all, or a random sample of"
        f" {settings.fanout_sample}) polls once through `piggyback.testing.Client` and must"
        " receive all of them. An empty poll of a page in no group, timed the same way beside"
        " each drain, is the floor.",
        "",
    )
    base = results[0].send_us
    rows = [
        [
            f"{r.members:,}", f"{r.join_seconds:.2f}", f"{r.send_us:.0f}", ratio(r.send_us, base),
            f"{r.drain_us:.0f}", f"{r.drain_p90_us:.0f}", f"{r.empty_poll_us:.0f}",
            f"{r.drained:,}{' (sample)' if r.drained < r.members else ''}",
        ]
        for r in results
    ]  # fmt: skip
    report.table(
        [
            "members",
            "join all (s)",
            "send µs",
            "send ÷ smallest",
            "drain µs",
            "drain p90 µs",
            "empty poll µs",
            "pages drained",
        ],
        rows,
    )
    largest = results[-1]
    growth = largest.send_us / base
    report.target(
        f"group send at {largest.members:,} ÷ at {results[0].members}",
        "≈ 1x (≤ 1.25x)",
        growth,
        growth <= 1.25,
    )


def report_sizes(report: Report, htmx: peers.Peer) -> None:
    report.add("### 5. Client script size", "")
    ours = sizes.PIGGYBACK_JS.read_bytes()
    ours_gz = sizes.gzip9(ours)
    rows = [["piggyback.js", f"{len(ours):,}", f"{ours_gz:,}", "", ""]]
    if htmx.path:
        theirs = htmx.path.read_bytes()
        theirs_gz = sizes.gzip9(theirs)
        rows[0][3:] = [ratio(len(ours), len(theirs)), ratio(ours_gz, theirs_gz)]
        rows.append(
            [
                f"htmx {htmx.version} htmx.min.js",
                f"{len(theirs):,}",
                f"{theirs_gz:,}",
                "1.00x",
                "1.00x",
            ]
        )
    report.table(["file", "bytes", "gzip -9", "bytes ÷ htmx", "gzip ÷ htmx"], rows)
    report.target("piggyback.js gzip -9", "≤ 6,000 bytes", ours_gz, ours_gz <= 6000, unit=" bytes")


def report_wire(
    report: Report, minimal: dict[str, sizes.Exchange], trips: browser.RoundTrips | None
) -> None:
    report.add(
        "### 6. Bytes on the wire per event (one-command response, HTTP/1.1)",
        "",
        "Minimal client: request line and Host only, as wrk sends. Chromium: its own count"
        " (Playwright `request.sizes()`), real headers included.",
        "",
    )
    rows = []
    for name, e in minimal.items():
        rows.append(
            [
                "minimal",
                name,
                str(e.request),
                str(e.response_head),
                str(e.response_body),
                str(e.total),
            ]
        )
    if trips:
        for name, w in trips.wire.items():
            request = w["request_headers"] + w["request_body"]
            total = request + w["response_headers"] + w["response_body"]
            rows.append(
                [
                    "Chromium",
                    name,
                    str(request),
                    str(w["response_headers"]),
                    str(w["response_body"]),
                    str(total),
                ]
            )
    report.table(
        ["client", "variant", "request", "response headers", "response body", "total"], rows
    )


def report_targets(report: Report) -> None:
    report.add("### Targets", "")
    report.table(["target", "goal", "measured", "status"], [list(row) for row in report.targets])


# -- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny loads: a smoke run under a minute"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the HTTP loads")
    parser.add_argument("--seconds", type=float, help="seconds per load per round")
    parser.add_argument("--clicks", type=int, help="clicks per browser variant and kind")
    parser.add_argument("--no-browser", action="store_true", help="skip section 3")
    parser.add_argument(
        "--no-peers", action="store_true", help="skip htmx and Flask-Sijax (no downloads)"
    )
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    for name in ("rounds", "seconds", "clicks"):
        if getattr(args, name):
            setattr(settings, name, getattr(args, name))

    wrk = find_wrk()
    # Stopped with SIGTERM, the run still stops the servers it started (on the way out).
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    load_before = os.getloadavg()
    started = time.monotonic()
    if args.no_peers:
        htmx = peers.Peer("htmx", skipped="--no-peers")
        sijax = peers.Peer("Flask-Sijax", skipped="--no-peers")
    else:
        htmx, sijax = peers.htmx(), peers.flask_sijax()
    for peer in (htmx, sijax):
        log(f"{peer.name}: {peer.version or 'skipped: ' + peer.skipped}")

    trips: browser.RoundTrips | None = None
    browser_skipped = browser.missing() or ("--no-browser" if args.no_browser else "")
    with tempfile.TemporaryDirectory(prefix="pb-bench-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        redis: Server | None = None
        try:
            redis = start_redis(workdir / "redis")
            stack.callback(redis.stop)
        except (OSError, RuntimeError) as error:
            log(f"Redis rows skipped: {error}")
        servers = start_servers(workdir, redis, htmx, sijax)
        stack.callback(stop_all, list(servers.values()))
        if redis is not None:
            servers["redis"] = redis
        log(f"starting {len(servers)} servers")
        for server in servers.values():
            wait_ready(server)
        log("servers ready")
        check_servers({k: v for k, v in servers.items() if k != "redis"}, workdir)
        runner = Runner(wrk, workdir, SECRET_KEY)
        results = run_loads(runner, servers, settings)
        minimal = minimal_exchanges(servers, workdir, bool(sijax.path))
        if not browser_skipped:
            variants = [v for v in browser.VARIANTS if htmx.path or v[0] != "htmx"]
            log(f"browser round trips ({settings.clicks} clicks per variant and kind)")
            trips = browser.measure(
                servers[BROWSER_SERVER].url, variants, clicks=settings.clicks,
                warmup=settings.click_warmup, progress=log,
            )  # fmt: skip
            if not htmx.path:
                trips.skipped["htmx"] = htmx.skipped
    log("fan-out")
    fanouts = fanout.measure(
        settings.fanout_sizes, sends=settings.fanout_sends, sample=settings.fanout_sample,
        secret_key=SECRET_KEY, progress=log,
    )  # fmt: skip

    report = Report()
    report.add(
        "## piggyback benchmarks"
        + (" (--quick: smoke run, figures meaningless)" if args.quick else ""),
        "",
        *environment(trips.chromium if trips else "", htmx, sijax, load_before),
        "",
    )
    report_events(report, results, settings, sijax)
    report_passthrough(report, results)
    report_browser(report, trips, settings, browser_skipped)
    report_fanout(report, fanouts, settings)
    report_sizes(report, htmx)
    report_wire(report, minimal, trips)
    report_targets(report)
    report.add(f"Run took {time.monotonic() - started:.0f} s.")
    text = "\n".join(report.lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
