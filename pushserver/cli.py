"""`pushscale server` / `python -m pushserver`: parse settings, then hand over to the supervisor.

Called by `pushscale.cli` (the `pushscale` console script) and `pushserver.__main__`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import uvloop

from pushserver.logs import configure_logging
from pushserver.settings import SettingsError, parse_settings
from pushserver.supervisor import StartupError, Supervisor

log = logging.getLogger("pushserver")

EXIT_USAGE = 2
EXIT_STARTUP = 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        print(f"pushscale server: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, f"{settings.pod_name}/supervisor")
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(Supervisor(settings).run())
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_STARTUP
