"""`pushscale adapter` / `python -m adapter`: parse settings, then hand over to the server.

Called by `pushscale.cli` (the `pushscale` console script) and `adapter.__main__`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import uvloop

from adapter.errors import StartupError
from adapter.server import serve
from adapter.settings import SettingsError, parse_settings
from pushserver.logs import configure_logging

log = logging.getLogger("pushscale.adapter")

EXIT_USAGE = 2
EXIT_STARTUP = 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        print(f"pushscale adapter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, "adapter")
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(settings))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_STARTUP
