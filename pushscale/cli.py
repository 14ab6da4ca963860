"""`pushscale SUBCOMMAND ...`: dispatches to each program's own command line.

Each program parses its own flags (`pushserver.cli` for `server`, `adapter.cli` for
`adapter`); this module only picks one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


def _server(argv: Sequence[str]) -> int:
    from pushserver.cli import main

    return main(argv)


def _adapter(argv: Sequence[str]) -> int:
    from adapter.cli import main

    return main(argv)


def _controller(argv: Sequence[str]) -> int:
    from adapter.controller.cli import main

    return main(argv)


def _simulate(argv: Sequence[str]) -> int:
    from adapter.simulator.cli import main

    return main(argv)


def _demo(argv: Sequence[str]) -> int:
    from pushscale.demo.cli import main

    return main(argv)


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "demo": (_demo, "the whole system on this machine, with live viewers (start here)"),
    "server": (_server, "run the push server (supervisor + workers)"),
    "adapter": (_adapter, "serve the custom metrics API (exact per-pod sums) to the HPA"),
    "controller": (_controller, "scale down with hysteresis that survives reconnect storms"),
    "simulate": (
        _simulate,
        "replay traffic through the HPA model, with and without the controller",
    ),
}


def _usage() -> str:
    lines = ["usage: pushscale COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "`pushscale COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"pushscale: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return command[0](args[1:])


if __name__ == "__main__":
    sys.exit(main())
