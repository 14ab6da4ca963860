"""bench.accept runs a real worker's connection life and says so, or refuses to report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_accept_bench_reports_a_cost_per_completed_connection() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.accept", "--connections", "200", "--rounds", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    row = next(line for line in result.stdout.splitlines() if "µs per connection" in line)
    assert 1.0 < float(row.split("|")[2]) < 100_000.0
