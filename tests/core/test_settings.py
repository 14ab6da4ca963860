"""settings: flags, their environment twins, and validation."""

from __future__ import annotations

import pytest

from pushserver.settings import ServerSettings, SettingsError, parse_settings


def test_defaults_follow_the_seed():
    settings = parse_settings([], {})
    assert (settings.workers, settings.port, settings.metrics_port) == (4, 3000, 9100)
    assert settings.redis_url is None and settings.publish_token is None
    assert (settings.drain_seconds, settings.recommended_connections) == (20.0, 12_500)


def test_every_flag_has_an_environment_twin_and_the_flag_wins():
    env = {
        "PUSHSCALE_WORKERS": "3",
        "PUSHSCALE_PORT": "4000",
        "PUSHSCALE_REDIS_URL": "redis://r:6379/0",
        "PUSHSCALE_PUBLISH_TOKEN": "t" * 16,
        "PUSHSCALE_DRAIN_SECONDS": "7.5",
        "PUSHSCALE_CORS_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "PUSHSCALE_EVENT_RATE": "2.5",
    }
    settings = parse_settings(["--workers", "5"], env)
    assert settings.workers == 5
    assert settings.port == 4000
    assert settings.redis_url == "redis://r:6379/0"
    assert settings.publish_token == "t" * 16
    assert settings.drain_seconds == 7.5
    assert settings.cors_allowed_origins == ("https://a.example", "https://b.example")
    assert settings.event_rate_per_second == 2.5


def test_token_file(tmp_path):
    token = tmp_path / "token"
    token.write_text("  abcdefghijklmnopqrstuvwxyz\n")
    assert parse_settings(["--publish-token-file", str(token)], {}).publish_token == (
        "abcdefghijklmnopqrstuvwxyz"
    )


def test_the_token_is_not_in_the_repr():
    settings = parse_settings([], {"PUSHSCALE_PUBLISH_TOKEN": "sekret-sekret-sekret"})
    assert "sekret" not in repr(settings)


def test_settings_survive_the_trip_to_a_worker():
    settings = parse_settings(["--cors-allowed-origins", "https://x.example"], {})
    assert ServerSettings.from_json(settings.to_json()) == settings


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--workers", "65"], {}, "between 1 and 64"),
        (["--metrics-port", "65535", "--workers", "2"], {}, "runs past port 65535"),
        (["--port", "9101", "--metrics-port", "9100"], {}, "falls inside the metrics ports"),
        (["--max-payload-bytes", "10"], {}, "at least 256"),
        (["--event-rate", "0"], {}, "--event-rate must be > 0"),
        (["--log-level", "loud"], {}, "--log-level must be one of"),
        (["--publish-token", "x" * 16], {"PUSHSCALE_PUBLISH_TOKEN_FILE": "/t"}, "not both"),
        ([], {"PUSHSCALE_PORT": "http"}, "PUSHSCALE_PORT: invalid value 'http'"),
        (["--ping-interval", "0"], {}, "--ping-interval must be between 1 and 600"),
        (["--ping-interval", "5", "--ping-timeout", "5"], {}, "below --ping-interval"),
    ],
    ids=[
        "too-many-workers",
        "metrics-past-65535",
        "port-clash",
        "tiny-payload",
        "zero-rate",
        "log-level",
        "token-twice",
        "env-not-int",
        "no-heartbeat",
        "timeout-not-below-interval",
    ],
)
def test_invalid_settings(argv, env, message):
    with pytest.raises(SettingsError, match=message):
        parse_settings(argv, env)


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, True),
        (["--no-allow-eio3"], {}, False),
        ([], {"PUSHSCALE_ALLOW_EIO3": "false"}, False),
        (["--allow-eio3"], {"PUSHSCALE_ALLOW_EIO3": "false"}, True),
    ],
    ids=["default-on", "flag-off", "variable-off", "flag-wins"],
)
def test_allow_eio3(argv: list[str], environ: dict[str, str], expected: bool) -> None:
    assert parse_settings(argv, environ).allow_eio3 is expected
