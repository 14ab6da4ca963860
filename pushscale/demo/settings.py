"""Settings of `pushscale demo`: one typed, validated object, built once at start-up.

`pushscale.demo.cli` calls `parse_settings(argv, environ)`; `DemoSettings.plan()` turns the
result into the `pushscale.demo.stack.StackPlan` of processes and ports. Every flag `--foo-bar`
has an environment twin `PUSHSCALE_DEMO_FOO_BAR`; a flag wins over its variable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from adapter.simulator.backoff import ClientOptions
from adapter.simulator.scenarios import SCENARIOS
from pushkit.options import (
    Option,
    SettingsError,
    check_log_level,
    option_values,
    options_parser,
)
from pushscale.demo.stack import StackPlan

ENV_PREFIX = "PUSHSCALE_DEMO_"
# One agent process holds at most this many viewers: this machine allows 20000 open files a
# process, and each viewer is one socket.
MAX_CLIENTS_PER_AGENT = 8000


@dataclass(frozen=True)
class DemoSettings:
    clients: int = 2000
    client_port: int = 3000  # demo-a on it, demo-b on the next one; 0 = any free port each
    metrics_port: int = 9100  # demo-a's block of `workers` ports, then demo-b's; 0 = any
    adapter_port: int = 6443
    workers: int = 4
    duration_seconds: float | None = None  # None: until Ctrl-C, or a scenario's length
    scenario: str | None = None
    speed: float = 20.0
    move_every_seconds: float = 30.0
    # socket.io-client's reconnect backoff; the seed's options by default.
    reconnect_delay_seconds: float = 10.0
    reconnect_delay_max_seconds: float = 20.0
    connect_rate: float = 500.0  # the seed's sustained new connections per second
    drain_seconds: float = 3.0
    refresh_seconds: float = 1.0
    agents: int | None = None
    run_dir: str = ".run/demo"
    log_level: str = "info"

    def validate(self) -> None:
        if not 1 <= self.clients <= 100_000:
            raise SettingsError(f"--clients must be from 1 to 100000, not {self.clients}")
        if not 1 <= self.workers <= 16:
            raise SettingsError(f"--workers must be from 1 to 16, not {self.workers}")
        for flag, first, count in (("--client-port", self.client_port, 2),
                                   ("--metrics-port", self.metrics_port, 2 * self.workers),
                                   ("--adapter-port", self.adapter_port, 1)):  # fmt: skip
            if not 0 <= first or (first and first + count - 1 > 65535):
                raise SettingsError(f"{flag} {first}: needs ports {first}-{first + count - 1}")
        blocks = {"--client-port": self.ports("client"), "--metrics-port": self.ports("metrics"),
                  "--adapter-port": self.ports("adapter")}  # fmt: skip
        for a, b in (("--client-port", "--metrics-port"), ("--client-port", "--adapter-port"),
                     ("--metrics-port", "--adapter-port")):  # fmt: skip
            if blocks[a] & blocks[b]:
                raise SettingsError(f"{a} and {b} overlap on port {min(blocks[a] & blocks[b])}")
        if self.duration_seconds is not None and self.duration_seconds < 0:
            raise SettingsError("--duration must be 0 (until Ctrl-C) or more seconds")
        if self.scenario is not None and self.scenario not in SCENARIOS:
            raise SettingsError(f"--scenario {self.scenario!r}: not one of {', '.join(SCENARIOS)}")
        if self.speed <= 0 or self.connect_rate <= 0:
            raise SettingsError("--speed and --connect-rate must be > 0")
        if self.move_every_seconds < 0 or self.drain_seconds < 0:
            raise SettingsError("--move-every and --drain-seconds must be 0 or more")
        if not 0 < self.reconnect_delay_seconds <= self.reconnect_delay_max_seconds:
            raise SettingsError("need 0 < --reconnect-delay <= --reconnect-delay-max")
        if self.refresh_seconds < 0.2:
            raise SettingsError("--refresh must be at least 0.2 seconds")
        if self.agents is not None and not 1 <= self.agents <= 16:
            raise SettingsError(f"--agents must be from 1 to 16, not {self.agents}")
        check_log_level(self.log_level)

    def ports(self, what: str) -> set[int]:
        """The fixed ports a part of the demo takes (none for port 0)."""
        first, count = {"client": (self.client_port, 2), "adapter": (self.adapter_port, 1),
                        "metrics": (self.metrics_port, 2 * self.workers)}[what]  # fmt: skip
        return set(range(first, first + count)) if first else set()

    def plan(self) -> StackPlan:
        def pair(first: int, step: int) -> tuple[int, int]:
            return (first, first + step) if first else (0, 0)

        return StackPlan(
            run_dir=Path(self.run_dir),
            client_ports=pair(self.client_port, 1),
            metrics_ports=pair(self.metrics_port, self.workers),
            adapter_port=self.adapter_port,
            workers=self.workers,
            drain_seconds=self.drain_seconds,
            agents=self.agents or math.ceil(self.clients / MAX_CLIENTS_PER_AGENT),
            connect_rate=self.connect_rate,
            client=ClientOptions(
                reconnection_delay_ms=self.reconnect_delay_seconds * 1000,
                reconnection_delay_max_ms=self.reconnect_delay_max_seconds * 1000,
            ),
            log_level=self.log_level,
        )


_OPTIONS = (
    Option("--clients", int, "viewers to connect (default 2000; a scenario's peak)"),
    Option("--client-port", int, "demo-a's client port, demo-b's is the next (default 3000; "
           "0 = any)"),
    Option("--metrics-port", int, "first metrics port: demo-a's workers, then demo-b's "
           "(default 9100; 0 = any)"),
    Option("--adapter-port", int, "the adapter's HTTPS port (default 6443; 0 = any)"),
    Option("--workers", int, "workers per push server pod (default 4)"),
    Option("--duration", float, "stop after this many seconds (default: until Ctrl-C, or the "
           "scenario's length; 0 = until Ctrl-C)"),
    Option("--scenario", str, f"replay a simulator scenario: {', '.join(SCENARIOS)}"),
    Option("--speed", float, "a scenario's seconds per demo second (default 20)"),
    Option("--move-every", float, "move viewers every N seconds: a shed, then churn "
           "(default 30; 0 = never)"),
    Option("--reconnect-delay", float, "socket.io reconnectionDelay in seconds (default 10)"),
    Option("--reconnect-delay-max", float, "reconnectionDelayMax in seconds (default 20)"),
    Option("--connect-rate", float, "new viewers a second at most (default 500)"),
    Option("--drain-seconds", float, "the push servers' drain on stop (default 3)"),
    Option("--refresh", float, "seconds between two refreshes (default 1)"),
    Option("--agents", int, "load generator processes (default: one per 8000 viewers)"),
    Option("--run-dir", str, "logs, certificate, pods file, pids (default .run/demo)"),
    Option("--log-level", str, "the programs' log level, in their logs (default info)"),
)  # fmt: skip
_RENAMED = {"duration": "duration_seconds", "move_every": "move_every_seconds",
            "reconnect_delay": "reconnect_delay_seconds", "refresh": "refresh_seconds",
            "reconnect_delay_max": "reconnect_delay_max_seconds"}  # fmt: skip


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> DemoSettings:
    parser = options_parser(
        "pushscale demo",
        "Run the whole system on this machine: an embedded Redis, two push server pods, the "
        "adapter over TLS and a few thousand socket.io viewers; show per pod and per worker "
        "what the adapter serves next to what the viewers say.",
        _OPTIONS,
        ENV_PREFIX,
    )
    values = option_values(_OPTIONS, parser.parse_args(list(argv)), environ, ENV_PREFIX)
    settings = DemoSettings(**{_RENAMED.get(k, k): v for k, v in values.items()})
    settings.validate()
    return settings
