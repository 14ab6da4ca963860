"""The picture of one scenario: users, connections, replicas and the fullest pod, per variant.

`adapter.simulator.cli` calls `draw(timelines, path)` once per scenario. Three panels share the
time axis (minutes): users and connected sockets; replicas, with each variant's scale events
marked (▲ up, ▼ down); the fullest pod's sockets against the target and 1.2 x the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt

from adapter.simulator.run import Timeline
from adapter.simulator.summary import OVERLOAD

COLORS = {"hpa-default": "#d62728", "hpa-fast": "#ff7f0e", "controller": "#2ca02c",
          "controller-rebalance": "#1f77b4"}  # fmt: skip


def draw(timelines: Sequence[Timeline], path: Path) -> None:
    scenario = timelines[0].scenario
    minutes = [second / 60 for second in range(scenario.seconds)]
    figure, (load, replicas, fullest) = plt.subplots(
        3, 1, figsize=(12, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2, 3]}
    )
    figure.suptitle(f"{scenario.name}: {scenario.description}", fontsize=11)
    load.plot(minutes, [users / 1000 for users in timelines[0].users], color="black",
              linewidth=2, label="users")  # fmt: skip
    for index, timeline in enumerate(timelines):
        color = COLORS.get(timeline.variant.name, None)
        # Variants often agree for long stretches: wider lines underneath keep each visible.
        width = 2.5 - 0.5 * index
        load.plot(minutes, [c / 1000 for c in timeline.connected], color=color, linewidth=width,
                  label=f"connected ({timeline.variant.name})")  # fmt: skip
        replicas.step(minutes, timeline.replicas, where="post", color=color, linewidth=width,
                      label=timeline.variant.name)  # fmt: skip
        for event in timeline.events:
            if event.by == "replicaset":
                replicas.axvline(event.at / 60, color="grey", linestyle=":", linewidth=1)
                continue
            replicas.plot(event.at / 60, event.after, marker="^" if event.up else "v",
                          color=color, markersize=6)  # fmt: skip
        fullest.plot(minutes, [m / 1000 for m in timeline.max_load], color=color, linewidth=width,
                     label=timeline.variant.name)  # fmt: skip
    target = scenario.target_per_pod / 1000
    fullest.axhline(target, color="black", linestyle="--", linewidth=1, label="target")
    fullest.axhline(target * OVERLOAD, color="black", linestyle=":", linewidth=1,
                    label=f"{OVERLOAD} x target")  # fmt: skip
    load.set_ylabel("thousands")
    replicas.set_ylabel("replicas")
    fullest.set_ylabel("fullest pod (thousands)")
    fullest.set_xlabel("minutes")
    for axes in (load, replicas, fullest):
        axes.grid(True, alpha=0.3)
        axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
