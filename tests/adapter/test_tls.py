"""adapter.tls against a real uvicorn over real TLS, with trustme CAs and httpx clients.

One CA signs the serving certificates; a separate "front-proxy" CA signs the client certificates
kube-apiserver would present; a third CA stands for a client nobody trusts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import trustme
import uvicorn
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from adapter.auth import CLIENT_CA, FRONT_PROXY_CA, ClientCert
from adapter.tls import (
    CERT_NAME,
    ISSUERS_EXTENSION,
    KEY_NAME,
    ServerTls,
    client_certificate,
    self_signed_pair,
    uvicorn_config,
    watch_files,
)


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """The TLS extension, the client certificate as the API layer reads it, and the client's
    port, as JSON."""
    assert scope["type"] == "http"
    cert = client_certificate(scope)
    body = {
        "tls": scope.get("extensions", {}).get("tls"),
        "cn": cert.common_name if cert else None,
        "organizations": list(cert.organizations) if cert else None,
        "issuers": sorted(cert.issuers) if cert else None,
        "client_port": scope["client"][1],
    }
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the test owns the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(
    tls: ServerTls, http: Literal["httptools", "h11"] = "httptools"
) -> AsyncIterator[str]:
    config = uvicorn_config(
        echo, tls, http=http, host="127.0.0.1", port=0, lifespan="off", log_level="warning"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        await task


@dataclass
class Pki:
    server_ca: trustme.CA
    front_proxy_ca: trustme.CA
    stranger_ca: trustme.CA
    dir: Path

    @property
    def cert_file(self) -> Path:
        return self.dir / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.dir / "tls.key"

    @property
    def client_ca_file(self) -> Path:
        return self.dir / "front-proxy-ca.crt"

    @property
    def client_cas(self) -> dict[str, Path]:
        return {FRONT_PROXY_CA: self.client_ca_file}

    def write_serving(self, cert: trustme.LeafCert) -> None:
        self.cert_file.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
        self.key_file.write_bytes(cert.private_key_pem.bytes())

    def client(
        self,
        cert: trustme.LeafCert | None = None,
        *,
        also_trust: trustme.CA | None = None,
        max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
        ciphers: str | None = None,
    ) -> httpx.AsyncClient:
        context = ssl.create_default_context()
        context.maximum_version = max_version
        if ciphers is not None:
            context.set_ciphers(ciphers)
        for ca in (self.server_ca, also_trust):
            if ca is not None:
                ca.configure_trust(context)
        if cert is not None:
            cert.configure_cert(context)
        return httpx.AsyncClient(verify=context, timeout=5)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki = Pki(trustme.CA(), trustme.CA(), trustme.CA(), tmp_path)
    pki.write_serving(pki.server_ca.issue_cert("127.0.0.1", "localhost"))
    pki.front_proxy_ca.cert_pem.write_to_path(pki.client_ca_file)
    return pki


@pytest.fixture
def tls(pki: Pki) -> ServerTls:
    return ServerTls(pki.cert_file, pki.key_file, pki.client_cas)


def _served_cert(response: httpx.Response) -> bytes:
    ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
    return ssl_object.getpeercert(binary_form=True)


def _der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


# -- the peer certificate in the scope -----------------------------------------------------------


@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_a_front_proxy_client_certificate_is_in_every_request_scope(pki, tls, http):
    proxy = pki.front_proxy_ca.issue_cert("front-proxy", common_name="front-proxy-client")
    async with serving(tls, http) as url, pki.client(proxy) as client:
        first = (await client.get(url)).json()
        second = (await client.get(url)).json()
    assert first["client_port"] == second["client_port"]  # one connection, two requests
    assert first == second
    extension = first["tls"]
    assert first["cn"] == "front-proxy-client"
    assert first["issuers"] == [FRONT_PROXY_CA]
    assert extension["client_cert_chain"] == [proxy.cert_chain_pems[0].bytes().decode()]
    assert extension["client_cert_name"].startswith("CN=front-proxy-client,")
    assert extension["client_cert_error"] is None
    assert extension["server_cert"] is None
    assert extension["tls_version"] == 0x0304
    assert extension["cipher_suite"] in (0x1301, 0x1302, 0x1303)


async def test_a_client_without_a_certificate_connects_and_has_no_name(pki, tls):
    async with serving(tls) as url, pki.client() as client:
        body = (await client.get(url)).json()
    assert body["cn"] is None
    assert body["tls"]["client_cert_chain"] == []
    assert body["tls"]["client_cert_name"] is None


async def test_tls_1_2_reports_its_version_and_iana_cipher_number(pki, tls):
    # trustme's keys are ECDSA.
    ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256"
    client = pki.client(max_version=ssl.TLSVersion.TLSv1_2, ciphers=ciphers)
    async with serving(tls) as url, client:
        extension = (await client.get(url)).json()["tls"]
    assert extension["tls_version"] == 0x0303
    assert extension["cipher_suite"] == 0xC02B  # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256


@pytest.mark.parametrize(
    ("max_version", "error"),
    [
        # The server refuses the certificate inside the handshake: the connect fails.
        pytest.param(ssl.TLSVersion.TLSv1_2, httpx.ConnectError, id="tls-1.2"),
        # The client's side of a TLS 1.3 handshake ends before the server has checked its
        # certificate, so the refusal arrives on the first read.
        pytest.param(ssl.TLSVersion.TLSv1_3, httpx.TransportError, id="tls-1.3"),
    ],
)
async def test_a_certificate_from_another_ca_is_refused(pki, tls, max_version, error):
    stranger = pki.stranger_ca.issue_cert("someone", common_name="front-proxy-client")
    async with serving(tls) as url:
        async with pki.client(stranger, max_version=max_version) as client:
            with pytest.raises(error):
                await client.get(url)
        # The same client without its certificate is served.
        async with pki.client(max_version=max_version) as client:
            assert (await client.get(url)).json()["cn"] is None


async def test_without_a_client_ca_no_certificate_is_asked_for(pki):
    tls = ServerTls(pki.cert_file, pki.key_file)
    proxy = pki.front_proxy_ca.issue_cert("front-proxy", common_name="front-proxy-client")
    async with serving(tls) as url, pki.client(proxy) as client:
        body = (await client.get(url)).json()
    assert body["cn"] is None


@pytest.mark.parametrize(
    ("extensions", "expected"),
    [
        pytest.param(None, None, id="plain-http"),
        pytest.param({"tls": {"client_cert_chain": []}}, None, id="no-certificate"),
        pytest.param(
            {"tls": {"client_cert_chain": ["CN"]}, ISSUERS_EXTENSION: [CLIENT_CA]},
            ClientCert("proxy", ("ops",), frozenset({CLIENT_CA})),
            id="with-cn",
        ),
        pytest.param(
            {"tls": {"client_cert_chain": ["NO-CN"]}, ISSUERS_EXTENSION: []},
            ClientCert("", ("ops",)),
            id="without-cn",
        ),
    ],
)
def test_client_certificate(extensions, expected):
    ca = trustme.CA()
    pems = {
        "CN": ca.issue_cert("a", common_name="proxy", organization_name="ops"),
        "NO-CN": ca.issue_cert("b", organization_name="ops"),
    }
    scope: dict[str, Any] = {"type": "http"}
    if extensions is not None:
        chain = [
            pems[name].cert_chain_pems[0].bytes().decode()
            for name in extensions["tls"]["client_cert_chain"]
        ]
        scope["extensions"] = {**extensions, "tls": {"client_cert_chain": chain}}
    assert client_certificate(scope) == expected


async def test_each_client_ca_is_named_as_the_issuer_of_its_certificates(pki, tmp_path):
    """Both CAs verify, and the scope says which one signed: a certificate from the client CA
    must never pass for the front proxy's. One from an intermediate of the client CA verifies
    (the client sends the intermediate) but is issued directly by neither."""
    users_ca = trustme.CA(organization_name="cluster")
    users_ca_file = tmp_path / "client-ca.crt"
    users_ca.cert_pem.write_to_path(users_ca_file)
    tls = ServerTls(pki.cert_file, pki.key_file, {**pki.client_cas, CLIENT_CA: users_ca_file})
    proxy = pki.front_proxy_ca.issue_cert("p", common_name="front-proxy-client")
    alice = users_ca.issue_cert("alice", common_name="alice", organization_name="devs")
    via_intermediate = users_ca.create_child_ca().issue_cert("bob", common_name="bob")
    async with serving(tls) as url:
        seen = {}
        for name, cert in {"proxy": proxy, "alice": alice, "bob": via_intermediate}.items():
            async with pki.client(cert) as client:
                seen[name] = (await client.get(url)).json()
    assert (seen["proxy"]["cn"], seen["proxy"]["issuers"]) == (
        "front-proxy-client",
        [FRONT_PROXY_CA],
    )
    assert (seen["alice"]["cn"], seen["alice"]["issuers"]) == ("alice", [CLIENT_CA])
    assert seen["alice"]["organizations"] == ["devs"]
    assert (seen["bob"]["cn"], seen["bob"]["issuers"]) == ("bob", [])


# -- rotation ------------------------------------------------------------------------------------


async def test_rotated_files_serve_new_connections_while_open_ones_keep_going(pki, tls):
    await _rotation(pki, tls)


def test_rotation_under_uvloop(pki, tls):
    """uvicorn runs on uvloop in production; its SSL protocol calls `sni_callback` too."""
    uvloop.run(_rotation(pki, tls))


async def _rotation(pki: Pki, tls: ServerTls) -> None:
    old = _der_of_file(pki.cert_file)
    rotated_ca = trustme.CA()
    new_cert = rotated_ca.issue_cert("127.0.0.1", "localhost")
    proxy = pki.front_proxy_ca.issue_cert("front-proxy", common_name="front-proxy-client")
    async with serving(tls) as url, pki.client(proxy) as kept:
        first = await kept.get(url)
        assert _served_cert(first) == old

        pki.write_serving(new_cert)
        assert tls.reload_if_changed() is True
        assert tls.reload_if_changed() is False  # nothing changed since

        async with pki.client(proxy, also_trust=rotated_ca) as fresh:
            response = await fresh.get(url)
        assert _served_cert(response) == _der(new_cert)
        assert response.json()["cn"] == "front-proxy-client"  # the client CA still applies

        again = await kept.get(url)
        assert again.json()["client_port"] == first.json()["client_port"]
        assert _served_cert(again) == old


async def test_a_rotated_client_ca_applies_to_new_handshakes(pki, tls):
    new_proxy_ca = trustme.CA()
    old_proxy = pki.front_proxy_ca.issue_cert("p", common_name="old-proxy")
    new_proxy = new_proxy_ca.issue_cert("p", common_name="new-proxy")
    async with serving(tls) as url:
        new_proxy_ca.cert_pem.write_to_path(pki.client_ca_file)
        assert tls.reload_if_changed() is True
        async with pki.client(new_proxy) as client:
            body = (await client.get(url)).json()
        assert (body["cn"], body["issuers"]) == ("new-proxy", [FRONT_PROXY_CA])
        async with pki.client(old_proxy) as client:
            with pytest.raises(httpx.TransportError):
                await client.get(url)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BROKEN = {
    "half-written-cert": lambda pki: _truncate(pki.cert_file),
    "half-written-key": lambda pki: _truncate(pki.key_file),
    "half-written-client-ca": lambda pki: _truncate(pki.client_ca_file),
    "empty-client-ca": lambda pki: pki.client_ca_file.write_bytes(b""),
    "key-of-another-cert": lambda pki: pki.key_file.write_bytes(
        pki.server_ca.issue_cert("127.0.0.1").private_key_pem.bytes()
    ),
    "cert-removed": lambda pki: pki.cert_file.unlink(),
}


@pytest.mark.parametrize("breakage", list(BROKEN), ids=list(BROKEN))
async def test_broken_new_files_keep_the_old_certificate(pki, tls, breakage, caplog):
    old = _der_of_file(pki.cert_file)
    async with serving(tls) as url:
        BROKEN[breakage](pki)
        with caplog.at_level(logging.WARNING, logger="adapter.tls"):
            assert tls.reload_if_changed() is False
            assert tls.reload_if_changed() is False
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "one warning per bad content, not one per poll"
        assert "kept the previous serving certificate" in warnings[0].getMessage()
        async with pki.client() as client:
            assert _served_cert(await client.get(url)) == old

        # The writer finishes: the next poll loads it.
        pki.front_proxy_ca.cert_pem.write_to_path(pki.client_ca_file)
        new_cert = pki.server_ca.issue_cert("127.0.0.1", "localhost")
        pki.write_serving(new_cert)
        assert tls.reload_if_changed() is True
        async with pki.client() as client:
            assert _served_cert(await client.get(url)) == _der(new_cert)


def test_a_server_does_not_start_without_a_loadable_certificate(pki):
    _truncate(pki.cert_file)
    with pytest.raises(ssl.SSLError):
        ServerTls(pki.cert_file, pki.key_file, pki.client_cas)


async def test_watch_files_notices_a_rotation(pki, tls):
    new_cert = pki.server_ca.issue_cert("127.0.0.1", "localhost")
    async with serving(tls) as url:
        watcher = asyncio.create_task(watch_files(tls, interval_seconds=0.01))
        try:
            pki.write_serving(new_cert)
            for _ in range(200):
                async with pki.client() as client:
                    if _served_cert(await client.get(url)) == _der(new_cert):
                        break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the rotated certificate was never served")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _der_of_file(path: Path) -> bytes:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].public_bytes(Encoding.DER)


# -- the self-signed pair ------------------------------------------------------------------------


HOSTS = ["pushscale-adapter.pushscale.svc", "pushscale-adapter.pushscale"]


def test_self_signed_pair_names_every_host_and_keeps_its_key_private(tmp_path):
    cert_file, key_file = self_signed_pair(tmp_path / "certs", HOSTS)
    assert (cert_file.name, key_file.name) == (CERT_NAME, KEY_NAME)
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    leaf, ca = x509.load_pem_x509_certificates(cert_file.read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {*HOSTS, "localhost"}
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.issuer == ca.subject
    assert not list(tmp_path.glob("certs/.*")), "no partial files left behind"


def _stamp(year: int) -> float:
    return datetime(year, 6, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("second_hosts", "second_year", "spoil", "reused"),
    [
        pytest.param(HOSTS, 2030, None, True, id="same-hosts-reused"),
        pytest.param(HOSTS[:1], 2030, None, True, id="fewer-hosts-reused"),
        pytest.param([*HOSTS, "10.0.0.7"], 2030, None, False, id="new-host"),
        pytest.param(HOSTS, 2032, None, False, id="expired"),
        pytest.param(HOSTS, 2030, KEY_NAME, False, id="key-unreadable"),
        pytest.param(HOSTS, 2030, CERT_NAME, False, id="cert-unreadable"),
    ],
)
def test_self_signed_pair_is_reused_only_while_it_fits(
    tmp_path, second_hosts, second_year, spoil, reused
):
    cert_file, key_file = self_signed_pair(tmp_path, HOSTS, clock=lambda: _stamp(2030))
    before = cert_file.read_bytes()
    if spoil is not None:
        (tmp_path / spoil).write_bytes(b"-----BEGIN")
    self_signed_pair(tmp_path, second_hosts, clock=lambda: _stamp(second_year))
    assert (cert_file.read_bytes() == before) is reused
    ServerTls(cert_file, key_file)  # whatever happened, the pair loads


async def test_self_signed_pair_serves_clients_that_trust_its_ca(tmp_path):
    cert_file, key_file = self_signed_pair(tmp_path, HOSTS)
    ca_pem = x509.load_pem_x509_certificates(cert_file.read_bytes())[1].public_bytes(Encoding.PEM)
    context = ssl.create_default_context(cadata=ca_pem.decode())
    async with serving(ServerTls(cert_file, key_file)) as url:
        async with httpx.AsyncClient(verify=context) as client:
            assert (await client.get(url)).status_code == 200
            localhost = url.replace("127.0.0.1", "localhost")
            assert (await client.get(localhost)).status_code == 200
