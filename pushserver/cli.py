"""`pushscale server` / `python -m pushserver`: parse settings, then hand over to the supervisor.

Called by `pushscale.cli` (the `pushscale` console script) and `pushserver.__main__`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pushkit.program import run_program
from pushserver.settings import ServerSettings, parse_settings
from pushserver.supervisor import StartupError, Supervisor


def main(argv: Sequence[str] | None = None) -> int:
    return run_program(
        "pushscale server", argv, parse_settings, _supervise,
        log_name=lambda settings: f"{settings.pod_name}/supervisor",
        startup_errors=(StartupError,),
    )  # fmt: skip


async def _supervise(settings: ServerSettings) -> int:
    return await Supervisor(settings).run()
