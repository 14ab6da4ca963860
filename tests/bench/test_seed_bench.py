"""bench.seed at a tiny scale, end to end: pods behind the iptables Service in a private network
namespace, the adapter over TLS, a pod SIGKILLed, every client back, the game end. What it
checks is what the benchmark's table claims at full scale: the adapter serves each pod's
kernel-counted connections exactly when quiet, the killed pod is left out, nobody gives up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cluster import IPTABLES_RESTORE

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a private network namespace needs root"),
    pytest.mark.skipif(not IPTABLES_RESTORE.exists(), reason="scripts/setup fetches iptables"),
]


def test_hold_kill_and_game_end_at_a_tiny_scale(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.seed", "hold", "--pods", "2", "--workers", "2",
         "--per-worker", "100", "--rate", "200", "--idle-seconds", "1", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "hold.json").read_text())
    f = report["figures"]
    assert f["held"] == report["total"] == 400
    assert f["holdQuietSamples"] == 10 and f["holdQuietWorstDiff"] == 0
    assert f["killedHeld"] > 0 and f["drops"] >= f["killedHeld"]
    assert f["reconnectFailed"] == 0 and f["secondsUntilAllBack"] is not None
    assert f["afterKillQuietWorstDiff"] == 0 and f["killedPodServed"] is False
    assert f["gameEndServedSeconds"] is not None
    quiet = [s for s in report["samples"] if s["phase"] == "after kill"]
    assert quiet and all("0" not in s["served"] for s in quiet), "the killed pod was served"
    assert (tmp_path / "hold.png").stat().st_size > 10_000
    assert "| kill: reconnect_failed | 0 |" in done.stdout
    # Nothing the bench started outlives it (the namespace went with its last process).
    leftover = subprocess.run(["pgrep", "-f", f"{tmp_path}"], capture_output=True, text=True)
    assert leftover.stdout == ""
