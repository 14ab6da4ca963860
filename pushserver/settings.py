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
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pushkit.options import (
    Option,
    SettingsError,
    check_log_level,
    comma_list,
    option_values,
    options_parser,
    read_secret_file,
    switch,
)

ENV_PREFIX = "PUSHSCALE_"
__all__ = ["ENV_PREFIX", "ServerSettings", "SettingsError", "parse_settings"]


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
    # Not in the repr: it may carry a password.
    redis_url: str | None = dataclasses.field(default=None, repr=False)
    # From --redis-password-file only: a password flag would show in `ps`.
    redis_password: str | None = dataclasses.field(default=None, repr=False)
    redis_ca_file: str | None = None
    publish_token: str | None = dataclasses.field(default=None, repr=False)
    pod_name: str = dataclasses.field(default_factory=socket.gethostname)
    # The only client → server messages are tiny (`joinByGameId {gameId}`); 16 KiB leaves room
    # for custom events while keeping a hostile client from making a worker buffer megabytes.
    max_payload_bytes: int = 16 * 1024
    max_publish_bytes: int = 1024 * 1024
    # Per-connection token bucket: a real viewer sends a handful of events a minute.
    event_rate_per_second: float = 20.0
    event_burst: int = 40
    # An engine.io session must connect the socket.io namespace within this (socket.io's own
    # `connectTimeout`), so a transport that never becomes a socket cannot sit in a slot.
    connect_timeout_seconds: float = 45.0
    # socket.io's pingInterval and pingTimeout (its defaults): a dead client is found within
    # their sum. Whole seconds, the heartbeat's timer wheel has one slot a second.
    ping_interval_seconds: int = 25
    ping_timeout_seconds: int = 20
    # A client-port connection must finish its request headers within this; slowloris-style
    # connections otherwise cost an fd each, invisibly, for as long as the client likes.
    header_timeout_seconds: float = 10.0
    # Connections still speaking HTTP (not yet websockets) per worker port; beyond it, 503.
    # Four seconds of the seed's 4000/s burst spread over 4 workers: a worker that stalls for
    # a moment under a connect burst must not turn it into 503s (bench/seed.py burst saw that
    # at 1024), while a slowloris client still holds a bounded, visible number of files.
    max_http_connections: int = 4096
    # Game rooms one socket may be in at once: a viewer follows a handful of games.
    max_rooms_per_socket: int = 50
    # Paced drain on SIGTERM: a pod's sockets reconnect over this window, not in one burst
    # (seed §1). Keep terminationGracePeriodSeconds above preStop + this + a few seconds.
    drain_seconds: float = 20.0
    # Rebalancing (seed §2): a worker above `recommended_connections` sheds its newest sockets
    # down to `recommended_connections - shed_buffer`, one every `shed_interval_ms` (the seed's
    # 5 ms). A quarter above the HPA's 10k per worker: shedding at the target itself would, once
    # every pod is above it, churn clients the HPA then never sees, so it would not scale up
    # (`pushscale simulate`, docs/controller.md).
    recommended_connections: int = 12_500
    shed_buffer: int = 100
    shed_interval_ms: float = 5.0
    # Overload protection: above this a worker answers new websockets with HTTP 503.
    max_connections: int = 15_000
    admin_token: str | None = dataclasses.field(default=None, repr=False)
    cors_allowed_origins: tuple[str, ...] = ("*",)
    # engine.io v3 clients (socket.io-client 2.x, what the seed's apps ship) are served unless
    # turned off, as Node's socket.io does with `allowEIO3`.
    allow_eio3: bool = True
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
        for flag, seconds in (
            ("--connect-timeout", self.connect_timeout_seconds),
            ("--header-timeout", self.header_timeout_seconds),
        ):
            if not 0 < seconds <= 3600:
                raise SettingsError(f"{flag} must be more than 0 and at most 3600 seconds")
        if not 1 <= self.ping_interval_seconds <= 600:
            raise SettingsError("--ping-interval must be between 1 and 600 seconds")
        if not 1 <= self.ping_timeout_seconds < self.ping_interval_seconds:
            raise SettingsError(
                "--ping-timeout must be at least 1 second and below --ping-interval "
                f"({self.ping_interval_seconds} s)"
            )
        if self.max_http_connections < 1:
            raise SettingsError("--max-http-connections must be at least 1")
        if self.max_rooms_per_socket < 1:
            raise SettingsError("--max-rooms-per-socket must be at least 1")
        for what, token in (("publish", self.publish_token), ("admin", self.admin_token)):
            if token is not None and len(token) < 16:
                raise SettingsError(f"the {what} token must be at least 16 characters long")
        if self.drain_seconds < 0:
            raise SettingsError("--drain-seconds must be 0 or more")
        if self.recommended_connections < 1 or self.max_connections < 1:
            raise SettingsError("--recommended-connections and --max-connections must be >= 1")
        if not 0 <= self.shed_buffer < self.recommended_connections:
            raise SettingsError("--shed-buffer must be >= 0 and below --recommended-connections")
        if self.shed_interval_ms < 0:
            raise SettingsError("--shed-interval-ms must be 0 or more")
        check_log_level(self.log_level)
        self._validate_redis()

    def _validate_redis(self) -> None:
        if self.redis_url is None:
            if self.redis_password is not None or self.redis_ca_file is not None:
                raise SettingsError(
                    "--redis-password-file and --redis-ca-file need a --redis-url "
                    "(the embedded Redis makes its own password and has no TLS)"
                )
            return
        url = urlsplit(self.redis_url)
        if self.redis_password is not None and url.password is not None:
            # redis-py would let the URL's password win without a word.
            raise SettingsError("give the Redis password in --redis-url or a file, not both")
        if self.redis_ca_file is not None:
            if url.scheme.lower() not in ("rediss", "valkeys"):
                raise SettingsError("--redis-ca-file needs a rediss:// --redis-url (TLS)")
            if not os.access(self.redis_ca_file, os.R_OK):
                raise SettingsError(f"cannot read the Redis CA file {self.redis_ca_file}")

    def metrics_port_of(self, worker: int) -> int:
        return self.metrics_port + worker

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerSettings:
        raw: dict[str, Any] = json.loads(text)
        raw["cors_allowed_origins"] = tuple(raw["cors_allowed_origins"])
        return cls(**raw)


_OPTIONS = (
    Option("--workers", int, "worker processes sharing the client port (default 4)"),
    Option("--host", str, "address to listen on (default 0.0.0.0)"),
    Option("--port", int, "socket.io client port shared by all workers (default 3000; 0 = any)"),
    Option("--metrics-port", int, "worker i serves /metrics on this port + i (default 9100)"),
    Option(
        "--redis-url",
        str,
        "Redis/Valkey URL (rediss:// for TLS; user:password@ allowed); "
        "without it an embedded valkey-server starts",
    ),
    Option("--redis-password-file", str, "file holding the Redis password (user in --redis-url)"),
    Option("--redis-ca-file", str, "CA bundle that verifies a rediss:// server's certificate"),
    Option("--publish-token", str, "bearer token for POST /publish (prefer the env variable)"),
    Option("--publish-token-file", str, "file holding the publish token"),
    Option("--pod-name", str, "name reported in metrics and logs (default: the host name)"),
    Option("--max-payload-bytes", int, "largest client message in bytes (default 16384)"),
    Option("--max-publish-bytes", int, "largest POST /publish body in bytes (default 1 MiB)"),
    Option("--event-rate", float, "events per second one client may send (default 20)"),
    Option("--event-burst", int, "events one client may send in a burst (default 40)"),
    Option("--connect-timeout", float, "close a session that has no socket.io connect (45 s)"),
    Option("--ping-interval", int, "seconds between heartbeats (socket.io's pingInterval, 25)"),
    Option("--ping-timeout", int, "seconds a heartbeat may go unanswered (pingTimeout, 20)"),
    Option("--header-timeout", float, "close an HTTP connection without headers by then (10 s)"),
    Option("--max-http-connections", int, "not-yet-websocket connections per port (4096)"),
    Option("--max-rooms-per-socket", int, "games one socket may be in at once (default 50)"),
    Option("--drain-seconds", float, "spread a drain's disconnects over this long (default 20)"),
    Option("--recommended-connections", int, "a worker sheds above this (default 12500)"),
    Option("--shed-buffer", int, "shed this many more than the excess (default 100)"),
    Option("--shed-interval-ms", float, "pause between two shed sockets (default 5)"),
    Option("--max-connections", int, "refuse new websockets (503) above this (default 15000)"),
    Option("--admin-token", str, "bearer token for POST /admin/shed on the metrics ports"),
    Option("--admin-token-file", str, "file holding the admin token"),
    Option("--cors-allowed-origins", comma_list, "comma-separated allowed Origins (default *)"),
    Option(
        "--allow-eio3",
        switch,
        "serve engine.io v3 / socket.io 2.x (on; --no-allow-eio3)",
    ),
    Option("--log-level", str, "debug, info, warning or error (default info)"),
    Option("--ready-file", str, "write the bound ports here as JSON once every worker is ready"),
)

# Options whose value lands in a differently named settings field.
_RENAMED = {
    "event_rate": "event_rate_per_second",
    "connect_timeout": "connect_timeout_seconds",
    "ping_interval": "ping_interval_seconds",
    "ping_timeout": "ping_timeout_seconds",
    "header_timeout": "header_timeout_seconds",
}


def build_parser() -> argparse.ArgumentParser:
    return options_parser(
        "pushscale server",
        "Run the instrumented socket.io push server: a supervisor and N workers sharing one "
        "client port, each worker with its own /metrics.",
        _OPTIONS,
        ENV_PREFIX,
    )


def settings_from_namespace(
    namespace: argparse.Namespace, environ: Mapping[str, str]
) -> ServerSettings:
    values = option_values(_OPTIONS, namespace, environ, ENV_PREFIX)
    for token in ("publish_token", "admin_token"):
        token_file = values.pop(f"{token}_file", None)
        what = token.replace("_", " ")
        if token_file is not None:
            if token in values:
                raise SettingsError(f"give the {what} or a {what} file, not both")
            values[token] = read_secret_file(token_file, what)
        if values.get(token) == "":
            values[token] = None
    password_file = values.pop("redis_password_file", None)
    if password_file is not None:
        values["redis_password"] = read_secret_file(password_file, "Redis password")
    for old, new in _RENAMED.items():
        if old in values:
            values[new] = values.pop(old)
    settings = ServerSettings(**values)
    settings.validate()
    return settings


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> ServerSettings:
    return settings_from_namespace(build_parser().parse_args(list(argv)), environ)
