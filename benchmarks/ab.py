"""Two versions of piggyback, measured against each other in one run.

    python -m benchmarks.ab OLD_TREE [--rounds 5] [--seconds 2]

``OLD_TREE`` is a checkout of another commit (``git worktree add /tmp/old REV``). Each
version serves the same apps under ``gunicorn -w 2`` (sync and gthread), and wrk runs
the same loads against both, interleaved, as ``benchmarks.run`` does; it prints CPU per
event and events/s for each, and new ÷ old (the median of the rounds' own ratios). A
change's cost or saving is read from one run, not from two runs on a machine whose
speed moves.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from .apps import SECRET_KEY
from .load import find_wrk
from .load import Load
from .load import Results
from .load import Runner
from .servers import free_port
from .servers import ROOT
from .servers import Server
from .servers import stop_all
from .servers import wait_ready

APPS = {"bare": "benchmarks.apps:site", "sqlite": "benchmarks.apps:live"}
LOADS = [("event", "bare", "event"), ("event", "sqlite", "event"), ("poll", "sqlite", "poll")]


def start(tree: Path, name: str, app: str, worker_class: str, cwd: Path) -> Server:
    cwd.mkdir(parents=True)
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "--pythonpath", str(tree), "-w", "2",
        "-k", worker_class, "-b", f"127.0.0.1:{port}", "--graceful-timeout", "2",
    ]  # fmt: skip
    if worker_class == "gthread":
        command += ["--threads", "4"]
    env = {"PIGGYBACK_SECRET_KEY": SECRET_KEY, "PYTHONPATH": str(tree)}
    log = cwd / "gunicorn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*command, app], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    return Server(name, port, process, log, workers=2, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2)
    args = parser.parse_args(argv)
    trees = {"old": args.old.resolve(), "new": ROOT}
    with tempfile.TemporaryDirectory(prefix="pb-ab-") as tmp, contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        stack.callback(lambda: stop_all(list(servers.values())))
        for version, tree in trees.items():
            for w in ("sync", "gthread"):
                for name, app in APPS.items():
                    key = f"{version}-{name}-{w}"
                    servers[key] = start(tree, key, app, w, Path(tmp) / key)
        for server in servers.values():
            wait_ready(server)
        runner = Runner(find_wrk(), Path(tmp), SECRET_KEY)
        loads = [
            Load(f"{v}/{w}/{kind}/{name}", f"{v}-{name}-{w}", mode)
            for v in trees
            for w in ("sync", "gthread")
            for kind, name, mode in LOADS
        ]
        results = Results()
        for load in loads:
            runner.run(load, servers, 1)  # warm-up
        shuffler = random.Random(0)
        for number in range(args.rounds):
            print(f"round {number + 1}/{args.rounds}", file=sys.stderr)
            shuffler.shuffle(loads)
            for load in loads:
                sample = runner.run(load, servers, args.seconds)
                results.samples.setdefault(load.key, []).append(sample)
    print("| workers | load | old CPU µs | new CPU µs | new ÷ old | old /s | new /s | new ÷ old |")
    print("|---|---|---|---|---|---|---|---|")
    for w in ("sync", "gthread"):
        for kind, name, _ in LOADS:
            old, new = f"old/{w}/{kind}/{name}", f"new/{w}/{kind}/{name}"
            cpu, rate = results.ratio(new, old, "cpu_us"), results.ratio(new, old, "rate")
            print(
                f"| {w} | {kind} {name} | {results.median(old, 'cpu_us'):.0f}"
                f" | {results.median(new, 'cpu_us'):.0f} | {cpu:.2f}x"
                f" | {results.median(old, 'rate'):,.0f} | {results.median(new, 'rate'):,.0f}"
                f" | {rate:.2f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
