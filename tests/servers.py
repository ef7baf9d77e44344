"""Real servers for tests: gunicorn on a free loopback port, stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"The server exited with {process.returncode} before listening.")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"Nothing listened on 127.0.0.1:{port} within {timeout} s.")


@contextlib.contextmanager
def gunicorn(
    app: str,
    cwd: Path,
    *,
    workers: int = 4,
    worker_class: str = "sync",
    env: dict[str, str] | None = None,
) -> t.Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``gunicorn -w N app`` from ``cwd``; yields its base URL and process."""
    port = free_port()
    log = open(cwd / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--pythonpath",
        str(ROOT),
        "-w",
        str(workers),
        "-k",
        worker_class,
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "2",
        app,
    ]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def worker_pids(master_pid: int) -> list[int]:
    """The PIDs of a gunicorn master's workers, read from /proc."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
    return [int(pid) for pid in children.split()]
