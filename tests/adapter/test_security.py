"""Who may read the metrics, end to end: the adapter process over real TLS, a fake API server.

The adapter runs as in a cluster, only with its pods from a static file: `--kubeconfig` points at
`tests.fake_kube.FakeKube`, which answers its TokenReviews and SubjectAccessReviews. A trustme
"front-proxy" CA signs the client certificate the kube-aggregator presents (CN
`front-proxy-client`); a second, unrelated CA signs certificates nobody should trust. One real
push server pod stands behind the adapter, so an allowed request gets a real 200.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.adapter.conftest import AdapterFactory, RunningAdapter, settles, static_pod
from tests.conftest import RunningServer, free_port_block, start_server
from tests.fake_kube import FakeKube, JsonObject, config_map_object

GROUP = "custom.metrics.k8s.io"
PODS = f"/apis/{GROUP}/v1beta2/namespaces/live/pods/*/socket_io_connected"
HPA = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
FROM_THE_AGGREGATOR = {"X-Remote-User": HPA, "X-Remote-Group": "system:serviceaccounts"}
DASHBOARD: JsonObject = {
    "username": "system:serviceaccount:monitoring:dashboard",
    "uid": "8d1f0c1e",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:monitoring"],
}
NON_RESOURCE_PATHS = ("/metrics", "/debug/pods", "/apis", f"/apis/{GROUP}", "/openapi/v2")


@dataclass
class Pki:
    ca_file: Path  # the front-proxy CA, as --requestheader-client-ca-file reads it
    ca_pem: str
    aggregator: trustme.LeafCert  # front-proxy CA, CN front-proxy-client
    intruder: trustme.LeafCert  # front-proxy CA, a CN that is not allowed
    stranger: trustme.LeafCert  # another CA, CN front-proxy-client


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    front_proxy, unrelated = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "front-proxy-ca.crt"
    front_proxy.cert_pem.write_to_path(ca_file)
    return Pki(
        ca_file,
        front_proxy.cert_pem.bytes().decode(),
        front_proxy.issue_cert("front-proxy", common_name="front-proxy-client"),
        front_proxy.issue_cert("intruder", common_name="intruder"),
        unrelated.issue_cert("front-proxy", common_name="front-proxy-client"),
    )


@pytest.fixture(scope="module")
def push_pod(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[RunningServer]:
    """One single-worker pod for the whole module: these tests are about access, not values."""
    server = start_server(
        tmp_path_factory.mktemp("push"),
        redis_url,
        workers=1,
        name="push-a",
        metrics_port=free_port_block(1),
    )
    yield server
    server.stop()


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    with FakeKube() as server:
        server.access_policy = lambda spec: (True, "")
        yield server


@pytest.fixture
def token() -> str:
    """A token the fake's TokenReview knows, random so a leak cannot match by chance."""
    return "dashboard-" + secrets.token_urlsafe(24)


Secured = Callable[..., RunningAdapter]


@pytest.fixture
def secured(
    fake: FakeKube,
    pki: Pki,
    token: str,
    push_pod: RunningServer,
    adapter_factory: AdapterFactory,
    tmp_path: Path,
) -> Secured:
    """Start the adapter with authentication on; `front_proxy_flags=False`: the front-proxy CA
    and names come from the cluster's ConfigMap instead."""
    fake.tokens[token] = DASHBOARD
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")

    def start(*, front_proxy_flags: bool = True, extra: tuple[str, ...] = ()) -> RunningAdapter:
        flags = ["--kubeconfig", str(kubeconfig), *extra]
        if front_proxy_flags:
            flags += [
                "--requestheader-client-ca-file", str(pki.ca_file),
                "--requestheader-allowed-names", "front-proxy-client",
            ]  # fmt: skip
        return adapter_factory([static_pod("push-a", push_pod.metrics_ports[0], 1)], extra=flags)

    return start


async def get(
    adapter: RunningAdapter,
    path: str = PODS,
    *,
    cert: trustme.LeafCert | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with adapter.client(cert=cert) as client:
        return await client.get(path, headers=headers)


def served_pods(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["describedObject"]["name"] for item in response.json()["items"]]


def status_of(response: httpx.Response, code: int, reason: str) -> str:
    """The Status document's message, after checking it is the Status for `code`."""
    assert response.status_code == code, response.text
    assert response.headers["content-type"] == "application/json"
    status = response.json()
    assert (status["kind"], status["apiVersion"], status["status"]) == ("Status", "v1", "Failure")
    assert (status["code"], status["reason"]) == (code, reason)
    return str(status["message"])


def pods_review(user: str, groups: list[str], **more: Any) -> JsonObject:
    """The SubjectAccessReview spec for PODS, as k8s.io/apiserver sends it."""
    resource = {
        "group": GROUP,
        "version": "v1beta2",
        "resource": "pods",
        "subresource": "socket_io_connected",
        "name": "*",
        "namespace": "live",
        "verb": "get",
    }
    return {"resourceAttributes": resource, "user": user, "groups": groups, **more}


async def test_the_aggregator_is_believed_and_its_user_authorized(pki, fake, secured):
    adapter = secured()
    response = await get(adapter, cert=pki.aggregator, headers=FROM_THE_AGGREGATOR)
    assert served_pods(response) == ["push-a"]
    assert fake.access_reviews == [
        pods_review(HPA, ["system:serviceaccounts", "system:authenticated"])
    ]
    assert fake.token_reviews == [], "the front proxy's word needs no TokenReview"


async def test_a_front_proxy_certificate_with_another_name_is_not_believed(pki, fake, secured):
    adapter = secured()
    response = await get(adapter, cert=pki.intruder, headers=FROM_THE_AGGREGATOR)
    message = status_of(response, 401, "Unauthorized")
    assert "cn=intruder" in message and "front-proxy-client" in message
    assert fake.access_reviews == [], "the headers of an unknown name are not trusted"


# TLS 1.2 refuses inside the handshake, so the connect fails; a TLS 1.3 client has finished its
# side of the handshake before the server checks the certificate, so the refusal (the server
# closing) arrives when it reads the answer.
REFUSED_IN_THE_HANDSHAKE = {
    ssl.TLSVersion.TLSv1_2: (httpx.ConnectError,),
    ssl.TLSVersion.TLSv1_3: (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError),
}


async def test_a_certificate_from_another_ca_fails_the_handshake(pki, fake, secured, token):
    adapter = secured()
    for version, errors in REFUSED_IN_THE_HANDSHAKE.items():
        verify = ssl.create_default_context(cafile=str(adapter.cert_dir / "apiserver.crt"))
        verify.maximum_version = version
        pki.stranger.configure_cert(verify)
        # It even carries a valid token: had the request reached the app, it would be reviewed.
        headers = {**FROM_THE_AGGREGATOR, "Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=adapter.url, verify=verify, timeout=5) as client:
            with pytest.raises(errors):
                await client.get(PODS, headers=headers)
    assert fake.token_reviews == [] and fake.access_reviews == []
    assert served_pods(await get(adapter, cert=pki.aggregator, headers=FROM_THE_AGGREGATOR))


async def test_no_credentials_is_unauthorized(fake, secured):
    adapter = secured()
    message = status_of(await get(adapter, headers=FROM_THE_AGGREGATOR), 401, "Unauthorized")
    assert "no client certificate and no bearer token" in message
    assert fake.token_reviews == [] and fake.access_reviews == []


async def test_bearer_tokens_are_reviewed_and_never_repeated(fake, secured, token):
    adapter = secured(extra=("--log-level", "debug"))
    unknown = "stolen-" + secrets.token_urlsafe(24)
    known = await get(adapter, token=token)
    refused = await get(adapter, token=unknown)

    assert served_pods(known) == ["push-a"]
    assert fake.access_reviews == [
        pods_review(
            DASHBOARD["username"], [*DASHBOARD["groups"], "system:authenticated"], uid="8d1f0c1e"
        )
    ]
    message = status_of(refused, 401, "Unauthorized")
    assert message == "token review: invalid bearer token"
    assert [review["token"] for review in fake.token_reviews] == [token, unknown]
    assert adapter.stop() == 0
    for secret in (token, unknown):
        assert secret not in known.text + refused.text
        assert secret not in adapter.log()


async def test_a_denial_is_forbidden_in_kube_apiservers_words(pki, fake, secured):
    fake.access_policy = lambda spec: (False, "no RBAC policy matched")
    adapter = secured()
    response = await get(adapter, cert=pki.aggregator, headers=FROM_THE_AGGREGATOR)
    assert status_of(response, 403, "Forbidden") == (
        f'pods.{GROUP} "*" is forbidden: User "{HPA}" cannot get resource '
        f'"pods/socket_io_connected" in API group "{GROUP}" in the namespace "live": '
        "no RBAC policy matched"
    )


async def test_a_denial_names_the_object_in_its_details(pki, fake, secured):
    # kube-apiserver's Forbidden Status carries details {name, group, kind}; kubectl shows them.
    fake.access_policy = lambda spec: (False, "")
    adapter = secured()
    response = await get(adapter, cert=pki.aggregator, headers=FROM_THE_AGGREGATOR)
    status_of(response, 403, "Forbidden")
    assert response.json().get("details") == {"name": "*", "group": GROUP, "kind": "pods"}


async def test_reviews_are_cached_for_ten_seconds(pki, fake, secured, token):
    adapter = secured()
    async with adapter.client() as client:
        for _ in range(5):
            response = await client.get(PODS, headers={"Authorization": f"Bearer {token}"})
            assert served_pods(response) == ["push-a"]
        for _ in range(3):
            refused = await client.get(PODS, headers={"Authorization": "Bearer nobody"})
            status_of(refused, 401, "Unauthorized")
    async with adapter.client(cert=pki.aggregator) as client:
        for _ in range(5):
            assert served_pods(await client.get(PODS, headers=FROM_THE_AGGREGATOR))
        # Another request is another question.
        await client.get(PODS.replace("v1beta2", "v1beta1"), headers=FROM_THE_AGGREGATOR)
    assert len(fake.token_reviews) == 2  # the good token and the bad one, once each
    reviewed = [
        (spec["user"], spec["resourceAttributes"]["version"]) for spec in fake.access_reviews
    ]
    assert sorted(reviewed) == sorted(
        [(DASHBOARD["username"], "v1beta2"), (HPA, "v1beta2"), (HPA, "v1beta1")]
    )


async def test_probes_are_open_and_everything_else_needs_credentials(fake, secured, token):
    fake.access_policy = lambda spec: ("nonResourceAttributes" in spec, "")
    adapter = secured()

    async def readyz() -> int:
        return (await get(adapter, "/readyz")).status_code

    await settles(readyz, 200)
    for probe in ("/healthz", "/livez", "/readyz"):
        response = await get(adapter, probe)
        assert (response.status_code, response.text) == (200, "ok")
    assert fake.token_reviews == [] and fake.access_reviews == []

    for path in NON_RESOURCE_PATHS:
        status_of(await get(adapter, path), 401, "Unauthorized")
        assert (await get(adapter, path, token=token)).status_code == 200, path
    assert {spec["nonResourceAttributes"]["path"] for spec in fake.access_reviews} == set(
        NON_RESOURCE_PATHS
    )
    assert {spec["nonResourceAttributes"]["verb"] for spec in fake.access_reviews} == {"get"}
    assert all(spec["user"] == DASHBOARD["username"] for spec in fake.access_reviews)
    # The same token may not read the metrics themselves: that is a resource.
    message = status_of(await get(adapter, token=token), 403, "Forbidden")
    assert f'User "{DASHBOARD["username"]}" cannot get resource' in message


async def test_the_front_proxy_settings_come_from_the_cluster(pki, fake, secured):
    fake.add_config_map(
        config_map_object(
            "kube-system",
            "extension-apiserver-authentication",
            {
                "requestheader-client-ca-file": pki.ca_pem,
                "requestheader-allowed-names": json.dumps(["front-proxy-client"]),
                "requestheader-username-headers": json.dumps(["X-Remote-User"]),
                "requestheader-group-headers": json.dumps(["X-Remote-Group"]),
                "requestheader-extra-headers-prefix": json.dumps(["X-Remote-Extra-"]),
            },
        )
    )
    adapter = secured(front_proxy_flags=False)
    headers = {**FROM_THE_AGGREGATOR, "X-Remote-Extra-Scopes": "metrics"}
    assert served_pods(await get(adapter, cert=pki.aggregator, headers=headers)) == ["push-a"]
    assert fake.access_reviews == [
        pods_review(
            HPA,
            ["system:serviceaccounts", "system:authenticated"],
            extra={"scopes": ["metrics"]},
        )
    ]
    response = await get(adapter, cert=pki.intruder, headers=FROM_THE_AGGREGATOR)
    assert "cn=intruder" in status_of(response, 401, "Unauthorized")
    with pytest.raises(REFUSED_IN_THE_HANDSHAKE[ssl.TLSVersion.TLSv1_3]):
        await get(adapter, cert=pki.stranger, headers=FROM_THE_AGGREGATOR)


@pytest.mark.parametrize("where", ["config-map", "flag"])
async def test_a_client_ca_certificate_is_its_cn_and_o_and_never_the_front_proxy(
    pki, fake, secured, tmp_path, where
):
    """The cluster's client CA (kube-apiserver's --client-ca-file, published in the same
    ConfigMap) signs user certificates: CN is the user, O the groups. One of them named like the
    front proxy still speaks only for itself, whatever headers it sends."""
    cluster_ca = trustme.CA()
    alice = cluster_ca.issue_cert("alice", common_name="alice", organization_name="sre")
    posing = cluster_ca.issue_cert("p", common_name="front-proxy-client", organization_name="x")
    if where == "config-map":
        data = {"client-ca-file": cluster_ca.cert_pem.bytes().decode()}
        fake.add_config_map(
            config_map_object("kube-system", "extension-apiserver-authentication", data)
        )
        adapter = secured()
    else:
        ca_file = tmp_path / "cluster-ca.crt"
        cluster_ca.cert_pem.write_to_path(ca_file)
        adapter = secured(extra=("--client-ca-file", str(ca_file)))

    assert served_pods(await get(adapter, cert=alice)) == ["push-a"]
    response = await get(adapter, cert=posing, headers=FROM_THE_AGGREGATOR)
    assert served_pods(response) == ["push-a"]
    assert fake.access_reviews == [
        pods_review("alice", ["sre", "system:authenticated"]),
        pods_review("front-proxy-client", ["x", "system:authenticated"]),
    ]
    assert fake.token_reviews == []
    # The front proxy's own certificate still speaks for the user it names.
    assert served_pods(await get(adapter, cert=pki.aggregator, headers=FROM_THE_AGGREGATOR))
    assert fake.access_reviews[-1]["user"] == HPA


async def test_an_api_server_outage_refuses_and_nothing_is_cached(pki, fake, secured, token):
    adapter = secured()
    fake.set_unavailable(True)
    refused = await get(adapter, token=token)
    assert "cannot review the token" in status_of(refused, 401, "Unauthorized")
    failed = await get(adapter, cert=pki.aggregator, headers=FROM_THE_AGGREGATOR)
    assert "cannot check access" in status_of(failed, 500, "InternalError")
    fake.set_unavailable(False)
    assert served_pods(await get(adapter, token=token)) == ["push-a"]
    assert served_pods(await get(adapter, cert=pki.aggregator, headers=FROM_THE_AGGREGATOR))
    assert token not in refused.text + adapter.log()


async def test_sigterm_ends_the_adapter_cleanly(pki, secured):
    adapter = secured()
    assert served_pods(await get(adapter, cert=pki.aggregator, headers=FROM_THE_AGGREGATOR))
    assert adapter.stop() == 0
    log = adapter.log()
    assert "Traceback" not in log and "stopped" in log.splitlines()[-1]


# -- start-up failures ---------------------------------------------------------------------------


def run_adapter(*args: str, tmp_path: Path) -> tuple[int, list[str]]:
    """`pushscale adapter` that is expected to stop by itself: its exit code and output lines."""
    command = [
        sys.executable, "-m", "adapter",
        "--secure-port", "0", "--bind-address", "127.0.0.1",
        "--cert-dir", str(tmp_path / "certs"),
        *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    return done.returncode, (done.stdout + done.stderr).splitlines()


@pytest.fixture
def pods_file(tmp_path: Path) -> Path:
    path = tmp_path / "pods.yaml"
    path.write_text(json.dumps({"pods": [static_pod("push-a", free_port_block(1), 1)]}))
    return path


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ("--static-pods {pods}", "authentication and authorization need the Kubernetes API"),
        ("--static-pods {tmp}/missing.yaml --authentication-skip", "missing.yaml: cannot read"),
        ("--kubeconfig {tmp}/no-kubeconfig", "no Kubernetes API"),
        ("--static-pods {pods} --kubeconfig {down}",
         "cannot read the ConfigMap kube-system/extension-apiserver-authentication"),
        # With one CA flag the other is looked up in the ConfigMap, as k8s.io/apiserver does.
        ("--static-pods {pods} --kubeconfig {down} --requestheader-client-ca-file {ca}",
         "cannot read the ConfigMap kube-system/extension-apiserver-authentication"),
        ("--static-pods {pods} --kubeconfig {down} --requestheader-client-ca-file {tmp}/no-ca.crt"
         " --client-ca-file {ca}",
         "--requestheader-client-ca-file {tmp}/no-ca.crt"),
        ("--static-pods {pods} --kubeconfig {down} --requestheader-client-ca-file {ca}"
         " --client-ca-file {tmp}/no-ca.crt",
         "--client-ca-file {tmp}/no-ca.crt"),
    ],
    ids=["auth-without-kubeconfig", "unreadable-pods-file", "missing-kubeconfig",
         "configmap-unreadable", "configmap-unreadable-for-the-client-ca",
         "missing-front-proxy-ca", "missing-client-ca"],
)  # fmt: skip
def test_a_start_up_failure_is_one_line_and_exit_code_1(
    flags: str, words: str, pods_file: Path, fake: FakeKube, pki: Pki, tmp_path: Path
):
    fake.set_unavailable(True)  # {down}: a cluster whose API server answers only 503
    down = fake.write_kubeconfig(tmp_path / "kubeconfig")
    places = {"pods": pods_file, "tmp": tmp_path, "down": down, "ca": pki.ca_file}
    code, lines = run_adapter(*flags.format(**places).split(), tmp_path=tmp_path)
    assert code == 1, lines
    [line] = [line for line in lines if "cannot start:" in line]
    assert "ERROR" in line and words.format(**places) in line, lines
    assert not any("Traceback" in line for line in lines), lines


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--secure-port", "70000"], "--secure-port must be a TCP port"),
        (["--scrape-interval-seconds", "soon"], "--scrape-interval-seconds"),
        (["--tls-cert-file", "only-the-cert.pem"], "--tls-private-key-file"),
    ],
    ids=["port-out-of-range", "not-a-number", "cert-without-key"],
)
def test_a_bad_flag_is_a_usage_error_with_exit_code_2(
    flags: list[str], words: str, pods_file: Path, tmp_path: Path
):
    code, lines = run_adapter(
        "--static-pods", str(pods_file), "--authentication-skip", *flags, tmp_path=tmp_path
    )
    assert code == 2, lines
    assert any(words in line for line in lines), lines
    assert not any("Traceback" in line for line in lines), lines
