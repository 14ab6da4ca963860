"""`pushscale simulate`: run scenarios through the three variants; print, draw and save.

Called by `pushscale.cli`. For each scenario: `run.simulate` per variant (a progress bar while
it runs), then the summary table on stdout, and with `--out DIR` a PNG (`plot.draw`) and
`DIR/NAME.json` (`summary.as_json`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from adapter.simulator import plot, summary
from adapter.simulator.run import VARIANTS, Timeline, simulate
from adapter.simulator.scenarios import (
    DEFAULT_SCENARIOS,
    SCENARIOS,
    Scenario,
    ScenarioError,
    load_csv,
)
from pushkit.progress import draw_bar, finish_bar

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pushscale simulate",
        description=(
            "Replay traffic through a model of the Kubernetes HPA: stock with default behavior "
            "(hpa-default), stock with a 60 s scale-down window (hpa-fast), and the HPA with "
            "the pushscale controller (controller). Prints a summary table per scenario."
        ),
    )
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS),
        help="a built-in scenario (repeatable; default: all but 'day')",
    )  # fmt: skip
    parser.add_argument(
        "--csv", action="append", default=[], metavar="FILE",
        help="a scenario from a CSV file with the header 'second,users'",
    )  # fmt: skip
    parser.add_argument("--out", metavar="DIR", help="write NAME.png and NAME.json here")
    parser.add_argument("--list", action="store_true", help="list the built-in scenarios")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name in sorted(SCENARIOS):
            print(f"{name:<16} {SCENARIOS[name]().description}")
        return 0
    try:
        scenarios = _scenarios(args.scenario, args.csv)
    except ScenarioError as exc:
        print(f"pushscale simulate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for scenario in scenarios:
        timelines = _run(scenario)
        print(summary.table(scenario.name, [summary.summarize(t) for t in timelines]))
        print()
        if out is not None:
            plot.draw(timelines, out / f"{scenario.name}.png")
            document = summary.as_json(timelines)
            (out / f"{scenario.name}.json").write_text(json.dumps(document, indent=2) + "\n")
    if out is not None:
        print(f"wrote {len(scenarios)} PNG and JSON files to {out}/")
    return 0


def _scenarios(names: list[str] | None, csv_files: list[str]) -> list[Scenario]:
    chosen = [SCENARIOS[name]() for name in (names or ([] if csv_files else DEFAULT_SCENARIOS))]
    for path in csv_files:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{path}: {exc.strerror}") from exc
        chosen.append(load_csv(Path(path).stem, text))
    return chosen


def _run(scenario: Scenario) -> list[Timeline]:
    total = scenario.seconds * len(VARIANTS)
    started = time.monotonic()
    timelines = []
    for index, variant in enumerate(VARIANTS):
        offset = index * scenario.seconds

        def progress(second: int, offset: int = offset) -> None:
            draw_bar(scenario.name, offset + second, total)

        timelines.append(simulate(scenario, variant, progress))
    finish_bar()
    hours = scenario.seconds / 3600
    print(f"{scenario.name}: {hours:.1f} h simulated x {len(VARIANTS)} variants "
          f"in {time.monotonic() - started:.1f} s")  # fmt: skip
    return timelines
