"""Arithmetic on files and captured exchanges: script sizes and bytes on the wire."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import piggyback

from .servers import raw_exchange

PIGGYBACK_JS = Path(piggyback.__file__).resolve().parent / "js" / "piggyback.js"


def gzip9(data: bytes) -> int:
    """Bytes after ``gzip -9`` (the gzip program when present: it is what budgets mean)."""
    program = shutil.which("gzip")
    if program:
        return len(
            subprocess.run(
                [program, "-9", "-n", "-c"], input=data, capture_output=True, check=True
            ).stdout
        )
    return len(gzip.compress(data, compresslevel=9, mtime=0))


@dataclass
class Exchange:
    """One request and its response, as bytes on the wire (HTTP/1.1, no TLS)."""

    request: int
    response_head: int
    response_body: int

    @property
    def total(self) -> int:
        return self.request + self.response_head + self.response_body


def exchange(
    port: int, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> Exchange:
    """Send a minimal request, as wrk does: request line, Host, and what ``headers`` add."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    head, response_body = raw_exchange(port, request)
    status = head.split(b" ", 2)[1]
    if status != b"200":
        raise RuntimeError(f"{method} {target} answered {head.decode(errors='replace')}")
    return Exchange(len(request), len(head), len(response_body))
