"""A real, throwaway ``redis-server`` on a free loopback port, for tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
import typing as t

from .servers import free_port

REDIS_SERVER = "/usr/bin/redis-server"


@contextlib.contextmanager
def redis_server(executable: str = REDIS_SERVER) -> t.Iterator[str]:
    """Run a ``redis-server`` that keeps nothing on disk; yields its URL.

    The server is terminated, by its PID, on exit.
    """
    if not os.path.exists(executable):
        raise RuntimeError(
            f"The Redis tests need a redis-server at {executable!r}, which is missing:"
            " install it (Debian: apt-get install redis-server)."
        )
    port = free_port()
    command = [executable, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no"]
    # A file, not a pipe: nobody reads the log unless the server fails to start.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_ping(port, process, log)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_ping(
    port: int, process: subprocess.Popen[bytes], log: t.IO[bytes], timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(
                f"redis-server exited with {process.returncode} before answering"
                f" PING:\n{log.read().decode(errors='replace')}"
            )
        if _ping(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer PING on port {port} in {timeout} s.")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
