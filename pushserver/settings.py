"""Settings of `pushscale server`: one typed, validated object, built once at start-up.

`pushserver.cli` calls `parse_settings(argv, environ)`; the supervisor passes the result to every
worker as JSON (`to_json` / `from_json`). Nothing else in the package reads the environment or
the command line. Every flag `--foo-bar` has an environment twin `PUSHSCALE_FOO_BAR`; a flag wins
over its variable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "PUSHSCALE_"


class SettingsError(ValueError):
    """A flag, an environment variable or a combination of them is invalid."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything a supervisor and its workers need to know.

    Ports: clients connect to `port` (shared by every worker); worker `i` serves its own
    metrics on `metrics_port + i`.
    """

    workers: int = 4
    host: str = "0.0.0.0"
    port: int = 3000
    metrics_port: int = 9100
    redis_url: str | None = None
    publish_token: str | None = dataclasses.field(default=None, repr=False)
    pod_name: str = dataclasses.field(default_factory=socket.gethostname)
    # The only client → server messages are tiny (`joinByGameId {gameId}`); 16 KiB leaves room
    # for custom events while keeping a hostile client from making a worker buffer megabytes.
    max_payload_bytes: int = 16 * 1024
    max_publish_bytes: int = 1024 * 1024
    # Per-connection token bucket: a real viewer sends a handful of events a minute.
    event_rate_per_second: float = 20.0
    event_burst: int = 40
    allow_polling: bool = False
    cors_allowed_origins: tuple[str, ...] = ("*",)
    log_level: str = "info"
    ready_file: str | None = None

    def validate(self) -> None:
        if not 1 <= self.workers <= 64:
            raise SettingsError(f"--workers must be between 1 and 64, not {self.workers}")
        for flag, port in (("--port", self.port), ("--metrics-port", self.metrics_port)):
            if not 0 <= port <= 65535:
                raise SettingsError(f"{flag} must be a TCP port (0-65535), not {port}")
        if self.metrics_port and self.metrics_port + self.workers - 1 > 65535:
            raise SettingsError(
                f"--metrics-port {self.metrics_port} + {self.workers} workers runs past port 65535"
            )
        if self.port and self.metrics_port <= self.port < self.metrics_port + self.workers:
            raise SettingsError(
                f"--port {self.port} falls inside the metrics ports "
                f"{self.metrics_port}-{self.metrics_port + self.workers - 1}"
            )
        if self.max_payload_bytes < 256:
            raise SettingsError("--max-payload-bytes must be at least 256")
        if self.max_publish_bytes < 256:
            raise SettingsError("--max-publish-bytes must be at least 256")
        if self.event_rate_per_second <= 0 or self.event_burst < 1:
            raise SettingsError("--event-rate must be > 0 and --event-burst at least 1")
        if self.publish_token is not None and len(self.publish_token) < 16:
            raise SettingsError("the publish token must be at least 16 characters long")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")

    def metrics_port_of(self, worker: int) -> int:
        return self.metrics_port + worker

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerSettings:
        raw: dict[str, Any] = json.loads(text)
        raw["cors_allowed_origins"] = tuple(raw["cors_allowed_origins"])
        return cls(**raw)


LOG_LEVELS = ("debug", "info", "warning", "error")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, not {text!r}")


def _origins(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class _Option:
    flag: str
    convert: Callable[[str], Any]
    help: str

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


_OPTIONS = (
    _Option("--workers", int, "worker processes sharing the client port (default 4)"),
    _Option("--host", str, "address to listen on (default 0.0.0.0)"),
    _Option("--port", int, "socket.io client port shared by all workers (default 3000; 0 = any)"),
    _Option("--metrics-port", int, "worker i serves /metrics on this port + i (default 9100)"),
    _Option("--redis-url", str, "Redis/Valkey URL; without it an embedded valkey-server starts"),
    _Option("--publish-token", str, "bearer token for POST /publish (prefer the env variable)"),
    _Option("--publish-token-file", str, "file holding the publish token"),
    _Option("--pod-name", str, "name reported in metrics and logs (default: the host name)"),
    _Option("--max-payload-bytes", int, "largest client message in bytes (default 16384)"),
    _Option("--max-publish-bytes", int, "largest POST /publish body in bytes (default 1 MiB)"),
    _Option("--event-rate", float, "events per second one client may send (default 20)"),
    _Option("--event-burst", int, "events one client may send in a burst (default 40)"),
    _Option("--allow-polling", _bool, "also accept HTTP long-polling (needs sticky sessions)"),
    _Option("--cors-allowed-origins", _origins, "comma-separated allowed Origins (default *)"),
    _Option("--log-level", str, "debug, info, warning or error (default info)"),
    _Option("--ready-file", str, "write the bound ports here as JSON once every worker is ready"),
)

# Options whose value lands in a differently named settings field.
_RENAMED = {"event_rate": "event_rate_per_second"}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="pushscale server")
    parser.description = (
        "Run the instrumented socket.io push server: a supervisor and N workers sharing one "
        "client port, each worker with its own /metrics. Every flag has an environment twin "
        f"{ENV_PREFIX}<FLAG_NAME>."
    )
    for option in _OPTIONS:
        # Values stay strings here so flags and environment variables share one conversion
        # with one error message (`_convert`).
        parser.add_argument(option.flag, dest=option.dest, help=f"{option.help} [{option.env}]")
    return parser


def _convert(option: _Option, text: str, origin: str) -> Any:
    try:
        return option.convert(text)
    except ValueError as exc:
        raise SettingsError(f"{origin}: invalid value {text!r} ({exc})") from exc


def settings_from_namespace(
    namespace: argparse.Namespace, environ: Mapping[str, str]
) -> ServerSettings:
    values: dict[str, Any] = {}
    for option in _OPTIONS:
        flag_value = getattr(namespace, option.dest, None)
        if flag_value is not None:
            values[option.dest] = _convert(option, flag_value, option.flag)
        elif option.env in environ:
            values[option.dest] = _convert(option, environ[option.env], option.env)
    token_file = values.pop("publish_token_file", None)
    if token_file is not None:
        if "publish_token" in values:
            raise SettingsError("give the publish token or a token file, not both")
        values["publish_token"] = _read_token(token_file)
    if values.get("publish_token") == "":
        values["publish_token"] = None
    for old, new in _RENAMED.items():
        if old in values:
            values[new] = values.pop(old)
    settings = ServerSettings(**values)
    settings.validate()
    return settings


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"cannot read the publish token file {path}: {exc.strerror}") from exc
    if not token:
        raise SettingsError(f"the publish token file {path} is empty")
    return token


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> ServerSettings:
    return settings_from_namespace(build_parser().parse_args(list(argv)), environ)
