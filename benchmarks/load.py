"""Bounded loads with wrk, and the servers' CPU time per request from /proc.

A load generator in Python would be CPU-bound itself on a two-core machine, so the
requests come from ``wrk`` (C, epoll) driven by ``load.lua``. Every event request is
valid: a page token minted with the servers' key, a fresh and growing ``s`` per page,
and ``a`` acknowledging the page's previous answer.
"""

from __future__ import annotations

import math
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import time
import typing as t
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from piggyback import Piggyback
from piggyback.stores.memory import MemoryStore

from .servers import Server

LUA = Path(__file__).with_name("load.lua")
_RESULT = re.compile(r"PBRESULT (.*)")


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(
            "benchmarks need wrk, the HTTP load generator, and it is not installed.\n"
            "Install it (Debian: apt-get install wrk) and run again."
        )
    return path


def mint_tokens(secret_key: str, count: int, path: Path) -> Path:
    """Write ``count`` page tokens of new pages, signed with ``secret_key``."""
    signer = Piggyback(_no_app, secret_key=secret_key, store=MemoryStore()).signer
    path.write_text("".join(signer.sign(secrets.token_urlsafe(16)) + "\n" for _ in range(count)))
    return path


def _no_app(environ: t.Any, start_response: t.Any) -> list[bytes]:
    raise AssertionError("only used to mint tokens")


@dataclass
class Load:
    """One kind of request against one server."""

    key: str
    server: str
    mode: str  # see load.lua: event, poll, fresh, get, sijax
    path: str = ""
    #: Also count this process's CPU per request (e.g. redis-server).
    extra: str | None = None


@dataclass
class Sample:
    requests: int
    seconds: float
    cpu: float
    extra_cpu: float
    p50_us: int
    p99_us: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.requests * 1e6

    @property
    def extra_us(self) -> float:
        return self.extra_cpu / self.requests * 1e6


@dataclass
class Results:
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def median(self, key: str, attribute: str) -> float:
        return float(statistics.median(getattr(s, attribute) for s in self.samples[key]))

    def ratio(self, key: str, baseline: str, attribute: str) -> float:
        """``key``'s ``attribute`` ÷ ``baseline``'s, paired: the median of every round's
        own ratio. Both loads of a round ran within a minute of each other, so the
        machine's drift from round to round (10% and more) falls out of each ratio."""
        return self.per_round(
            lambda sample, base: getattr(sample, attribute) / getattr(base, attribute),
            key,
            baseline,
        )

    def per_round(self, figure: t.Callable[..., float], *keys: str) -> float:
        """The median over the rounds of ``figure(*samples)``, the round's samples of
        ``keys`` in order."""
        rounds = zip(*(self.samples[key] for key in keys), strict=True)
        return float(statistics.median(figure(*samples) for samples in rounds))

    def has(self, key: str) -> bool:
        return bool(self.samples.get(key))


class Runner:
    """Runs loads with wrk against running servers.

    :param wrk: the wrk executable.
    :param workdir: where token files go.
    :param secret_key: the servers' ``PIGGYBACK_SECRET_KEY``.
    :param connections: wrk's ``-c`` and ``-t``: one connection per wrk thread, and each
        thread its own pages, so a page never has two events on their way at once (a
        page's event overtaking its predecessor is answered ``stale``, as it should be).
    :param pages: pages per sustained-event load, spread over the threads.
    """

    def __init__(
        self,
        wrk: str,
        workdir: Path,
        secret_key: str,
        *,
        connections: int = 8,
        pages: int = 256,
    ) -> None:
        self.wrk = wrk
        self.workdir = workdir
        self.secret_key = secret_key
        self.connections = connections
        self.pages = pages
        self._files = 0

    def run(self, load: Load, servers: dict[str, Server], seconds: float) -> Sample:
        """One load for ``seconds``, which may be a fraction: wrk's ``-d`` counts whole
        seconds, so it gets a spare one and is stopped with SIGINT, on which it stops
        its threads and reports what it measured until then."""
        server = servers[load.server]
        extra = servers[load.extra] if load.extra else None
        arg = load.path
        if load.mode in ("event", "poll", "fresh"):
            # New pages every run; "fresh" wants about one page per request.
            count = self.pages if load.mode != "fresh" else int(8000 * seconds) + 100
            self._files += 1
            arg = str(
                mint_tokens(self.secret_key, count, self.workdir / f"tokens{self._files}.txt")
            )
        n = str(self.connections)
        command = [
            self.wrk, f"-t{n}", f"-c{n}", f"-d{math.ceil(seconds) + 1}s", "--timeout", "5s",
            "-s", str(LUA), server.url, "--", load.mode, arg, n,
        ]  # fmt: skip
        cpu_before = server.cpu()
        extra_before = extra.cpu() if extra else 0.0
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            time.sleep(seconds)
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        cpu_after = server.cpu()
        extra_after = extra.cpu() if extra else 0.0
        match = _RESULT.search(stdout)
        if match is None:
            raise RuntimeError(f"wrk failed for {load.key}:\n{stdout}\n{stderr}")
        fields = dict(item.split("=") for item in match.group(1).split())
        errors = int(fields["status_errors"]) + int(fields["socket_errors"])
        requests = int(fields["requests"])
        if errors or requests == 0:
            raise RuntimeError(
                f"{load.key}: {errors} of {requests} requests failed (4xx/5xx or socket"
                f" errors); see {server.log}.\n{stdout}"
            )
        return Sample(
            requests=requests,
            seconds=int(fields["duration_us"]) / 1e6,
            cpu=cpu_after - cpu_before,
            extra_cpu=extra_after - extra_before,
            p50_us=int(fields["p50_us"]),
            p99_us=int(fields["p99_us"]),
        )
