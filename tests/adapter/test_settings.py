"""adapter.settings: flags, their PUSHSCALE_ADAPTER_* twins, and what is refused."""

from __future__ import annotations

import pytest

from adapter.settings import AdapterSettings, SettingsError, parse_settings


def test_defaults_are_the_documented_ones():
    settings = parse_settings([], {})
    assert settings == AdapterSettings()
    assert (settings.secure_port, settings.max_value_age_seconds) == (6443, 2.0)
    assert not settings.authentication_skip


def test_environment_twins_and_flags_winning():
    environ = {
        "PUSHSCALE_ADAPTER_SECURE_PORT": "8443",
        "PUSHSCALE_ADAPTER_AUTHENTICATION_SKIP": "true",
        "PUSHSCALE_ADAPTER_REQUESTHEADER_ALLOWED_NAMES": "front-proxy-client, aggregator",
        "PUSHSCALE_ADAPTER_STATIC_PODS": "/etc/pods.yaml",
    }
    settings = parse_settings(["--secure-port", "9443"], environ)
    assert settings.secure_port == 9443
    assert settings.authentication_skip
    assert settings.requestheader_allowed_names == ("front-proxy-client", "aggregator")
    assert settings.static_pods == "/etc/pods.yaml"
    assert parse_settings(["--authentication-skip"], {}).authentication_skip


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--secure-port", "70000"], {}, "--secure-port must be a TCP port"),
        (["--secure-port", "https"], {}, "--secure-port: invalid value 'https'"),
        ([], {"PUSHSCALE_ADAPTER_SCRAPE_TIMEOUT_SECONDS": "soon"},
         "PUSHSCALE_ADAPTER_SCRAPE_TIMEOUT_SECONDS: invalid value 'soon'"),
        ([], {"PUSHSCALE_ADAPTER_AUTHENTICATION_SKIP": "maybe"}, "expected true or false"),
        (["--tls-cert-file", "a.crt"], {}, "give both --tls-cert-file and --tls-private-key-file"),
        (["--scrape-interval-seconds", "2"], {}, "values could be served older than promised"),
        (["--scrape-timeout-seconds", "0"], {}, "--scrape-timeout-seconds must be > 0"),
        (["--rate-window-seconds", "0.9"], {}, "at least two scrape intervals"),
        (["--max-scrape-bytes", "10"], {}, "at least 1024"),
        (["--log-level", "loud"], {}, "--log-level must be one of"),
    ],
    ids=["port-range", "port-not-a-number", "env-not-a-number", "switch-not-a-bool",
         "cert-without-key", "interval-plus-timeout-over-max-age", "zero-timeout",
         "window-too-short", "body-cap-too-small", "log-level"],
)  # fmt: skip
def test_bad_settings_are_refused_with_the_flag_named(argv, environ, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        parse_settings(argv, environ)
