"""A one-line progress bar on stderr, for everything a person runs that takes a while
(`pushscale simulate`, the benches)."""

from __future__ import annotations

import sys


def draw_bar(label: str, done: int, total: int, width: int = 40) -> None:
    """Redraw the bar in place; the caller ends the line (`finish_bar`) when done."""
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r{label:<14} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stderr.flush()


def finish_bar() -> None:
    sys.stderr.write("\n")
    sys.stderr.flush()
