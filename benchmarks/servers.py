"""Servers the benchmarks start and stop themselves: gunicorn and redis-server.

Everything listens on 127.0.0.1 on a free port and is stopped by its PID. (The ideas of
``tests/servers.py``, copied: benchmarks do not import from ``tests/``.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = "/usr/bin/redis-server"
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


@dataclass
class Server:
    """A process listening on a loopback port, and the processes doing its work."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    #: How many worker processes it should have (0: the process itself works).
    workers: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def working_pids(self) -> list[int]:
        return children(self.process.pid) if self.workers else [self.process.pid]

    def cpu(self) -> float:
        """CPU seconds used so far by the processes doing the work."""
        total = 0.0
        for pid in self.working_pids():
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def stop(self) -> None:
        self.terminate()
        self.wait()

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self) -> None:
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_gunicorn(
    name: str,
    app: str,
    cwd: Path,
    *,
    worker_class: str,
    workers: int = 2,
    threads: int = 4,
    env: dict[str, str] | None = None,
    pythonpath: list[str] | None = None,
) -> Server:
    """Start ``gunicorn -w N -k CLASS app`` from ``cwd``; :func:`wait_ready` waits for it."""
    cwd.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = cwd / "gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn",
        "--pythonpath", ",".join([str(ROOT), *(pythonpath or [])]),
        "-w", str(workers), "-k", worker_class,
        "-b", f"127.0.0.1:{port}",
        "--graceful-timeout", "2",
        "--backlog", "256",
    ]  # fmt: skip
    if worker_class == "gthread":
        command += ["--threads", str(threads)]
    command.append(app)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
    return Server(name, port, process, log, workers=workers, env=env or {})


def wait_ready(server: Server, timeout: float = 60) -> None:
    """Wait until the server listens, all its workers are up and one has answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"The {server.name} server exited with {server.process.returncode}:\n"
                + server.log.read_text(errors="replace")[-3000:]
            )
        listening = False
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", server.port), 0.2),
        ):
            listening = True
        if listening and len(server.working_pids()) >= max(server.workers, 1):
            if not server.workers:
                return
            # gunicorn's socket listens before its workers have imported the app.
            with contextlib.suppress(OSError):
                http_get(server.url + "/")
                return
        time.sleep(0.05)
    raise RuntimeError(f"The {server.name} server was not ready in {timeout} s; see {server.log}.")


def start_redis(cwd: Path) -> Server:
    """A redis-server that keeps nothing on disk."""
    if not os.path.exists(REDIS_SERVER):
        raise FileNotFoundError(
            f"No redis-server at {REDIS_SERVER}; install it (apt-get install redis-server)."
        )
    cwd.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = cwd / "redis.log"
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(cwd)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    server = Server("redis", port, process, log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited:\n{log.read_text(errors='replace')}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), 0.5) as sock,
        ):
            sock.sendall(b"PING\r\n")
            if sock.recv(64).startswith(b"+PONG"):
                return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"redis-server did not answer PING on port {port}.")


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One GET on a new connection; the status and body."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def raw_exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send raw request bytes; the raw response, split into head and body."""
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = _content_length(head)
        while length is not None and len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return head + b"\r\n\r\n", body


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def stop_all(servers: list[Server]) -> None:
    """Signal every server first, then wait for each: they stop side by side."""
    for server in servers:
        server.terminate()
    for server in servers:
        server.wait()
