"""Settings of `pushscale adapter`: one typed, validated object, built once at start-up.

`adapter.cli` calls `parse_settings(argv, environ)` and hands the result to `adapter.server`.
Every flag `--foo-bar` has an environment twin `PUSHSCALE_ADAPTER_FOO_BAR`; a flag wins.
The TLS and request-header flags carry the names k8s.io/apiserver gives them, so manifests
written for prometheus-adapter read the same.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pushkit.options import (
    Option,
    SettingsError,
    check_log_level,
    comma_list,
    option_values,
    options_parser,
    switch,
)

ENV_PREFIX = "PUSHSCALE_ADAPTER_"
__all__ = ["AdapterSettings", "SettingsError", "parse_settings"]


@dataclass(frozen=True)
class AdapterSettings:
    secure_port: int = 6443
    bind_address: str = "0.0.0.0"
    tls_cert_file: str | None = None
    tls_private_key_file: str | None = None
    # Where a self-signed pair is written when no files are given (an emptyDir in a pod).
    cert_dir: str = "/tmp/pushscale-adapter/certs"
    # Front-proxy (kube-aggregator) client certificates. Without these flags the adapter reads
    # kube-system/extension-apiserver-authentication, as k8s.io/apiserver does.
    requestheader_client_ca_file: str | None = None
    requestheader_allowed_names: tuple[str, ...] = ()
    # Client certificates of users (CN = user, O = groups); the same ConfigMap's
    # client-ca-file without this flag.
    client_ca_file: str | None = None
    kubeconfig: str | None = None
    static_pods: str | None = None
    authentication_skip: bool = False
    # A value is at most one interval plus one round (bounded by the scrape timeout) old, so
    # every value served stays under max_value_age_seconds (2 s); a round every half second
    # keeps the usual value under 1 s old (bench/adapter.py: age p99 ~1.45 s at a round a
    # second, 400 endpoints).
    scrape_interval_seconds: float = 0.5
    max_value_age_seconds: float = 2.0
    scrape_timeout_seconds: float = 1.0
    max_scrape_bytes: int = 1024 * 1024
    # Counter rates: prometheus-adapter's default rules use rate(...[5m]) over 30 s scrapes;
    # one minute of rounds already holds a dozen points (adapter.rounds.spacing_seconds).
    rate_window_seconds: float = 60.0
    log_level: str = "info"
    ready_file: str | None = None

    def validate(self) -> None:
        if not 0 <= self.secure_port <= 65535:
            raise SettingsError(
                f"--secure-port must be a TCP port (0-65535), not {self.secure_port}"
            )
        if (self.tls_cert_file is None) != (self.tls_private_key_file is None):
            raise SettingsError("give both --tls-cert-file and --tls-private-key-file, or neither")
        if self.scrape_interval_seconds <= 0 or self.scrape_timeout_seconds <= 0:
            raise SettingsError(
                "--scrape-interval-seconds and --scrape-timeout-seconds must be > 0"
            )
        if self.scrape_interval_seconds + self.scrape_timeout_seconds > self.max_value_age_seconds:
            raise SettingsError(
                "--scrape-interval-seconds + --scrape-timeout-seconds must not exceed "
                f"--max-value-age-seconds ({self.scrape_interval_seconds:g} + "
                f"{self.scrape_timeout_seconds:g} > {self.max_value_age_seconds:g}): "
                "values could be served older than promised"
            )
        if self.rate_window_seconds < 2 * self.scrape_interval_seconds:
            raise SettingsError("--rate-window-seconds must hold at least two scrape intervals")
        if self.max_scrape_bytes < 1024:
            raise SettingsError("--max-scrape-bytes must be at least 1024")
        check_log_level(self.log_level)


_OPTIONS = (
    Option("--secure-port", int, "HTTPS port of the API (default 6443; 0 = any)"),
    Option("--bind-address", str, "address to listen on (default 0.0.0.0)"),
    Option("--tls-cert-file", str, "serving certificate (PEM); reloaded when it changes"),
    Option("--tls-private-key-file", str, "serving key (PEM); reloaded when it changes"),
    Option("--cert-dir", str, "where a self-signed pair is made without the two files above"),
    Option("--requestheader-client-ca-file", str,
           "CA of the aggregator's client certificates (default: read from the cluster)"),
    Option("--requestheader-allowed-names", comma_list,
           "comma-separated common names allowed to set X-Remote-* headers (empty = any)"),
    Option("--client-ca-file", str,
           "CA of user client certificates, CN = user, O = groups (default: read from the "
           "cluster)"),
    Option("--kubeconfig", str, "kubeconfig file (default: in-cluster config)"),
    Option("--static-pods", str, "YAML file of pods to scrape, instead of the pod watch"),
    Option("--authentication-skip", switch,
           "serve without authentication or authorization (a laptop only)"),
    Option("--scrape-interval-seconds", float, "a scrape round every N seconds (default 1)"),
    Option("--max-value-age-seconds", float, "never serve a value older than this (default 2)"),
    Option("--scrape-timeout-seconds", float, "per worker (default 1)"),
    Option("--max-scrape-bytes", int, "largest /metrics body read from a worker (default 1 MiB)"),
    Option("--rate-window-seconds", float, "window of counter rates (default 60)"),
    Option("--log-level", str, "debug, info, warning or error (default info)"),
    Option("--ready-file", str, "write the bound port here as JSON once serving"),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    return options_parser(
        "pushscale adapter",
        "Serve the Kubernetes custom metrics API (custom.metrics.k8s.io v1beta1 and v1beta2) "
        "with exact per-pod sums over every push server worker.",
        _OPTIONS,
        ENV_PREFIX,
    )


def settings_from_namespace(
    namespace: argparse.Namespace, environ: Mapping[str, str]
) -> AdapterSettings:
    settings = AdapterSettings(**option_values(_OPTIONS, namespace, environ, ENV_PREFIX))
    settings.validate()
    return settings


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> AdapterSettings:
    return settings_from_namespace(build_parser().parse_args(list(argv)), environ)


def replace(settings: AdapterSettings, **changes: object) -> AdapterSettings:
    """A validated copy with some fields changed (tests and the demo)."""
    changed = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    changed.validate()
    return changed
