"""`pushscale demo`: the whole system on a laptop, with viewers, live.

Called by `pushscale.cli`. It parses `pushscale.demo.settings.DemoSettings`, starts
`pushscale.demo.stack.Stack` (an embedded Redis, two push server pods, the adapter over TLS, the
viewers of `pushscale.loadgen`), hands over to `pushscale.demo.live.Live` until `--duration`
ends or Ctrl-C / SIGTERM arrives, then stops the stack in order and prints the summary. A
start-up failure is one `cannot start:` line and exit code 1, after stopping what had started.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

from pushkit.program import run_program
from pushscale.demo.live import Live, Screen
from pushscale.demo.settings import DemoSettings, parse_settings
from pushscale.demo.stack import Stack, StartFailure


def main(argv: Sequence[str] | None = None) -> int:
    return run_program(
        "pushscale demo", argv, parse_settings, run,
        log_name=lambda settings: "demo", startup_errors=(),
    )  # fmt: skip


async def run(settings: DemoSettings) -> int:
    screen = Screen(sys.stdout)
    stack = Stack(settings.plan(), screen.say)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    forced: list[int] = []

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            if signum == signal.SIGINT and not forced:
                forced.append(signum)
                screen.say("second Ctrl-C: killing everything without a drain")
                stack.kill()
            return
        screen.say(f"{signal.Signals(signum).name}: stopping")
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    screen.say(f"run directory {settings.run_dir}/ (logs, certificate, pods file, pids.json)")
    code, text = 0, None
    try:
        starting = asyncio.create_task(stack.start())
        interrupted = asyncio.create_task(stopping.wait())
        await asyncio.wait({starting, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        interrupted.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            screen.say("stopped while starting")
        else:
            starting.result()
            code, text = await Live(settings, stack, screen).run(stopping)
            if code:
                print(f"pushscale demo: {text}", file=sys.stderr, flush=True)
                text = None
    except StartFailure as exc:
        print(f"pushscale demo: cannot start: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        clean = await stack.stop()
    if text:
        screen.say(text)
    if forced:
        code = 1  # as the supervisor does when its workers are killed without a drain
    elif code == 0 and not clean:
        screen.say("a program did not stop cleanly (see its log in the run directory)")
    screen.say("everything stopped")
    return code
