"""How every Redis connection of a push server is made: where, as whom, over what (pure).

`pushserver.supervisor` builds one `RedisAccess` from the settings (or from the embedded Redis it
started) and sends it to each worker over the control socket; `pushserver.fanout` (publish and
pub/sub listener) and the supervisor's start-up check open their clients with
`client_options()`, so no connection can be made without the credentials and the CA. Failures
become one line by `describe_failure`, which never contains the password.
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.exceptions import AuthenticationError, ResponseError

from pushkit.logs import redact_url

# The user Redis assumes when a client authenticates with a password alone (`requirepass`).
DEFAULT_USER = "default"


@dataclass(frozen=True)
class RedisAccess:
    """A Redis URL (`redis://`, `rediss://` for TLS, `unix://`; it may hold `user:password@`),
    plus a password from a file and the CA bundle that verifies a TLS server.

    A password is either in the URL or in `password`, never both (`pushserver.settings`
    refuses that): redis-py lets a URL's password win over one given beside it, silently.
    """

    url: str = dataclasses.field(repr=False)  # it may hold the password: see __repr__
    password: str | None = dataclasses.field(default=None, repr=False)
    ca_file: str | None = None

    def __repr__(self) -> str:
        return f"RedisAccess(url={self.redacted_url!r}, ca_file={self.ca_file!r})"

    @property
    def username(self) -> str:
        parts = urlsplit(self.url)
        return unquote(parts.username) if parts.username else DEFAULT_USER

    @property
    def has_password(self) -> bool:
        return self.password is not None or urlsplit(self.url).password is not None

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme.lower() in ("rediss", "valkeys")

    @property
    def where(self) -> str:
        """`host:port` or the unix socket's path: for messages, never with credentials."""
        parts = urlsplit(self.url)
        if parts.scheme.lower() == "unix":
            return parts.path
        host = parts.hostname or "localhost"
        return f"{host}:{parts.port or 6379}"

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for `redis.asyncio.Redis.from_url(self.url, ...)`."""
        options: dict[str, Any] = {}
        if self.password is not None:
            options["password"] = self.password
        if self.ca_file is not None:
            options["ssl_ca_certs"] = self.ca_file
        return options

    def to_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RedisAccess:
        return cls(url=str(raw["url"]), password=raw.get("password"), ca_file=raw.get("ca_file"))

    def scrub(self, text: str) -> str:
        """`text` with the password replaced, for exception texts we did not write."""
        for secret in (self.password, urlsplit(self.url).password):
            if secret:
                text = text.replace(secret, "***")
        return text


def describe_failure(access: RedisAccess, exc: BaseException) -> str:
    """One line saying why a Redis connection failed and what to check; no secret in it.

    Matched on redis-py's exception classes and Redis's own error texts (`WRONGPASS`,
    `NOAUTH`, "without any password configured"), which are stable across Redis and Valkey.
    """
    text = access.scrub(str(exc)).strip() or type(exc).__name__
    where, user = access.where, access.username
    # redis-py wraps the socket's error; the TLS verdict is the one worth saying.
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"TLS: the certificate of Redis at {where} did not verify against "
            f"{access.ca_file or 'the system CAs'} ({cause.verify_message})"
        )
    if isinstance(cause, ssl.SSLError):
        return f"TLS with Redis at {where} failed ({access.scrub(cause.reason or str(cause))})"
    if isinstance(exc, AuthenticationError | ResponseError):
        lowered = text.lower()
        if "without any password configured" in lowered or "no password is set" in lowered:
            return f"Redis at {where} has no password set, but a password was given for {user}"
        if not access.has_password:
            return (
                f"Redis at {where} requires a password (give --redis-password-file, "
                "or user:password in --redis-url)"
            )
        if isinstance(exc, AuthenticationError) or "wrongpass" in lowered:
            return f"Redis refused the password for user {user} at {where}"
        if "noperm" in lowered:
            return f"Redis user {user} at {where} may not do this ({text})"
    return f"Redis at {access.redacted_url} is unreachable: {text}"
