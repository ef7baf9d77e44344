"""Real servers for tests, each on a free loopback port and stopped by its PID.

``gunicorn()`` runs any of its worker classes; ``server()`` runs any command that
listens on the port it is given (waitress, uWSGI, werkzeug's ``run_simple``).
"""

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
def server(
    command: t.Callable[[int], list[str]],
    cwd: Path,
    *,
    log: str = "server.log",
    env: dict[str, str] | None = None,
) -> t.Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``command(port)`` from ``cwd``, output to ``cwd / log``; yields base URL, process.

    On the way out it is sent SIGTERM, and after 10 s it and its children are killed.
    """
    port = free_port()
    with open(cwd / log, "wb") as out:
        process = subprocess.Popen(
            command(port),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": _python_path(), **(env or {})},
        )
        try:
            wait_for_port(port, process)
            yield f"http://127.0.0.1:{port}", process
        finally:
            stop(process)


def _python_path() -> str:
    """The repository first, so that ``tests.…`` and ``examples.…`` import anywhere."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL for it and its children if it has not exited within 10 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
        return
    except subprocess.TimeoutExpired:
        pass
    for pid in _descendants(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.kill()
    process.wait()


def _descendants(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for child in worker_pids(pid):
            found += [child, *_descendants(child)]
    return found


@contextlib.contextmanager
def gunicorn(
    app: str,
    cwd: Path,
    *,
    workers: int = 4,
    worker_class: str = "sync",
    threads: int = 1,
    preload: bool = False,
    env: dict[str, str] | None = None,
) -> t.Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``gunicorn -w N app`` from ``cwd``; yields its base URL and process.

    :param threads: ``--threads``, for the ``gthread`` worker class.
    :param preload: ``--preload``: the app is imported once, then the workers fork.
    """

    def command(port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "gunicorn", "--pythonpath", str(ROOT)),
            *("-w", str(workers), "-k", worker_class, "--threads", str(threads)),
            *(["--preload"] if preload else []),
            *("-b", f"127.0.0.1:{port}", "--graceful-timeout", "2", app),
        ]

    with server(command, cwd, log="gunicorn.log", env=env) as running:
        yield running


def worker_pids(master_pid: int) -> list[int]:
    """The PIDs of a gunicorn master's workers, read from /proc."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
    return [int(pid) for pid in children.split()]
