"""Settings of `pushscale controller`: one typed, validated object, built once at start-up.

`adapter.controller.cli` calls `parse_settings(argv, environ)` and passes the result down to
the reconciler, the leader election and the rebalancer. Every flag `--foo-bar` has an
environment twin `PUSHSCALE_CONTROLLER_FOO_BAR`; a flag wins. The admin token for shed
requests is read from its file here, once, and never printed.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from adapter.controller.lease import LeaseTiming
from pushkit.options import (
    Option,
    SettingsError,
    check_log_level,
    option_values,
    options_parser,
    read_secret_file,
    switch,
)

ENV_PREFIX = "PUSHSCALE_CONTROLLER_"
# Where a pod finds its own namespace (the service account's mounted token volume).
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
__all__ = ["ControllerSettings", "SettingsError", "parse_settings"]


@dataclass(frozen=True)
class ControllerSettings:
    kubeconfig: str | None = None
    # The HPA's own sync period: deciding faster would only see the same adapter values again.
    sync_seconds: float = 15.0
    dry_run: bool = False
    namespace: str = ""  # empty: HPAs in every namespace
    lease_name: str = "pushscale-controller"
    lease_namespace: str = "default"
    lease_duration_seconds: float = 15.0
    lease_renew_deadline_seconds: float = 10.0
    lease_retry_period_seconds: float = 2.0
    rebalance: bool = False
    # A pod is asked to shed only above the fair share plus this much: closing sockets costs
    # their clients a reconnect, which a 10% imbalance is not worth.
    rebalance_slack: float = 0.1
    admin_token: str | None = dataclasses.field(default=None, repr=False)
    metrics_port: int = 9200
    metrics_bind_address: str = "0.0.0.0"
    # An unchanged decision is posted again as an Event this often, so `kubectl describe hpa`
    # (which shows events of the last hour) always holds the current one.
    event_repeat_seconds: float = 300.0
    log_level: str = "info"

    @property
    def lease_timing(self) -> LeaseTiming:
        return LeaseTiming(
            self.lease_duration_seconds,
            self.lease_renew_deadline_seconds,
            self.lease_retry_period_seconds,
        )

    def validate(self) -> None:
        if self.sync_seconds <= 0:
            raise SettingsError("--sync-seconds must be > 0")
        try:
            self.lease_timing  # noqa: B018 - LeaseTiming validates itself
        except ValueError as exc:
            raise SettingsError(
                f"--lease-retry-period-seconds < --lease-renew-deadline-seconds < "
                f"--lease-duration-seconds, all > 0: {exc}"
            ) from exc
        if not self.lease_name or not self.lease_namespace:
            raise SettingsError("--lease-name and --lease-namespace must not be empty")
        if self.rebalance and not self.admin_token:
            raise SettingsError(
                "--rebalance needs --admin-token-file: the push server refuses shed requests "
                "without its admin token"
            )
        if not 0 <= self.rebalance_slack <= 10:
            raise SettingsError("--rebalance-slack must be a fraction from 0 to 10")
        if not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"--metrics-port must be a TCP port, not {self.metrics_port}")
        if self.event_repeat_seconds < 0:
            raise SettingsError("--event-repeat-seconds must be >= 0")
        check_log_level(self.log_level)


_OPTIONS = (
    Option("--kubeconfig", str, "kubeconfig file (default: in-cluster config)"),
    Option("--sync-seconds", float, "decide every N seconds (default 15, the HPA's period)"),
    Option("--dry-run", switch, "decide, log and post Events, but never patch pods or scales"),
    Option("--namespace", str, "HPAs of this namespace only (default: every namespace)"),
    Option("--lease-name", str, "Lease for leader election (default pushscale-controller)"),
    Option("--lease-namespace", str,
           "namespace of the Lease (default: the pod's own namespace, else default)"),
    Option("--lease-duration-seconds", float, "how long a Lease holds (default 15)"),
    Option("--lease-renew-deadline-seconds", float,
           "stop leading when not renewed this long (default 10)"),
    Option("--lease-retry-period-seconds", float, "renew or try to acquire every N s (default 2)"),
    Option("--rebalance", switch,
           "after a scale-up, ask pods above the fair share to shed their excess"),
    Option("--rebalance-slack", float, "share above the fair share a pod may keep (default 0.1)"),
    Option("--admin-token-file", str, "file holding the push servers' admin token (shedding)"),
    Option("--metrics-port", int, "plain HTTP port of the controller's /metrics (default 9200)"),
    Option("--metrics-bind-address", str, "address of /metrics (default 0.0.0.0)"),
    Option("--event-repeat-seconds", float,
           "post an unchanged decision's Event again after N s (default 300)"),
    Option("--log-level", str, "debug, info, warning or error (default info)"),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    return options_parser(
        "pushscale controller",
        "Scale push server Deployments down with hysteresis that survives reconnect storms, for "
        'HPAs annotated pushscale.io/hysteresis: "true" (their scale-down disabled).',
        _OPTIONS,
        ENV_PREFIX,
    )


def own_namespace(path: str = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """The pod's namespace, or `default` outside a cluster."""
    try:
        return Path(path).read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


def settings_from_namespace(
    namespace: argparse.Namespace,
    environ: Mapping[str, str],
    namespace_file: str = SERVICE_ACCOUNT_NAMESPACE,
) -> ControllerSettings:
    values = option_values(_OPTIONS, namespace, environ, ENV_PREFIX)
    token_file = values.pop("admin_token_file", None)
    if token_file:
        values["admin_token"] = read_secret_file(token_file, "admin token")
    if "lease_namespace" not in values:
        values["lease_namespace"] = own_namespace(namespace_file)
    settings = ControllerSettings(**values)
    settings.validate()
    return settings


def parse_settings(
    argv: Sequence[str],
    environ: Mapping[str, str],
    namespace_file: str = SERVICE_ACCOUNT_NAMESPACE,
) -> ControllerSettings:
    return settings_from_namespace(build_parser().parse_args(list(argv)), environ, namespace_file)
