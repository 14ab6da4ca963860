"""`pushscale controller` flags, their environment twins, and the mistakes refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.controller.settings import ControllerSettings, SettingsError, parse_settings
from pushscale.cli import main as pushscale_main


def test_defaults_outside_a_cluster(tmp_path: Path):
    settings = parse_settings([], {}, namespace_file=str(tmp_path / "none"))
    assert settings == ControllerSettings()
    assert settings.lease_timing.renew_deadline_seconds == 10.0


def test_flags_win_over_their_environment_twins(tmp_path: Path):
    token = tmp_path / "admin-token"
    token.write_text("s3cret-admin-token-xxxx\n")
    namespace = tmp_path / "namespace"
    namespace.write_text("push-system")
    settings = parse_settings(
        ["--sync-seconds", "5", "--rebalance", "--admin-token-file", str(token)],
        {"PUSHSCALE_CONTROLLER_SYNC_SECONDS": "30", "PUSHSCALE_CONTROLLER_DRY_RUN": "true"},
        namespace_file=str(namespace),
    )
    assert (settings.sync_seconds, settings.dry_run, settings.rebalance) == (5.0, True, True)
    assert settings.admin_token == "s3cret-admin-token-xxxx"
    assert "s3cret" not in repr(settings)
    assert settings.lease_namespace == "push-system"


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--rebalance"], "--rebalance needs --admin-token-file"),
        (["--sync-seconds", "0"], "--sync-seconds must be > 0"),
        (["--lease-renew-deadline-seconds", "20"], "below the lease duration"),
        (["--lease-retry-period-seconds", "10"], "below the renew deadline"),
        (["--metrics-port", "70000"], "--metrics-port must be a TCP port"),
        (["--log-level", "loud"], "--log-level must be one of"),
        (["--sync-seconds", "soon"], "--sync-seconds: invalid value 'soon'"),
        (["--admin-token-file", "/nonexistent/token"], "cannot read the admin token file"),
    ],
    ids=["rebalance-without-token", "sync-0", "deadline-past-lease", "retry-past-deadline",
         "metrics-port", "log-level", "not-a-number", "token-file-missing"],
)  # fmt: skip
def test_mistakes_are_refused(argv, error, tmp_path: Path):
    with pytest.raises(SettingsError, match=error):
        parse_settings(argv, {}, namespace_file=str(tmp_path / "none"))


def test_a_bad_flag_exits_2_with_one_line(capsys):
    assert pushscale_main(["controller", "--sync-seconds", "-1"]) == 2
    assert capsys.readouterr().err == "pushscale controller: error: --sync-seconds must be > 0\n"
