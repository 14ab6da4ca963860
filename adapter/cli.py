"""`pushscale adapter` / `python -m adapter`: parse settings, then hand over to the server.

Called by `pushscale.cli` (the `pushscale` console script) and `adapter.__main__`.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapter.errors import StartupError
from adapter.server import serve
from adapter.settings import parse_settings
from pushkit.program import run_program


def main(argv: Sequence[str] | None = None) -> int:
    return run_program(
        "pushscale adapter", argv, parse_settings, serve,
        log_name=lambda _: "adapter", startup_errors=(StartupError,),
    )  # fmt: skip
