"""The timeline of `bench.seed hold`: connections per pod (truth and served), reconnects, CPU."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.seed_hold import Sample

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def draw(samples: Sequence[Sample], pods: int, title: str, path: Path) -> None:
    t = [s.t for s in samples]
    figure, (counts, rates, cores) = plt.subplots(
        3, 1, figsize=(12, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    figure.suptitle(title, fontsize=11)
    counts.plot(t, [s.clients / 1000 for s in samples], color="black", linewidth=2,
                label="clients connected (their own count)")  # fmt: skip
    for pod in range(pods):
        color = COLORS[pod % len(COLORS)]
        counts.plot(t, [s.truth.get(pod, 0) / 1000 for s in samples], color=color,
                    linewidth=3, alpha=0.4, label=f"seed-{pod}: kernel (truth)")  # fmt: skip
        served = [s.served.get(pod) for s in samples]
        counts.plot(t, [None if v is None else v / 1000 for v in served], color=color,
                    linestyle="--", linewidth=1.2,
                    label=f"seed-{pod}: adapter (served)")  # fmt: skip
    counts.set_ylabel("connections (thousands)")
    counts.legend(fontsize=7, ncol=2, loc="upper left")
    counts.grid(alpha=0.3)
    rates.plot(t, [s.per_second(s.connects) for s in samples], color="#1f77b4",
               label="connects / s")  # fmt: skip
    rates.plot(t, [s.per_second(s.reconnects) for s in samples], color="#2ca02c",
               label="of which reconnects")  # fmt: skip
    rates.plot(t, [s.per_second(s.failures) for s in samples], color="#d62728",
               label="failed attempts / s")  # fmt: skip
    rates.set_ylabel("per second")
    rates.legend(fontsize=8, loc="upper left")
    rates.grid(alpha=0.3)
    cores.plot(t, [s.pod_cores for s in samples], label="push pods")
    cores.plot(t, [s.generator_cores for s in samples], label="load generator")
    cores.plot(t, [s.bench_cores for s in samples], label="the bench's sampling")
    cores.plot(t, [s.machine_cores for s in samples], color="grey", linestyle=":",
               label="whole machine")  # fmt: skip
    cores.set_ylabel("CPU cores")
    cores.set_xlabel("seconds")
    cores.legend(fontsize=8, loc="upper left")
    cores.grid(alpha=0.3)
    for axis in (counts, rates, cores):
        _mark_phases(axis, samples, named=axis is counts)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _mark_phases(axis: Axes, samples: Sequence[Sample], named: bool) -> None:
    previous = None
    for sample in samples:
        if sample.phase != previous and previous is not None:
            axis.axvline(sample.t, color="grey", linewidth=0.6)
            if named:
                axis.annotate(sample.phase, (sample.t, 1.0), xycoords=("data", "axes fraction"),
                              fontsize=7, rotation=90, va="top", ha="right")  # fmt: skip
        previous = sample.phase
