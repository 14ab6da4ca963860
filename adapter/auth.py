"""Who is asking and may they: delegated authentication and authorization, as k8s.io/apiserver.

The API layer (issue 3) calls `Authenticator.authenticate` with the verified client
certificate (`adapter.tls.client_certificate`) and the request headers, then
`Authorizer.authorize` with the user and `request_attributes(path)`. An aggregated API server
trusts two kinds of caller, as `DelegatingAuthenticatorConfig` does:

* kube-apiserver's front proxy: a client certificate signed by the requestheader CA (and, if
  the list is not empty, with an allowed CN) makes the `X-Remote-*` headers trustworthy. The
  configuration comes from the `kube-system/extension-apiserver-authentication` ConfigMap
  (`request_header_config_from_config_map`).
* a client certificate signed by the cluster's client CA (`client-ca-file`): its CN is the
  user and its O entries the groups, as x509's CommonNameUserConversion makes them;
* anyone else with a bearer token, checked by a TokenReview against the API server.

The TLS layer verifies a client certificate against both CAs and says which of them issued it
(`ClientCert.issuers`): a certificate from the client CA never makes the headers trustworthy,
whatever its CN.

Access is then checked by a SubjectAccessReview. Reviews are the only I/O and are injected
(`KubeApi.create_token_review` / `create_subject_access_review`); everything else is pure.

Errors, mapped once to a `Status` by the API layer (`wire.status(exc.code, str(exc),
exc.details)`)::

    AuthError
    ├── Unauthorized      401  no identity, or one we cannot check (a failed TokenReview too,
    │                          as kube-apiserver's WithAuthentication answers 401 then)
    ├── Forbidden         403  the message kube-apiserver writes, word for word
    └── AuthorizerError   500  the SubjectAccessReview failed: kube-apiserver's WithAuthorization
                               answers InternalError, and "forbidden" would send an operator
                               hunting for a missing RoleBinding
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import unquote

from adapter.errors import clip

log = logging.getLogger(__name__)

Headers = Iterable[tuple[str, str]]
Review = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

AUTHENTICATED_GROUP = "system:authenticated"
ANONYMOUS_USER = "system:anonymous"


class AuthError(Exception):
    code: ClassVar[int] = 500

    def __init__(self, message: str, details: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: Mapping[str, str] = details or {}


class Unauthorized(AuthError):
    code = 401


class Forbidden(AuthError):
    code = 403


class AuthorizerError(AuthError):
    code = 500


class ConfigMapError(ValueError):
    """The extension-apiserver-authentication ConfigMap has a value that does not parse."""


# -- client certificates --------------------------------------------------------------------------

# The two CAs a client certificate may come from, as the TLS layer names its issuer.
FRONT_PROXY_CA = "requestheader-client-ca"
CLIENT_CA = "client-ca"


@dataclass(frozen=True)
class ClientCert:
    """A client certificate the TLS layer verified: its subject, and which of the configured
    CAs (`FRONT_PROXY_CA`, `CLIENT_CA`) issued it."""

    common_name: str
    organizations: tuple[str, ...] = ()
    issuers: frozenset[str] = frozenset()


def user_from_client_cert(cert: ClientCert) -> UserInfo:
    """The user a client-CA certificate names (k8s.io/apiserver x509 CommonNameUserConversion)."""
    if CLIENT_CA not in cert.issuers:
        raise Unauthorized("the client certificate is not signed by the client CA")
    if not cert.common_name:
        raise Unauthorized("the client certificate has no common name")
    return UserInfo(name=cert.common_name, groups=cert.organizations)


# -- the front proxy -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestHeaderConfig:
    # Empty: any certificate signed by the requestheader CA, as Kubernetes does.
    allowed_names: frozenset[str] = frozenset()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    uid_headers: tuple[str, ...] = ()  # requestheader-uid-headers, Kubernetes 1.32+
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)


def _strings(data: Mapping[str, str], key: str) -> tuple[str, ...]:
    # The ConfigMap stores each list as JSON; missing, empty and null all mean "none".
    text = data.get(key, "")
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigMapError(f"{key}: not JSON: {exc}") from exc
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigMapError(f"{key}: expected a JSON list of strings, got {text!r}")
    return tuple(value)


def request_header_config_from_config_map(
    data: Mapping[str, str],
) -> tuple[RequestHeaderConfig, str] | None:
    """The front-proxy settings and CA PEM; None when the cluster has no front proxy set up."""
    ca = data.get("requestheader-client-ca-file", "")
    if not ca.strip():
        return None
    config = RequestHeaderConfig(
        allowed_names=frozenset(_strings(data, "requestheader-allowed-names")),
        username_headers=_strings(data, "requestheader-username-headers"),
        uid_headers=_strings(data, "requestheader-uid-headers"),
        group_headers=_strings(data, "requestheader-group-headers"),
        extra_prefixes=_strings(data, "requestheader-extra-headers-prefix"),
    )
    return config, ca


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _values(headers: list[tuple[str, str]], name: str) -> list[str]:
    wanted = name.lower()
    return [value for key, value in headers if key.lower() == wanted]


def _first(headers: list[tuple[str, str]], names: Iterable[str]) -> str:
    # Go's Header.Get: the first value of each header, the first header with a non-empty one.
    for name in names:
        values = _values(headers, name)
        if values and values[0]:
            return values[0]
    return ""


_MALFORMED_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")


def _unescape_extra_key(key: str) -> str:
    # url.PathUnescape, which leaves the key as it was when an escape is malformed.
    if _MALFORMED_ESCAPE.search(key):
        return key
    try:
        return unquote(key, errors="strict")
    except UnicodeDecodeError:
        return key


def user_from_request_headers(
    cert: ClientCert | None, headers: Headers, config: RequestHeaderConfig
) -> UserInfo:
    """The user the front proxy names (k8s.io/apiserver headerrequest + x509 verifySubject):
    only with a certificate the requestheader CA issued, and an allowed CN if names are set."""
    if cert is None or FRONT_PROXY_CA not in cert.issuers:
        raise Unauthorized("no client certificate from the front proxy")
    if config.allowed_names and cert.common_name not in config.allowed_names:
        allowed = ", ".join(sorted(config.allowed_names))
        raise Unauthorized(
            f"x509: subject with cn={cert.common_name} is not in the allowed list [{allowed}]"
        )
    pairs = list(headers)
    name = _first(pairs, config.username_headers)
    if not name:
        raise Unauthorized(
            f"front-proxy request without a user name in {', '.join(config.username_headers)}"
        )
    groups = [value for header in config.group_headers for value in _values(pairs, header) if value]
    extra: dict[str, list[str]] = {}
    for prefix in config.extra_prefixes:
        for key, value in pairs:
            if key.lower().startswith(prefix.lower()):
                extra.setdefault(_unescape_extra_key(key[len(prefix) :].lower()), []).append(value)
    return UserInfo(
        name=name,
        uid=_first(pairs, config.uid_headers),
        groups=tuple(groups),
        extra={key: tuple(values) for key, values in extra.items()},
    )


# -- bearer tokens -------------------------------------------------------------------------------


def bearer_token(headers: Headers) -> str | None:
    """The token of `Authorization: Bearer <token>`, parsed as k8s.io/apiserver's bearertoken."""
    values = _values(list(headers), "authorization")
    parts = values[0].strip().split(" ", 2) if values else []
    if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
        return None
    return parts[1]


def token_review_request(token: str) -> dict[str, Any]:
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }


def user_from_token_review(review: Mapping[str, Any]) -> UserInfo:
    status = review.get("status") or {}
    if not status.get("authenticated"):
        error = status.get("error")
        raise Unauthorized(f"token review: {error}" if error else "token review: not authenticated")
    user = status.get("user") or {}
    if not user.get("username"):
        raise Unauthorized("token review: authenticated, but without a username")
    return UserInfo(
        name=user["username"],
        uid=user.get("uid", ""),
        groups=tuple(user.get("groups") or ()),
        extra={key: tuple(values) for key, values in (user.get("extra") or {}).items()},
    )


def with_authenticated_group(user: UserInfo) -> UserInfo:
    """k8s.io/apiserver's AuthenticatedGroupAdder: RBAC often grants to system:authenticated."""
    if user.name == ANONYMOUS_USER or AUTHENTICATED_GROUP in user.groups:
        return user
    return UserInfo(user.name, user.uid, (*user.groups, AUTHENTICATED_GROUP), user.extra)


# -- request attributes --------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceAttributes:
    verb: str
    group: str
    version: str
    resource: str
    subresource: str = ""
    name: str = ""
    namespace: str = ""


@dataclass(frozen=True)
class NonResourceAttributes:
    path: str
    verb: str


Attributes = ResourceAttributes | NonResourceAttributes

_API_PREFIXES = frozenset({"api", "apis"})
_GROUPLESS_PREFIXES = frozenset({"api"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


def request_attributes(path: str, verb: str = "get") -> Attributes:
    """What a request asks for, as k8s.io/apiserver's RequestInfoFactory.NewRequestInfo reads it.

    `verb` is the one the HTTP method gives (GET and HEAD: "get"). The `proxy` and `watch`
    path verbs are not special here: this API serves neither.
    """
    trimmed = path.strip("/")
    parts = trimmed.split("/") if trimmed else []
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return NonResourceAttributes(path, verb)
    group = ""
    rest = parts[1:]
    if parts[0] not in _GROUPLESS_PREFIXES:
        if len(rest) < 3:  # /apis/{group}/{version}: discovery
            return NonResourceAttributes(path, verb)
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    namespace = ""
    # RequestInfoFactory: "/namespaces/{namespace}/{kind}/*" is relative to {kind} unless the
    # step after the name is a namespace subresource (status, finalize). So
    # /namespaces/default/metrics/m is resource "metrics", name "m", namespace "default", and
    # /namespaces/default/pods/*/m is resource "pods", name "*", subresource "m".
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    name = rest[1] if len(rest) > 1 else ""
    if not name and verb == "get":
        verb = "list"
    return ResourceAttributes(
        verb=verb,
        group=group,
        version=version,
        resource=rest[0],
        subresource=rest[2] if len(rest) > 2 else "",
        name=name,
        namespace=namespace,
    )


def resource_attributes(path: str, verb: str = "get") -> ResourceAttributes | None:
    """`request_attributes` for resource paths; None for the rest (discovery, /openapi, ...)."""
    attributes = request_attributes(path, verb)
    return attributes if isinstance(attributes, ResourceAttributes) else None


def subject_access_review(user: UserInfo, attributes: Attributes) -> dict[str, Any]:
    """An authorization.k8s.io/v1 SubjectAccessReview; empty fields left out, as Go omits them."""
    spec: dict[str, Any] = {}
    if isinstance(attributes, ResourceAttributes):
        fields = {
            "namespace": attributes.namespace,
            "verb": attributes.verb,
            "group": attributes.group,
            "version": attributes.version,
            "resource": attributes.resource,
            "subresource": attributes.subresource,
            "name": attributes.name,
        }
        spec["resourceAttributes"] = {key: value for key, value in fields.items() if value}
    else:
        spec["nonResourceAttributes"] = {"path": attributes.path, "verb": attributes.verb}
    if user.name:
        spec["user"] = user.name
    if user.groups:
        spec["groups"] = list(user.groups)
    if user.extra:
        spec["extra"] = {key: list(values) for key, values in user.extra.items()}
    if user.uid:
        spec["uid"] = user.uid
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def decision(review: Mapping[str, Any]) -> tuple[bool, str]:
    """(allowed, reason); a denial and "no opinion" both refuse."""
    status = review.get("status") or {}
    return status.get("allowed") is True, str(status.get("reason") or "")


def _quote(text: str) -> str:
    # Go's %q, near enough for names and paths; a name from the request path is cut to a
    # short prefix, so a 60 KB metric name makes a short 403.
    return json.dumps(clip(text), ensure_ascii=False)


def forbidden(user: UserInfo, attributes: Attributes, reason: str = "") -> Forbidden:
    """responsewriters.Forbidden's message, wrapped as apierrors.NewForbidden wraps it.

    e.g. `pods.custom.metrics.k8s.io "*" is forbidden: User "bob" cannot get resource
    "pods/socket_io_connected" in API group "custom.metrics.k8s.io" in the namespace "default"`.
    """
    who = f"User {_quote(user.name)} cannot {attributes.verb}"
    if isinstance(attributes, NonResourceAttributes):
        return Forbidden(f"forbidden: {who} path {_quote(attributes.path)}" + _colon(reason))
    resource = attributes.resource
    if attributes.subresource:
        resource += "/" + attributes.subresource
    text = f"{who} resource {_quote(resource)} in API group {_quote(attributes.group)}"
    if attributes.namespace:
        text += f" in the namespace {_quote(attributes.namespace)}"
    else:
        text += " at the cluster scope"
    qualified = attributes.resource + (f".{attributes.group}" if attributes.group else "")
    if attributes.name:
        qualified += f" {_quote(attributes.name)}"
    details = {
        "group": clip(attributes.group),
        "kind": clip(attributes.resource),
        "name": clip(attributes.name),
    }
    return Forbidden(
        f"{qualified} is forbidden: {text}{_colon(reason)}",
        {key: value for key, value in details.items() if value},
    )


def _colon(reason: str) -> str:
    return f": {reason}" if reason else ""


# -- the shells ----------------------------------------------------------------------------------

V = TypeVar("V")


class _TtlCache(Generic[V]):
    """Answers kept until they expire; bounded, so a flood of distinct keys cannot grow it."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: dict[str, tuple[float, V]] = {}
        self._max_entries = max_entries

    def get(self, key: str, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def put(self, key: str, value: V, expires: float, now: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (expires, value)
        if len(self._entries) > self._max_entries:
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
            while len(self._entries) > self._max_entries:
                del self._entries[next(iter(self._entries))]  # the oldest


def _redact(text: str, token: str) -> str:
    return text.replace(token, "[token]") if token else text


class Authenticator:
    """The front proxy first, then a client-CA certificate, then a bearer token (the order of
    DelegatingAuthenticatorConfig's union); `Unauthorized` when none names a user.

    As kube-apiserver's union of authenticators, a certificate that does not authenticate (a
    CN not allowed, no user header) still lets a bearer token try.
    TokenReview answers are cached for `cache_ttl_seconds` (DelegatingAuthenticationOptions'
    CacheTTL, 10 s), keyed by the token's SHA-256. The token itself is never kept, logged or
    put in an error message.
    """

    def __init__(
        self,
        request_header: RequestHeaderConfig | None,
        review_token: Review | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_ttl_seconds: float = 10.0,
    ) -> None:
        self._request_header = request_header
        self._review_token = review_token
        self._clock = clock
        self._ttl = cache_ttl_seconds
        self._reviews: _TtlCache[UserInfo | str] = _TtlCache()

    async def authenticate(self, cert: ClientCert | None, headers: Headers) -> UserInfo:
        pairs = list(headers)
        refusals: list[str] = []
        if cert is not None and not cert.issuers:
            # Verified through an intermediate: its issuer is neither CA (see adapter.tls).
            refusals.append("the client certificate is not issued directly by a trusted CA")
        if self._request_header is not None and cert is not None and FRONT_PROXY_CA in cert.issuers:
            try:
                user = user_from_request_headers(cert, pairs, self._request_header)
                return with_authenticated_group(user)
            except Unauthorized as exc:
                refusals.append(str(exc))
        if cert is not None and CLIENT_CA in cert.issuers:
            try:
                return with_authenticated_group(user_from_client_cert(cert))
            except Unauthorized as exc:
                refusals.append(str(exc))
        token = bearer_token(pairs)
        if token is not None and self._review_token is None:
            refusals.append("bearer tokens are not accepted here (no TokenReview configured)")
        elif token is not None and self._review_token is not None:
            try:
                return with_authenticated_group(await self._token_user(token, self._review_token))
            except Unauthorized as exc:
                refusals.append(str(exc))
        if not refusals:
            refusals.append("no client certificate and no bearer token")
        raise Unauthorized("; ".join(refusals))

    async def _token_user(self, token: str, review_token: Review) -> UserInfo:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        cached = self._reviews.get(key, now)
        if isinstance(cached, str):
            raise Unauthorized(cached)
        if cached is not None:
            return cached
        try:
            review = await review_token(token_review_request(token))
        except Exception as exc:
            message = _redact(f"{type(exc).__name__}: {exc}", token)
            log.warning("TokenReview failed: %s", message)
            # Not chained: the cause's text may hold the token. Not cached: the next request
            # asks again.
            raise Unauthorized(f"cannot review the token with the API server: {message}") from None
        try:
            user = user_from_token_review(review)
        except Unauthorized as exc:
            reason = _redact(str(exc), token)
            self._reviews.put(key, reason, now + self._ttl, now)
            raise Unauthorized(reason) from None
        self._reviews.put(key, user, now + self._ttl, now)
        return user


class Authorizer:
    """SubjectAccessReviews, cached as DelegatingAuthorizationOptions caches them.

    k8s.io/apiserver: AllowCacheTTL and DenyCacheTTL both 10 s ("very low for responsiveness,
    but high enough to handle storms"), keyed by the review's spec. A failed review is not
    cached and raises `AuthorizerError`.
    """

    def __init__(
        self,
        review_access: Review,
        *,
        clock: Callable[[], float] = time.monotonic,
        allowed_ttl_seconds: float = 10.0,
        denied_ttl_seconds: float = 10.0,
    ) -> None:
        self._review_access = review_access
        self._clock = clock
        self._allowed_ttl = allowed_ttl_seconds
        self._denied_ttl = denied_ttl_seconds
        self._decisions: _TtlCache[tuple[bool, str]] = _TtlCache()

    async def authorize(self, user: UserInfo, attributes: Attributes) -> None:
        review = subject_access_review(user, attributes)
        key = json.dumps(review["spec"], sort_keys=True)
        now = self._clock()
        cached = self._decisions.get(key, now)
        if cached is None:
            try:
                answer = await self._review_access(review)
            except Exception as exc:
                log.warning("SubjectAccessReview failed: %s: %s", type(exc).__name__, exc)
                raise AuthorizerError(f"cannot check access with the API server: {exc}") from exc
            cached = decision(answer)
            ttl = self._allowed_ttl if cached[0] else self._denied_ttl
            self._decisions.put(key, cached, now + ttl, now)
        allowed, reason = cached
        if not allowed:
            raise forbidden(user, attributes, reason)
