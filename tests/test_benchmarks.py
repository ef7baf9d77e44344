"""The benchmark command still runs: ``python -m benchmarks.run --quick``, tiny loads.

Benchmarks are not tests, and nothing here judges a figure: the smoke run checks that
the one command starts its servers, drives them with wrk, stops them, and prints every
section of its table with numbers in it; and its ratios pair the loads of each round.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.load import Results
from benchmarks.load import Sample

ROOT = Path(__file__).resolve().parent.parent

needs_wrk = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="the benchmarks need wrk (apt-get install wrk)"
)


def _row(table: str, *cells: str) -> list[str]:
    """The cells of the first table row that contains all of ``cells``."""
    for line in table.splitlines():
        if line.startswith("|") and all(cell in line for cell in cells):
            return [cell.strip() for cell in line.strip("|").split("|")]
    raise AssertionError(f"no row with {cells} in:\n{table}")


def _sample(cpu_us: float, extra_us: float = 0.0) -> Sample:
    return Sample(
        requests=1000, seconds=1.0, cpu=cpu_us / 1000, extra_cpu=extra_us / 1000, p50_us=1, p99_us=1
    )


def test_a_ratio_is_the_median_of_each_rounds_own_ratio() -> None:
    # The machine ran slow in round 2: the medians of the rows (250 ÷ 150) would hide
    # that the load costs twice its baseline in two rounds out of three.
    results = Results()
    results.samples["load"] = [_sample(100), _sample(250), _sample(300)]
    results.samples["base"] = [_sample(50), _sample(800), _sample(150)]
    assert results.ratio("load", "base", "cpu_us") == pytest.approx(2.0)
    assert results.ratio("base", "load", "cpu_us") == pytest.approx(0.5)
    rows = results.median("load", "cpu_us") / results.median("base", "cpu_us")
    assert rows == pytest.approx(250 / 150)


def test_per_round_figures_see_each_rounds_samples_together() -> None:
    results = Results()
    results.samples["redis"] = [_sample(100, extra_us=50), _sample(300, extra_us=100)]
    results.samples["sqlite"] = [_sample(100), _sample(400)]
    figure = results.per_round(lambda r, s: (r.cpu_us + r.extra_us) / s.cpu_us, "redis", "sqlite")
    assert figure == pytest.approx((1.5 + 1.0) / 2)
    results.samples["short"] = [_sample(1)]
    with pytest.raises(ValueError):  # a load missing from a round is a broken run
        results.ratio("short", "sqlite", "cpu_us")


@needs_wrk
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
        floors = (
            "the SQLite store alone: its floor",
            "empty poll, the SQLite store alone",
            "the page's lease alone: any store's floor",
        )
        for floor in floors:
            assert float(_row(table, workers, floor)[5].rstrip("x")) > 0
        redis_floor = _row(table, workers, "two round trips to Redis: its floor")
        assert re.fullmatch(r"\d+ \(\+\d+ in redis-server\)", redis_floor[3]), redis_floor
    for workers in ("sync", "gthread"):  # the bounds against Sijax need --peers
        for name in ("empty poll, the SQLite store's floor", "two round trips to Redis"):
            bound = _row(table, f"{workers}: {name}")
            assert (bound[1], bound[3]) == ("—", "a bound, not piggyback")
            assert float(bound[2].rstrip("x")) > 0
    for target in ("SQLite CPU/event ÷ Flask-Sijax", "gthread ÷ sync", "Redis CPU/event"):
        assert target in table
    passed = _row(table, "sync", "pass-through JSON")
    assert float(passed[-1].rstrip("x")) > 0
    assert "Skipped: --no-browser" in table
    assert int(_row(table, "piggyback.js")[2].replace(",", "")) <= 6000
    assert _row(table, "minimal", "piggyback event")[-1].isdigit()
