"""redis_access and the Redis flags: credentials and TLS for every connection, one line per
failure with no secret in it."""

from __future__ import annotations

import ssl

import pytest
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from pushkit.logs import redact_url
from pushserver.redis_access import RedisAccess, describe_failure
from pushserver.settings import SettingsError, build_parser, parse_settings

SECRET = "hunter2-hunter2-hunter2"


@pytest.mark.parametrize(
    ("access", "where", "user", "tls"),
    [
        (RedisAccess("redis://r.ns.svc:6379/0", SECRET), "r.ns.svc:6379", "default", False),
        (RedisAccess("redis://pushscale@r/0", SECRET), "r:6379", "pushscale", False),
        (RedisAccess(f"rediss://app:{SECRET}@r:6380/0"), "r:6380", "app", True),
        (RedisAccess("unix:///tmp/d/redis.sock", SECRET), "/tmp/d/redis.sock", "default", False),
    ],
    ids=["password-file", "acl-user", "tls-with-url-password", "unix-socket"],
)
def test_where_and_as_whom(access, where, user, tls):
    assert (access.where, access.username, access.tls, access.has_password) == (
        where,
        user,
        tls,
        True,
    )
    assert SECRET not in access.redacted_url
    assert SECRET not in repr(access)


def test_client_options_carry_the_password_and_the_ca():
    access = RedisAccess("rediss://r:6380/0", SECRET, "/etc/ca.pem")
    assert access.client_options() == {"password": SECRET, "ssl_ca_certs": "/etc/ca.pem"}
    assert RedisAccess("redis://r/0").client_options() == {}


def test_the_access_survives_the_trip_to_a_worker():
    access = RedisAccess("rediss://u@r:6380/0", SECRET, "/ca.pem")
    assert RedisAccess.from_dict(access.to_dict()) == access


def _tls_failure() -> Exception:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "unable to get local issuer certificate"
    error = RedisConnectionError("Error connecting")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("access", "exc", "line"),
    [
        (
            RedisAccess("redis://r:6379/0", SECRET),
            AuthenticationError("invalid username-password pair or user is disabled."),
            "Redis refused the password for user default at r:6379",
        ),
        (
            RedisAccess("redis://pushscale@r:6379/0", SECRET),
            AuthenticationError("invalid username-password pair or user is disabled."),
            "Redis refused the password for user pushscale at r:6379",
        ),
        (
            RedisAccess("redis://r:6379/0"),
            AuthenticationError("Authentication required."),
            "Redis at r:6379 requires a password (give --redis-password-file, "
            "or user:password in --redis-url)",
        ),
        (
            RedisAccess("redis://r:6379/0", SECRET),
            AuthenticationError(
                "AUTH <password> called without any password configured for the default user."
            ),
            "Redis at r:6379 has no password set, but a password was given for default",
        ),
        (
            RedisAccess("rediss://r:6380/0", SECRET, "/ca.pem"),
            _tls_failure(),
            "TLS: the certificate of Redis at r:6380 did not verify against /ca.pem "
            "(unable to get local issuer certificate)",
        ),
        (
            RedisAccess(f"redis://:{SECRET}@r:6379/0"),
            RedisConnectionError(f"Error 111 connecting to r:6379 as {SECRET}."),
            "Redis at redis://:***@r:6379/0 is unreachable: Error 111 connecting to r:6379 as ***.",
        ),
        (
            RedisAccess("redis://pushscale@r:6379/0", SECRET),
            ResponseError("NOPERM User pushscale has no permissions to run the 'publish' command"),
            "Redis user pushscale at r:6379 may not do this (NOPERM User pushscale has no "
            "permissions to run the 'publish' command)",
        ),
    ],
    ids=["wrong-password", "wrong-acl-password", "no-password-given", "no-password-set", "tls",
         "unreachable-scrubbed", "acl-forbids"],
)  # fmt: skip
def test_every_failure_is_one_line_without_the_secret(access, exc, line):
    described = describe_failure(access, exc)
    assert described == line
    assert SECRET not in described and "\n" not in described


def test_the_password_comes_from_a_file_never_a_flag(tmp_path):
    secret = tmp_path / "password"
    secret.write_text(SECRET + "\n")
    settings = parse_settings(
        ["--redis-url", "redis://pushscale@r:6379/0", "--redis-password-file", str(secret)], {}
    )
    assert settings.redis_password == SECRET
    assert SECRET not in repr(settings)
    environ = {"PUSHSCALE_REDIS_PASSWORD_FILE": str(secret), "PUSHSCALE_REDIS_URL": "redis://r/0"}
    assert parse_settings([], environ).redis_password == SECRET
    flags = {a for action in build_parser()._actions for a in action.option_strings}
    assert "--redis-password" not in flags, "a password flag would show in ps"


def test_the_ca_file_has_an_environment_twin(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    environ = {"PUSHSCALE_REDIS_CA_FILE": str(ca), "PUSHSCALE_REDIS_URL": "rediss://r:6380/0"}
    assert parse_settings([], environ).redis_ca_file == str(ca)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--redis-url", f"redis://:{SECRET}@r/0", "--redis-password-file", "{file}"],
         "in --redis-url or a file, not both"),
        (["--redis-password-file", "{file}"], "need a --redis-url"),
        (["--redis-url", "redis://r/0", "--redis-ca-file", "{file}"], "needs a rediss://"),
        (["--redis-url", "rediss://r/0", "--redis-ca-file", "/nonexistent/ca.pem"],
         "cannot read the Redis CA file"),
        (["--redis-url", "redis://r/0", "--redis-password-file", "/nonexistent"],
         "cannot read the Redis password file"),
    ],
    ids=["password-twice", "password-without-url", "ca-without-tls", "ca-missing",
         "password-file-missing"],
)  # fmt: skip
def test_invalid_redis_settings(argv, message, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    with pytest.raises(SettingsError, match=message) as caught:
        parse_settings([a.replace("{file}", str(secret)) for a in argv], {})
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("unix:///tmp/r.sock?db=0&password=pw", "unix:///tmp/r.sock?db=0&password=***"),
        ("redis://u:pw@r/0?password=pw", "redis://u:***@r/0?password=***"),
        ("rediss://u@r:6380/0", "rediss://u@r:6380/0"),
    ],
    ids=["query-password", "both", "user-only"],
)
def test_redact_url_also_hides_a_query_password(url, shown):
    assert redact_url(url) == shown


def test_no_password_in_the_settings_repr(tmp_path):
    settings = parse_settings(["--redis-url", f"redis://u:{SECRET}@r/0"], {})
    assert SECRET not in repr(settings)
