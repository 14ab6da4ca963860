"""How every long-running `pushscale` program starts: settings, logging, its event loop.

`pushserver.cli`, `adapter.cli` and `adapter.controller.cli` each call `run_program` with their
own settings parser and coroutine, so the three share one behaviour: a bad flag is one line and
exit code 2, a start-up failure one `cannot start:` line and exit code 1, otherwise the
coroutine's own exit code. Once serving, each writes its `--ready-file` with
`write_ready_file`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import uvloop

from pushkit.logs import configure_logging
from pushkit.options import SettingsError

EXIT_STARTUP = 1
EXIT_USAGE = 2


class HasLogLevel(Protocol):
    @property
    def log_level(self) -> str: ...


S = TypeVar("S", bound=HasLogLevel)


def run_program(
    prog: str,
    argv: Sequence[str] | None,
    parse: Callable[[Sequence[str], Mapping[str, str]], S],
    main: Callable[[S], Coroutine[Any, Any, int]],
    *,
    log_name: Callable[[S], str],
    startup_errors: tuple[type[Exception], ...],
) -> int:
    try:
        settings = parse(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level, log_name(settings))
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main(settings))
    except startup_errors as exc:
        logging.getLogger(f"pushscale.{log_name(settings)}").error("cannot start: %s", exc)
        return EXIT_STARTUP


def write_ready_file(path: str, document: Mapping[str, Any]) -> None:
    """Write the JSON a waiting process reads once the file exists: to a temporary name first,
    then renamed, so the file never exists half written."""
    final = Path(path)
    partial = final.with_name(f".{final.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(document), encoding="utf-8")
    os.replace(partial, final)
