"""The benchmark command still runs: ``python -m benchmarks.run --quick``, tiny loads.

Benchmarks are not tests, and nothing here judges a figure: the smoke run checks that
the one command starts its servers, drives them with wrk, stops them, and prints every
section of its table with numbers in it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="the benchmarks need wrk (apt-get install wrk)"
)


def _row(table: str, *cells: str) -> list[str]:
    """The cells of the first table row that contains all of ``cells``."""
    for line in table.splitlines():
        if line.startswith("|") and all(cell in line for cell in cells):
            return [cell.strip() for cell in line.strip("|").split("|")]
    raise AssertionError(f"no row with {cells} in:\n{table}")


@pytest.mark.timeout(300)
def test_quick_run_prints_every_section(tmp_path: Path) -> None:
    output = tmp_path / "table.md"
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--no-browser", "--no-peers"]
    done = subprocess.run(
        [*command, "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = output.read_text()
    assert table == done.stdout.rstrip("\n") + "\n"
    headings = re.findall(r"^### (.+)$", table, re.MULTILINE)
    assert [heading.split(".")[0] for heading in headings[:6]] == ["1", "2", "3", "4", "5", "6"]
    assert headings[-1] == "Targets"

    for workers in ("sync", "gthread x4 threads"):
        bare = _row(table, workers, "bare WSGI app (baseline)")
        sqlite = _row(table, workers, "SQLite store (default)")
        assert bare[4:6] == ["1.00x", "1.00x"]
        events_per_second = float(sqlite[2].replace(",", ""))
        cpu_ratio = float(sqlite[5].rstrip("x"))
        assert events_per_second > 0 and cpu_ratio > 0
        for floor in ("the SQLite store alone: its floor", "empty poll, the SQLite store alone"):
            assert float(_row(table, workers, floor)[5].rstrip("x")) > 0
    for target in ("SQLite CPU/event ÷ Flask-Sijax", "gthread ÷ sync", "Redis CPU/event"):
        assert target in table
    passed = _row(table, "sync", "pass-through JSON")
    assert float(passed[-1].rstrip("x")) > 0
    assert "Skipped: --no-browser" in table
    assert int(_row(table, "piggyback.js")[2].replace(",", "")) <= 6000
    assert _row(table, "minimal", "piggyback event")[-1].isdigit()
