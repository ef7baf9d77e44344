"""Profile the event path in process: where an event's CPU goes, function by function.

    python -m benchmarks.profile_events                      # cProfile, SQLite store, 5,000 events
    python -m benchmarks.profile_events --store memory: --kind poll
    python -m benchmarks.profile_events --tool pyinstrument  # needs pyinstrument from PyPI

The WSGI environs are built before profiling starts, so what is measured is the app:
``Piggyback.__call__`` and everything under it, as gunicorn would call it. The cProfile
table lists the most expensive functions by their own time; piggyback's own ones are
marked. (To see the same under gunicorn, attach py-spy to a worker during a run:
``py-spy record -p PID -d 10 -o profile.svg``.)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import secrets
import sys
import tempfile
import time
import typing as t
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from werkzeug.test import EnvironBuilder

from benchmarks import apps
from piggyback import Piggyback
from piggyback.stores import store_from_url

PACKAGE = str(Path(apps.__file__).resolve().parent.parent / "piggyback")


def environs(live: Piggyback, kind: str, count: int, pages: int = 64) -> list[dict[str, t.Any]]:
    """``count`` requests of one kind, each a fresh environ, events spread over pages."""
    tokens = [live.signer.sign(secrets.token_urlsafe(16)) for _ in range(pages)]
    result = []
    for number in range(count):
        if kind == "pass":
            path, query = "/asset", ""
        elif kind == "html":
            path, query = "/page", ""
        else:
            seq = number // pages + 1
            if kind == "event":
                query = f"p={tokens[number % pages]}&s={seq}&a={seq - 1}&h=bump&e=click&t=go"
            else:  # an empty poll, as load.lua sends it: nothing to acknowledge
                query = f"p={tokens[number % pages]}&s={seq}&a=0"
            path = "/_pb/event"
        builder = EnvironBuilder(path=path, query_string=query)
        result.append(builder.get_environ())
        builder.close()
    return result


def _start_response(
    status: str, headers: t.Any, exc_info: t.Any = None
) -> t.Callable[[bytes], None]:
    if not status.startswith("200"):
        raise RuntimeError(f"The request failed: {status}")
    return lambda data: None


def run(live: Piggyback, requests: list[dict[str, t.Any]]) -> None:
    for environ in requests:
        body = live(environ, _start_response)
        for _ in body:
            pass
        if hasattr(body, "close"):
            body.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", default="", help="a store URL (default: a fresh SQLite file)")
    parser.add_argument("--kind", choices=["event", "poll", "pass", "html"], default="event")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--tool", choices=["cprofile", "pyinstrument"], default="cprofile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pb-profile-") as directory:
        store = store_from_url(args.store or f"sqlite:///{directory}/store.sqlite3")
        live = Piggyback(apps.site, secret_key=apps.SECRET_KEY, store=store)
        live.handler(apps.bump)
        run(live, environs(live, args.kind, 200))  # warm: connections, schema, imports
        requests = environs(live, args.kind, args.count)
        started = time.process_time()
        if args.tool == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0001)
            profiler.start()
            run(live, requests)
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))
        else:
            plain = time.process_time()
            run(live, environs(live, args.kind, args.count))
            plain = time.process_time() - plain
            profile = cProfile.Profile()
            profile.enable()
            run(live, requests)
            profile.disable()
            print(
                f"{args.kind} through {type(store).__name__}: {plain / args.count * 1e6:.0f} µs CPU"
                " per request without the profiler (in process, no HTTP server).\n"
            )
            print(_table(profile, args.count, args.top))
        store.close()
        profiled = (time.process_time() - started) / args.count * 1e6
        print(f"(profiled run: {profiled:.0f} µs CPU per request)")
    return 0


def _table(profile: cProfile.Profile, count: int, top: int) -> str:
    stats = pstats.Stats(profile, stream=io.StringIO())
    rows = []
    entries = stats.stats.items()  # type: ignore[attr-defined]
    for (filename, number, name), (_, calls, own, cumulative, _) in entries:
        ours = filename.startswith(PACKAGE)
        where = (
            f"{Path(filename).relative_to(Path(PACKAGE).parent)}:{number}"
            if ours
            else f"{Path(filename).name}:{number}"
        )
        rows.append((own, cumulative, calls, ("* " if ours else "  ") + f"{name} ({where})"))
    rows.sort(reverse=True)

    def line(own: float, cumulative: float, calls: int, label: str) -> str:
        per = 1e6 / count
        return f"{own * per:10.1f}  {cumulative * per:10.1f}  {calls / count:9.2f}  {label}"

    lines = ["own µs/req  cum µs/req  calls/req  function (* = piggyback)"]
    lines += [line(*row) for row in rows[:top]]
    ours = sorted((r for r in rows if r[3].startswith("*")), key=lambda r: r[1], reverse=True)
    lines += ["", "piggyback's own functions by cumulative time:"]
    lines += [line(*row) for row in ours[:top]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
