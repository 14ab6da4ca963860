"""adapter.auth: the pure parsing and review documents by tables; the shells with fake reviews.

The fake reviews answer with the JSON kube-apiserver returns for TokenReview and
SubjectAccessReview (authentication.k8s.io/v1, authorization.k8s.io/v1).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from adapter.auth import (
    CLIENT_CA,
    FRONT_PROXY_CA,
    Authenticator,
    AuthError,
    Authorizer,
    AuthorizerError,
    ClientCert,
    ConfigMapError,
    Forbidden,
    NonResourceAttributes,
    RequestHeaderConfig,
    ResourceAttributes,
    Unauthorized,
    UserInfo,
    bearer_token,
    decision,
    forbidden,
    request_attributes,
    request_header_config_from_config_map,
    resource_attributes,
    subject_access_review,
    token_review_request,
    user_from_request_headers,
    user_from_token_review,
    with_authenticated_group,
)

GROUP = "custom.metrics.k8s.io"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

# -- the ConfigMap -------------------------------------------------------------------------------

KUBEADM_CONFIG_MAP = {
    "client-ca-file": CA_PEM,
    "requestheader-allowed-names": '["front-proxy-client"]',
    "requestheader-client-ca-file": CA_PEM,
    "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
    "requestheader-group-headers": '["X-Remote-Group"]',
    "requestheader-username-headers": '["X-Remote-User"]',
}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            KUBEADM_CONFIG_MAP,
            (RequestHeaderConfig(allowed_names=frozenset({"front-proxy-client"})), CA_PEM),
            id="kubeadm",
        ),
        pytest.param(
            {
                **KUBEADM_CONFIG_MAP,
                "requestheader-allowed-names": "[]",
                "requestheader-uid-headers": '["X-Remote-Uid"]',
                "requestheader-username-headers": '["X-Remote-User","X-Other-User"]',
            },
            (
                RequestHeaderConfig(
                    username_headers=("X-Remote-User", "X-Other-User"),
                    uid_headers=("X-Remote-Uid",),
                ),
                CA_PEM,
            ),
            id="any-name-uid-two-user-headers",
        ),
        pytest.param(
            {"requestheader-client-ca-file": CA_PEM, "requestheader-allowed-names": "null"},
            (RequestHeaderConfig(frozenset(), (), (), (), ()), CA_PEM),
            id="lists-missing-or-null",
        ),
        pytest.param({"client-ca-file": CA_PEM}, None, id="no-front-proxy"),
        pytest.param({"requestheader-client-ca-file": "  \n"}, None, id="blank-ca"),
    ],
)
def test_request_header_config_from_config_map(data, expected):
    assert request_header_config_from_config_map(data) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("X-Remote-User", id="not-json"),
        pytest.param('"X-Remote-User"', id="a-string"),
        pytest.param("[1]", id="not-strings"),
    ],
)
def test_request_header_config_refuses_values_that_do_not_parse(value):
    data = {**KUBEADM_CONFIG_MAP, "requestheader-username-headers": value}
    with pytest.raises(ConfigMapError, match="requestheader-username-headers"):
        request_header_config_from_config_map(data)


# -- front-proxy headers -------------------------------------------------------------------------

ANY_NAME = RequestHeaderConfig()
ALLOWED = RequestHeaderConfig(allowed_names=frozenset({"front-proxy-client", "aggregator"}))
TWO_USER_HEADERS = RequestHeaderConfig(
    username_headers=("X-Remote-User", "X-Other-User"),
    uid_headers=("X-Remote-Uid",),
    extra_prefixes=("X-Remote-Extra-", "X-Other-Extra-"),
)


@pytest.mark.parametrize(
    ("config", "cn", "headers", "expected"),
    [
        pytest.param(
            ANY_NAME,
            "anything",
            [("x-remote-user", "bob")],
            UserInfo("bob"),
            id="user-only",
        ),
        pytest.param(
            ALLOWED,
            "aggregator",
            [("X-REMOTE-USER", "bob"), ("x-remote-group", "dev"), ("X-Remote-Group", "ops")],
            UserInfo("bob", groups=("dev", "ops")),
            id="allowed-name-any-case-repeated-groups",
        ),
        pytest.param(
            ANY_NAME,
            "",
            [("x-remote-user", "bob"), ("x-remote-group", ""), ("x-remote-group", "a,b")],
            UserInfo("bob", groups=("a,b",)),
            id="certificate-without-cn-empty-group-skipped-commas-kept",
        ),
        pytest.param(
            TWO_USER_HEADERS,
            "p",
            [("x-remote-user", ""), ("x-other-user", "alice"), ("x-remote-uid", "42")],
            UserInfo("alice", uid="42"),
            id="first-non-empty-user-header-wins",
        ),
        pytest.param(
            TWO_USER_HEADERS,
            "p",
            [("x-remote-user", "bob"), ("x-other-user", "alice")],
            UserInfo("bob"),
            id="first-user-header-in-config-order",
        ),
        pytest.param(
            ANY_NAME,
            "p",
            [
                ("x-remote-user", "bob"),
                ("X-Remote-Extra-Scopes", "view"),
                ("x-remote-extra-scopes", "edit"),
                ("X-Remote-Extra-Acme.com%2Fproject", "p1"),
                ("X-Remote-Extra-Bad%zzKey", "v"),
                ("X-Remote-Extra-Non-Utf8%ff", "v"),
                ("X-Remote-Extra-Empty", ""),
            ],
            UserInfo(
                "bob",
                extra={
                    "scopes": ("view", "edit"),
                    "acme.com/project": ("p1",),
                    "bad%zzkey": ("v",),
                    "non-utf8%ff": ("v",),
                    "empty": ("",),
                },
            ),
            id="extras-lowered-unescaped-malformed-kept",
        ),
        pytest.param(
            TWO_USER_HEADERS,
            "p",
            [("x-remote-user", "bob"), ("x-other-extra-k", "1"), ("x-remote-extra-k", "2")],
            UserInfo("bob", extra={"k": ("2", "1")}),
            id="extras-in-prefix-order",
        ),
    ],
)
def test_user_from_request_headers(config, cn, headers, expected):
    assert user_from_request_headers(proxy(cn), headers, config) == expected


@pytest.mark.parametrize(
    ("config", "cn", "headers", "message"),
    [
        pytest.param(
            ANY_NAME, None, [("x-remote-user", "bob")], "no client certificate", id="no-cert"
        ),
        pytest.param(
            ALLOWED,
            "intruder",
            [("x-remote-user", "bob")],
            "cn=intruder is not in the allowed list [aggregator, front-proxy-client]",
            id="name-not-allowed",
        ),
        pytest.param(ALLOWED, "", [("x-remote-user", "bob")], "cn= is not", id="no-cn-not-allowed"),
        pytest.param(ANY_NAME, "p", [("x-remote-group", "dev")], "X-Remote-User", id="no-user"),
        pytest.param(ANY_NAME, "p", [("x-remote-user", "")], "X-Remote-User", id="empty-user"),
    ],
)
def test_user_from_request_headers_refuses(config, cn, headers, message):
    with pytest.raises(Unauthorized, match=re.escape(message)):
        user_from_request_headers(proxy(cn), headers, config)


def test_the_headers_of_a_client_ca_certificate_are_not_believed():
    """Whatever its name: only the requestheader CA vouches for the front proxy."""
    user_cert = ClientCert("front-proxy-client", issuers=frozenset({CLIENT_CA}))
    with pytest.raises(Unauthorized, match="no client certificate from the front proxy"):
        user_from_request_headers(user_cert, [("x-remote-user", "bob")], ALLOWED)


def proxy(cn: str | None) -> ClientCert | None:
    """A certificate the front-proxy CA issued, with this CN (None: no certificate)."""
    return None if cn is None else ClientCert(cn, issuers=frozenset({FRONT_PROXY_CA}))


# -- tokens --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        pytest.param([("Authorization", "Bearer abc.def")], "abc.def", id="bearer"),
        pytest.param([("authorization", "  bearer abc  ")], "abc", id="any-case-trimmed"),
        pytest.param([("authorization", "Bearer abc extra")], "abc", id="third-part-ignored"),
        pytest.param([("authorization", "Bearer  abc")], None, id="space-before-token"),
        pytest.param([("authorization", "Bearer")], None, id="no-token"),
        pytest.param([("authorization", "Basic dXNlcg==")], None, id="basic"),
        pytest.param([], None, id="no-header"),
    ],
)
def test_bearer_token(headers, token):
    assert bearer_token(headers) == token


def test_token_review_request():
    assert token_review_request("t0k3n") == {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": "t0k3n"},
    }


def _token_review(status: dict[str, Any]) -> dict[str, Any]:
    """What kube-apiserver answers to a TokenReview create."""
    return {
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": {"token": "t0k3n"},
        "status": status,
    }


SERVICE_ACCOUNT = {
    "authenticated": True,
    "user": {
        "username": "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        "uid": "7c5d2b0e-1f3a-4c1e-9d0a-2b8f6a3e9c11",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system"],
        "extra": {"authentication.kubernetes.io/pod-name": ["hpa-0"]},
    },
    "audiences": ["https://kubernetes.default.svc.cluster.local"],
}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(
            SERVICE_ACCOUNT,
            UserInfo(
                "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                uid="7c5d2b0e-1f3a-4c1e-9d0a-2b8f6a3e9c11",
                groups=("system:serviceaccounts", "system:serviceaccounts:kube-system"),
                extra={"authentication.kubernetes.io/pod-name": ("hpa-0",)},
            ),
            id="service-account",
        ),
        pytest.param(
            {"authenticated": True, "user": {"username": "bob"}},
            UserInfo("bob"),
            id="name-only",
        ),
        pytest.param(
            {"user": {}, "error": "[invalid bearer token, token lookup failed]"},
            "token review: [invalid bearer token, token lookup failed]",
            id="rejected-with-error",
        ),
        pytest.param({"user": {}}, "token review: not authenticated", id="rejected"),
        pytest.param({}, "token review: not authenticated", id="empty-status"),
        pytest.param({"authenticated": True, "user": {}}, "without a username", id="no-name"),
    ],
)
def test_user_from_token_review(status, expected):
    if isinstance(expected, UserInfo):
        assert user_from_token_review(_token_review(status)) == expected
    else:
        with pytest.raises(Unauthorized) as raised:
            user_from_token_review(_token_review(status))
        assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("groups", "name", "expected"),
    [
        pytest.param((), "bob", ("system:authenticated",), id="added"),
        pytest.param(("dev",), "bob", ("dev", "system:authenticated"), id="appended"),
        pytest.param(("system:authenticated",), "bob", ("system:authenticated",), id="kept"),
        pytest.param((), "system:anonymous", (), id="anonymous"),
    ],
)
def test_with_authenticated_group(groups, name, expected):
    assert with_authenticated_group(UserInfo(name, groups=groups)).groups == expected


# -- request attributes --------------------------------------------------------------------------

V2 = f"/apis/{GROUP}/v1beta2"


def _resource(**fields: str) -> ResourceAttributes:
    return ResourceAttributes(**{"verb": "get", "group": GROUP, "version": "v1beta2", **fields})


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            f"{V2}/namespaces/default/pods/*/socket_io_connected",
            _resource(
                resource="pods", name="*", subresource="socket_io_connected", namespace="default"
            ),
            id="namespaced-all-pods",
        ),
        pytest.param(
            f"/apis/{GROUP}/v1beta1/namespaces/default/pods/push-0/socket_io_connected",
            _resource(
                version="v1beta1",
                resource="pods",
                name="push-0",
                subresource="socket_io_connected",
                namespace="default",
            ),
            id="namespaced-one-pod-v1beta1",
        ),
        pytest.param(
            f"{V2}/namespaces/games/services/push/socket_io_connected/",
            _resource(
                resource="services",
                name="push",
                subresource="socket_io_connected",
                namespace="games",
            ),
            id="service-trailing-slash",
        ),
        pytest.param(
            f"{V2}/namespaces/games/deployments.apps/push/socket_io_connected",
            _resource(
                resource="deployments.apps",
                name="push",
                subresource="socket_io_connected",
                namespace="games",
            ),
            id="deployment",
        ),
        pytest.param(
            # RequestInfoFactory: the step after the namespace name starts the resource.
            f"{V2}/namespaces/games/metrics/socket_io_connected",
            _resource(resource="metrics", name="socket_io_connected", namespace="games"),
            id="namespace-metric",
        ),
        pytest.param(
            f"{V2}/namespaces/games",
            _resource(resource="namespaces", name="games", namespace="games"),
            id="namespace-object",
        ),
        pytest.param(
            f"{V2}/namespaces/games/status",
            _resource(resource="namespaces", name="games", subresource="status", namespace="games"),
            id="namespace-subresource",
        ),
        pytest.param(
            f"{V2}/nodes/*/socket_io_connected",
            _resource(resource="nodes", name="*", subresource="socket_io_connected"),
            id="cluster-scoped",
        ),
        pytest.param(
            f"{V2}/namespaces/games/pods",
            _resource(verb="list", resource="pods", namespace="games"),
            id="no-name-is-list",
        ),
        pytest.param(
            f"{V2}/namespaces",
            _resource(verb="list", resource="namespaces"),
            id="namespaces-list",
        ),
        pytest.param(
            "/api/v1/namespaces/games/pods/push-0",
            ResourceAttributes("get", "", "v1", "pods", name="push-0", namespace="games"),
            id="core-group",
        ),
        pytest.param(V2, NonResourceAttributes(V2, "get"), id="discovery-version"),
        pytest.param(f"{V2}/", NonResourceAttributes(f"{V2}/", "get"), id="discovery-slash"),
        pytest.param(f"/apis/{GROUP}", NonResourceAttributes(f"/apis/{GROUP}", "get"), id="group"),
        pytest.param("/apis", NonResourceAttributes("/apis", "get"), id="apis"),
        pytest.param("/api/v1", NonResourceAttributes("/api/v1", "get"), id="core-discovery"),
        pytest.param("/openapi/v2", NonResourceAttributes("/openapi/v2", "get"), id="openapi"),
        pytest.param(
            "/openapi/v3/apis/custom.metrics.k8s.io/v1beta2",
            NonResourceAttributes("/openapi/v3/apis/custom.metrics.k8s.io/v1beta2", "get"),
            id="openapi-v3",
        ),
        pytest.param("/", NonResourceAttributes("/", "get"), id="root"),
    ],
)
def test_request_attributes(path, expected):
    assert request_attributes(path) == expected
    resource = resource_attributes(path)
    assert resource == (expected if isinstance(expected, ResourceAttributes) else None)


def test_request_attributes_keep_other_verbs():
    assert request_attributes(f"{V2}/namespaces/games/pods", "create").verb == "create"
    assert request_attributes("/healthz", "post") == NonResourceAttributes("/healthz", "post")


# -- SubjectAccessReview -------------------------------------------------------------------------

HPA = UserInfo(
    "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    uid="7c5d",
    groups=("system:serviceaccounts", "system:authenticated"),
    extra={"authentication.kubernetes.io/pod-name": ("hpa-0",)},
)


@pytest.mark.parametrize(
    ("user", "attributes", "spec"),
    [
        pytest.param(
            HPA,
            _resource(
                resource="pods", name="*", subresource="socket_io_connected", namespace="games"
            ),
            {
                "resourceAttributes": {
                    "namespace": "games",
                    "verb": "get",
                    "group": GROUP,
                    "version": "v1beta2",
                    "resource": "pods",
                    "subresource": "socket_io_connected",
                    "name": "*",
                },
                "user": HPA.name,
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/pod-name": ["hpa-0"]},
                "uid": "7c5d",
            },
            id="resource-every-field",
        ),
        pytest.param(
            UserInfo("bob"),
            _resource(verb="list", resource="namespaces"),
            {
                "resourceAttributes": {
                    "verb": "list",
                    "group": GROUP,
                    "version": "v1beta2",
                    "resource": "namespaces",
                },
                "user": "bob",
            },
            id="empty-fields-left-out",
        ),
        pytest.param(
            UserInfo("bob", groups=("dev",)),
            NonResourceAttributes(V2, "get"),
            {
                "nonResourceAttributes": {"path": V2, "verb": "get"},
                "user": "bob",
                "groups": ["dev"],
            },
            id="non-resource",
        ),
    ],
)
def test_subject_access_review(user, attributes, spec):
    assert subject_access_review(user, attributes) == {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": spec,
    }


def _access_review(status: dict[str, Any]) -> dict[str, Any]:
    """What kube-apiserver answers to a SubjectAccessReview create."""
    return {
        "kind": "SubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": {},
        "status": status,
    }


RBAC_ALLOWS = {
    "allowed": True,
    "reason": 'RBAC: allowed by ClusterRoleBinding "hpa-external-metrics" of ClusterRole '
    '"custom-metrics-reader" to ServiceAccount "horizontal-pod-autoscaler/kube-system"',
}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(RBAC_ALLOWS, (True, RBAC_ALLOWS["reason"]), id="allowed"),
        pytest.param({"allowed": False}, (False, ""), id="no-opinion"),
        pytest.param(
            {"allowed": False, "denied": True, "reason": "policy says no"},
            (False, "policy says no"),
            id="denied",
        ),
        pytest.param({"allowed": "true"}, (False, ""), id="not-a-bool"),
        pytest.param({}, (False, ""), id="empty"),
    ],
)
def test_decision(status, expected):
    assert decision(_access_review(status)) == expected


@pytest.mark.parametrize(
    ("attributes", "reason", "message", "details"),
    [
        pytest.param(
            _resource(
                resource="pods", name="*", subresource="socket_io_connected", namespace="default"
            ),
            "",
            'pods.custom.metrics.k8s.io "*" is forbidden: User "bob" cannot get resource '
            '"pods/socket_io_connected" in API group "custom.metrics.k8s.io" in the namespace '
            '"default"',
            {"group": GROUP, "kind": "pods", "name": "*"},
            id="namespaced",
        ),
        pytest.param(
            _resource(resource="nodes", name="n1", subresource="m"),
            "no RBAC policy matched",
            'nodes.custom.metrics.k8s.io "n1" is forbidden: User "bob" cannot get resource '
            '"nodes/m" in API group "custom.metrics.k8s.io" at the cluster scope: '
            "no RBAC policy matched",
            {"group": GROUP, "kind": "nodes", "name": "n1"},
            id="cluster-scope-with-reason",
        ),
        pytest.param(
            _resource(verb="list", resource="pods", namespace="default"),
            "",
            'pods.custom.metrics.k8s.io is forbidden: User "bob" cannot list resource "pods" in '
            'API group "custom.metrics.k8s.io" in the namespace "default"',
            {"group": GROUP, "kind": "pods"},
            id="no-name",
        ),
        pytest.param(
            ResourceAttributes("get", "", "v1", "pods", name="p", namespace="default"),
            "",
            'pods "p" is forbidden: User "bob" cannot get resource "pods" in API group "" in the '
            'namespace "default"',
            {"kind": "pods", "name": "p"},
            id="core-group",
        ),
        pytest.param(
            NonResourceAttributes("/apis/custom.metrics.k8s.io/v1beta2", "get"),
            "",
            'forbidden: User "bob" cannot get path "/apis/custom.metrics.k8s.io/v1beta2"',
            {},
            id="non-resource",
        ),
    ],
)
def test_forbidden_message_is_kube_apiservers(attributes, reason, message, details):
    error = forbidden(UserInfo("bob"), attributes, reason)
    assert (str(error), dict(error.details), error.code) == (message, details, 403)


def test_a_forbidden_message_quotes_a_huge_name_by_a_short_prefix():
    huge = "m" * 60_000
    attributes = ResourceAttributes("get", "custom.metrics.k8s.io", "v1beta2", "pods", huge, huge,
                                    "live")  # fmt: skip
    error = forbidden(UserInfo("bob"), attributes, "denied")
    assert len(str(error)) < 400 and "(60000 characters)" in str(error)
    assert len(error.details["name"]) < 100


# -- the shells ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeReview:
    """An injected review call: records every body, answers from a list or raises."""

    def __init__(self, *answers: dict[str, Any] | Exception) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        answer = self.answers[min(len(self.bodies), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLXRoYXQtbXVzdC1uZXZlci1sZWFr.sig"
AUTHORIZATION = [("authorization", f"Bearer {TOKEN}")]


async def test_the_front_proxy_is_believed_without_a_token_review():
    reviews = FakeReview(_token_review(SERVICE_ACCOUNT))
    authenticator = Authenticator(ALLOWED, reviews)
    headers = [("x-remote-user", "bob"), ("x-remote-group", "dev"), *AUTHORIZATION]
    user = await authenticator.authenticate(proxy("front-proxy-client"), headers)
    assert user == UserInfo("bob", groups=("dev", "system:authenticated"))
    assert reviews.bodies == []


@pytest.mark.parametrize(
    ("request_header", "cn"),
    [
        pytest.param(ALLOWED, None, id="no-certificate"),
        pytest.param(ALLOWED, "intruder", id="name-not-allowed"),
        pytest.param(None, "front-proxy-client", id="front-proxy-not-configured"),
    ],
)
async def test_a_bearer_token_is_reviewed_when_the_front_proxy_does_not_authenticate(
    request_header, cn
):
    reviews = FakeReview(_token_review(SERVICE_ACCOUNT))
    authenticator = Authenticator(request_header, reviews)
    user = await authenticator.authenticate(proxy(cn), [("x-remote-user", "bob"), *AUTHORIZATION])
    assert user.name == "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
    assert user.groups[-1] == "system:authenticated"
    assert reviews.bodies == [token_review_request(TOKEN)]


@pytest.mark.parametrize(
    ("cn", "headers", "message"),
    [
        pytest.param(None, [], "no client certificate and no bearer token", id="none"),
        pytest.param("intruder", [("x-remote-user", "bob")], "cn=intruder", id="bad-name"),
        pytest.param(
            "intruder",
            [("x-remote-user", "bob"), *AUTHORIZATION],
            "cn=intruder is not in the allowed list [aggregator, front-proxy-client]; "
            "token review: not authenticated",
            id="bad-name-and-bad-token",
        ),
    ],
)
async def test_unauthenticated_requests(cn, headers, message):
    authenticator = Authenticator(ALLOWED, FakeReview(_token_review({"user": {}})))
    with pytest.raises(Unauthorized) as raised:
        await authenticator.authenticate(proxy(cn), headers)
    assert message in str(raised.value)
    assert raised.value.code == 401


USER_CERT = ClientCert("alice", ("devs", "oncall"), frozenset({CLIENT_CA}))
HPA_USER = UserInfo(
    "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    groups=("system:serviceaccounts", "system:serviceaccounts:kube-system"),
)


@pytest.mark.parametrize(
    ("cert", "headers", "expected"),
    [
        pytest.param(USER_CERT, [], UserInfo("alice", groups=("devs", "oncall")), id="cn-and-o"),
        pytest.param(
            ClientCert("front-proxy-client", (), frozenset({CLIENT_CA})),
            [("x-remote-user", "bob")],
            UserInfo("front-proxy-client"),
            id="client-ca-with-a-proxy-name-its-headers-ignored",
        ),
        pytest.param(
            ClientCert("front-proxy-client", (), frozenset({CLIENT_CA, FRONT_PROXY_CA})),
            [("x-remote-user", "bob")],
            UserInfo("bob"),
            id="one-ca-in-both-roles-front-proxy-first",
        ),
        pytest.param(
            ClientCert("front-proxy-client", (), frozenset({CLIENT_CA, FRONT_PROXY_CA})),
            [],
            UserInfo("front-proxy-client"),
            id="one-ca-in-both-roles-no-user-header",
        ),
        pytest.param(
            ClientCert("", (), frozenset({CLIENT_CA})),
            AUTHORIZATION,
            HPA_USER,
            id="no-cn-then-the-token",
        ),
        pytest.param(
            ClientCert("mallory"),
            AUTHORIZATION,
            HPA_USER,
            id="no-direct-issuer-then-the-token",
        ),
    ],
)
async def test_client_ca_certificates_name_their_user(cert, headers, expected):
    reviews = FakeReview(_token_review(SERVICE_ACCOUNT))
    user = await Authenticator(ALLOWED, reviews).authenticate(cert, headers)
    assert (user.name, user.groups[:-1]) == (expected.name, expected.groups)
    assert user.groups[-1] == "system:authenticated"
    assert bool(reviews.bodies) == (headers == AUTHORIZATION)


@pytest.mark.parametrize(
    ("cert", "message"),
    [
        pytest.param(
            ClientCert("", (), frozenset({CLIENT_CA})),
            "the client certificate has no common name",
            id="no-cn",
        ),
        pytest.param(
            ClientCert("mallory"),
            "the client certificate is not issued directly by a trusted CA",
            id="no-direct-issuer",
        ),
    ],
)
async def test_client_certificates_that_name_nobody(cert, message):
    with pytest.raises(Unauthorized, match=message):
        await Authenticator(ALLOWED, None).authenticate(cert, [])


async def test_tokens_are_refused_without_a_token_review():
    authenticator = Authenticator(ALLOWED, None)
    with pytest.raises(Unauthorized, match="bearer tokens are not accepted"):
        await authenticator.authenticate(None, AUTHORIZATION)


@pytest.mark.parametrize(
    "status",
    [pytest.param(SERVICE_ACCOUNT, id="accepted"), pytest.param({"user": {}}, id="rejected")],
)
async def test_token_reviews_are_cached_for_their_ttl(status):
    clock = FakeClock()
    reviews = FakeReview(_token_review(status))
    authenticator = Authenticator(None, reviews, clock=clock, cache_ttl_seconds=10)

    async def outcome(token: str = TOKEN) -> str:
        try:
            user = await authenticator.authenticate(None, [("authorization", f"Bearer {token}")])
        except Unauthorized as exc:
            return str(exc)
        return user.name

    first = await outcome()
    clock.now += 9.9
    assert await outcome() == first
    assert len(reviews.bodies) == 1
    clock.now += 0.1
    assert await outcome() == first
    assert len(reviews.bodies) == 2
    assert await outcome("another-token") == first
    assert len(reviews.bodies) == 3, "another token is another key"


async def test_a_failed_token_review_is_unauthorized_and_not_cached():
    reviews = FakeReview(ConnectionError("connection refused"), _token_review(SERVICE_ACCOUNT))
    authenticator = Authenticator(None, reviews, clock=FakeClock())
    with pytest.raises(Unauthorized, match="cannot review the token with the API server"):
        await authenticator.authenticate(None, AUTHORIZATION)
    user = await authenticator.authenticate(None, AUTHORIZATION)
    assert user.name.startswith("system:serviceaccount:")
    assert len(reviews.bodies) == 2


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            RuntimeError(f"POST tokenreviews: 500 {{'spec': {{'token': '{TOKEN}'}}}}"),
            id="api-error",
        ),
        pytest.param(_token_review({"error": f"token {TOKEN} has expired"}), id="review-error"),
    ],
)
async def test_the_token_never_appears_in_logs_or_errors(answer, caplog):
    authenticator = Authenticator(ALLOWED, FakeReview(answer), clock=FakeClock())
    caplog.set_level(logging.DEBUG)
    for _ in range(2):  # the second one from the cache, for the rejection
        with pytest.raises(AuthError) as raised:
            await authenticator.authenticate(proxy("intruder"), AUTHORIZATION)
        texts = [str(raised.value), repr(raised.value)]
        cause: BaseException | None = raised.value
        while cause is not None:
            texts.append(repr(cause))
            cause = cause.__cause__ or cause.__context__
        assert not [text for text in texts if TOKEN in text]
    if isinstance(answer, Exception):
        assert "TokenReview failed: RuntimeError: POST tokenreviews: 500" in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in (record.exc_text or "")
    assert "[token]" in str(raised.value)


POD_METRIC = _resource(
    resource="pods", name="*", subresource="socket_io_connected", namespace="games"
)


async def test_allowed_and_denied_answers_are_cached_for_their_own_ttl():
    clock = FakeClock()
    reviews = FakeReview(
        _access_review(RBAC_ALLOWS),
        _access_review({"allowed": False, "reason": "no binding"}),
        _access_review(RBAC_ALLOWS),
    )
    authorizer = Authorizer(reviews, clock=clock, allowed_ttl_seconds=10, denied_ttl_seconds=2)
    await authorizer.authorize(HPA, POD_METRIC)
    clock.now += 9.9
    await authorizer.authorize(HPA, POD_METRIC)
    assert len(reviews.bodies) == 1
    assert reviews.bodies[0] == subject_access_review(HPA, POD_METRIC)

    clock.now += 0.1  # allowed for 10 s only: asked again, and now denied
    with pytest.raises(Forbidden, match=r"socket_io_connected.*: no binding$"):
        await authorizer.authorize(HPA, POD_METRIC)
    clock.now += 1.9
    with pytest.raises(Forbidden):
        await authorizer.authorize(HPA, POD_METRIC)
    assert len(reviews.bodies) == 2
    clock.now += 0.1
    await authorizer.authorize(HPA, POD_METRIC)
    assert len(reviews.bodies) == 3


@pytest.mark.parametrize(
    ("user", "attributes"),
    [
        pytest.param(UserInfo("bob"), POD_METRIC, id="another-user"),
        pytest.param(
            UserInfo(HPA.name, HPA.uid, HPA.groups[:1], HPA.extra), POD_METRIC, id="other-groups"
        ),
        pytest.param(
            HPA, _resource(resource="pods", name="*", namespace="games"), id="other-attrs"
        ),
        pytest.param(HPA, NonResourceAttributes(V2, "get"), id="non-resource"),
    ],
)
async def test_each_user_and_request_is_its_own_cache_entry(user, attributes):
    reviews = FakeReview(_access_review(RBAC_ALLOWS))
    authorizer = Authorizer(reviews, clock=FakeClock())
    await authorizer.authorize(HPA, POD_METRIC)
    await authorizer.authorize(user, attributes)
    assert len(reviews.bodies) == 2


async def test_a_failed_access_review_is_an_internal_error_and_not_cached(caplog):
    reviews = FakeReview(TimeoutError("timed out"), _access_review(RBAC_ALLOWS))
    authorizer = Authorizer(reviews, clock=FakeClock())
    with pytest.raises(AuthorizerError, match="cannot check access with the API server") as raised:
        await authorizer.authorize(HPA, POD_METRIC)
    assert raised.value.code == 500
    assert isinstance(raised.value.__cause__, TimeoutError)
    assert "SubjectAccessReview failed" in caplog.text
    await authorizer.authorize(HPA, POD_METRIC)
    assert len(reviews.bodies) == 2
